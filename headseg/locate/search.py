"""Automatic localisation of both orbits on a head CT, and the per-orbit crop grids of the orbit model.

Seed paper 000 (section 2.B) crops a fixed-size region per orbit from the axial slices that cover the
muscles and the optic nerve. Here that crop is automated:

1. **Find the globes.** The CT is averaged into ~2 mm blocks (``BinShrink``) and resampled onto an
   axis-aligned LPS grid of 2 mm voxels that covers the body (plus 12 mm of air; coarser for very large
   fields, at most ~8 M voxels), so every later step works in patient space whatever the input's
   spacing or orientation. Noisy scans (thin slices, low dose: noise estimated from the Laplacian in
   soft tissue) are smoothed to ~10 HU first. What the scanner did not reconstruct is marked outside
   the field of view: values below -1500 HU, and everything beyond a flat cut of the body (the body
   ends at once with its full cross-section where the scan stopped, also when the volume was padded
   with air beyond it; the vertex is a dome). A globe is a ball of soft-tissue density (vitreous
   0..+20 HU, lens ~+100) about 24 mm across, surrounded by orbital fat and covered in front only by
   the lids. On the working grid:

   * ``soft`` = -30 < HU < 160; the Euclidean distance transform of ``soft`` peaks at the centre of a
     ball with its radius. Candidates are local maxima with a radius of 6..17 mm, at most 40 mm below
     the skin (distance to the air outside the body), from which the air in front of the face
     (-y) is reached within 36 mm without crossing bone (> 250 HU).
   * each candidate's plausibility as a globe (0..1) combines its radius (1 for 9..14 mm), its mean HU
     within 6 mm (vitreous: 1 for -15..25 HU, 0 above 40, where muscle and glands lie), the fraction of
     fat (-250..-30 HU) in a shell 14..20 mm from it (orbital fat) and how compact its core is (the
     voxels within 4 mm of the peak radius form a small ball for a globe, a ridge or sheet for tubes).
   * pairs 40..88 mm apart, side by side (|dz| <= 25, |dy| <= 30 mm, so heads rolled or turned by
     20 degrees still pair) are judged on seven checks, each a plausibility 0..1
     (:class:`OrbitSearchReport`): ``globes`` (the weaker globe's plausibility), ``distance`` (1 for
     52..74 mm; inter-pupillary distance 63 mm, 45..80 for almost all adults, ANATOMY_FACTS.md),
     ``symmetry`` (the face mirrored about the plane that bisects the pair correlates with itself,
     the globes match in size and content, the head's cross-section is centred on that plane),
     ``depth`` (each globe centre lies 9..22 mm behind the air in front of the lids, no bone on the
     way), ``orbit_walls`` (rays to the roof, floor, walls and apex meet bone or sinus air),
     ``cranium`` (the position relative to the skull: 30..70 mm above the globes a ring of bone
     encloses brain-like tissue, the soft tissue 25..45 mm above them is brain-like, the vertex, where
     it is in view, lies 85..150 mm higher, a head-sized cross-section; where no cranium is in view the
     globes themselves must be convincing) and ``field_of_view`` (both orbit regions lie in the
     scanned field). The confidence is their geometric mean; the pair with the highest wins.
   * each centre is refined on a 1 mm patch of the original CT: rays from the candidate find the
     soft-tissue/fat boundary, and a sphere is fitted to the boundary points, trimming outliers where
     muscles, the nerve or the lids touch the globe.
   * the search is accepted when the confidence is at least :data:`MIN_CONFIDENCE` (0.8) and no check
     is below :data:`MIN_CHECK` (0.4); otherwise :class:`OrbitNotFoundError` says what is missing (no
     eye in the field, one orbit cut off, the field cutting through the orbits, a pair that is not
     below a cranium...) and how to go on (a box drawn by the user: ``--roi`` or the Slicer Search box).

   The side is decided by physical LPS x (the patient's left has the larger x), never by an array index.
   Measured on all 223 OpenKBP CTs, two real CTs and phantoms with scanner effects: docs/orbit_search.md.
2. **Region per orbit** (:func:`orbit_box`): an axis-aligned LPS box around the globe and the muscle cone
   behind it: 16 mm in front of the globe centre to 44 mm behind it (the apex lies ~35 mm behind),
   50 mm wide centred 5 mm medial of the globe (the apex lies ~15 mm medial), 44 mm high centred on
   the globe.
3. **Crop grid** (:func:`orbit_crop_grid`): an axis-aligned grid with the model card's spacing and
   in-plane size, centred on the box, whose slices cover the box's superior-inferior extent. The model
   sees every orbit as a RIGHT orbit: for the left side the grid direction is diag(-1, 1, 1), so
   resampling the CT onto it produces a left-right flipped crop. Because the mirror lives in the
   grid's geometry (not in an array flip), resampling the predicted crop labels back onto the input grid
   through this same geometry undoes the mirror automatically.

A user-drawn ROI overrides step 1 (:func:`boxes_from_roi`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from scipy import ndimage

from headseg.errors import InputError
from headseg.geometry import Volume

log = logging.getLogger(__name__)

Point = Union[Sequence[float], np.ndarray]  # an LPS point (mm) or a size, as a list or an array

__all__ = [
    "OrbitNotFoundError",
    "RegionBox",
    "OrbitLocation",
    "locate_orbits",
    "orbit_box",
    "boxes_from_roi",
    "orbit_crop_grid",
    "NOT_FOUND_MESSAGE",
    "NOT_FOUND_ADVICE",
    "OrbitSearchReport",
    "search_orbits",
    "not_found_message",
    "MIN_CONFIDENCE",
]

NOT_FOUND_ADVICE = (
    "draw a box around both orbits and run again (--roi CENTRE,SIZE in LPS mm on the command line, or the "
    "Search box, a markups ROI, in the Slicer module)."
)

WORK_SPACING_MM = 2.0
MAX_WORK_VOXELS = 8.0e6
SOFT_HU = (-30.0, 160.0)
FAT_HU = (-250.0, -30.0)
AIR_HU = -400.0
BONE_HU = 250.0
MAX_FRONT_MM = 36.0
AIR_IN_FRONT_MM = 30.0  # no bone this far beyond the air in front of a globe (a sinus has its front wall)
GLOBE_RADIUS_MM = (6.0, 17.0)
SHELL_MM = (14.0, 20.0)
MAX_DEPTH_MM = 40.0
PAIR_DISTANCE_MM = (45.0, 80.0)
MAX_PAIR_DZ_MM = 25.0  # a head rolled by 20 degrees puts one globe ~22 mm above the other
MAX_PAIR_DY_MM = 30.0  # ... and turned by 20 degrees ~22 mm in front of it
MAX_PAIRS_EVALUATED = 20
MIN_CONFIDENCE = 0.8  # geometric mean of the checks (OrbitSearchReport)
MIN_CHECK = 0.4  # and no single check below this
MIN_FAT_FRACTION = 0.1
MIN_COMPACTNESS = 0.1
VITREOUS_MAX_HU = 25.0
MAX_CORE_HU = 45.0
MAX_CANDIDATES = 200
NOISE_TARGET_HU = 10.0
BODY_MARGIN_MM = 12.0
OUTSIDE_FOV_HU = -1500.0
CIRCLE_MIN_SURFACE_VOXELS = 50  # body surface on the reconstruction circle that marks a cut by it
CIRCLE_MIN_SURFACE_FRACTION = 0.03
FLAT_CUT_FRACTION = 0.5
CUT_DROP = 0.3
CUT_TRANSITION_MM = 5.0

# orbit_box extents relative to the globe centre (mm); "medial" is toward the midline.
BOX_ANTERIOR_MM = 16.0
BOX_POSTERIOR_MM = 44.0
BOX_WIDTH_MM = 50.0
BOX_MEDIAL_SHIFT_MM = 5.0
BOX_HEIGHT_MM = 44.0

SIDES = ("right", "left")


class OrbitNotFoundError(InputError):
    """The search did not find both orbits with confidence; the user should draw a box around them.

    ``report`` is the :class:`OrbitSearchReport` of the refused search (None when raised elsewhere).
    """

    def __init__(self, message: str = "", report: Optional[OrbitSearchReport] = None) -> None:
        super().__init__(message or NOT_FOUND_MESSAGE)
        self.report = report


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


@dataclass
class _Candidate:
    """A peak of the soft-tissue distance map and what its plausibility as a globe is made of."""

    center: np.ndarray  # LPS mm
    radius: float
    fat_fraction: float
    compactness: float
    core_hu: float
    plausibility: float = field(init=False)  # _globe_plausibility, computed once here

    def __post_init__(self) -> None:
        self.plausibility = _globe_plausibility(self)


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


# -- working grid ------------------------------------------------------------------------------------
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


def _ball_offsets(r_min_mm: float, r_max_mm: float, spacing: float, max_count: int = 0) -> np.ndarray:
    """Integer voxel offsets at distances r_min..r_max mm; an evenly thinned subset when max_count is set."""
    n = int(math.ceil(r_max_mm / spacing))
    g = np.mgrid[-n : n + 1, -n : n + 1, -n : n + 1].reshape(3, -1).T
    r = np.linalg.norm(g, axis=1) * spacing
    g = g[(r >= r_min_mm) & (r <= r_max_mm)]
    if max_count and len(g) > max_count:
        g = g[np.linspace(0, len(g) - 1, max_count).astype(int)]
    return g


def _candidates(grid: _WorkGrid, region: Optional[RegionBox]) -> List[_Candidate]:
    """Globe candidates: peaks of the soft-tissue distance map, scored by fat around and compactness."""
    radius = _distance_inside(grid.soft, grid.spacing)
    peaks = (radius == ndimage.maximum_filter(radius, size=3)) & (radius >= GLOBE_RADIUS_MM[0])
    peaks &= (radius <= GLOBE_RADIUS_MM[1]) & (grid.depth <= MAX_DEPTH_MM)
    zyx = np.argwhere(peaks)
    if region is not None and len(zyx):
        lps = grid.to_lps(zyx)
        zyx = zyx[np.all((lps >= region.min_lps) & (lps <= region.max_lps), axis=1)]
    if not len(zyx):
        return []
    zyx = zyx[_open_to_the_front(grid, zyx)]
    if not len(zyx):
        return []
    peak_radius = radius[zyx[:, 0], zyx[:, 1], zyx[:, 2]]
    # Fraction of fat in a shell around the peak (over the part of the shell inside the image).
    shell = _ball_offsets(SHELL_MM[0], SHELL_MM[1], grid.spacing, max_count=800)
    fat, inside = _sample_offsets(grid.fat, zyx, shell)
    fat_fraction = fat.sum(axis=1) / np.maximum(inside.sum(axis=1), 1)
    fat_fraction[inside.mean(axis=1) < 0.5] = 0.0
    # Compactness: a ball's core {EDT >= r - 4 mm} is a 4 mm ball; ridges and slabs have far more.
    near = _ball_offsets(0.0, 12.0, grid.spacing)
    core_expected = len(_ball_offsets(0.0, 4.0, grid.spacing))
    core = np.zeros(len(zyx))
    for start in range(0, len(zyx), 256):
        chunk = slice(start, start + 256)
        values, valid = _sample_offsets(radius, zyx[chunk], near)
        core[chunk] = ((values >= peak_radius[chunk, None] - 4.0) & valid).sum(axis=1)
    compactness = np.minimum(1.0, core_expected / np.maximum(core, 1))
    # Mean HU of the central 6 mm: vitreous is near water, muscle and glands are denser.
    centre_values, centre_valid = _sample_offsets(grid.hu, zyx, _ball_offsets(0.0, 6.0, grid.spacing))
    core_hu = (centre_values * centre_valid).sum(axis=1) / np.maximum(centre_valid.sum(axis=1), 1)
    good = (fat_fraction >= MIN_FAT_FRACTION) & (compactness >= MIN_COMPACTNESS) & (core_hu <= MAX_CORE_HU)
    good = np.nonzero(good)[0]
    found = [
        _Candidate(
            grid.to_lps(zyx[n])[0], float(peak_radius[n]), float(fat_fraction[n]), float(compactness[n]),
            float(core_hu[n]),
        )
        for n in good
    ]
    found.sort(key=lambda c: -c.plausibility)
    kept: List[_Candidate] = []  # non-maximum suppression: one candidate per 10 mm
    for c in found[:MAX_CANDIDATES]:
        if all(np.linalg.norm(c.center - k.center) > 10.0 for k in kept):
            kept.append(c)
    return kept


def _open_to_the_front(grid: _WorkGrid, zyx: np.ndarray) -> np.ndarray:
    """True where, going anteriorly (-y in LPS), the air outside the face is reached within
    MAX_FRONT_MM without crossing bone, and no bone follows within AIR_IN_FRONT_MM beyond it: the globe
    is covered only by the lids, with open air in front. Rejects look-alikes in the neck, the face and
    the cranium, which lie deeper or behind bone, and those behind a sinus whose air reaches the outside
    through the nose (its front wall is bone)."""
    steps = np.arange(1, int(math.ceil((MAX_FRONT_MM + AIR_IN_FRONT_MM) / grid.spacing)) + 1)
    offsets = np.stack([np.zeros_like(steps), -steps, np.zeros_like(steps)], axis=1)
    body, valid = _sample_offsets(grid.body, zyx, offsets)
    hu, _ = _sample_offsets(grid.hu, zyx, offsets)
    outside = ~body & valid
    within = steps * grid.spacing <= MAX_FRONT_MM
    reached = (outside & within[None, :]).any(axis=1)
    first = np.argmax(outside, axis=1)
    index = np.arange(len(steps))[None, :]
    before = index < first[:, None]
    beyond = (index > first[:, None]) & ((index - first[:, None]) * grid.spacing <= AIR_IN_FRONT_MM)
    bone = ((hu > BONE_HU) & valid & (before | beyond)).any(axis=1)
    return reached & ~bone


def _sample_offsets(array: np.ndarray, zyx: np.ndarray, offsets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``array`` at every point + offset (shape [points, offsets]) and whether that was inside the array."""
    points = zyx[:, None, :] + offsets[None, :, :]
    shape = np.array(array.shape)
    valid = np.all((points >= 0) & (points < shape), axis=2)
    points = np.clip(points, 0, shape - 1)
    values = array[points[..., 0], points[..., 1], points[..., 2]]
    return values & valid if values.dtype == bool else values, valid


