"""The pair checks of the orbit search: does a pair of globe candidates look like two eyes in a head?

Pairs 40..88 mm apart, side by side (|dz| <= 25, |dy| <= 30 mm, so heads rolled or turned by 20 degrees
still pair; :func:`_pairs`) are judged on seven checks, each a plausibility 0..1
(:func:`_evaluate_pair`; the report is :class:`headseg.locate.search.OrbitSearchReport`):

* ``globes``: the weaker globe's plausibility (:func:`headseg.locate.globes._globe_plausibility`);
* ``distance``: 1 for 52..74 mm (inter-pupillary distance 63 mm, 45..80 mm in almost all adults,
  anthropometric surveys);
* ``symmetry``: the face mirrored about the plane that bisects the pair correlates with itself
  (:func:`_mirror_correlation`), the globes match in size and content, the head's cross-section is
  centred on that plane (:func:`_head_section`);
* ``depth``: each globe centre lies 9..22 mm behind the air in front of the lids, no bone on the way
  (:func:`_front_depth`);
* ``orbit_walls``: rays to the roof, floor, walls and apex meet bone or sinus air (:func:`_bony_orbit`);
* ``cranium``: the position relative to the skull: 30..70 mm above the globes a ring of bone encloses
  brain-like tissue (:func:`_cranium_ring`), the soft tissue 25..45 mm above them is brain-like
  (:func:`_brain_above`), the vertex, where it is in view, lies 85..150 mm higher
  (:func:`_height_below_top`), a head-sized cross-section; where no cranium is in view the globes
  themselves must be convincing;
* ``field_of_view``: both orbit regions lie in the scanned field
  (:func:`headseg.locate.work_grid._fov_fraction`).

The confidence is their geometric mean; the pair with the highest wins (:func:`_best_pair`). The side is
decided by physical LPS x (the patient's left has the larger x), never by an array index.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from headseg.locate.boxes import SIDES, orbit_box
from headseg.locate.globes import BONE_HU, MAX_FRONT_MM, _band, _Candidate, _geometric_mean, _ramp
from headseg.locate.work_grid import AIR_HU, _fov_fraction, _WorkGrid

PAIR_DISTANCE_MM = (45.0, 80.0)
MAX_PAIR_DZ_MM = 25.0  # a head rolled by 20 degrees puts one globe ~22 mm above the other
MAX_PAIR_DY_MM = 30.0  # ... and turned by 20 degrees ~22 mm in front of it
MAX_PAIRS_EVALUATED = 20

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
    """Score one pair of candidates on every check of the module docstring (each 0..1); ``details`` holds
    the measured values behind them."""
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

    symmetry, head = _symmetry_check(grid, frame, right, left, d)

    depths = [_front_depth(grid, frame, c[s]) for s in SIDES]
    d["front_right_mm"], d["front_left_mm"] = depths[0][0], depths[1][0]
    depth = min(0.0 if bone else _band(front, *FRONT_DEPTH_MM) for front, bone in depths)

    for s in SIDES:
        d[f"bone_{s}"], d[f"walls_{s}"], d[f"rays_{s}"] = _bony_orbit(grid, frame, c[s], s)
    walls = _ramp(min(d["walls_right"], d["walls_left"]), *WALLS_RAMP)

    cranium = _cranium_check(grid, frame, head, globes, d)

    fov = [_fov_fraction(grid, orbit_box(c[s], s)) for s in SIDES]
    d["fov_right"], d["fov_left"] = fov
    checks = {"globes": globes, "distance": distance, "symmetry": symmetry, "depth": depth, "orbit_walls": walls,
              "cranium": cranium, "field_of_view": _ramp(min(fov), *FOV_RAMP)}  # fmt: skip
    return _PairEvaluation(right, left, checks, d)


def _symmetry_check(grid: _WorkGrid, frame: _Frame, right: _Candidate, left: _Candidate,
                    d: Dict[str, float]) -> Tuple[float, List[float]]:
    """The ``symmetry`` check (mirror correlation, matching globes, a head centred on the bisecting
    plane), and the head-size evidence of the same cross-section for the ``cranium`` check; the measured
    values go into ``d``."""
    d["mirror_r"] = _mirror_correlation(grid, frame)
    section = _head_section(grid, right.center, left.center)
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
    return _geometric_mean(sym), head


def _cranium_check(grid: _WorkGrid, frame: _Frame, head: List[float], globes: float, d: Dict[str, float]) -> float:
    """The ``cranium`` check: ``head`` (the cross-section's evidence) with the vertex, the ring of skull and
    the brain above the globes; where no brain is in view, the ``globes`` check must be convincing. The
    measured values go into ``d``."""
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
    return _geometric_mean(head)


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
