"""Reading/writing images, label maps, DICOM series and Slicer .seg.nrrd files (real files in tmp_path)."""

from __future__ import annotations

import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from headseg.errors import HeadSegError, InputError
from headseg.geometry import Volume
from headseg.io import (
    OutputExistsError,
    list_dicom_series,
    read_segmentation,
    read_volume,
    write_atomically,
    write_dicom_series,
    write_labelmap,
    write_segmentation,
    write_volume,
)
from headseg.labels import get_label_set

ROTATED = np.array([[math.cos(0.35), -math.sin(0.35), 0.0], [math.sin(0.35), math.cos(0.35), 0.0], [0, 0, 1]])


def ct_volume(shape=(5, 6, 7), direction=np.eye(3), seed=0) -> Volume:
    array = np.random.default_rng(seed).integers(-1000, 1500, shape).astype(np.int16)
    return Volume(array, (0.5, 0.6, 1.5), (10.0, -20.0, 35.5), direction)


def orbit_labels(direction=ROTATED) -> Volume:
    """A label map with right SR (1), right ON (5) and left IR (9); the other orbit labels are empty."""
    array = np.zeros((6, 8, 10), np.uint8)
    array[1:3, 1:4, 1:4] = 1
    array[2:5, 4:7, 2:5] = 5
    array[3:6, 2:5, 6:9] = 9
    return Volume(array, (0.5, 0.6, 1.5), (10.0, -20.0, 35.5), direction)


def no_partial_files(folder: Path) -> bool:
    return not [p for p in folder.rglob("*") if ".partial" in p.name]


# ------------------------------------------------------------------------------------------------
# Errors for bad input
# ------------------------------------------------------------------------------------------------
def test_missing_file(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist") as info:
        read_volume(tmp_path / "nope.nrrd")
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, HeadSegError)


def test_2d_image_is_rejected(tmp_path: Path):
    sitk.WriteImage(sitk.Image(8, 9, sitk.sitkInt16), str(tmp_path / "slice.nrrd"))
    with pytest.raises(InputError, match="single 2D slice.*3D volume"):
        read_volume(tmp_path / "slice.nrrd")


def test_4d_image_is_rejected_but_single_frame_4d_is_accepted(tmp_path: Path):
    frame = ct_volume().to_sitk()
    sitk.WriteImage(sitk.JoinSeries([frame, frame, frame]), str(tmp_path / "t.nii.gz"))
    with pytest.raises(InputError, match="4D.*3 frames"):
        read_volume(tmp_path / "t.nii.gz")
    sitk.WriteImage(sitk.JoinSeries([frame]), str(tmp_path / "one.mha"))
    back = read_volume(tmp_path / "one.mha")
    assert back.shape == ct_volume().shape and back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, ct_volume().array)


def test_rgb_image_is_rejected(tmp_path: Path):
    grey = ct_volume().to_sitk()
    sitk.WriteImage(sitk.Compose([grey, grey, grey]), str(tmp_path / "rgb.nrrd"))
    with pytest.raises(InputError, match="RGB"):
        read_volume(tmp_path / "rgb.nrrd")


@pytest.mark.parametrize("name, content", [
    ("junk.nrrd", b"this is not an image" * 20),
    ("empty.nii.gz", b""),
])
def test_corrupt_file_is_rejected(tmp_path: Path, name: str, content: bytes):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(InputError, match="damaged, incomplete"):
        read_volume(tmp_path / name)


