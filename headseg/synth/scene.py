"""Paints the SYNTHETIC anatomical head (tissue codes and orbit labels) on any voxel grid.

Shapes are implicit functions of physical position, evaluated only inside each structure's bounding box,
so the same anatomy can be painted on a coarse grid over the whole field of view and again on a fine grid
around the orbits (``imaging.py`` averages the fine grid down for partial volume). Later structures
overwrite earlier ones; a labelled structure keeps its label only where nothing painted later covers
it (the globe is painted last in each orbit, so muscles and nerve stop at its surface).

Long thin structures that run from front to back (recti, optic nerve) are described by their centre
line and cross-section as functions of the antero-posterior coordinate; a voxel's coronal-plane offset
from the centre line is compared with the cross-section, stretched by the line's slope so that an oblique
tube keeps its true thickness. Numbers are in anatomy.py (with their sources).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from headseg.synth.anatomy import MUSCLES

__all__ = ["Tissue", "Canvas", "build_geometry", "paint_scene", "to_anat"]


class Tissue:
    """Codes of the tissue map. Each has its own HU range (imaging.py)."""

    AIR = 0
    SKIN = 1
    FAT = 2
    SOFT = 3
    MUSCLE = 4  # temporalis and other skeletal muscle
    EOM = 5  # extraocular muscle tissue (recti and obliques)
    BONE = 6
    BONE_THIN = 7  # plates thinner than a voxel (lamina papyracea, floor, septa): partial-volume HU
    BONE_CANCELLOUS = 8
    TEETH = 9
    METAL = 10
    BRAIN = 11
    CSF = 12
    SINUS_AIR = 13
    MUCOSA = 14
    ORBITAL_FAT = 15
    SCLERA = 16
    VITREOUS = 17
    AQUEOUS = 18
    LENS = 19
    OPTIC_NERVE = 20
    NERVE_SHEATH = 21
    GLAND = 22
    VESSEL = 23
    HEADREST = 24
    CUSHION = 25
    TABLE = 26
    MARKER = 27

    NAMES = (
        "air", "skin", "fat", "soft_tissue", "muscle", "extraocular_muscle", "bone", "thin_bone",
        "cancellous_bone", "teeth", "metal", "brain", "csf", "sinus_air", "mucosa", "orbital_fat", "sclera",
        "vitreous", "aqueous", "lens", "optic_nerve", "nerve_sheath", "gland", "vessel", "headrest",
        "cushion", "table", "marker",
    )  # fmt: skip
    COUNT = len(NAMES)
    GLOBE = (SCLERA, VITREOUS, AQUEOUS, LENS)


ORBIT_LABELS: Dict[str, Dict[str, int]] = {
    "right": {"SR": 1, "LR": 2, "MR": 3, "IR": 4, "ON": 5},
    "left": {"SR": 6, "LR": 7, "MR": 8, "IR": 9, "ON": 10},
}  # docs/ARCHITECTURE.md "Label values" (headseg.labels): right 1-5, left 6-10


def upsample(coarse: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Separable linear interpolation of a lattice (corners on the corners of ``shape``) to ``shape``."""
    out = np.asarray(coarse, np.float32)
    for axis, n in enumerate(shape):
        m = out.shape[axis]
        if m == n:
            continue
        if m == 1:
            out = np.repeat(out, int(n), axis=axis)
            continue
        pos = np.linspace(0.0, m - 1.0, int(n), dtype=np.float32)
        i0 = np.minimum(pos.astype(np.int64), m - 2)
        frac = (pos - i0).reshape([-1 if a == axis else 1 for a in range(3)])
        a = np.take(out, i0, axis=axis)
        out = a + (np.take(out, i0 + 1, axis=axis) - a) * frac
    return out


def _smooth(c: Canvas, sl, shp, step_mm: float, func) -> np.ndarray:
    """``func(x, y, z)`` (anatomical coordinates) evaluated on a coarse lattice and upsampled to the sub-box."""
    x, y, z = c.lattice(sl, step_mm)
    values = np.broadcast_to(func(x, y, z), np.broadcast_shapes(x.shape, y.shape, z.shape))
    return upsample(values, shp)


def _smoothstep(e0: float, e1: float, x):
    t = np.clip((x - np.float32(e0)) / np.float32(e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _f32(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float32)


def _lookup(table: np.ndarray, x0: float, dx: float, x) -> List[np.ndarray]:
    """Linear interpolation of the rows of ``table`` (sampled every ``dx`` from ``x0``) at ``x``;
    much faster than ``np.interp`` on large arrays because the sampling is uniform."""
    t = (np.asarray(x, np.float32) - np.float32(x0)) * np.float32(1.0 / dx)
    t = np.clip(t, 0.0, np.float32(table.shape[1] - 1.001))
    i = t.astype(np.int32)
    frac = t - i
    out = []
    for row in np.asarray(table, np.float32):
        a = row[i]
        out.append(a + (row[i + 1] - a) * frac)
    return out


Vector = Union[Sequence[float], np.ndarray]  # a point, size or corner in mm: a tuple or an array


def _interp(x, xp: Sequence[float], fp: Sequence[float]) -> np.ndarray:
    """``np.interp`` (clamped at the ends) for large float32 arrays, via a uniform 0.25 mm table."""
    y0, dy, table = _uniform(np.asarray(xp, float), (np.asarray(fp, float),))
    return _lookup(table, y0, dy, x)[0]


def _uniform(knots: np.ndarray, values: Sequence[np.ndarray], step: float = 0.25) -> Tuple[float, float, np.ndarray]:
    grid = np.arange(knots[0], knots[-1] + step, step)
    return float(grid[0]), step, np.stack([np.interp(grid, knots, v) for v in values]).astype(np.float32)


class Canvas:
    """Tissue (and optionally label) arrays on a grid, with physical coordinates of any sub-box.

    ``rotation`` turns anatomical coordinates into scanner LPS (the head's pose), about ``pivot``:
    lps = R (anat - pivot) + pivot. Scanner-frame shapes (headrest, table) use ``frame="scanner"``.
    """

    def __init__(self, shape_kji: Sequence[int], spacing: Vector, origin: Vector,
                 direction: np.ndarray, rotation: np.ndarray, pivot: Vector, labels: bool) -> None:
        self.shape = tuple(int(n) for n in shape_kji)
        to_lps = np.asarray(direction, float) @ np.diag([float(s) for s in spacing])
        origin_a = np.asarray(origin, float)
        pivot_a = np.asarray(pivot, float)
        r_t = np.asarray(rotation, float).T
        self.frames = {
            "scanner": (to_lps, origin_a.copy()),
            "anat": (r_t @ to_lps, r_t @ (origin_a - pivot_a) + pivot_a),
        }
        self.tissue = np.zeros(self.shape, np.uint8)
        self.labels = np.zeros(self.shape, np.uint8) if labels else None

    def coords(self, lo_mm: Vector, hi_mm: Vector, frame: str = "anat"):
        """(slices, (x, y, z) broadcastable float32 arrays, sub_shape) of the voxels in a box; None if empty."""
        lin, off = self.frames[frame]
        lo, hi = np.asarray(lo_mm, float), np.asarray(hi_mm, float)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        ijk = np.linalg.solve(lin, (corners - off).T).T
        first = np.maximum(np.floor(ijk.min(axis=0)).astype(int), 0)
        last = np.minimum(np.ceil(ijk.max(axis=0)).astype(int) + 1, np.array(self.shape[::-1]))
        if np.any(last <= first):
            return None
        slices = (slice(first[2], last[2]), slice(first[1], last[1]), slice(first[0], last[0]))
        idx = [np.arange(first[n], last[n], dtype=np.float32) for n in range(3)]
        shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]
        out = []
        for row in range(3):
            value: Any = np.float32(off[row])
            for n in range(3):
                if abs(lin[row, n]) > 1e-12:
                    value = value + np.float32(lin[row, n]) * idx[n].reshape(shapes[n])
            out.append(np.asarray(value, dtype=np.float32))
        sub_shape = tuple(s.stop - s.start for s in slices)
        return slices, tuple(out), sub_shape

    def lattice(self, sl: Tuple[slice, slice, slice], step_mm: float, frame: str = "anat"):
        """Coordinates of a coarse lattice spanning the sub-box ``sl`` (corners included), for smooth
        fields that are evaluated coarsely and then upsampled with :func:`upsample` to the sub-box."""
        lin, off = self.frames[frame]
        spacing = np.linalg.norm(lin, axis=0)  # i, j, k
        idx = []
        for n, s in enumerate((sl[2], sl[1], sl[0])):
            count = s.stop - s.start
            m = max(2, int(math.ceil((count - 1) * spacing[n] / step_mm)) + 1) if count > 1 else 1
            idx.append(np.linspace(s.start, s.stop - 1, m, dtype=np.float64).astype(np.float32))
        shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]
        out = []
        for row in range(3):
            value: Any = np.float32(off[row])
            for n in range(3):
                if abs(lin[row, n]) > 1e-12:
                    value = value + np.float32(lin[row, n]) * idx[n].reshape(shapes[n])
            out.append(np.asarray(value, dtype=np.float32))
        return tuple(out)

    def side_coords(self, sign: float, lo_mm: Vector, hi_mm: Vector):
        """Like :meth:`coords` for a box in side-local coordinates (x' = sign * x); returns x', y, z."""
        lo, hi = np.asarray(lo_mm, float), np.asarray(hi_mm, float)
        if sign < 0:
            lo_a = np.array([-hi[0], lo[1], lo[2]])
            hi_a = np.array([-lo[0], hi[1], hi[2]])
        else:
            lo_a, hi_a = lo, hi
        reg = self.coords(lo_a, hi_a)
        if reg is None:
            return None
        sl, (x, y, z), shp = reg
        return sl, (x * np.float32(sign), y, z), shp

    def paint(self, sl, mask, tissue: int, label: int = 0, sub_shape=None, where: Optional[Sequence[int]] = None):
        """Set ``tissue`` (and ``label``, 0 for unlabelled) on ``mask``; ``where`` limits it to those tissues."""
        if sub_shape is not None:
            mask = np.broadcast_to(mask, sub_shape)
        if where is not None:
            mask = mask & np.isin(self.tissue[sl], where)
        self.tissue[sl][mask] = tissue
        if self.labels is not None:
            self.labels[sl][mask] = label


