"""Review aids in a real MRML scene (slicer-core): the uncertainty map as the slice views' foreground, doubt
and flags in the volume table (most doubtful first), and a table row moving the slice views to the
structure's most uncertain region (``headseg.slicer.review``, through the panel's logic)."""

from __future__ import annotations

import colorsys

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from headseg.io import write_segmentation  # noqa: E402
from headseg.labels import get_label_set  # noqa: E402
from headseg.slicer import review  # noqa: E402
from headseg.slicer.logic import TaskLogic  # noqa: E402
from headseg.slicer.scene import node_from_volume  # noqa: E402
from headseg.slicer.segments import import_segmentation_file, labelmap_of_segmentation  # noqa: E402
from headseg.slicer.tables import rows_from_table_node  # noqa: E402

ORBIT = get_label_set("orbit")


class OrbitTaskLogic(TaskLogic):
    task = "orbit"


@pytest.fixture
def reviewed(mrml_scene, small_phantom, tmp_path):
    """(scene, CT node, segmentation node, uncertainty array, the voxel made most uncertain)."""
    ct = node_from_volume(small_phantom.image, "CT")
    path = write_segmentation(small_phantom.labels, ORBIT, tmp_path / "truth.seg.nrrd")
    segmentation = import_segmentation_file(path, ORBIT, ct, name="truth")
    uncertainty = np.zeros(small_phantom.image.shape, np.float32)
    inside = np.argwhere(small_phantom.labels.array == ORBIT.by_key("inferior_rectus_left").label)
    hot = inside[np.argmax(inside[:, 2])]  # the muscle's outermost voxel in i: on its surface
    k, j, i = hot
    uncertainty[k - 1:k + 2, j - 1:j + 2, i - 1:i + 2] = 0.9
    review.add_uncertainty_node(small_phantom.image.with_array(uncertainty), segmentation)
    return mrml_scene.scene, ct, segmentation, uncertainty, hot


def test_colour_table_gets_lighter_with_doubt_and_hides_what_is_certain(mrml_scene):
    colours = review.warm_colors()
    lightness = [colorsys.rgb_to_hls(*c[:3])[1] for c in colours]
    assert all(b >= a for a, b in zip(lightness, lightness[1:]))
    below = np.linspace(0, 1, len(colours)) < review.TRANSPARENT_BELOW
    assert (colours[below, 3] == 0).all() and (colours[~below, 3] == 1).all()
    node = review.uncertainty_color_node(mrml_scene.scene)
    assert node is review.uncertainty_color_node(mrml_scene.scene), "one table per scene"
    assert node.GetNumberOfColors() == len(colours)


def test_map_is_the_foreground_of_every_slice_view_with_the_panels_opacity(reviewed):
    scene, ct, segmentation, _uncertainty, _hot = reviewed
    composites = [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(3)]
    logic = OrbitTaskLogic()
    node = logic.uncertainty_node(segmentation)
    assert node is not None and node.GetAttribute(review.UNCERTAINTY_ATTRIBUTE) == "1"
    display = node.GetDisplayNode()
    assert display.GetColorNodeID() == review.uncertainty_color_node(scene).GetID()
    assert (display.GetWindowLevelMin(), display.GetWindowLevelMax()) == (0.0, 1.0)
    assert logic.show_uncertainty(segmentation, scene, True, 0.3) is node
    assert all(c.GetForegroundVolumeID() == node.GetID() and c.GetForegroundOpacity() == pytest.approx(0.3)
               for c in composites)
    logic.set_uncertainty_opacity(scene, 0.8)
    assert all(c.GetForegroundOpacity() == pytest.approx(0.8) for c in composites)
    # unticking takes the map off, but a foreground the user chose stays
    composites[0].SetForegroundVolumeID(ct.GetID())
    logic.show_uncertainty(segmentation, scene, False, 0.8)
    assert composites[0].GetForegroundVolumeID() == ct.GetID()
    assert all(not c.GetForegroundVolumeID() for c in composites[1:])
    # a second map of the same segmentation replaces the first
    again = review.add_uncertainty_node(review.volume_from_node(node), segmentation)
    assert node.GetScene() is None and logic.uncertainty_node(segmentation) is again


