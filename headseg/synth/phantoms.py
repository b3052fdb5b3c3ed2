"""SYNTHETIC head-CT phantoms with ground-truth orbit labels.

Everything in this module is made up from geometric primitives. It is NOT the anatomy of any patient,
it is not derived from patient images, and it must never be used to judge clinical accuracy. It exists
for tests, demos and for training small demonstration models.

How a phantom is built, and why:

* The anatomy is defined as implicit shapes in PHYSICAL LPS millimetres (x to the patient's left,
  y posterior, z superior), then sampled at the voxel centres of whatever grid is asked for
  (spacing, orientation including oblique directions, origin, size). The same ``seed`` therefore gives
  the same anatomy on every grid, which lets tests compare results across spacings and orientations.
* Each structure is evaluated only inside its own bounding box (converted to an index box), and the
  coordinate arrays are broadcast sums, so an axis-aligned grid never allocates full 3D coordinate
  arrays for small structures. A default phantom (about 300 x 300 x 80 voxels) takes well under 3 s.
* Structures are painted in order onto a tissue map; a later structure overwrites an earlier one. The
  label priority where structures touch is therefore: globe > optic nerve > rectus muscles (among the
  recti the later painted wins: IR > MR > LR > SR) > orbital fat. Labels are cleared where a higher
  priority non-labelled structure (the globe) is painted.
* HU = per-tissue mean (jittered a little per phantom) -> Gaussian blur (CT point-spread, sigma
  ``blur_mm``) -> white Gaussian noise (``noise_hu``) -> int16.

Anatomy (published sizes and HU values; ``anatomy.py`` and ``imaging.py`` name the sources): head
ellipsoid with skin (+40 HU), subcutaneous fat (-100), a three-layer skull (cortical +1400 / diploe +600),
brain (+35); a facial block with ethmoid cells, nasal cavity and maxillary sinuses (air in thin bone); per
side a pear-shaped bony orbit (+900 HU walls) opening anteriorly along an axis ~22 deg from the
midsagittal plane, filled with orbital fat (-100); the globe (axial length ~24 mm, sclera +50, vitreous
+10) with an anterior lens (+100) and a closed-lid cap; the four recti (+45 HU) as bands from the annulus
of Zinn at the apex to insertions in front of the globe equator, belly thickness 3.4-4.3 mm; the optic
nerve (+30 HU, ~4 mm, gently curved) from the back of the globe to the apex. The LEFT orbit's muscles
are thicker (``left_scale``, like thyroid eye disease) and the two sides get independent small random
asymmetries. A dense bead (+3000 HU, like a radiographer's "L" marker) sits outside the skin on the
patient's LEFT (+x), so a left/right swap anywhere in a pipeline is detectable.

Label values follow docs/ARCHITECTURE.md (orbit combined map): right SR=1, LR=2, MR=3, IR=4, ON=5;
left SR=6, LR=7, MR=8, IR=9, ON=10 (patient sides).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from headseg.geometry import Volume

__all__ = [
    "Phantom",
    "Tissue",
    "TISSUE_HU",
    "ORBIT_LABELS",
    "make_head_phantom",
    "write_phantom_cases",
    "rotation_matrix_deg",
]

# Orbit combined label values, literal on purpose (see docs/ARCHITECTURE.md, "Label values").
ORBIT_LABELS: Dict[str, Dict[str, int]] = {
    "right": {"SR": 1, "LR": 2, "MR": 3, "IR": 4, "ON": 5},
    "left": {"SR": 6, "LR": 7, "MR": 8, "IR": 9, "ON": 10},
}


class Tissue:
    """Codes of the tissue map (``Phantom.tissues``); useful for tests that check HU per tissue."""

    AIR = 0
    SKIN = 1
    FAT = 2
    BONE_CORTICAL = 3
    BONE_DIPLOE = 4
    BRAIN = 5
    SOFT_TISSUE = 6
    ORBITAL_FAT = 7
    ORBITAL_BONE = 8
    SINUS_AIR = 9
    SCLERA = 10
    VITREOUS = 11
    LENS = 12
    MUSCLE = 13
    OPTIC_NERVE = 14
    MARKER = 15

    NAMES = (
        "air", "skin", "fat", "bone_cortical", "bone_diploe", "brain", "soft_tissue", "orbital_fat",
        "orbital_bone", "sinus_air", "sclera", "vitreous", "lens", "muscle", "optic_nerve", "marker",
    )  # fmt: skip
    GLOBE = (SCLERA, VITREOUS, LENS)


# Mean HU per tissue code (index = code); published ranges with their sources: imaging.HU_RANGES.
TISSUE_HU = np.array(
    [-1000, 40, -100, 1400, 600, 35, 40, -100, 900, -950, 50, 10, 100, 45, 30, 3000], dtype=np.float32
)

_MUSCLES = ("SR", "LR", "MR", "IR")  # painting order = priority order (later wins)
# Angular position of each rectus around the orbital axis (0 = lateral, 90 = superior).
_MUSCLE_ANGLE_DEG = {"LR": 0.0, "SR": 90.0, "MR": 180.0, "IR": 270.0}
# Belly thickness / insertion width in mm (normal adults, CT; IR > MR > SR > LR in size).
_MUSCLE_THICKNESS = {"SR": 3.8, "LR": 3.4, "MR": 4.0, "IR": 4.3}
_MUSCLE_WIDTH = {"SR": 9.2, "LR": 9.6, "MR": 9.4, "IR": 8.8}

DEFAULT_EXTENT_MM = (150.0, 150.0, 80.0)  # i, j, k extent of the default field of view
DEFAULT_FIELD_CENTER = (0.0, -33.0, 0.0)  # LPS mm: the front half of the head, eyes in the middle


@dataclass
class Phantom:
    """A synthetic head CT with its orbit label map, tissue map and the true landmark positions."""

    image: Volume  # int16 HU
    labels: Volume  # uint8, orbit combined label values
    tissues: Volume  # uint8, Tissue codes
    globe_centers_lps: Dict[str, np.ndarray]
    apex_lps: Dict[str, np.ndarray]
    marker_center_lps: np.ndarray
    metadata: Dict[str, object] = field(default_factory=dict)


def rotation_matrix_deg(angles_xyz: Sequence[float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees, right-handed, LPS axes): R = Rz @ Ry @ Rx."""
    ax, ay, az = (math.radians(float(a)) for a in angles_xyz)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


