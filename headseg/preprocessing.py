"""What turns a CT into a model input, written once so that training and inference cannot drift apart:
intensity normalisation, the whole-volume model grid, and the per-orbit crops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .geometry import Volume

AIR_HU = -1000.0


def normalize(array: np.ndarray, spec: Dict[str, Any]) -> np.ndarray:
    """Map Hounsfield units to network input as the model card says.

    ``{"type": "window", "lower": L, "upper": U}``: clip to [L, U] and scale to [0, 1] (a CT window is
    what a radiologist looks at; fixed HU keep the meaning of intensities across scanners).
    ``{"type": "zscore", "mean": m, "std": s, "lower": L, "upper": U}``: clip, then standardise (nnU-Net's CT
    scheme, with statistics from the training set).
    """
    kind = spec.get("type", "window")
    lower, upper = float(spec.get("lower", -1000.0)), float(spec.get("upper", 1000.0))
    x = np.clip(array.astype(np.float32, copy=False), lower, upper)
    if kind == "window":
        return (x - lower) / (upper - lower)
    if kind == "zscore":
        return (x - float(spec["mean"])) / float(spec["std"])
    raise ValueError(f"Unknown normalisation type {kind!r} in the model card (expected 'window' or 'zscore').")


def empty_grid(shape_kji: Sequence[int], spacing: Sequence[float], origin: Sequence[float],
               direction: Optional[np.ndarray] = None) -> Volume:
    """A geometry-only Volume (a zero-stride array: no memory is allocated for it)."""
    array = np.broadcast_to(np.zeros((), np.uint8), tuple(int(n) for n in shape_kji))
    return Volume(array, tuple(spacing), tuple(origin), np.eye(3) if direction is None else direction)


def model_grid_for(volume: Volume, spacing: Sequence[float]) -> Volume:
    """An LPS-aligned grid of the given spacing that covers the physical extent of ``volume``.

    Whole-volume models were trained on axis-aligned LPS grids; an input in any orientation (RAS index
    order, oblique) is resampled onto such a grid and the result resampled back, so the model always
    sees the anatomy the way it learned it.
    """
    k, j, i = volume.shape
    corners = np.array([[a, b, c] for a in (-0.5, i - 0.5) for b in (-0.5, j - 0.5) for c in (-0.5, k - 0.5)])
    points = np.array([volume.index_to_lps(c) for c in corners])
    lo, hi = points.min(axis=0), points.max(axis=0)
    spacing = np.asarray(spacing, dtype=float)
    size = np.maximum(1, np.round((hi - lo) / spacing)).astype(int)
    origin = lo + spacing / 2.0
    return empty_grid((size[2], size[1], size[0]), spacing, origin)


def subgrid_covering(volume: Volume, other: Volume, margin: int = 1) -> Tuple[Volume, Tuple[slice, slice, slice]]:
    """The part of ``volume``'s grid that covers ``other``'s extent, and its slices into ``volume.array``.

    Used to bring a small crop's result back onto the input grid without touching the rest of it.
    """
    k, j, i = other.shape
    corners = np.array([[a, b, c] for a in (-0.5, i - 0.5) for b in (-0.5, j - 0.5) for c in (-0.5, k - 0.5)])
    idx = np.array([volume.lps_to_index(other.index_to_lps(c)) for c in corners])
    lo = np.maximum(np.floor(idx.min(axis=0)).astype(int) - margin, 0)
    size_ijk = np.array(volume.size_ijk)
    hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + margin + 1, size_ijk)
    if np.any(hi <= lo):
        raise ValueError("The region lies outside the image.")
    slices = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    origin = volume.index_to_lps(lo)
    grid = empty_grid((hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]), volume.spacing, origin, volume.direction)
    return grid, slices


@dataclass
class OrbitCrop:
    """One orbit as the model sees it: the CT resampled onto ``grid`` (mirrored for the left side)."""

    side: str
    image: Volume  # float32 HU on the crop grid
    box: Any  # headseg.orbit.RegionBox


def orbit_crops(volume: Volume, card: Dict[str, Any], roi: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
                sides: Sequence[str] = ("right", "left")) -> List[OrbitCrop]:
    """Locate the orbits (or use the user's ROI) and resample each into the model's crop grid."""
    from .orbit import boxes_from_roi, locate_orbits, orbit_crop_grid
    from .resample import resample_to_grid

    inp = card["input"]
    if roi is not None:
        boxes = boxes_from_roi(roi[0], roi[1], volume)
    else:
        boxes = {loc.side: loc.box for loc in locate_orbits(volume)}
    crops = []
    for side in sides:
        if side not in boxes:
            continue
        grid = orbit_crop_grid(boxes[side], inp["spacing_mm"], inp["window_kji"], side,
                               mirror_left=bool(inp.get("mirror_left", True)))
        image = resample_to_grid(volume, grid, interpolation="linear", default_value=AIR_HU)
        crops.append(OrbitCrop(side, image, boxes[side]))
    return crops
