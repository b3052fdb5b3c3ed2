"""A label-free scorecard for an orbit model on a real CT: what physics and symmetry say a correct model
must do, measured without any muscle label.

No orbit CT with muscle labels is public, so a model cannot be scored against truth on real scans. It
can be scored against itself on transformed copies of the same scan, where the right answer is known:

* **plausibility** (``headseg.measure.plausibility``): volumes, ratios and muscle HU inside the normal adult
  bands of ``headseg.measure.bands``;
* **protocol invariance**: the same CT re-imaged with thicker slices (each new slice the mean of the
  old slices it covers, as a scanner reconstructs thicker slices) must give each side's four recti
  within ``PROTOCOL_TOTAL_PCT`` and each structure within its repeatability bound;
* **mirror equivariance**: the CT mirrored left to right must give each structure back on the other
  side within ``MIRROR_PCT``;
* **sensitivity to growth**: one rectus thickened by 1 mm into the orbital fat beside it, with the
  muscle's own HU and the scan's own noise, must be reported within ``INSERTION_POINTS`` percentage
  points of the inserted change, with no other structure beyond its repeatability bound;
* **resolution**: whether the scan can resolve a rectus at all (``headseg.validation``).

Passing says the model behaves as a measuring tool must on this scan; it does not say its outline is the
anatomist's (a model that always outlines the levator with the superior rectus passes every check).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from scipy import ndimage

from headseg.errors import InputError
from headseg.geometry import Volume

__all__ = ["PROTOCOL_TOTAL_PCT", "MIRROR_PCT", "INSERTION_POINTS", "INSERTION_MM", "Check", "Scorecard",
           "reimage_thick_slices", "mirror_left_right", "insert_growth", "orbit_scorecard"]

PROTOCOL_TOTAL_PCT = 10.0
MIRROR_PCT = 5.0
INSERTION_POINTS = 10.0
INSERTION_MM = 1.0
#: Re-imaging thicknesses (mm); one not thicker than the scan's own slices is skipped.
PROTOCOL_THICKNESS_MM = (2.0, 3.0)
#: The rectus thickened in the insertion test, and its side.
INSERTION_STRUCTURE = "inferior_rectus_left"

Segmenter = Callable[[Volume], Volume]


@dataclass
class Check:
    """One line of the scorecard."""

    name: str
    passed: bool
    detail: str
    values: Dict[str, Any] = field(default_factory=dict)


@dataclass
class Scorecard:
    checks: List[Check]
    volumes_cm3: Dict[str, float]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def as_dict(self) -> Dict[str, Any]:
        return {"passed": self.passed, "volumes_cm3": self.volumes_cm3,
                "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail, "values": c.values}
                           for c in self.checks]}


# -- transformed copies of a CT -----------------------------------------------------------------------
def reimage_thick_slices(ct: Volume, thickness_mm: float) -> Volume:
    """``ct`` as a scanner would reconstruct it with ``thickness_mm`` slices as far apart: each new slice
    the exact mean of the old slices it covers (partial slices weighted by their overlap). The in-plane
    grid and the direction are kept; the first new slice starts where the first old one starts."""
    old = float(ct.spacing[2])
    if thickness_mm <= old:
        raise InputError(f"Re-imaging needs slices thicker than the scan's own {old:.2f} mm.")
    count = int(np.floor(ct.shape[0] * old / thickness_mm))
    if count < 1:
        raise InputError("The scan is thinner than one re-imaged slice.")
    edges_old = np.arange(ct.shape[0] + 1) * old  # along k, from the start of the first old slice
    edges_new = np.arange(count + 1) * thickness_mm
    weights = np.clip(np.minimum(edges_new[1:, None], edges_old[None, 1:])
                      - np.maximum(edges_new[:-1, None], edges_old[None, :-1]), 0.0, None) / thickness_mm
    array = np.tensordot(weights, ct.array.astype(np.float32), axes=(1, 0))
    origin = tuple(np.asarray(ct.origin) + ct.direction[:, 2] * (thickness_mm - old) / 2.0)
    return Volume(np.round(array).astype(ct.array.dtype), (ct.spacing[0], ct.spacing[1], thickness_mm), origin,
                  ct.direction)


def mirror_left_right(ct: Volume) -> Volume:
    """The patient mirrored left to right in place: the array flipped along the index axis that runs
    most nearly along LPS x, the geometry kept (the head stays where it was, its sides swap)."""
    axis_ijk = int(np.argmax(np.abs(ct.direction[0, :])))
    return ct.with_array(np.flip(ct.array, axis=2 - axis_ijk).copy())


def insert_growth(ct: Volume, labelmap: Volume, value: int, thickness_mm: float = INSERTION_MM,
                  seed: int = 0) -> tuple:
    """(grown CT, added volume in cm3): the structure ``value`` of ``labelmap`` thickened by
    ``thickness_mm`` in the slice plane into the fat around it (-300 to -30 HU, unlabelled), the new
    voxels given the muscle's median HU plus noise of the muscle's own spread (its HU's standard
    deviation), as thyroid eye disease thickens a muscle's belly."""
    muscle = labelmap.array == value
    if not muscle.any():
        raise InputError("The structure to thicken is empty in this segmentation.")
    far = 1e6  # no growth along k: the slice plane only
    sampling = (far, ct.spacing[1], ct.spacing[0])
    distance = ndimage.distance_transform_edt(~muscle, sampling=sampling)
    hu = ct.array
    grow = (distance <= thickness_mm + 1e-6) & ~muscle & (labelmap.array == 0) & (hu > -300) & (hu < -30)
    inside = hu[muscle].astype(np.float64)
    rng = np.random.default_rng(seed)
    values = np.median(inside) + rng.normal(0.0, float(inside.std()), int(grow.sum()))
    out = hu.copy()
    out[grow] = np.round(values).astype(hu.dtype)
    return ct.with_array(out), float(grow.sum()) * ct.voxel_volume_mm3 / 1000.0


