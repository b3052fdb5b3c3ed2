"""Metrics against hand-computed values: overlap counts, surface distances in mm, volume agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from headseg.errors import InputError
from headseg.measure.metrics import (
    average_symmetric_surface_distance,
    dice,
    evaluate_labels,
    hausdorff95,
    iou,
    mean_iou,
    precision,
    sensitivity,
    specificity,
    surface_distances,
    volume_agreement,
    volume_cm3,
)


def two_shifted_cubes():
    """Two 4^3 cubes in a 10^3 array, shifted by 2 voxels along i: 32 voxels in common."""
    ref = np.zeros((10, 10, 10), bool)
    pred = np.zeros((10, 10, 10), bool)
    ref[0:4, 0:4, 0:4] = True
    pred[0:4, 0:4, 2:6] = True
    return pred, ref


def test_overlap_metrics_of_two_shifted_cubes():
    pred, ref = two_shifted_cubes()
    assert dice(pred, ref) == pytest.approx(2 * 32 / (64 + 64))
    assert iou(pred, ref) == pytest.approx(32 / 96)
    assert sensitivity(pred, ref) == pytest.approx(32 / 64)
    assert precision(pred, ref) == pytest.approx(32 / 64)
    # 1000 voxels, 936 reference background, 32 of them predicted: TN = 904.
    assert specificity(pred, ref) == pytest.approx(904 / 936)


def test_perfect_and_disjoint_masks():
    pred, ref = two_shifted_cubes()
    assert dice(ref, ref) == 1.0 and iou(ref, ref) == 1.0 and specificity(ref, ref) == 1.0
    far = np.zeros_like(ref)
    far[8:10, 8:10, 8:10] = True
    assert dice(far, ref) == 0.0 and sensitivity(far, ref) == 0.0


def test_empty_mask_policy_is_nan():
    empty = np.zeros((4, 4, 4), bool)
    full = np.ones((4, 4, 4), bool)
    assert math.isnan(dice(empty, empty)) and math.isnan(iou(empty, empty))
    assert math.isnan(sensitivity(full, empty))  # no reference voxels
    assert math.isnan(precision(empty, full))  # nothing predicted
    assert math.isnan(specificity(full, full))  # no reference background
    assert math.isnan(hausdorff95(empty, full, (1, 1, 1)))
    assert math.isnan(average_symmetric_surface_distance(full, empty, (1, 1, 1)))
    assert dice(empty, full) == 0.0


def test_shape_mismatch_is_refused():
    with pytest.raises(InputError):
        dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    with pytest.raises(InputError):
        hausdorff95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1.0, 0.0, 1.0))


@pytest.mark.parametrize(
    "axis, offset, expected_mm",
    [(0, 3, 3 * 2.5), (0, 1, 2.5), (2, 4, 4 * 0.9), (1, 2, 2 * 0.7)],
)
def test_parallel_planes_with_anisotropic_spacing(axis, offset, expected_mm):
    """Two 1-voxel-thick planes ``offset`` voxels apart: every surface distance is offset x spacing."""
    spacing_kji = (2.5, 0.7, 0.9)
    ref = np.zeros((12, 11, 13), bool)
    pred = np.zeros_like(ref)
    index_ref = [slice(2, 9)] * 3
    index_ref[axis] = 2
    index_pred = list(index_ref)
    index_pred[axis] = 2 + offset
    ref[tuple(index_ref)] = True
    pred[tuple(index_pred)] = True
    assert hausdorff95(pred, ref, spacing_kji) == pytest.approx(expected_mm)
    assert average_symmetric_surface_distance(pred, ref, spacing_kji) == pytest.approx(expected_mm)


def test_hd95_ignores_a_single_outlier_but_assd_and_hd100_do_not():
    ref = np.zeros((10, 12, 12), bool)
    ref[2, 0:10, 0:10] = True  # 100 voxels, all surface
    pred = ref.copy()
    pred[8, 11, 11] = True  # one outlier, nearest reference voxel (2, 9, 9)
    outlier_mm = math.sqrt(6**2 + 2**2 + 2**2)
    assert hausdorff95(pred, ref, (1, 1, 1)) == 0.0
    assert hausdorff95(pred, ref, (1, 1, 1), percentile=100) == pytest.approx(outlier_mm)
    assert average_symmetric_surface_distance(pred, ref, (1, 1, 1)) == pytest.approx(outlier_mm / 201)


def brute_force_surface_distances(pred, ref, spacing):
    """Whole-array surfaces and all-pairs distances: slow, obviously right."""
    structure = ndimage.generate_binary_structure(3, 1)
    surfaces = [m & ~ndimage.binary_erosion(m, structure, border_value=0) for m in (pred, ref)]
    points = [np.argwhere(s) * np.asarray(spacing) for s in surfaces]
    distances = cdist(points[0], points[1])
    return distances.min(axis=1), distances.min(axis=0)


@pytest.mark.parametrize("seed", range(4))
def test_bounding_box_edt_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    pred = ndimage.binary_opening(rng.random((14, 16, 18)) < 0.5)
    ref = ndimage.binary_opening(rng.random((14, 16, 18)) < 0.5)
    pred[:3] = False  # keep the union box smaller than the array on one side
    spacing = (2.0, 0.6, 0.8)
    forward, backward = surface_distances(pred, ref, spacing)
    expected_forward, expected_backward = brute_force_surface_distances(pred, ref, spacing)
    np.testing.assert_allclose(np.sort(forward), np.sort(expected_forward), atol=1e-9)
    np.testing.assert_allclose(np.sort(backward), np.sort(expected_backward), atol=1e-9)


def test_mean_iou_over_labels():
    ref = np.zeros((4, 4, 4), np.uint8)
    pred = np.zeros_like(ref)
    ref[0, 0, 0:4] = 1  # IoU(1) = 2 / 4
    pred[0, 0, 0:2] = 1
    pred[0, 0, 2:4] = 2
    ref[3, 3, 0:2] = 2  # IoU(2) = 0 / 4
    ref[2, 2, 2] = pred[2, 2, 2] = 3  # IoU(3) = 1
    assert mean_iou(pred, ref, [1, 2, 3]) == pytest.approx((0.5 + 0.0 + 1.0) / 3)
    assert mean_iou(pred, ref, {"a": 1, "b": 3, "absent": 9}) == pytest.approx(0.75)  # nan skipped


def test_volume_in_cm3():
    mask = np.zeros((10, 10, 20), bool)
    mask[:, :, :10] = True  # 1000 voxels of 0.5 x 0.5 x 2 mm = 500 mm3
    assert volume_cm3(mask, (2.0, 0.5, 0.5)) == pytest.approx(0.5)


def test_volume_agreement_hand_computed():
    result = volume_agreement([1.0, 2.0, 3.5], [1.0, 2.5, 3.0])
    assert result["n"] == 3
    assert result["mae"] == pytest.approx(1 / 3)
    assert result["rmse"] == pytest.approx(math.sqrt(1 / 6))
    # Deviations from the means (both 13/6), in sixths: p (-7, -1, 8), r (-7, 2, 5).
    assert result["pearson_r"] == pytest.approx(87 / math.sqrt(114 * 78))
    assert result["relative_error"] == pytest.approx((0 + 0.2 + 1 / 6) / 3)
    assert result["relative_error_min"] == pytest.approx(-0.2)
    assert result["relative_error_max"] == pytest.approx(1 / 6)
    assert math.isnan(volume_agreement([1.0], [2.0])["pearson_r"])
    with pytest.raises(InputError):
        volume_agreement([1.0, 2.0], [1.0])


def test_evaluate_labels_rows():
    pred_mask, ref_mask = two_shifted_cubes()
    pred = pred_mask.astype(np.uint8)
    ref = ref_mask.astype(np.uint8)
    pred[9, 9, 9] = 2
    ref[9, 9, 9] = 2
    spacing = (2.0, 1.0, 1.0)
    rows = evaluate_labels(pred, ref, {"cube": 1, "dot": 2, "missing": 3}, spacing, skip={"missing"})
    assert [row["structure"] for row in rows] == ["cube", "dot"]
    cube, dot = rows
    assert cube["label"] == 1 and cube["dsc"] == pytest.approx(0.5) and cube["iou"] == pytest.approx(1 / 3)
    assert cube["hd95_mm"] == pytest.approx(hausdorff95(pred == 1, ref == 1, spacing))
    assert cube["assd_mm"] == pytest.approx(average_symmetric_surface_distance(pred == 1, ref == 1, spacing))
    assert cube["pred_volume_cm3"] == pytest.approx(64 * 2 / 1000)
    assert dot["dsc"] == 1.0 and dot["hd95_mm"] == 0.0 and dot["assd_mm"] == 0.0
    assert set(cube) >= {"sensitivity", "specificity", "precision", "ref_volume_cm3"}
    assert len(evaluate_labels(pred, ref, {"cube": 1, "dot": 2}, spacing, skip={2})) == 1
