"""The working grid of the orbit search: the CT on ~2 mm LPS voxels, the body, and what was scanned.

The CT is averaged into ~2 mm blocks (``BinShrink``) and resampled onto an axis-aligned LPS grid of 2 mm
voxels that covers the body (plus 12 mm of air; coarser for very large fields, at most ~8 M voxels), so
every later step works in patient space whatever the input's spacing or orientation
(:class:`_WorkGrid`).

* **Noise.** Noisy scans (thin slices, low dose: noise estimated from the Laplacian in soft tissue,
  :func:`_noise_hu`) are smoothed to ~10 HU first.
* **Masks.** ``soft`` = -30 < HU < 160 (where the globes are looked for), ``fat`` = -250..-30 HU, and
  ``body``: everything but the air (< -400 HU) connected to the grid's border; ``depth`` is the distance
  (mm) below the skin.
* **Field of view.** What the scanner did not reconstruct is marked outside the field of view
  (``in_fov``): values below -1500 HU, everything beyond a flat cut of the body (:func:`_flat_cuts`: the
  body ends at once with its full cross-section where the scan stopped, also when the volume was padded
  with air beyond it; the vertex is a dome), and beyond a reconstruction circle written as air
  (:meth:`_WorkGrid._exclude_reconstruction_circle`). :func:`_fov_fraction` measures how much of an
  orbit region lies in the scanned field.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from headseg.geometry import Volume
from headseg.locate.boxes import Point, RegionBox

WORK_SPACING_MM = 2.0
MAX_WORK_VOXELS = 8.0e6
SOFT_HU = (-30.0, 160.0)
FAT_HU = (-250.0, -30.0)
AIR_HU = -400.0
NOISE_TARGET_HU = 10.0
BODY_MARGIN_MM = 12.0
OUTSIDE_FOV_HU = -1500.0
CIRCLE_MIN_SURFACE_VOXELS = 50  # body surface on the reconstruction circle that marks a cut by it
CIRCLE_MIN_SURFACE_FRACTION = 0.03
FLAT_CUT_FRACTION = 0.5
CUT_DROP = 0.3
CUT_TRANSITION_MM = 5.0


def _distance_inside(mask: np.ndarray, spacing_mm: float) -> np.ndarray:
    """Distance (mm) from each voxel of ``mask`` to the nearest voxel outside it (0 outside).

    Same values as ``scipy.ndimage.distance_transform_edt`` but SimpleITK's Maurer transform is
    multi-threaded and about 2-3x faster, which matters on whole head-and-neck scans.
    """
    import SimpleITK as sitk

    outside = sitk.GetImageFromArray((~mask).astype(np.uint8))
    outside.SetSpacing((spacing_mm,) * 3)
    if not mask.any() or mask.all():
        return np.where(mask, np.inf, 0.0).astype(np.float32)
    distance = sitk.SignedMaurerDistanceMap(outside, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    return np.where(mask, sitk.GetArrayFromImage(distance), 0.0).astype(np.float32)


class _WorkGrid:
    """The CT on an axis-aligned LPS grid of ~2 mm voxels (array[z, y, x]) plus the derived masks."""

    def __init__(self, volume: Volume, spacing_mm: float = WORK_SPACING_MM) -> None:
        import SimpleITK as sitk

        self.source = volume.to_sitk()
        # physical bounding box of the input
        corners = np.array(
            [volume.index_to_lps((i, j, k)) for i in (-0.5, volume.size_ijk[0] - 0.5)
             for j in (-0.5, volume.size_ijk[1] - 0.5) for k in (-0.5, volume.size_ijk[2] - 0.5)]
        )  # fmt: skip
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        # Only the part of the field that holds the body (plus a margin of air) is worth searching.
        body_lo, body_hi = _body_bounds(self.source, volume.spacing)
        lo, hi = np.maximum(lo, body_lo - BODY_MARGIN_MM), np.minimum(hi, body_hi + BODY_MARGIN_MM)
        if np.any(hi <= lo):
            lo, hi = corners.min(axis=0), corners.max(axis=0)
        # Large fields (whole head and neck) get coarser voxels so the search stays ~1 s.
        spacing_mm = max(spacing_mm, (float(np.prod(hi - lo)) / MAX_WORK_VOXELS) ** (1.0 / 3.0))
        shrink = [max(1, int(round(spacing_mm / s))) for s in volume.spacing]
        small = sitk.BinShrink(self.source, shrink) if max(shrink) > 1 else self.source
        small = sitk.Cast(small, sitk.sitkFloat32)
        size = np.maximum(np.ceil((hi - lo) / spacing_mm).astype(int), 1)
        self.origin = lo + spacing_mm / 2
        self.spacing = spacing_mm
        resampled = sitk.Resample(
            small, [int(n) for n in size], sitk.Transform(), sitk.sitkLinear, tuple(self.origin),
            (spacing_mm,) * 3, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), -1000.0, sitk.sitkFloat32,
        )  # fmt: skip
        self.hu = sitk.GetArrayFromImage(resampled)  # [z, y, x]
        ones = sitk.Image(small.GetSize(), sitk.sitkUInt8) + 1
        ones.CopyInformation(small)
        self.in_fov = sitk.GetArrayFromImage(sitk.Resample(
            ones, [int(n) for n in size], sitk.Transform(), sitk.sitkNearestNeighbor, tuple(self.origin),
            (spacing_mm,) * 3, (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), 0, sitk.sitkUInt8,
        )).astype(bool)  # fmt: skip
        self._lps_to_index = np.linalg.inv(volume.ijk_to_lps)
        self._size_ijk = np.asarray(volume.size_ijk, float)
        # Noisy scans (thin slices, low dose) break the soft-tissue mask into speckle: smooth just enough
        # to bring the noise to ~NOISE_TARGET_HU first.
        self.noise_hu = _noise_hu(self.hu)
        if self.noise_hu > NOISE_TARGET_HU:
            # a Gaussian of sigma s voxels divides white noise by (2 sqrt(pi) s)^(3/2)
            sigma = min(1.5, (self.noise_hu / NOISE_TARGET_HU) ** (2.0 / 3.0) / (2.0 * math.sqrt(math.pi)))
            self.hu = ndimage.gaussian_filter(self.hu, sigma)
        self.soft = (self.hu > SOFT_HU[0]) & (self.hu < SOFT_HU[1])
        self.fat = (self.hu > FAT_HU[0]) & (self.hu <= FAT_HU[1])
        air = self.hu < AIR_HU
        labels, _ = ndimage.label(air)
        border = np.unique(
            np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()])
        )
        self.body = ~np.isin(labels, border[border > 0])
        self.depth = _distance_inside(self.body, spacing_mm)  # mm below the skin
        # What the scanner did not reconstruct is not air: values below OUTSIDE_FOV_HU (the corners
        # outside the reconstruction circle), and beyond a flat cut of the body (a volume padded beyond
        # its scanned slices looks like air there, but the head does not end in a flat face).
        self.in_fov &= self.hu > OUTSIDE_FOV_HU
        self._exclude_reconstruction_circle(volume)
        self.z_limits = _flat_cuts(self.body, self.origin[2], spacing_mm)
        z = self.origin[2] + np.arange(self.hu.shape[0]) * spacing_mm
        self.in_fov[(z < self.z_limits[0]) | (z > self.z_limits[1])] = False

    def _exclude_reconstruction_circle(self, volume: Volume) -> None:
        """A head wider than the scanner's reconstruction circle is cut by it; where the scanner (or a
        converter) wrote air (-1024) rather than a value below OUTSIDE_FOV_HU outside the circle, the cut
        looks like skin. Brain or skin does not end on the circle inscribed in the slice, so when enough of
        the body's surface lies on it and none of the body beyond it, everything beyond the circle is taken
        as outside the field of view."""
        extent = np.asarray(volume.size_ijk[:2], float) * np.asarray(volume.spacing[:2], float)
        radius = 0.5 * float(extent.max())
        centre = (np.asarray(volume.size_ijk[:2], float) - 1.0) / 2.0
        # Skin that faces air inside the image: where the image's own edge cuts the body, the air beyond
        # is outside the input, and that cut is not the circle's.
        surface = self.body & ~ndimage.binary_erosion(self.body, border_value=1)
        surface &= ndimage.binary_dilation(~self.body & self.in_fov)
        if not surface.any():
            return
        # The input's (i, j) index of every work-grid voxel is affine in its (z, y, x): sum the three axes'
        # broadcast contributions instead of transforming every voxel's LPS point.
        to_ij, shift = self._lps_to_index[:2, :3], self._lps_to_index[:2, 3]
        mm = []
        for c in range(2):
            step = to_ij[c] * self.spacing  # index change per work voxel along x, y, z (LPS axes)
            start = float(to_ij[c] @ self.origin + shift[c] - centre[c])
            z, y, x = (np.arange(n, dtype=np.float32) * np.float32(step[a])
                       for n, a in zip(self.hu.shape, (2, 1, 0)))
            mm.append((start + z[:, None, None] + y[None, :, None] + x[None, None, :]) * np.float32(volume.spacing[c]))
        rho = np.hypot(mm[0], mm[1])
        on_circle = int((surface & (rho > radius - 2.0 * self.spacing)).sum())
        beyond = int((self.body & (rho > radius + self.spacing)).sum())  # a circle's cut leaves nothing outside it
        if on_circle >= max(CIRCLE_MIN_SURFACE_VOXELS, CIRCLE_MIN_SURFACE_FRACTION * surface.sum()) and \
                beyond <= 0.01 * on_circle:
            self.in_fov &= rho <= radius - self.spacing

    def to_lps(self, zyx: np.ndarray) -> np.ndarray:
        zyx = np.atleast_2d(zyx).astype(float)
        return self.origin + zyx[:, ::-1] * self.spacing

    def to_zyx(self, lps: Point) -> np.ndarray:
        return ((np.asarray(lps, float) - self.origin) / self.spacing)[::-1]

    def inside_input(self, points_lps: np.ndarray) -> np.ndarray:
        """Whether each LPS point lies inside the input image's field of view (its voxel grid)."""
        p = np.atleast_2d(np.asarray(points_lps, float))
        ijk = p @ self._lps_to_index[:3, :3].T + self._lps_to_index[:3, 3]
        inside = np.all((ijk >= -0.5) & (ijk <= self._size_ijk - 0.5), axis=1)
        inside &= (p[:, 2] >= self.z_limits[0]) & (p[:, 2] <= self.z_limits[1])
        zyx = np.round((p - self.origin) / self.spacing)[:, ::-1].astype(int)
        on_grid = np.all((zyx >= 0) & (zyx < np.array(self.hu.shape)), axis=1)
        zyx = np.clip(zyx, 0, np.array(self.hu.shape) - 1)
        return inside & (~on_grid | self.in_fov[zyx[:, 0], zyx[:, 1], zyx[:, 2]])