@pytest.mark.parametrize("extension", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_truncated_file_is_rejected(tmp_path: Path, extension: str):
    """ITK itself returns garbage for a truncated NIfTI: HeadSeg must notice."""
    path = write_volume(ct_volume(shape=(20, 30, 40)), tmp_path / f"ct{extension}")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated|damaged, incomplete"):
        read_volume(path)


def test_multi_member_gzip_nifti_is_complete(tmp_path: Path):
    """Concatenated gzip members (pigz, some tools) are valid: the trailer shortcut must not reject them."""
    import gzip

    volume = ct_volume(shape=(8, 9, 10))
    plain = write_volume(volume, tmp_path / "ct.nii", compress=False).read_bytes()
    half = len(plain) // 2
    (tmp_path / "multi.nii.gz").write_bytes(gzip.compress(plain[:half]) + gzip.compress(plain[half:]))
    np.testing.assert_array_equal(read_volume(tmp_path / "multi.nii.gz").array, volume.array)


def test_unsupported_extension(tmp_path: Path):
    (tmp_path / "photo.png").write_bytes(b"\x89PNG....")
    with pytest.raises(InputError, match=r"\.png.*not supported.*\.nrrd"):
        read_volume(tmp_path / "photo.png")


def test_folder_without_dicom(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="No DICOM series"):
        read_volume(tmp_path)


def test_single_slice_dicom_series(tmp_path: Path):
    write_dicom_series(ct_volume(shape=(1, 6, 7)), tmp_path / "one")
    with pytest.raises(InputError, match="single slice"):
        read_volume(tmp_path / "one")


# ------------------------------------------------------------------------------------------------
# Writing: atomic, no silent overwrite, label map types
# ------------------------------------------------------------------------------------------------
def test_no_overwrite_without_permission(tmp_path: Path):
    first, second = ct_volume(seed=1), ct_volume(seed=2)
    path = write_volume(first, tmp_path / "ct.nrrd")
    with pytest.raises(OutputExistsError, match="already exists") as info:
        write_volume(second, path)
    assert isinstance(info.value, FileExistsError)
    np.testing.assert_array_equal(read_volume(path).array, first.array)
    write_volume(second, path, overwrite=True)
    np.testing.assert_array_equal(read_volume(path).array, second.array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nrrd"]


def test_failed_write_leaves_old_file_and_no_partial(tmp_path: Path):
    path = tmp_path / "labels.nrrd"
    path.write_bytes(b"old content")

    def failing_write(temp: Path) -> None:
        temp.write_bytes(b"half of the new")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(path, failing_write, overwrite=True)
    assert path.read_bytes() == b"old content"
    assert no_partial_files(tmp_path)


def test_missing_output_folder(tmp_path: Path):
    with pytest.raises(InputError, match="does not exist"):
        write_volume(ct_volume(), tmp_path / "no" / "such" / "ct.nrrd")


def test_write_rejects_two_file_formats(tmp_path: Path):
    with pytest.raises(InputError, match="single-file"):
        write_volume(ct_volume(), tmp_path / "ct.mhd")


@pytest.mark.parametrize("values, dtype", [
    (np.array([0, 3, 255]), np.uint8),
    (np.array([0, 3, 300]), np.uint16),
    (np.array([0.0, 2.0, 7.0]), np.uint8),
    (np.array([False, True, True]), np.uint8),
])
def test_labelmap_types(tmp_path: Path, values: np.ndarray, dtype):
    array = np.resize(values, (3, 4, 5))
    path = write_labelmap(Volume(array), tmp_path / "lab.nii.gz")
    back = read_volume(path)
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, array.astype(dtype))


@pytest.mark.parametrize("values, message", [
    (np.array([0.0, 0.5, 1.0]), "non-integer"),
    (np.array([0, -1, 2]), "negative"),
    (np.array([0, 70000]), "too large"),
])
def test_labelmap_rejects_non_labels(tmp_path: Path, values: np.ndarray, message: str):
    with pytest.raises(InputError, match=message):
        write_labelmap(Volume(np.resize(values, (3, 4, 5))), tmp_path / "lab.nrrd")
    assert not (tmp_path / "lab.nrrd").exists() and no_partial_files(tmp_path)


# ------------------------------------------------------------------------------------------------
# DICOM series selection and sorting
# ------------------------------------------------------------------------------------------------
def test_dicom_folder_with_several_series_picks_largest_ct(tmp_path: Path, caplog):
    folder = tmp_path / "study"
    ct_small = ct_volume(shape=(4, 6, 7), seed=1)
    ct_big = ct_volume(shape=(6, 6, 7), seed=2)
    mr_bigger = ct_volume(shape=(9, 6, 7), seed=3)
    write_dicom_series(ct_small, folder / "a", series_description="scout")
    write_dicom_series(ct_big, folder / "b", series_description="head 1mm")
    write_dicom_series(mr_bigger, folder / "c", modality="MR", series_description="t1")
    for sub in ("a", "b", "c"):  # all files in one flat folder, as exported by many PACS
        for f in (folder / sub).iterdir():
            f.rename(folder / f"{sub}_{f.name}")
        (folder / sub).rmdir()

    series = list_dicom_series(folder)
    assert [(s.modality, s.n_slices) for s in series] == [("MR", 9), ("CT", 6), ("CT", 4)]
    with caplog.at_level(logging.WARNING, logger="headseg.io"):
        volume = read_volume(folder)
    np.testing.assert_array_equal(volume.array, ct_big.array)
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "3 DICOM series" in warning and "head 1mm" in warning and "scout" in warning and "t1" in warning

    # One file of a series selects that series; an MR series is read only when non-CT input is allowed.
    mr_file = next(p for p in sorted(folder.iterdir()) if p.name.startswith("c_"))
    with pytest.raises(InputError, match="Modality 'MR'"):
        read_volume(mr_file)
    np.testing.assert_array_equal(read_volume(mr_file, allow_non_ct=True).array, mr_bigger.array)


def test_dicom_slices_sorted_by_position_not_name(tmp_path: Path):
    volume = ct_volume(shape=(7, 6, 5), direction=ROTATED)
    paths = write_dicom_series(volume, tmp_path / "tmp")
    folder = tmp_path / "shuffled"
    folder.mkdir()
    order = np.random.default_rng(0).permutation(len(paths))
    for new_index, old_index in enumerate(order):
        shutil.move(str(paths[old_index]), folder / f"IM{new_index:05d}")  # no extension, random order
    back = read_volume(folder)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.same_geometry(volume, tol=1e-5)


# ------------------------------------------------------------------------------------------------
# Slicer segmentation files
# ------------------------------------------------------------------------------------------------
def test_segmentation_round_trip_and_header(tmp_path: Path):
    nrrd = pytest.importorskip("nrrd")
    orbit = get_label_set("orbit")
    labels = orbit_labels()
    path = write_segmentation(labels, orbit, tmp_path / "orbit.seg.nrrd")
    back = read_segmentation(path, orbit)
    assert back.same_geometry(labels, tol=1e-6)
    np.testing.assert_array_equal(back.array, labels.array)

    header = nrrd.read_header(str(path))
    assert header["dimension"] == 3 and header["type"] in ("uint8", "unsigned char")
    assert header["space"] == "left-posterior-superior"
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert header["Segmentation_ContainedRepresentationNames"] == "Binary labelmap|"
    names = [header[f"Segment{n}_Name"] for n in range(len(orbit))]
    assert names == [s.name for s in orbit]  # every structure, also the empty ones
    assert f"Segment{len(orbit)}_ID" not in header
    for n, s in enumerate(orbit):
        assert header[f"Segment{n}_ID"] == s.key
        assert int(header[f"Segment{n}_LabelValue"]) == s.label
        assert header[f"Segment{n}_Tags"] == s.terminology.to_tag_string()
        assert header[f"Segment{n}_Extent"] == "0 9 0 7 0 5"


def test_segmentation_present_labels(tmp_path: Path):
    orbit = get_label_set("orbit")
    labels = orbit_labels()
    path = write_segmentation(labels, orbit, tmp_path / "s.seg.nrrd", present_labels=[1, 5, 9, 10])
    nrrd = pytest.importorskip("nrrd")
    header = nrrd.read_header(str(path))
    assert [header[f"Segment{n}_ID"] for n in range(4)] == [
        "superior_rectus_right", "optic_nerve_right", "inferior_rectus_left", "optic_nerve_left"]
    np.testing.assert_array_equal(read_segmentation(path, orbit).array, labels.array)
    with pytest.raises(InputError, match=r"values \[9\]"):
        write_segmentation(labels, orbit, tmp_path / "t.seg.nrrd", present_labels=[1, 5])
    with pytest.raises(InputError, match="seg.nrrd"):
        write_segmentation(labels, orbit, tmp_path / "t.nrrd")


def test_segmentation_loads_in_slicer(tmp_path: Path, mrml_scene, vtk_messages):
    slicer = pytest.importorskip("slicer")
    orbit = get_label_set("orbit")
    labels = orbit_labels()
    path = write_segmentation(labels, orbit, tmp_path / "orbit.seg.nrrd")
    logic = mrml_scene.logics["Segmentations"]
    node = logic.LoadSegmentationFromFile(str(path), False, "orbit")
    assert node is not None, vtk_messages
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(orbit)
    for n, s in enumerate(orbit):
        segment = segmentation.GetSegment(segmentation.GetNthSegmentID(n))
        assert segmentation.GetNthSegmentID(n) == s.key
        assert segment.GetName() == s.name
        assert segment.GetLabelValue() == s.label
        np.testing.assert_allclose(segment.GetColor(), s.color, atol=1e-6)
        assert segment.GetTerminology() == s.terminology.to_slicer_string()
        entry = slicer.vtkSlicerTerminologyEntry()
        terminology_logic = slicer.vtkSlicerTerminologiesModuleLogic
        assert terminology_logic.DeserializeTerminologyEntry(segment.GetTerminology(), entry)
        assert entry.GetTypeObject().GetCodeValue() == s.terminology.type.value

    # Export with the reference geometry: voxel-identical, values kept through a colour table.
    reference = slicer.util.addVolumeFromArray(labels.array.astype(np.int16), labels.ijk_to_ras, "ref",
                                               "vtkMRMLLabelMapVolumeNode")
    colors = slicer.vtkMRMLColorTableNode()
    colors.SetTypeToUser()
    colors.SetNumberOfColors(orbit.max_label + 1)
    for s in orbit:
        colors.SetColor(s.label, s.name, *s.color, 1.0)
    mrml_scene.scene.AddNode(colors)
    out = mrml_scene.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode")
    ids = [segmentation.GetNthSegmentID(n) for n in range(segmentation.GetNumberOfSegments())]
    import vtk

    id_array = vtk.vtkStringArray()
    for segment_id in ids:
        id_array.InsertNextValue(segment_id)
    assert logic.ExportSegmentsToLabelmapNode(node, id_array, out, reference,
                                              slicer.vtkSegmentation.EXTENT_REFERENCE_GEOMETRY, colors)
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(out), labels.array)
    matrix = vtk.vtkMatrix4x4()
    out.GetIJKToRASMatrix(matrix)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), labels.ijk_to_ras, atol=1e-6)
    assert not [m for m in vtk_messages if "rror" in m], vtk_messages


