"""Where the orbits are: the search that finds both orbits on a head CT and the crops the model sees.

The SV-net paper (section 2.B; README.md, "Data and licences") crops a fixed-size region per orbit from
the axial slices that cover the muscles and the optic nerve. Here that crop is automated, in steps that
each live in one module (each module's docstring gives the details):

1. **The working grid** (:mod:`headseg.locate.work_grid`): the CT averaged and resampled onto ~2 mm LPS
   voxels around the body, noisy scans smoothed, the soft-tissue, fat and body masks, and what the scanner
   did not reconstruct marked outside the field of view.
2. **Globe candidates** (:mod:`headseg.locate.globes`): balls of soft tissue just under the skin with
   open air in front, each with a plausibility as a globe (size, vitreous content, orbital fat around,
   ball shape); the refinement of a centre by a sphere fit on the original CT.
3. **Pairs** (:mod:`headseg.locate.pairs`): candidates side by side, judged on seven checks (globes,
   distance, symmetry, depth, orbit walls, cranium, field of view); the confidence is their geometric
   mean and the best pair wins.
4. **The search** (:mod:`headseg.locate.search`): :func:`search_orbits` ties the steps together and
   returns an :class:`OrbitSearchReport`; :func:`locate_orbits` accepts the pair (confidence >= 0.8, no
   check below 0.4) or raises :class:`OrbitNotFoundError` with a sentence saying what is missing.
5. **Region per orbit and crop grid** (:mod:`headseg.locate.boxes`): :func:`orbit_box` around the globe
   and the muscle cone behind it, :func:`orbit_crop_grid` the model's input grid (left orbits mirrored
   through the grid's geometry).
6. **A box drawn by the user** (:mod:`headseg.locate.roi`): :func:`boxes_from_roi` overrides steps 1-4.

The side is decided by physical LPS x (the patient's left has the larger x), never by an array index.
Measured on all 223 OpenKBP CTs, two real CTs and phantoms with scanner effects: docs/orbit_search.md.

The modules import one way only: boxes <- work_grid <- globes <- pairs <- search <- roi.
"""

from headseg.locate.boxes import SIDES, OrbitLocation, RegionBox, orbit_box, orbit_crop_grid
from headseg.locate.roi import boxes_from_roi
from headseg.locate.search import (
    MIN_CHECK,
    MIN_CONFIDENCE,
    NOT_FOUND_ADVICE,
    NOT_FOUND_MESSAGE,
    OrbitNotFoundError,
    OrbitSearchReport,
    locate_orbits,
    not_found_message,
    search_orbits,
)

__all__ = [
    "MIN_CHECK",
    "MIN_CONFIDENCE",
    "NOT_FOUND_ADVICE",
    "NOT_FOUND_MESSAGE",
    "SIDES",
    "OrbitLocation",
    "OrbitNotFoundError",
    "OrbitSearchReport",
    "RegionBox",
    "boxes_from_roi",
    "locate_orbits",
    "not_found_message",
    "orbit_box",
    "orbit_crop_grid",
    "search_orbits",
]
