"""MRML helpers shared by the Slicer modules, the tests and headless scripts.

``slicer`` is imported lazily inside the functions: the rest of ``headseg`` must import (and the CLI
must run) on machines without Slicer or the ``slicer-core`` wheel.

Inside the Slicer application the real scene and module logics are used. Elsewhere
:func:`init_headless_slicer` builds an equivalent scene with the ``slicer-core`` wheel; its set-up order
is the verified one of ``shared/SLICER_CORE.md`` (application logic before each module logic's scene,
every logic registered with the application logic, colour logic set last).
"""

from __future__ import annotations

import csv
import datetime
import os
import re
import shutil
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import HeadSegError, InputError
from .geometry import Volume

if TYPE_CHECKING:  # annotations only; importing them here would slow down 'import headseg.slicer_glue'
    from .packages import ModelPackage
    from .volumes import VolumeRow

__all__ = ["HeadlessSlicer", "in_slicer_app", "init_scene", "init_headless_slicer", "module_logic"]


def in_slicer_app() -> bool:
    """True when running inside the Slicer application (not the headless slicer-core wheel)."""
    try:
        import slicer
    except ImportError:
        return False
    return getattr(slicer, "app", None) is not None


@dataclass
class HeadlessSlicer:
    """A scene with its application logic and module logics (kept here so they stay alive)."""

    scene: Any
    app_logic: Any
    logics: Dict[str, Any] = field(default_factory=dict)
    temp_dir: str = ""

    def close(self) -> None:
        """Empty the scene (nodes, observers) so that it can be dropped without leaking."""
        self.scene.Clear(1)


_current: Optional[HeadlessSlicer] = None  # the last headless scene, so its logics are not collected


def init_headless_slicer(
    share_dir: Optional[str] = None,
    temp_dir: Optional[str] = None,
    install_shims: bool = True,
) -> HeadlessSlicer:
    """Build a new MRML scene with Colors, SubjectHierarchy, Volumes, (Terminologies,) Segmentations and
    Tables logics using the ``slicer-core`` wheel.

    ``share_dir`` is a folder with ``ColorFiles/`` and ``terminologies/`` (Slicer's share files, which the
    wheel lacks); without it a file-free colour logic is used and terminology look-ups are unavailable.
    With ``install_shims`` ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` are set, which
    ``slicer.util`` functions (arrayFromVolume, ...) rely on.
    """
    global _current
    import slicer
    from vtkmodules.vtkCommonCore import vtkCollection

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="headseg_slicer_")
    app_logic.SetTemporaryPath(temp_dir)
    if share_dir:
        share_dir = os.path.abspath(share_dir)
        # Slicer looks files up as HomeDirectory/ShareDirectory/<relative path>.
        app_logic.SetHomeDirectory(os.path.dirname(share_dir))
        app_logic.SetShareDirectory(os.path.basename(share_dir))
    app_logic.SetMRMLScene(scene)
    app_logic.SetSliceLogics(vtkCollection())
    app_logic.SetViewLogics(vtkCollection())

    # Colour files are only loadable with a share dir; the plain colour logic needs none.
    specs = [
        ("Colors", slicer.vtkSlicerColorLogic if share_dir else slicer.vtkMRMLColorLogic),
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ("Volumes", slicer.vtkSlicerVolumesLogic),
    ]
    if share_dir:  # without the JSON files this logic only logs errors
        specs.append(("Terminologies", slicer.vtkSlicerTerminologiesModuleLogic))
    specs += [
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Tables", slicer.vtkSlicerTablesLogic),
    ]
    logics: Dict[str, Any] = {}
    for name, logic_class in specs:
        logic = logic_class()
        if name == "Terminologies":
            logic.SetModuleShareDirectory(os.path.join(share_dir, "terminologies"))
        logic.SetMRMLApplicationLogic(app_logic)  # must come before SetMRMLScene
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    app_logic.SetColorLogic(logics["Colors"])

    if install_shims:
        slicer.mrmlScene = scene
        slicer.modules = types.SimpleNamespace(
            **{
                name.lower(): types.SimpleNamespace(logic=(lambda logic=logic: logic))
                for name, logic in logics.items()
            }
        )
    _current = HeadlessSlicer(scene, app_logic, logics, temp_dir)
    return _current


def init_scene(share_dir: Optional[str] = None):
    """The MRML scene to work in: ``slicer.mrmlScene`` inside the Slicer application, otherwise a new
    headless scene built by :func:`init_headless_slicer` (which also sets ``slicer.mrmlScene``)."""
    if in_slicer_app():
        import slicer

        return slicer.mrmlScene
    return init_headless_slicer(share_dir=share_dir).scene


def module_logic(name: str):
    """A module logic by module name ("Segmentations", "Volumes", ...), in the app or headless."""
    import slicer

    modules = getattr(slicer, "modules", None)
    holder = getattr(modules, name.lower(), None) if modules is not None else None
    if holder is None:
        raise RuntimeError(
            f"The Slicer module logic {name!r} is not available. Inside Slicer, check that the module is "
            "loaded; headless, call headseg.slicer_glue.init_scene() first."
        )
    return holder.logic()


# ===================================================================================================
# Glue used by the OrbitSegmentation and AnatomyNetHaN modules (and their headless batch script).
# Everything below is Qt-free: the widgets only forward user input here and show what comes back.
# ===================================================================================================
#: Segment tag holding the label-set key of the structure a segment stands for. Names and IDs can be
#: edited by users; the tag survives renaming and is saved in .seg.nrrd files.
STRUCTURE_TAG = "HeadSeg.StructureKey"
#: Segmentation node attribute naming the label set its segments follow (set on import).
LABEL_SET_ATTRIBUTE = "HeadSeg.LabelSet"
#: Node reference from a volume table to the segmentation it describes.
TABLE_SEGMENTATION_REFERENCE = "HeadSeg.segmentation"
#: Python packages the segmentation child process needs (same as pyproject's dependencies; tested).
HEADSEG_REQUIREMENTS = ("numpy>=1.22", "scipy>=1.8", "SimpleITK>=2.2", "pynrrd>=1.0", "torch>=2.1",
                        "tqdm>=4.60")
