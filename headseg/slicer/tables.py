"""The volume table: voxels and cm³ of every segment, counted on its binary labelmap, with each structure's
``doubt`` and ``flags`` (:mod:`headseg.slicer.review`), in a MRML table node (columns
``structure,side,voxels,volume_cm3,doubt,flags``, the command line's CSV format; the node lists the most
doubtful structure first, so the user corrects there first) and as CSV (in label order, as the CLI writes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence, Set

from headseg.errors import InputError
from headseg.slicer.measures import SegmentMeasures
from headseg.slicer.scene import PathLike, place_next_to

if TYPE_CHECKING:  # annotations only
    from headseg.measure.volumes import VolumeRow

__all__ = [
    "TABLE_SEGMENTATION_REFERENCE", "TABLE_COLUMNS", "segment_volume_rows", "fill_table_node",
    "update_volume_table", "new_volume_table_node", "volume_table_node", "rows_from_table_node",
    "export_rows_csv", "export_table_csv", "find_volume_table", "VOLUME_EVENTS", "VolumeFollower",
    "most_doubtful_first",
]

#: Node reference from a volume table to the segmentation it describes.
TABLE_SEGMENTATION_REFERENCE = "HeadSeg.segmentation"


def segment_volume_rows(segmentation_node, label_set=None, quality: bool = True,
                        measures: Optional[SegmentMeasures] = None) -> List[VolumeRow]:
    """Voxels and cm³ of every segment, counted on the segment's own binary labelmap, plus derived totals
    (the extraocular muscles of each side for the orbit), with doubt and flags unless ``quality`` is off.

    Structures of ``label_set`` come first in label order, then other segments under their names.
    ``measures`` (kept by :class:`VolumeFollower`) are used as they are; without them every segment is
    measured (:class:`headseg.slicer.measures.SegmentMeasures`).
    """
    if measures is None:
        measures = SegmentMeasures(segmentation_node, label_set).measure_all()
    try:
        return measures.rows(quality)
    except InputError as exc:  # e.g. two segments for one structure: the volumes still stand
        logging.getLogger(__name__).warning("No doubt and flags for '%s': %s", segmentation_node.GetName(), exc)
        return measures.rows(quality=False)


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
        table_node.SetColumnDescription("flags", "what looks wrong (headseg.measure.quality.FLAG_CODES)")
        table_node.SetUseColumnTitleAsColumnHeader(True)
        table_node.SetLocked(True)  # computed numbers: edits in the table view would be overwritten
        table_node.Modified()
    finally:
        table_node.EndModify(was_modifying)


def update_volume_table(segmentation_node, table_node, label_set=None,
                        measures: Optional[SegmentMeasures] = None) -> List[VolumeRow]:
    """Recompute the volume table of ``segmentation_node`` into ``table_node`` (most doubtful first);
    returns the rows in label order. ``measures``: see :func:`segment_volume_rows`."""
    rows = segment_volume_rows(segmentation_node, label_set, measures=measures)
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
    from headseg.measure.volumes import VolumeRow

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
    from headseg.measure.volumes import write_volume_csv

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
#: fires only ``SourceRepresentationModified`` (once per stroke), with the segment's ID as call data
#: (vtkSegmentationModifier.cxx, v5.6.2 to v5.10.0); an undo or a rewritten layer fires it with none.
#: ``SegmentModified`` comes once, when an effect first marks the segment "in progress", and on renaming.
#: vtkMRMLSegmentationNode re-invokes the segmentation's events, call data included, on the node
#: (``SegmentationModifiedCallback``), so observing the node is enough.
VOLUME_EVENTS = ("SourceRepresentationModified", "SegmentAdded", "SegmentRemoved", "SegmentModified")


class VolumeFollower:
    """Keeps the volumes of one segmentation node in step with its edits, at the cost of the edited
    segments only.

    It observes :data:`VOLUME_EVENTS` on the node, notes the segment each event names (:attr:`changed`;
    None once an event named none) and calls ``schedule``; the panel passes a single-shot QTimer's
    ``start`` (restarted by every stroke, so the table is recomputed ~0.5 s after the last one), tests pass
    a counter. :meth:`measure` then brings the kept :class:`~headseg.slicer.measures.SegmentMeasures` up
    to date. Qt-free, so the whole chain from an edit to new numbers is tested on a real MRML scene.
    """

    def __init__(self, schedule: Callable[[], Any]) -> None:
        self.schedule = schedule
        self.node = None
        self.pending = False  # an edit happened since the last :meth:`done`
        self.measures: Optional[SegmentMeasures] = None
        self.changed: Optional[Set[str]] = None  # segments edited since the last measure; None: unknown
        self._tags: List[int] = []

    def observe(self, segmentation_node, measures: Optional[SegmentMeasures] = None) -> None:
        """Follow ``segmentation_node`` (None: nothing); observers of the previous node are removed.
        ``measures`` of that node taken just now (a run's result) are kept, not taken again."""
        import slicer
        import vtk

        if segmentation_node is self.node and measures is None:
            return
        self.stop()
        self.node = segmentation_node
        if segmentation_node is None:
            return
        if measures is not None and measures.node is segmentation_node:
            self.measures, self.changed = measures, set()

        def on_event(caller, event, segment_id=None):
            self._on_event(caller, event, segment_id)

        on_event.CallDataType = vtk.VTK_STRING  # type: ignore[attr-defined]  # the segment ID, or None
        for name in VOLUME_EVENTS:
            self._tags.append(segmentation_node.AddObserver(getattr(slicer.vtkSegmentation, name), on_event))

    def measure(self, label_set=None) -> SegmentMeasures:
        """The followed segmentation's measures, brought up to date: only the segments edited since the
        last call are measured again (everything when an edit named none, or on the first call)."""
        measures = self.measures
        same_set = measures is not None and getattr(measures.label_set, "name", None) == getattr(label_set, "name", None)
        if measures is None or not same_set or measures.node is not self.node:
            measures = SegmentMeasures(self.node, label_set).measure_all()
        else:
            measures.update(self.changed)
        self.measures, self.changed, self.pending = measures, set(), False
        return measures

    def stop(self) -> None:
        """Stop observing (scene close, leaving the module, cleanup); the kept measures are dropped."""
        if self.node is not None:
            for tag in self._tags:
                self.node.RemoveObserver(tag)
        self._tags = []
        self.node = None
        self.pending = False
        self.measures, self.changed = None, None

    def done(self) -> None:
        """The volumes were just recomputed: nothing is pending any more."""
        self.pending = False

    def _on_event(self, caller=None, event=None, segment_id: Optional[str] = None) -> None:
        if segment_id and self.changed is not None:
            self.changed.add(str(segment_id))
        else:
            self.changed = None
        self.pending = True
        self.schedule()
