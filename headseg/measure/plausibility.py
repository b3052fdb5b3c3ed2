"""Plausibility of an orbit segmentation without a reference: what can be judged on a real CT that has
no muscle labels. Every structure non-empty on both sides and inside its normal adult band; the four
recti of each side inside theirs; each left/right ratio inside the asymmetry band; the muscle voxels'
mean HU in the muscle band with at most a small share reading as fat. All bands are ``headseg.measure.bands``,
the same the volume table's flags and the run's warnings use. A failed check says the result needs a
look, not that it is wrong; passing them all does not make it right.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from headseg.geometry import Volume
from headseg.labels import LabelSet
from headseg.measure.bands import (
    ASYMMETRY_RATIO,
    FAT_HU,
    MAX_FAT_SHARE,
    MUSCLE_HU,
    RECTI_TOTAL_CM3,
    TOTAL_ASYMMETRY_RATIO,
    volume_band,
)
from headseg.measure.volumes import volume_table

__all__ = ["orbit_plausibility"]


def orbit_plausibility(ct: Volume, labelmap: Volume, label_set: LabelSet) -> Dict[str, Any]:
    """Volumes, ratios, muscle HU and the sentences of the failed checks for one segmented CT
    (``labelmap`` on the CT's grid, as ``headseg.segment.pipeline.segment_volume`` returns it). Volumes and the
    recti totals are those of the volume table (``headseg.measure.volumes.volume_table``)."""
    volumes: Dict[str, Dict[str, float]] = {}
    totals: Dict[str, float] = {}
    for row in volume_table(labelmap, label_set):
        if row.derived:  # the label set's groups: the four recti of each side
            totals[row.side] = round(row.volume_cm3, 3)
        else:
            volumes.setdefault(row.structure, {})[row.side] = round(row.volume_cm3, 3)
    failed: List[str] = []
    for structure, sides in volumes.items():
        band = volume_band(structure)
        for side, v in sides.items():
            if v == 0:
                failed.append(f"{structure} {side} empty")
            elif band is not None and not band.contains(v):
                failed.append(f"{structure} {side} {v:.2f} cm3 outside {band}")
        failed += _ratio_failures(structure, sides, ASYMMETRY_RATIO)
    for side, v in totals.items():
        if not RECTI_TOTAL_CM3.contains(v):
            failed.append(f"recti total {side} {v:.2f} cm3 outside {RECTI_TOTAL_CM3}")
    failed += _ratio_failures("recti total", totals, TOTAL_ASYMMETRY_RATIO)
    recti = [label for group in label_set.groups for label in label_set.group_labels(group)]
    muscle_hu = ct.array[np.isin(labelmap.array, recti)]
    mean_hu = float(muscle_hu.mean()) if muscle_hu.size else float("nan")
    fat_share = float((muscle_hu < FAT_HU).mean()) if muscle_hu.size else float("nan")
    if not MUSCLE_HU[0] <= mean_hu <= MUSCLE_HU[1]:
        failed.append(f"muscle mean HU {mean_hu:.0f} outside {MUSCLE_HU[0]:.0f}-{MUSCLE_HU[1]:.0f}")
    if not fat_share <= MAX_FAT_SHARE:
        failed.append(f"{100 * fat_share:.0f} % of muscle voxels below {FAT_HU:.0f} HU (at most "
                      f"{100 * MAX_FAT_SHARE:.0f} %)")
    return {"volumes_cm3": volumes, "recti_total_cm3": totals, "muscle_mean_hu": round(mean_hu, 1),
            "muscle_share_below_minus30": round(fat_share, 3), "failed": failed, "plausible": not failed}


def _ratio_failures(what: str, sides: Dict[str, float], band) -> List[str]:
    if min(sides.get("right", 0.0), sides.get("left", 0.0)) <= 0:
        return []
    ratio = sides["left"] / sides["right"]
    return [] if band[0] <= ratio <= band[1] else [f"{what} left/right {ratio:.2f} outside {band[0]:.2f}-{band[1]:.2f}"]
