"""Checks on an input image before any model sees it, so that a wrong file gives a sentence, not a
traceback or a silently meaningless segmentation."""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume

# Refuse before allocating: a CT above this many voxels (about 2.1 billion, e.g. 1024 x 1024 x 2000) is
# not a head CT and would not fit in memory as float32.
MAX_VOXELS = 1024 * 1024 * 2048
MIN_SLICES = 4
MIN_INPLANE = 16


def check_ct(volume: Volume, min_extent_mm: float = 20.0) -> List[str]:
    """Raise InputError if ``volume`` cannot be a CT we can segment; return soft warnings otherwise."""
    warnings: List[str] = []
    k, j, i = volume.shape
    if k * j * i > MAX_VOXELS:
        raise InputError(f"The image has {k * j * i:,} voxels ({i} x {j} x {k}); this is far larger than a head CT.")
    if k < MIN_SLICES or j < MIN_INPLANE or i < MIN_INPLANE:
        raise InputError(
            f"The image is too small to segment ({i} x {j} x {k} voxels): it needs at least "
            f"{MIN_INPLANE} x {MIN_INPLANE} x {MIN_SLICES}. Load the whole CT series, not a single slice."
        )
    if max(volume.spacing) > 20 or min(volume.spacing) < 0.05:
        raise InputError(
            f"The voxel spacing {tuple(round(s, 3) for s in volume.spacing)} mm is not plausible for CT "
            "(expected 0.05 to 20 mm). Check the file's header."
        )
    extent = [n * s for n, s in zip(volume.size_ijk, volume.spacing)]
    if min(extent) < min_extent_mm:
        raise InputError(
            f"The image covers only {extent[0]:.0f} x {extent[1]:.0f} x {extent[2]:.0f} mm; "
            f"at least {min_extent_mm:.0f} mm along every axis is needed."
        )
    if not np.issubdtype(volume.array.dtype, np.number) or np.issubdtype(volume.array.dtype, np.complexfloating):
        raise InputError(f"The image has voxel type {volume.array.dtype}; a grey-scale CT is expected.")
    if np.issubdtype(volume.array.dtype, np.floating):
        finite = np.isfinite(volume.array)
        if not finite.all():
            bad = int((~finite).sum())
            raise InputError(f"The image has {bad:,} NaN or infinite voxels; it is not a valid CT.")
    lo, hi = float(volume.array.min()), float(volume.array.max())
    if hi - lo < 1:
        raise InputError("The image is constant (every voxel has the same value): nothing to segment.")
    if lo > -300 or hi < 100:
        raise InputError(
            f"The intensities ({lo:.0f} to {hi:.0f}) do not look like CT Hounsfield units (air near -1000, "
            "bone above +300). Is this an MR image, or a CT saved without its rescale slope/intercept?"
        )
    if lo < -3100 or hi > 40000:
        warnings.append(f"Unusual intensity range {lo:.0f} to {hi:.0f} HU; values were used as they are.")
    shear = shear_degrees(volume.direction)
    if shear > 0.5:
        warnings.append(f"The image's axes are not perpendicular (sheared by {shear:.1f} degrees, e.g. a tilted "
                        "gantry stored as it was acquired); it was segmented on a perpendicular grid, so compare the "
                        "result with the original slices.")
    return warnings


def shear_degrees(direction: np.ndarray) -> float:
    """How far the image's three axes are from perpendicular: the largest deviation from 90 degrees."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    axes = d / np.linalg.norm(d, axis=0)
    cosines = [abs(float(axes[:, a] @ axes[:, b])) for a, b in ((0, 1), (0, 2), (1, 2))]
    return float(np.degrees(np.arcsin(min(1.0, max(cosines)))))


#: The largest --roi box side: both orbits with a margin are about 120 x 80 x 60 mm; a larger box is a
#: typo or mixed units, and would make crop grids of billions of voxels.
MAX_ROI_MM = 300.0


def check_roi(roi: Tuple[Sequence[float], Sequence[float]], volume: Volume) -> None:
    """Refuse a region of interest (LPS centre, size in mm) that is not finite, too large, or outside
    ``volume``, before any work."""
    centre, size = np.asarray(roi[0], dtype=float), np.asarray(roi[1], dtype=float)
    if not (np.all(np.isfinite(centre)) and np.all(np.isfinite(size)) and np.all(size > 0)):
        raise InputError("The region of interest needs finite numbers and positive sizes (centre x,y,z and size "
                         "x,y,z in LPS millimetres).")
    if size.max() > MAX_ROI_MM:
        raise InputError(f"The region of interest is {' x '.join(f'{s:.0f}' for s in size)} mm; draw a box of at most "
                         f"{MAX_ROI_MM:.0f} mm per side around the orbits (sizes are in millimetres).")
    corners = np.array([(a, b, c) for a in (-0.5, volume.size_ijk[0] - 0.5) for b in (-0.5, volume.size_ijk[1] - 0.5)
                        for c in (-0.5, volume.size_ijk[2] - 0.5)])
    lps = np.array([volume.index_to_lps(c) for c in corners])
    low, high = lps.min(axis=0), lps.max(axis=0)
    if np.any(centre + size / 2 < low) or np.any(centre - size / 2 > high):
        raise InputError("The region of interest lies outside the image (its centre is "
                         f"{', '.join(f'{c:.0f}' for c in centre)} mm LPS; the image spans "
                         f"{', '.join(f'{a:.0f} to {b:.0f}' for a, b in zip(low, high))} mm). Draw it around the orbits.")


#: The coarsest voxels on which an eye muscle's volume can be trusted. On CT the thinnest rectus (the
#: lateral) is about 2-5 mm thick and the superior and inferior recti 3-6 mm tall (docs/orbit_real_ct.md,
#: "Resolution"): with pixels above 1.5 mm a lateral rectus is one or two pixels across and half its
#: voxels are partial volume; with slices above 3.5 mm the superior and inferior recti lie in one slice.
ORBIT_MAX_PIXEL_MM = 1.5
ORBIT_MAX_SLICE_MM = 3.5


def orbit_resolution_note(volume: Volume) -> Optional[str]:
    """One warning when ``volume`` is too coarse for trustworthy eye-muscle volumes, else None. Such a
    scan is still segmented (the outline helps a reader find the muscles), but its volumes are not."""
    pixel = max(volume.spacing[0], volume.spacing[1])
    slices = volume.spacing[2]
    if pixel <= ORBIT_MAX_PIXEL_MM and slices <= ORBIT_MAX_SLICE_MM:
        return None
    return (f"This scan is too coarse for eye-muscle volumes ({volume.spacing[0]:.2f} x {volume.spacing[1]:.2f} "
            f"x {slices:.2f} mm voxels; at most {ORBIT_MAX_PIXEL_MM} mm pixels and {ORBIT_MAX_SLICE_MM} mm slices "
            "resolve a rectus): the outline can guide a reader, but its volumes and their changes cannot be "
            "trusted.")