# -- scoring a pair: does it look like two eyes in a head? -----------------------------------------------
def _ramp(value: float, zero: float, one: float) -> float:
    """0 at ``zero``, 1 at ``one``, linear in between and clipped (``one`` may lie below ``zero``)."""
    return float(np.clip((value - zero) / (one - zero), 0.0, 1.0))


def _band(value: float, low0: float, low1: float, high1: float, high0: float) -> float:
    """1 inside [low1, high1], falling linearly to 0 at ``low0`` and ``high0``."""
    return min(_ramp(value, low0, low1), _ramp(value, high0, high1))


def _geometric_mean(values: Sequence[Optional[float]]) -> float:
    """Geometric mean of the known values (None skipped); 1 when none is known, 0 when one is 0."""
    known = np.asarray([v for v in values if v is not None], float)
    if not len(known):
        return 1.0
    if np.any(known <= 0):
        return 0.0
    return float(np.exp(np.mean(np.log(known))))


def _globe_plausibility(c: _Candidate) -> float:
    """How much one candidate looks like a globe: size, vitreous content, fat around, ball shape (0..1)."""
    return _geometric_mean([
        _band(c.radius, GLOBE_RADIUS_MM[0], 9.0, 14.0, GLOBE_RADIUS_MM[1] + 0.5),
        _band(c.core_hu, -50.0, -15.0, VITREOUS_MAX_HU, MAX_CORE_HU - 5.0),
        _ramp(c.fat_fraction, 0.05, 0.18),
        _ramp(c.compactness, 0.05, 0.2),
    ])  # fmt: skip


