"""The Slicer package's scene, segment and table code (``headseg.slicer``) on a real MRML scene (slicer-core wheel),
with synthetic phantoms.

Covers: volume node <-> Volume geometry (LPS/RAS, oblique, transforms, left stays left), importing a
.seg.nrrd into a segmentation node (names, colours, terminology, label values, hierarchy), the volume
table (exact voxel counts, derived totals, update after an edit), CSV export, the segmentation -> label
map round trip, "Add to training set" and the dependency check.
"""

from __future__ import annotations

import csv
import datetime
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

from headseg.errors import InputError  # noqa: E402
from headseg.geometry import Volume  # noqa: E402
from headseg.io import read_segmentation, read_volume, write_segmentation  # noqa: E402
from headseg.labels import get_label_set  # noqa: E402
from headseg.manifest import MANIFEST_COLUMNS  # noqa: E402
from headseg.measure.volumes import volume_table, write_volume_csv  # noqa: E402
from headseg.slicer import runs, scene, segments, tables, training_set  # noqa: E402

ORBIT = get_label_set("orbit")
REPO = Path(__file__).resolve().parents[2]


def ras_of_index(node, ijk) -> np.ndarray:
    import slicer
    import vtk

    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return (slicer.util.arrayFromVTKMatrix(matrix) @ np.append(np.asarray(ijk, float), 1.0))[:3]


def node_classes(mrml) -> list:
    return sorted(mrml.GetNthNode(n).GetClassName() for n in range(mrml.GetNumberOfNodes()))


# -- geometry -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["small_phantom", "oblique_phantom"])
def test_volume_node_round_trip_keeps_geometry_and_sides(mrml_scene, request, which):
    import slicer

    phantom = request.getfixturevalue(which)
    node = scene.node_from_volume(phantom.image, "CT")
    assert np.allclose(slicer.util.arrayFromVolume(node), phantom.image.array)
    ras = ras_of_index(node, (0, 0, 0))
    lps_origin = np.asarray(phantom.image.origin)
    assert np.allclose(ras, [-lps_origin[0], -lps_origin[1], lps_origin[2]], atol=1e-6)

    back = scene.volume_from_node(node)
    assert back.same_geometry(phantom.image, tol=1e-6)
    assert np.array_equal(back.array, phantom.image.array)

    # The phantom's marker sits on the patient's LEFT (LPS x > 0). In Slicer (RAS) left is x < 0, and
    # the voxel Slicer shows there is the marker's voxel.
    marker_lps = phantom.marker_center_lps
    assert marker_lps[0] > 0
    ijk = np.round(phantom.image.lps_to_index(marker_lps)).astype(int)
    marker_ras = ras_of_index(node, ijk)
    assert marker_ras[0] < 0
    assert np.allclose(marker_ras, [-marker_lps[0], -marker_lps[1], marker_lps[2]], atol=2.0)
    assert slicer.util.arrayFromVolume(node)[ijk[2], ijk[1], ijk[0]] == phantom.image.array[ijk[2], ijk[1], ijk[0]]


def test_volume_from_node_applies_a_parent_linear_transform(mrml_scene, small_phantom):
    import slicer

    node = scene.node_from_volume(small_phantom.image, "CT")
    transform = mrml_scene.scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, 3] = (10.0, -4.0, 2.5)  # RAS translation
    transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = scene.volume_from_node(node)
    expected = np.asarray(small_phantom.image.origin) + np.array([-10.0, 4.0, 2.5])  # same shift in LPS
    assert np.allclose(moved.origin, expected)
    assert np.array_equal(moved.array, small_phantom.image.array)


def test_volume_from_node_refuses_unusable_input(mrml_scene, small_phantom):
    with pytest.raises(InputError, match="No input volume"):
        scene.volume_from_node(None)
    labels = scene.node_from_volume(small_phantom.labels, "labels", "vtkMRMLLabelMapVolumeNode")
    with pytest.raises(InputError, match="label map"):
        scene.volume_from_node(labels)
    assert scene.volume_from_node(labels, allow_labelmap=True).same_geometry(small_phantom.labels)


