"""Inputs that surprise, met with a sentence: file names that collide become folder names, a DICOM
folder's other files are named as left aside, a short series is noted and one too short for the task's
anatomy refused. Real files through ``headseg segment``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headseg.errors import InputError
from headseg.io import write_volume
from headseg.io.cases import discover_cases
from headseg.io.coverage import coverage_notes, head_foot_extent_mm

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "Testing" / "hardening"))
from hardening_factory import head_ct, write_random_han_package, write_series  # noqa: E402


def _segment(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "headseg", "segment", *map(str, args), "--task", "han",
                           "--device", "cpu", "--progress-format", "none"], capture_output=True, text=True, env=env,
                          timeout=600)


def test_files_whose_names_collide_are_named_after_their_folders(tmp_path):
    for patient in ("patient_a", "patient_b"):
        (tmp_path / patient).mkdir()
        write_volume(head_ct(), tmp_path / patient / "ct.nii.gz")
    notes: list = []
    cases = discover_cases([str(tmp_path / "patient_a" / "ct.nii.gz"), str(tmp_path / "patient_b" / "ct.nii.gz")],
                           notes=notes)
    assert [c.name for c in cases] == ["patient_a", "patient_b"]
    assert len(notes) == 2 and "named 'patient_a' after its folder" in notes[0]
    # Folders of one name as well: refused, with what to do.
    (tmp_path / "x" / "patient_a").mkdir(parents=True)
    write_volume(head_ct(), tmp_path / "x" / "patient_a" / "ct.nii.gz")
    with pytest.raises(InputError, match="also when named after their folders"):
        discover_cases([str(tmp_path / "patient_a" / "ct.nii.gz"), str(tmp_path / "x" / "patient_a" / "ct.nii.gz")])


def test_extent_is_measured_head_to_foot_whatever_the_storage():
    volume = head_ct(shape=(10, 48, 48), spacing=(2.0, 2.0, 2.2))
    assert head_foot_extent_mm(volume) == pytest.approx(22.0)
    for task in ("han", "orbit"):
        with pytest.raises(InputError, match=f"covers only 22 mm .* {task} task needs at least 24 mm"):
            coverage_notes(volume, task)
    assert "10 slices, 25 mm" in coverage_notes(head_ct(shape=(10, 48, 48), spacing=(2.0, 2.0, 2.5)), "orbit")[0]
    assert coverage_notes(head_ct(shape=(6, 48, 48), spacing=(2.0, 2.0, 2.5)), "han") == []  # validation's turn
    assert coverage_notes(head_ct(shape=(40, 48, 48), spacing=(2.0, 2.0, 2.5)), "han") == []


def test_a_dicom_fragment_beside_an_image_is_noted_or_refused(tmp_path):
    """A folder with a short DICOM series, a whole NIfTI and a text file: the series is segmented with a
    note naming what was left aside and that it is short (console and run.json); a series too short for
    the task is refused with exit 2 and nothing written."""
    package = write_random_han_package(tmp_path / "models" / "random-han")
    folder = tmp_path / "mixed"
    write_series(head_ct(shape=(14, 48, 48), spacing=(2.0, 2.0, 3.5)), folder)
    write_volume(head_ct(shape=(40, 48, 48)), folder / "whole.nii.gz")
    (folder / "notes.txt").write_text("scanner export\n")
    out = tmp_path / "out"
    proc = _segment(folder, "--model", package.path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "only the DICOM series of mixed was read; the folder also holds 1 image file(s) (whole.nii.gz) and " \
           "1 other file(s) that are not DICOM" in proc.stderr
    assert "the image is short: 14 slices, 49 mm" in proc.stderr
    notes = json.loads((out / "mixed_run.json").read_text(encoding="utf-8"))["notes"]
    assert any("whole.nii.gz" in n for n in notes) and any("14 slices" in n for n in notes)

    fragment = tmp_path / "fragment"
    write_series(head_ct(shape=(10, 48, 48), spacing=(2.0, 2.0, 2.2)), fragment)
    proc = _segment(fragment, "--model", package.path, "-o", tmp_path / "out2")
    assert proc.returncode == 2
    assert "covers only 22 mm from head to foot (10 slices); the han task needs at least 24 mm" in proc.stderr
    assert not (tmp_path / "out2" / "fragment.seg.nrrd").exists()
