"""Segmentation metrics of seeds 000 and 004: overlap, surface distance (mm) and volume agreement.

Conventions:

* Masks are boolean arrays ``[k, j, i]``; label maps are integer arrays of the same shape.
* ``spacing_kji`` is the voxel size **in array axis order** (slice thickness first), in mm -- the
  reverse of ``Volume.spacing`` (i, j, k). Use ``tuple(reversed(volume.spacing))``.
* Empty-mask policy (as nnU-Net): a ratio whose denominator is zero is ``nan``, never 0 or 1. Dice and
  IoU are ``nan`` when both masks are empty; sensitivity when the reference is empty; precision when
  the prediction is empty; specificity when the reference covers the whole array. Surface distances
  are ``nan`` when either mask is empty (a distance to nothing is undefined). Averages use ``nanmean``.
"""

from __future__ import annotations

from typing import Collection, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from headseg.errors import InputError

__all__ = [
    "dice",
    "iou",
    "sensitivity",
    "specificity",
    "precision",
    "hausdorff95",
    "average_symmetric_surface_distance",
    "surface_distances",
    "mean_iou",
    "volume_cm3",
    "volume_agreement",
    "evaluate_labels",
]

Spacing = Sequence[float]
_FACE_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


def _pair(pred: np.ndarray, ref: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred).astype(bool, copy=False)
    ref = np.asarray(ref).astype(bool, copy=False)
    if pred.shape != ref.shape:
        raise InputError(
            f"Prediction and reference must have the same shape; got {pred.shape} and {ref.shape}."
        )
    return pred, ref


def _counts(pred: np.ndarray, ref: np.ndarray) -> Tuple[int, int, int, int]:
    """(TP, FP, FN, TN) with three counting passes."""
    pred, ref = _pair(pred, ref)
    true_positive = int(np.count_nonzero(pred & ref))
    predicted = int(np.count_nonzero(pred))
    reference = int(np.count_nonzero(ref))
    false_positive = predicted - true_positive
    false_negative = reference - true_positive
    true_negative = pred.size - predicted - reference + true_positive
    return true_positive, false_positive, false_negative, true_negative


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator else float("nan")


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice similarity coefficient 2TP / (2TP + FP + FN) (the AnatomyNet paper's DSC); nan if both masks are empty."""
    tp, fp, fn, _ = _counts(pred, ref)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """Intersection over union TP / (TP + FP + FN) (SV-net paper, Eq. 3); nan if both masks are empty."""
    tp, fp, fn, _ = _counts(pred, ref)
    return _ratio(tp, tp + fp + fn)


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Sensitivity (recall) TP / (TP + FN): the fraction of the reference that was found.

    The SV-net paper defines R_k as the prediction and R'_k as the ground truth, then prints Eq. 5 as
    SN = |R_k ∩ R'_k| / |R_k|, which is precision; its Eq. 4 (SP) has the recall formula. We use the
    standard definitions (see :func:`specificity`).
    """
    tp, _, fn, _ = _counts(pred, ref)
    return _ratio(tp, tp + fn)


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """Specificity TN / (TN + FP): the fraction of reference background left unlabelled.

    The SV-net paper's Eq. 4 prints SP = |R_k ∩ R'_k| / |R'_k| (R prediction, R' ground truth), an overlap ratio
    (recall) rather than a specificity. Its reported SP values (about 0.9996 for every muscle, with IoUs of
    0.76-0.85 and SN about 0.91) are only possible for true specificity, dominated by the many background
    voxels of the crop -- so that is what we compute.
    Like any specificity on images, the value depends on how much background the array contains.
    """
    _, fp, _, tn = _counts(pred, ref)
    return _ratio(tn, tn + fp)


def precision(pred: np.ndarray, ref: np.ndarray) -> float:
    """Precision (positive predictive value) TP / (TP + FP); nan if the prediction is empty."""
    tp, fp, _, _ = _counts(pred, ref)
    return _ratio(tp, tp + fp)


def _check_spacing(spacing_kji: Spacing) -> Tuple[float, float, float]:
    values = tuple(float(s) for s in spacing_kji)
    if len(values) != 3 or min(values) <= 0:
        raise InputError(f"spacing_kji must be three positive mm values (k, j, i); got {spacing_kji!r}.")
    return values


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with at least one face neighbour outside the mask (outside the array counts as outside)."""
    return mask & ~ndimage.binary_erosion(mask, structure=_FACE_NEIGHBOURS, border_value=0)


def surface_distances(
    pred: np.ndarray, ref: np.ndarray, spacing_kji: Spacing
) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """Distances (mm) from each surface voxel of ``pred`` to the nearest surface voxel of ``ref``, and back.

    Surface voxels are mask voxels with a face neighbour outside the mask; distances are between voxel
    centres (Euclidean distance transform with ``sampling=spacing_kji``). Computed inside the union
    bounding box plus a 1-voxel margin, which contains every surface voxel, so the numbers equal a
    whole-array computation at a fraction of the cost. Returns None if either mask is empty.
    """
    pred, ref = _pair(pred, ref)
    spacing = _check_spacing(spacing_kji)
    if not pred.any() or not ref.any():
        return None
    box = ndimage.find_objects((pred | ref).view(np.uint8))[0]
    box = tuple(slice(max(0, s.start - 1), min(n, s.stop + 1)) for s, n in zip(box, pred.shape))
    pred_surface = _surface(pred[box])
    ref_surface = _surface(ref[box])
    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
    return to_ref[pred_surface], to_pred[ref_surface]


def _hd_from(distances: Optional[Tuple[np.ndarray, np.ndarray]], percentile: float) -> float:
    if distances is None:
        return float("nan")
    forward, backward = distances
    return float(max(np.percentile(forward, percentile), np.percentile(backward, percentile)))


