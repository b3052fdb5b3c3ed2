"""The lean demo: what scripts/demo.sh installs (the runtime dependencies, matplotlib among them, no test
tools) is enough for segment, evaluate, report and compare, and the demo ends with the report and the line
to open it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Importable here (the test extras) but not in a .venv made by scripts/setup.sh without --dev.
TEST_ONLY = ("pytest", "slicer", "slicerio", "monai", "mypy", "dask", "distributed", "pydicom", "highdicom",
             "pynetdicom", "dcm2niix", "psutil")

_BLOCKED_RUN = """
import importlib.abc, sys
class Blocked(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError(f"{{name}} is a test extra, not installed by scripts/setup.sh")
        return None
sys.meta_path.insert(0, Blocked())
from headseg.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _runtime_headseg(*args, cwd: Path) -> subprocess.CompletedProcess:
    """``headseg ARGS`` in a process where every test extra fails to import."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", _BLOCKED_RUN.format(blocked=set(TEST_ONLY)), *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=900, cwd=cwd)


def test_matplotlib_is_a_runtime_dependency_and_setup_is_lean_by_default():
    pyproject = (REPO / "pyproject.toml").read_text(encoding="utf-8")
    runtime = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert '"matplotlib>=' in runtime
    setup = (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    assert 'EXTRAS=""' in setup and '-e ".${EXTRAS}"' in setup and 'EXTRAS="[test,bench,cluster]"' in setup
    assert "setup.sh --dev" in (REPO / "scripts" / "test.sh").read_text(encoding="utf-8")
    assert "setup.sh --dev" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_the_demo_steps_run_on_the_runtime_dependencies_alone(tmp_path):
    """scripts/demo.sh's commands, in order, with every test extra unimportable: phantom, segment,
    evaluate, report; the report page is written and the script's last lines say how to open it."""
    demo = (REPO / "scripts" / "demo.sh").read_text(encoding="utf-8")
    steps = [line.split(".venv/bin/headseg ", 1)[1].split() for line in demo.splitlines()
             if line.startswith(".venv/bin/headseg ")]
    assert [s[0] for s in steps] == ["phantom", "segment", "evaluate", "report"]
    for step in steps:
        proc = _runtime_headseg(*step, "--progress-format", "none", cwd=tmp_path)
        assert proc.returncode == 0, f"{step}: {proc.stderr}"
    page = (tmp_path / "demo_output" / "report.html").read_text(encoding="utf-8")
    assert page.count("src='data:image/png;base64,") == 3
    assert re.search(r'echo "Open the report .*demo_output/report.html"\n.*file://', demo)
    assert demo.rstrip().splitlines()[-1].startswith('echo "  or paste into a browser:')
