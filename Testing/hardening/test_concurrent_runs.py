"""Runs that share an output folder, as real concurrent ``headseg segment`` processes: no row of
``volumes.csv`` is lost, a case is never written by two runs, and a killed run blocks nothing.

To make "at the same time" exact, run A is paused (SIGSTOP) in the middle of its inference, after it
planned, while run B plans and finishes; then A goes on and writes (see headseg/run/outputlock.py)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import List

import pytest
from hardening_factory import TALLY, CliRun, head_ct, write_slow_han_package

from headseg.io import write_volume

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="pauses processes with SIGSTOP")


@pytest.fixture(scope="module")
def slow_package(tmp_path_factory):
    """A wider AnatomyNet in many small patches: seconds of inference, long enough to pause in."""
    return write_slow_han_package(tmp_path_factory.mktemp("models"))


def start(ct: Path, package: Path, out: Path, *extra: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "headseg", "segment", str(ct), "--task", "han", "--model",
                             str(package), "-o", str(out), "--device", "cpu", "--progress-format", "json", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def pause_in_inference(proc: subprocess.Popen) -> List[str]:
    """Read A's JSON lines until its inference is under way, then stop it there."""
    lines = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        event = json.loads(line)
        if event.get("event") == "progress" and 0.1 < event.get("fraction", 0) < 0.9:
            proc.send_signal(signal.SIGSTOP)
            return lines
    raise AssertionError(f"run A ended before its inference was under way: {proc.stderr.read() if proc.stderr else ''}")


def finish(proc: subprocess.Popen, label: str, timeout: float = 300) -> CliRun:
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
    run = CliRun(proc.returncode, stdout, stderr)
    TALLY.add(label, run)
    return run


def cases_in(volumes_csv: Path) -> List[str]:
    with open(volumes_csv, newline="") as f:
        return sorted({row["case"] for row in csv.DictReader(f)})


@pytest.fixture
def cts(tmp_path):
    big = write_volume(head_ct(shape=(40, 96, 96), spacing=(1.5, 1.5, 2.0)), tmp_path / "big.nrrd")
    small = write_volume(head_ct(seed=1), tmp_path / "small.nrrd")
    return big, small


def test_a_run_finishing_while_another_runs_loses_no_row(cts, slow_package, han_package, tmp_path):
    big, small = cts
    out = tmp_path / "out"
    a = start(big, slow_package.path, out)
    try:
        pause_in_inference(a)  # A planned when volumes.csv did not exist yet
        b = finish(start(small, han_package.path, out), "concurrent run B (another case)")
        assert b.code == 0, b.stderr
        assert cases_in(out / "volumes.csv") == ["small"]
    finally:
        a.send_signal(signal.SIGCONT)
    run_a = finish(a, "concurrent run A (another case)")
    assert run_a.code == 0, run_a.stderr
    assert cases_in(out / "volumes.csv") == ["big", "small"]  # A merged its rows into B's table
    for case in ("big", "small"):
        assert (out / f"{case}.seg.nrrd").is_file() and (out / f"{case}_run.json").is_file()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no lock or claim left


def test_the_same_case_run_twice_at_once_is_refused_for_the_second(cts, slow_package, han_package, tmp_path):
    big, _ = cts
    out = tmp_path / "out"
    a = start(big, slow_package.path, out)
    try:
        pause_in_inference(a)
        b = finish(start(big, han_package.path, out, "--overwrite"), "concurrent run B (same case)")
        assert b.code == 2 and "Traceback" not in b.stderr, b.stderr
        assert "Another HeadSeg run" in b.stderr and "'big'" in b.stderr
        assert not (out / "big.seg.nrrd").exists()  # B wrote nothing
    finally:
        a.send_signal(signal.SIGCONT)
    run_a = finish(a, "concurrent run A (same case)")
    assert run_a.code == 0, run_a.stderr
    assert json.loads((out / "big_run.json").read_text(encoding="utf-8"))["model"] == "slow-han-test"
    assert cases_in(out / "volumes.csv") == ["big"]


def test_a_killed_run_blocks_nothing_and_leaves_no_partial_file(cts, slow_package, han_package, tmp_path):
    big, _ = cts
    out = tmp_path / "out"
    a = start(big, slow_package.path, out)
    pause_in_inference(a)
    (out / ".big.0123abcd.partial.seg.nrrd").write_bytes(b"half a file")  # what a kill during a write leaves
    a.kill()
    a.communicate(timeout=60)
    run = finish(start(big, han_package.path, out), "run after a killed one")
    assert run.code == 0, run.stderr
    assert sorted(p.name for p in out.iterdir()) == ["big.seg.nrrd", "big_run.json", "big_uncertainty.nrrd",
                                                     "big_volumes.csv", "volumes.csv"]


def test_three_runs_started_together_keep_every_row(tmp_path, han_package):
    out = tmp_path / "out"
    paths = [write_volume(head_ct(seed=n), tmp_path / f"case{n}.nrrd") for n in range(3)]
    procs = [start(p, han_package.path, out) for p in paths]
    runs = [finish(p, "three runs started together") for p in procs]
    assert [r.code for r in runs] == [0, 0, 0], [r.stderr for r in runs]
    assert cases_in(out / "volumes.csv") == ["case0", "case1", "case2"]


def test_an_executor_batch_beside_a_running_cli_run_keeps_both(cts, slow_package, tmp_path):
    """The path of the Slicer batch and --cluster (headseg.run.batch with an executor) against a live CLI run:
    the CLI's case is refused to it, its own case is merged into the CLI run's table."""
    from concurrent.futures import ThreadPoolExecutor

    from headseg.errors import InputError
    from headseg.io.cases import Case
    from headseg.measure.volumes import VolumeRow
    from headseg.run.batch import FuturesExecutor, run_batch
    from headseg.run.plan import plan_batch

    big, small = cts
    out = tmp_path / "out"
    a = start(big, slow_package.path, out)
    try:
        pause_in_inference(a)
        with pytest.raises(InputError, match="Another HeadSeg run .* 'big'"):
            plan_batch([Case("big", big)], out)

        def stand_in(case, outputs):  # what a worker writes for a case
            outputs.segmentation.write_text(case.name)
            outputs.volumes_csv.write_text(case.name)
            return [VolumeRow("brainstem", "", 1, 0.001)]

        with ThreadPoolExecutor(2) as pool:
            report = run_batch(plan_batch([Case("other", small)], out), stand_in, executor=FuturesExecutor(pool))
        assert [o.state for o in report.outcomes] == ["succeeded"]
    finally:
        a.send_signal(signal.SIGCONT)
    assert finish(a, "CLI run beside an executor batch").code == 0
    assert cases_in(out / "volumes.csv") == ["big", "other"]
