"""``headseg segment --cluster``: the batch of ``headseg.run.batch`` on other executors.

* a thread pool (no Dask needed): results booked as they arrive, ``volumes.csv`` in the plan's order,
  failed cases leave nothing, the staging folder is gone;
* a Dask LocalCluster of two workers through the CLI: the same files as a serial run (voxels, uncertainty,
  CSV rows), the model loaded once per worker, progress of cases done/failed;
* a worker killed mid-case: the case runs again elsewhere and its outputs equal the serial run's; a case
  whose workers always die fails alone, leaving nothing;
* without Dask, ``--cluster`` says how to install it (exit 2).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from model_factory import write_tiny_orbit_package

from headseg.cli import main
from headseg.errors import InputError
from headseg.io.cases import Case, discover_cases
from headseg.measure.volumes import VolumeRow
from headseg.run.batch import FuturesExecutor, run_batch
from headseg.run.plan import plan_batch

PHANTOM_GRID = {"spacing": (0.8, 0.8, 1.5)}  # coarse: quick to write and segment


def _files(folder: Path):
    return sorted(p.name for p in folder.iterdir())


def _rows(path: Path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _assert_same_case(a: Path, b: Path, case: str) -> None:
    import nrrd

    for name in (f"{case}.seg.nrrd", f"{case}_uncertainty.nrrd"):
        x, _ = nrrd.read(str(a / name))
        y, _ = nrrd.read(str(b / name))
        assert np.array_equal(x, y), name
    assert (a / f"{case}_volumes.csv").read_bytes() == (b / f"{case}_volumes.csv").read_bytes()
    ra, rb = (json.loads((d / f"{case}_run.json").read_text(encoding="utf-8")) for d in (a, b))
    assert ra.keys() == rb.keys() and ra["model"] == rb["model"] and ra["notes"] == rb["notes"]


# -- another executor without Dask ---------------------------------------------------------------------
ROWS = [VolumeRow("mandible", "", 10, 1.25)]


def _stand_in(case: Case, outputs, fail=(), slow=()):
    if case.name in slow:
        time.sleep(0.3)  # finishes after the cases behind it
    outputs.segmentation.write_text(case.name)
    outputs.volumes_csv.write_text(case.name)
    if case.name in fail:
        raise InputError(f"{case.name} cannot be used")
    return ROWS


def test_thread_pool_executor_books_results_in_plan_order_and_leaves_nothing_of_failures(tmp_path):
    out = tmp_path / "out"
    cases = [Case(n, tmp_path / f"{n}.nrrd") for n in ("a", "b", "c", "d")]
    plan = plan_batch(cases, out)
    with ThreadPoolExecutor(2) as pool:
        report = run_batch(plan, partial(_stand_in, fail=("c",), slow=("a",)), executor=FuturesExecutor(pool))
    assert [o.state for o in report.outcomes] == ["succeeded", "succeeded", "failed", "succeeded"]
    assert "c cannot be used" in report.outcomes[2].message
    assert [r["case"] for r in _rows(out / "volumes.csv")] == ["a", "b", "d"]  # as a serial run writes it
    assert _files(out) == ["a.seg.nrrd", "a_volumes.csv", "b.seg.nrrd", "b_volumes.csv", "d.seg.nrrd",
                           "d_volumes.csv", "volumes.csv"]  # nothing of c, no staging folder
    assert (out / "a.seg.nrrd").read_text(encoding="utf-8") == "a"

    with ThreadPoolExecutor(2) as pool, pytest.raises(InputError, match="e cannot be used"):
        run_batch(plan_batch([Case("e", tmp_path / "e.nrrd")], out), partial(_stand_in, fail=("e",)),
                  stop_on_error=True, executor=FuturesExecutor(pool))
    assert not any(p.name.startswith(("e", ".")) for p in out.iterdir())


# -- Dask ------------------------------------------------------------------------------------------------
needs_dask = pytest.mark.skipif(importlib.util.find_spec("distributed") is None,
                                reason="the cluster extra (dask[distributed]) is not installed")


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    from headseg.synth.phantoms import write_phantom_cases

    folder = tmp_path_factory.mktemp("cluster_phantoms")
    write_phantom_cases(str(folder), 3, seed=21, **PHANTOM_GRID)
    return folder


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return write_tiny_orbit_package(tmp_path_factory.mktemp("cluster_models") / "tiny")


@pytest.fixture(scope="module")
def serial(phantoms, package, tmp_path_factory):
    import torch

    out = tmp_path_factory.mktemp("serial") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each of the two workers below
    try:
        assert main(["segment", str(phantoms), "--task", "orbit", "--model", str(package.path), "-o", str(out),
                     "--device", "cpu", "--progress-format", "none"]) == 0
    finally:
        torch.set_num_threads(threads)
    return out


@needs_dask
def test_cluster_run_writes_what_a_serial_run_writes(phantoms, package, serial, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["segment", str(phantoms), "--task", "orbit", "--model", str(package.path), "-o", str(out),
                 "--device", "cpu", "--progress-format", "json", "--cluster", "local:2"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    events = [json.loads(line) for line in captured.out.splitlines() if line.startswith("{")]
    results = [e for e in events if e["event"] == "result"]
    assert sorted(r["case"] for r in results) == ["phantom_000", "phantom_001", "phantom_002"]
    assert all(Path(r["segmentation"]).parent == out for r in results)
    progress = [e["message"] for e in events if e["event"] == "progress"]
    assert "3/3 done, 0 failed" in progress
    logs = [e["message"] for e in events if e["event"] == "log"]
    summary = [m for m in logs if "the model was loaded" in m]
    assert summary and "on 2 worker(s); the model was loaded 2 time(s)" in summary[0]  # once per worker

    assert _files(out) == _files(serial)  # the same files, no staging folder or temporary left
    for case in ("phantom_000", "phantom_001", "phantom_002"):
        _assert_same_case(serial, out, case)
    assert (out / "volumes.csv").read_bytes() == (serial / "volumes.csv").read_bytes()


def _half_written(outputs) -> None:
    """What an attempt leaves when its process dies mid-write (a segmentation cut short, no CSV yet)."""
    outputs.segmentation.write_bytes(b"NRRD0004\n# cut short")


def _kill_first_attempt(case: Case, outputs, settings, victim: str, marks: str):
    """The real per-case task; ``victim``'s first attempt half-writes its files, then waits to be killed
    (the test kills this worker process from outside)."""
    from headseg.run.segment_case import segment_case_on_worker

    mark = Path(marks) / f"{case.name}.pid"
    if case.name == victim and not mark.exists():
        _half_written(outputs)
        mark.write_text(str(os.getpid()))
        time.sleep(300)
    return segment_case_on_worker(case, outputs, settings)


def _always_dies(case: Case, outputs, settings):
    _half_written(outputs)
    os.kill(os.getpid(), signal.SIGKILL)


def _kill_when_marked(mark: Path, killed: list, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if mark.is_file() and mark.read_text(encoding="utf-8"):
            pid = int(mark.read_text(encoding="utf-8"))
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            return
        time.sleep(0.1)


@needs_dask
def test_a_killed_worker_case_runs_again_elsewhere_and_a_case_that_always_kills_fails_alone(
        phantoms, package, serial, tmp_path):
    from headseg.run.cluster import dask_executor, parse_cluster
    from headseg.run.segment_case import SegmentSettings

    cases = discover_cases([str(phantoms)])
    settings = SegmentSettings(str(package.path), "cpu", torch_threads=1)
    marks = tmp_path / "marks"
    marks.mkdir()
    out = tmp_path / "out"
    killed: list = []
    watcher = threading.Thread(target=_kill_when_marked, args=(marks / "phantom_001.pid", killed), daemon=True)
    watcher.start()
    with dask_executor(parse_cluster("local:2"), allowed_failures=1) as executor:
        plan = plan_batch(cases[:2], out, uncertainty=True, run_record=True)
        task = partial(_kill_first_attempt, settings=settings, victim="phantom_001", marks=str(marks))
        report = run_batch(plan, task, executor=executor)
        watcher.join(1)
        assert killed, "the victim's worker was never killed"
        assert [o.state for o in report.outcomes] == ["succeeded", "succeeded"], [o.message for o in report.outcomes]
        victim = report.outcomes[1].details
        assert not victim.worker.endswith(f":{killed[0]}")  # ran again in another process
        for case in ("phantom_000", "phantom_001"):
            _assert_same_case(serial, out, case)
        assert _rows(out / "volumes.csv") == [r for r in _rows(serial / "volumes.csv")
                                              if r["case"] in ("phantom_000", "phantom_001")]

        doomed = plan_batch(cases[2:], out, uncertainty=True, run_record=True)
        report = run_batch(doomed, partial(_always_dies, settings=settings), executor=executor)
        assert [o.state for o in report.outcomes] == ["failed"]
        assert "died" in report.outcomes[0].message
    names = _files(out)
    assert not [n for n in names if "phantom_002" in n or n.startswith(".")], names  # nothing half-written
    assert {r["case"] for r in _rows(out / "volumes.csv")} == {"phantom_000", "phantom_001"}


@needs_dask
def test_collisions_are_refused_before_a_cluster_starts(phantoms, package, serial, capsys):
    start = time.monotonic()
    code = main(["segment", str(phantoms), "--task", "orbit", "--model", str(package.path), "-o", str(serial),
                 "--cluster", "local:2", "--progress-format", "none"])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert time.monotonic() - start < 10  # no cluster was started


def test_bad_cluster_spec_is_one_sentence(phantoms, tmp_path, capsys):
    assert main(["segment", str(phantoms), "--task", "orbit", "-o", str(tmp_path / "o"), "--cluster", "lokal:2"]) == 2
    assert "local:N" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_without_dask_cluster_says_how_to_install(phantoms, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed now fails
    assert main(["segment", str(phantoms), "--task", "orbit", "-o", str(tmp_path / "o"), "--cluster", "local:2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["headseg: --cluster needs Dask, which is not installed: pip install 'headseg[cluster]'."]
    assert not (tmp_path / "o").exists()
