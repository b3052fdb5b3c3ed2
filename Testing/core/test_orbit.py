"""Tests of automatic orbit localisation, user-ROI override and the (mirrored) per-orbit crop grids."""

from __future__ import annotations

import time

import numpy as np
import pytest
import SimpleITK as sitk

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.locate import (
    NOT_FOUND_ADVICE,
    OrbitNotFoundError,
    RegionBox,
    boxes_from_roi,
    locate_orbits,
    orbit_box,
    orbit_crop_grid,
)
from headseg.synth.phantoms import ORBIT_LABELS, Tissue, make_head_phantom, rotation_matrix_deg

CONFIGS = {
    "seed0": dict(seed=0),
    "seed1": dict(seed=1),
    "seed2-variation1.5": dict(seed=2, variation=1.5),
    "1mm-2mm-slices": dict(seed=3, spacing=(1.0, 1.0, 2.0)),
    "ras-index-order": dict(seed=4, direction=np.diag([-1.0, -1.0, 1.0])),
    "oblique-15deg": dict(seed=5, spacing=(0.7, 0.7, 1.0), direction=rotation_matrix_deg((0.0, 0.0, 15.0))),
    "oblique-3-axes": dict(seed=6, spacing=(0.8, 0.8, 1.5), direction=rotation_matrix_deg((10.0, 5.0, -15.0))),
    "tilted-head-noisy": dict(seed=7, head_rotation_deg=(8.0, 4.0, 10.0), noise_hu=25.0),
}


@pytest.fixture(scope="module")
def phantom():
    return make_head_phantom(seed=0)


@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=list(CONFIGS))
def test_finds_both_globes_within_3_mm(config):
    ph = make_head_phantom(**config)
    locations = locate_orbits(ph.image)
    assert [loc.side for loc in locations] == ["right", "left"]
    for loc in locations:
        error = np.linalg.norm(loc.globe_center_lps - ph.globe_centers_lps[loc.side])
        assert error < 3.0, (loc.side, error)
        assert loc.box.contains(loc.globe_center_lps)
    # the side is physical: patient right has the smaller LPS x, whatever the array order
    assert locations[0].globe_center_lps[0] < locations[1].globe_center_lps[0]


def test_localisation_is_fast(phantom):
    locate_orbits(phantom.image)  # warm-up (imports)
    start = time.perf_counter()
    locate_orbits(phantom.image)
    assert time.perf_counter() - start < 2.0


def test_orbit_box_covers_globe_muscles_and_apex(phantom):
    for loc in locate_orbits(phantom.image):
        assert loc.box.contains(phantom.apex_lps[loc.side])
        assert loc.box.contains(phantom.globe_centers_lps[loc.side] + [0.0, -12.0, 0.0])  # front of the globe
        labels = phantom.labels
        for value in ORBIT_LABELS[loc.side].values():
            kji = np.argwhere(labels.array == value)
            lps = (labels.ijk_to_lps[:3, :3] @ kji[:, ::-1].T).T + labels.ijk_to_lps[:3, 3]
            inside = np.all((lps >= loc.box.min_lps) & (lps <= loc.box.max_lps), axis=1)
            assert inside.mean() > 0.97, (loc.side, value, inside.mean())


def test_orbit_box_is_mirror_symmetric():
    right = orbit_box((-31.0, -70.0, 0.0), "right")
    left = orbit_box((31.0, -70.0, 0.0), "left")
    np.testing.assert_allclose(right.center_lps * [-1, 1, 1], left.center_lps)
    np.testing.assert_allclose(right.size_mm, left.size_mm)
    assert right.center_lps[0] > -31.0  # shifted toward the midline, where the apex is
    with pytest.raises(InputError):
        orbit_box((0.0, 0.0, 0.0), "middle")


def test_ct_without_eyes_raises_the_clear_error(phantom):
    no_globes = phantom.image.array.copy()
    no_globes[np.isin(phantom.tissues.array, Tissue.GLOBE)] = -100  # globes replaced by fat
    with pytest.raises(OrbitNotFoundError) as info:
        locate_orbits(phantom.image.with_array(no_globes))
    assert str(info.value).startswith("Could not find both orbits in this CT: ")
    assert str(info.value).endswith(NOT_FOUND_ADVICE) and "--roi" in str(info.value)
    assert isinstance(info.value, ValueError) and isinstance(info.value, InputError)

    k, j, i = np.mgrid[0:40, 0:160, 0:160]
    water = np.where((i - 80) ** 2 + (j - 80) ** 2 < 70**2, 0.0, -1000.0)
    water += np.random.default_rng(0).normal(0.0, 10.0, water.shape)
    with pytest.raises(OrbitNotFoundError):
        locate_orbits(Volume(water.astype(np.int16), (1.0, 1.0, 2.0)))


def test_roi_with_both_orbits_is_split_at_the_midline(phantom):
    g = phantom.globe_centers_lps
    centre = (g["right"] + g["left"]) / 2 + [0.0, 15.0, 0.0]
    locations = boxes_from_roi(centre, (120.0, 70.0, 50.0), phantom.image)
    assert [loc.side for loc in locations] == ["right", "left"]
    right, left = locations
    assert right.box.max_lps[0] == pytest.approx(left.box.min_lps[0])
    assert right.box.min_lps[0] == pytest.approx(centre[0] - 60.0)
    for loc in locations:
        assert np.linalg.norm(loc.globe_center_lps - g[loc.side]) < 3.0
        assert loc.box.contains(g[loc.side])