TASK_LABEL_SETS = {"orbit": "orbit", "han": "pddca"}  # label set used when no model card says otherwise

PathLike = Union[str, "os.PathLike[str]"]
Vector3 = Tuple[float, float, float]


# -- volume node <-> headseg Volume ---------------------------------------------------------------------
def volume_from_node(volume_node, allow_labelmap: bool = False) -> Volume:
    """The voxels and world geometry of a scalar volume node as a :class:`Volume` (LPS).

    A parent linear transform is applied (the geometry is where the user sees the image); a non-linear
    one is refused because a voxel grid cannot represent it.
    """
    import slicer
    import vtk

    if volume_node is None:
        raise InputError("No input volume is selected. Load a CT image and select it as the input volume.")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{volume_node.GetName()}' is not a scalar (grey-scale) volume; select a CT image.")
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode") and not allow_labelmap:
        raise InputError(f"'{volume_node.GetName()}' is a label map, not a CT image. Select the CT as input.")
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"The volume '{volume_node.GetName()}' has no voxels (was loading interrupted?).")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"The volume '{volume_node.GetName()}' has {image.GetNumberOfScalarComponents()} components per "
            "voxel (colour or vector image); a grey-scale CT is expected."
        )
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    transform = volume_node.GetParentTransformNode()
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise InputError(
                f"The volume '{volume_node.GetName()}' is under a non-linear transform. Harden the transform "
                "(Data module, right-click > Harden transform) before segmenting."
            )
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = slicer.util.arrayFromVTKMatrix(to_world) @ ijk_to_ras
    axes = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    if not np.allclose(axes.T @ axes, np.eye(3), atol=1e-4):
        raise InputError(
            f"The volume '{volume_node.GetName()}' has sheared voxel axes (a shearing transform?). "
            "Resample it to a regular grid first."
        )
    return Volume.from_ijk_to_ras(slicer.util.arrayFromVolume(volume_node).copy(), ijk_to_ras)


def node_from_volume(volume: Volume, name: str, node_class: str = "vtkMRMLScalarVolumeNode"):
    """Add ``volume`` to the scene as a new volume node (``vtkMRMLLabelMapVolumeNode`` for label maps)."""
    import slicer

    array = np.ascontiguousarray(volume.array)
    node = slicer.util.addVolumeFromArray(array, volume.ijk_to_ras, name, node_class)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def roi_from_markups(roi_node) -> Optional[Tuple[Vector3, Vector3]]:
    """``(center_lps, size_mm)`` of the world-axis-aligned box that encloses a markups ROI, or None.

    A rotated ROI is replaced by its enclosing box: the model restricts its search to an axis-aligned
    region, and a slightly larger box is safer than a clipped one.
    """
    if roi_node is None:
        return None
    if roi_node.GetNumberOfControlPoints() == 0:
        raise InputError(f"The box '{roi_node.GetName()}' has not been placed yet; place it or choose none.")
    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)
    lower = np.array(bounds[0::2], dtype=float)
    upper = np.array(bounds[1::2], dtype=float)
    size = upper - lower
    if not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise InputError(f"The box '{roi_node.GetName()}' is empty; resize it around the region to segment.")
    center_ras = (lower + upper) / 2.0
    center_lps = (-center_ras[0], -center_ras[1], center_ras[2])
    return (tuple(float(c) for c in center_lps), tuple(float(s) for s in size))  # type: ignore[return-value]


# -- segments <-> label-set structures -------------------------------------------------------------------
def _binary_labelmap_name() -> str:
    import slicer

    return slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()


def structure_of_segment(segment, segment_id: str, label_set):
    """The label-set structure a segment stands for: by HeadSeg tag, then ID, then (forgiving) name."""
    tag = vtk_string_tag(segment, STRUCTURE_TAG)
    if tag and tag in label_set:
        return label_set.by_key(tag)
    if segment_id in label_set:
        return label_set.by_key(segment_id)
    return label_set.find(segment.GetName()) or label_set.find(segment_id)


def vtk_string_tag(segment, name: str) -> str:
    """A segment's tag value ('' when absent); the VTK API fills a string argument."""
    import vtk

    value = vtk.reference("") if hasattr(vtk, "reference") else None
    if value is not None and segment.GetTag(name, value):
        return str(value)
    return ""


def set_segment_terminology(segment, terminology_string: str) -> None:
    """Store a DICOM terminology entry on a segment (``SetTerminology`` in Slicer >= 5.10, a tag before)."""
    if hasattr(segment, "SetTerminology"):
        segment.SetTerminology(terminology_string)
    else:
        segment.SetTag(segment.GetTerminologyEntryTagName(), terminology_string)


def segment_terminology(segment) -> str:
    if hasattr(segment, "GetTerminology"):
        return str(segment.GetTerminology() or "")
    return vtk_string_tag(segment, segment.GetTerminologyEntryTagName())


