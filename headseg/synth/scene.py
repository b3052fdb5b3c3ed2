"""Paints the SYNTHETIC anatomical head (tissue codes and orbit labels) on any voxel grid: the
composition of the scene.

:func:`paint_scene` paints, in this order, the head (skin, fat, temporalis, skull, CSF, brain), the face
(zygomas, palate and teeth, sinuses, nasal cavity), both orbits (bony walls, fat, lacrimal gland, obliques
and vessels, the labelled recti and optic nerve, lids and globe), a side marker and the headrest. Later
structures overwrite earlier ones; a labelled structure keeps its label only where nothing painted later
covers it (the globe is painted last in each orbit, so muscles and nerve stop at its surface).

The shapes are those of ``head.py`` (derived from the numbers of ``anatomy.py``, which names their
sources); the canvas and the primitive solids are ``shapes.py``.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from headseg.synth.anatomy import MUSCLES
from headseg.synth.head import SideGeometry, front_y, head_shape, marker_center, skull_floor
from headseg.synth.shapes import (
    ORBIT_LABELS,
    Canvas,
    Tissue,
    interp,
    lookup,
    paint_tube,
    paint_y_tube,
    smooth,
    smoothstep,
    superellipse,
)

__all__ = ["paint_scene"]

# what the facial bones may overwrite (not the skin, fat or air around the head)
_INNER_TISSUES = (Tissue.SOFT, Tissue.MUSCLE, Tissue.BONE, Tissue.BONE_CANCELLOUS, Tissue.CSF, Tissue.BRAIN)


def paint_scene(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any], acq: Dict[str, Any], orbits: bool = True) -> None:
    """Paint the whole head on ``c``; ``orbits=False`` skips what lies inside the orbit boxes."""
    _paint_head(c, an, geom)
    _paint_face(c, an, geom)
    if orbits:
        for side in ("right", "left"):
            _paint_orbit(c, an, geom, side)
    _paint_marker(c, an, geom)
    _paint_support(c, acq)


def _paint_head(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """The head in layers under its surface: skin, fat, temporalis, skull (tables and diploe of the vault,
    the base), CSF and brain; everything else is painted over it."""
    h = an["head"]
    reg = c.coords((-h["a"] - 3, -h["b"] - 30, h["zc"] - h["c"] - 3), (h["a"] + 3, h["b"] + 3, h["zc"] + h["c"] + 3))
    if reg is None:
        return
    sl, (x, y, z), shp = reg
    step = 1.2
    depth = smooth(c, sl, shp, step, lambda x, y, z: head_shape(an, geom, x, y, z))
    g = geom["globe_mean"]

    def temporalis(x, y, z):
        lat = smoothstep(0.55, 0.8, np.abs(x) / np.float32(h["a"]))
        return (np.float32(h["temporalis"]) * lat * smoothstep(g[1] + 3.0, g[1] + 15.0, y)
                * (1.0 - smoothstep(20.0, 45.0, y)) * smoothstep(g[2] - 32.0, g[2] - 15.0, z)
                * (1.0 - smoothstep(g[2] + 45.0, g[2] + 70.0, z)))

    temporal = smooth(c, sl, shp, 3.0, temporalis)
    above = smooth(c, sl, shp, step, lambda x, y, z: z - skull_floor(geom, x, y))  # mm above the floor
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
    base_t = smooth(c, sl, shp, 3.0, lambda x, y, z: np.float32(1.2) + np.float32(2.8) * smoothstep(
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


def _paint_face(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Facial bones, sinuses and nasal cavity (painted before the orbits, which overwrite them), in this
    order: a later structure overwrites an earlier one."""
    _paint_zygomas(c, geom)
    _paint_palate_and_teeth(c, an, geom)
    _paint_frontal_sinus(c, an, geom)
    _paint_nasal_cavity(c, an, geom)
    _paint_maxillary_sinuses(c, an, geom)
    _paint_ethmoid(c, an, geom)
    _paint_sphenoid_sinus(c, an, geom)