def test_volume_table_has_doubt_and_flags_most_doubtful_first(reviewed, small_phantom):
    scene, ct, segmentation, uncertainty, _hot = reviewed
    logic = OrbitTaskLogic()
    update = logic.refresh_volumes(segmentation, create_table=True)
    table = update.table_node
    names = [table.GetColumnName(n) for n in range(table.GetNumberOfColumns())]
    assert names == ["structure", "side", "voxels", "volume_cm3", "doubt", "flags"]
    assert table.GetUseColumnTitleAsColumnHeader(), "view row n is table row n (the row selection relies on it)"
    shown = rows_from_table_node(table)
    assert (shown[0].structure, shown[0].side) == ("inferior_rectus", "left")
    doubts = [r.doubt for r in shown if r.structure != "extraocular_muscles"]
    assert doubts == sorted(doubts, reverse=True) and doubts[0] > 0
    assert [r.structure for r in shown[-2:]] == ["extraocular_muscles"] * 2, "totals last"
    # the logic's rows stay in label order (what the CSV gets), with the same numbers
    assert [r.key for r in update.rows if not r.derived] == [s.key for s in ORBIT.structures]
    by_key = {(r.structure, r.side): r for r in shown}
    for row in update.rows:
        assert by_key[(row.structure, row.side)].flags == row.flags
    # doubt is headseg.measure.quality's number on the label map the scene holds
    from headseg.measure.quality import structure_quality

    expected = structure_quality(labelmap_of_segmentation(segmentation, ORBIT, ct), ORBIT, uncertainty)
    assert by_key[("inferior_rectus", "left")].doubt == pytest.approx(expected["inferior_rectus_left"].doubt)


def test_fragmented_is_kept_from_the_run_until_the_segment_is_edited(reviewed):
    _scene, ct, segmentation, _uncertainty, _hot = reviewed
    review.mark_fragmented(segmentation, ORBIT, ["optic_nerve_right"], ct)
    assert "fragmented" in review.segment_quality(segmentation, ORBIT)["optic_nerve_right"].flags
    import slicer

    mask = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, "optic_nerve_right", ct)
    mask[np.nonzero(mask)[0][0]] = 0  # one slice of the nerve erased
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentation, "optic_nerve_right", ct)
    assert "fragmented" not in review.segment_quality(segmentation, ORBIT)["optic_nerve_right"].flags


def test_a_row_moves_the_slice_views_to_the_most_uncertain_region(reviewed, small_phantom):
    scene, _ct, segmentation, _uncertainty, hot = reviewed
    slices = []
    for name, orient in (("Red", "Axial"), ("Green", "Coronal")):
        node = scene.AddNewNodeByClass("vtkMRMLSliceNode")
        node.SetLayoutName(name)
        getattr(node, f"SetOrientationTo{orient}")()
        slices.append(node)
    logic = OrbitTaskLogic()
    table = logic.refresh_volumes(segmentation, create_table=True).table_node
    point = logic.look_at_row(segmentation, table, 0)  # the most doubtful row: the left inferior rectus
    k, j, i = hot
    lps = small_phantom.image.index_to_lps((i, j, k))
    # the hottest 3x3x3 mean lies on the muscle's surface within a voxel of the hot voxel
    assert np.allclose(point, (-lps[0], -lps[1], lps[2]), atol=2.1)
    for node in slices:
        matrix = node.GetSliceToRAS()
        assert np.allclose([matrix.GetElement(r, 3) for r in range(3)], point, atol=1e-6)
    assert logic.look_at_row(segmentation, table, table.GetNumberOfRows()) is None