@pytest.mark.parametrize("side", ["right", "left"])
def test_roi_around_one_orbit_gives_that_side(phantom, side):
    g = phantom.globe_centers_lps[side]
    locations = boxes_from_roi(g + [0.0, 15.0, 0.0], (50.0, 60.0, 44.0), phantom.image)
    assert len(locations) == 1 and locations[0].side == side
    assert np.linalg.norm(locations[0].globe_center_lps - g) < 3.0
    np.testing.assert_allclose(locations[0].box.size_mm, (50.0, 60.0, 44.0))


def test_roi_without_a_globe_uses_the_head_midline(phantom):
    """An ROI drawn behind the left globe (muscle cone only) is the left orbit by its position."""
    apex = phantom.apex_lps["left"]
    locations = boxes_from_roi(apex + [0.0, -5.0, 0.0], (30.0, 25.0, 30.0), phantom.image)
    assert len(locations) == 1
    assert locations[0].side == "left" and locations[0].globe_center_lps is None


def test_roi_must_have_a_size(phantom):
    with pytest.raises(InputError, match="positive size"):
        boxes_from_roi((0.0, -60.0, 0.0), (0.0, 50.0, 40.0), phantom.image)


def test_crop_grid_geometry():
    box = RegionBox((10.0, -50.0, 5.0), (50.0, 60.0, 44.0))
    grid = orbit_crop_grid(box, (0.5, 0.5, 1.0), (None, 128, 128), "right")
    assert grid.shape == (44, 128, 128) and grid.array.dtype == np.uint8
    centre = grid.index_to_lps((np.array(grid.size_ijk) - 1) / 2)
    np.testing.assert_allclose(centre, box.center_lps)
    np.testing.assert_allclose(grid.direction, np.eye(3))
    left = orbit_crop_grid(box, (0.5, 0.5, 1.0), (32, 128, 128), "left")
    np.testing.assert_allclose(left.direction, np.diag([-1.0, 1.0, 1.0]))
    assert left.shape == (32, 128, 128)
    np.testing.assert_allclose(left.index_to_lps((np.array(left.size_ijk) - 1) / 2), box.center_lps)
    unmirrored = orbit_crop_grid(box, (0.5, 0.5, 1.0), (32, 128, 128), "left", mirror_left=False)
    np.testing.assert_allclose(unmirrored.direction, np.eye(3))
    with pytest.raises(InputError):
        orbit_crop_grid(box, (0.5, 0.0, 1.0), (32, 128, 128), "left")


def resample_onto(image: Volume, grid: Volume, interpolator=sitk.sitkNearestNeighbor, default=0) -> Volume:
    return Volume.from_sitk(sitk.Resample(image.to_sitk(), grid.to_sitk(), sitk.Transform(), interpolator, default))


def test_mirrored_left_crop_looks_like_a_right_orbit(phantom):
    """Globe at the same crop position on both sides, lateral rectus on the same (low-i) crop side."""
    crops = {}
    for loc in locate_orbits(phantom.image):
        grid = orbit_crop_grid(loc.box, (0.5, 0.5, 1.0), (None, 128, 128), loc.side)
        crops[loc.side] = (grid, resample_onto(phantom.labels, grid))
    globe_index = {
        side: grid.lps_to_index(phantom.globe_centers_lps[side]) for side, (grid, _) in crops.items()
    }
    assert np.linalg.norm(globe_index["right"] - globe_index["left"]) < 6.0  # voxels (~3 mm)
    for side, (_, labels) in crops.items():
        values = ORBIT_LABELS[side]
        i_of = {name: np.argwhere(labels.array == values[name])[:, 2].mean() for name in ("LR", "MR", "SR", "IR")}
        k_of = {name: np.argwhere(labels.array == values[name])[:, 0].mean() for name in ("SR", "IR")}
        assert i_of["LR"] < i_of["SR"] < i_of["MR"], side  # lateral at low i on BOTH sides
        assert k_of["SR"] > k_of["IR"], side  # superior at high k (LPS z) on both sides
    # the CT itself is mirrored too: intensities at mirrored positions match (same anatomy up to noise)
    right_ct = resample_onto(phantom.image, crops["right"][0], sitk.sitkLinear, -1000).array.astype(float)
    left_ct = resample_onto(phantom.image, crops["left"][0], sitk.sitkLinear, -1000).array.astype(float)
    assert np.corrcoef(right_ct.ravel(), left_ct.ravel())[0, 1] > 0.6


def test_crop_labels_resample_back_to_the_input_grid(phantom):
    """The mirror lives in the geometry, so the way back needs no flip: labels land where they were."""
    for loc in locate_orbits(phantom.image):
        grid = orbit_crop_grid(loc.box, (0.5, 0.5, 1.0), (None, 128, 128), loc.side)
        crop = resample_onto(phantom.labels, grid)
        back = resample_onto(crop, phantom.labels)
        for value in ORBIT_LABELS[loc.side].values():
            a, b = phantom.labels.array == value, back.array == value
            dice = 2 * (a & b).sum() / (a.sum() + b.sum())
            assert dice > 0.98, (loc.side, value, dice)


def test_wide_field_of_view_like_a_512_matrix_ct():
    """A 200 mm field (a 512-matrix CT has 200-250 mm): the point between the globes falls on the nose,
    an island of its own in some slices; the globes must still be found."""
    from headseg.locate import locate_orbits
    from headseg.synth.phantoms import make_head_phantom

    phantom = make_head_phantom(seed=0, spacing=(0.5, 0.5, 1.0), shape=(150, 400, 400))
    found = {loc.side: loc.globe_center_lps for loc in locate_orbits(phantom.image)}
    for side in ("right", "left"):
        assert np.linalg.norm(found[side] - phantom.globe_centers_lps[side]) < 3.0