def apply_label_set(segmentation_node, label_set, keep: Optional[Iterable[str]] = None) -> Dict[str, str]:
    """Give every segment that matches a structure its name, colour, terminology and HeadSeg tag.

    With ``keep`` (structure keys) other known structures' segments are removed. Returns
    ``{segment ID: structure key}`` of the matched segments.
    """
    segmentation = segmentation_node.GetSegmentation()
    keep_set = set(keep) if keep is not None else None
    matched: Dict[str, str] = {}
    for segment_id in list(segmentation.GetSegmentIDs()):
        segment = segmentation.GetSegment(segment_id)
        structure = structure_of_segment(segment, segment_id, label_set)
        if structure is None:
            continue
        if keep_set is not None and structure.key not in keep_set:
            segmentation.RemoveSegment(segment_id)
            continue
        segment.SetName(structure.name)
        segment.SetColor(*structure.color)
        set_segment_terminology(segment, structure.terminology.to_slicer_string())
        segment.SetTag(STRUCTURE_TAG, structure.key)
        matched[segment_id] = structure.key
    return matched


def label_set_of(segmentation_node, default: Optional[str] = None):
    """The label set a segmentation was imported with (node attribute), else ``default`` (a name), else None."""
    from .labels import get_label_set

    name = segmentation_node.GetAttribute(LABEL_SET_ATTRIBUTE) if segmentation_node is not None else None
    name = name or default
    if not name:
        return None
    try:
        return get_label_set(name)
    except InputError:
        return get_label_set(default) if default and default != name else None


def place_next_to(node, reference_node) -> None:
    """Put ``node`` in the same subject-hierarchy folder/study as ``reference_node``."""
    import slicer

    scene = reference_node.GetScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    if not reference_item:
        return
    parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:  # without the application's subject-hierarchy plugins nodes get no item automatically
        hierarchy.CreateItem(parent, node)


def import_segmentation_file(path: PathLike, label_set, reference_volume_node, name: Optional[str] = None,
                             output_node=None, keep: Optional[Iterable[str]] = None, show_3d: bool = False):
    """Load a .seg.nrrd written by ``headseg segment`` into a segmentation node and return the node.

    A new node is created unless ``output_node`` is given (the user chose to replace its segments).
    Segments get names, colours and terminology from ``label_set``; the node is placed next to the
    input volume in the subject hierarchy, uses it as reference geometry and, with ``show_3d``, gets a
    closed-surface representation for the 3D view.
    """
    import slicer

    path = Path(path)
    if not path.is_file():
        raise InputError(f"The segmentation result {path} does not exist.")
    scene = reference_volume_node.GetScene() or slicer.mrmlScene
    # Read in a private scene: the user's scene gets no display or storage node pointing at a temporary file.
    private_scene = slicer.vtkMRMLScene()
    loaded = slicer.vtkMRMLSegmentationNode()
    private_scene.AddNode(loaded)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(loaded):
        raise InputError(f"Slicer could not read the segmentation result {path.name}.")
    apply_label_set(loaded, label_set, keep=keep)

    created = output_node is None
    node = output_node
    if created:
        name = name or f"{reference_volume_node.GetName()} segmentation"
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    was_modifying = node.StartModify()
    try:
        node.GetSegmentation().DeepCopy(loaded.GetSegmentation())
        if reference_volume_node.GetParentTransformNode() is None:
            # With a transform the file's geometry (world) is kept: the input was written hardened.
            node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
        node.SetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole(), reference_volume_node.GetID())
        node.SetAttribute(LABEL_SET_ATTRIBUTE, label_set.name)
    finally:
        node.EndModify(was_modifying)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    if created:
        place_next_to(node, reference_volume_node)
    if show_3d:
        node.CreateClosedSurfaceRepresentation()
    return node


# -- volume table -----------------------------------------------------------------------------------------
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


def segment_volume_rows(segmentation_node, label_set=None) -> List[VolumeRow]:
    """Voxels and cm³ of every segment, counted on the segment's own binary labelmap, plus derived totals
    (the extraocular muscles of each side for the orbit).

    Structures of ``label_set`` come first in label order, then other segments under their names.
    """
    from .volumes import VolumeRow, derived_rows

    segmentation = segmentation_node.GetSegmentation()
    binary = _binary_labelmap_name()
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
    return rows


TABLE_COLUMNS = (("structure", "string"), ("side", "string"), ("voxels", "int"), ("volume_cm3", "double"))


def fill_table_node(table_node, rows: Sequence[VolumeRow]) -> None:
    """Replace the content of ``table_node`` with ``rows`` (columns structure, side, voxels, volume_cm3)."""
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
        for column in columns:
            table_node.AddColumn(column)
        table_node.SetColumnUnitLabel("volume_cm3", "cm3")
        table_node.SetColumnDescription("voxels", "voxel count of the segment's binary labelmap")
        table_node.SetColumnDescription("volume_cm3", "voxel count x voxel volume")
        table_node.SetLocked(True)  # computed numbers: edits in the table view would be overwritten
        table_node.Modified()
    finally:
        table_node.EndModify(was_modifying)


def update_volume_table(segmentation_node, table_node, label_set=None) -> List[VolumeRow]:
    """Recompute the volume table of ``segmentation_node`` into ``table_node``; returns the rows."""
    rows = segment_volume_rows(segmentation_node, label_set)
    fill_table_node(table_node, rows)
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
    from .volumes import VolumeRow

    table = table_node.GetTable()
    names = [name for name, _ in TABLE_COLUMNS]
    columns = [table.GetColumnByName(name) for name in names]
    if any(column is None for column in columns):
        raise InputError(f"Table '{table_node.GetName()}' is not a HeadSeg volume table (columns {names}).")
    rows = []
    for n in range(table.GetNumberOfRows()):
        structure, side, voxels, volume = (column.GetValue(n) for column in columns)
        rows.append(VolumeRow(str(structure), str(side), int(voxels), float(volume)))
    return rows


