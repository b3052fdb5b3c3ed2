"""Plausibility of an orbit segmentation without a reference: what can be judged on a real CT that has
no muscle labels (issue 12). Bands from ``../shared/ANATOMY_FACTS.md``: every structure non-empty on both
sides; each rectus 0.2-1.5 cm3 and each optic nerve 0.1-0.8 cm3; the four recti 1.0-3.5 cm3 per side;
left/right ratio 0.7-1.4 per structure; the muscle voxels' mean HU 10-100 with at most 15 % below -30 HU
(orbital fat). A failed check says the result needs a look, not that it is wrong; passing them all does
not make it right."""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .geometry import Volume
from .labels import LabelSet
from .volumes import volume_table

__all__ = ["orbit_plausibility", "RECTUS_CM3", "NERVE_CM3", "RECTI_TOTAL_CM3", "RATIO", "MUSCLE_HU", "MAX_FAT_SHARE"]

RECTUS_CM3 = (0.2, 1.5)
NERVE_CM3 = (0.1, 0.8)
RECTI_TOTAL_CM3 = (1.0, 3.5)
RATIO = (0.7, 1.4)
MUSCLE_HU = (10.0, 100.0)
MAX_FAT_SHARE = 0.15


def orbit_plausibility(ct: Volume, labelmap: Volume, label_set: LabelSet) -> Dict[str, Any]:
    """Volumes, ratios, muscle HU and the sentences of the failed checks for one segmented CT
    (``labelmap`` on the CT's grid, as ``headseg.pipeline.segment_volume`` returns it). Volumes and the
    recti totals are those of the volume table (``headseg.volumes.volume_table``)."""
    volumes: Dict[str, Dict[str, float]] = {}
    totals: Dict[str, float] = {}
    for row in volume_table(labelmap, label_set):
        if row.derived:  # the label set's groups: the four recti of each side
            totals[row.side] = round(row.volume_cm3, 3)
        else:
            volumes.setdefault(row.structure, {})[row.side] = round(row.volume_cm3, 3)
    failed: List[str] = []
    for structure, sides in volumes.items():
        band = NERVE_CM3 if structure == "optic_nerve" else RECTUS_CM3
        for side, v in sides.items():
            if v == 0:
                failed.append(f"{structure} {side} empty")
            elif not band[0] <= v <= band[1]:
                failed.append(f"{structure} {side} {v:.2f} cm3 outside {band[0]}-{band[1]}")
        if min(sides.values()) > 0:
            ratio = sides["left"] / sides["right"]
            if not RATIO[0] <= ratio <= RATIO[1]:
                failed.append(f"{structure} left/right {ratio:.2f} outside {RATIO[0]}-{RATIO[1]}")
    for side, v in totals.items():
        if not RECTI_TOTAL_CM3[0] <= v <= RECTI_TOTAL_CM3[1]:
            failed.append(f"recti total {side} {v:.2f} cm3 outside {RECTI_TOTAL_CM3[0]}-{RECTI_TOTAL_CM3[1]}")
    recti = [label for group in label_set.groups for label in label_set.group_labels(group)]
    muscle_hu = ct.array[np.isin(labelmap.array, recti)]
    mean_hu = float(muscle_hu.mean()) if muscle_hu.size else float("nan")
    fat_share = float((muscle_hu < -30).mean()) if muscle_hu.size else float("nan")
    if not MUSCLE_HU[0] <= mean_hu <= MUSCLE_HU[1]:
        failed.append(f"muscle mean HU {mean_hu:.0f} outside {MUSCLE_HU[0]:.0f}-{MUSCLE_HU[1]:.0f}")
    if not fat_share <= MAX_FAT_SHARE:
        failed.append(f"{100 * fat_share:.0f} % of muscle voxels below -30 HU (at most {100 * MAX_FAT_SHARE:.0f} %)")
    return {"volumes_cm3": volumes, "recti_total_cm3": totals, "muscle_mean_hu": round(mean_hu, 1),
            "muscle_share_below_minus30": round(fat_share, 3), "failed": failed, "plausible": not failed}
