"""Automatic localisation of both orbits on a head CT, and the per-orbit crop grids of the orbit model.

Seed paper 000 (section 2.B) crops a fixed-size region per orbit from the axial slices that cover the
muscles and the optic nerve. Here that crop is automated:

1. **Find the globes.** The CT is averaged into ~2 mm blocks (``BinShrink``) and resampled onto an
   axis-aligned LPS grid of 2 mm voxels (coarser for very large fields, at most ~8 M voxels), so every
   later step works in patient space whatever the input's spacing or orientation. A globe is a ball of
   soft-tissue density (vitreous 0..+20 HU, lens ~+100) about 24 mm across, surrounded by orbital fat
   and covered in front only by the lids. On the working grid:

   * ``soft`` = -30 < HU < 160; the Euclidean distance transform of ``soft`` peaks at the centre of a
     ball with its radius. Candidates are local maxima with a radius of 6..17 mm, at most 40 mm below
     the skin (distance to the air outside the body), from which the air in front of the face
     (-y) is reached within 36 mm without crossing bone (> 250 HU).
   * each candidate is scored by the fraction of fat (-250..-30 HU) in a shell 14..20 mm from it
     (orbital fat; brain and most soft tissue have little), by how compact its core is (the voxels
     within 4 mm of the peak radius form a small ball for a globe, a ridge or sheet for tubes and
     slabs), by its mean HU within 6 mm (vitreous is near water; muscle and glands are denser) and by
     its radius (~11 mm).
   * the best PAIR wins: 45..80 mm apart (inter-pupillary distance, ANATOMY_FACTS.md), at similar
     height (|dz| <= 15 mm) and depth (|dy| <= 20 mm), scored by both candidates' scores and the
     closeness of their distance to 63 mm; it must lie in one axial body cross-section of head width
     (80..230 mm, centred within 20 mm of the pair) with at most 150 mm of body above it (the vertex),
     which rejects look-alikes in the neck, shoulders and chest of head-and-neck scans.
   * each centre is refined on a 1 mm patch of the original CT: rays from the candidate find the
     soft-tissue/fat boundary, and a sphere is fitted to the boundary points, trimming outliers where
     muscles, the nerve or the lids touch the globe.

   The side is decided by physical LPS x (the patient's left has the larger x), never by an array index.
   No pair -> :class:`OrbitNotFoundError` asking for a region of interest.

   Checked on the synthetic phantoms (tests: < 3 mm, usually < 1.2 mm) and, visually, on the real but
   coarse (3.8-5 mm in-plane) head-and-neck CTs of shared/data/openkbp: pairs were reported in 89 of
   223 scans, all but one on the eyes (the exception: a pair of neck structures in a scan cut
   above the eyes); scans whose field of view holds no eyes raised the error. Thresholds were tuned
   on the train/validation scans; the 20 test scans gave 6 pairs, all correct. Thin-slice orbit CTs,
   the real target, were not available for testing.
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

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from headseg.errors import InputError
from headseg.geometry import Volume

__all__ = [
    "OrbitNotFoundError",
    "RegionBox",
    "OrbitLocation",
    "locate_orbits",
    "find_globes",
    "orbit_box",
    "boxes_from_roi",
    "orbit_crop_grid",
    "NOT_FOUND_MESSAGE",
]

NOT_FOUND_MESSAGE = (
    "Could not find the orbits in this CT (is it a head CT covering the eyes?). "
    "Draw a region of interest around the orbits and run again."
)

WORK_SPACING_MM = 2.0
MAX_WORK_VOXELS = 8.0e6
SOFT_HU = (-30.0, 160.0)
FAT_HU = (-250.0, -30.0)
AIR_HU = -400.0
BONE_HU = 250.0
MAX_FRONT_MM = 36.0
GLOBE_RADIUS_MM = (6.0, 17.0)
SHELL_MM = (14.0, 20.0)
MAX_DEPTH_MM = 40.0
PAIR_DISTANCE_MM = (45.0, 80.0)
MAX_PAIR_DZ_MM = 15.0
MAX_PAIR_DY_MM = 20.0
HEAD_WIDTH_MM = (80.0, 230.0)
MAX_MIDLINE_OFFSET_MM = 20.0
MIN_PAIR_SCORE = 0.0
MAX_BODY_ABOVE_GLOBES_MM = 150.0
MIN_FAT_FRACTION = 0.1
MIN_COMPACTNESS = 0.1
VITREOUS_MAX_HU = 25.0
MAX_CORE_HU = 45.0
MAX_CANDIDATES = 200

# orbit_box extents relative to the globe centre (mm); "medial" is toward the midline.
BOX_ANTERIOR_MM = 16.0
BOX_POSTERIOR_MM = 44.0
BOX_WIDTH_MM = 50.0
BOX_MEDIAL_SHIFT_MM = 5.0
BOX_HEIGHT_MM = 44.0

SIDES = ("right", "left")


class OrbitNotFoundError(InputError):
    """No pair of globes was found; the user should draw a region of interest around the orbits."""


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

    def contains(self, point_lps: Sequence[float]) -> bool:
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
    center: np.ndarray  # LPS mm
    radius: float
    fat_fraction: float
    compactness: float
    core_hu: float

    @property
    def score(self) -> float:
        dense = max(0.0, self.core_hu - VITREOUS_MAX_HU) / 15.0  # muscle, glands: not vitreous
        small = max(0.0, 8.0 - self.radius) / 4.0
        return self.fat_fraction + 0.5 * self.compactness - 0.03 * abs(self.radius - 11.0) - dense - small


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
        self.soft = (self.hu > SOFT_HU[0]) & (self.hu < SOFT_HU[1])
        self.fat = (self.hu > FAT_HU[0]) & (self.hu <= FAT_HU[1])
        air = self.hu < AIR_HU
        labels, _ = ndimage.label(air)
        border = np.unique(
            np.concatenate([labels[[0, -1]].ravel(), labels[:, [0, -1]].ravel(), labels[:, :, [0, -1]].ravel()])
        )
        self.body = ~np.isin(labels, border[border > 0])
        self.depth = _distance_inside(self.body, spacing_mm)  # mm below the skin

    def to_lps(self, zyx: np.ndarray) -> np.ndarray:
        zyx = np.atleast_2d(zyx).astype(float)
        return self.origin + zyx[:, ::-1] * self.spacing

    def to_zyx(self, lps: Sequence[float]) -> np.ndarray:
        return ((np.asarray(lps, float) - self.origin) / self.spacing)[::-1]


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
    found.sort(key=lambda c: -c.score)
    kept: List[_Candidate] = []  # non-maximum suppression: one candidate per 10 mm
    for c in found[:MAX_CANDIDATES]:
        if all(np.linalg.norm(c.center - k.center) > 10.0 for k in kept):
            kept.append(c)
    return kept


def _open_to_the_front(grid: _WorkGrid, zyx: np.ndarray) -> np.ndarray:
    """True where, going anteriorly (-y in LPS), the air outside the face is reached within
    MAX_FRONT_MM without crossing bone: the globe is covered only by the lids. Rejects look-alikes
    in the neck, the face and the cranium, which lie deeper or behind bone."""
    steps = np.arange(1, int(math.ceil(MAX_FRONT_MM / grid.spacing)) + 1)
    offsets = np.stack([np.zeros_like(steps), -steps, np.zeros_like(steps)], axis=1)
    body, valid = _sample_offsets(grid.body, zyx, offsets)
    hu, _ = _sample_offsets(grid.hu, zyx, offsets)
    outside = ~body & valid
    reached = outside.any(axis=1)
    first = np.argmax(outside, axis=1)
    before = np.arange(len(steps))[None, :] < first[:, None]
    bone = ((hu > BONE_HU) & before).any(axis=1)
    return reached & ~bone


def _sample_offsets(array: np.ndarray, zyx: np.ndarray, offsets: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``array`` at every point + offset (shape [points, offsets]) and whether that was inside the array."""
    points = zyx[:, None, :] + offsets[None, :, :]
    shape = np.array(array.shape)
    valid = np.all((points >= 0) & (points < shape), axis=2)
    points = np.clip(points, 0, shape - 1)
    values = array[points[..., 0], points[..., 1], points[..., 2]]
    return values & valid if values.dtype == bool else values, valid