def _body_bounds(image, spacing: Sequence[float]) -> Tuple[np.ndarray, np.ndarray]:
    """LPS bounding box of everything denser than air in ``image`` (SimpleITK), found on ~4 mm voxels;
    an empty box (lo > hi) when there is nothing."""
    import SimpleITK as sitk

    shrink = [max(1, int(round(4.0 / s))) for s in spacing]
    coarse = sitk.BinShrink(image, shrink) if max(shrink) > 1 else image
    dense = np.argwhere(sitk.GetArrayFromImage(coarse) > AIR_HU)
    if not len(dense):
        return np.full(3, np.inf), np.full(3, -np.inf)
    (k0, j0, i0), (k1, j1, i1) = dense.min(axis=0) - 0.5, dense.max(axis=0) + 0.5
    corners = np.array([coarse.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
                        for i in (i0, i1) for j in (j0, j1) for k in (k0, k1)])  # fmt: skip
    return corners.min(axis=0), corners.max(axis=0)


def _flat_cuts(body: np.ndarray, z0: float, spacing: float) -> Tuple[float, float]:
    """LPS z below / above which the field of view has cut the body (-inf / inf where it has not).

    At the vertex the body ends in a dome: slice by slice its cross-section shrinks gradually. Where the
    scan stopped, the cross-section drops within a few millimetres (a partial slice, interpolation) from
    the full width of the slices below to (almost) nothing, whether the image ends there or was padded
    beyond it (bits of a table or a mask may go on), and nothing larger lies beyond it (the top of the
    shoulders is a drop too, with the neck above it).
    """
    area = body.reshape(body.shape[0], -1).sum(axis=1).astype(float)
    reach = int(math.ceil(60.0 / spacing))
    step = max(1, int(round(CUT_TRANSITION_MM / spacing)))
    n = len(area)

    def cut_at(a: np.ndarray) -> Optional[int]:
        for t in range(len(a) - 1, -1, -1):  # from the end of ``a`` inwards: the outermost cut
            if a[t] <= 0 or a[t] < FLAT_CUT_FRACTION * a[max(0, t - reach): t + 1].max():
                continue
            beyond = a[t + 1 + step:]
            if beyond.size and beyond.max() > CUT_DROP * a[t]:
                continue
            edge = t
            while edge + 1 < len(a) and edge < t + step and a[edge + 1] > CUT_DROP * a[t]:
                edge += 1  # the partial slices of the cut still hold data
            return edge
        return None

    top, bottom = cut_at(area), cut_at(area[::-1])
    high = np.inf if top is None else z0 + (top + 0.5) * spacing
    low = -np.inf if bottom is None else z0 + (n - 1 - bottom - 0.5) * spacing
    return low, high


