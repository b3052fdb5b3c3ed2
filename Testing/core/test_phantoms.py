"""Tests of the SYNTHETIC head-CT phantom: HU per tissue, plausible label volumes, sides, grids, seeds."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from headseg.geometry import Volume
from headseg.synth.phantoms import (
    ORBIT_LABELS,
    TISSUE_HU,
    Tissue,
    make_head_phantom,
    rotation_matrix_deg,
    write_phantom_cases,
)

RIGHT_VALUES = range(1, 6)
LEFT_VALUES = range(6, 11)


@pytest.fixture(scope="module")
def default_phantom():
    start = time.perf_counter()
    phantom = make_head_phantom(seed=0)
    phantom.metadata["seconds"] = time.perf_counter() - start
    return phantom


def label_volumes_cm3(phantom) -> dict:
    counts = np.bincount(phantom.labels.array.ravel(), minlength=11)
    return {value: counts[value] * phantom.labels.voxel_volume_mm3 / 1000.0 for value in range(1, 11)}


def physical_centroid(volume: Volume, mask: np.ndarray) -> np.ndarray:
    kji = np.argwhere(mask).mean(axis=0)
    return volume.index_to_lps(kji[::-1])


def test_default_phantom_is_small_fast_and_typed(default_phantom):
    image, labels = default_phantom.image, default_phantom.labels
    assert image.array.dtype == np.int16 and labels.array.dtype == np.uint8
    assert image.same_geometry(labels) and image.same_geometry(default_phantom.tissues)
    assert image.spacing == (0.5, 0.5, 1.0)
    assert np.prod(image.shape) <= 320 * 320 * 100
    assert default_phantom.metadata["synthetic"] is True
    assert set(np.unique(labels.array)) == set(range(11))
    assert default_phantom.metadata["seconds"] < 5.0  # about 1 s on one free core


def test_hu_of_each_tissue_without_noise():
    phantom = make_head_phantom(seed=4, spacing=(1.0, 1.0, 2.0), noise_hu=0.0, blur_mm=0.0)
    tissues, image = phantom.tissues.array, phantom.image.array
    for code, nominal in enumerate(TISSUE_HU):
        mask = tissues == code
        if code == Tissue.MARKER:
            nominal = 3000.0
        assert mask.any(), Tissue.NAMES[code]
        values = image[mask]
        assert values.std() < 1.0, Tissue.NAMES[code]  # one value per tissue before blur and noise
        assert abs(values.mean() - nominal) <= 12.0, (Tissue.NAMES[code], values.mean(), nominal)


@pytest.mark.parametrize(
    ("tissue", "low", "high", "max_std"),
    [
        (Tissue.VITREOUS, -5, 30, 14),
        (Tissue.ORBITAL_FAT, -130, -60, 14),
        (Tissue.BRAIN, 20, 50, 14),
        (Tissue.BONE_CORTICAL, 1000, 1600, 60),  # thin layers: edges survive the erosion
        (Tissue.AIR, -1010, -980, 14),
    ],
)
def test_hu_ranges_with_blur_and_noise(default_phantom, tissue, low, high, max_std):
    """Away from edges (eroded masks) the mean HU of each tissue stays in its clinical range."""
    mask = ndimage.binary_erosion(default_phantom.tissues.array == tissue, iterations=2)
    values = default_phantom.image.array[mask].astype(float)
    assert mask.sum() > 100
    assert low <= values.mean() <= high
    assert 6.0 < values.std() < max_std  # the requested 10 HU noise, a little smoothed


def test_label_and_globe_volumes_are_plausible(default_phantom):
    """Published adult values: recti ~0.5-0.8 cm3 (up to ~2.5x in TED), optic nerve 0.36-0.57, globe 6-7.3."""
    volumes = label_volumes_cm3(default_phantom)
    for side, values in ORBIT_LABELS.items():
        for name in ("SR", "LR", "MR", "IR"):
            assert 0.3 <= volumes[values[name]] <= 1.5, (side, name, volumes[values[name]])
        assert 0.2 <= volumes[values["ON"]] <= 0.8
    tissues = default_phantom.tissues
    globe = np.isin(tissues.array, Tissue.GLOBE)
    labelled, count = ndimage.label(globe)
    assert count == 2
    for n in (1, 2):
        volume_cm3 = (labelled == n).sum() * tissues.voxel_volume_mm3 / 1000.0
        assert 6.0 <= volume_cm3 <= 7.5


def test_sides_follow_physical_x_and_marker_is_on_patient_left():
    """Patient left = +x in LPS, whatever the index order (RAS-like direction flips i and j)."""
    flipped = make_head_phantom(seed=1, spacing=(1.0, 1.0, 2.0), direction=np.diag([-1.0, -1.0, 1.0]))
    labels = flipped.labels
    for value in RIGHT_VALUES:
        assert physical_centroid(labels, labels.array == value)[0] < -10.0
    for value in LEFT_VALUES:
        assert physical_centroid(labels, labels.array == value)[0] > 10.0
    assert flipped.globe_centers_lps["left"][0] > 20 > -20 > flipped.globe_centers_lps["right"][0]
    marker = flipped.tissues.array == Tissue.MARKER
    assert marker.sum() > 5
    centre = physical_centroid(flipped.tissues, marker)
    assert centre[0] > 40.0
    assert np.linalg.norm(centre - flipped.marker_center_lps) < 1.5
    assert flipped.image.array[marker].mean() > 1500  # dense, stands out on any window
    # outside the skin: the bead is surrounded by air
    shell = ndimage.binary_dilation(marker, iterations=2) & ~ndimage.binary_dilation(marker)
    assert np.mean(flipped.tissues.array[shell] == Tissue.AIR) > 0.6


def test_left_differs_from_right(default_phantom):
    volumes = label_volumes_cm3(default_phantom)
    right_muscles = sum(volumes[v] for v in range(1, 5))
    left_muscles = sum(volumes[v] for v in range(6, 10))
    assert left_muscles > 1.2 * right_muscles  # left_scale=1.25: thicker left recti, like TED
    # Even with equal scale the two sides differ a little (independent small asymmetries).
    symmetric = make_head_phantom(seed=0, spacing=(1.0, 1.0, 2.0), left_scale=1.0)
    v = label_volumes_cm3(symmetric)
    ratios = [v[value + 5] / v[value] for value in range(1, 6)]
    assert all(0.7 < r < 1.4 for r in ratios)
    assert max(abs(r - 1.0) for r in ratios) > 0.01
    g = symmetric.globe_centers_lps
    assert not np.allclose(g["left"] * [-1, 1, 1], g["right"], atol=0.05)


def test_same_anatomy_at_two_spacings():
    extent = (150.0, 150.0, 60.0)
    fine = make_head_phantom(seed=2, spacing=(0.5, 0.5, 1.0), extent_mm=extent, noise_hu=0.0)
    coarse = make_head_phantom(seed=2, spacing=(0.8, 0.8, 1.5), extent_mm=extent, noise_hu=0.0)
    v_fine, v_coarse = label_volumes_cm3(fine), label_volumes_cm3(coarse)
    for value in range(1, 11):
        assert v_coarse[value] == pytest.approx(v_fine[value], rel=0.06), value
    vitreous, count = ndimage.label(coarse.tissues.array == Tissue.VITREOUS)
    assert count == 2
    for n in (1, 2):
        centre = physical_centroid(coarse.tissues, vitreous == n)
        side = "left" if centre[0] > 0 else "right"
        np.testing.assert_allclose(fine.globe_centers_lps[side], coarse.globe_centers_lps[side])
        assert np.linalg.norm(centre - coarse.globe_centers_lps[side]) < 1.0


def test_oblique_grid_samples_the_same_anatomy():
    extent = (150.0, 150.0, 70.0)
    straight = make_head_phantom(seed=3, spacing=(0.8, 0.8, 1.0), extent_mm=extent, noise_hu=0.0)
    direction = rotation_matrix_deg((10.0, -5.0, 20.0))
    oblique = make_head_phantom(seed=3, spacing=(0.8, 0.8, 1.0), extent_mm=extent, direction=direction)
    np.testing.assert_allclose(oblique.image.direction, direction)
    v_straight, v_oblique = label_volumes_cm3(straight), label_volumes_cm3(oblique)
    for value in range(1, 11):
        assert v_oblique[value] == pytest.approx(v_straight[value], rel=0.07), value
    for value in (2, 7):  # lateral recti: same physical place on both grids
        a = physical_centroid(straight.labels, straight.labels.array == value)
        b = physical_centroid(oblique.labels, oblique.labels.array == value)
        assert np.linalg.norm(a - b) < 0.7


def test_head_rotation_moves_the_anatomy():
    rotated = make_head_phantom(seed=0, spacing=(1.0, 1.0, 2.0), head_rotation_deg=(0.0, 0.0, 10.0))
    upright = make_head_phantom(seed=0, spacing=(1.0, 1.0, 2.0))
    rotation = rotation_matrix_deg((0.0, 0.0, 10.0))
    for side in ("right", "left"):
        np.testing.assert_allclose(rotated.globe_centers_lps[side], rotation @ upright.globe_centers_lps[side])
        value = ORBIT_LABELS[side]["ON"]
        a = physical_centroid(rotated.labels, rotated.labels.array == value)
        b = rotation @ physical_centroid(upright.labels, upright.labels.array == value)
        assert np.linalg.norm(a - b) < 1.5


def test_seeds_are_reproducible_and_vary():
    a = make_head_phantom(seed=7, spacing=(1.0, 1.0, 2.0))
    b = make_head_phantom(seed=7, spacing=(1.0, 1.0, 2.0))
    c = make_head_phantom(seed=8, spacing=(1.0, 1.0, 2.0))
    np.testing.assert_array_equal(a.image.array, b.image.array)
    np.testing.assert_array_equal(a.labels.array, b.labels.array)
    assert not np.array_equal(a.labels.array, c.labels.array)
    assert np.linalg.norm(a.globe_centers_lps["right"] - c.globe_centers_lps["right"]) > 0.1
    mean_a = make_head_phantom(seed=7, spacing=(1.0, 1.0, 2.0), variation=0.0, noise_hu=0.0)
    mean_c = make_head_phantom(seed=8, spacing=(1.0, 1.0, 2.0), variation=0.0, noise_hu=0.0)
    np.testing.assert_array_equal(mean_a.labels.array, mean_c.labels.array)


def test_bad_grid_arguments_raise():
    with pytest.raises(ValueError, match="orthonormal"):
        make_head_phantom(direction=np.diag([1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="positive"):
        make_head_phantom(spacing=(1.0, 1.0, 1.0), shape=(0, 10, 10))


def test_write_phantom_cases(tmp_path):
    folders = write_phantom_cases(str(tmp_path), 2, seed=5, spacing=(1.5, 1.5, 3.0))
    assert len(folders) == 2
    reference = make_head_phantom(seed=6, spacing=(1.5, 1.5, 3.0))
    image = sitk.ReadImage(str(tmp_path / "phantom_001" / "image.nrrd"))
    labels = sitk.ReadImage(str(tmp_path / "phantom_001" / "labels.nrrd"))
    assert image.GetPixelID() == sitk.sitkInt16 and labels.GetPixelID() == sitk.sitkUInt8
    np.testing.assert_array_equal(sitk.GetArrayFromImage(labels), reference.labels.array)
    np.testing.assert_allclose(image.GetOrigin(), reference.image.origin, atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), reference.image.spacing)
