"""Review aids in the scene: the uncertainty map as a coloured foreground layer, each structure's
``doubt`` and ``flags`` computed on the segmentation as it is now, and the slice views moved to a
structure's most uncertain region.

The map comes from the ``headseg segment`` child (``<case>_uncertainty.nrrd``, float32 normalised
entropy in [0, 1] on the CT's grid). Its volume node carries :data:`UNCERTAINTY_ATTRIBUTE` and the
segmentation points at it through the node reference :data:`UNCERTAINTY_REFERENCE` (saved with the
scene). The numbers are those of :mod:`headseg.measure.quality`, so that an unedited result shows what the
command line wrote:

* ``doubt`` is recomputed from the map on the segment as it is now (after a correction it describes the
  corrected boundary);
* ``flags`` are recomputed with :func:`headseg.measure.quality.structure_quality` (``empty``, ``volume_low``,
  ``volume_high``, ``wrong_side`` against the CT's body midline, ``asymmetric``); ``fragmented`` speaks
  of the model's raw output, which the scene does not hold, so it is kept from the run while the
  segment is unedited (a digest of its voxels, :data:`FRAGMENTED_TAG`) and dropped once it is edited.

``slicer`` and ``vtk`` are imported inside the functions (see ``headseg.slicer``).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from headseg.geometry import Volume, bounding_box
from headseg.slicer.scene import node_from_volume, place_next_to, volume_from_node
from headseg.slicer.segments import STRUCTURE_TAG, labelmap_of_segmentation, structure_of_segment, vtk_string_tag

if TYPE_CHECKING:  # annotations only
    from headseg.measure.quality import StructureQuality

__all__ = [
    "UNCERTAINTY_REFERENCE", "UNCERTAINTY_ATTRIBUTE", "FRAGMENTED_TAG", "TRANSPARENT_BELOW", "DEFAULT_OPACITY",
    "COLOR_NODE_TAG", "warm_colors", "uncertainty_color_node", "add_uncertainty_node", "uncertainty_node_of",
    "show_uncertainty", "set_uncertainty_opacity", "reference_volume_of", "segment_quality", "mark_fragmented",
    "row_keys", "most_uncertain_point", "jump_slices_to", "mask_digest",
]

#: Node reference role from a segmentation node to its uncertainty map.
UNCERTAINTY_REFERENCE = "HeadSeg.uncertainty"
#: Volume node attribute that marks a HeadSeg uncertainty map ("1").
UNCERTAINTY_ATTRIBUTE = "HeadSeg.Uncertainty"
#: Segment tag: digest of the segment's voxels when the run flagged it ``fragmented``.
FRAGMENTED_TAG = "HeadSeg.FragmentedVoxels"
#: Uncertainty below this is drawn fully transparent: the CT stays visible where the model is sure.
TRANSPARENT_BELOW = 0.1
#: Foreground opacity of the map when it is first shown.
DEFAULT_OPACITY = 0.5
#: Singleton tag of the colour table node (one per scene, shared by every map).
COLOR_NODE_TAG = "HeadSegUncertainty"

# Control points (position, r, g, b) of a warm ramp from dark violet through red and orange to pale
# yellow. Lightness rises along it (tested), so a lighter colour always means more doubt.
_WARM = ((0.0, 0.16, 0.03, 0.27), (0.3, 0.55, 0.08, 0.36), (0.55, 0.87, 0.27, 0.16), (0.8, 0.98, 0.62, 0.10),
         (1.0, 1.0, 0.96, 0.68))


def mask_digest(mask: np.ndarray, origin: Tuple[int, int, int] = (0, 0, 0)) -> str:
    """Digest of a mask's voxels on the grid, the same for a whole-grid mask and any crop of it that holds
    all its voxels (``origin``: the crop's first index, k, j, i): what a segment's ``fragmented`` tag keeps."""
    if not mask.any():
        return hashlib.blake2b(b"empty", digest_size=16).hexdigest()
    box = bounding_box(mask)
    start = tuple(int(s.start) + int(o) for s, o in zip(box, origin))
    tight = mask[box]
    return hashlib.blake2b(np.packbits(tight).tobytes() + repr((start, tight.shape)).encode(),
                           digest_size=16).hexdigest()


def warm_colors(count: int = 256) -> np.ndarray:
    """``count`` RGBA rows in [0, 1] of the uncertainty colour table; alpha 0 below :data:`TRANSPARENT_BELOW`."""
    t = np.linspace(0.0, 1.0, count)
    points = np.array(_WARM)
    rgb = np.stack([np.interp(t, points[:, 0], points[:, c]) for c in (1, 2, 3)], axis=1)
    alpha = (t >= TRANSPARENT_BELOW).astype(float)
    return np.concatenate([rgb, alpha[:, None]], axis=1)


def uncertainty_color_node(scene):
    """The scene's HeadSeg uncertainty colour table (made on first use).

    Slicer's scalar display pipeline keeps the colour table's alpha as a mask (it extracts the alpha of
    the mapped colours and ANDs it with the threshold mask: vtkMRMLScalarVolumeDisplayNode.cxx, the
    constructor's ``ExtractAlpha``/``AlphaLogic`` set-up, v5.6.2 and main), so entries with alpha 0 are
    transparent in the slice views and the rest is blended with the foreground opacity."""
    import slicer

    node = scene.GetSingletonNode(COLOR_NODE_TAG, "vtkMRMLColorTableNode")
    if node is not None:
        return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetTypeToUser()
    node.SetName("HeadSeg uncertainty")
    node.SetSingletonTag(COLOR_NODE_TAG)
    node.SetAttribute("Category", "HeadSeg")
    colors = warm_colors()
    node.SetNumberOfColors(len(colors))
    for index, (r, g, b, a) in enumerate(colors):
        node.SetColor(index, f"{index / (len(colors) - 1):.3f}", float(r), float(g), float(b), float(a))
    return scene.AddNode(node)


def add_uncertainty_node(volume: Volume, segmentation_node, name: Optional[str] = None):
    """Add an uncertainty map (``volume``, values in [0, 1]) for ``segmentation_node``: a scalar volume
    node next to it, coloured by :func:`uncertainty_color_node` with window 0-1, referenced by the
    segmentation (:data:`UNCERTAINTY_REFERENCE`). An earlier map of the same segmentation is replaced."""
    from headseg.slicer.scene import remove_nodes

    scene = segmentation_node.GetScene()
    old = uncertainty_node_of(segmentation_node)
    name = name or f"{segmentation_node.GetName()} uncertainty"
    node = node_from_volume(volume.with_array(np.asarray(volume.array, np.float32)), name)
    node.SetAttribute(UNCERTAINTY_ATTRIBUTE, "1")
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(uncertainty_color_node(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(0.0, 1.0)  # the whole colour table spans 0..1
    segmentation_node.SetNodeReferenceID(UNCERTAINTY_REFERENCE, node.GetID())
    place_next_to(node, segmentation_node)
    if old is not None and old is not node:
        remove_nodes([old])
    return node


def uncertainty_node_of(segmentation_node):
    """The uncertainty map of a segmentation, or None."""
    if segmentation_node is None:
        return None
    return segmentation_node.GetNodeReference(UNCERTAINTY_REFERENCE)


def _composite_nodes(scene) -> List[Any]:
    return [scene.GetNthNodeByClass(n, "vtkMRMLSliceCompositeNode")
            for n in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))]


def show_uncertainty(uncertainty_node, scene, opacity: float = DEFAULT_OPACITY) -> None:
    """Show ``uncertainty_node`` as the foreground of every slice view with ``opacity``; with None, take
    a HeadSeg map off the views (another foreground the user chose stays). What
    ``slicer.util.setSliceViewerLayers(foreground=..., foregroundOpacity=...)`` does (Base/Python/slicer/
    util.py, v5.6.2 and main: SetForegroundVolumeID and SetForegroundOpacity of each
    vtkMRMLSliceCompositeNode), written out so that it needs no ``slicer.mrmlScene``."""
    for composite in _composite_nodes(scene):
        if uncertainty_node is not None:
            composite.SetForegroundVolumeID(uncertainty_node.GetID())
            composite.SetForegroundOpacity(float(opacity))
            continue
        shown = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        if shown is not None and shown.GetAttribute(UNCERTAINTY_ATTRIBUTE) == "1":
            composite.SetForegroundVolumeID(None)


def set_uncertainty_opacity(scene, opacity: float) -> None:
    """The opacity slider: the foreground opacity of the views that show a HeadSeg uncertainty map."""
    for composite in _composite_nodes(scene):
        shown = scene.GetNodeByID(composite.GetForegroundVolumeID() or "")
        if shown is not None and shown.GetAttribute(UNCERTAINTY_ATTRIBUTE) == "1":
            composite.SetForegroundOpacity(float(opacity))


def reference_volume_of(segmentation_node):
    """The volume a segmentation was made on (its reference-geometry node reference), or None."""
    if segmentation_node is None:
        return None
    node = segmentation_node.GetNodeReference(segmentation_node.GetReferenceImageGeometryReferenceRole())
    return node if node is not None and node.IsA("vtkMRMLScalarVolumeNode") else None


# -- doubt and flags ------------------------------------------------------------------------------------
_midlines: Dict[Tuple[str, int], Optional[float]] = {}  # (CT node ID, its voxels' MTime) -> midline LPS x


def _midline(ct_node, labels: np.ndarray) -> Optional[float]:
    """The CT's body midline near the structures (headseg.measure.quality.body_midline_x), computed once per CT."""
    from headseg.measure.quality import body_midline_x

    image = ct_node.GetImageData()
    key = (ct_node.GetID(), int(image.GetMTime()) if image is not None else 0)
    if key not in _midlines:
        if len(_midlines) > 8:
            _midlines.clear()
        _midlines[key] = body_midline_x(volume_from_node(ct_node), near=labels > 0)
    return _midlines[key]


def _digest(mask: np.ndarray) -> str:
    """The segment's voxels as its ``fragmented`` tag keeps them: :func:`mask_digest`,
    so the whole-grid check here and the per-box one of the volume follower agree."""
    return mask_digest(mask)


def _segments_by_key(segmentation_node, label_set) -> Dict[str, Any]:
    segmentation = segmentation_node.GetSegmentation()
    found: Dict[str, Any] = {}
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        structure = structure_of_segment(segment, segment_id, label_set)
        if structure is not None:
            found.setdefault(structure.key, segment)
    return found


def _uncertainty_on(labelmap: Volume, uncertainty_node) -> Optional[np.ndarray]:
    if uncertainty_node is None:
        return None
    uncertainty = volume_from_node(uncertainty_node)
    return uncertainty.array if uncertainty.same_geometry(labelmap, tol=1e-3) else None


def segment_quality(segmentation_node, label_set, reference_volume_node=None) -> Dict[str, StructureQuality]:
    """Doubt and flags of every structure the segmentation holds, as it is now (see the module docstring).

    ``reference_volume_node`` (default: the segmentation's reference volume) is the grid the segments
    are counted on and the CT the midline comes from; without it the segmentation's own geometry is
    used and ``wrong_side`` is not checked. Empty when no segment stands for a ``label_set`` structure."""
    from headseg.measure.quality import structure_quality

    if segmentation_node is None or label_set is None:
        return {}
    segments = _segments_by_key(segmentation_node, label_set)
    if not segments:
        return {}
    reference = reference_volume_node or reference_volume_of(segmentation_node)
    labelmap = labelmap_of_segmentation(segmentation_node, label_set, reference)
    uncertainty = _uncertainty_on(labelmap, uncertainty_node_of(segmentation_node))
    is_ct = reference is not None and not reference.IsA("vtkMRMLLabelMapVolumeNode") \
        and reference.GetAttribute(UNCERTAINTY_ATTRIBUTE) != "1"
    midline = _midline(reference, labelmap.array) if is_ct else None
    removed = {}
    for key, segment in segments.items():
        digest = vtk_string_tag(segment, FRAGMENTED_TAG)
        if digest and digest == _digest(labelmap.array == label_set.by_key(key).label):
            removed[key] = 1.0  # unedited since the run flagged it: keep the run's 'fragmented'
    return structure_quality(labelmap, label_set, uncertainty, midline, removed, structures=list(segments))


def mark_fragmented(segmentation_node, label_set, keys: Iterable[str], reference_volume_node=None) -> None:
    """Remember that the run flagged ``keys`` ``fragmented`` (a digest of each segment's voxels now)."""
    keys = [k for k in keys if k in label_set]
    segments = _segments_by_key(segmentation_node, label_set)
    if not keys or not segments:
        return
    reference = reference_volume_node or reference_volume_of(segmentation_node)
    labelmap = labelmap_of_segmentation(segmentation_node, label_set, reference)
    for key in keys:
        if key in segments:
            segments[key].SetTag(FRAGMENTED_TAG, _digest(labelmap.array == label_set.by_key(key).label))


# -- where to look first ------------------------------------------------------------------------------
def row_keys(structure: str, side: str, label_set) -> List[str]:
    """The label-set keys a volume-table row stands for: one structure, or a total's members."""
    if label_set is None:
        return []
    key = f"{structure}_{side}" if side else structure
    if key in label_set:
        return [key]
    groups = getattr(label_set, "groups", {}) or {}
    return list(groups.get(key, ()))


def _segment_ids_of_row(segmentation_node, structure: str, side: str, label_set) -> List[str]:
    segmentation = segmentation_node.GetSegmentation()
    keys = set(row_keys(structure, side, label_set))
    ids = []
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        found = structure_of_segment(segment, segment_id, label_set) if label_set is not None else None
        if (found is not None and found.key in keys) or (not keys and not side and not vtk_string_tag(
                segment, STRUCTURE_TAG) and (segment.GetName() == structure or segment_id == structure)):
            ids.append(segment_id)
    return ids


def most_uncertain_point(segmentation_node, structure: str, side: str, label_set,
                         reference_volume_node=None) -> Optional[Tuple[float, float, float]]:
    """RAS point of the row's most uncertain region: the voxel, across the segment's surface (one voxel
    inside and one outside, where ``doubt`` is measured), where the uncertainty averaged over its 3x3x3
    neighbourhood is highest. Without a map: the segment's voxel nearest its centroid. None when the
    row's segments are empty or absent."""
    from scipy import ndimage

    from headseg.measure.quality import surface_shell
    from headseg.slicer.segments import segment_mask

    if segmentation_node is None:
        return None
    ids = _segment_ids_of_row(segmentation_node, structure, side, label_set)
    if not ids:
        return None
    reference = reference_volume_node or reference_volume_of(segmentation_node)
    if reference is None:  # the segmentation's own grid, through the same export the comparison uses
        grid = labelmap_of_segmentation(segmentation_node, None, None, segment_ids=ids)
        mask = grid.array > 0
    else:
        grid = volume_from_node(reference)
        mask = np.zeros(grid.shape, bool)
        for segment_id in ids:
            mask |= segment_mask(segmentation_node, segment_id, grid, reference)
    if not mask.any():
        return None
    box = bounding_box(mask, margin=2)
    uncertainty = _uncertainty_on(grid, uncertainty_node_of(segmentation_node))
    if uncertainty is not None:
        shell = surface_shell(mask[box])
        smooth = ndimage.uniform_filter(np.asarray(uncertainty[box], np.float32), size=3, mode="nearest")
        local = np.unravel_index(int(np.argmax(np.where(shell, smooth, -1.0))), shell.shape)
    else:
        inside = np.argwhere(mask[box])
        centre = inside.mean(axis=0)
        local = tuple(inside[int(np.argmin(((inside - centre) ** 2).sum(axis=1)))])
    k, j, i = (int(a) + int(b.start) for a, b in zip(local, box))
    lps = grid.index_to_lps((i, j, k))
    return (float(-lps[0]), float(-lps[1]), float(lps[2]))


def jump_slices_to(scene, ras: Sequence[float]) -> None:
    """Centre every slice view on ``ras``: ``vtkMRMLSliceNode::JumpAllSlices(scene, r, a, s,
    CenteredJumpSlice)`` (Libs/MRML/Core/vtkMRMLSliceNode.h, static in v5.6.2 and main), the call behind
    the Markups module's jump to a control point (vtkSlicerMarkupsLogic::JumpSlicesToLocation,
    vtkSlicerMarkupsLogic.cxx:814 in v5.6.2, :797 on main)."""
    import slicer

    r, a, s = (float(v) for v in ras)
    slicer.vtkMRMLSliceNode.JumpAllSlices(scene, r, a, s, slicer.vtkMRMLSliceNode.CenteredJumpSlice)
