#!/usr/bin/env bash
# The test command: lint, type-check, then the whole pytest suite (core, Slicer logic on slicer-core, training).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh --dev
# A .venv made before mypy, MONAI, dcm2niix, the cluster extra and pynetdicom joined gets them here.
.venv/bin/python -c "import mypy, monai, dcm2niix, distributed, pynetdicom" 2>/dev/null || .venv/bin/python -m pip install --quiet -e ".[test,bench,cluster]"
.venv/bin/ruff check .
.venv/bin/python -m mypy  # files and settings: [tool.mypy] in pyproject.toml
.venv/bin/python -m pytest -q "$@"