@dataclass
class _Frame:
    """The face's frame from a pair of globes: ``lateral`` toward the patient's left (right -> left globe),
    ``forward`` anterior in the axial plane, ``up`` = forward x lateral (superior); ``mid`` between them."""

    mid: np.ndarray
    lateral: np.ndarray
    forward: np.ndarray
    up: np.ndarray

    @classmethod
    def of(cls, right: np.ndarray, left: np.ndarray) -> _Frame:
        lateral = (left - right) / max(float(np.linalg.norm(left - right)), 1e-6)
        forward = np.array([0.0, -1.0, 0.0]) - lateral * -lateral[1]
        forward /= max(float(np.linalg.norm(forward)), 1e-6)
        return cls((right + left) / 2, lateral, forward, np.cross(forward, lateral))

    def points(self, origin: np.ndarray, lat: np.ndarray, back: np.ndarray, up: np.ndarray) -> np.ndarray:
        """LPS points at (lateral, posterior, superior) offsets (mm, frame axes) from ``origin``."""
        return (origin + lat[..., None] * self.lateral - back[..., None] * self.forward
                + up[..., None] * self.up)  # fmt: skip


def _sample_lps(grid: _WorkGrid, array: np.ndarray, points: np.ndarray, order: int = 1, outside: float = -1000.0):
    """``array`` (a work-grid array) at LPS ``points`` [..., 3]: trilinear (order 1) or nearest (order 0),
    ``outside`` beyond the grid."""
    zyx = ((points - grid.origin) / grid.spacing)[..., ::-1].reshape(-1, 3)
    if order == 0:
        index = np.round(zyx).astype(int)
        valid = np.all((index >= 0) & (index < np.array(array.shape)), axis=1)
        index = np.clip(index, 0, np.array(array.shape) - 1)
        values = np.where(valid, array[index[:, 0], index[:, 1], index[:, 2]], outside)
    else:
        values = ndimage.map_coordinates(array, zyx.T, order=1, mode="constant", cval=outside)
    return values.reshape(points.shape[:-1])


def _front_depth(grid: _WorkGrid, frame: _Frame, center: np.ndarray) -> Tuple[float, bool]:
    """Distance (mm) from a globe centre forward to the air in front of the face, and whether bone lies
    on the way (eyes are covered by the lids only)."""
    step = grid.spacing / 2
    r = np.arange(step, MAX_FRONT_MM + 10.0, step)
    zero = np.zeros_like(r)
    pts = frame.points(center, zero, -r, zero)
    body = _sample_lps(grid, grid.body, pts, order=0, outside=0.0) > 0.5
    hu = _sample_lps(grid, grid.hu, pts)
    if body.all():
        return float("inf"), bool((hu > BONE_HU).any())
    first = int(np.argmax(~body))
    return float(r[first]), bool((hu[:first] > BONE_HU).any())