class _Painter:
    """Evaluates shapes defined in anatomical coordinates on a sub-box of the voxel grid.

    Anatomical coordinates = LPS before the optional head rotation (about the head centre), so the
    anatomy code can assume an upright head.
    """

    def __init__(self, shape_kji, spacing, origin, direction, rotation, rotation_center):
        self.shape = tuple(int(n) for n in shape_kji)
        index_to_lps = np.asarray(direction, float) @ np.diag(spacing)
        rot_t = np.asarray(rotation, float).T
        c = np.asarray(rotation_center, float)
        self.lin = rot_t @ index_to_lps  # anat = lin @ ijk + off
        self.off = rot_t @ (np.asarray(origin, float) - c) + c
        self.lin_inv = np.linalg.inv(self.lin)
        self.tissue = np.zeros(self.shape, np.uint8)
        self.labels = np.zeros(self.shape, np.uint8)

    def region(self, low: ArrayLike, high: ArrayLike):
        """Index slices and anatomical coordinates (broadcast arrays) of the voxels in an anat box."""
        lo, hi = np.asarray(low, float), np.asarray(high, float)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        ijk = (self.lin_inv @ (corners - self.off).T).T
        first = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        last = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, self.shape[::-1])
        if np.any(last <= first):
            return None
        slices = (slice(first[2], last[2]), slice(first[1], last[1]), slice(first[0], last[0]))
        idx = [np.arange(first[n], last[n], dtype=np.float32) for n in range(3)]
        shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]
        coords = []
        for row in range(3):
            value: Any = np.float32(self.off[row])
            for n in range(3):
                if self.lin[row, n] != 0.0:
                    value = value + np.float32(self.lin[row, n]) * idx[n].reshape(shapes[n])
            coords.append(np.asarray(value, dtype=np.float32))
        sub_shape = tuple(s.stop - s.start for s in slices)
        return slices, coords, sub_shape

    def paint_flat(self, slices, flat_index: np.ndarray, tissue: int, label: Optional[int] = None) -> None:
        """Paint voxels given by flat indices into the C-ordered sub-box ``slices``."""
        sub_shape = tuple(s.stop - s.start for s in slices)
        kji = np.unravel_index(flat_index, sub_shape)
        kji = tuple(idx + s.start for idx, s in zip(kji, slices))
        self.tissue[kji] = tissue
        if label is not None:
            self.labels[kji] = label

    def paint(self, slices, mask, tissue: int, label: Optional[int] = None, sub_shape=None) -> None:
        mask = np.broadcast_to(mask, sub_shape) if sub_shape is not None else mask
        self.tissue[slices][mask] = tissue
        if label is not None:
            self.labels[slices][mask] = label