# -- derived geometry --------------------------------------------------------------------------------
@dataclass
class SideGeometry:
    """Everything drawn for one orbit, in side-local millimetres (x' lateral, y, z)."""

    sign: float
    g: np.ndarray  # globe centre
    e_a: np.ndarray  # globe frame: anterior pole direction (gaze)
    e_lat: np.ndarray
    e_sup: np.ndarray
    globe: Dict[str, float]
    knots: np.ndarray  # Y (relative to the globe centre) of the wall profiles
    medial: np.ndarray
    lateral: np.ndarray
    roof: np.ndarray  # z relative to the globe centre
    floor: np.ndarray
    wall: Dict[str, float]
    rim: Dict[str, float]
    apex: np.ndarray  # annulus of Zinn / optic canal (absolute side-local)
    muscles: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    nerve: Dict[str, Any] = field(default_factory=dict)
    tubes: List[Tuple[np.ndarray, np.ndarray, int]] = field(default_factory=list)  # (points, radii, tissue)
    lacrimal: Tuple[np.ndarray, np.ndarray] = (np.zeros(3), np.ones(3))
    box: Tuple[np.ndarray, np.ndarray] = (np.zeros(3), np.zeros(3))
    recess: float = 0.0  # how far the face is pushed back around this eye (mm)
    label_box: Tuple[np.ndarray, np.ndarray] = (np.zeros(3), np.zeros(3))

    def walls(self, y_rel):
        """Medial, lateral x' and roof, floor z (relative) at antero-posterior positions Y."""
        if not hasattr(self, "_table"):
            self._table = _uniform(self.knots, (self.medial, self.lateral, self.roof, self.floor))
        y0, dy, table = self._table
        return tuple(_lookup(table, y0, dy, y_rel))

    def direction(self, polar_deg: float, meridian_deg: float) -> np.ndarray:
        t, p = math.radians(polar_deg), math.radians(meridian_deg)
        return math.cos(t) * self.e_a + math.sin(t) * (math.cos(p) * self.e_lat + math.sin(p) * self.e_sup)


