#!/usr/bin/env bash
# Create .venv with the CPU build of torch and headseg (editable) with its runtime dependencies only: what
# 'headseg segment', 'report' and 'compare' need. '--dev' adds the test, bench and cluster extras (pytest,
# slicer-core, mypy, MONAI, Dask, ...), which the test command (scripts/test.sh) installs itself.
# Real users with a GPU install the torch build that fits it first; headseg only asks for torch>=2.1.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
EXTRAS=""
if [ "${1:-}" = "--dev" ]; then
  EXTRAS="[test,bench,cluster]"
fi
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# Pinned on purpose: an unpinned torch would pull a multi-GB CUDA build.
.venv/bin/python -m pip install --quiet "torch==${HEADSEG_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install --quiet -e ".${EXTRAS}"
.venv/bin/python -c "import headseg, torch; print(f'headseg {headseg.__version__}, torch {torch.__version__}')"
