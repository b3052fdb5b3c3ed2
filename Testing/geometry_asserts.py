"""Geometry helpers shared by the tests (importable because pytest puts Testing/ on the path for its
conftest)."""

from __future__ import annotations

import numpy as np

from headseg.geometry import Volume


def centroid_lps(volume: Volume, mask: np.ndarray) -> np.ndarray:
    """LPS point (mm) of the centroid of ``mask`` (an array on ``volume``'s grid, [k, j, i])."""
    return volume.index_to_lps(np.argwhere(mask).mean(axis=0)[::-1])
