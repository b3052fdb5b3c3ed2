"""What one Segment Editor stroke costs the panel: recomputing the volume table (voxels, cm³, doubt and
flags) after an edit, on a 512 x 512 x 200 CT with 10 segments and an uncertainty map.

Times, in one run, on a real MRML scene (slicer-core wheel), through the code the panel runs
(``TaskLogic.refresh_volumes`` with the panel's ``VolumeFollower``):

* before: the whole-grid recompute the panel did after every stroke until the follower kept per-segment
  measures (every segment's layer counted with one bincount, doubt and flags from
  ``review.segment_quality``, which exports every segment onto the CT's grid and copies the uncertainty
  map) -- restated here as it was;
* full: a fresh :class:`headseg.slicer.measures.SegmentMeasures` of every segment (a new segmentation, an undo);
* after: one stroke of the Paint effect (``vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap`` on a 5 x
  9 x 9 brush), then the follower's update: the painted segment only (target: under 100 ms).

Each result is checked against the full measure. Usage:
``python benchmarks/bench_volume_follower.py [--size 512 512 200] [--repeat 5]``
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, List, Tuple

import numpy as np

from headseg.geometry import Volume
from headseg.io import write_segmentation
from headseg.labels import get_label_set
from headseg.measure.volumes import VolumeRow, derived_rows, with_quality
from headseg.slicer import review, scene, segments, tables
from headseg.slicer.logic import TaskLogic

ORBIT = get_label_set("orbit")


class OrbitLogic(TaskLogic):
    task = "orbit"


def make_case(size_ijk: Tuple[int, int, int], seed: int = 0) -> Tuple[Volume, Volume, Volume]:
    """(CT, label map with the 10 orbit structures as ellipsoids around both orbits, uncertainty map)."""
    i_n, j_n, k_n = size_ijk
    rng = np.random.default_rng(seed)
    k, j, i = np.ogrid[:k_n, :j_n, :i_n]
    head = ((i - i_n / 2) / (0.42 * i_n)) ** 2 + ((j - j_n / 2) / (0.45 * j_n)) ** 2 < 1.0
    ct = np.where(head, 40, -1000).astype(np.int16) + np.zeros((k_n, 1, 1), np.int16)
    labels = np.zeros((k_n, j_n, i_n), np.uint8)
    for structure in ORBIT:
        side = -1 if structure.side == "right" else 1  # LPS +x (i) is the patient's left
        n = (structure.label - 1) % 5
        centre = (k_n * (0.3 + 0.1 * n), j_n * (0.3 + 0.02 * n), i_n * (0.5 + side * (0.12 + 0.01 * n)))
        radii = (k_n * 0.04, j_n * 0.06, i_n * 0.012)  # apart along k: no two structures overlap
        lo = [max(0, int(c - r) - 1) for c, r in zip(centre, radii)]
        hi = [int(c + r) + 2 for c, r in zip(centre, radii)]
        kk, jj, ii = np.ogrid[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        inside = sum(((x - c) / r) ** 2 for x, c, r in zip((kk, jj, ii), centre, radii)) < 1.0
        labels[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]][inside] = structure.label
    uncertainty = rng.random((k_n, j_n, i_n), dtype=np.float32)
    grid = dict(spacing=(0.5, 0.5, 1.0), origin=(-0.25 * i_n, -0.25 * j_n, -0.5 * k_n))
    return Volume(ct, **grid), Volume(labels, **grid), Volume(uncertainty, **grid)


def whole_grid_rows(node, label_set) -> List[VolumeRow]:
    """The recompute the panel ran after every stroke before (as tables.segment_volume_rows did it)."""
    from vtk.util.numpy_support import vtk_to_numpy

    segmentation = node.GetSegmentation()
    counts = {}
    for layer in range(segmentation.GetNumberOfLayers()):
        values = vtk_to_numpy(segmentation.GetLayerDataObject(layer).GetPointData().GetScalars())
        counts[layer] = np.bincount(values.ravel().astype(np.int64, copy=False), minlength=1)
    rows = []
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        structure = segments.structure_of_segment(segment, segment_id, label_set)
        layer_counts = counts[segmentation.GetLayerIndex(segment_id)]
        label = segment.GetLabelValue()
        voxels = int(layer_counts[label]) if label < len(layer_counts) else 0
        volume = voxels * 0.25 / 1000.0
        rows.append((structure.label, VolumeRow(structure.base_key, structure.side, voxels, volume, structure.name,
                                                key=structure.key)))
    rows = [row for _, row in sorted(rows, key=lambda item: item[0])]
    rows += derived_rows(rows, label_set)
    return with_quality(rows, review.segment_quality(node, label_set))


CPU_SECONDS: List[float] = []  # the process's CPU time of each timed call (wall time depends on the load)


def timed(function: Callable[[], object], repeat: int) -> Tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start, cpu = time.perf_counter(), time.process_time()
        result = function()
        times.append(time.perf_counter() - start)
        CPU_SECONDS.append(time.process_time() - cpu)
    return statistics.median(times), result


def brush(ct_node, centre_kji, half=(2, 4, 4)):
    """A Paint stroke's modifier labelmap: the CT's geometry, a small extent around ``centre_kji``."""
    import slicer
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    image = slicer.vtkOrientedImageData()
    matrix = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    (k, j, i), (hk, hj, hi) = centre_kji, half
    image.SetExtent(i - hi, i + hi, j - hj, j + hj, k - hk, k + hk)
    ones = np.ones((2 * hk + 1) * (2 * hj + 1) * (2 * hi + 1), np.uint8)
    image.GetPointData().SetScalars(numpy_to_vtk(ones, deep=True, array_type=vtk.VTK_UNSIGNED_CHAR))
    return image


def key(rows) -> list:
    return [(r.structure, r.side, r.voxels, round(r.volume_cm3, 9), r.flags,
             None if r.doubt != r.doubt else round(r.doubt, 6)) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs=3, default=(512, 512, 200), metavar=("I", "J", "K"))
    parser.add_argument("--repeat", type=int, default=5, help="strokes timed (median reported)")
    args = parser.parse_args()
    import slicer

    scene.init_headless_slicer()
    ct, labels, uncertainty = make_case(tuple(args.size))
    ct_node = scene.node_from_volume(ct, "CT")
    with tempfile.TemporaryDirectory() as folder:
        path = write_segmentation(labels, ORBIT, Path(folder) / "case.seg.nrrd")
        node = segments.import_segmentation_file(path, ORBIT, ct_node, name="CT orbit segmentation")
    review.add_uncertainty_node(uncertainty, node)
    print(f"CT {args.size[0]} x {args.size[1]} x {args.size[2]}, {node.GetSegmentation().GetNumberOfSegments()} "
          "segments, float32 uncertainty map")

    before, before_rows = timed(lambda: whole_grid_rows(node, ORBIT), 1)  # seconds each: timed once
    logic = OrbitLogic()
    follower = tables.VolumeFollower(schedule=lambda: None)
    follower.observe(node)
    full, full_update = timed(lambda: logic.refresh_volumes(node), 1)
    follower.measure(ORBIT)
    editor_node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor_node.SetAndObserveSegmentationNode(node)
    editor_node.SetAndObserveSourceVolumeNode(ct_node)
    editor = slicer.vtkSlicerSegmentEditorLogic()
    editor.SetMRMLScene(slicer.mrmlScene)
    editor.SetSegmentEditorNode(editor_node)
    target = ORBIT.by_key("lateral_rectus_right")
    inside = np.argwhere(labels.array == target.label)
    strokes, measured = [], []
    for n in range(args.repeat):  # each stroke on the muscle's edge, a little further along it
        centre = inside[(n + 1) * len(inside) // (args.repeat + 2)]
        editor.ModifySegmentByLabelmap(node, target.key, brush(ct_node, centre),
                                       slicer.vtkSlicerSegmentEditorLogic.ModificationModeAdd, True, False)
        count = follower.measures.measured
        seconds, update = timed(lambda: logic.refresh_volumes(node, follower=follower), 1)
        strokes.append(seconds)
        measured.append(follower.measures.measured - count)
    after = statistics.median(strokes)
    assert key(update.rows) == key(logic.refresh_volumes(node).rows), "the follower's numbers differ from a full measure"
    assert key(full_update.rows) == key(before_rows), "the full measure differs from the whole-grid recompute"

    cpu_before, cpu_full, cpu_strokes = CPU_SECONDS[0], CPU_SECONDS[1], CPU_SECONDS[2:]
    print(f"before (whole-grid recompute per stroke): {1000 * before:8.1f} ms  (CPU {1000 * cpu_before:.1f} ms)")
    print(f"full measure (new segmentation, undo):    {1000 * full:8.1f} ms  (CPU {1000 * cpu_full:.1f} ms)")
    print(f"after (one stroke, follower's update):    {1000 * after:8.1f} ms  (median of {len(strokes)}; "
          f"segments measured per stroke: {measured})")
    print("  each stroke (the first scans the imported full-grid layer; Slicer then shrinks it to its segments' "
          f"extent): {', '.join(f'{1000 * t:.1f}' for t in strokes)} ms; CPU "
          f"{', '.join(f'{1000 * t:.1f}' for t in cpu_strokes)} ms")
    print(f"ratio before/after: {before / after:.1f}x; target < 100 ms: {'met' if after < 0.1 else 'NOT met'}")


if __name__ == "__main__":
    main()
