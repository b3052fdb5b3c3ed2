"""The orbit search itself: find both globes, judge the pair, accept it or refuse with a sentence.

:func:`search_orbits` ties the steps together on the working grid (:mod:`headseg.locate.work_grid`): the
globe candidates (:mod:`headseg.locate.globes`), the best pair by its checks (:mod:`headseg.locate.pairs`),
its centres refined on the original CT, and the field-of-view check measured again around the refined
centres (the crops that will actually be cut). The result is an :class:`OrbitSearchReport`.

The search is accepted when the confidence is at least :data:`MIN_CONFIDENCE` (0.8) and no check is below
:data:`MIN_CHECK` (0.4); otherwise :func:`locate_orbits` raises :class:`OrbitNotFoundError`, whose
message says what is missing (no eye in the field, one orbit cut off, the field cutting through the
orbits, a pair that is not below a cranium...) and how to go on (a box drawn by the user: ``--roi`` or
the Slicer Search box, :func:`headseg.locate.roi.boxes_from_roi`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.locate.boxes import SIDES, OrbitLocation, orbit_box
from headseg.locate.globes import _Candidate, _candidates, _ramp, _refine_center
from headseg.locate.pairs import FOV_RAMP, _best_pair, _PairEvaluation
from headseg.locate.work_grid import _fov_fraction, _WorkGrid

log = logging.getLogger(__name__)

__all__ = [
    "MIN_CHECK",
    "MIN_CONFIDENCE",
    "NOT_FOUND_ADVICE",
    "NOT_FOUND_MESSAGE",
    "OrbitNotFoundError",
    "OrbitSearchReport",
    "locate_orbits",
    "not_found_message",
    "search_orbits",
]

MIN_CONFIDENCE = 0.8  # geometric mean of the checks (OrbitSearchReport)
MIN_CHECK = 0.4  # and no single check below this

NOT_FOUND_ADVICE = (
    "draw a box around both orbits and run again (--roi CENTRE,SIZE in LPS mm on the command line, or the "
    "Search box, a markups ROI, in the Slicer module)."
)


class OrbitNotFoundError(InputError):
    """The search did not find both orbits with confidence; the user should draw a box around them.

    ``report`` is the :class:`OrbitSearchReport` of the refused search (None when raised elsewhere).
    """

    def __init__(self, message: str = "", report: Optional[OrbitSearchReport] = None) -> None:
        super().__init__(message or NOT_FOUND_MESSAGE)
        self.report = report


@dataclass
class OrbitSearchReport:
    """What the automatic search found and how sure it is.

    ``checks`` holds each check of :mod:`headseg.locate.pairs` as a plausibility in 0..1 (1 = like a
    typical head), ``confidence`` their geometric mean. The search is accepted (``found``) when the
    confidence reaches :data:`MIN_CONFIDENCE` and no check is below :data:`MIN_CHECK`. ``globes`` are the refined
    centres of the best pair even when it was refused; ``details`` the measured values (mm, HU,
    fractions) behind the checks; ``missing`` (empty when found) says in words what was not found and
    ``message`` is the refusal sentence shown to the user.
    """

    found: bool
    confidence: float
    checks: Dict[str, float] = field(default_factory=dict)
    details: Dict[str, float] = field(default_factory=dict)
    globes: Dict[str, np.ndarray] = field(default_factory=dict)
    missing: str = ""
    candidates: int = 0
    threshold: float = MIN_CONFIDENCE

    @property
    def message(self) -> str:
        return "" if self.found else not_found_message(self.missing)

    def summary(self) -> str:
        """One line: outcome, confidence and every check (for logs and the measurement tables)."""
        checks = ", ".join(f"{k} {v:.2f}" for k, v in self.checks.items())
        outcome = "found" if self.found else "refused"
        return f"orbit search {outcome}: confidence {self.confidence:.2f} (minimum {self.threshold}); {checks}"


def not_found_message(missing: str) -> str:
    """The refusal sentence: what is missing, and how to go on."""
    return f"Could not find both orbits in this CT: {missing}; {NOT_FOUND_ADVICE}"


NOT_FOUND_MESSAGE = not_found_message("no pair of eyes was found")


def search_orbits(volume: Volume) -> OrbitSearchReport:
    """Run the automatic search and judge its result; never raises for an image without orbits."""
    return _search_on(_WorkGrid(volume))


def locate_orbits(volume: Volume) -> List[OrbitLocation]:
    """Find both orbits automatically; returns [right, left] (``score`` = the search's confidence).

    Raises :class:`OrbitNotFoundError` (with the :class:`OrbitSearchReport`) when the search is not
    sure it found two eyes in a head; the message says what is missing and how to go on.
    """
    report = search_orbits(volume)
    log.info(report.summary())
    if not report.found:
        raise OrbitNotFoundError(report.message, report)
    return [OrbitLocation(side, report.globes[side], orbit_box(report.globes[side], side), report.confidence)
            for side in SIDES]  # fmt: skip


def _search_on(grid: _WorkGrid) -> OrbitSearchReport:
    """The search on a working grid: the best pair of candidates, refined, judged and explained."""
    cands = _candidates(grid, None)
    best = _best_pair(cands, grid)
    if best is None:
        return OrbitSearchReport(False, 0.0, missing=_nothing_found(grid, cands), candidates=len(cands))
    centers = {"right": _refine_center(grid, best.right.center), "left": _refine_center(grid, best.left.center)}
    # The checks stay those of the candidates on the work grid (what the pair was chosen and judged
    # by); only the field of view is measured again, for the crops that will actually be cut.
    fov = [_fov_fraction(grid, orbit_box(centers[s], s)) for s in SIDES]
    best.details["fov_right"], best.details["fov_left"] = fov
    best.checks["field_of_view"] = _ramp(min(fov), *FOV_RAMP)
    confidence = best.confidence
    found = confidence >= MIN_CONFIDENCE and min(best.checks.values()) >= MIN_CHECK
    report = OrbitSearchReport(found, confidence, dict(best.checks), dict(best.details), centers,
                               candidates=len(cands))  # fmt: skip
    if not found:
        report.missing = _what_is_missing(grid, best, centers)
    return report


def _fov_cut_hint(grid: _WorkGrid) -> str:
    """Where the field of view cuts through the body (the orbits may lie beyond that edge)."""
    top, bottom = bool(np.isfinite(grid.z_limits[1])), bool(np.isfinite(grid.z_limits[0]))
    if top and bottom:
        return " (the scan cuts the body off at its top and its bottom, so the eyes may lie above or below it)"
    if top:
        return " (the scan stops with the body cut off at its top, so the eyes may lie above it)"
    if bottom:
        return " (the scan starts with the body cut off at its bottom, so the eyes may lie below it)"
    return ""


def _nothing_found(grid: _WorkGrid, cands: List[_Candidate]) -> str:
    """What is missing when no pair passed the geometric gates (no body, no candidate, no pair)."""
    if not grid.body.any():
        return "the image holds no body"
    if not cands:
        return "no eye was found in the field of view" + _fov_cut_hint(grid)
    return ("no two eyes were found side by side (45-80 mm apart); one orbit may lie outside the field of view"
            + _fov_cut_hint(grid))  # fmt: skip


def _what_is_missing(grid: _WorkGrid, best: _PairEvaluation, centers: Dict[str, np.ndarray]) -> str:
    """What is missing when the best pair was refused: its weakest check in words (a check of the eyes
    themselves before the field of view, which may also cut a pair that is not eyes)."""
    d, weakest = best.details, best.weakest
    others = {k: v for k, v in best.checks.items() if k != "field_of_view"}
    if min(others.values()) < MIN_CHECK:  # not eyes: say why, even where the field also cuts the pair
        weakest = min(others, key=lambda k: others[k])
    elif best.checks["field_of_view"] < MIN_CHECK:
        weakest = "field_of_view"  # eyes in all but that: the scan does not cover them
    where = "the best pair of candidates ({})".format(
        " and ".join(f"{s} at LPS {', '.join(f'{v:.0f}' for v in centers[s])} mm" for s in SIDES))
    if weakest == "field_of_view":
        side = "right" if d["fov_right"] <= d["fov_left"] else "left"
        box = orbit_box(centers[side], side)
        edges = []
        for axis, (low, high) in enumerate((("right", "left"), ("front", "back"), ("bottom", "top"))):
            lo_pt, hi_pt = box.center_lps.copy(), box.center_lps.copy()
            lo_pt[axis], hi_pt[axis] = box.min_lps[axis] + 1.0, box.max_lps[axis] - 1.0
            inside = grid.inside_input(np.stack([lo_pt, hi_pt]))
            edges += [low] * (not inside[0]) + [high] * (not inside[1])
        cut = f" at its {' and '.join(edges)}" if edges else ""
        return (f"the field of view cuts through the {side} orbit{cut} (only {100 * d[f'fov_{side}']:.0f} % of its "
                "region is in the image)")  # fmt: skip
    if weakest == "globes":
        return (f"{where} does not look like two eyes (radius {d['radius_right_mm']:.0f}/{d['radius_left_mm']:.0f} mm, "
                f"content {d['hu_right']:.0f}/{d['hu_left']:.0f} HU, eyes ~11 mm and 0-30 HU)")  # fmt: skip
    if weakest == "distance":
        return f"{where} lies {d['distance_mm']:.0f} mm apart (eyes: 45-80 mm)"
    if weakest == "symmetry":
        return f"{where} is not symmetric about the head's midline"
    if weakest == "depth":
        front = max(d["front_right_mm"], d["front_left_mm"])
        return f"{where} does not lie just behind the skin of the face ({front:.0f} mm deep or behind bone)"
    if weakest == "orbit_walls":
        return f"{where} does not sit in bony orbits"
    return f"{where} does not lie below a cranium (brain above the eyes, the vertex 85-150 mm higher)"
