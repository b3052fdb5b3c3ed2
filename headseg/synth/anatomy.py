"""Random but plausible head anatomy for the SYNTHETIC anatomical phantoms (numbers, no voxels).

Everything here is in the *anatomical frame*: LPS millimetres of an upright head before the pose
rotation (x to the patient's left, y posterior, z superior, origin near the head's centre). Each orbit
is also described in its *side-local* frame (x' = distance lateral of the midline, so x' = -x on the
right and +x on the left; y and z unchanged), which lets one set of formulas draw both orbits while
every number can still differ between the sides.

Where numbers come from, each with its source ("S": a secondary or teaching source; "U": derived here or
not verified):

* inter-pupillary distance 63 mm, most adults 50-75 (Dodgson 2004); medial orbital walls ~26 mm apart in
  front and ~33 mm apart behind the globes (AJNR 1986;7:265); orbital entrance 40 x 35 mm, depth 40-45 mm,
  lateral walls at ~45 deg to the medial wall (a review of orbital anatomy; AAO Basic and Clinical Science
  Course; S);
* posterior globe 9.4 (5.9-12.8) mm behind the interzygomatic line (Ozgen & Ariyurek, AJR 1998);
* globe axial length 24.4 / 23.8 mm (Wang 2015), diameters 23.0-23.3 mm (Yalcin 2004), cornea 11.7 mm
  across, lens 4.05-4.2 mm thick, anterior chamber 2.7-2.9 mm (Wang 2015), lens diameter ~9-10 mm (S);
* rectus insertions from the limbus MR 5.5, IR 6.5, LR 6.9, SR 7.7 mm (Tillaux, Kim IOVS 2022), their
  clock positions SR 93 deg and IR 90.6 deg from MR (Barton 2025), insertion widths SR 10.5, IR 8.4 mm
  (Yalcin 2004); belly width x thickness IR 8.83 x 3.60, SG 9.20 x 3.20, MR 9.45 x 3.48, LR 9.65 x 3.23 mm
  (J Korean Ophthalmol Soc 2001) with CT thickness ranges of Ozgen 1998; size order IR > MR > SR > LR;
* rectus volumes SR / IR / MR / LR ~ 510 / 570 / 710 / 670 mm3 (MRI, back-calculated from Clark & Demer,
  IOVS 2016; U), total EOM 1.6-1.9 cm3 on CT (Du 2019); a QC band of 0.3-1.2 cm3 per normal rectus (U);
* optic nerve sheath 4.9-5.2 mm across 3 mm behind the globe, 4.35-4.45 at 8 mm and 3.55-3.65 mm near the
  canal (Vaiman 2015); intraorbital nerve 25-30 mm long with slack, 0.36-0.41 cm3 on CT (Du 2019);
* thyroid eye disease: enlargement ratio SR complex 2.3x, IR 2.1x, MR 1.7x, LR 1.6x, SO 1.8x (Cureus 2024),
  involvement SG 63 %, MR 61 %, IR 57 % (Nugent 1990); superior oblique 9.3 -> 22.9 mm2 (J AAPOS 2019);
  orbital fat HU higher in GO (Regensburg 2011).
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

__all__ = ["MUSCLES", "draw_anatomy", "TED_ENLARGEMENT", "TED_INVOLVEMENT"]

MUSCLES = ("SR", "LR", "MR", "IR")

# Mean relaxed rectus volumes (mm3). MRI SR/IR/MR/LR ~510/570/710/670 (back-calculated from Clark & Demer,
# IOVS 2016; U) and CT totals of 1.6-1.9 cm3 for all muscles (Du 2019); these means sit between the two
# (total ~2.3 cm3 per orbit).
_VOLUME_MEAN = {"SR": 520.0, "LR": 600.0, "MR": 650.0, "IR": 590.0}
_VOLUME_CV = 0.14  # per-muscle coefficient of variation (MRI SDs are 11-13 %)
# Belly thickness (max, mm) and width, after the Korean CT table (width x thickness) and Ozgen's ranges.
_BELLY_THICKNESS = {"SR": 3.9, "LR": 3.5, "MR": 4.1, "IR": 4.4}
_BELLY_WIDTH = {"SR": 9.2, "LR": 9.6, "MR": 9.4, "IR": 8.8}
_INSERTION_WIDTH = {"SR": 10.5, "LR": 9.2, "MR": 10.3, "IR": 8.4}  # SR, IR: Yalcin; LR, MR: textbook (S)
_INSERTION_FROM_LIMBUS = {"SR": 7.7, "LR": 6.9, "MR": 5.5, "IR": 6.5}  # spiral of Tillaux
# Meridian of each muscle around the globe's anterior pole (0 = lateral, 90 = superior, degrees);
# SR 93 deg and IR 90.6 deg from MR (Barton 2025), LR opposite MR.
_MERIDIAN = {"LR": 0.0, "SR": 87.0, "MR": 180.0, "IR": 270.6}
# Polar angle (deg from the anterior pole) where each muscle leaves the globe toward the apex: LR wraps
# furthest (arc of contact LR ~12 mm, MR ~7 mm; StatPearls).
_TANGENT_POLAR = {"SR": 100.0, "LR": 112.0, "MR": 94.0, "IR": 99.0}

# Tendon lengths (mm; classic textbook values, U: no source read): the belly keeps its
# thickness on the globe until this far from the insertion.
_TENDON_LENGTH = {"SR": 5.8, "LR": 8.8, "MR": 3.7, "IR": 5.5}

# Thyroid eye disease (TED): CT volume ratio when the muscle is involved, and how often it is involved.
TED_ENLARGEMENT = {"SR": 2.3, "IR": 2.1, "MR": 1.7, "LR": 1.6, "SO": 1.8}
TED_INVOLVEMENT = {"SR": 0.63, "MR": 0.61, "IR": 0.57, "LR": 0.35, "SO": 0.4}


def _n(rng: np.random.Generator, mean: float, sd: float, lo: Optional[float] = None,
       hi: Optional[float] = None) -> float:
    value = float(rng.normal(mean, sd))
    if lo is not None:
        value = max(lo, value)
    if hi is not None:
        value = min(hi, value)
    return value


def _draw_ted(rng: np.random.Generator, probability: float, force: Optional[bool]) -> Dict[str, Any]:
    """Per side and muscle volume factors. Bilateral but asymmetric: each side gets its own severity.

    The same number of random values is drawn whether or not the case has TED, so forcing ``ted`` on
    or off changes nothing else about the anatomy of a seed."""
    draw = rng.random()
    ted = bool(draw < probability) if force is None else bool(force)
    out: Dict[str, Any] = {"ted": ted, "sides": {}}
    names = (*MUSCLES, "SO")
    for side in ("right", "left"):
        severity = float(rng.uniform(0.15, 1.0))
        involved_draw = rng.random(len(names))
        amount = rng.uniform(0.35, 1.15, len(names))
        proptosis = float(severity * rng.uniform(1.0, 5.0))
        factors = {m: 1.0 for m in names}
        if ted:
            for n, m in enumerate(names):
                if involved_draw[n] < min(0.95, TED_INVOLVEMENT[m] * (0.6 + 0.8 * severity)):
                    factors[m] = float(1.0 + (TED_ENLARGEMENT[m] - 1.0) * amount[n] * (0.5 + 0.5 * severity))
        out["sides"][side] = {"factors": factors, "severity": severity if ted else 0.0,
                              "proptosis_mm": proptosis if ted else 0.0}
    fallback = "left" if rng.random() < 0.5 else "right"
    if ted and all(max(s["factors"].values()) == 1.0 for s in out["sides"].values()):
        out["sides"][fallback]["factors"]["IR"] = TED_ENLARGEMENT["IR"]  # TED always shows somewhere
    return out


def draw_anatomy(rng: np.random.Generator, ted_probability: float = 0.35, ted: Optional[bool] = None,
                 variation: float = 1.0) -> Dict[str, Any]:
    """All random shape numbers of one synthetic head (mm, degrees; anatomical frame).

    ``variation`` scales every random deviation (0 = the mean anatomy); ``ted`` forces the thyroid eye
    disease variant on (True) or off (False); None draws it with ``ted_probability``.

    One long function on purpose: its random draws run in one fixed order, and any change of that order
    changes the head of every seed (tests and trained models rely on a seed's head staying the same).
    """
    v = float(variation)

    def n(mean: float, sd: float, lo: Optional[float] = None, hi: Optional[float] = None) -> float:
        return _n(rng, mean, sd * v, lo, hi) if v > 0 else float(mean)

    male = bool(rng.random() < 0.5)
    size = 1.0 + (0.02 if male else -0.02) + n(0.0, 0.03)
    head = {
        "a": 73.0 * size, "b": 96.0 * size, "c": 112.0 * size, "zc": 14.0,
        "skin": n(2.2, 0.4, 1.4, 3.5), "fat": n(3.5, 1.2, 1.5, 7.0),
        "outer_table": n(1.8, 0.3, 1.2, 2.8), "diploe": n(3.0, 0.8, 1.5, 5.0),
        "inner_table": n(1.4, 0.3, 0.9, 2.2), "csf": n(1.8, 0.6, 0.8, 3.5),
        "temporalis": n(10.0, 2.5, 5.0, 16.0),
    }
    ipd = n(63.0 if male else 61.0, 3.3, 54.0, 72.0)  # Dodgson: mean 63, most adults 50-75
    globe_y = -71.0 * size + n(0.0, 1.5)
    globe_z = n(0.0, 1.0)
    ted_draw = _draw_ted(rng, ted_probability, ted)
    gaze = (n(0.0, 4.0, -10.0, 10.0), n(0.0, 3.0, -8.0, 8.0))  # conjugate: toward +x, up (deg)

    sides: Dict[str, Any] = {}
    for side, sign in (("right", -1.0), ("left", 1.0)):
        t = ted_draw["sides"][side]
        globe_r = n(11.75 if male else 11.6, 0.25, 11.0, 12.5)  # diameters 23.0-23.3 mm (Yalcin)
        axial = n(24.4 if male else 23.8, 1.1, 21.8, 26.5)  # axial length (Wang 2015)
        apex_depth = n(37.5, 1.8, 33.5, 42.0)  # globe centre to the annulus of Zinn (orbit 40-45 deep)
        muscles = {}
        for m in MUSCLES:
            # kept inside the QC band of a normal rectus (0.3-1.2 cm3) with a margin
            volume = float(np.clip(_VOLUME_MEAN[m] * (1.0 + n(0.0, _VOLUME_CV)) * size**3, 330.0, 1050.0))
            muscles[m] = {
                "volume_mm3": volume * t["factors"][m],
                "normal_volume_mm3": volume,
                "ted_factor": t["factors"][m],
                "belly_thickness": _BELLY_THICKNESS[m] * (1 + n(0.0, 0.1)),
                "belly_width": _BELLY_WIDTH[m] * (1 + n(0.0, 0.07)),
                "insertion_width": _INSERTION_WIDTH[m] + n(0.0, 0.7),
                "insertion_from_limbus": max(3.5, _INSERTION_FROM_LIMBUS[m] + n(0.0, 0.7)),
                "tendon_length": max(2.0, _TENDON_LENGTH[m] + n(0.0, 0.8)),
                "meridian_deg": _MERIDIAN[m] + n(0.0, 3.0),
                "tangent_polar_deg": _TANGENT_POLAR[m] + n(0.0, 3.0),
                "wall_gap": n(1.6 if m == "SR" else 1.0, 0.35, 0.5, 2.5),  # fat (and levator) to the wall
                "belly_peak": n(0.52, 0.05, 0.4, 0.65),  # thickest at mid-orbit (fraction apex -> globe)
                "offset": n(0.0, 1.0, -2.5, 2.5),  # along the wall
            }
        sides[side] = {
            "sign": sign,
            "globe": {
                "center": np.array([ipd / 2 + n(0.0, 0.5), globe_y + n(0.0, 0.6) - t["proptosis_mm"],
                                    globe_z + n(0.0, 0.5)]),  # side-local (x', y, z)
                "radius": globe_r,
                "axial_length": axial,
                "cornea_radius": n(7.8, 0.25, 7.2, 8.4),
                "sclera": n(0.9, 0.15, 0.6, 1.2),
                "lens_thickness": n(4.1, 0.45, 3.3, 5.0),
                "lens_diameter": n(9.5, 0.35, 8.8, 10.2),
                "acd": n(2.8, 0.4, 2.0, 3.6),
            },
            "orbit": {
                "apex_depth": apex_depth,
                "apex_x": n(17.0, 1.0, 14.5, 19.5),  # optic canal: posteromedial
                "apex_z": n(1.5, 1.0, -1.0, 4.0),
                "medial_front": n(13.3, 1.0, 11.5, 16.0),  # bony interorbital distance 26 mm / 2
                "medial_mid": n(16.5, 1.2, 14.5, 20.0),  # widest behind the globes 33.7 / 2
                "lateral_rim": n(ipd / 2 + 18.5, 1.2),
                "lateral_rim_behind_globe": n(9.4, 1.5, 5.9, 12.8),  # back of globe behind the rim line
                "roof": n(18.5, 1.2, 16.0, 21.5),
                "floor": n(-18.5, 1.2, -21.5, -16.0),
                "floor_apex": n(-3.5, 1.0, -6.0, -1.0),
                "roof_apex": n(5.5, 1.0, 3.0, 8.0),
                "wall": {  # rendered thicknesses (mm); thin plates get a partial-volume HU (scene.py)
                    "medial": n(0.7, 0.12, 0.5, 1.0), "floor": n(0.9, 0.2, 0.6, 1.4),
                    "roof": n(1.3, 0.3, 0.8, 2.2), "lateral": n(3.0, 0.8, 1.8, 5.0),
                },
                "rim_width": n(5.5, 1.0, 3.5, 8.0),
                "medial_rim_ahead": n(8.5, 1.5, 5.0, 12.0),  # medial rim in front of the lateral rim
            },
            "muscles": muscles,
            "so_radius": n(1.72, 0.15, 1.3, 2.1) * math.sqrt(t["factors"]["SO"]),  # 9.3 mm2 (J AAPOS 2019)
            "nerve": {
                "volume_mm3": n(390.0, 45.0, 290.0, 500.0),  # CT 0.36-0.41 cm3 (Du 2019)
                "slack": n(1.10, 0.04, 1.03, 1.2) - 0.012 * t["proptosis_mm"],  # path / chord length
                "shape": [n(0.0, 1.0) for _ in range(4)],
                "sheath_csf": n(0.45, 0.1, 0.25, 0.7),
                "exit_nasal_deg": n(15.0, 3.0),
            },
            "lacrimal": {"offset": np.array([n(11.0, 1.0), n(1.0, 2.0), n(13.0, 1.0)]),
                         "size": np.array([n(4.0, 0.5, 3.0, 5.5), n(9.0, 1.2, 6.5, 12.0), n(3.3, 0.5, 2.3, 4.5)])},
            "sov_radius": n(1.1, 0.25, 0.6, 1.8),
            "ted": t,
        }
    sinus = {
        "ethmoid_cells": int(rng.integers(7, 13)),
        "ethmoid_wall": n(0.8, 0.12, 0.6, 1.1),
        "maxillary_scale": n(1.0, 0.12, 0.7, 1.3),
        "frontal": bool(rng.random() < 0.85),
        "frontal_size": n(1.0, 0.25, 0.5, 1.5),
        "septum_deviation": n(0.0, 2.0, -4.5, 4.5),
        "opacified": float(rng.uniform(0.0, 0.25)),  # share of ethmoid cells filled (mucosal disease)
        "sphenoid_septum": n(0.0, 3.0, -6.0, 6.0),
        # Ethmoid air cells: seed points of a Voronoi partition (unit-box coordinates) per side, and
        # which cells are filled with mucosa / fluid.
        "ethmoid_seeds": rng.random((2, 12, 3)),
        "ethmoid_filled": rng.random((2, 12)),
        "maxillary_fluid": [bool(rng.random() < 0.12), bool(rng.random() < 0.12)],
    }
    fillings = int(rng.choice([0, 0, 1, 2, 3, 4]))
    teeth = {"present": bool(rng.random() < 0.9), "arch_y": n(-82.0, 3.0) * size, "z": globe_z - n(60.0, 4.0),
             # metal fillings on the molars: (x, radius) per filling; x sign = patient side
             "fillings": [(float(rng.choice([-1.0, 1.0]) * rng.uniform(14.0, 25.0)), float(rng.uniform(1.5, 2.8)))
                          for _ in range(fillings)]}
    return {
        "male": male, "size": size, "head": head, "ipd": ipd, "gaze_deg": gaze, "sides": sides,
        "sinus": sinus, "teeth": teeth, "ted": ted_draw["ted"],
        "lids_closed": bool(rng.random() < 0.6), "lid_thickness": n(2.2, 0.4, 1.4, 3.2),
    }
