"""Review aids: where the model doubts, and which structures look wrong.

* :func:`normalized_entropy` turns class probabilities into a per-voxel uncertainty in [0, 1] (entropy
  divided by log C: 0 = one class certain, 1 = all classes equally likely). The pipeline writes it on the
  input grid as ``<case>_uncertainty.nrrd``.
* :func:`structure_quality` gives each structure a ``doubt`` in [0, 1], the mean uncertainty over a thin
  shell across its surface (one voxel inside and one outside), because a segmentation is wrong at its
  boundary first, and ``flags`` (see :data:`FLAG_CODES`) from its volume, its side and its fragments.

The volume bands and the left/right ratio are those of ``headseg.measure.bands``, the one table that the
warnings and the orbit plausibility checks read too: a flag asks for a look, it never changes the result.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from headseg.geometry import Volume, bounding_box
from headseg.measure.bands import ASYMMETRY_RATIO, VOLUME_BANDS_CM3

__all__ = ["FLAG_CODES", "FRAGMENT_SHARE", "StructureQuality", "UNCERTAINTY_LEVELS", "stored_uncertainty",
           "normalized_entropy", "removed_shares", "structure_quality", "body_midline_x", "surface_shell"]

FLAG_CODES: Dict[str, str] = {
    "empty": "nothing was segmented",
    "volume_low": "volume below the normal adult range",
    "volume_high": "volume above the normal adult range: enlarged, or more than the structure outlined",
    "asymmetric": f"left/right volume ratio outside {ASYMMETRY_RATIO[0]:.2f}-{ASYMMETRY_RATIO[1]:.2f}",
    "wrong_side": "centroid on the other side of the patient's midline",
    "fragmented": "over 10 % of the raw prediction lay outside the kept largest piece",
}

#: Share of a structure's raw voxels removed by the largest-component step above which it is ``fragmented``.
FRAGMENT_SHARE = 0.10


@dataclass
class StructureQuality:
    key: str  # label-set key with side
    doubt: float  # [0, 1]; NaN when the structure is empty or there is no uncertainty map
    flags: List[str] = field(default_factory=list)

    @property
    def flag_text(self) -> str:
        return ";".join(self.flags)


#: Steps of the uncertainty map as written: 255, the precision of an 8-bit map (at most 0.002 off).
UNCERTAINTY_LEVELS = 255


def stored_uncertainty(uncertainty: np.ndarray) -> np.ndarray:
    """The map as ``<case>_uncertainty.nrrd`` stores it: float32 in [0, 1] rounded to steps of 1/255.

    Full-precision entropy is noise to gzip (69 MB for a 512 x 512 x 200 CT); rounded, the file is about
    1/30 of that and reads back as the same float map in [0, 1] in every viewer (docs/review_aids.md has
    the measurements, float16 and uint8 included). ``doubt`` is computed before rounding."""
    levels = np.float32(UNCERTAINTY_LEVELS)
    return (np.round(np.asarray(uncertainty, np.float32) * levels) / levels).astype(np.float32)


def normalized_entropy(probabilities: np.ndarray) -> np.ndarray:
    """``probabilities[C, ...]`` (summing to 1 over C) -> entropy / log C per voxel, float32 in [0, 1].

    Computed channel by channel, so the extra memory is two arrays of one channel's size."""
    probabilities = np.asarray(probabilities)
    channels = probabilities.shape[0]
    if channels < 2:
        return np.zeros(probabilities.shape[1:], np.float32)
    total = np.zeros(probabilities.shape[1:], np.float32)
    for c in range(channels):
        p = np.clip(probabilities[c].astype(np.float32, copy=False), 1e-12, 1.0)
        total -= p * np.log(p)
    total /= math.log(channels)
    return np.clip(total, 0.0, 1.0, out=total)


def removed_shares(before: np.ndarray, after: np.ndarray, values: Sequence[int]) -> Dict[int, float]:
    """Per label value: the share of its voxels in ``before`` that are not that value in ``after`` (what
    post-processing removed, i.e. the stray pieces)."""
    shares: Dict[int, float] = {}
    counts = np.bincount(before.ravel().astype(np.int64), minlength=max(values, default=0) + 1)
    kept = np.bincount(before[before == after].ravel().astype(np.int64), minlength=len(counts))
    for v in values:
        if v < len(counts) and counts[v]:
            shares[int(v)] = float(1.0 - kept[v] / counts[v])
    return shares


