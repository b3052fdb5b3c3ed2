"""DICOM SEG and RT Structure Set export: written, read back (also by independent decoders) and compared
voxel by voxel with the label map, on axis-aligned and oblique CT series."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io import OutputExistsError, read_segmentation, read_volume, write_dicom_series
from headseg.labels import get_label_set

pydicom = pytest.importorskip("pydicom")
pytest.importorskip("highdicom")

from headseg.dicom_export import (  # noqa: E402
    load_dicom_source,
    mask_to_polygons,
    rasterize_polygons,
    read_dicom_seg,
    read_rtstruct,
    write_dicom_seg,
    write_rtstruct,
)

REPO = Path(__file__).resolve().parents[2]
ORBIT = get_label_set("orbit")
OBLIQUE = np.array([[math.cos(0.4), -math.sin(0.4), 0.0], [math.sin(0.4), math.cos(0.4), 0.0], [0.0, 0.0, 1.0]])


def ct_series(folder: Path, direction=None, shape=(12, 40, 36), spacing=(1.0, 1.0, 1.0)) -> Volume:
    """Write a CT series and return it as read back (the grid a HeadSeg result lies on)."""
    rng = np.random.default_rng(0)
    array = rng.integers(-1000, 1500, shape).astype(np.int16)
    volume = Volume(array, spacing, (-20.0, 15.5, -40.25), np.eye(3) if direction is None else direction)
    write_dicom_series(volume, folder, series_description="head CT")
    return read_volume(folder)


def ball(shape, center_kji, radii_kji) -> np.ndarray:
    k, j, i = np.ogrid[: shape[0], : shape[1], : shape[2]]
    return ((k - center_kji[0]) / radii_kji[0]) ** 2 + ((j - center_kji[1]) / radii_kji[1]) ** 2 + (
        (i - center_kji[2]) / radii_kji[2]
    ) ** 2 <= 1.0


def orbit_like_labels(grid: Volume) -> Volume:
    """Structures of reasonable size (radii 3-8 voxels = mm), one with a hole through several slices, one
    with diagonal-only pixel contacts, one a single voxel."""
    shape = grid.shape
    labels = np.zeros(shape, np.uint8)
    labels[ball(shape, (6, 12, 10), (5, 8, 7))] = 2  # right lateral rectus, a blob
    labels[ball(shape, (6, 12, 10), (2, 3, 3))] = 0  # a hole inside it
    labels[ball(shape, (5, 28, 24), (4, 6, 6))] = 10  # left optic nerve
    for n in range(6):  # a diagonal staircase: 8-connected only
        labels[3, 30 + n, 2 + n] = 6
    labels[9, 2, 33] = 9  # one voxel
    return grid.with_array(labels)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


# ------------------------------------------------------------------------------------------------
# Contour tracing and rasterisation
# ------------------------------------------------------------------------------------------------
def test_single_pixel_and_hole_polygons():
    one = np.zeros((3, 3), bool)
    one[1, 1] = True
    (square,) = mask_to_polygons(one)
    assert sorted(map(tuple, square)) == [(0.5, 0.5), (0.5, 1.5), (1.5, 0.5), (1.5, 1.5)]
    ring = np.ones((5, 5), bool)
    ring[2, 2] = False
    polygons = mask_to_polygons(ring)
    assert sorted(len(p) for p in polygons) == [4, 4]  # outer square and the hole
    np.testing.assert_array_equal(rasterize_polygons(polygons, ring.shape), ring)


def test_traced_polygons_rasterise_back_exactly_on_random_masks():
    """Noise masks are the worst case (saddles, holes, single pixels): 300 of them, zero pixel errors, and
    no two polygons of a slice share a vertex (simple, non-touching polygons)."""
    rng = np.random.default_rng(7)
    wrong = 0
    for n in range(300):
        mask = rng.random((14, 17)) < (0.3 + 0.4 * (n % 2))
        polygons = mask_to_polygons(mask)
        wrong += int((rasterize_polygons(polygons, mask.shape) != mask).sum())
        vertices = np.concatenate(polygons)
        assert len(np.unique(np.round(vertices, 6), axis=0)) == len(vertices)
    assert wrong == 0


def test_rasteriser_agrees_with_matplotlib_on_arbitrary_polygons():
    """The even-odd scanline fill against matplotlib's point-in-polygon on smooth (non-staircase) shapes."""
    mpath = pytest.importorskip("matplotlib.path")
    t = np.linspace(0, 2 * np.pi, 37)[:-1]
    outer = np.column_stack([20 + 12.3 * np.cos(t), 15 + 9.7 * np.sin(t)])
    inner = np.column_stack([21 + 4.1 * np.cos(t), 14 + 3.3 * np.sin(t)])
    ours = rasterize_polygons([outer, inner], (32, 40))
    jj, ii = np.mgrid[0:32, 0:40]
    centres = np.column_stack([ii.ravel(), jj.ravel()])
    theirs = mpath.Path(outer).contains_points(centres) ^ mpath.Path(inner).contains_points(centres)
    assert (ours.ravel() != theirs).sum() == 0


