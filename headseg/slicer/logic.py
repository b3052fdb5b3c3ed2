"""What both modules' logic classes share: :class:`TaskLogic`, the Qt-free logic each module's Lib
subclasses with its task's specifics (OrbitSegmentationLib, AnatomyNetHaNLib).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, List, Optional, Sequence, Tuple

from headseg.errors import InputError
from headseg.slicer.followup import ChangeResult, compare_segmentations, export_change_csv
from headseg.slicer.review import (
    UNCERTAINTY_ATTRIBUTE,
    jump_slices_to,
    most_uncertain_point,
    set_uncertainty_opacity,
    show_uncertainty,
    uncertainty_node_of,
)
from headseg.slicer.runs import TASK_LABEL_SETS, SegmentationRun, missing_packages, model_choices
from headseg.slicer.scene import PathLike
from headseg.slicer.segments import label_set_of, structure_of_segment
from headseg.slicer.tables import (
    VolumeFollower,
    export_rows_csv,
    find_volume_table,
    new_volume_table_node,
    segment_volume_rows,
    update_volume_table,
    volume_table_node,
)
from headseg.slicer.training_set import TrainingCase, add_to_training_set

if TYPE_CHECKING:  # annotations only
    from headseg.measure.volumes import VolumeRow

__all__ = ["TaskLogic", "VolumeUpdate"]


@dataclass
class VolumeUpdate:
    """Freshly computed volumes of a segmentation, for the panel's table view and summary line."""

    table_node: Any  # the segmentation's volume table node; None when it has none (none is made unasked)
    rows: List[VolumeRow]
    summary: str


