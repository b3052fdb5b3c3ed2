"""SYNTHETIC anatomical head CTs with orbit ground truth, for training orbit models that carry over to
real CT (SynthSeg-style: anatomy from label maps, appearance randomised per case).

Not patient data and not derived from patient images: every shape is drawn from published sizes (the
sources are named in ``anatomy.py``) with per-case random variation. Use for training and tests, never to
judge clinical accuracy.

* ``anatomy.py`` draws the numbers of one head (orbits, globes, recti, nerve, sinuses, thyroid eye
  disease variant, unequal sides);
* ``head.py`` derives the head's geometry from them (orbit walls, the recti's and the nerve's paths,
  the head's surface and skull base);
* ``shapes.py`` is the canvas (tissue codes and orbit labels on any grid, physical LPS millimetres, any
  orientation) and the primitive solids painted on it;
* ``scene.py`` paints the whole head on a canvas, structure after structure;
* ``imaging.py`` draws the scanner side (voxel size, pose, field of view, HU per tissue, blur, noise,
  bias, metal streaks, headrest) and forms the image with partial volume;
* ``phantoms.py`` is the older, simpler geometric phantom (:func:`~headseg.synth.phantoms.make_head_phantom`),
  independent of the rest but for its rotation matrix, which the pose here uses too.

:func:`make_synthetic_head` returns one case; :func:`write_synthetic_cases` writes case folders
(``image.nrrd``, ``labels.nrrd``, ``meta.json``) that ``headseg-train`` reads.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from headseg.geometry import Volume
from headseg.synth.anatomy import MUSCLES, draw_anatomy
from headseg.synth.head import build_geometry, marker_center, to_anat
from headseg.synth.imaging import HU_RANGES, choose_grid, draw_acquisition, render_case
from headseg.synth.phantoms import rotation_matrix_deg
from headseg.synth.shapes import ORBIT_LABELS, Tissue

__all__ = ["SynthCase", "Tissue", "ORBIT_LABELS", "HU_RANGES", "make_synthetic_head", "write_synthetic_cases",
           "DEFAULT_MAX_VOXELS"]

DEFAULT_MAX_VOXELS = 8e6  # caps the field of view of the finest grids (generation time, file size)
ORBIT_KEYS = {"SR": "superior_rectus", "LR": "lateral_rectus", "MR": "medial_rectus", "IR": "inferior_rectus",
              "ON": "optic_nerve"}


@dataclass
class SynthCase:
    """One synthetic head CT: image (int16 HU), orbit labels, tissue map and what was drawn."""

    image: Volume
    labels: Volume
    tissues: Volume
    globe_centers_lps: Dict[str, np.ndarray]
    apex_lps: Dict[str, np.ndarray]
    marker_center_lps: np.ndarray
    metadata: Dict[str, Any] = field(default_factory=dict)


def make_synthetic_head(
    seed: int = 0,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[np.ndarray] = None,
    extent_mm: Optional[Sequence[float]] = None,
    center_lps: Optional[Sequence[float]] = None,
    pose_deg: Optional[Sequence[float]] = None,
    ted: Optional[bool] = None,
    ted_probability: float = 0.35,
    variation: float = 1.0,
    noise: bool = True,
    artefacts: bool = True,
    max_voxels: float = DEFAULT_MAX_VOXELS,
    acquisition: Optional[Dict[str, Any]] = None,
) -> SynthCase:
    """Make one SYNTHETIC anatomical head CT; the same ``seed`` gives the same anatomy on any grid.

    Everything not given is drawn from the seed: ``spacing`` (i, j, k mm; in-plane 0.3-1.0, slices
    0.5-3), ``extent_mm``/``center_lps`` (field of view; drawn: cut anywhere around the head with both
    orbits in view), ``pose_deg`` (head rotation about x, y, z), ``ted`` (thyroid eye disease variant).
    ``direction`` (columns = i, j, k axes in LPS; default axial) may be oblique or RAS-like.
    ``noise=False`` / ``artefacts=False`` switch off the noise / bias, streaks and reconstruction circle;
    ``acquisition`` overrides any drawn scanner entry (see ``imaging.draw_acquisition``).
    """
    start = time.perf_counter()
    rng = np.random.default_rng(seed)
    anatomy = draw_anatomy(rng, ted_probability=ted_probability, ted=ted, variation=variation)
    geom = build_geometry(anatomy)
    acq = draw_acquisition(rng, anatomy, geom)
    if pose_deg is not None:
        acq["pose_deg"] = tuple(float(a) for a in pose_deg)
    if acquisition:
        acq.update(acquisition)
    grid = choose_grid(acq, anatomy, geom, spacing, direction, extent_mm, center_lps, max_voxels)
    noise_rng = np.random.default_rng([int(seed), 7])
    out = render_case(anatomy, geom, acq, grid, noise_rng, noise=noise, artefacts=artefacts)
    rotation = rotation_matrix_deg(acq["pose_deg"])
    geometry = (grid["spacing"], grid["origin"], grid["direction"])
    sides = geom["sides"]
    metadata = _summary(seed, anatomy, geom, acq, grid, out)
    metadata["seconds"] = round(time.perf_counter() - start, 3)
    return SynthCase(
        image=Volume(out["image"], *geometry),
        labels=Volume(out["labels"], *geometry),
        tissues=Volume(out["tissues"], *geometry),
        globe_centers_lps={s: rotation @ to_anat(sg.sign, sg.g) for s, sg in sides.items()},
        apex_lps={s: rotation @ to_anat(sg.sign, sg.apex) for s, sg in sides.items()},
        marker_center_lps=rotation @ marker_center(anatomy, geom),
        metadata=metadata,
    )


def _summary(seed: int, anatomy, geom, acq, grid, out) -> Dict[str, Any]:
    """JSON-ready description of the case: what was drawn and the true structure volumes."""
    per_side = {}
    for side, sg in geom["sides"].items():
        p = anatomy["sides"][side]
        per_side[side] = {
            "ted_factors": {m: round(float(v), 3) for m, v in p["ted"]["factors"].items()},
            "proptosis_mm": round(float(p["ted"]["proptosis_mm"]), 2),
            "muscle_model_volume_mm3": {m: round(sg.muscles[m]["volume_mm3"], 1) for m in MUSCLES},
            "belly_max_thickness_mm": {m: round(sg.muscles[m]["belly_max_thickness"], 2) for m in MUSCLES},
            "nerve_model_volume_mm3": round(float(sg.nerve["volume_mm3"]), 1),
            "nerve_length_mm": round(sg.nerve["path_length"], 1),
            "globe_radius_mm": round(float(sg.globe["radius"]), 2),
            "axial_length_mm": round(float(sg.globe["axial_length"]), 2),
        }
    return {
        "synthetic": True,
        "generator": "headseg.synth (anatomical)",
        "description": "SYNTHETIC head CT drawn from published anatomy (not a patient, not derived from patient images)",
        "seed": int(seed),
        "ted": bool(anatomy["ted"]),
        "male": bool(anatomy["male"]),
        "lids_closed": bool(anatomy["lids_closed"]),
        "spacing_mm": [round(float(s), 4) for s in grid["spacing"]],
        "shape_kji": [int(n) for n in grid["shape"]],
        "pose_deg": [round(float(a), 2) for a in acq["pose_deg"]],
        "noise_hu": round(float(acq["noise_hu"]), 1),
        "blur_mm": [round(float(b), 2) for b in acq["blur_mm"]],
        "headrest": acq["headrest"] is not None,
        "metal_fillings": len(anatomy["teeth"]["fillings"]) if anatomy["teeth"]["present"] else 0,
        "hu": {Tissue.NAMES[c]: round(float(v), 1) for c, v in acq["hu"].items()},
        "sides": per_side,
        "label_volumes_fine_mm3": {int(k): round(v, 1) for k, v in out["fine_volumes_mm3"].items()},
        "subvoxels_kji": {k: [int(n) for n in v] for k, v in out["factors"].items()},
        "contoured": [f"{ORBIT_KEYS[m]}_{side}" for side in ("right", "left") for m in (*MUSCLES, "ON")],
    }


def write_synthetic_cases(out_dir: str, n_cases: int, seed: int = 0, prefix: str = "synth",
                          progress: Optional[Callable[[int, int], None]] = None, **kwargs) -> List[str]:
    """Write ``n_cases`` cases as ``<out_dir>/<prefix>_XXX/{image.nrrd, labels.nrrd, meta.json}``.

    Case ``n`` uses seed ``seed + n``; ``kwargs`` go to :func:`make_synthetic_head`. ``meta.json`` holds
    the drawn numbers and lists every orbit structure as contoured (``headseg-train`` reads it).
    """
    from headseg.io import write_volume

    if n_cases < 0:
        raise ValueError(f"n_cases must be >= 0, got {n_cases}.")
    os.makedirs(out_dir, exist_ok=True)
    folders = []
    for n in range(int(n_cases)):
        start = time.perf_counter()
        case = make_synthetic_head(seed=int(seed) + n, **kwargs)
        folder = os.path.join(out_dir, f"{prefix}_{n:03d}")
        os.makedirs(folder, exist_ok=True)
        write_volume(case.image, os.path.join(folder, "image.nrrd"), overwrite=True)
        write_volume(case.labels, os.path.join(folder, "labels.nrrd"), overwrite=True)
        meta = dict(case.metadata)
        meta["seconds_with_writing"] = round(time.perf_counter() - start, 3)
        with open(os.path.join(folder, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
        folders.append(folder)
        if progress is not None:
            progress(n + 1, int(n_cases))
    return folders