# -- the scorecard --------------------------------------------------------------------------------------
def _volumes(labelmap: Volume, label_set) -> Dict[str, float]:
    from headseg.measure.volumes import volume_table

    return {row.key: row.volume_cm3 for row in volume_table(labelmap, label_set)}


def _change_pct(before: float, after: float) -> float:
    return 100.0 * (after - before) / before if before > 0 else float("nan")


def _other_side(key: str) -> str:
    return key[: -len("_right")] + "_left" if key.endswith("_right") else key[: -len("_left")] + "_right"


def orbit_scorecard(ct: Volume, segment: Segmenter, label_set, bounds_pct: Dict[str, float],
                    thicknesses_mm: Sequence[float] = PROTOCOL_THICKNESS_MM,
                    progress: Optional[Callable[[str], None]] = None) -> Scorecard:
    """The scorecard of one real CT. ``segment`` maps a CT to its orbit label map (the pipeline with the
    model under test); ``bounds_pct`` the repeatability bound per structure base key
    (``headseg.review.compare.repeatability_bounds``)."""
    from headseg.measure.plausibility import orbit_plausibility
    from headseg.validation import orbit_resolution_note

    say = progress or (lambda _text: None)
    say("baseline")
    base_labels = segment(ct)
    base = _volumes(base_labels, label_set)
    checks: List[Check] = []
    plaus = orbit_plausibility(ct, base_labels, label_set)
    checks.append(Check("plausible", plaus["plausible"], "; ".join(plaus["failed"]) or "every band holds",
                        {"muscle_mean_hu": plaus["muscle_mean_hu"]}))
    note = orbit_resolution_note(ct)
    checks.append(Check("resolution", note is None, note or "fine enough to resolve a rectus"))
    for thickness in thicknesses_mm:
        if thickness <= ct.spacing[2] + 1e-3:
            continue
        say(f"{thickness:g} mm slices")
        checks.append(_protocol_check(ct, segment, label_set, base, bounds_pct, thickness))
    say("mirrored")
    checks.append(_mirror_check(ct, segment, label_set, base))
    say("thickened rectus")
    checks.append(_insertion_check(ct, segment, label_set, base_labels, base, bounds_pct))
    return Scorecard(checks, {k: round(v, 4) for k, v in base.items()})


def _bound(key: str, label_set, bounds_pct: Dict[str, float]) -> float:
    from headseg.review.compare import DEFAULT_BOUND_PCT

    base_key = label_set.by_key(key).base_key if key in label_set else key.rsplit("_", 1)[0]
    return bounds_pct.get(base_key, DEFAULT_BOUND_PCT)


def _protocol_check(ct, segment, label_set, base, bounds_pct, thickness) -> Check:
    thick = _volumes(segment(reimage_thick_slices(ct, thickness)), label_set)
    changes = {k: round(_change_pct(base[k], thick.get(k, 0.0)), 1) for k in base}
    totals = {k: v for k, v in changes.items() if k.startswith("extraocular_muscles")}
    problems = [f"{k} {v:+.1f} %" for k, v in totals.items() if not abs(v) <= PROTOCOL_TOTAL_PCT]
    problems += [f"{k} {v:+.1f} % (bound {_bound(k, label_set, bounds_pct):.0f} %)" for k, v in changes.items()
                 if k not in totals and not abs(v) <= _bound(k, label_set, bounds_pct)]
    detail = "; ".join(problems) or (f"recti totals {', '.join(f'{v:+.1f} %' for v in totals.values())}, every "
                                     "structure within its bound")
    return Check(f"protocol {thickness:g} mm", not problems, detail, {"change_pct": changes})


def _mirror_check(ct, segment, label_set, base) -> Check:
    mirrored = _volumes(segment(mirror_left_right(ct)), label_set)
    changes = {k: round(_change_pct(base[k], mirrored.get(_other_side(k), 0.0)), 1)
               for k in base if k.endswith(("_right", "_left"))}
    problems = [f"{k} {v:+.1f} %" for k, v in changes.items() if not abs(v) <= MIRROR_PCT]
    detail = "; ".join(problems) or f"every structure back on the other side within {MIRROR_PCT:.0f} %"
    return Check("mirror", not problems, detail, {"change_pct": changes})


def _insertion_check(ct, segment, label_set, base_labels, base, bounds_pct) -> Check:
    key = INSERTION_STRUCTURE
    grown_ct, added = insert_growth(ct, base_labels, label_set.by_key(key).label)
    inserted = 100.0 * added / base[key]
    grown = _volumes(segment(grown_ct), label_set)
    reported = _change_pct(base[key], grown.get(key, 0.0))
    group = next(g for g, keys in label_set.groups.items() if key in keys)
    others = {k: round(_change_pct(base[k], grown.get(k, 0.0)), 1) for k in base if k not in (key, group)}
    problems = []
    if not abs(reported - inserted) <= INSERTION_POINTS:
        problems.append(f"{key} reported {reported:+.1f} % for {inserted:+.1f} % inserted")
    problems += [f"{k} {v:+.1f} % (bound {_bound(k, label_set, bounds_pct):.0f} %)" for k, v in others.items()
                 if not abs(v) <= _bound(k, label_set, bounds_pct)]
    detail = "; ".join(problems) or f"{key}: {reported:+.1f} % reported for {inserted:+.1f} % inserted"
    return Check("insertion", not problems, detail,
                 {"inserted_pct": round(inserted, 1), "reported_pct": round(reported, 1), "others_pct": others})