def _draw(rng: np.random.Generator, variation: float, sd: float) -> float:
    return float(rng.normal(0.0, sd * variation))


def _orbit_frame(side_sign: float, axis_deg: float, elevation_deg: float) -> Tuple[np.ndarray, ...]:
    """Unit vectors (u anterior along the orbital axis, e_h lateral, e_v superior) for one orbit."""
    a, b = math.radians(axis_deg), math.radians(elevation_deg)
    u = np.array([side_sign * math.sin(a) * math.cos(b), -math.cos(a) * math.cos(b), math.sin(b)])
    e_v = np.array([0.0, 0.0, 1.0]) - u[2] * u
    e_v /= np.linalg.norm(e_v)
    e_h = np.cross(e_v, u)
    if e_h[0] * side_sign < 0:  # lateral = away from the midline
        e_h = -e_h
    return u, e_h, e_v


def _local(coords, origin, u, e_h, e_v):
    """Orbit-local coordinates (t along the axis, h lateral, v superior) of broadcast coords."""
    dx, dy, dz = (coords[n] - np.float32(origin[n]) for n in range(3))
    t = dx * np.float32(u[0]) + dy * np.float32(u[1]) + dz * np.float32(u[2])
    h = dx * np.float32(e_h[0]) + dy * np.float32(e_h[1]) + dz * np.float32(e_h[2])
    v = dx * np.float32(e_v[0]) + dy * np.float32(e_v[1]) + dz * np.float32(e_v[2])
    return t, h, v


def _draw_anatomy(rng: np.random.Generator, variation: float, left_scale: float) -> Dict[str, Any]:
    """All random shape parameters of one phantom (mm and degrees, anatomical frame)."""
    head = {
        "a": 72.0 * (1 + _draw(rng, variation, 0.03)),
        "b": 97.0 * (1 + _draw(rng, variation, 0.03)),
        "c": 120.0,
        "zc": 10.0,
    }
    ipd = float(np.clip(63.0 + _draw(rng, variation, 2.5), 54.0, 72.0))
    globe_y = -71.0 + _draw(rng, variation, 1.2)
    globe_z = _draw(rng, variation, 1.5)
    axis_deg = 22.0 + _draw(rng, variation, 1.5)
    sides = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        scale = left_scale if side == "left" else 1.0
        muscles = {}
        for name in _MUSCLES:
            muscles[name] = {
                "thickness": max(2.0, _MUSCLE_THICKNESS[name] + _draw(rng, variation, 0.3)) * scale,
                "width": max(6.0, _MUSCLE_WIDTH[name] + _draw(rng, variation, 0.5)) * (1 + 0.4 * (scale - 1)),
                "angle": _MUSCLE_ANGLE_DEG[name] + _draw(rng, variation, 4.0),
            }
        sides[side] = {
            "sign": sign,
            "globe_center": np.array(
                [sign * ipd / 2 + _draw(rng, variation, 0.4), globe_y + _draw(rng, variation, 0.5),
                 globe_z + _draw(rng, variation, 0.5)]
            ),  # fmt: skip
            "globe_eq_radius": 11.6 + _draw(rng, variation, 0.25),
            "globe_axial_radius": 12.0 + _draw(rng, variation, 0.35),
            "axis_deg": axis_deg + _draw(rng, variation, 0.7),
            "elevation_deg": -3.0 + _draw(rng, variation, 1.0),
            "apex_distance": 37.5 + _draw(rng, variation, 1.5),
            "muscles": muscles,
            "nerve_radius_globe": 2.15 + _draw(rng, variation, 0.12),
            "nerve_radius_apex": 1.8 + _draw(rng, variation, 0.1),
            "nerve_sag": (1.5 + _draw(rng, variation, 0.4), -0.8 + _draw(rng, variation, 0.4)),
        }
    hu_jitter = np.array([_draw(rng, variation, 3.0) for _ in TISSUE_HU], dtype=np.float32)
    hu_jitter[[Tissue.AIR, Tissue.MARKER]] = 0.0
    return {"head": head, "ipd": ipd, "sides": sides, "hu_jitter": hu_jitter}


