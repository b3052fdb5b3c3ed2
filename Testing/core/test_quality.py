"""Review aids (headseg.measure.quality): the uncertainty map, each structure's doubt, and every flag code."""

from __future__ import annotations

import math

import numpy as np
import pytest

from headseg.geometry import Volume
from headseg.labels import get_label_set
from headseg.measure.quality import (
    FLAG_CODES,
    body_midline_x,
    normalized_entropy,
    removed_shares,
    structure_quality,
)

ORBIT = get_label_set("orbit")


def test_normalized_entropy_is_0_when_certain_and_1_when_uniform():
    probs = np.zeros((4, 2, 2, 2), np.float32)
    probs[1] = 1.0
    assert np.allclose(normalized_entropy(probs), 0.0, atol=1e-6)
    assert np.allclose(normalized_entropy(np.full((4, 2, 2, 2), 0.25, np.float32)), 1.0, atol=1e-6)
    two_way = np.zeros((6, 1, 1, 1), np.float32)
    two_way[:2] = 0.5
    assert normalized_entropy(two_way)[0, 0, 0] == pytest.approx(math.log(2) / math.log(6), rel=1e-5)


def test_removed_shares_counts_what_post_processing_took_away():
    before = np.zeros((1, 1, 10), np.uint8)
    before[0, 0, :8] = 3  # 8 voxels of label 3 ...
    after = before.copy()
    after[0, 0, 6:8] = 0  # ... two of them removed as a stray piece
    assert removed_shares(before, after, [3, 5]) == {3: pytest.approx(0.25)}