def _paint_zygomas(c: Canvas, geom: Dict[str, Any]) -> None:
    """Zygoma body and arch, per side."""
    for sg in geom["sides"].values():
        lr, y_lr = sg.rim["x_l"], sg.g[1] + sg.rim["y_lr"]
        ctr = np.array([lr + 1.0, y_lr - 4.0, sg.g[2] - 20.0])
        half = np.array([9.0, 10.0, 9.0])
        reg = c.side_coords(sg.sign, ctr - half - 2, ctr + half + 2)
        if reg is not None:
            sl, (xp, y, z), shp = reg
            f = superellipse((xp - ctr[0]) / half[0], (y - ctr[1]) / half[1], (z - ctr[2]) / half[2])
            c.paint(sl, f <= 1.0, Tissue.BONE, sub_shape=shp, where=_INNER_TISSUES)
            f2 = superellipse((xp - ctr[0]) / (half[0] - 2), (y - ctr[1]) / (half[1] - 2), (z - ctr[2]) / (half[2] - 2))
            c.paint(sl, f2 <= 1.0, Tissue.BONE_CANCELLOUS, sub_shape=shp, where=(Tissue.BONE,))
        arch = (np.array([[lr + 3.0, y_lr, sg.g[2] - 20.0], [lr + 9.0, sg.g[1] + 60.0, sg.g[2] - 22.0]]),
                np.array([3.2, 3.6]))
        paint_tube(c, sg.sign, arch[0], arch[1], Tissue.BONE, where=_INNER_TISSUES)


