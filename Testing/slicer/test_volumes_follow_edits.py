"""The volume table and the CSV follow every edit, on a real MRML scene (slicer-core wheel).

Edits go through the calls Slicer's effects use: ``vtkSlicerSegmentEditorLogic.ModifySegmentByLabelmap``
(what qSlicerSegmentEditorAbstractEffect::modifySegmentByLabelmap calls on main) and, as in Slicer 5.6,
``vtkSlicerSegmentationsModuleLogic.SetBinaryLabelmapToSegment`` followed by ``SetSegmentStatus``
(qSlicerSegmentEditorAbstractEffect.cxx, v5.6.2). Those calls fire the events themselves; the
``VolumeFollower`` must see them, and the recomputed table and CSV must hold the new voxel counts.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from headseg.io import write_segmentation  # noqa: E402
from headseg.labels import get_label_set  # noqa: E402
from headseg.slicer import segments, tables  # noqa: E402
from headseg.slicer.logic import TaskLogic  # noqa: E402

ORBIT = get_label_set("orbit")
SEGMENT = "superior_rectus_right"


class OrbitTaskLogic(TaskLogic):
    task = "orbit"


def node_count(scene) -> int:
    return scene.GetNumberOfNodes()


def modifier_labelmap(ct_node, mask_kji: np.ndarray):
    """A modifier labelmap on the CT's grid, as an effect builds it (1 inside the stroke, 0 outside)."""
    import slicer
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    image = slicer.vtkOrientedImageData()
    matrix = vtk.vtkMatrix4x4()
    ct_node.GetIJKToRASMatrix(matrix)
    image.SetImageToWorldMatrix(matrix)
    k, j, i = mask_kji.shape
    image.SetExtent(0, i - 1, 0, j - 1, 0, k - 1)
    scalars = numpy_to_vtk(np.ascontiguousarray(mask_kji, dtype=np.uint8).ravel(), deep=True,
                           array_type=vtk.VTK_UNSIGNED_CHAR)
    image.GetPointData().SetScalars(scalars)
    return image


def voxels_of(node, segment_id, ct=None) -> int:
    """The segment's voxel count read apart from the table code (a copy of its labelmap, counted here)."""
    import slicer
    from vtk.util.numpy_support import vtk_to_numpy

    image = slicer.vtkOrientedImageData()
    assert slicer.vtkSlicerSegmentationsModuleLogic.GetSegmentBinaryLabelmapRepresentation(node, segment_id, image)
    scalars = image.GetPointData().GetScalars()
    label = node.GetSegmentation().GetSegment(segment_id).GetLabelValue()
    return 0 if scalars is None else int(np.count_nonzero(vtk_to_numpy(scalars) == label))


def table_voxels(table_node) -> dict:
    return {(r.structure, r.side): r.voxels for r in tables.rows_from_table_node(table_node)}


def csv_voxels(path) -> dict:
    with open(path, newline="") as f:
        return {(r["structure"], r["side"]): int(r["voxels"]) for r in csv.DictReader(f)}


@pytest.fixture
def reviewed(mrml_scene, small_phantom, tmp_path):
    """The phantom's truth imported next to its CT, with an editor parameter node and the editor logic."""
    import slicer

    from headseg.slicer.scene import node_from_volume

    ct = node_from_volume(small_phantom.image, "CT")
    path = write_segmentation(small_phantom.labels, ORBIT, tmp_path / "truth.seg.nrrd")
    node = segments.import_segmentation_file(path, ORBIT, ct, name="CT orbit segmentation")
    editor_node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor_node.SetAndObserveSegmentationNode(node)
    editor_node.SetAndObserveSourceVolumeNode(ct)
    editor_logic = slicer.vtkSlicerSegmentEditorLogic()
    editor_logic.SetMRMLScene(mrml_scene.scene)
    editor_logic.SetSegmentEditorNode(editor_node)
    return ct, node, editor_logic


def watch_events(node) -> list:
    import slicer

    seen = []
    for name in ("SourceRepresentationModified", "SegmentModified", "SegmentAdded", "SegmentRemoved"):
        node.AddObserver(getattr(slicer.vtkSegmentation, name), lambda caller, event, name=name: seen.append(name))
    return seen