def test_segmentation_read_by_slicerio(tmp_path: Path):
    slicerio = pytest.importorskip("slicerio")
    pddca = get_label_set("pddca")
    array = np.zeros((4, 5, 6), np.uint8)
    array[1, 1:3, 1:3] = 6
    array[2, 2:4, 3:5] = 3
    labels = Volume(array, (0.7, 0.8, 2.0), (-3.0, 4.0, 5.0), ROTATED)
    path = write_segmentation(labels, pddca, tmp_path / "oar.seg.nrrd")
    seg = slicerio.read_segmentation(str(path))
    assert [s["name"] for s in seg["segments"]] == [s.name for s in pddca]
    for info, s in zip(seg["segments"], pddca):
        assert info["labelValue"] == s.label and info["layer"] == 0
        np.testing.assert_allclose(info["color"], s.color, atol=1e-6)
        terminology = info["terminology"]
        assert terminology["type"] == list(s.terminology.type)
        assert terminology["category"] == ["SCT", "123037004", "Anatomical Structure"]
        if s.side:
            assert terminology["typeModifier"] == list(s.terminology.type_modifier)
    np.testing.assert_allclose(seg["ijkToLPS"], labels.ijk_to_lps, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(seg["voxels"]).transpose(2, 1, 0), array)


def _slicer_segmentation_file(mrml_scene, tmp_path: Path, segments, overlap: bool = False) -> Path:
    """Save a .seg.nrrd with Slicer itself: segments = [(name, terminology or None, mask)]."""
    import slicer

    grid = orbit_labels()
    reference = slicer.util.addVolumeFromArray(np.zeros(grid.shape, np.int16), grid.ijk_to_ras, "ref")
    node = mrml_scene.scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference)
    for name, terminology, mask in segments:
        segment_id = node.GetSegmentation().AddEmptySegment(name, name)
        if terminology:
            node.GetSegmentation().GetSegment(segment_id).SetTerminology(terminology)
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), node, segment_id, reference)
    node.AddDefaultStorageNode()
    path = tmp_path / "from_slicer.seg.nrrd"
    node.GetStorageNode().SetFileName(str(path))
    assert node.GetStorageNode().WriteData(node)
    return path