def _paint_palate_and_teeth(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Hard palate, teeth (when the head has them) and metal fillings."""
    g = geom["globe_mean"]
    zt = an["teeth"]["z"]
    reg = c.coords((-20, g[1] - 24, g[2] - 51), (20, g[1] + 30, g[2] - 46))
    if reg is not None:
        sl, (x, y, z), shp = reg
        c.paint(sl, np.ones((1, 1, 1), bool), Tissue.BONE, sub_shape=shp, where=_INNER_TISSUES)
    if an["teeth"]["present"]:
        ay = an["teeth"]["arch_y"]
        reg = c.coords((-30, ay - 6, zt - 1), (30, ay + 50, g[2] - 46))
        if reg is not None:
            sl, (x, y, z), shp = reg
            curve = ay + 0.045 * x * x
            along = np.abs(y - curve) < 4.5
            arch = along & (np.abs(x) < 28) & (y < ay + 42)
            ridge = arch & (z > zt + 8)
            c.paint(sl, ridge, Tissue.BONE_CANCELLOUS, sub_shape=shp, where=_INNER_TISSUES)
            teeth = arch & (z <= zt + 8) & (z >= zt) & (np.cos(np.pi * x / 7.5) ** 2 > 0.12)
            c.paint(sl, teeth, Tissue.TEETH, sub_shape=shp)
        for fx, fr in an["teeth"]["fillings"]:
            ctr = np.array([fx, ay + 0.045 * fx * fx, zt + 2.0])
            reg = c.coords(ctr - fr - 1, ctr + fr + 1)
            if reg is not None:
                sl, (x, y, z), shp = reg
                ball = (x - ctr[0]) ** 2 + (y - ctr[1]) ** 2 + (z - ctr[2]) ** 2 <= fr * fr
                c.paint(sl, ball, Tissue.METAL, sub_shape=shp)


def _paint_frontal_sinus(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Frontal sinus: air between the tables behind the glabella."""
    h = an["head"]
    g = geom["globe_mean"]
    sinus = an["sinus"]
    if sinus["frontal"]:
        fs = sinus["frontal_size"]
        zf = g[2] + 27.0
        yf = front_y(an, 0.0, zf) + 4.0 + h["skin"] + h["fat"] + h["outer_table"] + 2.0
        ctr, half = np.array([0.0, yf, zf]), np.array([14.0 * fs, 4.0 + 1.5 * fs, 9.0 * fs])
        reg = c.coords(ctr - half - 1, ctr + half + 1)
        if reg is not None:
            sl, (x, y, z), shp = reg
            f = ((x - ctr[0]) / half[0]) ** 2 + ((y - ctr[1]) / half[1]) ** 2 + ((z - ctr[2]) / half[2]) ** 2
            cell = (f <= 1.0) & (np.abs(x - np.float32(sinus["septum_deviation"])) > 0.8)
            c.paint(sl, cell, Tissue.SINUS_AIR, sub_shape=shp, where=(Tissue.BONE, Tissue.BONE_CANCELLOUS, Tissue.CSF,
                                                                      Tissue.BRAIN, Tissue.SOFT))


def _paint_nasal_cavity(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Nasal cavity: narrow olfactory cleft between the ethmoids, wider below, septum, turbinates, nasal bones."""
    h = an["head"]
    g = geom["globe_mean"]
    sinus = an["sinus"]
    reg = c.coords((-17, g[1] - 27, g[2] - 49), (17, g[1] + 47, g[2] + 10))
    if reg is not None:
        sl, (x, y, z), shp = reg
        zz = z - np.float32(g[2])
        half = interp(zz, [-49, -44, -25, -13, -10.5, 10], [9, 13, 13.5, 10.5, 2.6, 2.2])
        yr = y - np.float32(g[1])
        depth = smooth(c, sl, shp, 1.2, lambda x, y, z: head_shape(an, geom, x, y, z))
        front = interp(zz, [-49, -40, -20, 0, 10], [-26, -27, -22, -12, -8])
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


def _paint_maxillary_sinuses(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Maxillary sinuses under the orbit floors."""
    h = an["head"]
    soft_min = h["skin"] + h["fat"]
    sinus = an["sinus"]
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
        f_out = superellipse((xp - ctr[0]) / (half[0] + 1.2), (y - ctr[1]) / (half[1] + 1.2), (z - ctr[2]) / (half[2] + 1.2))
        f_in = superellipse((xp - ctr[0]) / half[0], (y - ctr[1]) / half[1], (z - ctr[2]) / half[2])
        depth = smooth(c, sl, shp, 1.2, lambda x, y, z: head_shape(an, geom, x, y, z))
        ok = (depth >= soft_min + 1.0) & np.broadcast_to(xp >= 12.5, shp)
        c.paint(sl, (f_out <= 1.0) & ok & (z <= top + 0.3), Tissue.BONE_THIN, sub_shape=None)
        air = (f_in <= 1.0) & ok & (z <= top - 0.9) & np.broadcast_to(xp >= 14.0, shp)
        c.paint(sl, air, Tissue.SINUS_AIR)
        if sinus["maxillary_fluid"][n_side]:
            c.paint(sl, air & np.broadcast_to(z < ctr[2] - 4.0, shp), Tissue.MUCOSA)


def _paint_sphenoid_sinus(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Sphenoid sinus below and between the optic canals."""
    g = geom["globe_mean"]
    sinus = an["sinus"]
    apex_y = float(np.mean([sg.apex[1] for sg in geom["sides"].values()]))
    ctr, half = np.array([0.0, apex_y + 3.0, g[2] - 8.0]), np.array([13.0, 12.0, 10.0])
    reg = c.coords(ctr - half - 2, ctr + half + 2)
    if reg is not None:
        sl, (x, y, z), shp = reg
        f_out = superellipse((x - ctr[0]) / (half[0] + 1.5), (y - ctr[1]) / (half[1] + 1.5), (z - ctr[2]) / (half[2] + 1.5))
        f_in = superellipse((x - ctr[0]) / half[0], (y - ctr[1]) / half[1], (z - ctr[2]) / half[2])
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


def _paint_orbit(c: Canvas, an: Dict[str, Any], geom: Dict[str, Any], side: str) -> None:
    """One orbit: rim and bony walls (thin where they are), fat, lacrimal gland, the unlabelled tubes, the
    labelled recti and optic nerve (with its sheath), then lids and globe."""
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
        paint_tube(c, sg.sign, pts, radii, tissue)
    # recti (labelled), then optic nerve with sheath, then lids and globe
    for name in MUSCLES:
        mp = sg.muscles[name]
        paint_y_tube(c, sg.sign, mp, mp["ext_h"], mp["ext_v"], Tissue.EOM, labels[name])
    nv = sg.nerve
    ext_h, ext_v = nv["r"] * nv["k_h"], nv["r"] * nv["k_v"]
    paint_y_tube(c, sg.sign, nv, ext_h, ext_v, Tissue.NERVE_SHEATH, labels["ON"], y_max=nv["label_end_y"])
    core = np.maximum(nv["r"] - np.float32(nv["csf"]), 0.8)
    paint_y_tube(c, sg.sign, nv, core * nv["k_h"], core * nv["k_v"], Tissue.OPTIC_NERVE, labels["ON"], y_max=nv["label_end_y"])
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
        d, wd = lookup(mp["band"][2], mp["band"][0], mp["band"][1], p_)
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