def test_roi_from_markups_gives_lps_center_and_size(mrml_scene):
    roi = mrml_scene.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "box")
    with pytest.raises(InputError, match="not been placed"):
        scene.roi_from_markups(roi)
    roi.SetXYZ(10.0, 20.0, 30.0)
    roi.SetRadiusXYZ(5.0, 6.0, 7.0)
    center, size = scene.roi_from_markups(roi)
    assert np.allclose(center, (-10.0, -20.0, 30.0))
    assert np.allclose(size, (10.0, 12.0, 14.0))
    assert scene.roi_from_markups(None) is None


# -- result import ----------------------------------------------------------------------------------------
@pytest.fixture
def imported(mrml_scene, small_phantom, tmp_path):
    """The phantom's ground truth written like ``headseg segment`` writes it, imported next to the CT."""
    import slicer

    ct = scene.node_from_volume(small_phantom.image, "CT head")
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(mrml_scene.scene)
    study = hierarchy.CreateStudyItem(hierarchy.GetSceneItemID(), "Study 1")
    ct_item = hierarchy.GetItemByDataNode(ct)
    if ct_item:  # inside Slicer items are created for every node; headless they are not
        hierarchy.SetItemParent(ct_item, study)
    else:
        hierarchy.CreateItem(study, ct)
    path = write_segmentation(small_phantom.labels, ORBIT, tmp_path / "result.seg.nrrd")
    node = segments.import_segmentation_file(path, ORBIT, ct, name="CT head orbit segmentation")
    return ct, node, study


def test_import_gives_names_colours_terminology_and_label_values(imported, small_phantom):
    import slicer

    ct, node, study = imported
    segmentation = node.GetSegmentation()
    assert node.GetName() == "CT head orbit segmentation"
    assert list(segmentation.GetSegmentIDs()) == [s.key for s in ORBIT]
    for structure in ORBIT:
        segment = segmentation.GetSegment(structure.key)
        assert segment.GetName() == structure.name
        assert np.allclose(segment.GetColor(), structure.color, atol=1e-3)
        assert segments.segment_terminology(segment) == structure.terminology.to_slicer_string()
        assert segments.vtk_string_tag(segment, segments.STRUCTURE_TAG) == structure.key
        mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, structure.key, ct)
        assert np.array_equal(mask > 0, small_phantom.labels.array == structure.label), structure.key
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(ct.GetScene())
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(node)) == study
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()) is ct
    assert node.GetDisplayNode() is not None


def test_import_into_a_chosen_node_replaces_its_segments_and_keeps_only_requested(mrml_scene, small_phantom,
                                                                                   tmp_path):
    ct = scene.node_from_volume(small_phantom.image, "CT")
    chosen = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my segmentation")
    chosen.GetSegmentation().AddEmptySegment("old", "old")
    classes_before = node_classes(mrml_scene.scene)
    path = write_segmentation(small_phantom.labels, ORBIT, tmp_path / "r.seg.nrrd")
    keep = ["optic_nerve_right", "optic_nerve_left"]
    node = segments.import_segmentation_file(path, ORBIT, ct, output_node=chosen, keep=keep, show_3d=True)
    assert node is chosen and node.GetName() == "my segmentation"
    # the user's own segment stays: only segments HeadSeg made are replaced
    assert sorted(node.GetSegmentation().GetSegmentIDs()) == sorted(keep + ["old"])
    added = node_classes(mrml_scene.scene)
    for name in classes_before:
        added.remove(name)
    assert added == ["vtkMRMLSegmentationDisplayNode"]  # no new segmentation, no storage node
    import slicer

    closed = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    assert node.GetSegmentation().ContainsRepresentation(closed)


