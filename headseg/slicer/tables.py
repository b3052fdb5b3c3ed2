"""The volume table: voxels and cm³ of every segment, counted on its binary labelmap, with each structure's
``doubt`` and ``flags`` (:mod:`headseg.slicer.review`), in a MRML table node (columns
``structure,side,voxels,volume_cm3,doubt,flags``, the command line's CSV format; the node lists the most
doubtful structure first, so the user corrects there first) and as CSV (in label order, as the CLI writes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .scene import PathLike, place_next_to
from .segments import binary_labelmap_name, structure_of_segment

if TYPE_CHECKING:  # annotations only
    from ..volumes import VolumeRow

__all__ = [
    "TABLE_SEGMENTATION_REFERENCE", "TABLE_COLUMNS", "segment_volume_rows", "fill_table_node",
    "update_volume_table", "new_volume_table_node", "volume_table_node", "rows_from_table_node",
    "export_rows_csv", "export_table_csv", "find_volume_table", "VOLUME_EVENTS", "VolumeFollower",
    "most_doubtful_first",
]

#: Node reference from a volume table to the segmentation it describes.
TABLE_SEGMENTATION_REFERENCE = "HeadSeg.segmentation"


def _layer_counts(segmentation) -> Dict[int, np.ndarray]:
    """Voxel count per label value of every binary-labelmap layer (one pass per layer, not per segment)."""
    from vtk.util.numpy_support import vtk_to_numpy

    counts: Dict[int, np.ndarray] = {}
    for layer in range(segmentation.GetNumberOfLayers()):
        image = segmentation.GetLayerDataObject(layer)
        scalars = image.GetPointData().GetScalars() if image is not None else None
        if scalars is None or scalars.GetNumberOfTuples() == 0:
            counts[layer] = np.zeros(1, np.int64)
            continue
        values = vtk_to_numpy(scalars)
        counts[layer] = np.bincount(values.ravel().astype(np.int64, copy=False), minlength=1)
    return counts


def _voxel_volume_mm3(oriented_image) -> float:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    oriented_image.GetImageToWorldMatrix(matrix)
    return float(abs(np.linalg.det([[matrix.GetElement(r, c) for c in range(3)] for r in range(3)])))


def segment_volume_rows(segmentation_node, label_set=None, quality: bool = True) -> List[VolumeRow]:
    """Voxels and cm³ of every segment, counted on the segment's own binary labelmap, plus derived totals
    (the extraocular muscles of each side for the orbit), with doubt and flags unless ``quality`` is off.

    Structures of ``label_set`` come first in label order, then other segments under their names.
    """
    from ..volumes import VolumeRow, derived_rows, with_quality

    segmentation = segmentation_node.GetSegmentation()
    binary = binary_labelmap_name()
    if hasattr(segmentation, "GetSourceRepresentationName"):
        source = segmentation.GetSourceRepresentationName()
    else:  # Slicer < 5.4
        source = segmentation.GetMasterRepresentationName()
    if source != binary and not segmentation.ContainsRepresentation(binary):
        segmentation_node.CreateBinaryLabelmapRepresentation()  # e.g. segments imported from models
    layer_counts = _layer_counts(segmentation) if segmentation.ContainsRepresentation(binary) else {}
    known: List[Tuple[int, VolumeRow]] = []
    others: List[VolumeRow] = []
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        image = segment.GetRepresentation(binary)
        voxels = 0
        voxel_mm3 = 0.0
        if image is not None:
            layer = segmentation.GetLayerIndex(segment_id)
            counts = layer_counts.get(layer, np.zeros(1))
            label = segment.GetLabelValue()
            voxels = int(counts[label]) if 0 < label < len(counts) else 0
            voxel_mm3 = _voxel_volume_mm3(image)
        volume_cm3 = voxels * voxel_mm3 / 1000.0
        structure = structure_of_segment(segment, segment_id, label_set) if label_set is not None else None
        if structure is not None:
            # the same columns as headseg.volumes.volume_table (side-less structure name + side)
            known.append((structure.label, VolumeRow(structure.base_key, structure.side, voxels, volume_cm3,
                                                      structure.name, key=structure.key)))
        else:
            name = segment.GetName() or segment_id
            others.append(VolumeRow(name, "", voxels, volume_cm3, name, key=segment_id))
    rows = [row for _, row in sorted(known, key=lambda item: item[0])] + others
    if label_set is not None:
        rows += derived_rows(rows, label_set)
    if quality and label_set is not None:
        from .review import segment_quality

        try:
            rows = with_quality(rows, segment_quality(segmentation_node, label_set))
        except InputError as exc:  # e.g. two segments for one structure: the volumes still stand
            logging.getLogger(__name__).warning("No doubt and flags for '%s': %s", segmentation_node.GetName(), exc)
    return rows


def most_doubtful_first(rows: Sequence[VolumeRow]) -> List[VolumeRow]:
    """Structures by falling doubt, then those without a doubt (no map, or empty), flagged ones first, then
    the totals: the order of the table node, so the first row is where to correct first."""
    structures = [r for r in rows if not r.derived]
    measured = sorted((r for r in structures if r.doubt == r.doubt), key=lambda r: -r.doubt)
    unmeasured = sorted((r for r in structures if r.doubt != r.doubt), key=lambda r: not r.flags)
    return measured + unmeasured + [r for r in rows if r.derived]


TABLE_COLUMNS = (("structure", "string"), ("side", "string"), ("voxels", "int"), ("volume_cm3", "double"),
                 ("doubt", "double"), ("flags", "string"))
#: The columns a volume table must have (tables saved before doubt and flags existed are still read).
REQUIRED_COLUMNS = 4


def fill_table_node(table_node, rows: Sequence[VolumeRow]) -> None:
    """Replace the content of ``table_node`` with ``rows``, in their order (see :data:`TABLE_COLUMNS`).

    Column names are the header (``UseColumnTitleAsColumnHeader``, off by default in vtkMRMLTableNode.cxx
    v5.6.2), so row n of the table view is row n of the table: what the panel's row selection relies on."""
    import vtk

    was_modifying = table_node.StartModify()
    try:
        table_node.RemoveAllColumns()
        arrays = {"string": vtk.vtkStringArray, "int": vtk.vtkIntArray, "double": vtk.vtkDoubleArray}
        columns = []
        for name, kind in TABLE_COLUMNS:
            column = arrays[kind]()
            column.SetName(name)
            columns.append(column)
        for row in rows:
            columns[0].InsertNextValue(row.structure)
            columns[1].InsertNextValue(row.side)
            columns[2].InsertNextValue(int(row.voxels))
            columns[3].InsertNextValue(float(row.volume_cm3))
            columns[4].InsertNextValue(float(row.doubt))  # NaN where no uncertainty map lies on the grid
            columns[5].InsertNextValue(row.flags)
        for column in columns:
            table_node.AddColumn(column)
        table_node.SetColumnUnitLabel("volume_cm3", "cm3")
        table_node.SetColumnDescription("voxels", "voxel count of the segment's binary labelmap")
        table_node.SetColumnDescription("volume_cm3", "voxel count x voxel volume")
        table_node.SetColumnDescription("doubt", "mean uncertainty across the structure's surface, 0-1")
        table_node.SetColumnDescription("flags", "what looks wrong (headseg.quality.FLAG_CODES)")
        table_node.SetUseColumnTitleAsColumnHeader(True)
        table_node.SetLocked(True)  # computed numbers: edits in the table view would be overwritten
        table_node.Modified()
    finally:
        table_node.EndModify(was_modifying)