def _noise_hu(hu: np.ndarray) -> float:
    """Robust estimate of the white-noise standard deviation (HU) in the soft tissue of a work grid.

    The 6-neighbour Laplacian of white noise of sigma s has standard deviation sqrt(42) s; its median
    absolute value over near-homogeneous soft tissue (brain, muscle, vitreous) ignores the edges."""
    core = hu[1:-1, 1:-1, 1:-1]
    lap = 6.0 * core - (hu[:-2, 1:-1, 1:-1] + hu[2:, 1:-1, 1:-1] + hu[1:-1, :-2, 1:-1] + hu[1:-1, 2:, 1:-1]
                        + hu[1:-1, 1:-1, :-2] + hu[1:-1, 1:-1, 2:])  # fmt: skip
    soft = (core > -20.0) & (core < 90.0)
    if soft.sum() < 1000:
        return 0.0
    return float(1.4826 * np.median(np.abs(lap[soft][::3])) / math.sqrt(42.0))


def _fov_fraction(grid: _WorkGrid, box: RegionBox) -> float:
    """Fraction of an orbit box that lies inside the input's field of view."""
    axes = [np.linspace(lo + 2.0, hi - 2.0, 8) for lo, hi in zip(box.min_lps, box.max_lps)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return float(grid.inside_input(pts).mean())
