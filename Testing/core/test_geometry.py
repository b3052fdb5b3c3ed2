"""Geometry must survive every file format and grid change: spacing/origin/direction to 1e-5 mm, pixel
type kept, and -- the error that matters clinically -- the patient's left stays the patient's left."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from headseg.geometry import Volume
from headseg.io import read_volume, write_dicom_series, write_volume
from headseg.resample import make_grid, reorient_to, resample_labels_to_grid, resample_to_grid


def rotation(axis: str, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    if axis == "z":
        return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    if axis == "x":
        return np.array([[1.0, 0, 0], [0, c, -s], [0, s, c]])
    return np.array([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


OBLIQUE = rotation("z", 20) @ rotation("x", 7)
DIRECTIONS = {
    "lps": np.eye(3),
    "ras_flipped": np.diag([-1.0, -1.0, 1.0]),
    "oblique": OBLIQUE,
}


def random_ct(direction: np.ndarray, shape=(6, 7, 9)) -> Volume:
    array = np.random.default_rng(1).integers(-1024, 2000, shape).astype(np.int16)
    return Volume(array, (0.45, 0.6, 1.25), (12.5, -7.25, 30.125), direction)


# ------------------------------------------------------------------------------------------------
# Volume conventions
# ------------------------------------------------------------------------------------------------
def test_index_order_marker_voxel():
    """Voxel (i=4, j=3, k=2) is array[2, 3, 4] and maps to origin + 4 di + 3 dj + 2 dk."""
    volume = random_ct(OBLIQUE)
    expected = np.asarray(volume.origin) + volume.direction @ (np.array([4, 3, 2]) * volume.spacing)
    np.testing.assert_allclose(volume.index_to_lps((4, 3, 2)), expected, atol=1e-12)
    image = volume.to_sitk()
    assert image.GetPixel(4, 3, 2) == volume.array[2, 3, 4]
    np.testing.assert_allclose(image.TransformIndexToPhysicalPoint((4, 3, 2)), expected, atol=1e-9)
    np.testing.assert_allclose(volume.lps_to_index(expected), (4, 3, 2), atol=1e-9)


def test_ras_matrix_round_trip():
    volume = random_ct(OBLIQUE)
    ras = volume.ijk_to_ras
    np.testing.assert_allclose(ras[:3, :], np.diag([-1, -1, 1]) @ volume.ijk_to_lps[:3, :])
    back = Volume.from_ijk_to_ras(volume.array, ras)
    assert back.same_geometry(volume, tol=1e-12)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-12)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-12)


def test_sitk_bridge_round_trip():
    volume = random_ct(OBLIQUE)
    back = Volume.from_sitk(volume.to_sitk())
    assert back.same_geometry(volume, tol=1e-12) and back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, volume.array)


# ------------------------------------------------------------------------------------------------
# File round trips
# ------------------------------------------------------------------------------------------------
def assert_same_geometry(a: Volume, b: Volume, tol: float = 1e-5) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing, b.spacing, atol=tol)
    np.testing.assert_allclose(a.origin, b.origin, atol=tol)
    np.testing.assert_allclose(a.direction, b.direction, atol=tol)


@pytest.mark.parametrize("direction_name", list(DIRECTIONS))
@pytest.mark.parametrize("extension", [".nrrd", ".nii.gz", ".mha", "dicom"])
def test_file_round_trip_keeps_geometry_and_int16(tmp_path: Path, extension: str, direction_name: str):
    volume = random_ct(DIRECTIONS[direction_name])
    if extension == "dicom":
        write_dicom_series(volume, tmp_path / "series")
        back = read_volume(tmp_path / "series")
    else:
        back = read_volume(write_volume(volume, tmp_path / f"ct{extension}"))
    assert back.array.dtype == np.int16
    assert_same_geometry(back, volume)
    np.testing.assert_array_equal(back.array, volume.array)


def test_dicom_image_position_is_lps(tmp_path: Path):
    """Independent check with pydicom: ImagePositionPatient of slice k is the LPS point of (0, 0, k)."""
    pydicom = pytest.importorskip("pydicom")
    volume = random_ct(OBLIQUE)
    paths = write_dicom_series(volume, tmp_path / "series")
    for k in (0, len(paths) - 1):
        ds = pydicom.dcmread(str(paths[k]))
        position = [float(x) for x in ds.ImagePositionPatient]
        np.testing.assert_allclose(position, volume.index_to_lps((0, 0, k)), atol=1e-5)
        np.testing.assert_allclose([float(x) for x in ds.ImageOrientationPatient],
                                   list(volume.direction[:, 0]) + list(volume.direction[:, 1]), atol=1e-8)


def test_nrrd_header_read_independently(tmp_path: Path):
    """pynrrd (not SimpleITK) sees the same LPS space directions and origin."""
    nrrd = pytest.importorskip("nrrd")
    volume = random_ct(OBLIQUE)
    data, header = nrrd.read(str(write_volume(volume, tmp_path / "ct.nrrd")), index_order="C")
    assert header["space"] == "left-posterior-superior"
    np.testing.assert_allclose(np.asarray(header["space directions"]).T,
                               volume.direction @ np.diag(volume.spacing), atol=1e-9)
    np.testing.assert_allclose(header["space origin"], volume.origin, atol=1e-9)
    np.testing.assert_array_equal(data, volume.array)


# ------------------------------------------------------------------------------------------------
# The patient's left stays left
# ------------------------------------------------------------------------------------------------
HEAD_CENTRE = np.array([5.0, -20.0, 40.0])  # LPS mm
BLOB_OFFSET = np.array([25.0, 0.0, 0.0])  # +x = towards the patient's LEFT


def head_phantom(direction: np.ndarray, spacing=(2.0, 2.0, 2.5), size_ijk=(40, 36, 24)) -> Volume:
    """Head-like CT built in physical space (so any grid sees the same anatomy): an ellipsoid of soft
    tissue with a dense blob on the patient's left. Label map: 1 where the blob is."""
    size = np.asarray(size_ijk)
    extent = size * np.asarray(spacing)
    # Centre the grid on the head whatever the direction.
    origin = HEAD_CENTRE - direction @ (extent / 2.0 - np.asarray(spacing) / 2.0)
    grid_volume = Volume(np.zeros(tuple(size[::-1]), np.int16), spacing, origin, direction)
    k, j, i = np.meshgrid(*[np.arange(n) for n in grid_volume.shape], indexing="ij")
    ijk1 = np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    lps = (grid_volume.ijk_to_lps @ ijk1)[:3].T.reshape(grid_volume.shape + (3,))
    rel = lps - HEAD_CENTRE
    head = ((rel / np.array([32.0, 38.0, 26.0])) ** 2).sum(-1) <= 1.0
    blob = (((rel - BLOB_OFFSET) / 6.0) ** 2).sum(-1) <= 1.0
    array = np.full(grid_volume.shape, -1000, np.int16)
    array[head] = 40
    array[blob] = 900
    return grid_volume.with_array(array)


