"""Voxels, cm³, doubt and flags of every segment of one segmentation, kept per segment so that an edit
costs the edited segment only.

The panel recomputes its volume table after every stroke, on the GUI thread. Recomputing all of it meant
exporting every segment onto the CT's grid and copying the CT and the uncertainty map: about 2 s on a
512 x 512 x 200 CT (benchmarks/bench_volume_follower.py). :class:`SegmentMeasures` measures each segment
on its own bounding box instead (its labelmap is read in place, the uncertainty map as a view), keeps the
result, and after an edit re-measures only:

* the segments the edit names (Slicer's ``vtkSegmentationModifier::ModifyBinaryLabelmap`` passes the
  segment ID with ``SourceRepresentationModified``; :class:`headseg.slicer.tables.VolumeFollower` collects
  them), on a scan of their own layer;
* the segments that held a voxel the edited segment gained, inside their old box: an edit can take
  voxels from another segment (the effects' "overwrite other segments"), never give it any, and what it
  takes is what the edited segment gained (each segment's voxels on its box are kept to compare).

An event without a segment ID (undo, a layer rewritten by a save) means "anything may have changed": a
full measure. The numbers are those of :func:`headseg.measure.quality.structure_quality` on the segment's box,
which equal those on the whole grid (its doubt shell and centroid never look beyond the box);
``asymmetric`` is decided afterwards from the cached volumes. Overlapping segments each keep their own
voxels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Set, Tuple

import numpy as np

from headseg.geometry import Volume

if TYPE_CHECKING:  # annotations only
    from headseg.measure.quality import StructureQuality
    from headseg.measure.volumes import VolumeRow

__all__ = ["Box", "SegmentMeasure", "SegmentMeasures"]

#: A box on the reference grid: (k0, k1, j0, j1, i0, i1), ends exclusive.
Box = Tuple[int, int, int, int, int, int]
QUALITY_MARGIN = 2  # voxels around a structure where structure_quality looks (its bounding_box margin)


@dataclass
class SegmentMeasure:
    """One segment's numbers, and where it lies on the reference grid."""

    segment_id: str
    name: str
    structure: Any  # the label-set Structure it stands for, or None
    voxels: int
    volume_cm3: float
    box: Optional[Box]  # its tight box on the reference grid; None when empty
    mask: Optional[np.ndarray] = None  # its voxels on that box (what an edit is compared with)
    quality: Optional[StructureQuality] = None  # doubt and flags, ``asymmetric`` excepted


