"""Segments and the label-set structures they stand for: matching (HeadSeg tag, ID, forgiving name),
names, colours and terminology, importing a ``headseg segment`` result, and a segmentation back to one
label map on the input's grid (the training-set export).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.slicer.scene import PathLike, place_next_to, volume_from_node

__all__ = [
    "STRUCTURE_TAG", "LABEL_SET_ATTRIBUTE", "binary_labelmap_name", "structure_of_segment", "vtk_string_tag",
    "set_segment_terminology", "segment_terminology", "apply_label_set", "label_set_of",
    "import_segmentation_file", "replace_headseg_segments", "segment_mask", "labelmap_from_segmentation", "labelmap_of_segmentation",
]

#: Segment tag holding the label-set key of the structure a segment stands for. Names and IDs can be
#: edited by users; the tag survives renaming and is saved in .seg.nrrd files.
STRUCTURE_TAG = "HeadSeg.StructureKey"
#: Segmentation node attribute naming the label set its segments follow (set on import).
LABEL_SET_ATTRIBUTE = "HeadSeg.LabelSet"


def binary_labelmap_name() -> str:
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
    from headseg.labels import get_label_set

    name = segmentation_node.GetAttribute(LABEL_SET_ATTRIBUTE) if segmentation_node is not None else None
    name = name or default
    if not name:
        return None
    try:
        return get_label_set(name)
    except InputError:
        return get_label_set(default) if default and default != name else None


def import_segmentation_file(path: PathLike, label_set, reference_volume_node, name: Optional[str] = None,
                             output_node=None, keep: Optional[Iterable[str]] = None, show_3d: bool = False):
    """Load a .seg.nrrd written by ``headseg segment`` into a segmentation node and return the node.

    A new node is created unless ``output_node`` is given (the user chose to replace its segments: only
    those HeadSeg made are replaced, :func:`replace_headseg_segments`).
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
        if created:
            node.GetSegmentation().DeepCopy(loaded.GetSegmentation())
        else:
            replace_headseg_segments(node, loaded)
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


def replace_headseg_segments(segmentation_node, loaded_node) -> List[str]:
    """Put ``loaded_node``'s segments into ``segmentation_node`` in place of the segments HeadSeg made
    there before (those with :data:`STRUCTURE_TAG`); the user's own segments stay, voxels and all.

    Replacing a segmentation the user chose as output must not lose what HeadSeg did not make. Returns
    the IDs of the segments removed."""
    segmentation = segmentation_node.GetSegmentation()
    removed = [segment_id for segment_id in list(segmentation.GetSegmentIDs())
               if vtk_string_tag(segmentation.GetSegment(segment_id), STRUCTURE_TAG)]
    for segment_id in removed:
        segmentation.RemoveSegment(segment_id)
    source = loaded_node.GetSegmentation()
    for segment_id in list(source.GetSegmentIDs()):
        if not segmentation.CopySegmentFromSegmentation(source, segment_id, False):
            raise InputError(f"The result's segment '{source.GetSegment(segment_id).GetName()}' could not be "
                             f"added to '{segmentation_node.GetName()}'.")
    return removed


def segment_mask(segmentation_node, segment_id: str, reference: Volume, reference_volume_node) -> np.ndarray:
    """Boolean mask ``[k, j, i]`` of one segment on the reference volume's grid.

    When the segment's labelmap lies on that grid (the case for HeadSeg results and their edits) its
    voxels are copied as they are; otherwise Slicer resamples it (e.g. after the user changed the
    segmentation geometry or put a transform on it).
    """
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    image = segment.GetRepresentation(binary_labelmap_name())
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


def labelmap_of_segmentation(segmentation_node, label_set, reference_volume_node,
                             segment_ids: Optional[Iterable[str]] = None) -> Volume:
    """One label map of a segmentation, for the review aids and the follow-up comparison.

    Values are the label-set labels of the segments' structures (with ``label_set``; other segments are
    left out) or 1..n in ``segment_ids`` order (without). The grid is the reference volume's; without
    one it is the segmentation's own reference geometry (Slicer's export with
    ``EXTENT_REFERENCE_GEOMETRY``), as for a segmentation loaded from a file with no CT."""
    segmentation = segmentation_node.GetSegmentation()
    ids = list(segment_ids) if segment_ids is not None else list(segmentation.GetSegmentIDs())
    values: List[Tuple[str, int]] = []
    for n, segment_id in enumerate(ids, start=1):
        if label_set is None:
            values.append((segment_id, n))
            continue
        structure = structure_of_segment(segmentation.GetSegment(segment_id), segment_id, label_set)
        if structure is not None:
            values.append((segment_id, structure.label))
    if reference_volume_node is not None:
        if label_set is not None and segment_ids is None:
            return labelmap_from_segmentation(segmentation_node, label_set, reference_volume_node)[0]
        reference = volume_from_node(reference_volume_node, allow_labelmap=True)
        labels = np.zeros(reference.shape, np.uint16)
        for segment_id, value in values:
            labels[segment_mask(segmentation_node, segment_id, reference, reference_volume_node)] = value
        return reference.with_array(labels)
    return _export_on_own_geometry(segmentation_node, values)


def _export_on_own_geometry(segmentation_node, values: List[Tuple[str, int]]) -> Volume:
    """Slicer's export of ``values``' segments on the segmentation's reference geometry, relabelled."""
    import slicer
    import vtk

    scene = segmentation_node.GetScene()
    existing = {scene.GetNthNode(n).GetID() for n in range(scene.GetNumberOfNodes())}
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__headseg_temp__")
    ids = vtk.vtkStringArray()
    for segment_id, _value in values:
        ids.InsertNextValue(segment_id)
    try:
        if values and not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                segmentation_node, ids, labelmap, None, slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY):
            raise InputError(f"Segmentation '{segmentation_node.GetName()}' could not be exported to a label map.")
        if not values or labelmap.GetImageData() is None:
            raise InputError(f"Segmentation '{segmentation_node.GetName()}' holds no segment to measure.")
        exported = volume_from_node(labelmap, allow_labelmap=True)
        # without a colour table the export numbers the segments 1..n in the order of ``ids``
        lookup = np.zeros(len(values) + 1, np.uint16)
        lookup[1:] = [value for _segment_id, value in values]
        return exported.with_array(lookup[np.clip(exported.array.astype(np.int64), 0, len(values))])
    finally:
        for node in [scene.GetNthNode(n) for n in range(scene.GetNumberOfNodes())]:
            if node.GetID() not in existing and node.GetScene() is not None:
                scene.RemoveNode(node)
