"""The drawing surface of the SYNTHETIC heads and the primitive solids painted on it.

:class:`Canvas` holds a tissue map (and optionally a label map) on any voxel grid and gives the physical
coordinates of the voxels in any box, in the anatomical frame of the head or in the scanner frame. Shapes
are implicit functions of physical position, evaluated only inside each structure's bounding box, so the
same anatomy can be painted on a coarse grid over the whole field of view and again on a fine grid around
the orbits (``imaging.py`` averages the fine grid down for partial volume).

The primitives here: super-ellipsoids, tubes along a polyline, and front-to-back tubes given by a centre
line and a cross-section as functions of the antero-posterior coordinate (the recti and the optic nerve;
the cross-section is stretched by the line's slope so that an oblique tube keeps its true thickness);
plus the fast interpolation helpers that the head geometry and the painting share. The tissue codes
(:class:`Tissue`) and the orbit label values (:data:`ORBIT_LABELS`) are what a canvas holds.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["Tissue", "ORBIT_LABELS", "Vector", "Canvas", "upsample", "smooth", "smoothstep", "lookup", "interp",
           "uniform_table", "superellipse", "paint_tube", "paint_y_tube"]


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


Vector = Union[Sequence[float], np.ndarray]  # a point, size or corner in mm: a tuple or an array


# -- interpolation -----------------------------------------------------------------------------------
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


def smoothstep(e0: float, e1: float, x):
    """0 below ``e0``, 1 above ``e1`` and a smooth cubic step between (float32 arrays)."""
    t = np.clip((x - np.float32(e0)) / np.float32(e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def lookup(table: np.ndarray, x0: float, dx: float, x) -> List[np.ndarray]:
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


def interp(x, xp: Sequence[float], fp: Sequence[float]) -> np.ndarray:
    """``np.interp`` (clamped at the ends) for large float32 arrays, via a uniform 0.25 mm table."""
    y0, dy, table = uniform_table(np.asarray(xp, float), (np.asarray(fp, float),))
    return lookup(table, y0, dy, x)[0]


def uniform_table(knots: np.ndarray, values: Sequence[np.ndarray], step: float = 0.25) -> Tuple[float, float, np.ndarray]:
    """(first x, step, rows) of ``values`` (piecewise linear over ``knots``) resampled every ``step``, for
    :func:`lookup`."""
    grid = np.arange(knots[0], knots[-1] + step, step)
    return float(grid[0]), step, np.stack([np.interp(grid, knots, v) for v in values]).astype(np.float32)


# -- the canvas ------------------------------------------------------------------------------------
def _frame_coords(lin: np.ndarray, off: np.ndarray, idx: Sequence[np.ndarray]) -> Tuple[np.ndarray, ...]:
    """(x, y, z) float32 arrays, broadcastable over k, j, i, of the frame ``lin @ (i, j, k) + off`` at the
    index values ``idx`` (i, j, k); axes the frame does not mix in are skipped, so a box stays separable."""
    shapes = [(1, 1, -1), (1, -1, 1), (-1, 1, 1)]
    out = []
    for row in range(3):
        value: Any = np.float32(off[row])
        for n in range(3):
            if abs(lin[row, n]) > 1e-12:
                value = value + np.float32(lin[row, n]) * idx[n].reshape(shapes[n])
        out.append(np.asarray(value, dtype=np.float32))
    return tuple(out)


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
        sub_shape = tuple(s.stop - s.start for s in slices)
        return slices, _frame_coords(lin, off, idx), sub_shape

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
        return _frame_coords(lin, off, idx)

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


def smooth(c: Canvas, sl, shp, step_mm: float, func) -> np.ndarray:
    """``func(x, y, z)`` (anatomical coordinates) evaluated on a coarse lattice and upsampled to the sub-box."""
    x, y, z = c.lattice(sl, step_mm)
    values = np.broadcast_to(func(x, y, z), np.broadcast_shapes(x.shape, y.shape, z.shape))
    return upsample(values, shp)


# -- primitive solids ------------------------------------------------------------------------------
def superellipse(u, v, w) -> np.ndarray:
    """|u|^3 + |v|^3 + |w|^3: a rounded box, inside where it is <= 1."""
    au, av, aw = np.abs(u), np.abs(v), np.abs(w)
    return au * au * au + av * av * av + aw * aw * aw


def paint_tube(c: Canvas, sign: float, pts: np.ndarray, radii: np.ndarray, tissue: int, label: int = 0,
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


def paint_y_tube(c: Canvas, sign: float, path: Dict[str, Any], ext_h, ext_v, tissue: int, label: int,
                 y_max: Optional[float] = None) -> None:
    """A front-to-back structure given by its centre line and half-extents as functions of y (side-local
    millimetres of the side ``sign``)."""
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
    reg = c.side_coords(sign, lo, hi)
    if reg is None:
        return
    sl, (xp, y, z), shp = reg
    pcx, pcz, peh, pev = lookup(np.stack([cx, cz, eh, ev]), float(ys[0]), float(ys[1] - ys[0]), y)
    within = (y >= np.float32(ys[0])) & (y <= np.float32(ys[-1]))
    inside = ((xp - pcx) / peh) ** 2 + ((z - pcz) / pev) ** 2 <= 1.0
    c.paint(sl, inside & within, tissue, label, sub_shape=shp)