def _paint_head(p: _Painter, head: Dict[str, float]) -> Dict[str, Any]:
    """Skin, fat, skull, brain and the facial block; returns the depth-below-skin helper."""
    a, b, c, zc = head["a"], head["b"], head["c"], head["zc"]
    margin = 5.0
    reg = p.region((-a - margin, -b - margin, zc - c - margin), (a + margin, b + margin, zc + c + margin))
    if reg is None:
        return {}
    sl, (x, y, z), shp = reg
    zz = z - np.float32(zc)
    f = (x / a) ** 2 + (y / b) ** 2 + (zz / c) ** 2
    grad = 2.0 * np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2 + (zz / c**2) ** 2)
    depth = np.broadcast_to((1.0 - f) / np.maximum(grad, 1e-3), shp)  # approx. mm below the skin
    inside = depth >= 0
    facial = np.broadcast_to((y < -36.0) & (z < 19.0), shp)
    tissue = np.full(shp, Tissue.AIR, np.uint8)
    tissue[inside] = Tissue.SKIN
    tissue[depth >= 3.0] = Tissue.FAT
    tissue[depth >= 7.0] = Tissue.BONE_CORTICAL
    tissue[(depth >= 9.0) & (depth < 11.0)] = Tissue.BONE_DIPLOE
    deep = depth >= 13.0
    tissue[deep & ~facial] = Tissue.BRAIN
    tissue[deep & facial] = Tissue.SOFT_TISSUE
    # Anterior cranial fossa floor (orbital roofs join it) and the plate behind the orbits.
    roof = np.broadcast_to((z >= 19.0) & (z < 22.0) & (y < -33.0), shp) & (depth >= 7.0)
    back = np.broadcast_to((y >= -35.0) & (y < -31.0) & (z < 22.0), shp) & (depth >= 7.0)
    tissue[roof | back] = Tissue.BONE_CORTICAL
    p.tissue[sl] = tissue
    return {"a": a, "b": b, "c": c, "zc": zc}


def _head_depth(coords, head) -> np.ndarray:
    x, y, z = coords
    zz = z - np.float32(head["zc"])
    a, b, c = head["a"], head["b"], head["c"]
    f = (x / a) ** 2 + (y / b) ** 2 + (zz / c) ** 2
    grad = 2.0 * np.sqrt((x / a**2) ** 2 + (y / b**2) ** 2 + (zz / c**2) ** 2)
    return (1.0 - f) / np.maximum(grad, 1e-3)


def _paint_sinuses_and_nose(p: _Painter, head) -> None:
    # Ethmoid air cells between the orbits: air with thin bony septa every ~6 mm.
    reg = p.region((-12, -84, -12), (12, -36, 18))
    if reg is not None:
        sl, (x, y, z), shp = reg
        box = (np.abs(x / 12.0) ** 4 + np.abs((y + 60.0) / 24.0) ** 4 + np.abs((z - 3.0) / 15.0) ** 4) <= 1
        septa = np.minimum(np.abs(np.sin(np.pi * x / 6.0)), np.abs(np.sin(np.pi * (y + 1.0) / 7.0))) < 0.15
        p.paint(sl, box & ~septa, Tissue.SINUS_AIR, sub_shape=shp)
        p.paint(sl, box & septa, Tissue.ORBITAL_BONE, sub_shape=shp)
    # Nasal cavity with its septum.
    reg = p.region((-11, -88, -45), (11, -38, -12))
    if reg is not None:
        sl, (x, y, z), shp = reg
        p.paint(sl, np.ones((1, 1, 1), bool), Tissue.SINUS_AIR, sub_shape=shp)
        p.paint(sl, np.abs(x) < 1.0, Tissue.ORBITAL_BONE, sub_shape=shp)
    # Maxillary sinuses under the orbit floors.
    for sign in (-1.0, 1.0):
        cx, cy, cz, ra, rb, rc = sign * 30.0, -58.0, -35.0, 13.0, 16.0, 14.0
        reg = p.region((cx - ra - 2, cy - rb - 2, cz - rc - 2), (cx + ra + 2, cy + rb + 2, cz + rc + 2))
        if reg is None:
            continue
        sl, (x, y, z), shp = reg
        e_out = ((x - cx) / (ra + 1.5)) ** 2 + ((y - cy) / (rb + 1.5)) ** 2 + ((z - cz) / (rc + 1.5)) ** 2
        e_in = ((x - cx) / ra) ** 2 + ((y - cy) / rb) ** 2 + ((z - cz) / rc) ** 2
        p.paint(sl, e_out <= 1, Tissue.ORBITAL_BONE, sub_shape=shp)
        p.paint(sl, e_in <= 1, Tissue.SINUS_AIR, sub_shape=shp)
    # A simple nose: a soft-tissue wedge in front of the face, only where there is air.
    reg = p.region((-15, -110, -45), (15, -80, 4))
    if reg is not None:
        sl, (x, y, z), shp = reg
        ridge_y = -96.0 - 0.25 * (2.0 - z)  # the ridge leans forward going down
        behind = y - ridge_y
        wedge = (behind >= 0) & (np.abs(x) <= 0.7 * behind + 1.0) & (z <= 2.0) & (z >= -42.0)
        wedge = np.broadcast_to(wedge, shp) & (p.tissue[sl] == Tissue.AIR)
        p.paint(sl, wedge, Tissue.SKIN)


