"""The child command the modules start: the ROI box reaches ``headseg segment`` whatever its signs, and a
cancel on Windows stops the whole process tree the ``PythonSlicer`` launcher started."""

from __future__ import annotations

import subprocess
import sys

import pytest

from headseg.cli import build_parser, parse_roi
from headseg.run.child_process import (
    SegmentationProcess,
    _kill_tree_windows,
    segment_command,
    windows_tree_kill_command,
)

BOXES = [
    ((-10.0, -20.5, -300.25), (40.0, 50.0, 60.0)),  # a box centre right of and behind the origin (LPS)
    ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    ((-0.0, 12.5, -0.001), (0.125, 3.0, 7.75)),
    ((123456.789, -98765.4321, 1e6), (2048.0, 1e5, 512.5)),
    ((-1e-7, 1.0 / 3.0, -2.0 / 7.0), (0.1, 0.2, 0.3)),
]


@pytest.mark.parametrize("center, size", BOXES)
def test_roi_survives_the_command_line_parser(center, size):
    """What segment_command writes is read back by the CLI's own parser as the same six numbers."""
    command = segment_command(["ct.nrrd"], "orbit", "out", device="cpu", roi=(center, size), python="py")
    args = build_parser().parse_args(command[3:])  # what follows "py -m headseg"
    parsed_center, parsed_size = parse_roi(args.roi)
    assert parsed_center == list(center) and parsed_size == list(size)  # exact: repr() round-trips floats
    assert args.inputs == ["ct.nrrd"] and args.device == "cpu"


def test_a_negative_roi_reaches_the_real_child(tmp_path):
    """The real ``python -m headseg segment`` child accepts a box with negative coordinates: it fails on the
    missing input file (a JSON error event), not on its arguments."""
    missing = tmp_path / "missing.nrrd"
    command = segment_command([missing], "orbit", tmp_path / "out", device="cpu",
                              roi=((-10.0, -20.0, 0.0), (40.0, 40.0, 40.0)), python=sys.executable)
    process = SegmentationProcess(command, work_dir=tmp_path / "work")
    process.start()
    process.wait(timeout=120)
    text = "\n".join(process.log + [process.error_message or ""])
    assert "expected one argument" not in text and "unrecognized arguments" not in text
    assert process.error_code == 2 and "missing.nrrd" in text


def test_windows_cancel_kills_the_launchers_whole_tree_without_psutil(monkeypatch):
    """``taskkill /T /F`` on the launcher's PID runs first (while the launcher still links its children),
    with no psutil installed; the launcher itself is then stopped if taskkill left it."""
    monkeypatch.setitem(sys.modules, "psutil", None)  # "import psutil" raises ImportError
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    calls = []

    def run(command, **kwargs):
        calls.append((list(command), launcher.poll()))
        return subprocess.CompletedProcess(command, 0)

    try:
        _kill_tree_windows(launcher, kill=False, run=run)
        assert calls == [(["taskkill", "/PID", str(launcher.pid), "/T", "/F"], None)]
        assert launcher.wait(timeout=10) != 0  # the fallback stopped the launcher taskkill did not reach here
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


def test_windows_cancel_survives_a_missing_taskkill():
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def run(command, **kwargs):
        raise FileNotFoundError(command[0])

    try:
        _kill_tree_windows(launcher, kill=True, run=run)
        assert launcher.wait(timeout=10) != 0
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert windows_tree_kill_command(1234) == ["taskkill", "/PID", "1234", "/T", "/F"]


def test_the_modules_test_time_augmentation_choice_reaches_the_child():
    """Both modules' .ui files hold the checkbox, the panel passes it to the logic, and the child command
    carries ``--tta`` only when it is ticked (read back by the CLI's own parser)."""
    import ast
    from pathlib import Path

    from test_module_contract import panel_files

    repo = Path(__file__).resolve().parents[2]
    for module in ("OrbitSegmentation", "AnatomyNetHaN"):
        assert 'name="ttaCheckBox"' in (repo / module / "Resources" / "UI" / f"{module}.ui").read_text(encoding="utf-8")
    panel = [ast.parse(path.read_text(encoding="utf-8")) for path in panel_files()]  # the panel and its mixins
    keywords = {k.arg: ast.unparse(k.value) for tree in panel for node in ast.walk(tree) if isinstance(node, ast.Call)
                for k in node.keywords if k.arg == "tta"}
    assert keywords == {"tta": "self.ui.ttaCheckBox.checked"}
    for tta in (False, True):
        command = segment_command(["ct.nrrd"], "han", "out", tta=tta, python="py")
        assert build_parser().parse_args(command[3:]).tta is tta
