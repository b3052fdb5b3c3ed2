"""What is specific to the orbit: SV-net's task, label set, and the numbers thyroid-eye-disease
follow-up looks at (total extraocular muscle volume per side and its left/right ratio).

Everything else -- running the model in a child process, importing the result, the volume table,
CSV export, the training-set export -- is shared with AnatomyNetHaN in ``headseg.slicer``.
"""

from __future__ import annotations

from typing import Sequence

from headseg.measure.volumes import VolumeRow
from headseg.slicer.logic import TaskLogic

__all__ = ["OrbitLogic"]


class OrbitLogic(TaskLogic):
    """Logic of the OrbitSegmentation panel: both orbits' recti and optic nerves (label set "orbit")."""

    task = "orbit"
    result_suffix = "orbit segmentation"

    def summary(self, rows: Sequence[VolumeRow]) -> str:
        """Total extraocular muscle volume per side and the left/right ratio (asymmetry flags disease)."""
        totals = {r.side: r.volume_cm3 for r in rows if r.derived and r.structure == "extraocular_muscles"}
        if "right" not in totals or "left" not in totals:
            return super().summary(rows)
        text = f"Extraocular muscles: right {totals['right']:.2f} cm3, left {totals['left']:.2f} cm3"
        if totals["right"] > 0:
            text += f", left/right {totals['left'] / totals['right']:.2f}"
        return text + "."
