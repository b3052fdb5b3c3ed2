"""DICOM series in: which series, slice order, spacing, tilted and unevenly spaced series regularised, and
refusals (gaps, duplicates, mixtures)."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from hardening_factory import edit_series, head_ct, run_cli, tilt_series, write_series

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io import read_volume

pydicom = pytest.importorskip("pydicom")

ROTATED = np.array([[math.cos(0.3), 0.0, math.sin(0.3)], [0.0, 1.0, 0.0], [-math.sin(0.3), 0.0, math.cos(0.3)]])


def small_ct(seed=0, direction=None) -> Volume:
    return head_ct(shape=(16, 24, 20), spacing=(1.2, 1.1, 1.5), seed=seed, origin=(-10.0, 20.0, -35.0),
                   direction=direction)


def flatten(folder: Path, subfolders) -> None:
    """All series' files in one folder, as many PACS exports are."""
    for sub in subfolders:
        for f in (folder / sub).iterdir():
            f.rename(folder / f"{sub}_{f.name}")
        (folder / sub).rmdir()


def test_folder_with_several_series_picks_ct_and_names_the_others(tmp_path, caplog, han_package):
    study = tmp_path / "study"
    ct = small_ct()
    write_series(ct, study / "ct", series_description="head 1.5mm")
    write_series(Volume(np.zeros((20, 24, 20), np.int16), (1, 1, 1)), study / "mr", modality="MR",
                 series_description="T1 MPRAGE")  # larger than the CT: the CT still wins
    write_series(Volume(np.zeros((3, 24, 20), np.int16), (1, 1, 5)), study / "scout", series_description="scout")
    flatten(study, ("ct", "mr", "scout"))

    with caplog.at_level(logging.WARNING, logger="headseg.io"):
        back = read_volume(study)
    np.testing.assert_array_equal(back.array, ct.array)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "3 DICOM series" in warning and "head 1.5mm" in warning
    assert "MR 'T1 MPRAGE' (20 files" in warning and "'scout' (3 files" in warning

    # Through the command line: segmented, and the warning reaches the user.
    run = run_cli(["segment", study, "--task", "han", "--model", han_package.path, "-o", tmp_path / "out",
                   "--device", "cpu", "--progress-format", "json"], "DICOM folder with 3 series")
    assert run.code == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    warnings = [e["message"] for e in events if e["event"] == "log" and e["level"] == "warning"]
    assert any("T1 MPRAGE" in w and "3 DICOM series" in w for w in warnings), warnings
    assert not run.traceback_shown
    assert (tmp_path / "out" / "study.seg.nrrd").is_file()


def test_slices_sorted_by_position_not_instance_number_or_name(tmp_path):
    ct = small_ct(direction=ROTATED)  # oblique but orthogonal: sorting must use the slice normal
    paths = write_series(ct, tmp_path / "tmp")
    permutation = np.random.default_rng(1).permutation(len(paths))
    edit_series(paths, lambda n, ds: setattr(ds, "InstanceNumber", int(permutation[n]) + 1))
    shuffled = tmp_path / "shuffled"
    shuffled.mkdir()
    names = np.random.default_rng(2).permutation(len(paths))
    for path, name in zip(paths, names):
        shutil.move(str(path), shuffled / f"IMG{name:04d}")  # no extension, names in random order
    back = read_volume(shuffled)
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.same_geometry(ct, tol=1e-4)


def test_reverse_instance_numbers_give_the_same_volume(tmp_path):
    ct = small_ct()
    paths = write_series(ct, tmp_path / "s")
    edit_series(paths, lambda n, ds: setattr(ds, "InstanceNumber", len(paths) - n))
    back = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.same_geometry(ct, tol=1e-4)


def test_spacing_comes_from_positions_not_slice_thickness(tmp_path):
    ct = small_ct()
    paths = write_series(ct, tmp_path / "s")

    def wrong_thickness(n, ds):
        ds.SliceThickness = "5"  # reconstructed 5 mm slabs every 1.5 mm: overlapping slices
        ds.SpacingBetweenSlices = "7"

    edit_series(paths, wrong_thickness)
    back = read_volume(tmp_path / "s")
    assert back.spacing[2] == pytest.approx(1.5, abs=1e-4)
    assert back.same_geometry(ct, tol=1e-4)


def test_rounded_positions_are_accepted(tmp_path):
    """IPP written with 0.01 mm rounding and a jitter of that size is still one regular stack."""
    ct = small_ct()
    paths = write_series(ct, tmp_path / "s")
    jitter = np.random.default_rng(3).uniform(-0.005, 0.005, (len(paths), 3))

    def round_positions(n, ds):
        ds.ImagePositionPatient = [f"{float(v) + d:.2f}" for v, d in zip(ds.ImagePositionPatient, jitter[n])]

    edit_series(paths, round_positions)
    back = read_volume(tmp_path / "s")
    np.testing.assert_array_equal(back.array, ct.array)
    assert back.spacing[2] == pytest.approx(1.5, abs=0.01)


