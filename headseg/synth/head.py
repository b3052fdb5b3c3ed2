"""The geometry of the SYNTHETIC head, derived from the drawn numbers (anatomy.py): no voxels yet.

:func:`build_geometry` turns one head's numbers into the shapes the painting needs: per orbit a
:class:`SideGeometry` (globe frame, wall profiles of the bony orbit, the recti's and the optic nerve's
centre lines and cross-sections, the unlabelled neighbour tubes, bounding boxes), all in side-local
millimetres (x' lateral of the midline, y posterior, z superior), which lets one set of formulas draw
both orbits while every number can still differ between the sides. The head's outer surface
(:func:`head_shape`, with eye-socket recesses and a nose) and the floor of the cranial cavity
(:func:`skull_floor`) are functions of anatomical position, evaluated where they are painted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Tuple

import numpy as np

from headseg.synth.anatomy import MUSCLES
from headseg.synth.shapes import Tissue, interp, lookup, smoothstep, uniform_table

__all__ = ["SideGeometry", "build_geometry", "to_anat", "head_shape", "front_y",
           "skull_floor", "set_recess", "marker_center"]


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
            self._table = uniform_table(self.knots, (self.medial, self.lateral, self.roof, self.floor))
        y0, dy, table = self._table
        return tuple(lookup(table, y0, dy, y_rel))

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
    is nearly sagittal, lateral wall at ~45 deg, floor rising toward the apex (textbook orbital anatomy,
    e.g. the AAO Basic and Clinical Science Course; anatomy.py names the sources)."""
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


def _tendon_band(R: float, m: Dict[str, Any], polar_t: float, polar_ins: float, depth: Tuple[float, float],
                 width: Tuple[float, float]) -> Tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """The tendon of a rectus, a band on the globe from polar angle ``polar_t`` (where it leaves the globe)
    to ``polar_ins`` (its insertion): (the polar angles, the band's thickness and width at each, its volume
    in mm3). ``depth`` and ``width`` are each (where it leaves the globe, at the insertion)."""
    d_t, d_ins = depth
    w_t, w_ins = width
    thetas = np.linspace(polar_t, polar_ins, 24)
    frac = (polar_t - thetas) / (polar_t - polar_ins)
    arc = R * np.radians(thetas - polar_ins)  # distance from the insertion along the globe
    tl = m["tendon_length"]
    band_d = np.interp(arc, [0.0, tl, tl + 3.0, 1e3], [d_ins, 0.9, max(d_t, 1.4), d_t])
    band_w = w_t + (w_ins - w_t) * frac
    band_volume = float(np.trapezoid(band_w * band_d * (R + band_d / 2), np.radians(polar_t - thetas)))
    return thetas, band_d, band_w, band_volume


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
    thetas, band_d, band_w, band_volume = _tendon_band(R, m, polar_t, polar_ins, (d_t, d_ins), (w_t, w_ins))
    p_t = sg.g + (R + d_t / 2) * sg.direction(polar_t, m["meridian_deg"])
    y_t = float(p_t[1] - sg.g[1])
    ys = np.arange(y_t, yap + 1e-6, 0.25)
    s = (yap - ys) / (yap - y_t)  # 0 at the annulus, 1 where it meets the globe
    base = d_o + (d_t - d_o) * s
    bump = np.sin(np.pi * np.clip(s, 0, 1) ** gamma) ** 1.5
    origin_pt = sg.apex + 3.8 * np.array([direction_ann[0], 0.0, direction_ann[1]])
    beta = 1.0 - smoothstep(y_t, y_t + 9.0, ys)
    alpha = smoothstep(yap - 9.0, yap, ys)
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


# -- the head's surface and skull base --------------------------------------------------------------
def head_shape(anatomy: Dict[str, Any], geom: Dict[str, Any], x, y, z):
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
    height = interp(zz, [-50, -44, -38, -20, 0, 6, 12], [0, 8, 21, 13, 6, 3, 0])
    half = interp(zz, [-50, -38, -20, 0, 12], [14, 15, 9, 6, 6])
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


def front_y(anatomy: Dict[str, Any], x: float, z: float) -> float:
    """y of the (unrecessed) face surface at (x, z)."""
    h = anatomy["head"]
    rest = 1.0 - abs(x / h["a"]) ** 3 - ((z - h["zc"]) / h["c"]) ** 2
    return -h["b"] * max(rest, 1e-3) ** (1 / 3)


def skull_floor(geom: Dict[str, Any], x, y):
    """z of the floor of the cranial cavity: orbital roofs in front, middle fossa behind the apex."""
    sgs = list(geom["sides"].values())
    g = geom["globe_mean"]
    y_rel = np.asarray(y - np.float32(g[1]))
    knots = sgs[0].knots
    roof = np.mean([sg.roof + sg.wall["roof"] for sg in sgs], axis=0) + g[2]
    yap = float(np.mean([sg.apex[1] for sg in sgs]) - g[1])
    shape = np.broadcast_shapes(np.shape(x), np.shape(y))
    ant = interp(y_rel, knots, roof)
    ax = np.abs(x)
    ant = ant + (np.float32(g[2] + 13.0) - ant) * (1.0 - smoothstep(10.0, 16.0, ax))  # ethmoid roof
    sella = (1.0 - smoothstep(8.0, 15.0, ax)) * (1.0 - smoothstep(yap + 12.0, yap + 24.0, y_rel))
    middle = np.float32(g[2] - 14.0) + np.float32(10.0) * sella
    wall = np.float32(yap - 2.0) - np.float32(16.0) * smoothstep(18.0, 55.0, ax)  # greater wing: curved, lateral ahead
    floor = ant + (middle - ant) * smoothstep(-5.0, 5.0, y_rel - wall)
    floor = floor + (np.float32(g[2] - 42.0) - floor) * smoothstep(yap + 40.0, yap + 60.0, y_rel)
    return np.broadcast_to(floor, shape)


def set_recess(an: Dict[str, Any], geom: Dict[str, Any]) -> None:
    """Depth of the eye-socket recess of the face, so the skin lies just behind each corneal apex."""
    for sg in geom["sides"].values():
        x, z = sg.sign * sg.g[0], sg.g[2]
        apex_y = float(sg.g[1] - sg.globe["axial_half"])
        sg.recess = max(0.0, (apex_y + 3.0) - front_y(an, x, z))


def marker_center(an: Dict[str, Any], geom: Dict[str, Any]) -> np.ndarray:
    h = an["head"]
    g = geom["globe_mean"]
    y, z = g[1] + 30.0, g[2] + 42.0
    rest = 1.0 - abs(y / h["b"]) ** 3 - ((z - h["zc"]) / h["c"]) ** 2
    return np.array([h["a"] * max(rest, 1e-3) ** (1 / 3) + 4.5, y, z])
