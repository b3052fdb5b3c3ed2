"""Nothing overwritten, nothing half-done, nothing dropped: the input/output defects an independent audit
found, each through the command line users run.

1. ``volumes.csv`` keeps the rows of earlier runs and gains rows only for new cases or with --overwrite.
2. A DICOM file of the series that cannot be decoded stops the run and is named.
3. DICOM export requirements are checked before segmenting: a refused export leaves no output.
4. CSV files follow the umask like every other output.
5. A DICOM series whose Modality is not CT is refused unless --allow-non-ct is given.
6. One slice file of a series names the outputs after the series folder, not after the slice.
7. A cancelled batch still records the cases it finished in ``volumes.csv``.
"""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path
from typing import Dict, List

import pytest
from hardening_factory import edit_series, head_ct, run_cli, write_series

from headseg.errors import Cancelled, InputError
from headseg.io import read_volume, write_volume


def segment(inputs, package, out, *extra) -> list:
    return ["segment", *inputs, "--task", "han", "--model", package.path, "-o", out, "--device", "cpu",
            "--progress-format", "none", *extra]


def combined_rows(out: Path) -> List[Dict[str, str]]:
    with open(out / "volumes.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def files_in(folder: Path) -> List[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.fixture
def two_cases(tmp_path):
    (tmp_path / "in").mkdir()
    return (write_volume(head_ct(seed=1), tmp_path / "in" / "case_a.nrrd"),
            write_volume(head_ct(seed=2), tmp_path / "in" / "case_b.nrrd"))


# -- 1 -----------------------------------------------------------------------------------------------
def test_volumes_csv_gains_rows_only_for_new_cases_or_with_overwrite(two_cases, han_package, tmp_path):
    a, b = two_cases
    out = tmp_path / "out"
    assert run_cli(segment([a], han_package, out), "first case").code == 0
    first = combined_rows(out)
    assert first and {r["case"] for r in first} == {"case_a"}

    assert run_cli(segment([b], han_package, out), "second case, same folder").code == 0
    rows = combined_rows(out)
    assert {r["case"] for r in rows} == {"case_a", "case_b"}, "the first run's rows were lost"
    assert rows[: len(first)] == first

    again = run_cli(segment([a], han_package, out), "first case again")
    assert again.code == 2 and "--overwrite" in again.stderr
    assert combined_rows(out) == rows

    assert run_cli(segment([a], han_package, out, "--overwrite"), "first case, --overwrite").code == 0
    replaced = combined_rows(out)
    assert sorted(r["case"] for r in replaced) == sorted(r["case"] for r in rows), "rows were duplicated"


def test_a_case_already_in_volumes_csv_is_a_collision(two_cases, han_package, tmp_path):
    a, _ = two_cases
    out = tmp_path / "out"
    assert run_cli(segment([a], han_package, out), "first case").code == 0
    for name in ("case_a.seg.nrrd", "case_a_volumes.csv", "case_a_uncertainty.nrrd", "case_a_run.json"):
        (out / name).unlink()
    before = (out / "volumes.csv").read_text(encoding="utf-8")
    run = run_cli(segment([a], han_package, out), "case listed in volumes.csv only")
    assert run.code == 2 and "volumes.csv" in run.stderr and "--overwrite" in run.stderr
    assert (out / "volumes.csv").read_text(encoding="utf-8") == before and files_in(out) == ["volumes.csv"]


# -- 2 -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [-1, 5], ids=["last slice", "middle slice"])
def test_an_undecodable_slice_stops_the_run_and_is_named(tmp_path, han_package, which):
    paths = write_series(head_ct(), tmp_path / "series")
    data = paths[which].read_bytes()
    paths[which].write_bytes(data[: len(data) - 100])
    with pytest.raises(InputError, match=paths[which].name):
        read_volume(tmp_path / "series")
    run = run_cli(segment([tmp_path / "series"], han_package, tmp_path / "out"), "DICOM slice cut by 100 bytes")
    assert run.code == 2 and paths[which].name in run.stderr and not run.traceback_shown
    assert "uneven" not in run.stderr
    assert files_in(tmp_path / "out") == []


# -- 3 -----------------------------------------------------------------------------------------------
def test_export_requirements_are_checked_before_segmenting(tmp_path, han_package):
    pytest.importorskip("highdicom")
    paths = write_series(head_ct(), tmp_path / "series")
    edit_series(paths, lambda n, ds: delattr(ds, "FrameOfReferenceUID"))
    out = tmp_path / "out"
    run = run_cli(segment([tmp_path / "series"], han_package, out, "--export", "rtstruct"),
                  "DICOM series without FrameOfReferenceUID, --export")
    assert run.code == 2 and "FrameOfReferenceUID" in run.stderr and not run.traceback_shown
    assert files_in(out) == [], "a refused export must leave no segmentation or CSV behind"


# -- 4 -----------------------------------------------------------------------------------------------
def test_csv_files_follow_the_umask(two_cases, han_package, tmp_path):
    a, _ = two_cases
    out = tmp_path / "out"
    previous = os.umask(0o022)
    try:
        assert run_cli(segment([a], han_package, out), "umask 022").code == 0
    finally:
        os.umask(previous)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in out.iterdir()}
    assert modes == {"case_a.seg.nrrd": 0o644, "case_a_volumes.csv": 0o644, "volumes.csv": 0o644,
                     "case_a_uncertainty.nrrd": 0o644, "case_a_run.json": 0o644}