def surface_shell(mask: np.ndarray) -> np.ndarray:
    """One voxel inside and one outside the surface of ``mask`` (6-connectivity): where ``doubt`` is
    measured (the Slicer modules also look there for a structure's most uncertain region)."""
    from scipy import ndimage

    return ndimage.binary_dilation(mask) & ~ndimage.binary_erosion(mask)


def body_midline_x(ct: Volume, near: Optional[np.ndarray] = None, threshold_hu: float = -300.0) -> Optional[float]:
    """LPS x of the body's centroid (voxels above ``threshold_hu``), restricted to the slices where
    ``near`` has voxels when given: the patient's midline, with no label needed."""
    body = ct.array > threshold_hu
    if near is not None and near.any():
        ks = np.flatnonzero(near.reshape(near.shape[0], -1).any(axis=1))
        restricted = np.zeros_like(body)
        restricted[ks.min():ks.max() + 1] = body[ks.min():ks.max() + 1]
        body = restricted
    idx = np.argwhere(body)
    if idx.shape[0] == 0:
        return None
    return float(ct.index_to_lps(idx.mean(axis=0)[::-1])[0])


def _centroid_x(mask: np.ndarray, grid: Volume) -> float:
    return float(grid.index_to_lps(np.argwhere(mask).mean(axis=0)[::-1])[0])


def structure_quality(labelmap: Volume, label_set, uncertainty: Optional[np.ndarray] = None,
                      midline_x: Optional[float] = None, removed: Optional[Mapping[str, float]] = None,
                      structures: Optional[Sequence[str]] = None) -> Dict[str, StructureQuality]:
    """Doubt and flags of every structure of ``label_set`` (or only ``structures``), keyed by label-set key.

    ``uncertainty`` is the per-voxel map on ``labelmap``'s grid, ``midline_x`` the patient's midline in
    LPS x (None: no side check), ``removed`` the share of each key's raw voxels that post-processing
    removed (:func:`removed_shares`)."""
    array = labelmap.array
    voxel_cm3 = labelmap.voxel_volume_mm3 / 1000.0
    counts = np.bincount(array.ravel().astype(np.int64), minlength=label_set.max_label + 1)
    out: Dict[str, StructureQuality] = {}
    volumes: Dict[str, float] = {}
    for s in label_set.structures:
        if structures is not None and s.key not in structures:
            continue
        n = int(counts[s.label]) if s.label < len(counts) else 0
        flags: List[str] = []
        doubt = float("nan")
        base = getattr(s, "base_key", None) or s.key
        volumes[s.key] = n * voxel_cm3
        if n == 0:
            flags.append("empty")
        else:
            mask = array == s.label
            box = bounding_box(mask, margin=2)
            if uncertainty is not None:
                shell = surface_shell(mask[box])
                doubt = float(np.asarray(uncertainty)[box][shell].mean()) if shell.any() else 0.0
            band = VOLUME_BANDS_CM3.get(base)
            if band is not None and n * voxel_cm3 < band.low:
                flags.append("volume_low")
            if band is not None and n * voxel_cm3 > band.high:
                flags.append("volume_high")
            if midline_x is not None and s.side in ("right", "left"):
                x = _centroid_x(mask, labelmap)
                # LPS +x is the patient's left.
                if (s.side == "right" and x > midline_x) or (s.side == "left" and x < midline_x):
                    flags.append("wrong_side")
            if removed is not None and removed.get(s.key, 0.0) > FRAGMENT_SHARE:
                flags.append("fragmented")
        out[s.key] = StructureQuality(s.key, doubt, flags)
    _flag_asymmetry(out, volumes, label_set)
    return out


def _flag_asymmetry(out: Dict[str, StructureQuality], volumes: Mapping[str, float], label_set) -> None:
    pairs: Dict[str, Dict[str, str]] = {}
    for s in label_set.structures:
        if s.key in out and s.side in ("right", "left"):
            pairs.setdefault(getattr(s, "base_key", None) or s.key, {})[s.side] = s.key
    lo, hi = ASYMMETRY_RATIO
    for sides in pairs.values():
        if set(sides) != {"right", "left"}:
            continue
        right, left = volumes[sides["right"]], volumes[sides["left"]]
        if right > 0 and left > 0 and not lo <= left / right <= hi:
            for key in sides.values():
                out[key].flags.append("asymmetric")