# Directions (lateral, posterior, superior) from a globe centre that meet the bony orbit, with how far
# (mm) to look: the roof, the floor and the medial wall lie ~12-20 mm from the centre, the lateral wall
# behind it, the apex and the sphenoid 35-45 mm behind.
_WALL_RAYS = (
    ((0.0, 0.0, 1.0), 30.0), ((0.0, 0.0, -1.0), 30.0), ((-1.0, 0.0, 0.0), 30.0), ((1.0, 1.0, 0.0), 35.0),
    ((1.0, 0.0, 1.0), 30.0), ((0.0, 1.0, 0.0), 50.0), ((0.0, 1.0, 1.0), 45.0), ((0.0, 1.0, -1.0), 45.0),
    ((-1.0, 1.0, 0.0), 40.0),
)
WALL_HU = 180.0
FRONT_DEPTH_MM = (5.0, 9.0, 22.0, 30.0)  # globe centre to the air in front of the lids
WALLS_RAMP = (0.2, 0.45)
VERTEX_HEIGHT_MM = (60.0, 85.0, 150.0, 185.0)  # globe centres below the vertex
BRAIN_RAMP = (0.5, 0.75)
GLOBES_WITHOUT_CRANIUM = (0.6, 0.8)
FOV_RAMP = (0.8, 0.95)
RING_HU = 250.0
RING_AREA_MM2 = (4000.0, 8000.0)  # the frontal lobes' cross-section inside the vault
# Brain from 0 HU: beam-hardening cupping lowers the centre of the head by up to ~25 HU on some scanners.
BRAIN_HU = (0.0, 55.0)  # thin orbital walls averaged into 2-4 mm voxels stay well below cortical bone


def _bony_orbit(grid: _WorkGrid, frame: _Frame, center: np.ndarray, side: str) -> Tuple[float, float, int]:
    """How much of the walls around a globe look like an orbit's, along the rays of :data:`_WALL_RAYS`.

    A ray meets the wall where it first reaches bone, or air inside the body (the ethmoid cells medially
    and the maxillary sinus below lie behind walls too thin to show on coarse scans). Returns the
    fraction of rays that meet bone, the fraction that meet bone or such air, both among the rays that
    stay in the field of view until they meet something or end, and how many rays did.
    """
    outward = -1.0 if side == "right" else 1.0  # lateral of the right globe is toward -x
    bone = wall = known = 0
    for (lat, back, up), reach in _WALL_RAYS:
        d = np.array([lat * outward, back, up]) / np.linalg.norm([lat, back, up])
        r = np.arange(6.0, reach + 0.01, 1.0)
        pts = frame.points(center, d[0] * r, d[1] * r, d[2] * r)
        hu = _sample_lps(grid, grid.hu, pts)
        body = _sample_lps(grid, grid.body, pts, order=0, outside=0.0) > 0.5
        in_fov = _sample_lps(grid, grid.in_fov, pts, order=0, outside=0.0) > 0.5
        is_bone, is_air = hu > WALL_HU, (hu < AIR_HU) & body
        stop = is_bone | is_air | ~in_fov
        if stop.any() and not in_fov[int(np.argmax(stop))]:
            continue  # left the field of view first: unknown
        known += 1
        if stop.any():
            bone += bool(is_bone[int(np.argmax(stop))])
            wall += 1
    if not known:
        return 0.0, 0.0, 0
    return bone / known, wall / known, known