def _radius_profile(t, length: float, r_apex: float, r_rim: float):
    s = np.clip(t / np.float32(length), 0.0, 1.0)
    return np.float32(r_apex) + np.float32(r_rim - r_apex) * s**0.65


def _paint_orbit(p: _Painter, side: str, prm: Dict[str, Any], head) -> Dict[str, np.ndarray]:
    """Bony orbit, orbital fat, lids, recti, optic nerve and globe of one side.

    One long function on purpose: every part is painted in the orbit's own frame (axis ``u``, ``e_h``,
    ``e_v``) on one index box whose local coordinates are computed once, in the order that sets the
    label priority (later wins)."""
    sign = float(prm["sign"])
    globe = np.asarray(prm["globe_center"], float)
    u, e_h, e_v = _orbit_frame(sign, float(prm["axis_deg"]), float(prm["elevation_deg"]))
    apex_distance = float(prm["apex_distance"])
    apex = globe - apex_distance * u  # annulus of Zinn (muscle origin, end of the intraorbital nerve)
    cone_tip = apex - 3.0 * u
    rim_t = apex_distance + 6.0  # rim plane, measured from the cone tip
    r_apex, rim_h, rim_v, wall = 7.0, 20.0, 18.0, 2.5
    labels = ORBIT_LABELS[side]
    r_eq, r_ax = float(prm["globe_eq_radius"]), float(prm["globe_axial_radius"])

    # Bounding box of everything of this orbit (generous), in anatomical coordinates.
    pts = [cone_tip - 4 * u, globe + 20 * u, globe - np.array([0, 16, 0])]
    pts += [cone_tip + rim_t * u + (rim_h + wall + 2) * d for d in (e_h, -e_h, e_v, -e_v)]
    lo, hi = np.min(pts, axis=0) - 3.0, np.max(pts, axis=0) + 3.0
    reg = p.region(lo, hi)
    if reg is None:
        return {"apex": apex}
    sl, coords, shp = reg
    t, h, v = _local(coords, cone_tip, u, e_h, e_v)
    rh = _radius_profile(t, rim_t, r_apex, rim_h)
    rv = _radius_profile(t, rim_t, r_apex, rim_v)
    rho = np.sqrt((h / rh) ** 2 + (v / rv) ** 2)
    depth = np.broadcast_to(_head_depth(coords, head), shp)

    # Bony orbit (shell incl. a cap behind the tip), then its fat-filled cavity.
    shell = (t >= -wall) & (t <= rim_t) & (rho <= 1.0 + wall / rh)
    p.paint(sl, shell, Tissue.ORBITAL_BONE, sub_shape=shp)
    cavity = (t >= 0) & (t <= rim_t) & (rho <= 1.0)
    p.paint(sl, cavity, Tissue.ORBITAL_FAT, sub_shape=shp)
    # In front of the rim: preseptal fat under the skin.
    front = np.broadcast_to((t > rim_t) & (np.sqrt(h**2 + v**2) <= rim_h), shp) & (depth >= 3.0)
    p.paint(sl, front, Tissue.ORBITAL_FAT)

    # The globe has its own (small) box; a closed-lid cap of soft tissue covers the cornea.
    globe_reg = p.region(globe - r_ax - 5.0, globe + r_ax + 5.0)
    if globe_reg is not None:
        g_sl, g_coords, g_shp = globe_reg
        gx, gy, gz = (g_coords[n] - np.float32(globe[n]) for n in range(3))
        ellipsoid = (gx / r_eq) ** 2 + (gy / r_ax) ** 2 + (gz / r_eq) ** 2
        radial = np.sqrt(gx**2 + gy**2 + gz**2)
        cos_anterior = -gy / np.maximum(radial, 1e-3)
        lid = (ellipsoid > 1.0) & (radial <= r_ax + 3.5) & (cos_anterior >= math.cos(math.radians(45)))
        lid = np.broadcast_to(lid, g_shp) & (_head_depth(g_coords, head) >= 0)
        p.paint(g_sl, lid, Tissue.SOFT_TISSUE)

    # Muscles and nerve live near the axis; evaluate them only on those voxels (flat indices).
    t_globe = apex_distance
    t_end = t_globe + 7.0  # insertions ~7 mm in front of the equator
    max_thick = max(float(m["thickness"]) for m in prm["muscles"].values())
    tm_full = t - np.float32(3.0)  # measured from the apex (annulus of Zinn)
    near = (tm_full >= 0) & (tm_full <= t_end) & (h**2 + v**2 <= (r_eq + max_thick + 2.0) ** 2)
    flat = np.flatnonzero(np.broadcast_to(near, shp))
    tm, hh, vv = (np.broadcast_to(a, shp).ravel()[flat] for a in (tm_full, h, v))
    rad = np.sqrt(hh**2 + vv**2)
    phi = np.arctan2(vv, hh)

    # Recti: bands on a cone around the axis, from the annulus of Zinn to in front of the equator,
    # wrapping the globe at a constant offset after the equator.
    r_zinn = np.float32(4.5)
    s = np.clip(tm / np.float32(t_end), 0.0, 1.0)
    belly = np.clip(np.sin(np.pi * s**1.15), 0.0, 1.0) ** 0.6
    along = np.clip(tm - np.float32(t_globe), 0.0, None)
    toward_globe = np.clip(tm / np.float32(t_globe), 0.0, 1.0) ** 0.8
    for name in _MUSCLES:
        m = prm["muscles"][name]
        thick, width = float(m["thickness"]), float(m["width"])
        d = np.float32(0.8) + np.float32(thick - 0.8) * belly
        w = np.float32(4.0) + np.float32(width - 4.0) * s**0.7
        rc_globe = np.float32(r_eq + 0.5 * thick)
        behind = r_zinn + (rc_globe - r_zinn) * toward_globe
        wrapped = np.sqrt(np.maximum(rc_globe**2 - along**2, 0.0))
        rc = np.where(tm <= t_globe, behind, wrapped)
        offset = np.float32(math.radians(m["angle"]) - math.pi)
        dphi = (phi - offset) % np.float32(2 * math.pi) - np.float32(math.pi)
        inside = ((rad - rc) / (0.5 * d)) ** 2 + (rad * dphi / (0.5 * w)) ** 2 <= 1.0
        p.paint_flat(sl, flat[inside], Tissue.MUSCLE, labels[name])

    # Optic nerve: from the apex to just inside the back of the globe, gently curved.
    t_back = t_globe - r_ax + 1.0
    sag_h, sag_v = prm["nerve_sag"]
    q = np.clip(tm / np.float32(t_back), 0.0, 1.0)
    bow = np.sin(np.pi * q)
    radius = np.float32(prm["nerve_radius_apex"]) + np.float32(
        prm["nerve_radius_globe"] - prm["nerve_radius_apex"]
    ) * q
    nerve = (hh - np.float32(sag_h) * bow) ** 2 + (vv - np.float32(sag_v) * bow) ** 2 <= radius**2
    nerve &= tm <= t_back
    p.paint_flat(sl, flat[nerve], Tissue.OPTIC_NERVE, labels["ON"])

    # Globe: sclera rim (1 mm), vitreous, lens behind a 3 mm anterior chamber. Clears labels.
    if globe_reg is not None:
        p.paint(g_sl, ellipsoid <= 1.0, Tissue.SCLERA, 0, sub_shape=g_shp)
        inner = ((gx / (r_eq - 1)) ** 2 + (gy / (r_ax - 1)) ** 2 + (gz / (r_eq - 1)) ** 2) <= 1.0
        p.paint(g_sl, inner, Tissue.VITREOUS, sub_shape=g_shp)
        lens_cy = -(r_ax - 0.6 - 2.9 - 2.1)
        lens = (gx / 4.6) ** 2 + ((gy - np.float32(lens_cy)) / 2.1) ** 2 + (gz / 4.6) ** 2 <= 1.0
        p.paint(g_sl, lens, Tissue.LENS, sub_shape=g_shp)
    return {"apex": apex, "axis": u}