def update_volume_table(segmentation_node, table_node, label_set=None) -> List[VolumeRow]:
    """Recompute the volume table of ``segmentation_node`` into ``table_node`` (most doubtful first);
    returns the rows in label order."""
    rows = segment_volume_rows(segmentation_node, label_set)
    fill_table_node(table_node, most_doubtful_first(rows))
    table_node.SetNodeReferenceID(TABLE_SEGMENTATION_REFERENCE, segmentation_node.GetID())
    return rows


def new_volume_table_node(segmentation_node):
    """An empty ``<segmentation> volumes`` table next to the segmentation."""
    scene = segmentation_node.GetScene()
    table_node = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{segmentation_node.GetName()} volumes")
    place_next_to(table_node, segmentation_node)
    return table_node


def volume_table_node(segmentation_node, label_set=None, table_node=None):
    """The volume table of a segmentation: ``table_node`` or a new ``<segmentation> volumes`` table."""
    table_node = table_node or new_volume_table_node(segmentation_node)
    update_volume_table(segmentation_node, table_node, label_set)
    return table_node


def rows_from_table_node(table_node) -> List[VolumeRow]:
    """The rows shown in a volume table node (what the user sees is what gets exported)."""
    from ..volumes import VolumeRow

    table = table_node.GetTable()
    names = [name for name, _ in TABLE_COLUMNS]
    columns = [table.GetColumnByName(name) for name in names]
    if any(column is None for column in columns[:REQUIRED_COLUMNS]):
        raise InputError(f"Table '{table_node.GetName()}' is not a HeadSeg volume table "
                         f"(columns {names[:REQUIRED_COLUMNS]}).")
    doubt, flags = columns[REQUIRED_COLUMNS:]
    rows = []
    for n in range(table.GetNumberOfRows()):
        structure, side, voxels, volume = (column.GetValue(n) for column in columns[:REQUIRED_COLUMNS])
        rows.append(VolumeRow(str(structure), str(side), int(voxels), float(volume),
                              doubt=float(doubt.GetValue(n)) if doubt is not None else float("nan"),
                              flags=str(flags.GetValue(n)) if flags is not None else ""))
    return rows