def test_read_slicer_file_matches_by_name_and_terminology_not_position(tmp_path: Path, mrml_scene):
    pytest.importorskip("slicer")
    pddca = get_label_set("pddca")
    shape = orbit_labels().shape
    masks = [np.zeros(shape, bool) for _ in range(3)]
    masks[0][1:3, 1:3, 1:3] = True
    masks[1][3:5, 4:6, 5:8] = True
    masks[2][0:2, 5:8, 6:9] = True
    parotid_r = pddca.by_key("parotid_right").terminology.to_slicer_string()
    path = _slicer_segmentation_file(mrml_scene, tmp_path, [
        ("Parotid_L", None, masks[0]),  # name only
        ("Segment_7", parotid_r, masks[1]),  # terminology only (meaningless name)
        ("BrainStem", None, masks[2]),
    ])
    back = read_segmentation(path, pddca)
    expected = np.zeros(shape, np.uint8)
    expected[masks[0]] = 6
    expected[masks[1]] = 7
    expected[masks[2]] = 1
    np.testing.assert_array_equal(back.array, expected)
    assert back.same_geometry(orbit_labels(), tol=1e-5)


def test_read_overlapping_slicer_segments(tmp_path: Path, mrml_scene):
    """Overlapping segments make Slicer write a 4D file with several layers."""
    pytest.importorskip("slicer")
    orbit = get_label_set("orbit")
    shape = orbit_labels().shape
    a = np.zeros(shape, bool)
    a[1:4, 1:4, 1:4] = True
    b = np.zeros(shape, bool)
    b[3:5, 3:6, 3:6] = True  # overlaps a at [3, 3, 3]
    path = _slicer_segmentation_file(mrml_scene, tmp_path, [("right optic nerve", None, a),
                                                             ("left optic nerve", None, b)])
    nrrd = pytest.importorskip("nrrd")
    assert nrrd.read_header(str(path))["dimension"] == 4
    back = read_segmentation(path, orbit)
    assert set(np.unique(back.array)) == {0, 5, 10}
    assert np.all(back.array[a & ~b] == 5) and np.all(back.array[b & ~a] == 10)
    assert back.same_geometry(orbit_labels(), tol=1e-5)