def _paint_marker(p: _Painter, head) -> np.ndarray:
    """Dense bead 5 mm outside the skin on the patient's LEFT (+x), anterolateral, at z = +10."""
    phi, z = math.radians(50.0), 10.0
    a, b, c, zc = head["a"], head["b"], head["c"], head["zc"]
    scale = math.sqrt(max(1.0 - ((z - zc) / c) ** 2, 0.0))
    surface = np.array([a * scale * math.sin(phi), -b * scale * math.cos(phi), z])
    normal = np.array([surface[0] / a**2, surface[1] / b**2, 0.0])
    center = surface + 5.0 * normal / np.linalg.norm(normal)
    radius = 2.5
    reg = p.region(center - radius - 1, center + radius + 1)
    if reg is not None:
        sl, (x, y, zz), shp = reg
        ball = (x - center[0]) ** 2 + (y - center[1]) ** 2 + (zz - center[2]) ** 2 <= radius**2
        p.paint(sl, ball, Tissue.MARKER, sub_shape=shp)
    return center


def _grid(spacing, shape, extent_mm, direction, origin, center):
    spacing = tuple(float(s) for s in spacing)
    direction = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise ValueError("direction must be an orthonormal 3x3 matrix (columns = i, j, k axes in LPS).")
    if shape is None:
        extent = DEFAULT_EXTENT_MM if extent_mm is None else tuple(float(e) for e in extent_mm)
        size_ijk = [max(1, int(round(e / s))) for e, s in zip(extent, spacing)]
        shape = (size_ijk[2], size_ijk[1], size_ijk[0])
    shape = tuple(int(n) for n in shape)
    if origin is None:
        half = np.array([(shape[2] - 1) * spacing[0], (shape[1] - 1) * spacing[1], (shape[0] - 1) * spacing[2]]) / 2
        origin = np.asarray(center, float) - direction @ half
    return spacing, shape, direction, tuple(float(o) for o in origin)


