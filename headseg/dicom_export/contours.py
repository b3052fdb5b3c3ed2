"""Contours of a 2D mask along its pixel edges ("crack following"), and their even-odd rasterisation.

Every polygon vertex is a pixel corner, so a pixel lies inside the polygon exactly when it belongs to
the mask and the contour area equals the pixel area; holes are inner contours (even-odd rule, as
treatment planning systems read them). Where two pixels touch only at a corner the contour is cut by
:data:`SADDLE_CUT` pixels there, so every polygon is simple. Rasterising the polygons back (pixel centres,
even-odd) reproduces the mask exactly.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

__all__ = ["SADDLE_CUT", "mask_to_polygons", "rasterize_polygons"]

SADDLE_CUT = 0.1  # pixels cut off the corner where two pixels of a mask touch diagonally only

# Directions in the (column x, row y) plane with y pointing down, numbered clockwise: E, S, W, N.
_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])


def mask_to_polygons(mask: np.ndarray) -> List[np.ndarray]:
    """Closed polygons along the pixel edges of a 2D mask ``[row j, column i]``.

    Each polygon is an ``[n, 2]`` array of continuous ``(i, j)`` pixel indices (pixel centres at integers,
    so vertices sit at half-integers), not repeating the first vertex. Outer boundaries run clockwise
    on screen (y down), holes the other way; pixels are 4-connected, and diagonal-only contacts are cut
    by :data:`SADDLE_CUT` so that no polygon touches itself or another.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygons needs a 2D mask, got shape {mask.shape}.")
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    # Boundary edges of each pixel (r, c) whose neighbour in that direction is background; start corners.
    starts = []
    for direction, (neighbour, dx0, dy0) in enumerate([
        (padded[:-2, 1:-1], 0, 0),  # top edge, heading E from the top-left corner
        (padded[1:-1, 2:], 1, 0),  # right edge, heading S from the top-right corner
        (padded[2:, 1:-1], 1, 1),  # bottom edge, heading W from the bottom-right corner
        (padded[1:-1, :-2], 0, 1),  # left edge, heading N from the bottom-left corner
    ]):
        rows, cols = np.nonzero(inner & ~neighbour)
        starts.append(np.column_stack([cols + dx0, rows + dy0, np.full(len(rows), direction)]))
    edges = np.concatenate(starts) if starts else np.zeros((0, 3), int)
    if not len(edges):
        return []
    width = mask.shape[1] + 1
    keys = edges[:, 1] * width + edges[:, 0]
    outgoing: Dict[int, List[int]] = {}
    for index, key in enumerate(keys.tolist()):
        outgoing.setdefault(key, []).append(index)
    xs, ys, dirs = edges[:, 0].tolist(), edges[:, 1].tolist(), edges[:, 2].tolist()
    visited = np.zeros(len(edges), dtype=bool)
    polygons = []
    for first in range(len(edges)):
        if visited[first]:
            continue
        points: List[Tuple[float, float]] = []
        edge = first
        while True:
            visited[edge] = True
            d = dirs[edge]
            end_x, end_y = xs[edge] + _DX[d], ys[edge] + _DY[d]
            candidates = outgoing[end_y * width + end_x]
            if len(candidates) == 1:
                following = candidates[0]
                if dirs[following] != d:
                    points.append((float(end_x), float(end_y)))
            else:  # saddle: turn right, staying with the same pixel; cut the corner a little
                following = next(c for c in candidates if dirs[c] == (d + 1) % 4)
                turn = dirs[following]
                points.append((end_x - SADDLE_CUT * _DX[d], end_y - SADDLE_CUT * _DY[d]))
                points.append((end_x + SADDLE_CUT * _DX[turn], end_y + SADDLE_CUT * _DY[turn]))
            edge = following
            if edge == first:
                break
        polygons.append(np.asarray(points, dtype=float) - 0.5)  # corner (x, y) -> continuous index (i, j)
    return polygons


def rasterize_polygons(polygons: Sequence[np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """Pixels ``[row j, column i]`` whose centres lie inside the polygons (even-odd rule across all of
    them, so inner contours make holes). Polygons are ``[n, 2]`` arrays of continuous ``(i, j)``."""
    rows, cols = shape
    toggles = np.zeros((rows, cols + 1), dtype=np.int32)
    for polygon in polygons:
        polygon = np.asarray(polygon, dtype=float)
        if len(polygon) < 3:
            continue
        x0, y0 = polygon[:, 0], polygon[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        j_lo = max(0, int(np.ceil(y0.min())))
        j_hi = min(rows - 1, int(np.floor(y0.max())))
        if j_hi < j_lo:
            continue
        js = np.arange(j_lo, j_hi + 1, dtype=float)[:, None]
        # Half-open rule: an edge counts for rows with min(y) <= j < max(y), so shared vertices count once.
        crosses = ((y0 <= js) & (js < y1)) | ((y1 <= js) & (js < y0))
        row_index, edge_index = np.nonzero(crosses)
        if not len(row_index):
            continue
        j = js[row_index, 0]
        e0x, e0y, e1x, e1y = x0[edge_index], y0[edge_index], x1[edge_index], y1[edge_index]
        x = e0x + (j - e0y) * (e1x - e0x) / (e1y - e0y)
        # Column i is inside when an odd number of crossings lie at x <= i: toggle from ceil(x) on.
        start = np.clip(np.ceil(x), 0, cols).astype(np.int64)
        np.add.at(toggles, (j.astype(np.int64), start), 1)
    return (np.cumsum(toggles, axis=1)[:, :cols] % 2).astype(bool)


