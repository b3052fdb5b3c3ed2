"""An edit costs the edited segment only: the follower notes which segment each event names, and the kept
measures re-measure that one (and neighbours it may have overwritten), giving exactly the numbers a full
measure of the segmentation gives. A run's result is measured once. Real MRML scene (slicer-core), edits
through the Segment Editor logic Slicer's effects use."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from test_volumes_follow_edits import ORBIT, OrbitTaskLogic, modifier_labelmap, reviewed  # noqa: E402,F401

from headseg.slicer import tables  # noqa: E402
from headseg.slicer.measures import SegmentMeasures  # noqa: E402
from headseg.slicer.review import add_uncertainty_node  # noqa: E402


def full_rows(node):
    """The numbers of a fresh, full measure (what the panel showed before the follower kept measures)."""
    return SegmentMeasures(node, ORBIT).measure_all().rows()


def same_rows(a, b) -> bool:
    def key(r):
        return (r.structure, r.side, r.voxels, round(r.volume_cm3, 9), r.flags,
                None if r.doubt != r.doubt else round(r.doubt, 9))

    return [key(r) for r in a] == [key(r) for r in b]


@pytest.fixture
def followed(reviewed, small_phantom):  # noqa: F811  (the fixture imported above)
    """The reviewed phantom with an uncertainty map (so doubt is measured) and a follower on it."""
    ct, node, editor_logic = reviewed
    rng = np.random.default_rng(0)
    add_uncertainty_node(small_phantom.image.with_array(rng.random(small_phantom.image.shape, np.float32)), node)
    scheduled = []
    follower = tables.VolumeFollower(schedule=lambda: scheduled.append(1))
    follower.observe(node)
    follower.measure(ORBIT)
    return ct, node, editor_logic, follower, scheduled


def paint(editor_logic, node, ct, segment_id, mask, mode="Add"):
    import slicer

    modes = slicer.vtkSlicerSegmentEditorLogic
    editor_logic.ModifySegmentByLabelmap(node, segment_id, modifier_labelmap(ct, mask),
                                         getattr(modes, f"ModificationMode{mode}"), True, False)


def test_a_stroke_remeasures_only_the_painted_segment_and_gives_the_full_numbers(followed, small_phantom):
    ct, node, editor_logic, follower, scheduled = followed
    measures = follower.measures
    assert measures is not None and measures.measured == 10
    block = np.zeros(small_phantom.image.shape, bool)
    block[2:4, 2:6, 2:7] = True  # a corner far from every muscle
    paint(editor_logic, node, ct, "optic_nerve_left", block)
    assert scheduled and follower.changed == {"optic_nerve_left"}, "the event names the painted segment"
    before = measures.measured
    assert follower.measure(ORBIT) is measures
    assert measures.measured - before == 1
    assert same_rows(measures.rows(), full_rows(node))
    nerve = next(r for r in measures.rows() if (r.structure, r.side) == ("optic_nerve", "left"))
    assert nerve.voxels == int((small_phantom.labels.array == ORBIT.by_key("optic_nerve_left").label).sum()) + 40


def test_painting_over_a_neighbour_updates_the_neighbour_too(followed, small_phantom):
    """The editor's default overwrites other segments: the painted voxels leave the neighbour, which the
    event does not name; the neighbour is re-measured inside its old box."""
    ct, node, editor_logic, follower, _ = followed
    labels = small_phantom.labels.array
    target = ORBIT.by_key("lateral_rectus_right").label
    neighbour = labels == ORBIT.by_key("superior_rectus_right").label
    stroke = np.zeros_like(neighbour)
    k, j, i = np.argwhere(neighbour)[len(np.argwhere(neighbour)) // 2]
    stroke[k - 1:k + 2, j - 2:j + 3, i - 2:i + 3] = True
    taken = int((stroke & neighbour).sum())
    assert taken > 0
    measures = follower.measures
    before = measures.measured
    paint(editor_logic, node, ct, "lateral_rectus_right", stroke)
    assert follower.changed == {"lateral_rectus_right"}
    follower.measure(ORBIT)
    rows = {(r.structure, r.side): r for r in measures.rows()}
    assert rows[("superior_rectus", "right")].voxels == int(neighbour.sum()) - taken
    assert rows[("lateral_rectus", "right")].voxels == int(((labels == target) | stroke).sum())
    assert same_rows(measures.rows(), full_rows(node))
    assert measures.measured - before < 10, "not every segment was measured again"


def test_undo_added_and_removed_segments_are_followed(followed, small_phantom):
    import slicer

    ct, node, editor_logic, follower, _ = followed
    history = slicer.vtkSegmentationHistory()
    history.SetSegmentation(node.GetSegmentation())
    history.SaveState()
    erase = np.zeros(small_phantom.image.shape, bool)
    erase[:, :, : small_phantom.image.shape[2] // 2] = True
    paint(editor_logic, node, ct, "medial_rectus_left", erase, mode="Remove")
    follower.measure(ORBIT)
    history.RestorePreviousState()
    everything = set(node.GetSegmentation().GetSegmentIDs())
    assert follower.changed is None or follower.changed == everything, "an undo re-measures every segment"
    follower.measure(ORBIT)
    assert same_rows(follower.measures.rows(), full_rows(node))
    node.GetSegmentation().RemoveSegment("optic_nerve_right")
    node.GetSegmentation().AddEmptySegment("extra", "extra")
    follower.measure(ORBIT)
    rows = follower.measures.rows()
    assert ("optic_nerve", "right") not in {(r.structure, r.side) for r in rows}
    assert [r.voxels for r in rows if r.structure == "extra"] == [0]
    assert same_rows(rows, full_rows(node))


def test_the_panel_path_uses_the_followers_measures(followed, small_phantom):
    ct, node, editor_logic, follower, _ = followed
    logic = OrbitTaskLogic()
    block = np.zeros(small_phantom.image.shape, bool)
    block[2:4, 2:6, 2:7] = True
    paint(editor_logic, node, ct, "optic_nerve_left", block)
    before = follower.measures.measured
    update = logic.refresh_volumes(node, follower=follower)
    assert follower.measures.measured - before == 1 and not follower.pending
    assert same_rows(update.rows, full_rows(node))


def test_a_stopped_follower_drops_its_measures(followed, small_phantom):
    ct, node, editor_logic, follower, scheduled = followed
    follower.stop()
    scheduled.clear()
    block = np.zeros(small_phantom.image.shape, bool)
    block[2:4, 2:6, 2:7] = True
    paint(editor_logic, node, ct, "optic_nerve_left", block)
    assert not scheduled and follower.measures is None and follower.node is None


def test_a_runs_result_is_measured_once(mrml_scene, small_phantom, tiny_orbit_package):
    """The run measures its result for the volume table; the panel's follower takes those measures over,
    so showing the result measures nothing again."""
    from headseg.slicer import runs, scene

    ct = scene.node_from_volume(small_phantom.image, "CT head")
    run = runs.SegmentationRun("orbit", ct, model=str(tiny_orbit_package.path), device="cpu")
    run.start()
    deadline = time.monotonic() + 120
    while not run.finished and time.monotonic() < deadline:
        run.poll()
        time.sleep(0.05)
    assert run.state == "succeeded", run.message
    count = run.segmentation_node.GetSegmentation().GetNumberOfSegments()
    assert run.measures is not None and run.measures.measured == count
    follower = tables.VolumeFollower(schedule=lambda: None)
    follower.observe(run.segmentation_node, run.measures)
    update = OrbitTaskLogic().refresh_volumes(run.segmentation_node, follower=follower)
    assert run.measures.measured == count, "showing the result measured it again"
    assert same_rows(update.rows, run.rows)
