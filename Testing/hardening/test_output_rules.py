"""The rules for what a run writes, at their edges: a disk that fills at the last step, files a case
wrote in an earlier run (uncertainty map, report page), and a run refused into a new folder."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from hardening_factory import head_ct, run_cli

from headseg.io import write_volume
from headseg.run.volumes_csv import CombinedVolumes


@pytest.fixture
def ct_file(tmp_path):
    return write_volume(head_ct(), tmp_path / "case1.nrrd")


def segment(ct_file, package, out, *extra):
    return run_cli(["segment", ct_file, "--task", "han", "--model", package.path, "-o", out, "--device", "cpu",
                    "--progress-format", "none", *extra], "output rules: " + " ".join(extra))


def files(folder: Path):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_full_disk_at_the_volumes_csv_step_leaves_nothing_of_the_case(ct_file, han_package, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()

    def disk_full(self):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(CombinedVolumes, "write", disk_full)  # the last write of the case
    run = segment(ct_file, han_package, out)
    assert run.code == 2 and "No space left on device" in run.stderr and not run.traceback_shown, run.stderr
    assert files(out) == []  # what the message says: nothing of the case was left
    monkeypatch.undo()
    run = segment(ct_file, han_package, out)  # so the rerun is not refused
    assert run.code == 0, run.stderr
    assert "case1.seg.nrrd" in files(out) and "volumes.csv" in files(out)


def test_report_html_is_not_overwritten_without_overwrite(ct_file, han_package, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").write_text("my notes")
    run = segment(ct_file, han_package, out, "--report")
    assert run.code == 2 and "report.html" in run.stderr and "--overwrite" in run.stderr, run.stderr
    assert files(out) == ["report.html"] and (out / "report.html").read_text(encoding="utf-8") == "my notes"
    run = segment(ct_file, han_package, out, "--report", "--overwrite")
    assert run.code == 0 and (out / "report.html").read_text(encoding="utf-8") != "my notes"


def test_an_earlier_uncertainty_map_follows_the_no_overwrite_rule(ct_file, han_package, tmp_path):
    out = tmp_path / "out"
    assert segment(ct_file, han_package, out).code == 0
    assert (out / "case1_uncertainty.nrrd").is_file()
    for name in ("case1.seg.nrrd", "case1_volumes.csv", "case1_run.json", "volumes.csv"):
        (out / name).unlink()
    run = segment(ct_file, han_package, out, "--no-uncertainty")  # the old map would sit beside a new result
    assert run.code == 2 and "case1_uncertainty.nrrd" in run.stderr, run.stderr
    run = segment(ct_file, han_package, out, "--no-uncertainty", "--overwrite")
    assert run.code == 0, run.stderr
    assert not (out / "case1_uncertainty.nrrd").exists()  # replaced by nothing: removed, not left stale


def test_a_refused_run_into_a_new_folder_leaves_no_folder(tmp_path, han_package):
    bad = tmp_path / "bad.nrrd"
    bad.write_bytes(b"NRRD0004\nnot really\n")
    out = tmp_path / "new" / "out"
    run = segment(bad, han_package, out)
    assert run.code == 2 and not run.traceback_shown, run.stderr
    assert not out.exists()  # the folder the run made for its outputs is removed again
