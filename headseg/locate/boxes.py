"""Orbit regions and the crop grids of the orbit model, in LPS millimetres.

* **Region per orbit** (:func:`orbit_box`): an axis-aligned LPS box around the globe and the muscle cone
  behind it: 16 mm in front of the globe centre to 44 mm behind it (the apex lies ~35 mm behind),
  50 mm wide centred 5 mm medial of the globe (the apex lies ~15 mm medial), 44 mm high centred on
  the globe.
* **Crop grid** (:func:`orbit_crop_grid`): an axis-aligned grid with the model card's spacing and
  in-plane size, centred on the box, whose slices cover the box's superior-inferior extent. The model
  sees every orbit as a RIGHT orbit: for the left side the grid direction is diag(-1, 1, 1), so
  resampling the CT onto it produces a left-right flipped crop. Because the mirror lives in the
  grid's geometry (not in an array flip), resampling the predicted crop labels back onto the input grid
  through this same geometry undoes the mirror automatically.
* A user-drawn ROI that holds both orbits is split into a right and a left half (:func:`_split_box`,
  used by :func:`headseg.locate.roi.boxes_from_roi`).

The side is always the patient's: ``SIDES`` = ("right", "left"); the patient's left has the larger LPS x.
This is the lowest module of :mod:`headseg.locate`: it imports none of the others.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume

Point = Union[Sequence[float], np.ndarray]  # an LPS point (mm) or a size, as a list or an array

__all__ = ["SIDES", "Point", "RegionBox", "OrbitLocation", "orbit_box", "orbit_crop_grid"]

SIDES = ("right", "left")

# orbit_box extents relative to the globe centre (mm); "medial" is toward the midline.
BOX_ANTERIOR_MM = 16.0
BOX_POSTERIOR_MM = 44.0
BOX_WIDTH_MM = 50.0
BOX_MEDIAL_SHIFT_MM = 5.0
BOX_HEIGHT_MM = 44.0


@dataclass
class RegionBox:
    """Axis-aligned box in LPS millimetres: centre and full size along x, y, z."""

    center_lps: np.ndarray
    size_mm: np.ndarray

    def __post_init__(self) -> None:
        self.center_lps = np.asarray(self.center_lps, dtype=float).reshape(3)
        self.size_mm = np.asarray(self.size_mm, dtype=float).reshape(3)
        if np.any(self.size_mm <= 0):
            raise InputError(f"A region box needs a positive size in every direction, got {self.size_mm} mm.")

    @property
    def min_lps(self) -> np.ndarray:
        return self.center_lps - self.size_mm / 2

    @property
    def max_lps(self) -> np.ndarray:
        return self.center_lps + self.size_mm / 2

    def contains(self, point_lps: Point) -> bool:
        p = np.asarray(point_lps, dtype=float)
        return bool(np.all(p >= self.min_lps) and np.all(p <= self.max_lps))


@dataclass
class OrbitLocation:
    """One orbit: patient side, globe centre (None when only a user ROI defined it) and its box."""

    side: str
    globe_center_lps: Optional[np.ndarray]
    box: RegionBox
    score: float = 0.0


def orbit_box(globe_center_lps: Point, side: str) -> RegionBox:
    """The region of one orbit: globe plus muscle cone to the apex (extents in the module docstring)."""
    side = _check_side(side)
    g = np.asarray(globe_center_lps, dtype=float)
    medial = 1.0 if side == "right" else -1.0  # right orbit: the midline is toward +x
    center = g + np.array([medial * BOX_MEDIAL_SHIFT_MM, (BOX_POSTERIOR_MM - BOX_ANTERIOR_MM) / 2, 0.0])
    return RegionBox(center, np.array([BOX_WIDTH_MM, BOX_ANTERIOR_MM + BOX_POSTERIOR_MM, BOX_HEIGHT_MM]))


def _split_box(roi: RegionBox, split_x: float, side: str) -> RegionBox:
    """The part of ``roi`` on ``side`` of the plane x = ``split_x`` (LPS mm)."""
    lo, hi = roi.min_lps.copy(), roi.max_lps.copy()
    if side == "right":
        hi[0] = min(hi[0], split_x)
    else:
        lo[0] = max(lo[0], split_x)
    if hi[0] <= lo[0]:
        raise InputError("The region of interest does not reach this side of the head; draw it around the orbits.")
    return RegionBox((lo + hi) / 2, hi - lo)


def _check_side(side: str) -> str:
    """``side`` itself when it is "right" or "left"; an InputError otherwise."""
    if side not in SIDES:
        raise InputError(f"side must be 'right' or 'left', got {side!r}.")
    return side


def orbit_crop_grid(
    box: RegionBox,
    spacing_ijk: Sequence[float],
    size_kji: Sequence[Optional[int]],
    side: str,
    mirror_left: bool = True,
) -> Volume:
    """The model-input grid of one orbit: an empty (uint8 zeros) Volume centred on ``box``.

    ``spacing_ijk`` and the in-plane size come from the model card; a ``None`` (or 0) entry of
    ``size_kji`` is computed to cover the box along that axis (the usual case for k: the number of
    slices that cover the box's S-I extent). The grid is axis-aligned in LPS; for the left side with
    ``mirror_left`` its direction is diag(-1, 1, 1), so index i runs from the patient's left to right
    and the crop shows the left orbit as if it were a right one (lateral at low i on both sides).
    Resampling labels back through this geometry restores the true side with no extra flip.
    """
    side = _check_side(side)
    spacing = np.asarray([float(s) for s in spacing_ijk])
    if spacing.shape != (3,) or np.any(spacing <= 0):
        raise InputError(f"spacing_ijk must be three positive numbers, got {tuple(spacing_ijk)}.")
    if len(size_kji) != 3:
        raise InputError(f"size_kji must have three entries (k, j, i), got {tuple(size_kji)}.")
    size_ijk = []
    for axis in range(3):
        n = size_kji[2 - axis]
        if not n:
            n = int(math.ceil(box.size_mm[axis] / spacing[axis]))
        size_ijk.append(int(n))
    direction = np.diag([-1.0, 1.0, 1.0]) if (side == "left" and mirror_left) else np.eye(3)
    half = (np.asarray(size_ijk, float) - 1) * spacing / 2
    origin = box.center_lps - direction @ half
    shape = (size_ijk[2], size_ijk[1], size_ijk[0])
    return Volume(np.zeros(shape, np.uint8), tuple(spacing), tuple(origin), direction)