def _best_pair(cands: List[_Candidate], grid: _WorkGrid) -> Optional[Tuple[_Candidate, _Candidate, float]]:
    """The best-scoring plausible pair of globes (distance, level, depth, head-sized slice)."""
    best = None
    top = cands[:40]
    for a in range(len(top)):
        for b in range(a + 1, len(top)):
            p, q = top[a], top[b]
            d = p.center - q.center
            dist = float(np.linalg.norm(d))
            if not (PAIR_DISTANCE_MM[0] <= dist <= PAIR_DISTANCE_MM[1]):
                continue
            if abs(d[2]) > MAX_PAIR_DZ_MM or abs(d[1]) > MAX_PAIR_DY_MM:
                continue
            score = p.score + q.score - abs(dist - 63.0) / 30.0 - abs(d[2]) / 20.0 - abs(d[1]) / 30.0
            score -= abs(p.radius - q.radius) / 10.0
            if score < MIN_PAIR_SCORE:
                continue
            if (best is None or score > best[2]) and _in_head_sized_slice(grid, p.center, q.center):
                best = (p, q, score)
    return best


def _in_head_sized_slice(grid: _WorkGrid, a: np.ndarray, b: np.ndarray) -> bool:
    """Both points lie in one body cross-section of head width, roughly symmetric about its middle.

    Rejects symmetric look-alikes in the chest, shoulders and neck of head-and-neck scans (also by
    the height of body above them, :func:`_below_vertex`). When the
    cross-section touches the image's left or right edge (a field of view narrower than the head) only
    the upper width limit can be checked.
    """
    za, ya, xa = np.clip(np.round(grid.to_zyx(a)).astype(int), 0, np.array(grid.hu.shape) - 1)
    zb, yb, xb = np.clip(np.round(grid.to_zyx(b)).astype(int), 0, np.array(grid.hu.shape) - 1)
    z = (za + zb) // 2
    sections, _ = ndimage.label(grid.body[z])
    # The section is the one holding the globes; the point between them can fall on the nose, which a
    # slice may show as a separate island in front of the face.
    own_a, own_b = sections[ya, xa], sections[yb, xb]
    own = own_a or own_b or sections[(ya + yb) // 2, (xa + xb) // 2]
    if own == 0 or (own_a and own_b and own_a != own_b):
        return False
    columns = np.nonzero((sections == own).any(axis=0))[0]
    width = (columns[-1] - columns[0] + 1) * grid.spacing
    if width > HEAD_WIDTH_MM[1]:
        return False
    if columns[0] == 0 or columns[-1] == sections.shape[1] - 1:
        return True
    if not _below_vertex(grid, z, (ya + yb) // 2, (xa + xb) // 2):
        return False
    middle = grid.origin[0] + (columns[0] + columns[-1]) / 2 * grid.spacing
    return width >= HEAD_WIDTH_MM[0] and abs((a[0] + b[0]) / 2 - middle) <= MAX_MIDLINE_OFFSET_MM


def _below_vertex(grid: _WorkGrid, z: int, y: int, x: int) -> bool:
    """The eyes lie ~110-125 mm below the top of the head: more body above means this is the neck."""
    half = int(math.ceil(40.0 / grid.spacing))
    column = grid.body[:, max(0, y - half) : y + half + 1, max(0, x - half) : x + half + 1]
    filled = np.nonzero(column.reshape(column.shape[0], -1).any(axis=1))[0]
    return (filled.max() - z) * grid.spacing <= MAX_BODY_ABOVE_GLOBES_MM


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
def find_globes(volume: Volume, region: Optional[RegionBox] = None) -> Dict[str, np.ndarray]:
    """Centres (LPS mm) of the globes keyed by patient side; empty when none are found.

    With ``region`` only candidates inside it count, and a single globe may be returned.
    """
    grid = _WorkGrid(volume)
    return _find_globes_on(grid, region)[0]


def _find_globes_on(grid: _WorkGrid, region: Optional[RegionBox]) -> Tuple[Dict[str, np.ndarray], float]:
    cands = _candidates(grid, region)
    pair = _best_pair(cands, grid)
    if pair is not None:
        p, q, score = pair
        right, left = (p, q) if p.center[0] < q.center[0] else (q, p)
        return {"right": _refine_center(grid, right.center), "left": _refine_center(grid, left.center)}, score
    if region is not None and cands:
        best = cands[0]
        if best.score >= MIN_PAIR_SCORE / 2:  # inside a user ROI one convincing globe is enough
            side = _side_of(grid, best.center)
            return {side: _refine_center(grid, best.center)}, best.score
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


def orbit_box(globe_center_lps: Sequence[float], side: str) -> RegionBox:
    """The region of one orbit: globe plus muscle cone to the apex (extents in the module docstring)."""
    side = _check_side(side)
    g = np.asarray(globe_center_lps, dtype=float)
    medial = 1.0 if side == "right" else -1.0  # right orbit: the midline is toward +x
    center = g + np.array([medial * BOX_MEDIAL_SHIFT_MM, (BOX_POSTERIOR_MM - BOX_ANTERIOR_MM) / 2, 0.0])
    return RegionBox(center, (BOX_WIDTH_MM, BOX_ANTERIOR_MM + BOX_POSTERIOR_MM, BOX_HEIGHT_MM))


def locate_orbits(volume: Volume) -> List[OrbitLocation]:
    """Find both orbits automatically; returns [right, left]. Raises :class:`OrbitNotFoundError`."""
    grid = _WorkGrid(volume)
    globes, score = _find_globes_on(grid, None)
    if set(globes) != set(SIDES):
        raise OrbitNotFoundError(NOT_FOUND_MESSAGE)
    return [OrbitLocation(side, globes[side], orbit_box(globes[side], side), score) for side in SIDES]


def boxes_from_roi(center_lps: Sequence[float], size_mm: Sequence[float], volume: Volume) -> List[OrbitLocation]:
    """Orbit regions from a user ROI (axis-aligned LPS box), overriding the automatic search.

    An ROI holding both globes is split at the midline between them into a right and a left half. An
    ROI holding one orbit is returned whole for that side, the side being decided by where the ROI
    lies relative to the head's midline (centre of mass of the head), or by the globe found in it.
    """
    roi = RegionBox(center_lps, size_mm)
    grid = _WorkGrid(volume)
    globes, score = _find_globes_on(grid, roi)
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