# ------------------------------------------------------------------------------------------------
# DICOM SEG
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", [None, OBLIQUE], ids=["axial", "oblique"])
def test_dicom_seg_round_trip_is_exact_and_references_the_series(tmp_path, direction):
    grid = ct_series(tmp_path / "ct", direction)
    labels = orbit_like_labels(grid)
    path = write_dicom_seg(labels, ORBIT, tmp_path / "ct", tmp_path / "seg.dcm")

    back = read_dicom_seg(path, ORBIT, tmp_path / "ct")
    np.testing.assert_array_equal(back.array, labels.array)
    assert back.same_geometry(grid, tol=1e-3)

    seg = pydicom.dcmread(path)
    source = load_dicom_source(tmp_path / "ct")
    first = source.first
    assert seg.Modality == "SEG" and seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.FrameOfReferenceUID == first.FrameOfReferenceUID
    assert seg.PatientID == first.PatientID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    referenced = {str(item.ReferencedSOPInstanceUID) for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert referenced == {str(ds.SOPInstanceUID) for ds in source.datasets}

    import highdicom as hd

    segments = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert [s.SegmentLabel for s in segments.values()] == [ORBIT.by_label(v).name for v in (2, 6, 9, 10)]
    for item in segments.values():
        structure = ORBIT.by_name(item.SegmentLabel)
        type_code = item.SegmentedPropertyTypeCodeSequence[0]
        assert (type_code.CodeValue, type_code.CodingSchemeDesignator) == (structure.terminology.type.value, "SCT")
        modifier = type_code.SegmentedPropertyTypeModifierCodeSequence[0]
        assert modifier.CodeValue == structure.terminology.type_modifier.value  # laterality
        assert item.SegmentedPropertyCategoryCodeSequence[0].CodeValue == structure.terminology.category.value
        rgb = hd.color.CIELabColor.from_dicom_value(tuple(item.RecommendedDisplayCIELabValue)).to_rgb()
        expected = [round(255 * c) for c in structure.color]
        assert max(abs(a - b) for a, b in zip(rgb, expected)) <= 2

    # Independent decoding with pydicom only: unpack the bit-packed frames and place them by the source
    # image each frame was derived from.
    bits = np.unpackbits(np.frombuffer(seg.PixelData, np.uint8), bitorder="little")
    rows, cols = int(seg.Rows), int(seg.Columns)
    slice_of_uid = {str(ds.SOPInstanceUID): k for k, ds in enumerate(source.datasets)}
    decoded = np.zeros(labels.shape, np.uint8)
    for f, frame in enumerate(seg.PerFrameFunctionalGroupsSequence):
        number = int(frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        uid = str(frame.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID)
        pixels = bits[f * rows * cols:(f + 1) * rows * cols].reshape(rows, cols).astype(bool)
        decoded[slice_of_uid[uid]][pixels] = ORBIT.by_name(segments[number].SegmentLabel).label
    np.testing.assert_array_equal(decoded, labels.array)


# ------------------------------------------------------------------------------------------------
# RT Structure Set
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("direction", [None, OBLIQUE], ids=["axial", "oblique"])
def test_rtstruct_round_trip_and_references(tmp_path, direction):
    mpath = pytest.importorskip("matplotlib.path")
    grid = ct_series(tmp_path / "ct", direction)
    labels = orbit_like_labels(grid)
    path = write_rtstruct(labels, ORBIT, tmp_path / "ct", tmp_path / "rt.dcm")

    back = read_rtstruct(path, ORBIT, grid)
    np.testing.assert_array_equal(back.array, labels.array)

    ds = pydicom.dcmread(path)
    source = load_dicom_source(tmp_path / "ct")
    first = source.first
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.StudyInstanceUID == first.StudyInstanceUID and ds.PatientID == first.PatientID
    frame = ds.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == first.FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    assert [i.ReferencedSOPInstanceUID for i in series.ContourImageSequence] == [d.SOPInstanceUID for d in source.datasets]

    names = {int(r.ROINumber): str(r.ROIName) for r in ds.StructureSetROISequence}
    # TG-263 names by default, what treatment planning systems expect (the recti: built by its rules).
    assert sorted(names.values()) == sorted(ORBIT.by_label(v).tg263 for v in (2, 6, 9, 10))
    assert sorted(names.values()) == ["Musc_RectusInf_L", "Musc_RectusLat_R", "Musc_RectusSup_L", "OpticNrv_L"]
    for obs in ds.RTROIObservationsSequence:
        structure = ORBIT.by_name(names[int(obs.ReferencedROINumber)])
        assert obs.RTROIInterpretedType == "ORGAN"
        code = obs.RTROIIdentificationCodeSequence[0]
        assert code.CodeValue == structure.terminology.type.value
        assert code.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == structure.terminology.type_modifier.value
        assert obs.SegmentedPropertyCategoryCodeSequence[0].CodeValue == structure.terminology.category.value

    # Independent rasterisation: matplotlib point-in-polygon at the pixel centres (even-odd across the
    # contours of a slice), contours placed on the slice whose SOP instance they reference.
    inverse = np.linalg.inv(grid.ijk_to_lps)
    slice_of_uid = {str(d.SOPInstanceUID): k for k, d in enumerate(source.datasets)}
    jj, ii = np.mgrid[0:grid.shape[1], 0:grid.shape[2]]
    centres = np.column_stack([ii.ravel(), jj.ravel()])
    for roi in ds.ROIContourSequence:
        structure = ORBIT.by_name(names[int(roi.ReferencedROINumber)])
        assert [int(c) for c in roi.ROIDisplayColor] == [round(255 * c) for c in structure.color]
        raster = np.zeros(grid.shape, bool)
        area_mm2 = 0.0
        for contour in roi.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            k = slice_of_uid[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            lps = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert len(lps) == int(contour.NumberOfContourPoints)
            ijk = (inverse @ np.column_stack([lps, np.ones(len(lps))]).T).T
            assert np.abs(ijk[:, 2] - k).max() < 1e-3  # on the referenced slice
            inside = mpath.Path(ijk[:, :2]).contains_points(centres).reshape(grid.shape[1:])
            raster[k] ^= inside
            x, y = ijk[:, 0], ijk[:, 1]  # signed shoelace: holes run the other way round and subtract
            area_mm2 += 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) * grid.spacing[0] * grid.spacing[1]
        truth = labels.array == structure.label
        assert dice(raster, truth) == 1.0, structure.name
        # Contour areas (what a planning system integrates) = voxel areas, up to the 0.1-pixel corner cuts.
        assert abs(area_mm2) == pytest.approx(truth.sum() * grid.spacing[0] * grid.spacing[1], rel=0.01)


def test_rtstruct_on_a_1mm_grid_reproduces_organ_sized_structures(tmp_path):
    """The tolerance statement of docs/dicom.md ("How exact the exports are"): organ-sized ellipsoids (2-15 mm radii) on a 1 mm grid come
    back with DSC 1.0 (zero differing voxels) through write_rtstruct -> read_rtstruct."""
    grid = ct_series(tmp_path / "ct", shape=(30, 64, 64))
    pddca = get_label_set("pddca")
    labels = np.zeros(grid.shape, np.uint8)
    labels[ball(grid.shape, (15, 32, 20), (12, 15, 10))] = 3  # mandible-sized
    labels[ball(grid.shape, (10, 20, 48), (6, 8, 7))] = 6
    labels[ball(grid.shape, (20, 50, 50), (3, 2, 2))] = 4  # optic-nerve-sized
    labelmap = grid.with_array(labels)
    back = read_rtstruct(write_rtstruct(labelmap, pddca, tmp_path / "ct", tmp_path / "rt.dcm"), pddca, grid)
    for value in (3, 4, 6):
        assert dice(back.array == value, labels == value) == 1.0


# ------------------------------------------------------------------------------------------------
# Refusals
# ------------------------------------------------------------------------------------------------
def test_export_refusals(tmp_path):
    grid = ct_series(tmp_path / "ct")
    labels = orbit_like_labels(grid)
    with pytest.raises(InputError, match="was not computed on this series"):
        write_rtstruct(Volume(labels.array[:-1], grid.spacing, grid.origin), ORBIT, tmp_path / "ct", tmp_path / "a.dcm")
    shifted = Volume(labels.array, grid.spacing, tuple(np.add(grid.origin, (3.0, 0, 0))), grid.direction)
    with pytest.raises(InputError, match="voxel grid differs"):
        write_dicom_seg(shifted, ORBIT, tmp_path / "ct", tmp_path / "b.dcm")
    with pytest.raises(InputError, match="empty"):
        write_dicom_seg(grid.with_array(np.zeros(grid.shape, np.uint8)), ORBIT, tmp_path / "ct", tmp_path / "c.dcm")
    bad = labels.array.copy()
    bad[0, 0, 0] = 42
    with pytest.raises(InputError, match="42"):
        write_rtstruct(grid.with_array(bad), ORBIT, tmp_path / "ct", tmp_path / "d.dcm")
    write_rtstruct(labels, ORBIT, tmp_path / "ct", tmp_path / "e.dcm")
    with pytest.raises(OutputExistsError):
        write_rtstruct(labels, ORBIT, tmp_path / "ct", tmp_path / "e.dcm")
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == ["e.dcm"]  # no partial files


def test_tilted_source_is_refused(tmp_path):
    grid = ct_series(tmp_path / "ct")
    paths = sorted((tmp_path / "ct").iterdir())
    for n, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y + n * math.tan(math.radians(20)), z]
        ds.save_as(path)
    # HeadSeg reads the series on a regularised grid, which no DICOM object can refer to slice by slice.
    with pytest.raises(InputError, match=r"cannot be exported as a DICOM SEG or RT Structure Set: its slices do "
                                         r"not form one regular grid \(a gantry tilt of 20.0 degrees"):
        write_dicom_seg(orbit_like_labels(grid), ORBIT, tmp_path / "ct", tmp_path / "seg.dcm")
    with pytest.raises(InputError, match="headseg convert"):
        load_dicom_source(tmp_path / "ct")
    assert not (tmp_path / "seg.dcm").exists()


# ------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------
def test_cli_exports_dicom_seg_and_rtstruct_beside_the_seg_nrrd(tmp_path):
    sys.path.insert(0, str(REPO / "Testing" / "hardening"))
    from hardening_factory import head_ct, write_random_han_package

    package = write_random_han_package(tmp_path / "models" / "random-han")
    write_dicom_series(head_ct(), tmp_path / "case7")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "headseg", "segment", str(tmp_path / "case7"), "--task", "han", "--model",
               str(package.path), "-o", str(out), "--export", "dicom-seg,rtstruct", "--progress-format", "none",
               "--device", "cpu"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    labelmap = read_segmentation(out / "case7.seg.nrrd", get_label_set("openkbp"))
    assert labelmap.array.any()
    openkbp = get_label_set("openkbp")
    np.testing.assert_array_equal(read_dicom_seg(out / "case7_seg.dcm", openkbp, tmp_path / "case7").array,
                                  labelmap.array)
    np.testing.assert_array_equal(read_rtstruct(out / "case7_rtstruct.dcm", openkbp, labelmap).array, labelmap.array)
    rois = {str(r.ROIName) for r in pydicom.dcmread(out / "case7_rtstruct.dcm").StructureSetROISequence}
    present = {openkbp.by_label(v) for v in np.unique(labelmap.array) if v}
    assert rois == {s.tg263 for s in present} and rois <= {"Brainstem", "SpinalCord", "Parotid_R", "Parotid_L",
                                                             "Esophagus", "Larynx", "Bone_Mandible"}
    # --roi-names display keeps the display names; SEG keeps display labels and its SNOMED CT codes either way.
    out2 = tmp_path / "out_display"
    proc = subprocess.run(command[:command.index("-o")] + ["-o", str(out2)] + command[command.index("-o") + 2:]
                          + ["--roi-names", "display"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rois = {str(r.ROIName) for r in pydicom.dcmread(out2 / "case7_rtstruct.dcm").StructureSetROISequence}
    assert rois == {s.name for s in present}
    np.testing.assert_array_equal(read_rtstruct(out2 / "case7_rtstruct.dcm", openkbp, labelmap).array,
                                  labelmap.array)

    # Not DICOM input: a clear refusal before any work.
    from headseg.io import write_volume

    write_volume(head_ct(), tmp_path / "plain.nrrd")
    proc = subprocess.run(command[:4] + [str(tmp_path / "plain.nrrd")] + command[5:], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "give the DICOM folder" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run(command[:-4] + ["--export", "nifti"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2 and "Unknown --export format" in proc.stderr
