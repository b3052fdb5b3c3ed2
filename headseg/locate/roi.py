"""A box drawn by the user overrides the automatic search (``--roi`` on the command line, the Search box
in Slicer): :func:`boxes_from_roi` finds the globes inside it without the search's refusal and splits it
into a right and a left orbit region, or keeps it whole for one orbit."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from headseg.geometry import Volume
from headseg.locate.boxes import SIDES, OrbitLocation, Point, RegionBox, _split_box
from headseg.locate.globes import _candidates, _refine_center
from headseg.locate.pairs import _best_pair
from headseg.locate.search import MIN_CHECK
from headseg.locate.work_grid import AIR_HU, _WorkGrid

__all__ = ["boxes_from_roi"]


def boxes_from_roi(center_lps: Point, size_mm: Point, volume: Volume) -> List[OrbitLocation]:
    """Orbit regions from a user ROI (axis-aligned LPS box), overriding the automatic search.

    An ROI holding both globes is split at the midline between them into a right and a left half. An
    ROI holding one orbit is returned whole for that side, the side being decided by where the ROI
    lies relative to the head's midline (centre of mass of the head), or by the globe found in it.
    """
    roi = RegionBox(np.asarray(center_lps, float), np.asarray(size_mm, float))
    grid = _WorkGrid(volume)
    globes, score = _find_globes_in(grid, roi)
    midline = _head_midline_x(grid, (roi.min_lps[2], roi.max_lps[2]))
    if set(globes) == set(SIDES):
        split_x = float((globes["right"][0] + globes["left"][0]) / 2)
    elif not globes and roi.min_lps[0] < midline - 20.0 and roi.max_lps[0] > midline + 20.0:
        split_x = midline  # wide ROI across the midline, no globe visible: trust the anatomy
    else:
        if globes:
            side = next(iter(globes))
        else:
            side = "left" if roi.center_lps[0] > midline else "right"
        return [OrbitLocation(side, globes.get(side), roi, score)]
    return [
        OrbitLocation(side, globes.get(side), _split_box(roi, split_x, side), score)
        for side in SIDES
    ]


def _find_globes_in(grid: _WorkGrid, region: RegionBox) -> Tuple[Dict[str, np.ndarray], float]:
    """Globes inside a user's region: the best pair when there is one, else one convincing globe."""
    cands = _candidates(grid, region)
    pair = _best_pair(cands, grid)
    if pair is not None:
        return {"right": _refine_center(grid, pair.right.center),
                "left": _refine_center(grid, pair.left.center)}, pair.confidence  # fmt: skip
    if cands:
        best = cands[0]
        if best.plausibility >= MIN_CHECK:  # inside a user ROI one convincing globe is enough
            side = _side_of(grid, best.center)
            return {side: _refine_center(grid, best.center)}, best.plausibility
    return {}, 0.0


def _head_midline_x(grid: _WorkGrid, z_range: Optional[Tuple[float, float]] = None) -> float:
    """LPS x of the head's centre of mass (body voxels), optionally within a z range."""
    body = grid.body & (grid.hu > AIR_HU)
    if z_range is not None:
        z = grid.origin[2] + np.arange(body.shape[0]) * grid.spacing
        rows = (z >= z_range[0]) & (z <= z_range[1])
        if rows.any() and body[rows].any():
            body = body[rows]
    if not body.any():
        return float(grid.origin[0] + (grid.hu.shape[2] - 1) * grid.spacing / 2)
    x_counts = body.sum(axis=(0, 1))
    x = grid.origin[0] + np.arange(len(x_counts)) * grid.spacing
    return float((x_counts * x).sum() / x_counts.sum())


def _side_of(grid: _WorkGrid, point_lps: np.ndarray) -> str:
    """The patient's side of a point: left where its LPS x exceeds the head's midline."""
    return "left" if point_lps[0] > _head_midline_x(grid) else "right"