def blob_centroid_lps(volume: Volume, threshold: float = 500) -> np.ndarray:
    k, j, i = np.nonzero(volume.array > threshold)
    assert len(i) > 10, "blob lost"
    return volume.index_to_lps((i.mean(), j.mean(), k.mean()))


def assert_blob_on_left(volume: Volume, threshold: float = 500) -> None:
    centroid = blob_centroid_lps(volume, threshold)
    # Left of the head centre by about the built offset, not mirrored to the right (x would be -20).
    assert centroid[0] - HEAD_CENTRE[0] > 15.0, f"blob centroid {centroid} is not on the patient's left"
    np.testing.assert_allclose(centroid, HEAD_CENTRE + BLOB_OFFSET, atol=2.0)


@pytest.mark.parametrize("direction_name", list(DIRECTIONS))
def test_phantom_blob_is_on_the_left_as_built(direction_name: str):
    assert_blob_on_left(head_phantom(DIRECTIONS[direction_name]))


def test_ras_flipped_storage_puts_left_at_low_i():
    """In RAS-flipped index order, the left blob is at SMALL i: only the geometry says it is left."""
    volume = head_phantom(DIRECTIONS["ras_flipped"])
    k, j, i = np.nonzero(volume.array > 500)
    assert i.mean() < volume.shape[2] / 2
    assert_blob_on_left(volume)


@pytest.mark.parametrize("direction_name", list(DIRECTIONS))
def test_left_survives_nifti(tmp_path: Path, direction_name: str):
    volume = head_phantom(DIRECTIONS[direction_name])
    back = read_volume(write_volume(volume, tmp_path / "head.nii.gz"))
    assert_blob_on_left(back)


@pytest.mark.parametrize("direction_name", list(DIRECTIONS))
def test_left_survives_model_grid_and_back(direction_name: str):
    volume = head_phantom(DIRECTIONS[direction_name])
    corner = HEAD_CENTRE - np.array([36.0, 36.0, 30.0])
    model_grid = make_grid((1.5, 1.5, 3.0), np.eye(3), corner, (49, 49, 21))
    on_model = resample_to_grid(volume, model_grid, "linear", default_value=-1000)
    assert on_model.direction.tolist() == np.eye(3).tolist()
    assert_blob_on_left(on_model)
    # Axis-aligned LPS model grid: left = larger i, without looking at the geometry.
    k, j, i = np.nonzero(on_model.array > 500)
    assert i.mean() > on_model.shape[2] / 2
    back = resample_to_grid(on_model, volume, "linear", default_value=-1000)
    assert back.same_geometry(volume)
    assert_blob_on_left(back)
    labels = volume.with_array((volume.array > 500).astype(np.uint8))
    labels_back = resample_labels_to_grid(resample_labels_to_grid(labels, model_grid), volume)
    assert_blob_on_left(labels_back, threshold=0.5)


@pytest.mark.parametrize("direction_name", list(DIRECTIONS))
def test_left_survives_reorient_to_lps(direction_name: str):
    volume = head_phantom(DIRECTIONS[direction_name])
    lps = reorient_to(volume, "LPS")
    assert_blob_on_left(lps)
    if direction_name != "oblique":
        np.testing.assert_array_equal(lps.direction, np.eye(3))
        k, j, i = np.nonzero(lps.array > 500)
        assert i.mean() > lps.shape[2] / 2


def test_boolean_mask_converts_to_sitk():
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 2, 3] = True
    image = Volume(mask).to_sitk()
    assert image.GetPixel(3, 2, 1) == 1 and image.GetPixelIDTypeAsString() == "8-bit unsigned integer"


def test_bounding_box_with_margin_clipped_to_the_array():
    from headseg.geometry import bounding_box

    mask = np.zeros((10, 20, 30), bool)
    mask[2, 5:7, 28] = True
    mask[4, 6, 29] = True
    assert bounding_box(mask) == (slice(2, 5), slice(5, 7), slice(28, 30))
    assert bounding_box(mask, margin=3) == (slice(0, 8), slice(2, 10), slice(25, 30))
