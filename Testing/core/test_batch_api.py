"""headseg.run.batch and headseg.run.plan without a model: planning and collisions, volumes.csv assembly, clean-up of failed cases,
cancel. The segmentation is a stand-in that writes two small files, as any caller's would."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import List

import pytest

from headseg.errors import Cancelled, InputError, ModelPackageError
from headseg.io.cases import Case
from headseg.measure.volumes import VolumeRow
from headseg.run.batch import BatchEvents, run_batch
from headseg.run.plan import plan_batch
from headseg.run.volumes_csv import CombinedVolumes

ROWS = [VolumeRow("mandible", "", 10, 1.25), VolumeRow("parotid", "left", 3, 0.5)]


def cases(tmp_path: Path, *names: str) -> List[Case]:
    return [Case(n, tmp_path / f"{n}.nrrd") for n in names]


def combined(path: Path) -> List[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def writes(fail_on=(), error=InputError("this case cannot be used")):
    """A segment_case that writes both files, then fails for the cases in ``fail_on``."""

    def segment_case(case, outputs):
        outputs.segmentation.write_text(case.name)
        outputs.volumes_csv.write_text(case.name)
        if case.name in fail_on:
            raise error
        return ROWS

    return segment_case


def test_plan_names_every_output_and_creates_the_folder(tmp_path):
    plan = plan_batch(cases(tmp_path, "a", "b"), tmp_path / "out")
    assert plan.outputs["a"].files() == [tmp_path / "out" / "a.seg.nrrd", tmp_path / "out" / "a_volumes.csv"]
    assert plan.volumes_csv == tmp_path / "out" / "volumes.csv" and (tmp_path / "out").is_dir()


def test_existing_files_and_listed_cases_collide_before_any_work(tmp_path):
    out = tmp_path / "out"
    run_batch(plan_batch(cases(tmp_path, "a"), out), writes())
    (out / "a.seg.nrrd").unlink()
    (out / "a_volumes.csv").unlink()
    with pytest.raises(InputError, match=r"1 output\(s\) already exist .*rows of case 'a'.*--overwrite"):
        plan_batch(cases(tmp_path, "a", "b"), out)
    (out / "b_volumes.csv").write_text("someone else's")
    with pytest.raises(InputError, match="b_volumes.csv"):
        plan_batch(cases(tmp_path, "b"), out)
    plan_batch(cases(tmp_path, "a", "b"), out, overwrite=True)  # allowed when asked


def test_volumes_csv_keeps_earlier_rows_and_replaces_a_case_only_with_overwrite(tmp_path):
    out = tmp_path / "out"
    run_batch(plan_batch(cases(tmp_path, "a"), out), writes())
    run_batch(plan_batch(cases(tmp_path, "b"), out), writes())
    assert [r["case"] for r in combined(out / "volumes.csv")] == ["a", "a", "b", "b"]
    run_batch(plan_batch(cases(tmp_path, "a"), out, overwrite=True), writes())
    rows = combined(out / "volumes.csv")
    assert [r["case"] for r in rows] == ["a", "a", "b", "b"]  # replaced in place, not added again
    assert rows[0] == {"case": "a", "structure": "mandible", "side": "", "voxels": "10", "volume_cm3": "1.25",
                       "doubt": "", "flags": "", "key": "mandible"}


def test_a_foreign_volumes_csv_is_refused_or_replaced_with_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "volumes.csv").write_text("name,value\nx,1\n")
    with pytest.raises(InputError, match="not a HeadSeg volume table"):
        plan_batch(cases(tmp_path, "a"), out)
    run_batch(plan_batch(cases(tmp_path, "a"), out, overwrite=True), writes())
    assert {r["case"] for r in combined(out / "volumes.csv")} == {"a"}


def test_a_failed_case_leaves_nothing_and_the_batch_goes_on(tmp_path):
    out = tmp_path / "out"
    messages = []
    report = run_batch(plan_batch(cases(tmp_path, "a", "b", "c"), out), writes(fail_on={"b"}),
                       events=BatchEvents(log=messages.append))
    assert [(o.case.name, o.state, o.code) for o in report.outcomes] == [("a", "succeeded", 0), ("b", "failed", 2),
                                                                          ("c", "succeeded", 0)]
    assert sorted(p.name for p in out.iterdir()) == ["a.seg.nrrd", "a_volumes.csv", "c.seg.nrrd", "c_volumes.csv",
                                                     "volumes.csv"]
    assert "  failed: this case cannot be used" in messages and messages[0] == "[1/3] a"


def test_errors_outside_case_errors_and_stop_on_error_end_the_batch_after_clean_up(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ModelPackageError):
        run_batch(plan_batch(cases(tmp_path, "a", "b"), out), writes(fail_on={"a"}, error=ModelPackageError("bad")))
    with pytest.raises(InputError):
        run_batch(plan_batch(cases(tmp_path, "a"), out), writes(fail_on={"a"}), stop_on_error=True)
    assert not out.exists()  # the folder the plan made is removed again: nothing was written into it


def test_overwrite_keeps_files_a_failed_case_never_touched(tmp_path):
    out = tmp_path / "out"
    run_batch(plan_batch(cases(tmp_path, "a"), out), writes())

    def fails_before_writing(case, outputs):
        raise InputError("unreadable")

    report = run_batch(plan_batch(cases(tmp_path, "a"), out, overwrite=True), fails_before_writing)
    assert report.failed and (out / "a.seg.nrrd").read_text(encoding="utf-8") == "a"


def test_cancel_keeps_the_finished_cases_in_volumes_csv(tmp_path):
    out = tmp_path / "out"
    report = run_batch(plan_batch(cases(tmp_path, "a", "b", "c"), out),
                       writes(fail_on={"b"}, error=Cancelled("Segmentation was cancelled.")))
    assert report.cancelled and [o.state for o in report.outcomes] == ["succeeded", "cancelled"]
    assert {r["case"] for r in combined(out / "volumes.csv")} == {"a"}
    assert not (out / "b.seg.nrrd").exists() and not (out / "c.seg.nrrd").exists()


def test_combined_volumes_rewrites_earlier_rows_unchanged(tmp_path):
    path = tmp_path / "volumes.csv"
    path.write_text("case,structure,side,voxels,volume_cm3\nold,mandible,,7,0.123456789\n")
    table = CombinedVolumes.read(path)
    table.put("new", ROWS[:1])
    # A table written before doubt, flags and key existed is read, and written back with the new columns
    # (an old row's key is its structure and side joined).
    assert path.read_text(encoding="utf-8").splitlines() == ["case,structure,side,voxels,volume_cm3,doubt,flags,key",
                                             "old,mandible,,7,0.123456789,,,mandible",
                                             "new,mandible,,10,1.25,,,mandible"]