class TaskLogic:
    """Qt-free logic of one Slicer module; each module's Lib subclasses it with its task's specifics.

    The widget calls only these methods, so everything a user can do in the panel can be done (and is
    tested) without Qt.
    """

    task = ""  # "orbit" or "han"
    default_label_set = ""  # label set of segmentations not imported by HeadSeg; "" = the task's (TASK_LABEL_SETS)
    result_suffix = "segmentation"  # new node name: "<input name> <result_suffix>"

    def models(self, extra_dirs: Iterable[PathLike] = ()) -> List[Tuple[str, str]]:
        """(label for the model menu, package folder) of every installed model of the task."""
        return [(package.summary(), str(package.path)) for package in model_choices(self.task, extra_dirs)]

    def add_model_folder(self, folder: PathLike) -> Tuple[str, str]:
        """Validate a model folder chosen by the user; returns its (label, folder) menu entry."""
        from headseg.errors import ModelPackageError
        from headseg.segment.packages import load_package

        package = load_package(Path(folder))
        if package.task != self.task:
            raise ModelPackageError(
                f"The model in {folder} segments task '{package.task}', not '{self.task}'. Choose a {self.task} model."
            )
        return package.summary(), str(package.path)

    # -- the input CT ---------------------------------------------------------------------------------
    @staticmethod
    def is_input_candidate(volume_node) -> bool:
        """A volume the user may segment: an image, not a label map nor a HeadSeg uncertainty map."""
        return (volume_node is not None and volume_node.IsA("vtkMRMLScalarVolumeNode")
                and not volume_node.IsA("vtkMRMLLabelMapVolumeNode")
                and volume_node.GetAttribute(UNCERTAINTY_ATTRIBUTE) != "1")

    def default_input_volume(self, scene):
        """The input the panel starts with: the most recently added candidate, or None."""
        nodes = [scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
                 for n in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
        candidates = [node for node in nodes if self.is_input_candidate(node)]
        return candidates[-1] if candidates else None

    @staticmethod
    def hidden_input_ids(scene) -> List[str]:
        """IDs of the scalar volumes the input selector must not offer: the uncertainty maps."""
        nodes = [scene.GetNthNodeByClass(n, "vtkMRMLScalarVolumeNode")
                 for n in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode"))]
        return [node.GetID() for node in nodes if node.GetAttribute(UNCERTAINTY_ATTRIBUTE) == "1"]

    def label_set(self, segmentation_node=None):
        return label_set_of(segmentation_node, self.default_label_set or TASK_LABEL_SETS.get(self.task))

    def start(self, input_node, model: Optional[str] = None, device: str = "auto", roi_node=None,
              output_node=None, structures: Optional[Sequence[str]] = None, show_3d: bool = False,
              work_root: Optional[PathLike] = None, tta: bool = False) -> SegmentationRun:
        """Start segmenting ``input_node``; poll the returned run until it is finished. ``tta``: test-time
        augmentation."""
        name = f"{input_node.GetName()} {self.result_suffix}" if input_node is not None else None
        run = SegmentationRun(self.task, input_node, model=model, device=device, roi_node=roi_node,
                              structures=structures, output_node=output_node, show_3d=show_3d,
                              result_name=name, work_root=work_root, tta=tta)
        run.start()
        return run

    def volume_table(self, segmentation_node, table_node=None):
        """The (re)computed volume table of a segmentation: the given table, the one made before, or a new one."""
        table_node = table_node or find_volume_table(segmentation_node)
        return volume_table_node(segmentation_node, self.label_set(segmentation_node), table_node)

    def refresh_volumes(self, segmentation_node, create_table: bool = False,
                        follower: Optional[VolumeFollower] = None) -> VolumeUpdate:
        """Recompute the volumes of ``segmentation_node`` from its binary labelmaps.

        The numbers go into the segmentation's volume table when it has one (made by a segmentation run,
        or earlier on request). A new table node is added only with ``create_table``, when the user asked
        for it: reviewing a segmentation never adds nodes to the user's scene. With the ``follower`` that
        follows this node (the panel's), only the segments edited since its last measure are measured.
        """
        label_set = self.label_set(segmentation_node)
        measures = None
        if follower is not None and follower.node is segmentation_node and segmentation_node is not None:
            measures = follower.measure(label_set)
        table_node = find_volume_table(segmentation_node)
        if table_node is None and create_table:
            table_node = new_volume_table_node(segmentation_node)
        if table_node is not None:
            rows = update_volume_table(segmentation_node, table_node, label_set, measures=measures)
        else:
            rows = segment_volume_rows(segmentation_node, label_set, measures=measures)
        return VolumeUpdate(table_node, rows, self.summary(rows))

    def summary(self, rows: Sequence[VolumeRow]) -> str:
        """One line under the table; modules override it with what matters for their task."""
        filled = [r for r in rows if not r.derived and r.voxels > 0]
        return f"{len(filled)} of {len([r for r in rows if not r.derived])} structures have voxels."

    def reviewable_structures(self, segmentation_node) -> List[Tuple[str, str]]:
        """(structure key, name) of the segments that can be marked as reviewed for the training set."""
        label_set = self.label_set(segmentation_node)
        if segmentation_node is None or label_set is None:
            return []
        segmentation = segmentation_node.GetSegmentation()
        found = {}
        for segment_id in segmentation.GetSegmentIDs():
            structure = structure_of_segment(segmentation.GetSegment(segment_id), segment_id, label_set)
            if structure is not None:
                found[structure.label] = (structure.key, structure.name)
        return [found[label] for label in sorted(found)]

    def export_csv(self, segmentation_node, path: PathLike, follower: Optional[VolumeFollower] = None) -> Path:
        """Recompute the volumes, then write them as CSV: the file holds the segmentation as it is now,
        even when the last stroke's table update is still waiting for its timer."""
        if segmentation_node is None:
            raise InputError("No segmentation is selected; segment the image or select a segmentation first.")
        return export_rows_csv(self.refresh_volumes(segmentation_node, follower=follower).rows, path)

    def add_to_training_set(self, volume_node, segmentation_node, dataset_dir: PathLike,
                            reviewed: Sequence[str]) -> TrainingCase:
        if not dataset_dir:
            raise InputError("Choose the training dataset folder first.")
        label_set = self.label_set(segmentation_node)
        return add_to_training_set(volume_node, segmentation_node, dataset_dir, self.task, label_set, reviewed)

    def missing_packages(self, requirements: Optional[Sequence[str]] = None) -> List[str]:
        """Requirements not installed: of the segmentation process (default), or of a panel action
        (:data:`headseg.slicer.runs.PANEL_REQUIREMENTS`)."""
        return missing_packages() if requirements is None else missing_packages(requirements)

    # -- review aids: the uncertainty map, where to look first ---------------------------------
    def uncertainty_node(self, segmentation_node):
        """The segmentation's uncertainty map (imported with a run's result), or None."""
        return uncertainty_node_of(segmentation_node)

    def show_uncertainty(self, segmentation_node, scene, visible: bool, opacity: float):
        """Show (or take off) the segmentation's map as every slice view's foreground; returns the map
        node shown, or None when it has none (a map the user put in the foreground by hand stays)."""
        node = uncertainty_node_of(segmentation_node) if visible else None
        show_uncertainty(node, scene, opacity)
        return node

    def set_uncertainty_opacity(self, scene, opacity: float) -> None:
        set_uncertainty_opacity(scene, opacity)

    def look_at_row(self, segmentation_node, table_node, row: int) -> Optional[Tuple[float, float, float]]:
        """Centre the slice views on the most uncertain region of the structure in row ``row`` of the
        volume table (table order, most doubtful first); returns the RAS point, or None (nothing there)."""
        if segmentation_node is None or table_node is None:
            return None
        table = table_node.GetTable()
        if not 0 <= row < table.GetNumberOfRows():
            return None
        structure = str(table.GetColumnByName("structure").GetValue(row))
        side = str(table.GetColumnByName("side").GetValue(row))
        point = most_uncertain_point(segmentation_node, structure, side, self.label_set(segmentation_node))
        if point is not None:
            jump_slices_to(segmentation_node.GetScene(), point)
        return point

    # -- follow-up: compare with an earlier scan -------------------------------------------------
    def compare(self, baseline_node, followup_node, register: bool = True) -> ChangeResult:
        """The change table of two segmentations in the scene (see :mod:`headseg.slicer.followup`)."""
        return compare_segmentations(baseline_node, followup_node,
                                     self.default_label_set or TASK_LABEL_SETS.get(self.task), register=register)

    def export_changes_csv(self, result: Optional[ChangeResult], path: PathLike) -> Path:
        if result is None:
            raise InputError("Compare two segmentations first.")
        return export_change_csv(result.comparison, path)