def make_head_phantom(
    seed: int = 0,
    spacing: Sequence[float] = (0.5, 0.5, 1.0),
    shape: Optional[Sequence[int]] = None,
    extent_mm: Optional[Sequence[float]] = None,
    direction: Optional[np.ndarray] = None,
    origin: Optional[Sequence[float]] = None,
    noise_hu: float = 10.0,
    variation: float = 1.0,
    left_scale: float = 1.25,
    blur_mm: float = 0.5,
    head_rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
    field_center_lps: Sequence[float] = DEFAULT_FIELD_CENTER,
) -> Phantom:
    """Make a SYNTHETIC head CT (int16 HU) with orbit ground truth; same seed = same anatomy on any grid.

    Args:
        seed: selects the random anatomy variation and the noise.
        spacing: voxel size in mm, (i, j, k) order.
        shape: array shape (k, j, i); when None it follows from ``extent_mm`` / ``spacing``.
        extent_mm: field of view in mm along (i, j, k); default 150 x 150 x 80 (front half of the head).
        direction: 3x3 orthonormal matrix, columns = i, j, k axes in LPS (oblique allowed); default identity.
        origin: LPS position of voxel (0, 0, 0); default centres the grid on ``field_center_lps``.
        noise_hu: standard deviation of the white noise added last (0 = noiseless).
        variation: scale of the random shape variation (0 = the mean anatomy for every seed).
        left_scale: thickness factor of the LEFT recti (>1 mimics thyroid eye disease on that side).
        blur_mm: Gaussian sigma of the simulated point-spread before noise (0 = none).
        head_rotation_deg: rotate the anatomy (about x, y, z in degrees, around the head centre) to mimic
            a patient not aligned with the scanner.
        field_center_lps: LPS point at the centre of the grid when ``origin`` is None.
    """
    rng = np.random.default_rng(seed)
    spacing, shape, direction, origin = _grid(spacing, shape, extent_mm, direction, origin, field_center_lps)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes (k, j, i), got {shape}.")
    anatomy = _draw_anatomy(rng, float(variation), float(left_scale))
    rotation = rotation_matrix_deg(head_rotation_deg)
    head_center = np.zeros(3)
    painter = _Painter(shape, spacing, origin, direction, rotation, head_center)

    head = _paint_head(painter, anatomy["head"]) or anatomy["head"]
    _paint_sinuses_and_nose(painter, head)
    landmarks = {side: _paint_orbit(painter, side, prm, head) for side, prm in anatomy["sides"].items()}
    marker = _paint_marker(painter, head)

    def to_lps(point_anat):
        return rotation @ (np.asarray(point_anat, float) - head_center) + head_center

    hu = TISSUE_HU + anatomy["hu_jitter"]
    image = hu[painter.tissue]
    if blur_mm > 0:
        image = _blur(image, spacing, float(blur_mm))
    if noise_hu > 0:
        image += rng.standard_normal(image.shape, dtype=np.float32) * np.float32(noise_hu)
    image = np.clip(np.rint(image), -1024, 3071).astype(np.int16)

    geometry = (spacing, origin, direction)
    sides = anatomy["sides"]
    metadata = {
        "synthetic": True,
        "description": "SYNTHETIC head CT phantom (geometric shapes, not patient anatomy)",
        "seed": int(seed),
        "variation": float(variation),
        "left_scale": float(left_scale),
        "noise_hu": float(noise_hu),
        "head_rotation_deg": tuple(float(a) for a in head_rotation_deg),
        "orbit_axis_lps": {side: rotation @ landmarks[side]["axis"] for side in sides},
        "globe_radii_mm": {
            side: (sides[side]["globe_eq_radius"], sides[side]["globe_axial_radius"]) for side in sides
        },
        "tissue_names": Tissue.NAMES,
        "tissue_hu": hu.tolist(),
    }
    return Phantom(
        image=Volume(image, *geometry),
        labels=Volume(painter.labels, *geometry),
        tissues=Volume(painter.tissue, *geometry),
        globe_centers_lps={side: to_lps(sides[side]["globe_center"]) for side in sides},
        apex_lps={side: to_lps(landmarks[side]["apex"]) for side in sides},
        marker_center_lps=to_lps(marker),
        metadata=metadata,
    )