def test_every_stroke_undo_and_export_give_the_new_voxel_counts(reviewed, small_phantom, tmp_path):
    import slicer

    ct, node, editor_logic = reviewed
    logic = OrbitTaskLogic()
    table = logic.refresh_volumes(node, create_table=True).table_node
    scheduled = []
    follower = tables.VolumeFollower(schedule=lambda: scheduled.append(1))
    follower.observe(node)
    events = watch_events(node)
    history = slicer.vtkSegmentationHistory()
    history.SetSegmentation(node.GetSegmentation())

    truth = small_phantom.labels.array == ORBIT.by_key(SEGMENT).label
    start = int(truth.sum())
    assert table_voxels(table)[("superior_rectus", "right")] == start
    modes = slicer.vtkSlicerSegmentEditorLogic

    # stroke 1: erase the front third of the muscle (Erase effect: ModificationModeRemove); the muscle runs
    # front to back, along the rows (j)
    rows = np.flatnonzero(truth.any(axis=(0, 2)))
    stroke = np.zeros_like(truth)
    stroke[:, : rows[0] + max(1, len(rows) // 3), :] = True
    history.SaveState()  # what the editor does before every modification (saveStateForUndo)
    editor_logic.ModifySegmentByLabelmap(node, SEGMENT, modifier_labelmap(ct, stroke), modes.ModificationModeRemove,
                                         True, False)
    after_first = voxels_of(node, SEGMENT, ct)
    assert 0 < after_first < start - 10 and after_first == int((truth & ~stroke).sum())
    assert scheduled and follower.pending
    assert "SourceRepresentationModified" in events and "SegmentModified" in events  # status -> "in progress"
    update = logic.refresh_volumes(node)
    follower.done()
    assert update.table_node is table, "the existing table is updated, no new node"
    assert table_voxels(table)[("superior_rectus", "right")] == after_first
    eom = table_voxels(table)[("extraocular_muscles", "right")]

    # stroke 2: paint a small block next to the muscle (Paint effect: ModificationModeAdd). The segment is
    # already "in progress", so this edit fires ONLY SourceRepresentationModified.
    events.clear()
    scheduled.clear()
    block = np.zeros_like(truth)
    block[2:4, 2:6, 2:7] = True
    history.SaveState()
    editor_logic.ModifySegmentByLabelmap(node, SEGMENT, modifier_labelmap(ct, block), modes.ModificationModeAdd,
                                         True, False)
    assert set(events) == {"SourceRepresentationModified"}, events
    assert scheduled, "a stroke that only modifies the source representation must still schedule an update"
    after_second = voxels_of(node, SEGMENT, ct)
    assert after_second == after_first + int((block & ~(truth & ~stroke)).sum())
    logic.refresh_volumes(node)
    follower.done()
    assert table_voxels(table)[("superior_rectus", "right")] == after_second
    assert table_voxels(table)[("extraocular_muscles", "right")] == eom + (after_second - after_first)

    # stroke 3, then Export CSV before the timer fired: the file (and the table) hold the new numbers
    scheduled.clear()
    more = np.zeros_like(truth)
    more[2:4, 8:10, 2:7] = True
    editor_logic.ModifySegmentByLabelmap(node, SEGMENT, modifier_labelmap(ct, more), modes.ModificationModeAdd,
                                         True, False)
    assert scheduled and follower.pending
    after_third = voxels_of(node, SEGMENT, ct)
    assert after_third > after_second
    exported = logic.export_csv(node, tmp_path / "volumes.csv")
    assert csv_voxels(exported)[("superior_rectus", "right")] == after_third
    assert table_voxels(table)[("superior_rectus", "right")] == after_third
    assert csv_voxels(exported) == table_voxels(table)

    # undo (the editor's Undo restores the states saved before each stroke): the table goes back with it
    for expected in (after_first, start):
        scheduled.clear()
        history.RestorePreviousState()
        assert scheduled, "undo changes the labelmap and must be followed too"
        logic.refresh_volumes(node)
        assert table_voxels(table)[("superior_rectus", "right")] == voxels_of(node, SEGMENT) == expected

    follower.stop()
    scheduled.clear()
    editor_logic.ModifySegmentByLabelmap(node, SEGMENT, modifier_labelmap(ct, block), modes.ModificationModeAdd,
                                         True, False)
    assert not scheduled, "a stopped follower observes nothing"


def test_slicer_5_6_effect_calls_are_followed_too(reviewed, small_phantom):
    """Slicer 5.6's effects call SetBinaryLabelmapToSegment (MODE_MERGE_MASK to add) and mark the segment."""
    import slicer

    ct, node, _ = reviewed
    logic = OrbitTaskLogic()
    table = logic.refresh_volumes(node, create_table=True).table_node
    scheduled = []
    follower = tables.VolumeFollower(schedule=lambda: scheduled.append(1))
    follower.observe(node)
    segmentations = slicer.vtkSlicerSegmentationsModuleLogic
    key = "optic_nerve_left"
    before = voxels_of(node, key, ct)
    for rows in ((2, 4), (6, 8)):  # two strokes; the second one finds the segment "in progress" already
        scheduled.clear()
        block = np.zeros(small_phantom.image.shape, bool)
        block[rows[0]:rows[1], 2:6, 2:7] = True
        modifier = modifier_labelmap(ct, block)
        assert segmentations.SetBinaryLabelmapToSegment(modifier, node, key, segmentations.MODE_MERGE_MASK,
                                                        modifier.GetExtent())
        segment = node.GetSegmentation().GetSegment(key)
        if segmentations.GetSegmentStatus(segment) == segmentations.NotStarted:
            segmentations.SetSegmentStatus(segment, segmentations.InProgress)
        assert scheduled
        logic.refresh_volumes(node)
        assert table_voxels(table)[("optic_nerve", "left")] == voxels_of(node, key, ct)
    assert voxels_of(node, key, ct) == before + 2 * 2 * 4 * 5


def test_reviewing_adds_no_table_node_unless_asked(reviewed, mrml_scene, tmp_path):
    ct, node, _ = reviewed
    scene = mrml_scene.scene
    logic = OrbitTaskLogic()
    count = node_count(scene)
    update = logic.refresh_volumes(node)
    assert update.table_node is None and node_count(scene) == count
    assert [r.voxels for r in update.rows if r.structure == "superior_rectus" and r.side == "right"] == [
        voxels_of(node, SEGMENT, ct)]
    assert update.summary.startswith("Extraocular muscles") or "structures" in update.summary
    path = logic.export_csv(node, tmp_path / "no_table")
    assert path.name == "no_table.csv" and node_count(scene) == count, "export needs no table node"
    made = logic.refresh_volumes(node, create_table=True)
    assert node_count(scene) == count + 1 and made.table_node.GetName() == "CT orbit segmentation volumes"
    again = logic.refresh_volumes(node, create_table=True)
    assert again.table_node is made.table_node and node_count(scene) == count + 1
    assert csv_voxels(path) == table_voxels(made.table_node)