def test_apply_label_set_recognises_renamed_and_foreign_segments(mrml_scene):
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    seg = node.GetSegmentation()
    seg.AddEmptySegment("Segment_1", "SR_R")  # a common spelling
    seg.AddEmptySegment("Segment_2", "tumour")  # not a structure
    matched = segments.apply_label_set(node, ORBIT)
    assert matched == {"Segment_1": "superior_rectus_right"}
    assert seg.GetSegment("Segment_1").GetName() == "right superior rectus"
    assert seg.GetSegment("Segment_2").GetName() == "tumour"


# -- volume table ---------------------------------------------------------------------------------------
def test_volume_table_numbers_are_voxel_count_times_voxel_volume(imported, small_phantom):
    _, node, _ = imported
    table = tables.volume_table_node(node, ORBIT)
    rows = tables.rows_from_table_node(table)  # most doubtful (here: flagged) first, totals last
    expected = volume_table(small_phantom.labels, ORBIT)  # the core's table of the same label map
    assert sorted((r.structure, r.side, r.voxels) for r in rows) == sorted(
        (r.structure, r.side, r.voxels) for r in expected)
    counts = np.bincount(small_phantom.labels.array.ravel(), minlength=11)
    voxel_mm3 = float(np.prod(small_phantom.labels.spacing))
    for row in rows[:10]:
        label = ORBIT.by_key(f"{row.structure}_{row.side}").label
        assert row.voxels == counts[label] > 0
        assert row.volume_cm3 == pytest.approx(counts[label] * voxel_mm3 / 1000.0, rel=1e-12)
    totals = {(r.structure, r.side): r for r in rows[10:]}
    assert set(totals) == {("extraocular_muscles", "right"), ("extraocular_muscles", "left")}
    assert totals["extraocular_muscles", "right"].voxels == int(counts[1:5].sum())
    assert totals["extraocular_muscles", "left"].voxels == int(counts[6:10].sum())
    # the phantom's left muscles are thicker (thyroid eye disease mimic): the table must show it
    assert totals["extraocular_muscles", "left"].volume_cm3 > totals["extraocular_muscles", "right"].volume_cm3
    table_ = table.GetTable()
    assert [table_.GetColumnName(n) for n in range(table_.GetNumberOfColumns())] == [
        "structure", "side", "voxels", "volume_cm3", "doubt", "flags"]