def export_table_csv(table_node, path: PathLike, case: Optional[str] = None) -> Path:
    """Write the volume table as CSV (``structure,side,voxels,volume_cm3``, the CLI's format)."""
    from .volumes import write_volume_csv

    path = Path(path)
    if path.suffix.lower() != ".csv":
        path = path.with_name(path.name + ".csv")
    try:
        return write_volume_csv(rows_from_table_node(table_node), path, case=case)
    except OSError as exc:
        raise InputError(f"Cannot write {path}: {exc.strerror or exc}. Choose another folder.") from exc


# -- segmentation node -> label map -----------------------------------------------------------------------
def segment_mask(segmentation_node, segment_id: str, reference: Volume, reference_volume_node) -> np.ndarray:
    """Boolean mask ``[k, j, i]`` of one segment on the reference volume's grid.

    When the segment's labelmap lies on that grid (the case for HeadSeg results and their edits) its
    voxels are copied as they are; otherwise Slicer resamples it (e.g. after the user changed the
    segmentation geometry or put a transform on it).
    """
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(_binary_labelmap_name())
    untransformed = (segmentation_node.GetParentTransformNode() is None
                     and reference_volume_node.GetParentTransformNode() is None)
    if image is not None and untransformed:
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        image_to_ras = np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])
        if np.allclose(image_to_ras, reference.ijk_to_ras, atol=1e-4):
            mask = np.zeros(reference.shape, dtype=bool)
            i0, i1, j0, j1, k0, k1 = image.GetExtent()
            scalars = image.GetPointData().GetScalars()
            if i1 < i0 or j1 < j0 or k1 < k0 or scalars is None:
                return mask
            voxels = vtk_to_numpy(scalars).reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
            inside = voxels == segment.GetLabelValue()
            lo = np.array([k0, j0, i0])
            hi = np.minimum(np.array([k1, j1, i1]) + 1, reference.shape)
            start = np.maximum(lo, 0)
            if np.any(hi <= start):
                return mask
            mask[start[0]:hi[0], start[1]:hi[1], start[2]:hi[2]] = inside[
                start[0] - lo[0]:hi[0] - lo[0], start[1] - lo[1]:hi[1] - lo[1], start[2] - lo[2]:hi[2] - lo[2]]
            return mask
    return _export_segment_with_slicer(segmentation_node, segment_id, reference_volume_node) > 0


def _export_segment_with_slicer(segmentation_node, segment_id: str, reference_volume_node) -> np.ndarray:
    """Slicer's own resampling of a segment onto a volume's grid; removes every helper node it creates."""
    import slicer
    import vtk

    scene = segmentation_node.GetScene()
    existing = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__headseg_temp__")
    ids = vtk.vtkStringArray()
    ids.InsertNextValue(segment_id)
    try:
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap, reference_volume_node):
            raise InputError(f"Segment '{segment_id}' could not be resampled onto the input volume's grid.")
        return slicer.util.arrayFromVolume(labelmap).copy()
    finally:  # the export adds a colour table (and display nodes) besides the label map
        added = [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes())]
        for node in added:
            if node.GetID() not in existing and node.GetScene() is not None:
                scene.RemoveNode(node)


def remove_nodes(nodes: Iterable[Any]) -> None:
    """Remove nodes with their display, storage and colour helper nodes (removing a node alone leaves
    its display nodes behind)."""
    for node in nodes:
        if node is None:
            continue
        scene = node.GetScene()
        if scene is None:
            continue
        helpers = []
        if hasattr(node, "GetNumberOfDisplayNodes"):
            for n in range(node.GetNumberOfDisplayNodes()):
                display = node.GetNthDisplayNode(n)
                helpers.append(display)
                color = display.GetColorNode() if display is not None and hasattr(display, "GetColorNode") else None
                if color is not None and not color.GetSingletonTag() and color.GetName().startswith(node.GetName()):
                    helpers.append(color)
        if hasattr(node, "GetStorageNode"):
            helpers.append(node.GetStorageNode())
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and helper.GetScene() is not None:
                scene.RemoveNode(helper)


def labelmap_from_segmentation(segmentation_node, label_set,
                               reference_volume_node) -> Tuple[Volume, List[str]]:
    """The segments that stand for ``label_set`` structures as one label map on the reference grid.

    Returns ``(label map, warnings)``. Segments that match no structure are left out (warned), and
    where segments overlap the structure with the higher label value wins (warned).
    """
    reference = volume_from_node(reference_volume_node, allow_labelmap=True)
    labels = np.zeros(reference.shape, dtype=np.uint8 if label_set.max_label < 256 else np.uint16)
    warnings: List[str] = []
    segmentation = segmentation_node.GetSegmentation()
    matched: List[Tuple[int, str, str]] = []
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        structure = structure_of_segment(segment, segment_id, label_set)
        if structure is None:
            warnings.append(f"Segment '{segment.GetName()}' is not a {label_set.name} structure; left out.")
        else:
            matched.append((structure.label, segment_id, structure.key))
    seen: Dict[str, str] = {}
    overlap = 0
    for label, segment_id, key in sorted(matched):
        segment_name = segmentation.GetSegment(segment_id).GetName()
        if key in seen:
            raise InputError(
                f"Segments '{seen[key]}' and '{segment_name}' both stand for {label_set.by_key(key).name}; "
                "delete or rename one of them."
            )
        seen[key] = segment_name
        inside = segment_mask(segmentation_node, segment_id, reference, reference_volume_node)
        overlap += int(np.count_nonzero(labels[inside]))
        labels[inside] = label
    if overlap:
        warnings.append(f"{overlap} voxels belong to more than one segment; the later structure was kept.")
    return reference.with_array(labels), warnings