def export_rows_csv(rows: Sequence[VolumeRow], path: PathLike, case: Optional[str] = None) -> Path:
    """Write volume rows as CSV (``structure,side,voxels,volume_cm3,doubt,flags``, the CLI's format); adds
    ``.csv``."""
    from ..volumes import write_volume_csv

    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_name(path.name + ".csv")
    try:
        return write_volume_csv(rows, path, case=case)
    except OSError as exc:
        raise InputError(f"Cannot write {path}: {exc.strerror or exc}. Choose another folder.") from exc


def export_table_csv(table_node, path: PathLike, case: Optional[str] = None) -> Path:
    """Write a volume table node as CSV, as it is shown (see :func:`export_rows_csv`)."""
    return export_rows_csv(rows_from_table_node(table_node), path, case=case)


def find_volume_table(segmentation_node):
    """The volume table computed earlier for ``segmentation_node``, or None."""
    import slicer

    scene = segmentation_node.GetScene()
    if scene is None:
        return None
    for table in slicer.util.getNodesByClass("vtkMRMLTableNode", scene):
        if table.GetNodeReferenceID(TABLE_SEGMENTATION_REFERENCE) == segmentation_node.GetID():
            return table
    return None


# -- following edits ---------------------------------------------------------------------------------------
#: Events of a segmentation node after which its volumes may differ. Painting, erasing and every other
#: effect change a segment's binary labelmap through vtkSegmentationModifier::ModifyBinaryLabelmap, which
#: fires only ``SourceRepresentationModified`` (once per stroke); ``SegmentModified`` comes once, when an
#: effect first marks the segment "in progress", and on renaming. vtkMRMLSegmentationNode re-invokes the
#: segmentation's events on the node (``SegmentationModifiedCallback``), so observing the node is enough.
VOLUME_EVENTS = ("SourceRepresentationModified", "SegmentAdded", "SegmentRemoved", "SegmentModified")


class VolumeFollower:
    """Keeps the volumes of one segmentation node in step with its edits.

    It observes :data:`VOLUME_EVENTS` on the node and calls ``schedule`` for each; the panel passes a
    single-shot QTimer's ``start`` (restarted by every stroke, so the table is recomputed ~0.5 s after the
    last one), tests pass a counter. Qt-free, so the whole chain from an edit to new numbers is tested on a
    real MRML scene.
    """

    def __init__(self, schedule: Callable[[], Any]) -> None:
        self.schedule = schedule
        self.node = None
        self.pending = False  # an edit happened since the last :meth:`done`
        self._tags: List[int] = []

    def observe(self, segmentation_node) -> None:
        """Follow ``segmentation_node`` (None: nothing); observers of the previous node are removed."""
        import slicer

        if segmentation_node is self.node:
            return
        self.stop()
        self.node = segmentation_node
        if segmentation_node is None:
            return
        for name in VOLUME_EVENTS:
            event = getattr(slicer.vtkSegmentation, name, None)
            if event is None and name == "SourceRepresentationModified":  # Slicer < 5.4 named it "Master"
                event = slicer.vtkSegmentation.MasterRepresentationModified
            self._tags.append(segmentation_node.AddObserver(event, self._on_event))

    def stop(self) -> None:
        """Stop observing (scene close, module cleanup)."""
        if self.node is not None:
            for tag in self._tags:
                self.node.RemoveObserver(tag)
        self._tags = []
        self.node = None
        self.pending = False

    def done(self) -> None:
        """The volumes were just recomputed: nothing is pending any more."""
        self.pending = False

    def _on_event(self, caller=None, event=None) -> None:
        self.pending = True
        self.schedule()