def test_unknown_segments_are_listed(tmp_path: Path, mrml_scene):
    pytest.importorskip("slicer")
    mask = np.zeros(orbit_labels().shape, bool)
    mask[1:3, 1:3, 1:3] = True
    path = _slicer_segmentation_file(mrml_scene, tmp_path, [("Liver", None, mask), ("Parotid_L", None, mask),
                                                             ("Tumour", None, mask)])
    with pytest.raises(InputError, match=r"\['Liver', 'Tumour'\].*pddca"):
        read_segmentation(path, get_label_set("pddca"))


def test_read_plain_labelmap_as_segmentation(tmp_path: Path):
    orbit = get_label_set("orbit")
    labels = orbit_labels()
    path = write_labelmap(labels, tmp_path / "labels.nii.gz")
    np.testing.assert_array_equal(read_segmentation(path, orbit).array, labels.array)
    with pytest.raises(InputError, match=r"values \[9\].*openkbp"):
        read_segmentation(path, get_label_set("openkbp"))


def test_segmentation_write_is_atomic_and_refuses_overwrite(tmp_path: Path):
    orbit = get_label_set("orbit")
    path = write_segmentation(orbit_labels(), orbit, tmp_path / "s.seg.nrrd")
    before = path.read_bytes()
    with pytest.raises(OutputExistsError):
        write_segmentation(orbit_labels(direction=np.eye(3)), orbit, path)
    assert path.read_bytes() == before
    write_segmentation(orbit_labels(direction=np.eye(3)), orbit, path, overwrite=True)
    assert read_segmentation(path, orbit).same_geometry(orbit_labels(direction=np.eye(3)))
    assert os.listdir(tmp_path) == ["s.seg.nrrd"]
