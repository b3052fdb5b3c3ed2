"""The subprocess runner speaks the ``headseg segment --progress-format json`` protocol.

The children here are real processes (``python -c``) that print the protocol's lines, sleep, fail and
ignore signals, so progress, results, errors, cancel and the kill fallback are exercised for real.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time

import pytest

from headseg.run.child_process import RunState, SegmentationProcess, segment_command


def child(code: str) -> list:
    return [sys.executable, "-c", textwrap.dedent(code)]


def test_progress_log_and_result_events_are_parsed(tmp_path):
    seen = []
    proc = SegmentationProcess(child("""
        import json, sys
        print(json.dumps({"event": "progress", "fraction": 0.25, "message": "Reading"}))
        print("a plain line")
        print(json.dumps({"event": "log", "level": "warning", "message": "CT looks cropped"}))
        print("on stderr", file=sys.stderr)
        print(json.dumps({"event": "progress", "fraction": 0.75, "message": "Predicting"}))
        print(json.dumps({"event": "result", "case": "c1", "segmentation": "c1.seg.nrrd",
                          "volumes_csv": "c1_volumes.csv"}))
    """), work_dir=tmp_path / "work", on_event=seen.append)
    (tmp_path / "work").mkdir()
    proc.start()
    assert proc.wait(timeout=30) is RunState.SUCCEEDED
    assert proc.returncode == 0
    assert proc.fraction == 1.0
    assert proc.result["segmentation"] == "c1.seg.nrrd"
    assert "a plain line" in proc.log and "warning: CT looks cropped" in proc.log and "on stderr" in proc.log
    fractions = [e["fraction"] for e in seen if e["event"] == "progress"]
    assert fractions == [0.25, 0.75]
    assert (tmp_path / "work").exists(), "a successful run keeps its folder until the caller cleans up"
    proc.cleanup()
    assert not (tmp_path / "work").exists()


def test_error_event_and_exit_code_give_a_user_message(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = SegmentationProcess(child("""
        import json, sys
        print(json.dumps({"event": "error", "message": "CUDA out of memory", "code": 4}))
        sys.exit(4)
    """), work_dir=work)
    proc.start()
    assert proc.wait(timeout=30) is RunState.FAILED
    assert proc.error_code == 4
    assert "Out of memory" in proc.error_message and "CUDA out of memory" in proc.error_message
    assert not work.exists(), "a failed run removes its temporary folder"


def test_a_crash_reports_the_last_stderr_line():
    proc = SegmentationProcess(child("raise SystemExit('model.pt is truncated')"))
    proc.start()
    assert proc.wait(timeout=30) is RunState.FAILED
    assert "model.pt is truncated" in proc.error_message


def test_exit_zero_without_result_is_a_failure():
    proc = SegmentationProcess(child("print('nothing to see')"))
    proc.start()
    assert proc.wait(timeout=30) is RunState.FAILED
    assert "without producing a result" in proc.error_message


def test_cancel_stops_a_running_child_quickly_and_removes_its_files(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "input.nrrd").write_bytes(b"x")
    marker = tmp_path / "child_saw_sigterm"
    proc = SegmentationProcess(child(f"""
        import json, signal, sys, time
        def stop(*_):
            open({str(marker)!r}, "w").close()
            sys.exit(5)
        signal.signal(signal.SIGTERM, stop)
        print(json.dumps({{"event": "progress", "fraction": 0.1, "message": "Predicting"}}))
        time.sleep(60)
    """), work_dir=work)
    proc.start()
    deadline = time.monotonic() + 20
    while proc.fraction < 0.1 and time.monotonic() < deadline:  # the GUI's timer loop
        proc.poll()
        time.sleep(0.02)
    assert proc.fraction == pytest.approx(0.1)
    started = time.monotonic()
    proc.cancel()
    assert proc.state is RunState.CANCELLING
    assert proc.wait(timeout=20) is RunState.CANCELLED
    assert time.monotonic() - started < 5
    if os.name != "nt":
        assert marker.exists(), "the child got SIGTERM and could clean up"
    assert not work.exists()
    assert "cancelled" in proc.error_message


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout():
    proc = SegmentationProcess(child("""
        import json, signal, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print(json.dumps({"event": "progress", "fraction": 0.5, "message": "busy"}), flush=True)
        time.sleep(60)
    """), kill_timeout_s=0.5)
    proc.start()
    while proc.fraction < 0.5:
        proc.poll()
        time.sleep(0.02)
    started = time.monotonic()
    proc.cancel()
    assert proc.wait(timeout=20) is RunState.CANCELLED
    assert 0.4 < time.monotonic() - started < 10


def test_child_can_import_headseg_from_its_source_folder(tmp_path):
    env = {"PYTHONPATH": ""}
    proc = SegmentationProcess(child("""
        import json, headseg
        print(json.dumps({"event": "result", "case": "x", "segmentation": headseg.__file__}))
    """), env=env, work_dir=None)
    proc.start()
    assert proc.wait(timeout=30) is RunState.SUCCEEDED
    import headseg

    assert os.path.samefile(proc.result["segmentation"], headseg.__file__)


def test_segment_command_arguments():
    cmd = segment_command(["a.nrrd"], "orbit", "out", model="svnet", device="cpu",
                          roi=((1, 2, 3), (40, 50, 60)), structures=["brainstem", "mandible"], python="py")
    assert cmd[:5] == ["py", "-m", "headseg", "segment", "a.nrrd"]
    assert cmd[cmd.index("--task") + 1] == "orbit" and cmd[cmd.index("-o") + 1] == "out"
    assert cmd[cmd.index("--progress-format") + 1] == "json"
    assert "--roi=1.0,2.0,3.0,40.0,50.0,60.0" in cmd
    assert cmd[cmd.index("--structures") + 1] == "brainstem,mandible"
    with pytest.raises(ValueError):
        segment_command([], "orbit", "out", python="py")
    with pytest.raises(ValueError):
        segment_command(["a"], "orbit", "out", roi=((1, 2), (3,)), python="py")


def test_python_executable_inside_slicer_is_the_pythonslicer_launcher(tmp_path, monkeypatch):
    from headseg.run.child_process import python_executable

    bin_dir = tmp_path / "Slicer-5.8" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "SlicerApp-real").write_text("")
    launcher = bin_dir / ("PythonSlicer.exe" if os.name == "nt" else "PythonSlicer")
    monkeypatch.setattr(sys, "executable", str(bin_dir / "SlicerApp-real"))
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="PythonSlicer"):
        python_executable()
    launcher.write_text("")
    assert os.path.samefile(python_executable(), launcher)
    monkeypatch.setattr(sys, "executable", "/usr/bin/python3.11")
    assert python_executable() == "/usr/bin/python3.11"  # plain Python (tests, PythonSlicer itself)


def test_child_starts_from_the_given_base_environment(monkeypatch):
    """Inside Slicer the child starts from Slicer's startup environment (as launchConsoleProcess does):
    a variable only the running process has does not reach it; the runner's own settings still do."""
    monkeypatch.setenv("HEADSEG_ONLY_IN_THIS_PROCESS", "1")
    base = {k: v for k, v in os.environ.items() if k != "HEADSEG_ONLY_IN_THIS_PROCESS"}
    base["HEADSEG_FROM_STARTUP"] = "yes"
    code = """
        import json, os
        print(json.dumps({"event": "result", "env": dict(os.environ)}))
    """
    proc = SegmentationProcess(child(code), base_env=base, env={"HEADSEG_EXTRA": "x"})
    proc.start()
    assert proc.wait(timeout=30) is RunState.SUCCEEDED
    env = proc.result["env"]
    assert "HEADSEG_ONLY_IN_THIS_PROCESS" not in env and env["HEADSEG_FROM_STARTUP"] == "yes"
    assert env["HEADSEG_EXTRA"] == "x" and env["PYTHONUNBUFFERED"] == "1"
    default = SegmentationProcess(child(code))
    default.start()
    assert default.wait(timeout=30) is RunState.SUCCEEDED
    assert default.result["env"]["HEADSEG_ONLY_IN_THIS_PROCESS"] == "1"  # no base: this process's environment