def _blur(image: np.ndarray, spacing, sigma_mm: float) -> np.ndarray:
    """Gaussian blur of ``sigma_mm`` along each index axis (the CT point-spread; cheap, separable)."""
    from scipy import ndimage

    sigma_kji = [sigma_mm / s if sigma_mm > 0.3 * s else 0.0 for s in (spacing[2], spacing[1], spacing[0])]
    return ndimage.gaussian_filter(image, sigma_kji, truncate=2.5)


def write_phantom_cases(out_dir: Union[str, os.PathLike[str]], n_cases: int, seed: int = 0,
                        **phantom_kwargs) -> List[str]:
    """Write ``n_cases`` phantoms as ``<out_dir>/phantom_XXX/{image,labels}.nrrd``; returns the case folders.

    Case ``n`` uses seed ``seed + n``; ``phantom_kwargs`` go to :func:`make_head_phantom`. Existing files
    are replaced (the data is generated, nothing of value is lost).
    """
    from headseg.io import write_volume

    if n_cases < 0:
        raise ValueError(f"n_cases must be >= 0, got {n_cases}.")
    os.makedirs(out_dir, exist_ok=True)
    folders = []
    for n in range(int(n_cases)):
        phantom = make_head_phantom(seed=int(seed) + n, **phantom_kwargs)
        folder = os.path.join(out_dir, f"phantom_{n:03d}")
        os.makedirs(folder, exist_ok=True)
        write_volume(phantom.image, os.path.join(folder, "image.nrrd"), overwrite=True)
        write_volume(phantom.labels, os.path.join(folder, "labels.nrrd"), overwrite=True)
        folders.append(folder)
    return folders
