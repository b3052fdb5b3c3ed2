""""Compare with earlier scan" in the scene: two segmentations the user already has (a baseline and a
follow-up of one patient), compared by :func:`headseg.review.compare.compare_timepoints`, the same numbers and
refusals as ``headseg compare``, into a change table node and a CSV.

Each segmentation is read as a label map on its reference volume's grid (the CT it was made on) or, when
it has none (e.g. loaded from a file alone), on its own geometry. The two CTs, when both are known, are
rigidly registered, which checks that the pair is one head (a failed check refuses the pair with the
CLI's sentence); ``register=False`` compares the volumes only. ``slicer`` and ``vtk`` are imported inside
the functions (see ``headseg.slicer``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from headseg.errors import InputError
from headseg.slicer.review import reference_volume_of
from headseg.slicer.scene import PathLike, place_next_to, volume_from_node
from headseg.slicer.segments import label_set_of, labelmap_of_segmentation

if TYPE_CHECKING:  # annotations only
    from headseg.review.compare import Comparison, TimePoint

__all__ = ["CHANGE_TABLE_BASELINE", "CHANGE_TABLE_FOLLOWUP", "ChangeResult", "timepoint_of",
           "compare_segmentations", "fill_change_table", "change_table_node", "export_change_csv"]

#: Node references from a change table to the two segmentations it compares (saved with the scene).
CHANGE_TABLE_BASELINE = "HeadSeg.baseline"
CHANGE_TABLE_FOLLOWUP = "HeadSeg.followup"
# vtk array type of each headseg.review.compare.CHANGE_COLUMNS column
_KINDS = {"structure": "string", "side": "string", "exceeds": "string"}


@dataclass
class ChangeResult:
    """A comparison shown in the panel: the change table node and the numbers it was filled from."""

    comparison: Comparison
    table_node: Any

    @property
    def summary(self) -> str:
        return self.comparison.summary().strip()


def timepoint_of(segmentation_node, default_label_set: Optional[str] = None) -> TimePoint:
    """A :class:`headseg.review.compare.TimePoint` of a segmentation node: its label map, label set and CT."""
    from headseg.review.compare import TimePoint

    if segmentation_node is None:
        raise InputError("Choose both segmentations to compare: the earlier scan's and the later one's.")
    label_set = label_set_of(segmentation_node, default_label_set)
    if label_set is None:
        raise InputError(f"'{segmentation_node.GetName()}' was not made by HeadSeg; its structures are unknown.")
    reference = reference_volume_of(segmentation_node)
    labelmap = labelmap_of_segmentation(segmentation_node, label_set, reference)
    if not labelmap.array.any():
        raise InputError(f"'{segmentation_node.GetName()}' holds no {label_set.name} structure to compare.")
    ct = volume_from_node(reference) if reference is not None else None
    return TimePoint(labelmap, label_set, segmentation_node.GetName(), ct)


def compare_segmentations(baseline_node, followup_node, default_label_set: Optional[str] = None,
                          register: bool = True, table_node=None) -> ChangeResult:
    """Compare two segmentations of the scene (see the module docstring) into ``table_node`` or the
    change table made before for this pair, or a new ``<baseline> -> <follow-up> change`` table."""
    from headseg.review.compare import compare_timepoints

    if baseline_node is not None and baseline_node is followup_node:
        raise InputError("The earlier and the later segmentation are the same node; choose two scans.")
    comparison = compare_timepoints(timepoint_of(baseline_node, default_label_set),
                                    timepoint_of(followup_node, default_label_set), register=register)
    table_node = table_node or find_change_table(baseline_node, followup_node) or change_table_node(
        baseline_node, followup_node)
    fill_change_table(table_node, comparison)
    return ChangeResult(comparison, table_node)


def find_change_table(baseline_node, followup_node):
    """The change table made earlier for this pair, or None (a second comparison refills it)."""
    scene = baseline_node.GetScene()
    for n in range(scene.GetNumberOfNodesByClass("vtkMRMLTableNode")):
        table = scene.GetNthNodeByClass(n, "vtkMRMLTableNode")
        if table.GetNodeReferenceID(CHANGE_TABLE_BASELINE) == baseline_node.GetID() \
                and table.GetNodeReferenceID(CHANGE_TABLE_FOLLOWUP) == followup_node.GetID():
            return table
    return None


def change_table_node(baseline_node, followup_node):
    """A new, empty change table next to the follow-up segmentation, referencing both segmentations."""
    scene = followup_node.GetScene()
    table = scene.AddNewNodeByClass("vtkMRMLTableNode",
                                    f"{baseline_node.GetName()} -> {followup_node.GetName()} change")
    table.SetNodeReferenceID(CHANGE_TABLE_BASELINE, baseline_node.GetID())
    table.SetNodeReferenceID(CHANGE_TABLE_FOLLOWUP, followup_node.GetID())
    place_next_to(table, followup_node)
    return table


def fill_change_table(table_node, comparison: Comparison) -> None:
    """Replace the table's content with the comparison's rows, columns as in ``change.csv``
    (:data:`headseg.review.compare.CHANGE_COLUMNS`); the changes beyond the bound first, largest first."""
    import math

    import vtk

    from headseg.review.compare import CHANGE_COLUMNS

    rows = sorted(comparison.rows, key=lambda r: (not r.exceeds,
                                                  -abs(r.change_pct) if math.isfinite(r.change_pct) else 0.0))
    arrays = {"string": vtk.vtkStringArray, "double": vtk.vtkDoubleArray}
    was_modifying = table_node.StartModify()
    try:
        table_node.RemoveAllColumns()
        for name in CHANGE_COLUMNS:
            kind = _KINDS.get(name, "double")
            column = arrays[kind]()
            column.SetName(name)
            for row in rows:
                value = row.as_dict()[name]
                if kind == "string":
                    column.InsertNextValue(str(value))
                else:  # change_pct is "" where the baseline is empty: NaN in the table
                    column.InsertNextValue(float(str(value)) if value != "" else float("nan"))
            table_node.AddColumn(column)
        for name in ("baseline_cm3", "followup_cm3", "change_cm3"):
            table_node.SetColumnUnitLabel(name, "cm3")
        table_node.SetColumnUnitLabel("change_pct", "%")
        table_node.SetColumnUnitLabel("repeatability_pct", "%")
        table_node.SetColumnDescription("exceeds", "the change is larger than re-segmenting one scan changes it")
        table_node.SetUseColumnTitleAsColumnHeader(True)
        table_node.SetLocked(True)  # computed numbers
        table_node.Modified()
    finally:
        table_node.EndModify(was_modifying)


def export_change_csv(comparison: Comparison, path: PathLike) -> Path:
    """``change.csv`` of the comparison at ``path`` (``.csv`` added), as ``headseg compare`` writes it."""
    from headseg.review.compare import write_change_csv

    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_name(path.name + ".csv")
    try:
        return write_change_csv(comparison.rows, path)
    except OSError as exc:
        raise InputError(f"Cannot write {path}: {exc.strerror or exc}. Choose another folder.") from exc