def _assd_from(distances: Optional[Tuple[np.ndarray, np.ndarray]]) -> float:
    if distances is None:
        return float("nan")
    forward, backward = distances
    return float((forward.sum() + backward.sum()) / (forward.size + backward.size))


def hausdorff95(pred: np.ndarray, ref: np.ndarray, spacing_kji: Spacing, percentile: float = 95.0) -> float:
    """Robust Hausdorff distance (mm): the larger of the two directed 95th percentiles of surface distances.

    Same definition as MONAI's ``compute_hausdorff_distance(percentile=95)`` (voxel-count based, not
    surface-area weighted): the two agree to a relative 1e-5 (MONAI returns float32), also for
    ``percentile=100``, the classic Hausdorff distance. nan if either mask is empty.
    """
    return _hd_from(surface_distances(pred, ref, spacing_kji), percentile)


def average_symmetric_surface_distance(pred: np.ndarray, ref: np.ndarray, spacing_kji: Spacing) -> float:
    """ASSD (mm): mean of all surface distances in both directions; nan if either mask is empty."""
    return _assd_from(surface_distances(pred, ref, spacing_kji))


def _label_values(labels: Union[Mapping[str, int], Iterable[int]]) -> List[int]:
    if isinstance(labels, Mapping):
        return [int(v) for v in labels.values()]
    return [int(v) for v in labels]


def mean_iou(pred: np.ndarray, ref: np.ndarray, labels: Union[Mapping[str, int], Iterable[int]]) -> float:
    """Mean of the per-label IoUs (SV-net paper, Eq. 6) over ``labels`` (values, or a name -> value dict).

    Labels absent from both maps (IoU nan) are left out of the mean.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    scores = [iou(pred == value, ref == value) for value in _label_values(labels)]
    if not scores or np.all(np.isnan(scores)):
        return float("nan")
    return float(np.nanmean(scores))


def volume_cm3(mask: np.ndarray, spacing: Spacing) -> float:
    """Volume of a mask in cm3: voxel count x voxel volume (mm3) / 1000. ``spacing`` in any axis order."""
    spacing_values = _check_spacing(spacing)
    return float(np.count_nonzero(mask)) * float(np.prod(spacing_values)) / 1000.0


def volume_agreement(pred_volumes: Sequence[float], ref_volumes: Sequence[float]) -> Dict[str, float]:
    """Agreement of predicted and reference volumes over cases (SV-net paper, Table 2).

    Returns ``mae``, ``rmse`` (units of the inputs), ``pearson_r`` (nan for fewer than 2 cases or a
    constant series), ``relative_error`` = mean(|p - r| / r), and the signed ``relative_error_min`` /
    ``relative_error_max`` of (p - r) / r (the paper's RE range, here as fractions, not %), plus ``n``.
    Relative errors use only cases with r > 0.
    """
    pred = np.asarray(pred_volumes, dtype=np.float64).ravel()
    ref = np.asarray(ref_volumes, dtype=np.float64).ravel()
    if pred.shape != ref.shape or pred.size == 0:
        raise InputError(
            f"Need the same non-zero number of predicted and reference volumes; got {pred.size}, {ref.size}."
        )
    difference = pred - ref
    if pred.size >= 2 and pred.std() > 0 and ref.std() > 0:
        pearson = float(np.corrcoef(pred, ref)[0, 1])
    else:
        pearson = float("nan")
    positive = ref > 0
    signed_relative = difference[positive] / ref[positive]
    nan = float("nan")
    return {
        "n": float(pred.size),
        "mae": float(np.mean(np.abs(difference))),
        "rmse": float(np.sqrt(np.mean(difference**2))),
        "pearson_r": pearson,
        "relative_error": float(np.mean(np.abs(signed_relative))) if signed_relative.size else nan,
        "relative_error_min": float(signed_relative.min()) if signed_relative.size else nan,
        "relative_error_max": float(signed_relative.max()) if signed_relative.size else nan,
    }


def evaluate_labels(
    pred: np.ndarray,
    ref: np.ndarray,
    labels: Mapping[str, int],
    spacing_kji: Spacing,
    skip: Collection[Union[str, int]] = frozenset(),
) -> List[Dict[str, object]]:
    """One row of metrics per structure of ``labels`` (name -> value), skipping names/values in ``skip``.

    Row keys: structure, label, dsc, iou, sensitivity, specificity, precision, hd95_mm, assd_mm,
    pred_volume_cm3, ref_volume_cm3. Surface distances are computed once per structure.
    """
    pred = np.asarray(pred)
    ref = np.asarray(ref)
    if pred.shape != ref.shape:
        raise InputError(
            f"Prediction and reference must have the same shape; got {pred.shape} and {ref.shape}."
        )
    spacing = _check_spacing(spacing_kji)
    rows: List[Dict[str, object]] = []
    for name, value in labels.items():
        if name in skip or value in skip:
            continue
        pred_mask = pred == value
        ref_mask = ref == value
        tp, fp, fn, tn = _counts(pred_mask, ref_mask)
        distances = surface_distances(pred_mask, ref_mask, spacing)
        rows.append(
            {
                "structure": name,
                "label": int(value),
                "dsc": _ratio(2 * tp, 2 * tp + fp + fn),
                "iou": _ratio(tp, tp + fp + fn),
                "sensitivity": _ratio(tp, tp + fn),
                "specificity": _ratio(tn, tn + fp),
                "precision": _ratio(tp, tp + fp),
                "hd95_mm": _hd_from(distances, 95.0),
                "assd_mm": _assd_from(distances),
                "pred_volume_cm3": volume_cm3(pred_mask, spacing),
                "ref_volume_cm3": volume_cm3(ref_mask, spacing),
            }
        )
    return rows