def _mirror_correlation(grid: _WorkGrid, frame: _Frame) -> float:
    """Pearson r between the face region around the pair and its mirror image about the plane that
    bisects the pair: a head is mirror-symmetric about its midline, and its eyes lie mirrored in it."""
    lat, back, up = np.meshgrid(np.arange(6.0, 56.0, 3.0), np.arange(-20.0, 51.0, 3.0), np.arange(-30.0, 31.0, 3.0),
                                indexing="ij")  # fmt: skip
    a = np.clip(_sample_lps(grid, grid.hu, frame.points(frame.mid, lat, back, up)), -300, 500)
    b = np.clip(_sample_lps(grid, grid.hu, frame.points(frame.mid, -lat, back, up)), -300, 500)
    if a.std() < 1e-3 or b.std() < 1e-3:
        return 0.0
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _head_section(grid: _WorkGrid, right: np.ndarray, left: np.ndarray) -> Optional[Dict[str, float]]:
    """The body cross-section that holds both globes (axial slice between them): its width along the
    globes' line, the offset of its centre of mass from the plane bisecting the globes, and whether it
    touches the image's side (a field narrower than the head: width and centre are then unknown)."""
    shape = np.array(grid.hu.shape)
    za, ya, xa = np.clip(np.round(grid.to_zyx(right)).astype(int), 0, shape - 1)
    zb, yb, xb = np.clip(np.round(grid.to_zyx(left)).astype(int), 0, shape - 1)
    z = (za + zb) // 2
    sections, _ = ndimage.label(grid.body[z])
    # The section is the one holding the globes; the point between them can fall on the nose, which a
    # slice may show as a separate island in front of the face.
    own_a, own_b = sections[ya, xa], sections[yb, xb]
    own = own_a or own_b or sections[(ya + yb) // 2, (xa + xb) // 2]
    if own == 0 or (own_a and own_b and own_a != own_b):
        return None
    yx = np.argwhere(sections == own)
    touches = bool(yx[:, 1].min() == 0 or yx[:, 1].max() == shape[2] - 1)
    lps = grid.origin[:2] + yx[:, ::-1] * grid.spacing
    frame = _Frame.of(right, left)
    along = (lps - frame.mid[:2]) @ frame.lateral[:2] / max(float(np.linalg.norm(frame.lateral[:2])), 1e-6)
    return {"width": float(along.max() - along.min() + grid.spacing), "offset": float(abs(along.mean())),
            "touches_side": touches}  # fmt: skip


def _height_below_top(grid: _WorkGrid, frame: _Frame) -> Tuple[float, bool]:
    """Height (mm) of body above the globes in a column around them, and whether the top of the body is
    in the image (the vertex) or cut by the field of view (then the height is only a lower bound)."""
    half = int(math.ceil(40.0 / grid.spacing))
    z, y, x = np.round(grid.to_zyx(frame.mid)).astype(int)
    z = int(np.clip(z, 0, grid.hu.shape[0] - 1))
    column = grid.body[:, max(0, y - half): y + half + 1, max(0, x - half): x + half + 1]
    filled = np.nonzero(column.reshape(column.shape[0], -1).any(axis=1))[0] if column.size else np.array([], int)
    if not len(filled) or filled.max() < z:
        return 0.0, True
    top = int(filled.max())
    in_fov = grid.in_fov[:, max(0, y - half): y + half + 1, max(0, x - half): x + half + 1]
    above = in_fov[top + 1: top + 3].reshape(-1) if top + 1 < grid.hu.shape[0] else np.array([], bool)
    vertex_seen = bool(above.size and above.mean() > 0.5)
    return float((top - z) * grid.spacing + grid.spacing / 2), vertex_seen


def _brain_above(grid: _WorkGrid, frame: _Frame) -> Optional[float]:
    """How much the soft tissue 25-45 mm above the globes and 10-60 mm behind them (the frontal lobes
    over the orbital roofs) looks like brain: the fraction of its soft-tissue voxels (-200..150 HU: bone
    and the air of the sinuses do not count) in the range of brain (10..55 HU), without the fat and the
    denser muscle of the face and neck. None where that region is mostly outside the image."""
    lat, back, up = np.meshgrid(np.arange(-24.0, 25.0, 4.0), np.arange(10.0, 61.0, 4.0), np.arange(25.0, 46.0, 4.0),
                                indexing="ij")  # fmt: skip
    pts = frame.points(frame.mid, lat, back, up)
    inside = _sample_lps(grid, grid.in_fov, pts, order=0, outside=0.0) > 0.5
    if inside.mean() < 0.5:
        return None
    hu = _sample_lps(grid, grid.hu, pts)[inside]
    soft = (hu > -200.0) & (hu < 150.0)
    if soft.mean() < 0.3:
        return 0.0
    return float(((hu > BRAIN_HU[0]) & (hu < BRAIN_HU[1])).sum() / soft.sum())


def _enclosed_brain_area(grid: _WorkGrid, z: int, y: int, x: int) -> float:
    """Area (mm2) of the region around voxel (z, y, x) of an axial slice that bone encloses, 0 where that
    region reaches the air outside the body (an open ring) or is not mostly brain-like tissue.

    Where the field of view cuts the head (a narrow field around the orbits), the region meets the image
    edge through the head rather than through air; the edge then closes the ring."""
    # What lies outside the field of view (the padding of the work grid beyond a cut, the corners outside
    # the reconstruction circle) closes the ring as the image edge does: it is not the air around the head.
    bone = ndimage.binary_closing((grid.hu[z] > RING_HU) | ~grid.in_fov[z], iterations=2, border_value=1)
    labels, _ = ndimage.label(~bone)
    if bone[y, x] or not labels[y, x]:
        return 0.0
    region = labels == labels[y, x]
    if (region & ~grid.body[z]).any():
        return 0.0
    hu = grid.hu[z][region]
    if ((hu > BRAIN_HU[0]) & (hu < BRAIN_HU[1])).mean() < 0.6:
        return 0.0
    return float(region.sum() * grid.spacing**2)


def _cranium_ring(grid: _WorkGrid, frame: _Frame) -> Optional[float]:
    """Area (mm2) enclosed by the skull 30-70 mm above the globes, around the point 30 mm behind them
    (the frontal lobes inside the vault): the largest over the levels in view and 6 mm clear of a cut of
    the field of view (:func:`_enclosed_brain_area`). Nothing in the face or the neck is enclosed by bone
    like this. A thin temporal
    squama can leave the ring open in the lowest levels on coarse scans, so no ring counts against the
    pair only where levels from 40 mm up were seen; else the result is None (unknown), as it is when no
    level is in view."""
    best, high_levels = 0.0, 0
    for up in np.arange(30.0, 71.0, 5.0):
        point = frame.points(frame.mid, np.zeros(1), np.full(1, 30.0), np.full(1, up))[0]
        z, y, x = np.round(grid.to_zyx(point)).astype(int)
        above = z + int(math.ceil(6.0 / grid.spacing))
        if not (0 <= z and above < grid.hu.shape[0] and 0 <= y < grid.hu.shape[1] and 0 <= x < grid.hu.shape[2]):
            continue
        if not (grid.in_fov[z, y, x] and grid.in_fov[above, y, x]):
            continue  # the last slices before a cut of the field of view are blurred into the air beyond
        best = max(best, _enclosed_brain_area(grid, z, y, x))
        high_levels += int(up >= 40.0)
    if best >= RING_AREA_MM2[1] or high_levels >= 2:
        return best
    return None


def _fov_fraction(grid: _WorkGrid, box: RegionBox) -> float:
    """Fraction of an orbit box that lies inside the input's field of view."""
    axes = [np.linspace(lo + 2.0, hi - 2.0, 8) for lo, hi in zip(box.min_lps, box.max_lps)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    return float(grid.inside_input(pts).mean())


@dataclass
class _PairEvaluation:
    right: _Candidate
    left: _Candidate
    checks: Dict[str, float]
    details: Dict[str, float]

    @property
    def confidence(self) -> float:
        return _geometric_mean(list(self.checks.values()))

    @property
    def weakest(self) -> str:
        return min(self.checks, key=lambda k: self.checks[k])


def _evaluate_pair(grid: _WorkGrid, right: _Candidate, left: _Candidate) -> _PairEvaluation:
    """Score one pair of candidates on every check of the module docstring (each 0..1)."""
    c = {"right": right.center, "left": left.center}
    frame = _Frame.of(c["right"], c["left"])
    d: Dict[str, float] = {}
    d["distance_mm"] = float(np.linalg.norm(c["left"] - c["right"]))
    d["radius_right_mm"], d["radius_left_mm"] = right.radius, left.radius
    d["hu_right"], d["hu_left"] = right.core_hu, left.core_hu
    d["fat_right"], d["fat_left"] = right.fat_fraction, left.fat_fraction
    d["compact_right"], d["compact_left"] = right.compactness, left.compactness
    globes = min(right.plausibility, left.plausibility)
    distance = _band(d["distance_mm"], PAIR_DISTANCE_MM[0] - 5.0, 52.0, 74.0, PAIR_DISTANCE_MM[1] + 8.0)

    d["mirror_r"] = _mirror_correlation(grid, frame)
    section = _head_section(grid, c["right"], c["left"])
    sym = [_ramp(d["mirror_r"], 0.2, 0.55), _ramp(abs(right.radius - left.radius), 6.0, 2.5),
           _ramp(abs(right.core_hu - left.core_hu), 45.0, 20.0)]
    head = []
    if section is None:
        head.append(0.0)
    else:
        d["head_width_mm"], d["midline_offset_mm"] = section["width"], section["offset"]
        if not section["touches_side"]:
            sym.append(_ramp(section["offset"], 30.0, 10.0))
            head.append(_band(section["width"], 80.0, 110.0, 210.0, 250.0))
        else:
            head.append(_ramp(section["width"], 250.0, 210.0))
    symmetry = _geometric_mean(sym)

    depths = [_front_depth(grid, frame, c[s]) for s in SIDES]
    d["front_right_mm"], d["front_left_mm"] = depths[0][0], depths[1][0]
    depth = min(0.0 if bone else _band(front, *FRONT_DEPTH_MM) for front, bone in depths)

    for s in SIDES:
        d[f"bone_{s}"], d[f"walls_{s}"], d[f"rays_{s}"] = _bony_orbit(grid, frame, c[s], s)
    walls = _ramp(min(d["walls_right"], d["walls_left"]), *WALLS_RAMP)

    height, vertex_seen = _height_below_top(grid, frame)
    d["height_mm"], d["vertex_in_view"] = height, float(vertex_seen)
    if vertex_seen:
        head.append(_band(height, *VERTEX_HEIGHT_MM))
    else:  # the field of view cuts the head above the globes: only the lower bound is known
        head.append(_ramp(height, VERTEX_HEIGHT_MM[3], VERTEX_HEIGHT_MM[2]))
    ring = _cranium_ring(grid, frame)
    if ring is not None:
        d["cranium_ring_mm2"] = ring
        head.append(_ramp(ring, *RING_AREA_MM2))
    brain = _brain_above(grid, frame)
    if brain is not None:
        d["brain_above"] = brain
        head.append(_ramp(brain, *BRAIN_RAMP))
    else:  # no cranium in view to vouch for the pair: the globes themselves must be convincing
        head.append(_ramp(globes, *GLOBES_WITHOUT_CRANIUM))
    cranium = _geometric_mean(head)

    fov = [_fov_fraction(grid, orbit_box(c[s], s)) for s in SIDES]
    d["fov_right"], d["fov_left"] = fov
    checks = {"globes": globes, "distance": distance, "symmetry": symmetry, "depth": depth, "orbit_walls": walls,
              "cranium": cranium, "field_of_view": _ramp(min(fov), *FOV_RAMP)}  # fmt: skip
    return _PairEvaluation(right, left, checks, d)


def _pairs(cands: List[_Candidate]) -> List[Tuple[_Candidate, _Candidate, float]]:
    """Pairs that pass the geometric gates, as (right, left, prior) sorted by the prior (best first)."""
    out = []
    top = cands[:40]
    for a in range(len(top)):
        for b in range(a + 1, len(top)):
            p, q = top[a], top[b]
            right, left = (p, q) if p.center[0] < q.center[0] else (q, p)
            delta = left.center - right.center
            dist = float(np.linalg.norm(delta))
            if not (PAIR_DISTANCE_MM[0] - 5.0 <= dist <= PAIR_DISTANCE_MM[1] + 8.0):
                continue
            if abs(delta[2]) > MAX_PAIR_DZ_MM or abs(delta[1]) > MAX_PAIR_DY_MM or delta[0] < 0.5 * dist:
                continue
            prior = (p.plausibility * q.plausibility
                     * _band(dist, PAIR_DISTANCE_MM[0] - 5.0, 52.0, 74.0, PAIR_DISTANCE_MM[1] + 8.0))  # fmt: skip
            out.append((right, left, prior))
    out.sort(key=lambda t: -t[2])
    return out


def _best_pair(cands: List[_Candidate], grid: _WorkGrid) -> Optional[_PairEvaluation]:
    """The pair of candidates that best passes the checks (None when no pair passes the gates)."""
    best = None
    for right, left, prior in _pairs(cands)[:MAX_PAIRS_EVALUATED]:
        if prior <= 0.0:
            break
        evaluation = _evaluate_pair(grid, right, left)
        if best is None or evaluation.confidence > best.confidence:
            best = evaluation
    return best


# -- refinement ----------------------------------------------------------------------------------------
def _fibonacci_directions(n: int) -> np.ndarray:
    k = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * k / n)
    azimuth = math.pi * (1 + 5**0.5) * k
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], axis=1)