def _gaze_frame(sign: float, gaze_deg: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, v = (math.radians(a) for a in gaze_deg)
    e_a = np.array([sign * math.sin(h) * math.cos(v), -math.cos(h) * math.cos(v), math.sin(v)])
    e_lat = np.cross([0.0, 0.0, 1.0], e_a)
    e_lat /= np.linalg.norm(e_lat)
    e_sup = np.cross(e_a, e_lat)
    return e_a, e_lat, e_sup


def _orbit_profiles(o: Dict[str, Any], globe_r: float, ipd_half: float) -> Dict[str, np.ndarray]:
    """Wall positions of the bony orbit along Y (mm behind the globe centre): a cone whose medial wall
    is nearly sagittal, lateral wall at ~45 deg, floor rising toward the apex (facts section 1)."""
    yap = o["apex_depth"]
    y_lr = globe_r - o["lateral_rim_behind_globe"]  # lateral rim: interzygomatic line
    knots = np.array([-16.0, -6.0, 0.0, 0.15 * yap, 0.3 * yap, 0.45 * yap, 0.6 * yap, 0.75 * yap, 0.9 * yap, yap])
    ax, mf, mm = o["apex_x"], o["medial_front"], o["medial_mid"]
    medial = np.interp(knots, [-16, 0, 0.45 * yap, 0.8 * yap, yap], [mf - 0.3, mf + 0.8, mm, mm - 0.8, ax - 2.2])
    lr = o["lateral_rim"]
    s = np.clip((knots - y_lr) / (yap - y_lr), 0.0, 1.0)
    lateral = lr - (lr - (ax + 2.6)) * s + 2.5 * np.sin(np.pi * s) ** 1.5  # widest ~1 cm behind the rim
    lateral = np.where(knots < y_lr, lr + 0.25 * (y_lr - knots), lateral)
    r, ra, f, fa = o["roof"], o["roof_apex"], o["floor"], o["floor_apex"]
    q = np.clip(knots / yap, 0.0, 1.0)
    roof = np.where(knots < 0, r - 0.12 * (-knots), r - (r - ra) * q ** 1.6)
    floor = np.where(knots < 0, f + 0.08 * (-knots), f + (fa - f) * q ** 0.9)  # slopes up toward the apex
    return {"knots": knots, "medial": medial, "lateral": lateral, "roof": roof, "floor": floor, "y_lr": y_lr,
            "ipd_half": ipd_half}


def _muscle_path(sg: SideGeometry, name: str, m: Dict[str, Any]) -> Dict[str, Any]:
    """Belly centre line and cross-section from the annulus to the globe, and the tendon band on the
    globe to the insertion; thickness/width scaled so the volume matches the drawn target."""
    R = sg.globe["radius"]
    yap = float(sg.apex[1] - sg.g[1])
    limbus = math.degrees(math.asin(min(0.99, sg.globe["limbus_radius"] / R)))
    polar_ins = limbus + math.degrees(m["insertion_from_limbus"] / R)
    polar_t = max(m["tangent_polar_deg"], polar_ins + 8.0)
    d_o, d_t, d_ins, w_o = 1.2, 1.1, 0.7, 3.5  # tendinous origin, thin where it meets the globe
    w_ins = m["insertion_width"]
    w_t = 0.5 * (m["belly_width"] + w_ins)
    peak = m["belly_peak"]
    gamma = math.log(0.5) / math.log(peak)
    ted = m["ted_factor"]
    thick_axis = "h" if name in ("MR", "LR") else "v"
    direction_ann = {"MR": (-1.0, 0.0), "LR": (1.0, 0.0), "SR": (0.0, 1.0), "IR": (0.0, -1.0)}[name]
    # band on the globe (tendon): polar angle from polar_t (leaves the globe) to polar_ins (insertion)
    thetas = np.linspace(polar_t, polar_ins, 24)
    frac = (polar_t - thetas) / (polar_t - polar_ins)
    arc = R * np.radians(thetas - polar_ins)  # distance from the insertion along the globe
    tl = m["tendon_length"]
    band_d = np.interp(arc, [0.0, tl, tl + 3.0, 1e3], [d_ins, 0.9, max(d_t, 1.4), d_t])
    band_w = w_t + (w_ins - w_t) * frac
    band_volume = float(np.trapezoid(band_w * band_d * (R + band_d / 2), np.radians(polar_t - thetas)))
    p_t = sg.g + (R + d_t / 2) * sg.direction(polar_t, m["meridian_deg"])
    y_t = float(p_t[1] - sg.g[1])
    ys = np.arange(y_t, yap + 1e-6, 0.25)
    s = (yap - ys) / (yap - y_t)  # 0 at the annulus, 1 where it meets the globe
    base = d_o + (d_t - d_o) * s
    bump = np.sin(np.pi * np.clip(s, 0, 1) ** gamma) ** 1.5
    origin_pt = sg.apex + 3.8 * np.array([direction_ann[0], 0.0, direction_ann[1]])
    beta = 1.0 - _smoothstep(y_t, y_t + 9.0, ys)
    alpha = _smoothstep(yap - 9.0, yap, ys)
    walls = [np.asarray(a, float) for a in sg.walls(ys)]

    def build(lam: float, final: bool = False):
        d_max = m["belly_thickness"] * lam**0.6 * ted**0.55
        w_b = m["belly_width"] * lam**0.4 * ted**0.3
        d = base + (d_max - (d_o + (d_t - d_o) * peak)) * bump
        w = w_o + (w_b - w_o) * np.clip(s, 0.0, 1.0) ** 0.9  # narrow origin, widest toward the globe
        # TED enlarges the belly and spares the tendon
        xm, xl, zr, zf = walls
        xax = sg.g[0] + (sg.apex[0] - sg.g[0]) * ys / yap
        zax = sg.g[2] + (sg.apex[2] - sg.g[2]) * ys / yap
        zr, zf = zr + sg.g[2], zf + sg.g[2]
        k_h = k_v = np.ones_like(ys)
        for _ in range(2 if final else 1):
            half_h = 0.5 * d * k_h if thick_axis == "h" else 0.5 * w * k_h
            half_v = 0.5 * d * k_v if thick_axis == "v" else 0.5 * w * k_v
            if name == "MR":
                cx, cz = xm + m["wall_gap"] + half_h, zax + m["offset"]
            elif name == "LR":
                cx, cz = xl - m["wall_gap"] - half_h, zax + m["offset"]
            elif name == "SR":
                cx, cz = xax + m["offset"], zr - m["wall_gap"] - half_v
            else:
                cx, cz = xax + m["offset"], zf + m["wall_gap"] + half_v
            cx, cz = cx + (p_t[0] - cx) * beta, cz + (p_t[2] - cz) * beta
            cx, cz = cx + (origin_pt[0] - cx) * alpha, cz + (origin_pt[2] - cz) * alpha
            k_h = np.sqrt(1.0 + np.gradient(cx, ys) ** 2)
            k_v = np.sqrt(1.0 + np.gradient(cz, ys) ** 2)
        volume = float(np.trapezoid(np.pi / 4 * d * w * k_h * k_v, ys)) + band_volume
        return d, w, cx, cz, k_h, k_v, volume

    lam = 1.0
    for _ in range(4):  # belly cross-section ~ lam (thickness x lam**0.6, width x lam**0.4)
        belly = build(lam)[-1] - band_volume
        lam *= max(m["volume_mm3"] - band_volume, 50.0) / max(belly, 1.0)
        lam = float(np.clip(lam, 0.2, 4.0))
    d, w, cx, cz, k_h, k_v, volume = build(lam, final=True)
    if thick_axis == "h":
        ext_h, ext_v = 0.5 * d * k_h, 0.5 * w * k_v
    else:
        ext_h, ext_v = 0.5 * w * k_h, 0.5 * d * k_v
    return {
        "y": (ys + sg.g[1]).astype(np.float32), "cx": cx.astype(np.float32), "cz": cz.astype(np.float32),
        "ext_h": ext_h.astype(np.float32), "ext_v": ext_v.astype(np.float32), "d": d, "w": w,
        "polar_t": polar_t, "polar_ins": polar_ins, "meridian": m["meridian_deg"],
        "band": (float(thetas[-1]), float((thetas[0] - thetas[-1]) / (len(thetas) - 1)),
                 np.stack([band_d[::-1], band_w[::-1]]).astype(np.float32)),  # uniform in polar angle
        "volume_mm3": volume, "target_mm3": m["volume_mm3"], "w_ins": w_ins,
        "belly_max_thickness": float(d.max()), "belly_max_at": float(s[int(np.argmax(d))]),
    }


def _nerve_path(sg: SideGeometry, nv: Dict[str, Any]) -> Dict[str, Any]:
    """Optic nerve (with sheath) from the back of the globe to the optic canal, S-shaped slack."""
    R = sg.globe["radius"]
    exit_dir = sg.direction(180.0 - nv["exit_nasal_deg"], 190.0)  # exits nasal (and a little below) the pole
    e = sg.g + (R - 1.5) * exit_dir
    a = sg.apex
    ys = np.arange(e[1], a[1] + 2.0 + 1e-6, 0.25)
    s = np.clip((ys - e[1]) / (a[1] - e[1]), 0.0, 1.0)
    chord_x = e[0] + (a[0] - e[0]) * s
    chord_z = e[2] + (a[2] - e[2]) * s
    a1, a2, a3, a4 = nv["shape"]
    env = np.where(ys <= a[1], 1.0, 0.0)

    def path(scale: float):
        ox = scale * (a1 * np.sin(np.pi * s) + 0.8 * a2 * np.sin(2 * np.pi * s)) * env
        oz = scale * (a3 * np.sin(np.pi * s) + 0.8 * a4 * np.sin(2 * np.pi * s)) * env
        return chord_x + ox, chord_z + oz

    chord = float(np.linalg.norm(a - e))
    inside = ys <= a[1]
    lo, hi = 0.0, 6.0
    for _ in range(12):  # path length / chord = the drawn slack (7-12 mm of slack is typical)
        mid = 0.5 * (lo + hi)
        cx, cz = path(mid)
        length = float(np.trapezoid(np.sqrt(1 + np.gradient(cx, ys) ** 2 + np.gradient(cz, ys) ** 2)[inside], ys[inside]))
        if length / chord < nv["slack"]:
            lo = mid
        else:
            hi = mid
    cx, cz = path(0.5 * (lo + hi))
    k_h = np.sqrt(1.0 + np.gradient(cx, ys) ** 2)
    k_v = np.sqrt(1.0 + np.gradient(cz, ys) ** 2)
    arc = np.concatenate([[0.0], np.cumsum(np.sqrt(np.diff(ys) ** 2 + np.diff(cx) ** 2 + np.diff(cz) ** 2))])
    outside = np.sqrt((cx - sg.g[0]) ** 2 + (ys - sg.g[1]) ** 2 + (cz - sg.g[2]) ** 2) >= R
    start = arc[np.argmax(outside)] if outside.any() else 0.0
    from_globe = np.maximum(arc - start, 0.0)
    # sheath diameter 5.0 at 3 mm, 4.4 at 8 mm, 3.6 near the canal (Vaiman 2015)
    radius = np.interp(from_globe, [0.0, 3.0, 8.0, 16.0, 60.0], [2.6, 2.5, 2.2, 1.95, 1.8])
    labelled = outside & (ys <= a[1] + 1.5)
    base_volume = float(np.trapezoid((np.pi * radius**2 * k_h * k_v)[labelled], ys[labelled]))
    scale = math.sqrt(nv["volume_mm3"] / max(base_volume, 1.0))
    radius = radius * scale
    return {
        "y": ys.astype(np.float32), "cx": cx.astype(np.float32), "cz": cz.astype(np.float32),
        "r": radius.astype(np.float32), "k_h": k_h.astype(np.float32), "k_v": k_v.astype(np.float32),
        "label_end_y": float(a[1] + 1.5), "csf": nv["sheath_csf"], "volume_mm3": nv["volume_mm3"],
        "path_length": float(np.trapezoid(np.sqrt(1 + np.gradient(cx, ys) ** 2 + np.gradient(cz, ys) ** 2)[inside],
                                          ys[inside])),
        "chord": chord, "exit": e,
    }


def build_geometry(anatomy: Dict[str, Any]) -> Dict[str, Any]:
    """Derived shapes of both orbits (paths, profiles, boxes) from the drawn numbers."""
    sides = {}
    for side, p in anatomy["sides"].items():
        sign = p["sign"]
        gl = dict(p["globe"])
        e_a, e_lat, e_sup = _gaze_frame(sign, anatomy["gaze_deg"])
        r = gl["radius"]
        gl["axial_half"] = gl["axial_length"] / 2
        # cornea: a spherical cap whose apex is the front end of the axial length
        cr = gl["cornea_radius"]
        gl["cornea_center_offset"] = gl["axial_half"] - cr
        # the cap meets the scleral ellipsoid at the limbus; approximate its radius from the sphere
        off = gl["cornea_center_offset"]
        gl["limbus_radius"] = math.sqrt(max(cr**2 - max(0.0, (r**2 - cr**2 + off**2) / (2 * off) - off) ** 2, 25.0)) \
            if off > 0 else 5.85
        gl["limbus_radius"] = float(np.clip(gl["limbus_radius"], 5.3, 6.3))  # cornea ~11.7 mm across
        o = p["orbit"]
        prof = _orbit_profiles(o, r, anatomy["ipd"] / 2)
        g = np.asarray(gl["center"], float)
        apex = np.array([o["apex_x"], g[1] + o["apex_depth"], g[2] + o["apex_z"]])
        y_mr = prof["y_lr"] - o["medial_rim_ahead"]
        rim = {"y_lr": prof["y_lr"], "y_mr": y_mr, "x_m": prof["medial"][1], "x_l": o["lateral_rim"],
               "slope_z": -0.08, "width": o["rim_width"]}
        sg = SideGeometry(sign, g, e_a, e_lat, e_sup, gl, prof["knots"], prof["medial"], prof["lateral"],
                          prof["roof"], prof["floor"], dict(o["wall"]), rim, apex)
        for name in MUSCLES:
            sg.muscles[name] = _muscle_path(sg, name, p["muscles"][name])
        sg.nerve = _nerve_path(sg, p["nerve"])
        _add_tubes(sg, p)
        sg.lacrimal = (g + np.asarray(p["lacrimal"]["offset"]) * np.array([1.0, 1.0, 1.0]), np.asarray(p["lacrimal"]["size"]))
        lo = np.array([min(prof["medial"]) - o["wall"]["medial"] - 4.0,
                       g[1] - gl["axial_half"] - anatomy["lid_thickness"] - 4.0,
                       g[2] + min(prof["floor"]) - o["wall"]["floor"] - o["rim_width"] - 3.0])
        hi = np.array([o["lateral_rim"] + o["wall"]["lateral"] + o["rim_width"] + 4.0, apex[1] + 11.0,
                       g[2] + max(prof["roof"]) + o["wall"]["roof"] + o["rim_width"] + 3.0])
        sg.box = (lo, hi)
        sg.label_box = _label_box(sg)
        sides[side] = sg
    mean_globe = np.mean([s.g for s in sides.values()], axis=0)
    geom = {"sides": sides, "globe_mean": mean_globe}
    set_recess(anatomy, geom)
    return geom


def _label_box(sg: SideGeometry, margin: float = 1.5) -> Tuple[np.ndarray, np.ndarray]:
    """Side-local box around every labelled voxel (recti with their tendons, optic nerve)."""
    pts = []
    for mp in sg.muscles.values():
        for sgn in (-1.0, 1.0):
            pts.append(np.stack([mp["cx"] + sgn * mp["ext_h"], mp["y"], mp["cz"] + sgn * mp["ext_v"]], axis=1))
        half_angle = math.degrees(0.5 * mp["w_ins"] / sg.globe["radius"]) + 8.0
        for polar in np.linspace(mp["polar_ins"], mp["polar_t"], 6):
            for dpsi in (-half_angle, 0.0, half_angle):
                pts.append((sg.g + (sg.globe["radius"] + 2.5) * sg.direction(polar, mp["meridian"] + dpsi))[None])
    nv = sg.nerve
    for sgn in (-1.0, 1.0):
        pts.append(np.stack([nv["cx"] + sgn * nv["r"] * nv["k_h"], nv["y"], nv["cz"] + sgn * nv["r"] * nv["k_v"]], axis=1))
    allp = np.concatenate(pts)
    return allp.min(axis=0) - margin, allp.max(axis=0) + margin


def _add_tubes(sg: SideGeometry, p: Dict[str, Any]) -> None:
    """Unlabelled neighbours of the recti: superior and inferior oblique, superior ophthalmic vein, canal."""
    g, a = sg.g, sg.apex
    yap = a[1] - g[1]

    def wall_point(y_rel: float, dx: float, dz: float, which: str) -> np.ndarray:
        xm, xl, zr, zf = (float(v[0]) for v in sg.walls(np.array([y_rel])))
        x = xm + dx if which in ("m", "mt", "mb") else xl + dx
        z = zr + dz if which in ("mt", "lt", "m") else zf + dz
        if which == "m":
            z = dz
        return np.array([x, g[1] + y_rel, g[2] + z])

    R = sg.globe["radius"]
    r_so = p["so_radius"]
    so = np.array([a + [-3.0, -1.0, 4.5], wall_point(0.6 * yap, 2.3, -2.3, "mt"), wall_point(0.2 * yap, 2.5, -2.5, "mt"),
                   wall_point(-5.0, 3.5, -3.0, "mt")])
    sg.tubes.append((so, np.array([r_so * 0.8, r_so, r_so * 0.9, 0.9]), Tissue.EOM))
    insertion = g + (R + 0.4) * sg.direction(112.0, 55.0)
    sg.tubes.append((np.array([so[-1], insertion]), np.array([0.7, 0.6]), Tissue.EOM))  # reflected tendon
    io_origin = wall_point(-4.0, 2.0, 2.0, "mb")
    io_mid = np.array([g[0] - 2.0, g[1] - 1.0, g[2] + float(sg.walls(np.array([-1.0]))[3][0]) + 2.3])
    io_end = g + (R + 0.4) * sg.direction(118.0, -35.0)
    sg.tubes.append((np.array([io_origin, io_mid, io_end]), np.array([1.1, 1.3, 1.0]), Tissue.EOM))
    rv = p["sov_radius"]
    sov = np.array([wall_point(-4.0, 5.0, -4.5, "mt"), np.array([g[0] + 1.5, g[1] + 10.0,
                    g[2] + float(sg.walls(np.array([10.0]))[2][0]) - 5.5]), a + [5.5, -4.0, 3.0]])
    sg.tubes.append((sov, np.array([rv, rv, rv * 0.9]), Tissue.VESSEL))
    canal_end = a + np.array([-3.0, 9.0, 1.0])
    sg.tubes.append((np.array([a, canal_end]), np.array([1.75, 1.7]), Tissue.OPTIC_NERVE))


def to_anat(sign: float, p: np.ndarray) -> np.ndarray:
    """Side-local point -> anatomical frame."""
    q = np.array(p, dtype=float)
    q[..., 0] *= sign
    return q


# -- painting ----------------------------------------------------------------------------------------
def _head_shape(anatomy: Dict[str, Any], geom: Dict[str, Any], x, y, z):
    """Approximate depth below the skin (mm, negative outside) of a head whose face has eye sockets and a
    nose: a super-ellipsoid (flat face), recessed around each globe and raised along the nose."""
    h = anatomy["head"]
    a, b, c, zc = h["a"], h["b"], h["c"], h["zc"]
    zg = float(geom["globe_mean"][2])
    shift = np.zeros((1, 1, 1), np.float32)
    for sg in geom["sides"].values():
        gx = sg.sign * sg.g[0]
        u2 = ((x - np.float32(gx)) / np.float32(19.0)) ** 2 + ((z - np.float32(sg.g[2])) / np.float32(15.0)) ** 2
        bump = np.clip(1.0 - u2, 0.0, 1.0) ** 2
        shift = shift + np.float32(sg.recess) * bump
    zz = z - np.float32(zg)
    # nose: dorsum from the nasion (z ~ +2) to the tip (z ~ -38), triangular cross-section
    height = _interp(zz, [-50, -44, -38, -20, 0, 6, 12], [0, 8, 21, 13, 6, 3, 0])
    half = _interp(zz, [-50, -38, -20, 0, 12], [14, 15, 9, 6, 6])
    nose = height * np.clip(1.0 - np.abs(x) / half, 0.0, 1.0) ** 1.3
    front = y < 0
    y_eff = np.where(front, y - shift + nose, y)
    ax = np.abs(x * np.float32(1.0 / a))
    ay = np.abs(y_eff * np.float32(1.0 / b))
    az = (z - np.float32(zc)) * np.float32(1.0 / c)
    ax2, ay2 = ax * ax, ay * ay
    f = ax2 * ax + ay2 * ay + az * az
    gx_ = np.float32(3.0 / a) * ax2
    gy_ = np.float32(3.0 / b) * ay2
    gz_ = np.float32(2.0 / c) * az
    grad = np.sqrt(gx_ * gx_ + gy_ * gy_ + gz_ * gz_)
    return (1.0 - f) / np.maximum(grad, 1e-3)


def _front_y(anatomy: Dict[str, Any], x: float, z: float) -> float:
    """y of the (unrecessed) face surface at (x, z)."""
    h = anatomy["head"]
    rest = 1.0 - abs(x / h["a"]) ** 3 - ((z - h["zc"]) / h["c"]) ** 2
    return -h["b"] * max(rest, 1e-3) ** (1 / 3)


def _skull_floor(geom: Dict[str, Any], x, y):
    """z of the floor of the cranial cavity: orbital roofs in front, middle fossa behind the apex."""
    sgs = list(geom["sides"].values())
    g = geom["globe_mean"]
    y_rel = np.asarray(y - np.float32(g[1]))
    knots = sgs[0].knots
    roof = np.mean([sg.roof + sg.wall["roof"] for sg in sgs], axis=0) + g[2]
    yap = float(np.mean([sg.apex[1] for sg in sgs]) - g[1])
    shape = np.broadcast_shapes(np.shape(x), np.shape(y))
    ant = _interp(y_rel, knots, roof)
    ax = np.abs(x)
    ant = ant + (np.float32(g[2] + 13.0) - ant) * (1.0 - _smoothstep(10.0, 16.0, ax))  # ethmoid roof
    sella = (1.0 - _smoothstep(8.0, 15.0, ax)) * (1.0 - _smoothstep(yap + 12.0, yap + 24.0, y_rel))
    middle = np.float32(g[2] - 14.0) + np.float32(10.0) * sella
    wall = np.float32(yap - 2.0) - np.float32(16.0) * _smoothstep(18.0, 55.0, ax)  # greater wing: curved, lateral ahead
    floor = ant + (middle - ant) * _smoothstep(-5.0, 5.0, y_rel - wall)
    floor = floor + (np.float32(g[2] - 42.0) - floor) * _smoothstep(yap + 40.0, yap + 60.0, y_rel)
    return np.broadcast_to(floor, shape)


def _paint_head(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    h = an["head"]
    reg = c.coords((-h["a"] - 3, -h["b"] - 30, h["zc"] - h["c"] - 3), (h["a"] + 3, h["b"] + 3, h["zc"] + h["c"] + 3))
    if reg is None:
        return
    sl, (x, y, z), shp = reg
    step = 1.2
    depth = _smooth(c, sl, shp, step, lambda x, y, z: _head_shape(an, geom, x, y, z))
    g = geom["globe_mean"]

    def temporalis(x, y, z):
        lat = _smoothstep(0.55, 0.8, np.abs(x) / np.float32(h["a"]))
        return (np.float32(h["temporalis"]) * lat * _smoothstep(g[1] + 3.0, g[1] + 15.0, y)
                * (1.0 - _smoothstep(20.0, 45.0, y)) * _smoothstep(g[2] - 32.0, g[2] - 15.0, z)
                * (1.0 - _smoothstep(g[2] + 45.0, g[2] + 70.0, z)))

    temporal = _smooth(c, sl, shp, 3.0, temporalis)
    above = _smooth(c, sl, shp, step, lambda x, y, z: z - _skull_floor(geom, x, y))  # mm above the floor
    s1 = np.float32(h["skin"])
    s2 = s1 + np.float32(h["fat"])
    s3 = s2 + temporal
    t1 = s3 + np.float32(h["outer_table"])
    t2 = t1 + np.float32(h["diploe"])
    t3 = t2 + np.float32(h["inner_table"])
    t4 = t3 + np.float32(h["csf"])
    vault = above > 0
    tissue = np.zeros(shp, np.uint8)
    tissue[depth >= 0] = Tissue.SKIN
    tissue[depth >= s1] = Tissue.FAT
    deep = depth >= s2
    tissue[deep] = Tissue.SOFT
    tissue[deep & (depth < s3)] = Tissue.MUSCLE
    yap = geom["sides"]["left"].apex[1] - g[1]
    base_t = _smooth(c, sl, shp, 3.0, lambda x, y, z: np.float32(1.2) + np.float32(2.8) * _smoothstep(
        yap - 8.0, yap + 2.0, y - np.float32(g[1])))
    base = (above > -base_t) & ~vault & (depth >= s3)
    tissue[base] = Tissue.BONE
    in_vault = vault & (depth >= s3)
    tissue[in_vault] = Tissue.BONE
    tissue[in_vault & (depth >= t1) & (depth < t2)] = Tissue.BONE_CANCELLOUS
    inner = in_vault & (depth >= t3)
    tissue[inner] = Tissue.CSF
    tissue[inner & (depth >= t4) & (above > np.float32(h["csf"]))] = Tissue.BRAIN
    c.tissue[sl] = tissue
    if c.labels is not None:
        c.labels[sl] = 0


def _superellipse(u, v, w) -> np.ndarray:
    au, av, aw = np.abs(u), np.abs(v), np.abs(w)
    return au * au * au + av * av * av + aw * aw * aw


def _paint_face(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Facial bones, sinuses and nasal cavity (painted before the orbits, which overwrite them)."""
    h = an["head"]
    g = geom["globe_mean"]
    soft_min = h["skin"] + h["fat"]
    inner_tissues = (Tissue.SOFT, Tissue.MUSCLE, Tissue.BONE, Tissue.BONE_CANCELLOUS, Tissue.CSF, Tissue.BRAIN)
    sinus = an["sinus"]
    # zygoma body and arch, per side
    for sg in geom["sides"].values():
        lr, y_lr = sg.rim["x_l"], sg.g[1] + sg.rim["y_lr"]
        ctr = np.array([lr + 1.0, y_lr - 4.0, sg.g[2] - 20.0])
        half = np.array([9.0, 10.0, 9.0])
        reg = c.side_coords(sg.sign, ctr - half - 2, ctr + half + 2)
        if reg is not None:
            sl, (xp, y, z), shp = reg
            f = _superellipse((xp - ctr[0]) / half[0], (y - ctr[1]) / half[1], (z - ctr[2]) / half[2])
            c.paint(sl, f <= 1.0, Tissue.BONE, sub_shape=shp, where=inner_tissues)
            f2 = _superellipse((xp - ctr[0]) / (half[0] - 2), (y - ctr[1]) / (half[1] - 2), (z - ctr[2]) / (half[2] - 2))
            c.paint(sl, f2 <= 1.0, Tissue.BONE_CANCELLOUS, sub_shape=shp, where=(Tissue.BONE,))
        arch = (np.array([[lr + 3.0, y_lr, sg.g[2] - 20.0], [lr + 9.0, sg.g[1] + 60.0, sg.g[2] - 22.0]]),
                np.array([3.2, 3.6]))
        _paint_tube(c, sg.sign, arch[0], arch[1], Tissue.BONE, where=inner_tissues)
    # hard palate, teeth and metal fillings
    zt = an["teeth"]["z"]
    reg = c.coords((-20, g[1] - 24, g[2] - 51), (20, g[1] + 30, g[2] - 46))
    if reg is not None:
        sl, (x, y, z), shp = reg
        c.paint(sl, np.ones((1, 1, 1), bool), Tissue.BONE, sub_shape=shp, where=inner_tissues)
    if an["teeth"]["present"]:
        ay = an["teeth"]["arch_y"]
        reg = c.coords((-30, ay - 6, zt - 1), (30, ay + 50, g[2] - 46))
        if reg is not None:
            sl, (x, y, z), shp = reg
            curve = ay + 0.045 * x * x
            along = np.abs(y - curve) < 4.5
            arch = along & (np.abs(x) < 28) & (y < ay + 42)
            ridge = arch & (z > zt + 8)
            c.paint(sl, ridge, Tissue.BONE_CANCELLOUS, sub_shape=shp, where=inner_tissues)
            teeth = arch & (z <= zt + 8) & (z >= zt) & (np.cos(np.pi * x / 7.5) ** 2 > 0.12)
            c.paint(sl, teeth, Tissue.TEETH, sub_shape=shp)
        for fx, fr in an["teeth"]["fillings"]:
            ctr = np.array([fx, ay + 0.045 * fx * fx, zt + 2.0])
            reg = c.coords(ctr - fr - 1, ctr + fr + 1)
            if reg is not None:
                sl, (x, y, z), shp = reg
                ball = (x - ctr[0]) ** 2 + (y - ctr[1]) ** 2 + (z - ctr[2]) ** 2 <= fr * fr
                c.paint(sl, ball, Tissue.METAL, sub_shape=shp)
    # frontal sinus: air between the tables behind the glabella
    if sinus["frontal"]:
        fs = sinus["frontal_size"]
        zf = g[2] + 27.0
        yf = _front_y(an, 0.0, zf) + 4.0 + h["skin"] + h["fat"] + h["outer_table"] + 2.0
        ctr, half = np.array([0.0, yf, zf]), np.array([14.0 * fs, 4.0 + 1.5 * fs, 9.0 * fs])
        reg = c.coords(ctr - half - 1, ctr + half + 1)
        if reg is not None:
            sl, (x, y, z), shp = reg
            f = ((x - ctr[0]) / half[0]) ** 2 + ((y - ctr[1]) / half[1]) ** 2 + ((z - ctr[2]) / half[2]) ** 2
            cell = (f <= 1.0) & (np.abs(x - np.float32(sinus["septum_deviation"])) > 0.8)
            c.paint(sl, cell, Tissue.SINUS_AIR, sub_shape=shp, where=(Tissue.BONE, Tissue.BONE_CANCELLOUS, Tissue.CSF,
                                                                      Tissue.BRAIN, Tissue.SOFT))
    # nasal cavity: narrow olfactory cleft between the ethmoids, wider below, septum, turbinates
    reg = c.coords((-17, g[1] - 27, g[2] - 49), (17, g[1] + 47, g[2] + 10))
    if reg is not None:
        sl, (x, y, z), shp = reg
        zz = z - np.float32(g[2])
        half = _interp(zz, [-49, -44, -25, -13, -10.5, 10], [9, 13, 13.5, 10.5, 2.6, 2.2])
        yr = y - np.float32(g[1])
        depth = _smooth(c, sl, shp, 1.2, lambda x, y, z: _head_shape(an, geom, x, y, z))
        front = _interp(zz, [-49, -40, -20, 0, 10], [-26, -27, -22, -12, -8])
        cavity = (np.abs(x) <= half) & (yr >= front) & (yr <= np.float32(geom["sides"]["left"].apex[1] - g[1] + 6))
        cavity = np.broadcast_to(cavity, shp) & (depth >= 2.0)
        c.paint(sl, cavity, Tissue.SINUS_AIR)
        dev = np.float32(sinus["septum_deviation"]) * np.sin(np.pi * np.clip((zz + 45.0) / 50.0, 0, 1))
        septum = np.broadcast_to(np.abs(x - dev) <= 1.0, shp) & cavity
        c.paint(sl, septum & np.broadcast_to(yr > -12, shp), Tissue.BONE_THIN)
        c.paint(sl, septum & np.broadcast_to(yr <= -12, shp), Tissue.SOFT)
        for zc_, hz, hw, hy, yc in ((-33.0, 5.5, 3.8, 22.0, 10.0), (-18.0, 4.0, 2.6, 16.0, 8.0)):
            for sgn in (-1.0, 1.0):
                wall = float(np.interp(zc_, [-49, -44, -25, -13, -10.5, 10], [9, 13, 13.5, 10.5, 2.6, 2.2]))
                xc = sgn * (wall - hw + 0.5)
                turb = ((x - np.float32(xc)) / hw) ** 2 + ((yr - np.float32(yc)) / hy) ** 2 + ((zz - zc_) / hz) ** 2 <= 1.0
                c.paint(sl, np.broadcast_to(turb, shp) & cavity, Tissue.MUCOSA)
        bone = (depth >= h["skin"] + 1.0) & (depth < h["skin"] + 3.0) & np.broadcast_to(
            (np.abs(x) < 9.0) & (yr < -10) & (zz > -20) & (zz < 8), shp)
        c.paint(sl, bone, Tissue.BONE)  # nasal bones
    # maxillary sinuses under the orbit floors
    for n_side, sg in enumerate(geom["sides"].values()):
        sc = sinus["maxillary_scale"]
        ctr = np.array([28.0, sg.g[1] + 5.0, sg.g[2] - 33.0])
        half = np.array([13.0, 17.0, 17.0]) * np.array([sc ** 0.3, sc ** 0.3, sc ** 0.4])
        reg = c.side_coords(sg.sign, ctr - half - 2, ctr + half + 2)
        if reg is None:
            continue
        sl, (xp, y, z), shp = reg
        yr = y - np.float32(sg.g[1])
        top = np.float32(sg.g[2] - sg.wall["floor"]) + sg.walls(yr)[3]
        f_out = _superellipse((xp - ctr[0]) / (half[0] + 1.2), (y - ctr[1]) / (half[1] + 1.2), (z - ctr[2]) / (half[2] + 1.2))
        f_in = _superellipse((xp - ctr[0]) / half[0], (y - ctr[1]) / half[1], (z - ctr[2]) / half[2])
        depth = _smooth(c, sl, shp, 1.2, lambda x, y, z: _head_shape(an, geom, x, y, z))
        ok = (depth >= soft_min + 1.0) & np.broadcast_to(xp >= 12.5, shp)
        c.paint(sl, (f_out <= 1.0) & ok & (z <= top + 0.3), Tissue.BONE_THIN, sub_shape=None)
        air = (f_in <= 1.0) & ok & (z <= top - 0.9) & np.broadcast_to(xp >= 14.0, shp)
        c.paint(sl, air, Tissue.SINUS_AIR)
        if sinus["maxillary_fluid"][n_side]:
            c.paint(sl, air & np.broadcast_to(z < ctr[2] - 4.0, shp), Tissue.MUCOSA)
    _paint_ethmoid(c, an, geom)
    # sphenoid sinus below and between the optic canals
    apex_y = float(np.mean([sg.apex[1] for sg in geom["sides"].values()]))
    ctr, half = np.array([0.0, apex_y + 3.0, g[2] - 8.0]), np.array([13.0, 12.0, 10.0])
    reg = c.coords(ctr - half - 2, ctr + half + 2)
    if reg is not None:
        sl, (x, y, z), shp = reg
        f_out = _superellipse((x - ctr[0]) / (half[0] + 1.5), (y - ctr[1]) / (half[1] + 1.5), (z - ctr[2]) / (half[2] + 1.5))
        f_in = _superellipse((x - ctr[0]) / half[0], (y - ctr[1]) / half[1], (z - ctr[2]) / half[2])
        c.paint(sl, f_out <= 1.0, Tissue.BONE, sub_shape=shp)
        c.paint(sl, (f_in <= 1.0) & (np.abs(x - np.float32(sinus["sphenoid_septum"])) > 0.8), Tissue.SINUS_AIR,
                sub_shape=shp)


def _paint_ethmoid(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Ethmoid labyrinth: air cells with thin bony septa (a Voronoi partition) between the orbits."""
    sinus = an["sinus"]
    wall = np.float32(sinus["ethmoid_wall"])
    for n_side, sg in enumerate(geom["sides"].values()):
        yap = float(sg.apex[1] - sg.g[1])
        lo = np.array([1.2, sg.g[1] - 10.0, sg.g[2] - 13.0])
        hi = np.array([max(sg.medial) - sg.wall["medial"], sg.g[1] + yap - 5.0, sg.g[2] + 13.0])
        reg = c.side_coords(sg.sign, lo, hi)
        if reg is None:
            continue
        sl, (xp, y, z), shp = reg
        yr = y - np.float32(sg.g[1])
        xm = sg.walls(yr)[0]
        inside = (xp >= 1.2 + np.float32(sinus["septum_deviation"] * sg.sign * 0.3)) & (xp <= xm - np.float32(sg.wall["medial"]))
        inside = np.broadcast_to(inside, shp) & np.broadcast_to((z >= lo[2]) & (z <= hi[2]), shp)
        c.paint(sl, inside, Tissue.BONE_THIN)
        seeds = lo + sinus["ethmoid_seeds"][n_side][: sinus["ethmoid_cells"]] * (hi - lo)
        seeds[:, 0] = 2.0 + sinus["ethmoid_seeds"][n_side][: sinus["ethmoid_cells"], 0] * (hi[0] - 3.5)
        d1 = np.full(shp, np.inf, np.float32)
        d2 = np.full(shp, np.inf, np.float32)
        owner = np.zeros(shp, np.int8)
        for n, s in enumerate(seeds):
            d = np.sqrt((xp - np.float32(s[0])) ** 2 + (y - np.float32(s[1])) ** 2 + ((z - np.float32(s[2])) * 1.2) ** 2)
            d = np.broadcast_to(d, shp)
            closer = d < d1
            d2 = np.where(closer, d1, np.minimum(d2, d))
            owner = np.where(closer, np.int8(n), owner)
            d1 = np.where(closer, d, d1)
        edge = (xp >= 2.0) & (xp <= xm - np.float32(sg.wall["medial"]) - 0.4)
        edge = np.broadcast_to(edge, shp) & np.broadcast_to((z >= lo[2] + 0.8) & (z <= hi[2] - 0.8), shp)
        cells = inside & edge & (d2 - d1 > wall)
        filled = sinus["ethmoid_filled"][n_side][owner] < sinus["opacified"]
        c.paint(sl, cells & ~filled, Tissue.SINUS_AIR)
        c.paint(sl, cells & filled, Tissue.MUCOSA)


def _paint_tube(c: Canvas, sign: float, pts: np.ndarray, radii: np.ndarray, tissue: int, label: int = 0,
                where: Optional[Sequence[int]] = None) -> None:
    """A tube along a polyline (side-local points), radius interpolated along each segment."""
    pts = np.asarray(pts, float)
    lo, hi = pts.min(axis=0) - radii.max() - 1.0, pts.max(axis=0) + radii.max() + 1.0
    reg = c.side_coords(sign, lo, hi)
    if reg is None:
        return
    sl, (xp, y, z), shp = reg
    mask = np.zeros(shp, bool)
    for a, b, ra, rb in zip(pts[:-1], pts[1:], radii[:-1], radii[1:]):
        ab = b - a
        ll = float(ab @ ab)
        t = ((xp - np.float32(a[0])) * np.float32(ab[0]) + (y - np.float32(a[1])) * np.float32(ab[1])
             + (z - np.float32(a[2])) * np.float32(ab[2])) / np.float32(ll)
        t = np.clip(t, 0.0, 1.0)
        dx = xp - np.float32(a[0]) - t * np.float32(ab[0])
        dy = y - np.float32(a[1]) - t * np.float32(ab[1])
        dz = z - np.float32(a[2]) - t * np.float32(ab[2])
        r = np.float32(ra) + (np.float32(rb) - np.float32(ra)) * t
        mask |= np.broadcast_to(dx * dx + dy * dy + dz * dz <= r * r, shp)
    c.paint(sl, mask, tissue, label, where=where)


def _paint_y_tube(c: Canvas, sg: SideGeometry, path: Dict[str, Any], ext_h, ext_v, tissue: int, label: int,
                  y_max: Optional[float] = None) -> None:
    """A front-to-back structure given by its centre line and half-extents as functions of y."""
    ys = path["y"]
    if y_max is not None:
        keep = ys <= y_max
        ys = ys[keep]
        cx, cz, eh, ev = path["cx"][keep], path["cz"][keep], ext_h[keep], ext_v[keep]
    else:
        cx, cz, eh, ev = path["cx"], path["cz"], ext_h, ext_v
    if len(ys) < 2:
        return
    lo = np.array([(cx - eh).min() - 0.5, ys[0], (cz - ev).min() - 0.5])
    hi = np.array([(cx + eh).max() + 0.5, ys[-1], (cz + ev).max() + 0.5])
    reg = c.side_coords(sg.sign, lo, hi)
    if reg is None:
        return
    sl, (xp, y, z), shp = reg
    pcx, pcz, peh, pev = _lookup(np.stack([cx, cz, eh, ev]), float(ys[0]), float(ys[1] - ys[0]), y)
    within = (y >= np.float32(ys[0])) & (y <= np.float32(ys[-1]))
    inside = ((xp - pcx) / peh) ** 2 + ((z - pcz) / pev) ** 2 <= 1.0
    c.paint(sl, inside & within, tissue, label, sub_shape=shp)


def _paint_orbit(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any], side: str) -> None:
    sg: SideGeometry = geom["sides"][side]
    labels = ORBIT_LABELS[side]
    lo, hi = sg.box
    reg = c.side_coords(sg.sign, lo, hi)
    if reg is None:
        return
    sl, (xp, y, z), shp = reg
    g = sg.g
    yr = y - np.float32(g[1])
    zr_ = z - np.float32(g[2])
    xm, xl, zroof, zfloor = sg.walls(yr)
    rim = sg.rim
    y_rim = (np.float32(rim["y_mr"]) + np.float32((rim["y_lr"] - rim["y_mr"]) / (rim["x_l"] - rim["x_m"])) * (xp - np.float32(rim["x_m"]))
             + np.float32(rim["slope_z"]) * zr_)
    yap = np.float32(sg.apex[1] - g[1])
    w = sg.wall

    def section(dm, dl, dr, df):
        cx = (xm - dm + xl + dl) * 0.5
        hx = (xl + dl - xm + dm) * 0.5
        cz = (zroof + dr + zfloor - df) * 0.5
        hz = (zroof + dr - zfloor + df) * 0.5
        u = (xp - cx) / hx
        v = (zr_ - cz) / hz
        au, av = np.abs(u), np.abs(v)
        return au * au * au + av * av * av, u, v

    f_in, u, v = section(0.0, 0.0, 0.0, 0.0)
    f_out, _, _ = section(w["medial"], w["lateral"], w["roof"], w["floor"])
    f_rim, _, _ = section(rim["width"], rim["width"], rim["width"], rim["width"])
    cavity = (f_in <= 1.0) & (yr >= y_rim) & (yr <= yap)
    shell = (f_out <= 1.0) & (yr >= y_rim - 0.6) & (yr <= yap + 3.5) & ~cavity
    side_of = np.where(np.abs(u) >= np.abs(v), np.where(u > 0, 1, 0), np.where(v > 0, 2, 3))  # lat, med, roof, floor
    thin = (side_of == 0) | (side_of == 3) | ((side_of == 2) & (w["roof"] < 1.5))
    thin = thin & (yr < yap - 4.0)
    rim_ring = (f_rim <= 1.0) & (f_in > 1.0) & (yr >= y_rim - 1.5) & (yr <= y_rim + 5.0)
    c.paint(sl, rim_ring, Tissue.BONE, sub_shape=shp, where=(Tissue.SOFT, Tissue.FAT, Tissue.MUSCLE, Tissue.BONE,
                                                             Tissue.BONE_CANCELLOUS, Tissue.BONE_THIN, Tissue.SINUS_AIR))
    c.paint(sl, shell & thin, Tissue.BONE_THIN, sub_shape=shp)
    c.paint(sl, shell & ~thin, Tissue.BONE, sub_shape=shp)
    c.paint(sl, cavity, Tissue.ORBITAL_FAT, sub_shape=shp)
    # lacrimal gland in the superolateral front of the orbit (only inside the fat)
    ctr, half = sg.lacrimal
    reg2 = c.side_coords(sg.sign, ctr - half - 1, ctr + half + 1)
    if reg2 is not None:
        s2, (x2, y2, z2), sh2 = reg2
        ell = ((x2 - np.float32(ctr[0])) / half[0]) ** 2 + ((y2 - np.float32(ctr[1])) / half[1]) ** 2 \
            + ((z2 - np.float32(ctr[2])) / half[2]) ** 2 <= 1.0
        c.paint(s2, ell, Tissue.GLAND, sub_shape=sh2, where=(Tissue.ORBITAL_FAT,))
    for pts, radii, tissue in sg.tubes:
        _paint_tube(c, sg.sign, pts, radii, tissue)
    # recti (labelled), then optic nerve with sheath, then lids and globe
    for name in MUSCLES:
        mp = sg.muscles[name]
        _paint_y_tube(c, sg, mp, mp["ext_h"], mp["ext_v"], Tissue.EOM, labels[name])
    nv = sg.nerve
    ext_h, ext_v = nv["r"] * nv["k_h"], nv["r"] * nv["k_v"]
    _paint_y_tube(c, sg, nv, ext_h, ext_v, Tissue.NERVE_SHEATH, labels["ON"], y_max=nv["label_end_y"])
    core = np.maximum(nv["r"] - np.float32(nv["csf"]), 0.8)
    _paint_y_tube(c, sg, nv, core * nv["k_h"], core * nv["k_v"], Tissue.OPTIC_NERVE, labels["ON"], y_max=nv["label_end_y"])
    _paint_globe(c, an, sg, labels)


def _paint_globe(c: Canvas, an: Dict[str, Any], sg: SideGeometry, labels: Dict[str, int]) -> None:
    gl = sg.globe
    R, ah = gl["radius"], gl["axial_half"]
    lid = an["lid_thickness"]
    ext = max(R, ah) + lid + 4.5
    reg = c.side_coords(sg.sign, sg.g - ext, sg.g + ext)
    if reg is None:
        return
    sl, (xp, y, z), shp = reg
    vx, vy, vz = xp - np.float32(sg.g[0]), y - np.float32(sg.g[1]), z - np.float32(sg.g[2])
    ea, el, es = (np.asarray(e, np.float32) for e in (sg.e_a, sg.e_lat, sg.e_sup))
    a = vx * ea[0] + vy * ea[1] + vz * ea[2]
    lat = vx * el[0] + vy * el[1] + vz * el[2]
    sup = vx * es[0] + vy * es[1] + vz * es[2]
    b2 = lat * lat + sup * sup
    rho = np.sqrt(a * a + b2)
    # tendon bands of the recti on the globe surface, from where each leaves the globe to its insertion
    polar = np.degrees(np.arccos(np.clip(a / np.maximum(rho, 1e-3), -1.0, 1.0)))
    azim = np.degrees(np.arctan2(sup, lat))
    for name in MUSCLES:
        mp = sg.muscles[name]
        dpsi = (azim - np.float32(mp["meridian"]) + 180.0) % 360.0 - 180.0
        near = (polar >= np.float32(mp["polar_ins"])) & (polar <= np.float32(mp["polar_t"])) & (np.abs(dpsi) < 40.0)
        idx = np.flatnonzero(np.broadcast_to(near, shp))
        if not len(idx):
            continue
        p_, r_ = np.broadcast_to(polar, shp).ravel()[idx], np.broadcast_to(rho, shp).ravel()[idx]
        across = r_ * np.sin(np.radians(p_)) * np.radians(np.broadcast_to(dpsi, shp).ravel()[idx])
        d, wd = _lookup(mp["band"][2], mp["band"][0], mp["band"][1], p_)
        band = (np.abs(across) <= wd / 2) & (r_ >= R - 0.6) & (r_ <= R + d)
        mask = np.zeros(shp, bool)
        mask.ravel()[idx[band]] = True
        c.paint(sl, mask, Tissue.EOM, labels[name])
    cc = np.float32(gl["cornea_center_offset"])
    cr = np.float32(gl["cornea_radius"])
    ellip = (a / np.float32(ah - 0.3)) ** 2 + b2 / np.float32(R * R)
    corn2 = (a - cc) ** 2 + b2
    globe = (ellip <= 1.0) | ((corn2 <= cr * cr) & (a > 0))
    # lids: soft tissue over the front of the globe; an open palpebral fissure leaves the cornea in air
    cover = ((a / np.float32(ah + lid)) ** 2 + b2 / np.float32((R + lid) ** 2) <= 1.0) | \
        ((corn2 <= (cr + lid) ** 2) & (a > 0))
    lids = cover & ~globe & (a > np.float32(0.45 * R))
    if not an["lids_closed"]:
        fissure = (np.abs(sup) < 4.5) & (np.abs(lat) < 13.0) & (a > 0)
        c.paint(sl, fissure & ~globe & (a > np.float32(0.3 * R)) & (rho < np.float32(ah + lid + 4.0)), Tissue.AIR,
                sub_shape=shp)
        lids = lids & ~fissure
    c.paint(sl, lids, Tissue.SKIN, sub_shape=shp)
    t = np.float32(gl["sclera"])
    inner = ((a / np.float32(ah - 0.3 - t)) ** 2 + b2 / np.float32((R - t) ** 2) <= 1.0) | \
        ((corn2 <= (cr - 0.55) ** 2) & (a > 0))
    lens_c = np.float32(ah - 0.55 - gl["acd"] - gl["lens_thickness"] / 2)
    lens = ((a - lens_c) / np.float32(gl["lens_thickness"] / 2)) ** 2 + b2 / np.float32((gl["lens_diameter"] / 2) ** 2) <= 1.0
    c.paint(sl, globe, Tissue.SCLERA, sub_shape=shp)
    c.paint(sl, inner, Tissue.VITREOUS, sub_shape=shp)
    c.paint(sl, inner & (a > lens_c), Tissue.AQUEOUS, sub_shape=shp)
    c.paint(sl, lens & inner, Tissue.LENS, sub_shape=shp)


def _paint_marker(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> Optional[np.ndarray]:
    """A dense bead outside the skin on the patient's LEFT (+x), above the orbit crops: a side check."""
    ctr = marker_center(an, geom)
    reg = c.coords(ctr - 3.5, ctr + 3.5)
    if reg is not None:
        sl, (xx, yy, zz), shp = reg
        c.paint(sl, (xx - ctr[0]) ** 2 + (yy - ctr[1]) ** 2 + (zz - ctr[2]) ** 2 <= 2.5**2, Tissue.MARKER, sub_shape=shp)
    return ctr


def _paint_support(c: Canvas, acq: Dict[str, Any]) -> None:
    """Headrest cradle, cushion and table behind the head (scanner frame, never over the patient)."""
    hr = acq.get("headrest")
    if not hr:
        return
    yc, r_in, t = hr["center_y"], hr["radius"], hr["thickness"]
    z0, z1 = hr["z_range"]
    reg = c.coords((-r_in - t - 2, yc - 5, z0), (r_in + t + 2, yc + r_in + t + 2, z1), frame="scanner")
    if reg is not None:
        sl, (x, y, z), shp = reg
        r = np.sqrt(x * x + (y - np.float32(yc)) ** 2)
        back = y >= np.float32(yc + 0.25 * r_in)
        c.paint(sl, (r >= r_in) & (r <= r_in + t) & back, Tissue.HEADREST, sub_shape=shp, where=(Tissue.AIR,))
        if hr["cushion"]:
            c.paint(sl, (r < r_in) & back & (y >= np.float32(yc + 0.45 * r_in)), Tissue.CUSHION, sub_shape=shp,
                    where=(Tissue.AIR,))
    ty, tt = hr["table_y"], hr["table_thickness"]
    reg = c.coords((-230, ty, z0), (230, ty + tt, z1), frame="scanner")
    if reg is not None:
        sl, _, shp = reg
        c.paint(sl, np.ones((1, 1, 1), bool), Tissue.TABLE, sub_shape=shp, where=(Tissue.AIR,))


def paint_scene(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any], acq: Dict[str, Any], orbits: bool = True) -> None:
    """Paint the whole head on ``c``; ``orbits=False`` skips what lies inside the orbit boxes."""
    _paint_head(c, an, geom)
    _paint_face(c, an, geom)
    if orbits:
        for side in ("right", "left"):
            _paint_orbit(c, an, geom, side)
    _paint_marker(c, an, geom)
    _paint_support(c, acq)


def set_recess(an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Depth of the eye-socket recess of the face, so the skin lies just behind each corneal apex."""
    for sg in geom["sides"].values():
        x, z = sg.sign * sg.g[0], sg.g[2]
        apex_y = float(sg.g[1] - sg.globe["axial_half"])
        sg.recess = max(0.0, (apex_y + 3.0) - _front_y(an, x, z))


def marker_center(an: Dict[str, Any], geom: Dict[str, Any]) -> np.ndarray:
    h = an["head"]
    g = geom["globe_mean"]
    y, z = g[1] + 30.0, g[2] + 42.0
    rest = 1.0 - abs(y / h["b"]) ** 3 - ((z - h["zc"]) / h["c"]) ** 2
    return np.array([h["a"] * max(rest, 1e-3) ** (1 / 3) + 4.5, y, z])