def _matrix(vtk_matrix) -> np.ndarray:
    return np.array([[vtk_matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def _voxels_view(image) -> Optional[np.ndarray]:
    """An image's voxels as a read-only [k, j, i] view (no copy), or None when it has none."""
    from vtk.util.numpy_support import vtk_to_numpy

    scalars = image.GetPointData().GetScalars() if image is not None else None
    if scalars is None or scalars.GetNumberOfTuples() == 0:
        return None
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    return vtk_to_numpy(scalars).reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)


def _tight(mask: np.ndarray, origin: Tuple[int, int, int]) -> Tuple[Optional[np.ndarray], Optional[Box]]:
    """``mask`` cut to its tight box, and that box on the grid (``origin``: the mask's first index)."""
    flat = np.flatnonzero(mask)  # one pass; a segment is small next to its layer
    if flat.size == 0:
        return None, None
    k, j, i = np.unravel_index(flat, mask.shape)
    lo = (int(k[0]), int(j.min()), int(i.min()))  # flat indices are sorted: k is too
    hi = (int(k[-1]) + 1, int(j.max()) + 1, int(i.max()) + 1)
    box = (lo[0] + origin[0], hi[0] + origin[0], lo[1] + origin[1], hi[1] + origin[1],
           lo[2] + origin[2], hi[2] + origin[2])
    return mask[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], box


def _overlap(a: Box, b: Box) -> Optional[Tuple[slice, slice, slice, slice, slice, slice]]:
    """Where boxes ``a`` and ``b`` meet, as slices of ``a``'s array then of ``b``'s; None when they do not."""
    lo = [max(a[n], b[n]) for n in (0, 2, 4)]
    hi = [min(a[n + 1], b[n + 1]) for n in (0, 2, 4)]
    if any(top <= bottom for bottom, top in zip(lo, hi)):
        return None
    in_a = tuple(slice(bottom - a[2 * n], top - a[2 * n]) for n, (bottom, top) in enumerate(zip(lo, hi)))
    in_b = tuple(slice(bottom - b[2 * n], top - b[2 * n]) for n, (bottom, top) in enumerate(zip(lo, hi)))
    return in_a + in_b  # type: ignore[return-value]


def _gained(new: SegmentMeasure, old: Optional[SegmentMeasure]) -> Optional[np.ndarray]:
    """The voxels an edit gave a segment, on its new box (None: none)."""
    if new.box is None or new.mask is None:
        return None
    gained = new.mask.copy()
    if old is not None and old.box is not None and old.mask is not None:
        where = _overlap(new.box, old.box)
        if where is not None:
            gained[where[:3]] &= ~old.mask[where[3:]]
    return gained if gained.any() else None


def _holds_any(entry: SegmentMeasure, box: Box, mask: np.ndarray) -> bool:
    """Whether ``entry`` had a voxel where ``mask`` (on ``box``) is set."""
    if entry.box is None or entry.mask is None:
        return False
    where = _overlap(entry.box, box)
    return where is not None and bool((entry.mask[where[:3]] & mask[where[3:]]).any())


class SegmentMeasures:
    """The measures of one segmentation on its reference volume's grid (see the module docstring).

    ``measured`` counts segment measurements (what the tests and the benchmark check: one edit, few).
    """

    def __init__(self, segmentation_node, label_set, reference_volume_node=None) -> None:
        from headseg.slicer.review import reference_volume_of

        self.node = segmentation_node
        self.label_set = label_set
        self.reference = reference_volume_node or reference_volume_of(segmentation_node)
        self.entries: Dict[str, SegmentMeasure] = {}
        self.measured = 0
        self._grid: Optional[Volume] = None  # the reference geometry (zero-stride voxels: no copy)
        self._midline: Optional[float] = None

    # -- what the panel calls ---------------------------------------------------------------------------
    def measure_all(self) -> SegmentMeasures:
        """Measure every segment (a new segmentation, an undo, anything the follower could not name)."""
        from headseg.slicer.segments import binary_labelmap_name

        segmentation = self.node.GetSegmentation()
        binary = binary_labelmap_name()
        if segmentation.GetSourceRepresentationName() != binary and not segmentation.ContainsRepresentation(binary):
            self.node.CreateBinaryLabelmapRepresentation()  # e.g. segments imported from models
        self._grid = self._reference_grid()
        self.entries = {}
        crops = {segment_id: self._measure(segment_id, within=None) for segment_id in segmentation.GetSegmentIDs()}
        self._midline = self._body_midline()
        for segment_id, crop in crops.items():
            self._set_quality(self.entries[segment_id], crop)
        return self

    def update(self, changed: Optional[Iterable[str]]) -> SegmentMeasures:
        """Re-measure after edits that named ``changed`` segments (None: unknown, measure everything)."""
        if changed is None or self._grid is None or self._grid_moved():
            return self.measure_all()
        current = set(self.node.GetSegmentation().GetSegmentIDs())
        for segment_id in set(self.entries) - current:
            del self.entries[segment_id]
        edited = [s for s in dict.fromkeys(changed) if s in current] + [s for s in current if s not in self.entries]
        touched: Set[str] = set()
        for segment_id in edited:
            old = self.entries.get(segment_id)
            entry = self._remeasure(segment_id, within=None)
            gained = _gained(entry, old)
            if gained is not None and entry.box is not None:  # whoever held those voxels lost them
                touched |= {other.segment_id for other in self.entries.values()
                            if other.segment_id not in edited and _holds_any(other, entry.box, gained)}
        for segment_id in touched:  # they can only have lost voxels, inside their old box
            self._remeasure(segment_id, within=self.entries[segment_id].box)
        return self

    def rows(self, quality: bool = True) -> List[VolumeRow]:
        """Volume rows: label-set structures in label order, other segments by name, the totals, and doubt
        and flags (``asymmetric`` decided here, from the cached volumes) unless ``quality`` is off."""
        from headseg.measure.volumes import VolumeRow, derived_rows, with_quality

        known: List[Tuple[int, VolumeRow]] = []
        others: List[VolumeRow] = []
        for entry in self.entries.values():
            s = entry.structure
            if s is not None:
                known.append((s.label, VolumeRow(s.base_key, s.side, entry.voxels, entry.volume_cm3, s.name,
                                                 key=s.key)))
            else:
                others.append(VolumeRow(entry.name, "", entry.voxels, entry.volume_cm3, entry.name,
                                        key=entry.segment_id))
        rows = [row for _, row in sorted(known, key=lambda item: item[0])] + others
        if self.label_set is None:
            return rows
        rows += derived_rows(rows, self.label_set)
        return with_quality(rows, self.qualities()) if quality else rows

    def qualities(self) -> Dict[str, StructureQuality]:
        """Doubt and flags per structure key; raises InputError, as the whole-grid label map does, when two
        segments stand for one structure. Without a reference volume: the export on the segmentation's
        own geometry (:func:`headseg.slicer.review.segment_quality`)."""
        from dataclasses import replace

        from headseg.measure.quality import _flag_asymmetry
        from headseg.slicer.review import segment_quality

        if self._grid is None:
            return segment_quality(self.node, self.label_set)
        structured = [e for e in self.entries.values() if e.structure is not None and e.quality is not None]
        keys = [e.structure.key for e in structured]
        for key in {k for k in keys if keys.count(k) > 1}:
            from headseg.errors import InputError

            names = [e.name for e in structured if e.structure.key == key]
            raise InputError(f"Segments '{names[0]}' and '{names[1]}' both stand for "
                             f"{self.label_set.by_key(key).name}; delete or rename one of them.")
        out: Dict[str, StructureQuality] = {}
        for e in structured:
            if e.quality is not None:
                out[e.structure.key] = replace(e.quality, flags=list(e.quality.flags))
        _flag_asymmetry(out, {e.structure.key: e.volume_cm3 for e in structured}, self.label_set)
        return out

    # -- one segment ------------------------------------------------------------------------------------
    def _remeasure(self, segment_id: str, within: Optional[Box]) -> SegmentMeasure:
        crop = self._measure(segment_id, within)
        entry = self.entries[segment_id]
        self._set_quality(entry, crop)
        return entry

    def _measure(self, segment_id: str, within: Optional[Box]) -> Optional[np.ndarray]:
        """Count one segment (only inside ``within`` when given), keep its entry; returns its voxels on its
        box (for its quality)."""
        from headseg.slicer.segments import binary_labelmap_name, structure_of_segment

        self.measured += 1
        segment = self.node.GetSegmentation().GetSegment(segment_id)
        structure = structure_of_segment(segment, segment_id, self.label_set) if self.label_set is not None else None
        crop, box, voxel_mm3 = self._segment_crop(segment_id, segment.GetRepresentation(binary_labelmap_name()),
                                                  segment.GetLabelValue(), within)
        voxels = int(np.count_nonzero(crop)) if crop is not None else 0
        self.entries[segment_id] = SegmentMeasure(segment_id, segment.GetName() or segment_id, structure, voxels,
                                                  voxels * voxel_mm3 / 1000.0, box if voxels else None,
                                                  crop if voxels and box is not None else None)
        return crop

    def _segment_crop(self, segment_id: str, image, label: int, within: Optional[Box]):
        """(the segment's voxels on its tight box of the reference grid, that box, one voxel's mm³). Without
        a reference grid: its voxels on its own labelmap, and no box."""
        import vtk

        from headseg.slicer.segments import segment_mask

        voxels = _voxels_view(image)
        if voxels is None:
            return None, None, 0.0
        matrix = vtk.vtkMatrix4x4()
        image.GetImageToWorldMatrix(matrix)
        voxel_mm3 = float(abs(np.linalg.det(_matrix(matrix)[:3, :3])))
        grid = self._grid
        if grid is None:
            return voxels == label, None, voxel_mm3
        if not self._on_grid(matrix):  # another grid, or a transform: Slicer resamples it onto the CT's
            return (*_tight(segment_mask(self.node, segment_id, grid, self.reference), (0, 0, 0)), voxel_mm3)
        i0, _, j0, _, k0, _ = image.GetExtent()
        lo = np.array([k0, j0, i0])
        start, stop = np.maximum(lo, 0), np.minimum(lo + voxels.shape, grid.shape)
        if within is not None:
            start = np.maximum(start, within[0::2])
            stop = np.minimum(stop, within[1::2])
        if np.any(stop <= start):
            return None, None, voxel_mm3
        region = voxels[tuple(slice(a - o, b - o) for a, b, o in zip(start, stop, lo))]
        return (*_tight(region == label, (int(start[0]), int(start[1]), int(start[2]))), voxel_mm3)

    def _set_quality(self, entry: SegmentMeasure, crop: Optional[np.ndarray]) -> None:
        """Doubt and flags of a label-set structure, from its box with structure_quality's margin."""
        from headseg.measure.quality import structure_quality
        from headseg.slicer.review import FRAGMENTED_TAG, mask_digest, uncertainty_node_of
        from headseg.slicer.segments import vtk_string_tag

        s = entry.structure
        entry.quality = None
        if s is None or self._grid is None:
            return
        grid = self._grid
        if entry.box is None or crop is None:
            empty = Volume(np.zeros((1, 1, 1), np.uint8), grid.spacing, grid.origin, grid.direction)
            entry.quality = structure_quality(empty, self.label_set, None, None, None, structures=[s.key])[s.key]
            return
        k0, k1, j0, j1, i0, i1 = entry.box
        lo = [max(0, v - QUALITY_MARGIN) for v in (k0, j0, i0)]
        hi = [min(n, v + QUALITY_MARGIN) for n, v in zip(grid.shape, (k1, j1, i1))]
        labels = np.zeros([b - a for a, b in zip(lo, hi)], np.uint16)
        labels[k0 - lo[0]:k1 - lo[0], j0 - lo[1]:j1 - lo[1], i0 - lo[2]:i1 - lo[2]][crop] = s.label
        labelmap = Volume(labels, grid.spacing, tuple(grid.index_to_lps((lo[2], lo[1], lo[0]))), grid.direction)
        uncertainty = self._uncertainty(uncertainty_node_of(self.node))
        region = uncertainty[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] if uncertainty is not None else None
        digest = vtk_string_tag(self.node.GetSegmentation().GetSegment(entry.segment_id), FRAGMENTED_TAG)
        removed = {s.key: 1.0} if digest and digest == mask_digest(crop, (k0, j0, i0)) else None
        entry.quality = structure_quality(labelmap, self.label_set, region, self._midline, removed,
                                          structures=[s.key])[s.key]

    # -- the grid, the CT's midline, the uncertainty map -------------------------------------------------
    def _reference_grid(self) -> Optional[Volume]:
        import vtk

        if self.reference is None or self.reference.GetImageData() is None:
            return None
        matrix = vtk.vtkMatrix4x4()
        self.reference.GetIJKToRASMatrix(matrix)
        i, j, k = self.reference.GetImageData().GetDimensions()
        zero = np.broadcast_to(np.zeros((), np.uint8), (k, j, i))  # geometry only: no voxels copied
        return Volume.from_ijk_to_ras(zero, _matrix(matrix))

    def _grid_moved(self) -> bool:
        now = self._reference_grid()
        return now is None or self._grid is None or not now.same_geometry(self._grid)

    def _on_grid(self, image_matrix) -> bool:
        assert self._grid is not None  # only asked once the grid is known
        untransformed = self.node.GetParentTransformNode() is None and self.reference.GetParentTransformNode() is None
        return untransformed and bool(np.allclose(_matrix(image_matrix), self._grid.ijk_to_ras, atol=1e-4))

    def _body_midline(self) -> Optional[float]:
        """The CT's body midline near the structures (what review.segment_quality uses), once per CT."""
        from headseg.slicer.review import UNCERTAINTY_ATTRIBUTE, _midline

        ref = self.reference
        if ref is None or ref.IsA("vtkMRMLLabelMapVolumeNode") or ref.GetAttribute(UNCERTAINTY_ATTRIBUTE) == "1":
            return None
        boxes = [e.box for e in self.entries.values() if e.structure is not None and e.box is not None]
        assert self._grid is not None
        near = np.zeros((self._grid.shape[0], 1, 1), bool)  # body_midline_x looks only at its slices
        for box in boxes:
            near[box[0]:box[1]] = True
        return _midline(ref, near)

    def _uncertainty(self, node) -> Optional[np.ndarray]:
        """The uncertainty map's voxels as a view, when it lies on the reference grid."""
        import vtk

        if node is None or node.GetImageData() is None or self._grid is None:
            return None
        matrix = vtk.vtkMatrix4x4()
        node.GetIJKToRASMatrix(matrix)
        voxels = _voxels_view(node.GetImageData())
        if voxels is None or voxels.shape != self._grid.shape \
                or not np.allclose(_matrix(matrix), self._grid.ijk_to_ras, atol=1e-3):
            return None
        return voxels