def _fit_sphere(points: np.ndarray) -> Tuple[np.ndarray, float]:
    a = np.hstack([2 * points, np.ones((len(points), 1))])
    b = (points**2).sum(axis=1)
    sol, *_ = np.linalg.lstsq(a, b, rcond=None)
    center = sol[:3]
    return center, float(math.sqrt(max(sol[3] + center @ center, 0.0)))


def _refine_center(grid: _WorkGrid, center: np.ndarray) -> np.ndarray:
    """Sphere fit to the soft-tissue/fat boundary around a candidate, on a 1 mm patch of the original CT."""
    import SimpleITK as sitk

    half, step = 24, 1.0
    n = 2 * half + 1
    origin = center - half * step
    patch = sitk.Resample(
        grid.source, [n, n, n], sitk.Transform(), sitk.sitkLinear, tuple(origin), (step,) * 3,
        (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), -1000.0, sitk.sitkFloat32,
    )  # fmt: skip
    values = ndimage.gaussian_filter(sitk.GetArrayFromImage(patch), 0.8)
    directions = _fibonacci_directions(240)
    radii = np.arange(4.0, 20.01, 0.5)
    pts = half + directions[:, None, :] * radii[None, :, None] / step  # x, y, z in patch index units
    samples = ndimage.map_coordinates(values, [pts[..., 2], pts[..., 1], pts[..., 0]], order=1)
    threshold = -40.0
    below = samples < threshold
    first = np.argmax(below, axis=1)
    hit = below.any(axis=1) & (first > 0)
    if hit.sum() < 30:
        return center
    rows = np.nonzero(hit)[0]
    j = first[rows]
    v0, v1 = samples[rows, j - 1], samples[rows, j]
    frac = np.clip((v0 - threshold) / np.maximum(v0 - v1, 1e-3), 0, 1)
    boundary_r = radii[j - 1] + frac * (radii[j] - radii[j - 1])
    points = center + directions[rows] * boundary_r[:, None]
    fit_center, fit_radius = center, float(np.percentile(boundary_r, 40))
    inliers = np.abs(boundary_r - fit_radius) < 1.5
    for _ in range(5):
        if inliers.sum() < 20:
            return center
        fit_center, fit_radius = _fit_sphere(points[inliers])
        dist = np.linalg.norm(points - fit_center, axis=1)
        inliers = np.abs(dist - fit_radius) < max(1.0, 1.5 * np.median(np.abs(dist - fit_radius)[inliers]))
    if not (GLOBE_RADIUS_MM[0] <= fit_radius <= GLOBE_RADIUS_MM[1] + 2) or np.linalg.norm(fit_center - center) > 6:
        return center
    return fit_center