def test_volume_table_follows_an_edit(imported, small_phantom):
    import slicer

    ct, node, _ = imported
    table = tables.volume_table_node(node, ORBIT)
    before = {(r.structure, r.side): r.voxels for r in tables.rows_from_table_node(table)}
    mask = slicer.util.arrayFromSegmentBinaryLabelmap(node, "superior_rectus_right", ct)
    kept = mask.copy()
    inside = np.flatnonzero(kept)
    kept.flat[inside[: len(inside) // 3]] = 0  # erase a third of the muscle, as the Erase effect would
    assert 0 < kept.sum() < mask.sum()
    slicer.util.updateSegmentBinaryLabelmapFromArray(kept, node, "superior_rectus_right", ct)
    tables.update_volume_table(node, table, ORBIT)
    after = {(r.structure, r.side): r.voxels for r in tables.rows_from_table_node(table)}
    assert after["superior_rectus", "right"] == int((kept > 0).sum())
    removed = int(mask.sum() - kept.sum())
    assert after["extraocular_muscles", "right"] == before["extraocular_muscles", "right"] - removed
    assert after["optic_nerve", "left"] == before["optic_nerve", "left"]
    assert table.GetNodeReferenceID(tables.TABLE_SEGMENTATION_REFERENCE) == node.GetID()
    assert tables.find_volume_table(node) is table


def test_unknown_segments_get_rows_under_their_names(mrml_scene, small_phantom):
    import slicer

    ct = scene.node_from_volume(small_phantom.image, "CT")
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.SetReferenceImageGeometryParameterFromVolumeNode(ct)
    node.GetSegmentation().AddEmptySegment("blob", "blob")
    mask = np.zeros(small_phantom.image.shape, np.uint8)
    mask[10:12, 20:25, 30:40] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, "blob", ct)
    rows = tables.segment_volume_rows(node, ORBIT)
    assert [(r.structure, r.voxels) for r in rows] == [("blob", 100)]
    assert rows[0].volume_cm3 == pytest.approx(100 * 1.5 * 1.5 * 2.0 / 1000.0)


def test_csv_export_matches_the_cli_format(imported, small_phantom, tmp_path):
    _, node, _ = imported
    from headseg.measure.quality import body_midline_x, structure_quality
    from headseg.measure.volumes import with_quality

    ct, node, _ = imported
    table = tables.volume_table_node(node, ORBIT)
    path = tables.export_rows_csv(tables.segment_volume_rows(node, ORBIT), tmp_path / "volumes")  # .csv added
    assert path.name == "volumes.csv"
    # what the CLI writes for the same label map (no uncertainty map here: doubt empty, flags the same)
    labels = small_phantom.labels
    quality = structure_quality(labels, ORBIT, None, body_midline_x(scene.volume_from_node(ct), near=labels.array > 0))
    reference = write_volume_csv(with_quality(volume_table(labels, ORBIT), quality), tmp_path / "cli.csv")
    assert path.read_text(encoding="utf-8") == reference.read_text(encoding="utf-8")
    # the table node's export holds the same lines, most doubtful first
    shown = tables.export_table_csv(table, tmp_path / "shown.csv")
    assert sorted(shown.read_text(encoding="utf-8").splitlines()) == sorted(reference.read_text(encoding="utf-8").splitlines())
    with open(path, newline="") as f:
        first = next(csv.DictReader(f))
    from headseg.measure.volumes import REVIEW_COLUMNS  # the CLI's columns (structure ... flags, key)

    assert list(first) == list(REVIEW_COLUMNS)
    (tmp_path / "a_file").write_text("")
    with pytest.raises(InputError, match="Cannot write"):
        tables.export_table_csv(table, tmp_path / "a_file" / "volumes.csv")  # the folder is a file


# -- segmentation -> label map, training set ------------------------------------------------------------
def test_labelmap_from_segmentation_round_trip(imported, small_phantom):
    ct, node, _ = imported
    node.GetSegmentation().AddEmptySegment("notes", "my notes")
    labelmap, warnings = segments.labelmap_from_segmentation(node, ORBIT, ct)
    assert labelmap.same_geometry(small_phantom.labels)
    assert np.array_equal(labelmap.array, small_phantom.labels.array)
    assert any("my notes" in w for w in warnings)


def test_add_to_training_set_writes_files_and_manifest_and_never_overwrites(imported, small_phantom, tmp_path):
    ct, node, _ = imported
    dataset = tmp_path / "dataset"
    reviewed = ["superior_rectus_right", "optic_nerve_left"]
    first = training_set.add_to_training_set(ct, node, dataset, "orbit", ORBIT, reviewed)
    assert first.case == "CT_head"
    assert first.image == dataset / "images" / "CT_head.nrrd"
    image = read_volume(first.image)
    assert image.same_geometry(small_phantom.image) and np.array_equal(image.array, small_phantom.image.array)
    labels = read_segmentation(first.segmentation, ORBIT)
    assert np.array_equal(labels.array, small_phantom.labels.array)
    first_bytes = first.segmentation.read_bytes()

    second = training_set.add_to_training_set(ct, node, dataset, "orbit", ORBIT, reviewed)
    assert second.case == "CT_head_2"
    assert first.segmentation.read_bytes() == first_bytes
    with open(dataset / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["case"] for r in rows] == ["CT_head", "CT_head_2"]
    assert rows[0]["image"] == "images/CT_head.nrrd" and rows[0]["segmentation"] == "labels/CT_head.seg.nrrd"
    assert rows[0]["task"] == "orbit" and rows[0]["label_set"] == "orbit"
    assert rows[0]["reviewed"] == "superior_rectus_right;optic_nerve_left" and rows[0]["date"]

    # headseg-train reads every column of what the module wrote
    from training import datasets  # the project's own package: a broken import must fail, not skip
    records = datasets.discover_records(dataset)
    assert [r.case for r in records] == ["CT_head", "CT_head_2"]
    record = records[0]
    assert record.source == "manifest"
    assert record.image == dataset / "images" / "CT_head.nrrd" and record.segmentation == first.segmentation
    assert (record.task, record.label_set) == ("orbit", "orbit")
    assert record.annotated == tuple(reviewed)
    assert record.split is None  # "" = the recipe's split decides
    assert record.date == rows[0]["date"] and datetime.datetime.fromisoformat(record.date)
    assert list(rows[0]) == list(MANIFEST_COLUMNS), "the one manifest writer's columns, in its order"
    loaded = datasets.load_case(record, ORBIT)
    assert loaded.annotated == tuple(reviewed) and np.array_equal(loaded.labels.array, small_phantom.labels.array)
    # ... and so does its command line, which checks task and label set against the recipe
    check = subprocess.run([sys.executable, "-m", "training", "validate-data", "--data", str(dataset),
                            "--config", "svnet_seed000"], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "2 case(s) found, 2 usable, 0 error(s)" in check.stdout

    with pytest.raises(InputError, match="Tick the structures"):
        training_set.add_to_training_set(ct, node, dataset, "orbit", ORBIT, [])
    with pytest.raises(InputError, match="Unknown structures"):
        training_set.add_to_training_set(ct, node, dataset, "orbit", ORBIT, ["brainstem"])


def test_unique_case_ids_are_file_name_safe(tmp_path):
    assert scene.safe_case_id("CT head 3/1") == "CT_head_3_1"
    assert scene.safe_case_id("///") == "case"
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.nrrd").write_bytes(b"")
    assert training_set.unique_case_id(tmp_path, "a") == "a_2"


# -- dependencies -----------------------------------------------------------------------------------------
def test_missing_packages_only_looks():
    assert runs.missing_packages(["numpy>=1.0"]) == []
    assert runs.missing_packages(["numpy>=999"]) == ["numpy>=999"]
    assert runs.missing_packages(["surely-not-an-installed-package-xyz"]) == ["surely-not-an-installed-package-xyz"]
    assert runs.missing_packages() == []  # this test environment has everything
    # It only looks: in a fresh interpreter, checking every requirement leaves torch unimported (slow to load).
    probe = subprocess.run([sys.executable, "-c", "import sys; from headseg.slicer import runs; "
                            "runs.missing_packages(); print('torch' in sys.modules)"],
                           capture_output=True, text=True, timeout=120, cwd=str(REPO))
    assert probe.stdout.strip() == "False", probe.stdout + probe.stderr


def test_requirements_match_pyproject():
    tomllib = pytest.importorskip("tomllib")
    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    dependencies = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]["dependencies"]
    # what the segmentation child needs: all of them but matplotlib, which draws only the pictures of
    # 'headseg report' and 'headseg compare' (imported inside those functions)
    assert sorted(runs.HEADSEG_REQUIREMENTS) == sorted(d for d in dependencies if not d.startswith("matplotlib"))


def test_volume_helpers_accept_a_labelmap_volume_directly(mrml_scene):
    labels = Volume(np.zeros((4, 5, 6), np.uint8), (1.0, 2.0, 3.0))
    node = scene.node_from_volume(labels, "lab", "vtkMRMLLabelMapVolumeNode")
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    assert scene.volume_from_node(node, allow_labelmap=True).same_geometry(labels)
