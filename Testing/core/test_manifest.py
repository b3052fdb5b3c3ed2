"""The training-set manifest (``headseg.manifest``): the one writer the Slicer modules and training share."""

from __future__ import annotations

import csv

import pytest

from headseg.manifest import MANIFEST_COLUMNS, add_case_to_manifest, manifest_cases, read_manifest


def rows_of(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_every_column_is_written_with_relative_paths_and_a_date(tmp_path):
    path = add_case_to_manifest(tmp_path, "pt1", tmp_path / "images/pt1.nrrd", tmp_path / "labels/pt1.seg.nrrd",
                                "orbit", "orbit", reviewed=["optic_nerve_left", "superior_rectus_right"],
                                split="validation", date="2026-01-02T03:04:05")
    assert path == tmp_path / "manifest.csv"
    with open(path, newline="", encoding="utf-8") as f:
        assert next(csv.reader(f)) == list(MANIFEST_COLUMNS)
    assert rows_of(path) == [{"case": "pt1", "image": "images/pt1.nrrd", "segmentation": "labels/pt1.seg.nrrd",
                              "task": "orbit", "label_set": "orbit",
                              "reviewed": "optic_nerve_left;superior_rectus_right", "split": "validation",
                              "date": "2026-01-02T03:04:05"}]
    outside = tmp_path.parent / "elsewhere.nrrd"
    add_case_to_manifest(tmp_path, "pt2", outside, outside, "han", "openkbp")
    second = rows_of(path)[1]
    assert second["image"] == str(outside.resolve()), "a file outside the dataset keeps its absolute path"
    assert second["date"][:4].isdigit() and "T" in second["date"], "the date defaults to now (ISO 8601)"
    assert manifest_cases(tmp_path) == {"pt1", "pt2"}
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_replace_or_refuse_an_existing_case_and_keep_user_columns(tmp_path):
    (tmp_path / "manifest.csv").write_text("case,image,segmentation,notes\npt1,a.nrrd,a.seg.nrrd,check jaw\n",
                                           encoding="utf-8")
    columns, rows = read_manifest(tmp_path)
    assert columns == ["case", "image", "segmentation", "notes", "task", "label_set", "reviewed", "split", "date"]
    with pytest.raises(ValueError, match="already in"):
        add_case_to_manifest(tmp_path, "pt1", "b.nrrd", "b.seg.nrrd", "orbit", "orbit", replace=False)
    add_case_to_manifest(tmp_path, "pt2", tmp_path / "b.nrrd", tmp_path / "b.seg.nrrd", "orbit", "orbit")
    rows = rows_of(tmp_path / "manifest.csv")
    assert [r["case"] for r in rows] == ["pt1", "pt2"] and rows[0]["notes"] == "check jaw"
    add_case_to_manifest(tmp_path, "pt1", tmp_path / "c.nrrd", tmp_path / "c.seg.nrrd", "orbit", "orbit")
    rows = rows_of(tmp_path / "manifest.csv")
    assert [r["case"] for r in rows] == ["pt2", "pt1"] and rows[1]["image"] == "c.nrrd"