# -- public API ----------------------------------------------------------------------------------------
@dataclass
class OrbitSearchReport:
    """What the automatic search found and how sure it is.

    ``checks`` holds each check of the module docstring as a plausibility in 0..1 (1 = like a typical
    head), ``confidence`` their geometric mean. The search is accepted (``found``) when the confidence
    reaches :data:`MIN_CONFIDENCE` and no check is below :data:`MIN_CHECK`. ``globes`` are the refined
    centres of the best pair even when it was refused; ``details`` the measured values (mm, HU,
    fractions) behind the checks; ``missing`` (empty when found) says in words what was not found and
    ``message`` is the refusal sentence shown to the user.
    """

    found: bool
    confidence: float
    checks: Dict[str, float] = field(default_factory=dict)
    details: Dict[str, float] = field(default_factory=dict)
    globes: Dict[str, np.ndarray] = field(default_factory=dict)
    missing: str = ""
    candidates: int = 0
    threshold: float = MIN_CONFIDENCE

    @property
    def message(self) -> str:
        return "" if self.found else not_found_message(self.missing)

    def summary(self) -> str:
        """One line: outcome, confidence and every check (for logs and the measurement tables)."""
        checks = ", ".join(f"{k} {v:.2f}" for k, v in self.checks.items())
        outcome = "found" if self.found else "refused"
        return f"orbit search {outcome}: confidence {self.confidence:.2f} (minimum {self.threshold}); {checks}"


def not_found_message(missing: str) -> str:
    """The refusal sentence: what is missing, and how to go on."""
    return f"Could not find both orbits in this CT: {missing}; {NOT_FOUND_ADVICE}"


NOT_FOUND_MESSAGE = not_found_message("no pair of eyes was found")


def search_orbits(volume: Volume) -> OrbitSearchReport:
    """Run the automatic search and judge its result; never raises for an image without orbits."""
    return _search_on(_WorkGrid(volume))


def _search_on(grid: _WorkGrid) -> OrbitSearchReport:
    cands = _candidates(grid, None)
    best = _best_pair(cands, grid)
    if best is None:
        return OrbitSearchReport(False, 0.0, missing=_nothing_found(grid, cands), candidates=len(cands))
    centers = {"right": _refine_center(grid, best.right.center), "left": _refine_center(grid, best.left.center)}
    # The checks stay those of the candidates on the work grid (what the pair was chosen and judged
    # by); only the field of view is measured again, for the crops that will actually be cut.
    fov = [_fov_fraction(grid, orbit_box(centers[s], s)) for s in SIDES]
    best.details["fov_right"], best.details["fov_left"] = fov
    best.checks["field_of_view"] = _ramp(min(fov), *FOV_RAMP)
    confidence = best.confidence
    found = confidence >= MIN_CONFIDENCE and min(best.checks.values()) >= MIN_CHECK
    report = OrbitSearchReport(found, confidence, dict(best.checks), dict(best.details), centers,
                               candidates=len(cands))  # fmt: skip
    if not found:
        report.missing = _what_is_missing(grid, best, centers)
    return report


def _fov_cut_hint(grid: _WorkGrid) -> str:
    """Where the field of view cuts through the body (the orbits may lie beyond that edge)."""
    top, bottom = bool(np.isfinite(grid.z_limits[1])), bool(np.isfinite(grid.z_limits[0]))
    if top and bottom:
        return " (the scan cuts the body off at its top and its bottom, so the eyes may lie above or below it)"
    if top:
        return " (the scan stops with the body cut off at its top, so the eyes may lie above it)"
    if bottom:
        return " (the scan starts with the body cut off at its bottom, so the eyes may lie below it)"
    return ""


def _nothing_found(grid: _WorkGrid, cands: List[_Candidate]) -> str:
    if not grid.body.any():
        return "the image holds no body"
    if not cands:
        return "no eye was found in the field of view" + _fov_cut_hint(grid)
    return ("no two eyes were found side by side (45-80 mm apart); one orbit may lie outside the field of view"
            + _fov_cut_hint(grid))  # fmt: skip