@pytest.mark.parametrize("degrees", [15.0, 2.0])
def test_gantry_tilt_is_regularised_with_its_angle(tmp_path, degrees, han_package, caplog):
    ct = small_ct()
    paths = write_series(ct, tmp_path / "tilted")
    tilt_series(paths, degrees, step_mm=1.5)
    with caplog.at_level(logging.WARNING, logger="headseg.io"):
        back = read_volume(tmp_path / "tilted")
    warning = " ".join(r.getMessage() for r in caplog.records)
    angle = float(warning.split("gantry tilt of ")[1].split(" ")[0])
    assert angle == pytest.approx(degrees, abs=0.1)
    assert "resampled onto a regular grid" in warning and "1.50 mm between slices" in warning
    # Orthogonal grid along the slices' own axes; the rows grow to hold every slice's sideways shift.
    np.testing.assert_allclose(back.direction, np.eye(3), atol=1e-9)
    shift_rows = math.ceil(15 * 1.5 * math.tan(math.radians(degrees)) / 1.1 - 1e-3)
    assert back.shape == (16, 24 + shift_rows, 20)
    assert back.spacing == pytest.approx((1.2, 1.1, 1.5), abs=1e-6)
    run = run_cli(["segment", tmp_path / "tilted", "--task", "han", "--model", han_package.path, "-o",
                   tmp_path / "out", "--device", "cpu", "--progress-format", "json"], f"gantry tilt {degrees} deg")
    assert run.code == 0 and not run.traceback_shown, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert any("gantry tilt of" in e["message"] for e in events if e["event"] == "log" and e["level"] == "warning")
    assert (tmp_path / "out" / "tilted.seg.nrrd").is_file()


def test_one_missing_slice_is_interpolated_with_a_warning_that_names_it(tmp_path, caplog):
    ct = small_ct()
    paths = write_series(ct, tmp_path / "s")
    paths[4].unlink()  # 3.0 mm between slices 3 and 5: twice the spacing, not more
    with caplog.at_level(logging.WARNING, logger="headseg.io"):
        back = read_volume(tmp_path / "s")
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "uneven slice spacing" in warning and "3.00 mm (files 'slice_0003.dcm' to 'slice_0005.dcm')" in warning
    assert back.same_geometry(ct, tol=1e-4)  # the same grid as the complete series
    keep = [k for k in range(ct.shape[0]) if k != 4]
    np.testing.assert_array_equal(back.array[keep], ct.array[keep])
    expected = (ct.array[3].astype(float) + ct.array[5]) / 2
    assert np.abs(back.array[4] - expected).max() <= 0.5 + 1e-6


def test_a_gap_of_more_than_twice_the_spacing_is_refused_naming_where(tmp_path):
    paths = write_series(small_ct(), tmp_path / "s")
    paths[4].unlink()
    paths[5].unlink()
    with pytest.raises(InputError, match=r"gap of 4.50 mm between the slices at -30.50 and -26.00 mm along the "
                                         r"slice normal \(files 'slice_0003.dcm' and 'slice_0006.dcm'\), more than "
                                         r"twice its usual slice spacing of 1.50 mm"):
        read_volume(tmp_path / "s")


def test_two_slices_at_one_position_are_refused(tmp_path):
    paths = write_series(small_ct(), tmp_path / "s")
    edit_series(paths[5:6], lambda n, ds: setattr(ds, "ImagePositionPatient", pydicom.dcmread(paths[4])
                                                  .ImagePositionPatient))
    with pytest.raises(InputError, match="two slices at the same position"):
        read_volume(tmp_path / "s")


def test_mixed_orientations_are_refused(tmp_path):
    paths = write_series(small_ct(), tmp_path / "s")
    edit_series(paths[:1], lambda n, ds: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 0, 0, -1]))
    with pytest.raises(InputError, match="different orientations"):
        read_volume(tmp_path / "s")


def test_one_file_selects_its_series(tmp_path):
    ct, other = small_ct(), small_ct(seed=5)
    write_series(ct, tmp_path / "study" / "a")
    write_series(Volume(other.array[:6], other.spacing, other.origin), tmp_path / "study" / "b")
    flatten(tmp_path / "study", ("a", "b"))
    chosen = sorted((tmp_path / "study").glob("b_*"))[0]
    back = read_volume(chosen)
    np.testing.assert_array_equal(back.array, other.array[:6])


def test_huge_rows_and_columns_are_refused_before_reading(tmp_path):
    paths = write_series(small_ct(), tmp_path / "s")

    def huge(n, ds):
        ds.Rows, ds.Columns = 65535, 65535

    edit_series(paths, huge)
    with pytest.raises(InputError, match="claims 65535 x 65535 x 16 = "):
        read_volume(tmp_path / "s")


def test_truncated_slice_in_a_series_is_refused(tmp_path, han_package):
    paths = write_series(small_ct(), tmp_path / "s")
    data = paths[3].read_bytes()
    paths[3].write_bytes(data[: len(data) - 300])
    with pytest.raises(InputError):
        read_volume(tmp_path / "s")
    run = run_cli(["segment", tmp_path / "s", "--task", "han", "--model", han_package.path, "-o", tmp_path / "o",
                   "--progress-format", "none"], "DICOM series with a truncated slice")
    assert run.code == 2 and not run.traceback_shown, run.stderr
