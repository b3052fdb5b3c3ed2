"""Dataset discovery, manifests ('reviewed' masks the rest), validation before training, and splits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headseg.geometry import Volume
from headseg.io import write_labelmap, write_segmentation, write_volume
from headseg.labels import get_label_set
from training.datasets import (
    add_case_to_manifest,
    discover_records,
    kfold_split,
    load_case,
    split_cases,
    validate_dataset,
)

ORBIT = get_label_set("orbit")


def _ct_and_labels(shape=(12, 40, 40), spacing=(1.0, 1.0, 2.0), origin=(0.0, 0.0, 0.0)):
    """A small CT-like volume (air, soft tissue, bone) with two orbit structures drawn."""
    rng = np.random.default_rng(0)
    array = np.full(shape, -1000, np.int16)
    array[:, 5:35, 5:35] = 40
    array[:, 8:10, 5:35] = 900
    array += rng.integers(-5, 5, shape).astype(np.int16)
    labels = np.zeros(shape, np.uint8)
    labels[3:8, 12:16, 12:20] = 1  # right superior rectus
    labels[3:8, 20:24, 12:20] = 5  # right optic nerve
    image = Volume(array, spacing, origin)
    return image, image.with_array(labels)


def _write_case(folder, image, labels, seg=False):
    folder.mkdir(parents=True, exist_ok=True)
    write_volume(image, folder / "image.nrrd")
    if seg:
        write_segmentation(labels, ORBIT, folder / "segmentation.seg.nrrd")
    else:
        write_labelmap(labels, folder / "labels.nrrd")


def test_phantom_layout_and_presence_defines_annotation(tmp_path):
    image, labels = _ct_and_labels()
    _write_case(tmp_path / "case_a", image, labels)
    _write_case(tmp_path / "case_b", image, labels, seg=True)
    records = discover_records(tmp_path)
    assert [r.case for r in records] == ["case_a", "case_b"]
    for record in records:
        case = load_case(record, ORBIT)
        assert case.annotated == ("superior_rectus_right", "optic_nerve_right")
        assert np.array_equal(case.labels.array, labels.array)
    report = validate_dataset(records, ORBIT, task="orbit")
    assert report.usable == ["case_a", "case_b"] and not report.errors
    assert report.annotations["superior_rectus_right"] == 2 and report.annotations["optic_nerve_left"] == 0


def test_manifest_reviewed_masks_the_other_structures(tmp_path):
    from headseg.segment.preprocessing import _class_mask

    image, labels = _ct_and_labels()
    _write_case(tmp_path / "cases" / "p1", image, labels, seg=True)
    add_case_to_manifest(tmp_path, "p1", tmp_path / "cases/p1/image.nrrd", tmp_path / "cases/p1/segmentation.seg.nrrd",
                         "orbit", "orbit", reviewed=["superior_rectus_right"])
    records = discover_records(tmp_path)
    assert len(records) == 1 and records[0].source == "manifest"
    assert records[0].image == tmp_path / "cases/p1/image.nrrd"
    case = load_case(records[0], ORBIT)
    assert case.annotated == ("superior_rectus_right",)  # the drawn optic nerve was not reviewed: missing
    keys = [None] + [f"{n}_right" for n in ("superior_rectus", "lateral_rectus", "medial_rectus",
                                            "inferior_rectus", "optic_nerve")]
    assert _class_mask(keys, case.annotated).tolist() == [0, 1, 0, 0, 0, 0]
    report = validate_dataset(records, ORBIT)
    assert any("not marked as reviewed" in p.message for p in report.warnings)
    # Re-adding the case replaces its row.
    add_case_to_manifest(tmp_path, "p1", tmp_path / "cases/p1/image.nrrd", tmp_path / "cases/p1/segmentation.seg.nrrd",
                         "orbit", "orbit", reviewed=[])
    assert load_case(discover_records(tmp_path)[0], ORBIT).annotated == ("superior_rectus_right", "optic_nerve_right")


def test_validation_catches_geometry_mismatch_unknown_segments_empty_and_non_ct(tmp_path):
    import nrrd

    image, labels = _ct_and_labels()
    _write_case(tmp_path / "good", image, labels)
    moved = Volume(labels.array, labels.spacing, (3.0, 0.0, 0.0))
    _write_case(tmp_path / "shifted", image, moved)
    _write_case(tmp_path / "banana", image, labels, seg=True)
    path = tmp_path / "banana" / "segmentation.seg.nrrd"
    data, header = nrrd.read(str(path), index_order="C")
    for n in range(20):
        if header.get(f"Segment{n}_Name") == "right superior rectus":
            header[f"Segment{n}_Name"] = "Banana"
            header[f"Segment{n}_ID"] = "Banana"
            header[f"Segment{n}_Tags"] = ""
    nrrd.write(str(path), data, header, index_order="C")
    _write_case(tmp_path / "empty", image, labels.with_array(np.zeros_like(labels.array)))
    mr = image.with_array(np.clip(image.array, 0, 400) + 100)
    _write_case(tmp_path / "mr", mr, labels)
    report = validate_dataset(discover_records(tmp_path), ORBIT)
    errors = {p.case: p.message for p in report.errors}
    assert report.usable == ["good"]
    assert "different geometry" in errors["shifted"]
    assert "Banana" in errors["banana"] and "do not match" in errors["banana"]
    assert "empty" in errors["empty"]
    assert "Hounsfield" in errors["mr"]


def test_openkbp_layout_contoured_and_flags(tmp_path):
    openkbp = get_label_set("openkbp")
    image, _ = _ct_and_labels()
    lab = np.zeros(image.shape, np.uint8)
    lab[2:6, 10:20, 10:20] = 1
    lab[6:9, 10:20, 10:20] = 2
    for split, patient in (("train", "pt_1"), ("validation", "pt_2")):
        folder = tmp_path / split / patient
        folder.mkdir(parents=True)
        write_volume(image, folder / "ct.nii.gz")
        write_labelmap(image.with_array(lab), folder / "labels.nii.gz")
        (folder / "meta.json").write_text(json.dumps({"contoured": ["Brainstem", "SpinalCord", "Mandible"]}))
    (tmp_path / "manifest.csv").write_text("split,patient,Brainstem,flag\nvalidation,pt_2,10,suspect_SpinalCord_PRV\n")
    records = discover_records(tmp_path)
    assert [(r.case, r.split) for r in records] == [("pt_1", "train"), ("pt_2", "validation")]
    assert load_case(records[0], openkbp).annotated == ("brainstem", "spinal_cord", "mandible")
    assert load_case(records[1], openkbp).annotated == ("brainstem", "mandible")  # flagged cord excluded
    assert split_cases(records, {"type": "auto"})["validation"] == ["pt_2"]


def test_kfold_is_a_partition_and_repeatable():
    cases = [f"c{n:02d}" for n in range(23)]
    held = []
    for fold in range(10):
        train, val = kfold_split(cases, 10, fold, seed=3)
        assert not set(train) & set(val) and len(train) + len(val) == 23
        held += val
    assert sorted(held) == cases
    assert kfold_split(cases, 10, 4, seed=3) == kfold_split(list(reversed(cases)), 10, 4, seed=3)
    with pytest.raises(ValueError, match="folds"):
        kfold_split(cases[:3], 10, 0)


def test_training_reads_the_date_and_reexports_the_writer(tmp_path):
    import training.datasets as datasets
    from headseg import manifest

    assert datasets.add_case_to_manifest is manifest.add_case_to_manifest
    assert datasets.MANIFEST_COLUMNS == manifest.MANIFEST_COLUMNS
    add_case_to_manifest(tmp_path, "pt1", tmp_path / "pt1.nrrd", tmp_path / "pt1.seg.nrrd", "orbit", "orbit",
                         reviewed=["optic_nerve_left"], split="test", date="2026-01-02T03:04:05")
    (record,) = discover_records(tmp_path)
    assert (record.case, record.task, record.label_set, record.split, record.date) == (
        "pt1", "orbit", "orbit", "test", "2026-01-02T03:04:05")
    assert record.annotated == ("optic_nerve_left",)
