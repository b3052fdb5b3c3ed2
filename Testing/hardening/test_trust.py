"""A result the user can trust: ``compare`` cannot be fooled by two models or two patients, and every
warning that bears on a result is kept in ``<case>_run.json``, whatever the console showed."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from hardening_factory import edit_series, head_ct, run_cli, threshold_han_card, write_series
from model_factory import write_random_package

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io import read_volume, write_volume

pydicom = pytest.importorskip("pydicom")


def segment(inputs, package, out, *extra) -> None:
    run = run_cli(["segment", *inputs, "--task", "han", "--model", package, "-o", out, "--device", "cpu",
                   "--no-uncertainty", "--progress-format", "none", *extra], "segment for trust tests")
    assert run.code == 0, run.stderr


def run_record(out: Path, case: str) -> dict:
    return json.loads((out / f"{case}_run.json").read_text(encoding="utf-8"))


def set_patient(paths, patient_id: str) -> None:
    def edit(n, ds):
        ds.PatientID = patient_id

    edit_series(paths, edit)


@pytest.fixture(scope="module")
def other_package(tmp_path_factory):
    """A second model: the same card under another name, other random weights."""
    return write_random_package(tmp_path_factory.mktemp("models") / "other-han-test", threshold_han_card("other-han-test"),
                                seed=99)


# -- compare: models --------------------------------------------------------------------------------
def test_compare_refuses_two_models_unless_allowed_and_then_says_so_first(tmp_path, han_package, other_package):
    ct = write_volume(head_ct(), tmp_path / "scan.nrrd")
    segment([ct], han_package.path, tmp_path / "r1")
    segment([ct], other_package.path, tmp_path / "r2")
    assert run_record(tmp_path / "r1", "scan")["model_sha256"] == han_package.card.weights.sha256

    run = run_cli(["compare", tmp_path / "r1", tmp_path / "r2", "-o", tmp_path / "c", "--progress-format", "none"],
                  "compare two models")
    assert run.code == 2 and not run.traceback_shown, run.stderr
    assert "'random-han-test'" in run.stderr and "'other-han-test'" in run.stderr
    assert "--allow-different-models" in run.stderr and not (tmp_path / "c").exists()

    run = run_cli(["compare", tmp_path / "r1", tmp_path / "r2", "-o", tmp_path / "c", "--allow-different-models",
                   "--no-register", "--progress-format", "none"], "compare two models, allowed")
    assert run.code == 0, run.stderr
    summary = (tmp_path / "c" / "summary.txt").read_text(encoding="utf-8")
    assert summary.startswith("DIFFERENT MODELS") and "bounds do not apply" in summary.splitlines()[0]
    rows = list(csv.DictReader(open(tmp_path / "c" / "change.csv")))
    assert rows and {r["exceeds"] for r in rows} == {"not applicable"} and {r["repeatability_pct"] for r in rows} == {""}


def test_compare_refuses_other_weights_under_the_same_model_name(tmp_path, han_package):
    retrained = write_random_package(tmp_path / "models" / "random-han-test", threshold_han_card("random-han-test"),
                                     seed=7)  # the same name, other weights
    ct = write_volume(head_ct(), tmp_path / "scan.nrrd")
    segment([ct], han_package.path, tmp_path / "r1")
    segment([ct], retrained.path, tmp_path / "r2")
    run = run_cli(["compare", tmp_path / "r1", tmp_path / "r2", "-o", tmp_path / "c", "--no-register"],
                  "compare two weights of one model name")
    assert run.code == 2 and "other weights" in run.stderr, run.stderr


# -- compare: patients ------------------------------------------------------------------------------
@pytest.fixture
def two_patients(tmp_path, han_package):
    """One CT exported twice under two PatientIDs (so only the ID tells them apart), each segmented."""
    ct = head_ct()
    for name, patient in (("p1", "PATIENT-ONE"), ("p2", "PATIENT-TWO")):
        set_patient(write_series(ct, tmp_path / "dicom" / name), patient)
        segment([tmp_path / "dicom" / name], han_package.path, tmp_path / f"r_{name}")
    return tmp_path


def test_run_json_keeps_a_hashed_patient_id_and_never_the_id(two_patients):
    record = run_record(two_patients / "r_p1", "p1")
    assert record["patient_id_sha256"] and len(record["patient_id_sha256"]) == 24
    assert record["patient_id_sha256"] != run_record(two_patients / "r_p2", "p2")["patient_id_sha256"]
    for path in (two_patients / "r_p1").iterdir():
        assert b"PATIENT-ONE" not in path.read_bytes(), path.name


@pytest.mark.parametrize("form", ["folders", "files", "cts given", "cts gone"])
def test_compare_refuses_two_patients_in_every_form(two_patients, form):
    t = two_patients
    args = [t / "r_p1", t / "r_p2"]
    if form == "files":
        args = [t / "r_p1" / "p1.seg.nrrd", t / "r_p2" / "p2.seg.nrrd"]
    elif form == "cts given":
        args += ["--baseline-ct", t / "dicom" / "p1", "--followup-ct", t / "dicom" / "p2"]
    elif form == "cts gone":  # only the run records can tell
        shutil.rmtree(t / "dicom")
    run = run_cli(["compare", *args, "-o", t / "c", "--progress-format", "none"], f"compare two patients ({form})")
    assert run.code == 2 and "different patients" in run.stderr and not run.traceback_shown, run.stderr
    assert "PATIENT-" not in run.stderr and not (t / "c").exists()


def test_compare_refuses_a_ct_of_another_patient_than_its_segmentation(two_patients):
    t = two_patients
    run = run_cli(["compare", t / "r_p1", t / "r_p1", "--followup-ct", t / "dicom" / "p2", "-o", t / "c"],
                  "compare with a CT of another patient")
    assert run.code == 2 and "another patient than its segmentation" in run.stderr, run.stderr


def test_compare_of_one_patient_goes_on(two_patients, han_package):
    t = two_patients
    segment([t / "dicom" / "p1"], han_package.path, t / "again")
    run = run_cli(["compare", t / "r_p1", t / "again", "-o", t / "c", "--progress-format", "none"],
                  "compare one patient")
    assert run.code == 0, run.stderr
    assert "could not be checked" not in (t / "c" / "summary.txt").read_text(encoding="utf-8")


def test_compare_without_patient_ids_says_it_could_not_check(tmp_path, han_package):
    ct = write_volume(head_ct(), tmp_path / "scan.nrrd")
    segment([ct], han_package.path, tmp_path / "r1")
    segment([ct], han_package.path, tmp_path / "r2")
    run = run_cli(["compare", tmp_path / "r1", tmp_path / "r2", "-o", tmp_path / "c", "--no-register"], "compare nrrd")
    assert run.code == 0, run.stderr
    assert "The patient could not be checked" in (tmp_path / "c" / "summary.txt").read_text(encoding="utf-8")


# -- every warning on record ------------------------------------------------------------------------
def small_ct(seed=0) -> Volume:
    return head_ct(shape=(16, 24, 20), spacing=(1.2, 1.1, 1.5), seed=seed, origin=(-10.0, 20.0, -35.0))


@pytest.mark.parametrize("progress", ["none", "json"])
def test_the_series_chosen_among_several_is_in_run_json(tmp_path, han_package, progress):
    study = tmp_path / "study"
    write_series(small_ct(), study, series_description="head 1.5mm")
    write_series(Volume(np.zeros((3, 24, 20), np.int16), (1, 1, 5)), tmp_path / "scout", series_description="scout")
    for f in (tmp_path / "scout").iterdir():
        f.rename(study / f"scout_{f.name}")
    run = run_cli(["segment", study, "--task", "han", "--model", han_package.path, "-o", tmp_path / "out",
                   "--device", "cpu", "--progress-format", progress], "two series, progress " + progress)
    assert run.code == 0, run.stderr
    notes = run_record(tmp_path / "out", "study")["notes"]
    assert any("2 DICOM series" in n and "'scout' (3 files" in n for n in notes), notes


def test_an_interpolated_slice_is_in_run_json(tmp_path, han_package):
    paths = write_series(small_ct(), tmp_path / "s")
    paths[4].unlink()
    segment([tmp_path / "s"], han_package.path, tmp_path / "out")
    notes = run_record(tmp_path / "out", "s")["notes"]
    assert any("uneven slice spacing" in n and "slice_0003.dcm" in n for n in notes), notes


def test_a_folder_with_two_patients_series_is_refused(tmp_path, han_package):
    study = tmp_path / "study"
    set_patient(write_series(small_ct(), study / "a"), "PATIENT-ONE")
    set_patient(write_series(small_ct(1), study / "b"), "PATIENT-TWO")
    for sub in ("a", "b"):
        for f in (study / sub).iterdir():
            f.rename(study / f"{sub}_{f.name}")
        (study / sub).rmdir()
    with pytest.raises(InputError, match="2 different patients"):
        read_volume(study)
    run = run_cli(["segment", study, "--task", "han", "--model", han_package.path, "-o", tmp_path / "out",
                   "--device", "cpu", "--progress-format", "none"], "folder with two patients' series")
    assert run.code == 2 and "PATIENT-" not in run.stderr and not (tmp_path / "out").exists(), run.stderr
    assert read_volume(study / "a_slice_0000.dcm").shape == small_ct().shape  # one file still selects its series


def test_a_series_whose_slices_carry_two_patient_ids_is_refused(tmp_path):
    paths = write_series(small_ct(), tmp_path / "s")
    set_patient(paths[8:], "SOMEONE-ELSE")
    with pytest.raises(InputError, match="2 different patients") as info:
        read_volume(tmp_path / "s")
    assert "SOMEONE-ELSE" not in str(info.value)


def test_a_lossy_compressed_series_is_segmented_with_a_note_in_run_json(tmp_path, han_package):
    def lossy(n, ds):
        ds.LossyImageCompression = "01"
        ds.LossyImageCompressionRatio = "8.2"
        ds.LossyImageCompressionMethod = "ISO_10918_1"

    edit_series(write_series(small_ct(), tmp_path / "s"), lossy)
    segment([tmp_path / "s"], han_package.path, tmp_path / "out")
    notes = run_record(tmp_path / "out", "s")["notes"]
    assert any("compressed with loss (method ISO_10918_1, ratio 8.2)" in n for n in notes), notes


def test_an_uncompressed_series_gets_no_lossy_note(tmp_path, han_package):
    write_series(small_ct(), tmp_path / "s")
    segment([tmp_path / "s"], han_package.path, tmp_path / "out")
    assert not any("loss" in n for n in run_record(tmp_path / "out", "s")["notes"])
