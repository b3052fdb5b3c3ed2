"""Globe candidates on the working grid, their plausibility as a globe, and the refinement of a centre.

A globe is a ball of soft-tissue density (vitreous 0..+20 HU, lens ~+100) about 24 mm across,
surrounded by orbital fat and covered in front only by the lids. On the working grid
(:mod:`headseg.locate.work_grid`):

* **Candidates** (:func:`_candidates`): the Euclidean distance transform of ``soft`` peaks at the centre
  of a ball with its radius. Candidates are local maxima with a radius of 6..17 mm, at most 40 mm below
  the skin (distance to the air outside the body), from which the air in front of the face (-y) is
  reached within 36 mm without crossing bone (> 250 HU), with no bone within 30 mm beyond that air
  (:func:`_open_to_the_front`).
* **Plausibility as a globe** (:func:`_globe_plausibility`, 0..1, computed once per candidate) combines
  its radius (1 for 9..14 mm), its mean HU within 6 mm (vitreous: 1 for -15..25 HU, 0 above 40, where
  muscle and glands lie), the fraction of fat (-250..-30 HU) in a shell 14..20 mm from it (orbital fat)
  and how compact its core is (the voxels within 4 mm of the peak radius form a small ball for a globe,
  a ridge or sheet for tubes).
* **Refinement** (:func:`_refine_center`): each centre of the chosen pair is refined on a 1 mm patch of
  the original CT: rays from the candidate find the soft-tissue/fat boundary, and a sphere is fitted to
  the boundary points, trimming outliers where muscles, the nerve or the lids touch the globe.

The plausibility ramps (:func:`_ramp`, :func:`_band`, :func:`_geometric_mean`) live here, the lowest
module that scores anything; the pair checks (:mod:`headseg.locate.pairs`) use them too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from headseg.locate.boxes import RegionBox
from headseg.locate.work_grid import _distance_inside, _WorkGrid

BONE_HU = 250.0
MAX_FRONT_MM = 36.0
AIR_IN_FRONT_MM = 30.0  # no bone this far beyond the air in front of a globe (a sinus has its front wall)
GLOBE_RADIUS_MM = (6.0, 17.0)
SHELL_MM = (14.0, 20.0)
MAX_DEPTH_MM = 40.0
MIN_FAT_FRACTION = 0.1
MIN_COMPACTNESS = 0.1
VITREOUS_MAX_HU = 25.0
MAX_CORE_HU = 45.0
MAX_CANDIDATES = 200


# -- plausibility ramps ------------------------------------------------------------------------------------
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


# -- candidates --------------------------------------------------------------------------------------------
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


def _globe_plausibility(c: _Candidate) -> float:
    """How much one candidate looks like a globe: size, vitreous content, fat around, ball shape (0..1)."""
    return _geometric_mean([
        _band(c.radius, GLOBE_RADIUS_MM[0], 9.0, 14.0, GLOBE_RADIUS_MM[1] + 0.5),
        _band(c.core_hu, -50.0, -15.0, VITREOUS_MAX_HU, MAX_CORE_HU - 5.0),
        _ramp(c.fat_fraction, 0.05, 0.18),
        _ramp(c.compactness, 0.05, 0.2),
    ])  # fmt: skip


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