def _what_is_missing(grid: _WorkGrid, best: _PairEvaluation, centers: Dict[str, np.ndarray]) -> str:
    d, weakest = best.details, best.weakest
    others = {k: v for k, v in best.checks.items() if k != "field_of_view"}
    if min(others.values()) < MIN_CHECK:  # not eyes: say why, even where the field also cuts the pair
        weakest = min(others, key=lambda k: others[k])
    elif best.checks["field_of_view"] < MIN_CHECK:
        weakest = "field_of_view"  # eyes in all but that: the scan does not cover them
    where = "the best pair of candidates ({})".format(
        " and ".join(f"{s} at LPS {', '.join(f'{v:.0f}' for v in centers[s])} mm" for s in SIDES))
    if weakest == "field_of_view":
        side = "right" if d["fov_right"] <= d["fov_left"] else "left"
        box = orbit_box(centers[side], side)
        edges = []
        for axis, (low, high) in enumerate((("right", "left"), ("front", "back"), ("bottom", "top"))):
            lo_pt, hi_pt = box.center_lps.copy(), box.center_lps.copy()
            lo_pt[axis], hi_pt[axis] = box.min_lps[axis] + 1.0, box.max_lps[axis] - 1.0
            inside = grid.inside_input(np.stack([lo_pt, hi_pt]))
            edges += [low] * (not inside[0]) + [high] * (not inside[1])
        cut = f" at its {' and '.join(edges)}" if edges else ""
        return (f"the field of view cuts through the {side} orbit{cut} (only {100 * d[f'fov_{side}']:.0f} % of its "
                "region is in the image)")  # fmt: skip
    if weakest == "globes":
        return (f"{where} does not look like two eyes (radius {d['radius_right_mm']:.0f}/{d['radius_left_mm']:.0f} mm, "
                f"content {d['hu_right']:.0f}/{d['hu_left']:.0f} HU, eyes ~11 mm and 0-30 HU)")  # fmt: skip
    if weakest == "distance":
        return f"{where} lies {d['distance_mm']:.0f} mm apart (eyes: 45-80 mm)"
    if weakest == "symmetry":
        return f"{where} is not symmetric about the head's midline"
    if weakest == "depth":
        front = max(d["front_right_mm"], d["front_left_mm"])
        return f"{where} does not lie just behind the skin of the face ({front:.0f} mm deep or behind bone)"
    if weakest == "orbit_walls":
        return f"{where} does not sit in bony orbits"
    return f"{where} does not lie below a cranium (brain above the eyes, the vertex 85-150 mm higher)"


def _find_globes_in(grid: _WorkGrid, region: RegionBox) -> Tuple[Dict[str, np.ndarray], float]:
    """Globes inside a user's region: the best pair when there is one, else one convincing globe."""
    cands = _candidates(grid, region)
    pair = _best_pair(cands, grid)
    if pair is not None:
        return {"right": _refine_center(grid, pair.right.center),
                "left": _refine_center(grid, pair.left.center)}, pair.confidence  # fmt: skip
    if cands:
        best = cands[0]
        if best.plausibility >= MIN_CHECK:  # inside a user ROI one convincing globe is enough
            side = _side_of(grid, best.center)
            return {side: _refine_center(grid, best.center)}, best.plausibility
    return {}, 0.0


def _head_midline_x(grid: _WorkGrid, z_range: Optional[Tuple[float, float]] = None) -> float:
    """LPS x of the head's centre of mass (body voxels), optionally within a z range."""
    body = grid.body & (grid.hu > AIR_HU)
    if z_range is not None:
        z = grid.origin[2] + np.arange(body.shape[0]) * grid.spacing
        rows = (z >= z_range[0]) & (z <= z_range[1])
        if rows.any() and body[rows].any():
            body = body[rows]
    if not body.any():
        return float(grid.origin[0] + (grid.hu.shape[2] - 1) * grid.spacing / 2)
    x_counts = body.sum(axis=(0, 1))
    x = grid.origin[0] + np.arange(len(x_counts)) * grid.spacing
    return float((x_counts * x).sum() / x_counts.sum())


def _side_of(grid: _WorkGrid, point_lps: np.ndarray) -> str:
    return "left" if point_lps[0] > _head_midline_x(grid) else "right"


def orbit_box(globe_center_lps: Point, side: str) -> RegionBox:
    """The region of one orbit: globe plus muscle cone to the apex (extents in the module docstring)."""
    side = _check_side(side)
    g = np.asarray(globe_center_lps, dtype=float)
    medial = 1.0 if side == "right" else -1.0  # right orbit: the midline is toward +x
    center = g + np.array([medial * BOX_MEDIAL_SHIFT_MM, (BOX_POSTERIOR_MM - BOX_ANTERIOR_MM) / 2, 0.0])
    return RegionBox(center, np.array([BOX_WIDTH_MM, BOX_ANTERIOR_MM + BOX_POSTERIOR_MM, BOX_HEIGHT_MM]))


def locate_orbits(volume: Volume) -> List[OrbitLocation]:
    """Find both orbits automatically; returns [right, left] (``score`` = the search's confidence).

    Raises :class:`OrbitNotFoundError` (with the :class:`OrbitSearchReport`) when the search is not
    sure it found two eyes in a head; the message says what is missing and how to go on.
    """
    report = search_orbits(volume)
    log.info(report.summary())
    if not report.found:
        raise OrbitNotFoundError(report.message, report)
    return [OrbitLocation(side, report.globes[side], orbit_box(report.globes[side], side), report.confidence)
            for side in SIDES]  # fmt: skip


def boxes_from_roi(center_lps: Point, size_mm: Point, volume: Volume) -> List[OrbitLocation]:
    """Orbit regions from a user ROI (axis-aligned LPS box), overriding the automatic search.

    An ROI holding both globes is split at the midline between them into a right and a left half. An
    ROI holding one orbit is returned whole for that side, the side being decided by where the ROI
    lies relative to the head's midline (centre of mass of the head), or by the globe found in it.
    """
    roi = RegionBox(np.asarray(center_lps, float), np.asarray(size_mm, float))
    grid = _WorkGrid(volume)
    globes, score = _find_globes_in(grid, roi)
    midline = _head_midline_x(grid, (roi.min_lps[2], roi.max_lps[2]))
    if set(globes) == set(SIDES):
        split_x = float((globes["right"][0] + globes["left"][0]) / 2)
    elif not globes and roi.min_lps[0] < midline - 20.0 and roi.max_lps[0] > midline + 20.0:
        split_x = midline  # wide ROI across the midline, no globe visible: trust the anatomy
    else:
        if globes:
            side = next(iter(globes))
        else:
            side = "left" if roi.center_lps[0] > midline else "right"
        return [OrbitLocation(side, globes.get(side), roi, score)]
    return [
        OrbitLocation(side, globes.get(side), _split_box(roi, split_x, side), score)
        for side in SIDES
    ]


def _split_box(roi: RegionBox, split_x: float, side: str) -> RegionBox:
    lo, hi = roi.min_lps.copy(), roi.max_lps.copy()
    if side == "right":
        hi[0] = min(hi[0], split_x)
    else:
        lo[0] = max(lo[0], split_x)
    if hi[0] <= lo[0]:
        raise InputError("The region of interest does not reach this side of the head; draw it around the orbits.")
    return RegionBox((lo + hi) / 2, hi - lo)


def _check_side(side: str) -> str:
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
