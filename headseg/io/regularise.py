"""A gantry-tilted or unevenly spaced stack of DICOM slices, resampled onto one regular voxel grid.

Scanners write such series as they acquired them: with a tilted gantry each slice is a plane whose
position steps sideways off its normal (the stack is sheared); a variable-spacing reconstruction steps
by different distances. Neither is one voxel grid, so :func:`regularise_stack` resamples the slices.

The output grid, chosen so that no image axis is invented and nothing is cut:

* **axes**: the DICOM row direction, the column direction and the slice normal (their cross product),
  orthogonal, as dcm2niix does (3D Slicer's regularisation keeps the sheared grid instead; HeadSeg's
  :class:`headseg.geometry.Volume` and every file format it writes need an orthogonal one);
* **in-plane spacing**: the PixelSpacing, unchanged;
* **slice spacing**: the median distance between neighbouring slices along the normal (the spacing most
  of the series has; a gap of more than twice it is refused before this point), stretched or shrunk by
  at most half a step over the whole stack so that whole steps run from the first slice to the last
  (4.0019 mm becomes 4.0022 mm for a stack 144.08 mm deep);
* **extent**: every slice, wherever the tilt moved it: the rows and columns of the output cover the
  union of all slices, and its planes run from the first slice's plane to the last's. Output columns
  and rows sit at whole pixels from the first slice, so without tilt no slice is interpolated in plane.

Each slice is placed by its own ImagePositionPatient and ImageOrientationPatient. An output voxel takes
its value from the two original slices nearest to it along the normal, each sampled at the foot of the
perpendicular from the voxel to that slice (bilinear within the slice, which for a tilt is a constant
sub-pixel shift per slice), weighted linearly by distance. Planes beyond the first or last slice (less
than half a spacing) take that slice's values. Where a slice has no pixel (outside its field of view)
the series' lowest value is used, what scanners store outside their field of view.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np

from headseg.geometry import Volume
from headseg.io.slice_geometry import DicomSliceGeometry

__all__ = ["RegularGrid", "regular_grid", "regularise_stack", "describe_regularisation"]

# Shifts within this fraction of a pixel of a whole pixel are whole (IPP values are rounded in the files).
_WHOLE_PIXEL_TOL = 1e-3


@dataclass(frozen=True)
class RegularGrid:
    """The voxel grid an irregular stack is resampled onto, and where each slice lies on it."""

    shape: Tuple[int, int, int]  # (k, j, i)
    spacing: Tuple[float, float, float]  # (i, j, k) mm
    origin: Tuple[float, float, float]  # LPS mm of voxel (0, 0, 0)
    direction: np.ndarray  # columns: DICOM row direction, column direction, slice normal (orthonormal)
    slice_columns: np.ndarray  # [n]: output column index of each slice's first column (fractional)
    slice_rows: np.ndarray  # [n]: output row index of each slice's first row (fractional)
    slice_planes: np.ndarray  # [n]: output plane index of each slice (fractional)

    def empty(self, dtype=np.int16) -> Volume:
        return Volume(np.zeros(self.shape, dtype), self.spacing, self.origin, self.direction.copy())


def _orthonormal_axes(direction: np.ndarray) -> np.ndarray:
    """Row, column and normal directions made exactly orthonormal (IOP is stored with ~6 digits)."""
    row = direction[:, 0] / np.linalg.norm(direction[:, 0])
    col = direction[:, 1] - (direction[:, 1] @ row) * row
    col = col / np.linalg.norm(col)
    return np.column_stack([row, col, np.cross(row, col)])


def regular_grid(geometry: DicomSliceGeometry, spacing: float = 0.0) -> RegularGrid:
    """The output grid of :func:`regularise_stack` (see the module docstring); ``spacing`` overrides the
    slice spacing (default: the median distance between neighbouring slices along the normal)."""
    axes = _orthonormal_axes(geometry.direction)
    di, dj = geometry.pixel_spacing
    positions = np.asarray(geometry.positions, dtype=float)
    offsets = (positions - positions[0]) @ axes  # [n, 3]: along row, column, normal directions (mm)
    columns, rows, along = offsets[:, 0] / di, offsets[:, 1] / dj, offsets[:, 2]
    span = float(along[-1] - along[0])
    if spacing > 0:
        step = float(spacing)
    else:  # the median, stretched by at most half a step over the stack so planes end on the last slice
        step = span / max(1, round(span / geometry.median_step)) if span > 0 else geometry.median_step
    first_i = math.floor(float(columns.min()) + _WHOLE_PIXEL_TOL)
    last_i = math.ceil(float(columns.max()) - _WHOLE_PIXEL_TOL) + geometry.columns - 1
    first_j = math.floor(float(rows.min()) + _WHOLE_PIXEL_TOL)
    last_j = math.ceil(float(rows.max()) - _WHOLE_PIXEL_TOL) + geometry.rows - 1
    n_planes = int(math.floor(span / step + 0.5)) + 1
    origin = positions[0] + first_i * di * axes[:, 0] + first_j * dj * axes[:, 1] + along[0] * axes[:, 2]
    return RegularGrid(
        shape=(n_planes, last_j - first_j + 1, last_i - first_i + 1),
        spacing=(float(di), float(dj), step),
        origin=tuple(float(v) for v in origin),  # type: ignore[arg-type]
        direction=axes,
        slice_columns=columns - first_i,
        slice_rows=rows - first_j,
        slice_planes=(along - along[0]) / step,
    )


def _snap(value: float) -> float:
    nearest = round(value)
    return float(nearest) if abs(value - nearest) < _WHOLE_PIXEL_TOL else float(value)


def _placed_slice(image: np.ndarray, row: float, column: float, shape: Tuple[int, int], fill: float) -> np.ndarray:
    """``image`` (rows x columns) with its first pixel at output (row, column), sampled bilinearly on the
    output pixel grid of ``shape``; ``fill`` where the slice has no pixel."""
    row, column = _snap(row), _snap(column)
    base_j, base_i = math.floor(row), math.floor(column)
    frac_j, frac_i = row - base_j, column - base_i
    # canvas[y, x]: the slice shifted by whole pixels, i.e. slice pixel (y - base_j, x - base_i).
    canvas = np.full(shape, fill, dtype=np.float32)
    y0, x0 = max(base_j, 0), max(base_i, 0)
    y1, x1 = min(base_j + image.shape[0], shape[0]), min(base_i + image.shape[1], shape[1])
    if y1 > y0 and x1 > x0:
        canvas[y0:y1, x0:x1] = image[y0 - base_j:y1 - base_j, x0 - base_i:x1 - base_i]
    if frac_j == 0.0 and frac_i == 0.0:
        return canvas
    # Output pixel y sees the slice at canvas row y - frac_j: between canvas rows y - 1 (weight frac_j) and
    # y (weight 1 - frac_j); the same for columns. Row and column -1 of the canvas are ``fill``.
    padded = np.full((shape[0] + 1, shape[1] + 1), fill, dtype=np.float32)
    padded[1:, 1:] = canvas
    rows = frac_j * padded[:-1, :] + (1.0 - frac_j) * padded[1:, :]
    return frac_i * rows[:, :-1] + (1.0 - frac_i) * rows[:, 1:]


def regularise_stack(slices: np.ndarray, geometry: DicomSliceGeometry, spacing: float = 0.0) -> Volume:
    """Resample ``slices`` ([n, rows, columns], in the order of ``geometry.positions``) onto
    :func:`regular_grid` ``(geometry, spacing)`` (see the module docstring). An integer input gives the
    same integer type (rounded), anything else float32."""
    slices = np.asarray(slices)
    if slices.ndim != 3 or slices.shape[0] != len(geometry.positions):
        raise ValueError(f"Expected {len(geometry.positions)} slices, got an array of shape {slices.shape}.")
    grid = regular_grid(geometry, spacing)
    fill = float(slices.min())
    integer = np.issubdtype(slices.dtype, np.integer)
    limits = (float(np.iinfo(slices.dtype).min), float(np.iinfo(slices.dtype).max)) if integer else None
    out = np.empty(grid.shape, dtype=slices.dtype if integer else np.float32)
    planes = grid.slice_planes
    cache: Dict[int, np.ndarray] = {}

    def placed(n: int) -> np.ndarray:
        if n not in cache:
            for old in [m for m in cache if m < n - 1]:
                del cache[old]  # planes run upwards: earlier slices are not needed again
            cache[n] = _placed_slice(slices[n].astype(np.float32), float(grid.slice_rows[n]),
                                     float(grid.slice_columns[n]), grid.shape[1:], fill)
        return cache[n]

    for m in range(grid.shape[0]):
        above = int(np.searchsorted(planes, m, side="left"))  # first slice at or beyond plane m
        if above >= len(planes):
            value = placed(len(planes) - 1)
        elif above == 0 or abs(planes[above] - m) < 1e-6:
            value = placed(above)
        else:
            below = above - 1
            weight = float((m - planes[below]) / (planes[above] - planes[below]))
            value = (1.0 - weight) * placed(below) + weight * placed(above)
        out[m] = value if limits is None else np.clip(np.rint(value), *limits)
    return Volume(out, grid.spacing, grid.origin, grid.direction)


def describe_regularisation(geometry: DicomSliceGeometry, volume: Volume) -> str:
    """What :func:`regularise_stack` did to a series, for the user's warning."""
    i, j, k = volume.size_ijk
    return (
        f"{geometry.irregularity()}: resampled onto a regular grid of {i} x {j} x {k} voxels, axes along the "
        f"DICOM rows, columns and slice normal, {volume.spacing[0]:.3g} x {volume.spacing[1]:.3g} mm in plane "
        f"(unchanged) and {volume.spacing[2]:.2f} mm between slices (the median slice distance, fitted to the stack); each slice "
        "placed by its own position and orientation, linear interpolation between the two nearest slices "
        "(bilinear within a slice). Volumes and segmentations refer to this resampled grid, not to the "
        "original slices."
    )