# -- 5 -----------------------------------------------------------------------------------------------
def test_a_series_that_is_not_ct_is_refused_unless_allowed(tmp_path, han_package):
    write_series(head_ct(), tmp_path / "mr", modality="MR", series_description="T1 looks like CT")
    run = run_cli(segment([tmp_path / "mr"], han_package, tmp_path / "out"), "MR series with CT-like values")
    assert run.code == 2 and "Modality" in run.stderr and "MR" in run.stderr and "--allow-non-ct" in run.stderr
    assert files_in(tmp_path / "out") == []
    allowed = run_cli(segment([tmp_path / "mr"], han_package, tmp_path / "out", "--allow-non-ct"),
                      "MR series, --allow-non-ct")
    assert allowed.code == 0, allowed.stderr
    assert (tmp_path / "out" / "mr.seg.nrrd").is_file()


# -- 6 -----------------------------------------------------------------------------------------------
def test_one_slice_file_names_the_outputs_after_its_series_folder(tmp_path, han_package):
    paths = write_series(head_ct(), tmp_path / "patient7")
    out = tmp_path / "out"
    run = run_cli(segment([paths[5]], han_package, out), "one file of a DICOM series")
    assert run.code == 0, run.stderr
    assert files_in(out) == ["patient7.seg.nrrd", "patient7_run.json", "patient7_uncertainty.nrrd",
                             "patient7_volumes.csv", "volumes.csv"]
    assert {r["case"] for r in combined_rows(out)} == {"patient7"}


# -- 7 -----------------------------------------------------------------------------------------------
def test_a_cancelled_batch_keeps_the_finished_cases_in_volumes_csv(two_cases, han_package, tmp_path, monkeypatch):
    import headseg.segment.pipeline

    real = headseg.segment.pipeline.segment_volume
    calls = []

    def cancelled_on_the_second_case(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise Cancelled("Segmentation was cancelled.")
        return real(*args, **kwargs)

    monkeypatch.setattr(headseg.segment.pipeline, "segment_volume", cancelled_on_the_second_case)
    out = tmp_path / "out"
    run = run_cli(segment([tmp_path / "in"], han_package, out), "batch cancelled in the second case")
    assert run.code == 5 and not run.traceback_shown
    assert files_in(out) == ["case_a.seg.nrrd", "case_a_run.json", "case_a_uncertainty.nrrd", "case_a_volumes.csv",
                             "volumes.csv"]
    assert {r["case"] for r in combined_rows(out)} == {"case_a"}


def test_objects_and_damaged_files_of_other_series_do_not_stop_the_read(tmp_path):
    pytest.importorskip("highdicom")
    import numpy as np

    from headseg.dicom_export import write_rtstruct
    from headseg.labels import get_label_set

    ct = head_ct()
    write_series(ct, tmp_path / "study")
    other = write_series(head_ct(seed=3), tmp_path / "other")
    labels = read_volume(tmp_path / "study")
    write_rtstruct(labels.with_array((labels.array > 500).astype(np.uint8) * 7), get_label_set("openkbp"),
                   tmp_path / "study", tmp_path / "study" / "structures.dcm")  # GDCM lists no series for it
    data = other[2].read_bytes()
    (tmp_path / "study" / "other_series_cut.dcm").write_bytes(data[: len(data) - 100])
    np.testing.assert_array_equal(read_volume(tmp_path / "study").array, ct.array)