def _orbit_map(spacing=(0.5, 0.5, 1.0)):
    """Boxes of known size for every orbit structure: right structures at LPS x < 0, left at x > 0."""
    shape = (40, 120, 200)
    grid = Volume(np.zeros(shape, np.uint8), spacing, (-50.0, -30.0, -20.0))
    voxel_cm3 = grid.voxel_volume_mm3 / 1000.0
    labels = np.zeros(shape, np.uint8)
    for n, s in enumerate(ORBIT.structures):
        target_cm3 = 0.6 if "rectus" in s.key else 0.35
        voxels = int(round(target_cm3 / voxel_cm3))
        k0, j0 = 4 + 7 * (n % 5), 10
        i0 = 20 if s.side == "right" else 140
        rows = max(1, voxels // (6 * 20))
        labels[k0:k0 + 6, j0:j0 + rows, i0:i0 + 20] = s.label
    return grid.with_array(labels)


def _flags(labelmap, **kwargs):
    return {k: q.flags for k, q in structure_quality(labelmap, ORBIT, **kwargs).items()}


def test_a_plausible_orbit_has_no_flags():
    labelmap = _orbit_map()
    assert all(not f for f in _flags(labelmap, midline_x=0.0).values())


def test_every_flag_code_is_raised_where_it_should_be():
    labelmap = _orbit_map()
    array = labelmap.array.copy()
    sr_r, lr_r, mr_r, ir_r, on_r = (ORBIT.by_key(k + "_right").label for k in
                                    ("superior_rectus", "lateral_rectus", "medial_rectus", "inferior_rectus",
                                     "optic_nerve"))
    array[array == on_r] = 0  # empty
    keep = np.argwhere(array == mr_r)
    array[array == mr_r] = 0
    array[tuple(keep[:50].T)] = mr_r  # 50 voxels = 0.0125 cm3: low, and left/right asymmetric
    ir = np.argwhere(array == ir_r)
    array[tuple((ir + [0, 60, 0]).T)] = ir_r  # doubled: right IR 1.2 cm3 ... and 4 rows more for 'high'
    array[tuple((ir + [0, 30, 0]).T)] = ir_r
    array[tuple((ir + [0, 90, 0]).T)] = ir_r
    lr = np.argwhere(array == lr_r)
    array[array == lr_r] = 0
    array[tuple((lr + [0, 0, 100]).T)] = lr_r  # the right lateral rectus moved across to the left
    flags = _flags(labelmap.with_array(array), midline_x=0.0, removed={"superior_rectus_right": 0.3})
    assert flags["optic_nerve_right"] == ["empty"]
    assert "volume_low" in flags["medial_rectus_right"] and "asymmetric" in flags["medial_rectus_left"]
    assert "volume_high" in flags["inferior_rectus_right"]  # 2.4 cm3 > 1.2 (headseg.measure.bands)
    assert "wrong_side" in flags["lateral_rectus_right"] and not flags["lateral_rectus_left"]
    assert flags["superior_rectus_right"] == ["fragmented"]
    raised = {f for fs in flags.values() for f in fs}
    assert raised == set(FLAG_CODES)


def test_doubt_is_the_mean_uncertainty_across_the_surface():
    labelmap = _orbit_map()
    quiet = np.zeros(labelmap.shape, np.float32)
    noisy = quiet.copy()
    sr_left = ORBIT.by_key("superior_rectus_left").label
    from scipy import ndimage

    mask = labelmap.array == sr_left
    noisy[ndimage.binary_dilation(mask, iterations=2)] = 0.8  # doubt all around the left SR
    low = structure_quality(labelmap, ORBIT, uncertainty=quiet)
    high = structure_quality(labelmap, ORBIT, uncertainty=noisy)
    assert low["superior_rectus_left"].doubt == 0.0
    assert high["superior_rectus_left"].doubt == pytest.approx(0.8)
    assert high["superior_rectus_right"].doubt == 0.0
    assert math.isnan(structure_quality(labelmap, ORBIT)["superior_rectus_left"].doubt)


def test_body_midline_follows_the_body_not_the_grid():
    array = np.full((10, 50, 80), -1000, np.int16)
    array[:, 10:40, 40:70] = 40  # a body whose centre is at i = 54.5
    ct = Volume(array, (1.0, 1.0, 2.0), (-40.0, 0.0, 0.0))
    assert body_midline_x(ct) == pytest.approx(-40.0 + 54.5)


def test_the_uncertainty_map_is_stored_on_255_steps_and_weighs_far_less(tmp_path):
    """Entropy at full precision is noise to gzip; rounded to 1/255 it is the precision of an 8-bit map,
    still float in [0, 1] for every reader, and a fraction of the size."""
    from headseg.geometry import Volume
    from headseg.io import read_volume, write_volume
    from headseg.measure.quality import UNCERTAINTY_LEVELS, normalized_entropy, stored_uncertainty

    rng = np.random.default_rng(0)
    k, j, i = np.mgrid[0:40, 0:64, 0:64].astype(np.float32)
    radius = np.sqrt((k - 20) ** 2 + (j - 32) ** 2 + (i - 32) ** 2)
    # As a model gives them: confident far from a structure's edge, doubtful across it, with a little noise.
    inside = 6.0 * (12.0 - radius) / 3.0 + rng.normal(scale=0.3, size=radius.shape)
    logits = np.stack([-inside, inside, np.full_like(inside, -4.0)]).astype(np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=0)
    full = normalized_entropy(probabilities)
    stored = stored_uncertainty(full)
    assert stored.dtype == np.float32 and 0.0 <= stored.min() and stored.max() <= 1.0
    assert np.abs(stored - full).max() <= 0.5 / UNCERTAINTY_LEVELS + 1e-6
    np.testing.assert_allclose(stored * UNCERTAINTY_LEVELS, np.round(stored * UNCERTAINTY_LEVELS), atol=1e-4)
    write_volume(Volume(full), tmp_path / "full.nrrd")
    write_volume(Volume(stored), tmp_path / "stored.nrrd")
    assert (tmp_path / "stored.nrrd").stat().st_size < (tmp_path / "full.nrrd").stat().st_size / 3
    np.testing.assert_array_equal(read_volume(tmp_path / "stored.nrrd").array, stored)
