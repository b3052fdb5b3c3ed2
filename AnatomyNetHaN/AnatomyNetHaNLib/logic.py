"""What is specific to head-and-neck organs at risk (AnatomyNet): the organ list depends on the model's
label set (PDDCA's nine organs or OpenKBP's seven), and the user chooses which organs to keep.

Everything else is shared with OrbitSegmentation in ``headseg.slicer``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from headseg.measure.volumes import VolumeRow
from headseg.slicer.logic import TaskLogic

__all__ = ["HeadNeckLogic"]


class HeadNeckLogic(TaskLogic):
    """Logic of the AnatomyNetHaN panel: organs at risk of the head and neck (PDDCA unless the model says)."""

    task = "han"
    result_suffix = "organs at risk"

    def organs(self, model: Optional[str] = None) -> List[Tuple[str, str]]:
        """(structure key, name) of the organs ``model`` segments (None = the default model), for the
        organ checklist. Raises ModelPackageError when no such model is installed."""
        from headseg.segment.packages import find_package

        label_set = find_package(model, task=self.task).label_set
        return [(s.key, s.name) for s in label_set]

    def summary(self, rows: Sequence[VolumeRow]) -> str:
        """Which organs came out empty: a missed organ is the first thing to fix in the editor."""
        empty = [r.name or r.structure for r in rows if not r.derived and r.voxels == 0]
        filled = len([r for r in rows if not r.derived]) - len(empty)
        text = f"{filled} organ(s) segmented"
        return text + (f"; empty: {', '.join(empty)}." if empty else ".")