# -- training set -----------------------------------------------------------------------------------------
MANIFEST_FILE = "manifest.csv"
MANIFEST_COLUMNS = ("case", "image", "segmentation", "task", "label_set", "reviewed", "split", "date")


@dataclass
class TrainingCase:
    case: str
    image: Path
    segmentation: Path
    manifest: Path
    warnings: List[str] = field(default_factory=list)


def safe_case_id(text: str) -> str:
    """A file-name-safe case ID from a node name ("CT head 3/1" -> "CT_head_3_1")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "case"


def _manifest_rows(dataset_dir: Path) -> Tuple[List[str], List[Dict[str, str]]]:
    path = dataset_dir / MANIFEST_FILE
    if not path.is_file():
        return list(MANIFEST_COLUMNS), []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        columns = list(reader.fieldnames or [])
    return columns + [c for c in MANIFEST_COLUMNS if c not in columns], rows


def unique_case_id(dataset_dir: PathLike, wanted: str) -> str:
    """``wanted`` or ``wanted_2``, ``wanted_3``... so that no existing case or file is ever overwritten."""
    dataset_dir = Path(dataset_dir)
    _, rows = _manifest_rows(dataset_dir)
    taken = {r.get("case", "") for r in rows}
    base = safe_case_id(wanted)
    candidate, n = base, 1
    while (candidate in taken or (dataset_dir / "images" / f"{candidate}.nrrd").exists()
           or (dataset_dir / "labels" / f"{candidate}.seg.nrrd").exists()):
        n += 1
        candidate = f"{base}_{n}"
    return candidate


def add_to_training_set(volume_node, segmentation_node, dataset_dir: PathLike, task: str, label_set,
                        reviewed: Sequence[str], case_id: Optional[str] = None) -> TrainingCase:
    """Export the image and the (corrected) segmentation as a new training case.

    Writes ``images/<case>.nrrd``, ``labels/<case>.seg.nrrd`` and a row of ``manifest.csv``
    (``case,image,segmentation,task,label_set,reviewed,split,date``; ``reviewed`` = structure keys
    separated by ``;``), the layout ``headseg-train`` reads. Existing cases are never overwritten: the
    case ID gets a ``_2``, ``_3``... suffix instead.
    """
    from .io import write_segmentation, write_volume

    reviewed = [str(k) for k in reviewed]
    if not reviewed:
        raise InputError(
            "Tick the structures you reviewed before adding the case: the training treats unticked "
            "structures as not annotated, and an empty list would mean 'all'."
        )
    unknown = [k for k in reviewed if k not in label_set]
    if unknown:
        raise InputError(f"Unknown structures {unknown} for the {label_set.name} label set.")
    if segmentation_node is None:
        raise InputError("No segmentation is selected; segment the image (or load a segmentation) first.")
    dataset_dir = Path(dataset_dir).expanduser()
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create the dataset folder {dataset_dir}: {exc.strerror or exc}.") from exc
    image = volume_from_node(volume_node)
    labelmap, warnings = labelmap_from_segmentation(segmentation_node, label_set, volume_node)
    present = set(np.unique(labelmap.array).tolist())
    missing = [label_set.by_key(k).name for k in reviewed if label_set.by_key(k).label not in present]
    if missing:
        warnings.append(f"Reviewed but empty (saved as absent): {', '.join(missing)}.")
    case = unique_case_id(dataset_dir, case_id or volume_node.GetName())
    image_path = dataset_dir / "images" / f"{case}.nrrd"
    segmentation_path = dataset_dir / "labels" / f"{case}.seg.nrrd"
    image_path.parent.mkdir(exist_ok=True)
    segmentation_path.parent.mkdir(exist_ok=True)
    write_volume(image, image_path, overwrite=False)
    try:
        write_segmentation(labelmap, label_set, segmentation_path, overwrite=False)
    except BaseException:
        image_path.unlink()
        raise
    columns, rows = _manifest_rows(dataset_dir)
    rows.append({"case": case, "image": f"images/{image_path.name}",
                 "segmentation": f"labels/{segmentation_path.name}", "task": task,
                 "label_set": label_set.name, "reviewed": ";".join(reviewed), "split": "",
                 "date": datetime.datetime.now().isoformat(timespec="seconds")})
    manifest = dataset_dir / MANIFEST_FILE
    temp = manifest.with_name(f".{MANIFEST_FILE}.tmp")
    with open(temp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temp, manifest)
    return TrainingCase(case, image_path, segmentation_path, manifest, warnings)


# -- Python dependencies ----------------------------------------------------------------------------------
def missing_packages(requirements: Sequence[str] = HEADSEG_REQUIREMENTS) -> List[str]:
    """Requirements (pip syntax) that are not installed or too old. Imports nothing heavy (torch!).

    The Slicer widget asks the user before installing them; this function only looks.
    """
    from importlib import metadata

    missing = []
    for requirement in requirements:
        name = re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0]
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        try:
            from packaging.requirements import Requirement
            from packaging.version import Version

            if not Requirement(requirement).specifier.contains(Version(installed), prereleases=True):
                missing.append(requirement)
        except ImportError:  # no 'packaging': presence is all we can check
            pass
        except ValueError:  # unparsable local version string: accept what is installed
            pass
    return missing


# -- one segmentation run (the Segment button, the batch script) ------------------------------------------
def model_choices(task: str, extra_dirs: Iterable[PathLike] = ()) -> List[ModelPackage]:
    """Installed model packages for ``task``, the default one first."""
    from .packages import list_packages

    packages = list_packages(extra_dirs, task=task)
    return sorted(packages, key=lambda p: (not p.card.get("default"), p.name))


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


class SegmentationRun:
    """Segment one volume node in a child process and import the result; never blocks the caller.

    ``start()`` checks the input and writes it to a temporary file, ``poll()`` (from a GUI timer) follows
    the child and, when it succeeds, imports the result into a segmentation node with a volume table.
    Nothing is added to the scene before that moment, so a cancelled or failed run leaves it unchanged.

    Args:
        task: "orbit" or "han".
        input_node: the CT volume node.
        model: model name or package folder; None = the task's default model.
        device: "auto", "cuda" or "cpu" (passed to ``headseg segment --device``).
        roi_node: optional markups ROI restricting the search.
        structures: label-set keys to keep (AnatomyNetHaN's organ choice); None = all.
        output_node: a segmentation node to overwrite; None = create a new one.
        show_3d: create closed surfaces for the 3D view (off in headless runs).
        result_name: name of a new segmentation node.
    """

    def __init__(self, task: str, input_node, model: Optional[str] = None, device: str = "auto",
                 roi_node=None, structures: Optional[Sequence[str]] = None, output_node=None,
                 show_3d: bool = False,
                 result_name: Optional[str] = None, extra_model_dirs: Iterable[PathLike] = (),
                 work_root: Optional[PathLike] = None, python: Optional[str] = None) -> None:
        self.task = task
        self.input_node = input_node
        self.model = model
        self.device = device
        self.roi_node = roi_node
        self.structures = list(structures) if structures is not None else None
        self.output_node = output_node
        self.show_3d = show_3d
        self.result_name = result_name
        self.extra_model_dirs = list(extra_model_dirs)
        self.work_root = work_root
        self.python = python
        self.package = None
        self.label_set = None
        self.process = None
        self.segmentation_node = None
        self.table_node = None
        self.warnings: List[str] = []
        self._failure: Optional[str] = None
        self.log: List[str] = []

    # -- steps -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the input, write it for the child and start it. Raises HeadSegError for the user."""
        from .packages import find_package
        from .runner import SegmentationProcess, segment_command
        from .validation import check_ct

        if self.task not in TASK_LABEL_SETS:
            raise InputError(f"Unknown task {self.task!r}; expected one of {', '.join(TASK_LABEL_SETS)}.")
        volume = volume_from_node(self.input_node)
        self.warnings = check_ct(volume)
        self.package = find_package(self.model, task=self.task, extra_dirs=self.extra_model_dirs)
        self.label_set = self.package.label_set
        if self.structures is not None:
            if not self.structures:
                raise InputError("Choose at least one structure to segment.")
            unknown = [k for k in self.structures if k not in self.label_set]
            if unknown:
                raise InputError(f"Model {self.package.name} does not segment {unknown}.")
        roi = roi_from_markups(self.roi_node)
        from .io import write_volume

        root = str(self.work_root) if self.work_root else None
        work_dir = Path(tempfile.mkdtemp(prefix="headseg_run_", dir=root))
        try:
            case = safe_case_id(self.input_node.GetName())
            (work_dir / "input").mkdir()
            input_path = write_volume(volume, work_dir / "input" / f"{case}.nrrd", compress=False)
            command = segment_command([input_path], self.task, work_dir / "output",
                                      model=str(self.package.path), device=self.device, roi=roi,
                                      structures=self.structures, python=self.python)
            self.process = SegmentationProcess(command, work_dir=work_dir)
            self.process.start()
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        self.log.append(f"Model {self.package.name} on {self.device}; input {self.input_node.GetName()}")
        self.log.extend(f"warning: {w}" for w in self.warnings)

    def poll(self) -> List[Dict[str, object]]:
        """Follow the child (never blocks); import the result once it succeeded. Returns the new events."""
        from .runner import RunState

        if self.process is None or self.finished:
            return []
        events = self.process.poll()
        for event in events:
            if event.get("event") == "log":
                level = str(event.get("level", "info"))
                text = str(event.get("message", ""))
                self.log.append(text if level in ("info", "stderr") else f"{level}: {text}")
                if level == "warning":
                    self.warnings.append(text)
            elif event.get("event") == "error":
                self.log.append(f"error: {event.get('message', '')}")
        if self.process.state is RunState.SUCCEEDED:
            try:
                self._import_result()
            except HeadSegError as exc:
                self._failure = str(exc)
            except Exception as exc:  # a bug, but the user still deserves a sentence
                self._failure = f"Importing the result failed: {type(exc).__name__}: {exc}"
            finally:
                self.process.cleanup()
            if self._failure:
                self.log.append(f"error: {self._failure}")
        elif self.process.finished:
            self.log.append(self.process.error_message)
        return events

    def cancel(self) -> None:
        if self.process is not None:
            self.process.cancel()

    def wait(self, timeout: Optional[float] = None, interval: float = 0.1) -> str:
        """Poll until finished (scripts and tests only: it blocks). Returns :attr:`state`."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            self.poll()
            if self.finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"Segmentation did not finish within {timeout} s; it was cancelled.")
            time.sleep(interval)
        return self.state

    # -- state for the panel ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """'not started', 'running', 'cancelling', 'succeeded', 'failed' or 'cancelled'."""
        from .runner import RunState

        if self._failure is not None:
            return RunState.FAILED.value
        if self.process is None:
            return RunState.NOT_STARTED.value
        if self.process.state is RunState.SUCCEEDED and self.segmentation_node is None:
            return RunState.RUNNING.value  # importing
        return self.process.state.value

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    @property
    def fraction(self) -> float:
        return self.process.fraction if self.process is not None else 0.0

    @property
    def message(self) -> str:
        """One line for the status label."""
        if self._failure is not None:
            return self._failure
        if self.process is None:
            return ""
        if self.state == "succeeded":
            node = self.segmentation_node
            extra = f" {len(self.warnings)} warning(s), see the log." if self.warnings else ""
            return f"Done: '{node.GetName()}' is ready for review in the Segment Editor below.{extra}"
        if self.process.finished:
            return self.process.error_message
        return self.process.message

    # -- internals -------------------------------------------------------------------------------------
    def _import_result(self) -> None:
        result = self.process.result or {}
        path = result.get("segmentation")
        if not path:
            raise InputError("The segmentation process reported no result file.")
        name = self.result_name or f"{self.input_node.GetName()} {self.task} segmentation"
        node = import_segmentation_file(str(path), self.label_set, self.input_node, name=name,
                                        output_node=self.output_node, keep=self.structures,
                                        show_3d=self.show_3d)
        existing = find_volume_table(node)
        self.table_node = volume_table_node(node, self.label_set, table_node=existing)
        self.segmentation_node = node


# -- what both modules' logic classes share ---------------------------------------------------------------
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
        from .errors import ModelPackageError
        from .packages import load_package

        package = load_package(folder)
        if package.task != self.task:
            raise ModelPackageError(
                f"The model in {folder} segments task '{package.task}', not '{self.task}'. Choose a {self.task} model."
            )
        return package.summary(), str(package.path)

    def label_set(self, segmentation_node=None):
        return label_set_of(segmentation_node, self.default_label_set or TASK_LABEL_SETS.get(self.task))

    def start(self, input_node, model: Optional[str] = None, device: str = "auto", roi_node=None,
              output_node=None, structures: Optional[Sequence[str]] = None, show_3d: bool = False,
              work_root: Optional[PathLike] = None) -> SegmentationRun:
        """Start segmenting ``input_node``; poll the returned run until it is finished."""
        name = f"{input_node.GetName()} {self.result_suffix}" if input_node is not None else None
        run = SegmentationRun(self.task, input_node, model=model, device=device, roi_node=roi_node,
                              structures=structures, output_node=output_node, show_3d=show_3d,
                              result_name=name, work_root=work_root)
        run.start()
        return run

    def volume_table(self, segmentation_node, table_node=None):
        """The (re)computed volume table of a segmentation: the given table, the one made before, or a new one."""
        table_node = table_node or find_volume_table(segmentation_node)
        return volume_table_node(segmentation_node, self.label_set(segmentation_node), table_node)

    def refresh_volume_table(self, segmentation_node, table_node=None) -> Tuple[Any, str]:
        """Recompute the volume table; returns (table node, one-line summary for the panel)."""
        table_node = table_node or find_volume_table(segmentation_node) or new_volume_table_node(segmentation_node)
        rows = update_volume_table(segmentation_node, table_node, self.label_set(segmentation_node))
        return table_node, self.summary(rows)

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

    def export_csv(self, table_node, path: PathLike) -> Path:
        return export_table_csv(table_node, path)

    def add_to_training_set(self, volume_node, segmentation_node, dataset_dir: PathLike,
                            reviewed: Sequence[str]) -> TrainingCase:
        if not dataset_dir:
            raise InputError("Choose the training dataset folder first.")
        label_set = self.label_set(segmentation_node)
        return add_to_training_set(volume_node, segmentation_node, dataset_dir, self.task, label_set, reviewed)

    def missing_packages(self) -> List[str]:
        return missing_packages()


# -- headless batch ---------------------------------------------------------------------------------------
@dataclass
class BatchCase:
    case: str
    state: str
    message: str = ""
    segmentation: Optional[Path] = None
    volumes_csv: Optional[Path] = None


def write_segmentation_node(segmentation_node, path: PathLike) -> Path:
    """Save a segmentation node as .seg.nrrd with Slicer's own writer (full reference extent)."""
    import slicer

    path = Path(path)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if hasattr(storage, "SetCropToMinimumExtent"):
        storage.SetCropToMinimumExtent(False)
    if not storage.WriteData(segmentation_node):
        raise InputError(f"Slicer could not write {path}; check that the folder is writable.")
    return path


def run_batch(task: str, input_dir: PathLike, output_dir: PathLike, model: Optional[str] = None,
              device: str = "auto", structures: Optional[Sequence[str]] = None, overwrite: bool = False,
              log: Callable[[str], None] = print,
              timeout_per_case: Optional[float] = None) -> List[BatchCase]:
    """Segment every CT in ``input_dir`` exactly as the module does, writing ``<case>.seg.nrrd`` and
    ``<case>_volumes.csv`` per case plus ``volumes.csv`` for all cases into ``output_dir``.

    One case failing does not stop the others; the returned list says what happened to each.
    """

    from .cli import discover_cases
    from .io import read_volume
    from .volumes import write_volume_csv

    cases = discover_cases([str(input_dir)])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    targets = {name: (output_dir / f"{name}.seg.nrrd", output_dir / f"{name}_volumes.csv")
               for name, _ in cases}
    existing = [str(p) for pair in targets.values() for p in pair if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{len(existing)} output file(s) already exist (e.g. {existing[0]}). "
                         "Choose another output folder or pass --overwrite.")
    outcomes: List[BatchCase] = []
    all_rows = []
    for n, (name, path) in enumerate(cases, start=1):
        log(f"[{n}/{len(cases)}] {name}")
        created = []
        try:
            volume_node = node_from_volume(read_volume(path), name)
            created.append(volume_node)
            run = SegmentationRun(task, volume_node, model=model, device=device, structures=structures,
                                  result_name=f"{name} segmentation")
            run.start()
            state = run.wait(timeout=timeout_per_case)
            created += [node for node in (run.segmentation_node, run.table_node) if node is not None]
            for line in run.warnings:
                log(f"  warning: {line}")
            if state != "succeeded":
                outcomes.append(BatchCase(name, state, run.message))
                log(f"  {state}: {run.message}")
                continue
            seg_path, csv_path = targets[name]
            write_segmentation_node(run.segmentation_node, seg_path)
            export_table_csv(run.table_node, csv_path)
            all_rows.extend((name, row) for row in rows_from_table_node(run.table_node))
            outcomes.append(BatchCase(name, state, run.message, seg_path, csv_path))
            log(f"  wrote {seg_path.name} and {csv_path.name}")
        except HeadSegError as exc:
            outcomes.append(BatchCase(name, "failed", str(exc)))
            log(f"  failed: {exc}")
        finally:
            remove_nodes(created)
    if all_rows:
        combined = output_dir / "volumes.csv"
        for index, (case, row) in enumerate(all_rows):
            write_volume_csv([row], combined, case=case, append=index > 0)
    return outcomes


def batch_main(argv: Optional[Sequence[str]] = None, default_task: Optional[str] = None) -> int:
    """Command line of the modules' batch scripts (``<Module>Batch.py``) (run with ``Slicer --no-main-window --python-script``).

    Exit codes: 0 every case succeeded, 1 some failed, 2 bad arguments or nothing could be done.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="<Module>Batch.py", description="Segment every CT of a folder with the HeadSeg Slicer module logic.")
    parser.add_argument("--task", choices=sorted(TASK_LABEL_SETS), default=default_task,
                        required=default_task is None)
    parser.add_argument("--input-dir", required=True, help="folder of CT files, case folders, DICOM folders")
    parser.add_argument("--output-dir", required=True, help="where <case>.seg.nrrd and <case>_volumes.csv go")
    parser.add_argument("--model", help="model name or package folder (default: the task's default model)")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--structures", help="comma-separated structure keys to keep (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return 2 if exc.code else 0
    init_scene()
    structures = [s.strip() for s in args.structures.split(",") if s.strip()] if args.structures else None
    try:
        outcomes = run_batch(args.task, args.input_dir, args.output_dir, model=args.model, device=args.device,
                             structures=structures, overwrite=args.overwrite)
    except HeadSegError as exc:
        print(f"batch: {exc}")
        return 2
    failed = [o for o in outcomes if o.state != "succeeded"]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} case(s) segmented; results in {args.output_dir}")
    return 0 if not failed else (2 if len(failed) == len(outcomes) else 1)


def batch_self_test(task: str, seed: int = 1, model: Optional[str] = None) -> None:
    """The check behind the modules' ``<Module>BatchTest.py`` (CTest runs them inside Slicer): what the batch
    script runs, on one synthetic phantom, writes the case's segmentation and volume CSV, exits 0 and (in the
    Slicer application) leaves the scene with as many nodes as before.

    Raises ``unittest.SkipTest`` when no ``task`` model or a needed Python package is installed (a fresh
    build passes and says why) and ``AssertionError`` when a check fails. Outside Slicer ``batch_main``
    builds its own headless scene, so the scene check is left to the pytest suite there.
    """
    import unittest

    from .io import write_volume
    from .phantoms import make_head_phantom

    if (model is None and not model_choices(task)) or missing_packages():
        raise unittest.SkipTest(f"no {task} model package or Python packages installed")
    scene = init_scene() if in_slicer_app() else None
    with tempfile.TemporaryDirectory() as folder:
        inputs, outputs = Path(folder) / "in", Path(folder) / "out"
        inputs.mkdir()
        phantom = make_head_phantom(seed=seed, spacing=(1.5, 1.5, 2.0), noise_hu=5.0)
        write_volume(phantom.image, inputs / "case1.nrrd")
        nodes_before = scene.GetNumberOfNodes() if scene is not None else None
        argv = ["--input-dir", str(inputs), "--output-dir", str(outputs), "--device", "cpu"]
        code = batch_main(argv + (["--model", model] if model else []), default_task=task)
        if code != 0:
            raise AssertionError(f"the {task} batch exited with {code}, expected 0 (see its output above)")
        seg_path, csv_path = outputs / "case1.seg.nrrd", outputs / "case1_volumes.csv"
        if not seg_path.is_file():
            raise AssertionError(f"the {task} batch wrote no {seg_path.name}")
        with open(csv_path, newline="") as f:
            header = next(csv.reader(f))
        if header != ["structure", "side", "voxels", "volume_cm3"]:
            raise AssertionError(f"{csv_path.name} starts with {header}")
        if scene is not None and scene.GetNumberOfNodes() != nodes_before:
            raise AssertionError(f"the batch left {scene.GetNumberOfNodes() - nodes_before} node(s) in the scene")


__all__ += [
    "STRUCTURE_TAG", "HEADSEG_REQUIREMENTS", "volume_from_node", "node_from_volume", "roi_from_markups",
    "structure_of_segment", "set_segment_terminology", "segment_terminology", "apply_label_set",
    "place_next_to",
    "import_segmentation_file", "segment_volume_rows", "fill_table_node", "update_volume_table",
    "volume_table_node", "rows_from_table_node", "export_table_csv", "labelmap_from_segmentation",
    "TrainingCase", "unique_case_id", "add_to_training_set", "missing_packages", "model_choices",
    "find_volume_table", "segment_mask", "remove_nodes", "SegmentationRun", "TaskLogic", "label_set_of", "LABEL_SET_ATTRIBUTE", "BatchCase", "write_segmentation_node", "run_batch", "batch_main",
    "batch_self_test",
]
