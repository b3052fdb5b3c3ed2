"""Checks on an input image before any model sees it, so that a wrong file gives a sentence, not a
traceback or a silently meaningless segmentation."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from .errors import InputError
from .geometry import Volume

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
    return warnings


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
