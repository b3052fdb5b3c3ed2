"""HeadSeg's own terminology file: generated from headseg.labels, loaded by Slicer's terminology logic
(slicer-core wheel), and every segment HeadSeg makes names an entry that resolves in it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headseg.labels import HEADSEG_TERMINOLOGY_CONTEXT, LABEL_SETS, get_label_set
from headseg.slicer import terminology


def test_the_shipped_file_is_the_one_generated_from_the_label_sets():
    assert terminology.TERMINOLOGY_FILE.read_text(encoding="utf-8") == terminology.terminology_json(), \
        "regenerate it: python -m headseg.slicer.terminology"
    document = json.loads(terminology.TERMINOLOGY_FILE.read_text(encoding="utf-8"))
    assert document["SegmentationCategoryTypeContextName"] == HEADSEG_TERMINOLOGY_CONTEXT
    assert "segment-context-schema.json" in document["@schema"]


def test_every_structure_of_every_label_set_is_in_the_file_with_its_snomed_codes():
    document = json.loads(terminology.TERMINOLOGY_FILE.read_text(encoding="utf-8"))
    entries = {}
    for category in document["SegmentationCodes"]["Category"]:
        for type_ in category["Type"]:
            for modifier in type_.get("Modifier", [None]):
                key = (category["CodeValue"], type_["CodeValue"], modifier["CodeValue"] if modifier else None)
                entries[key] = modifier or type_
                assert type_["CodingSchemeDesignator"] == "SCT" and type_["SNOMEDCTConceptID"] == type_["CodeValue"]
    found = 0
    for label_set in LABEL_SETS.values():
        for s in label_set:
            t = s.terminology
            key = (t.category.value, t.type.value, t.type_modifier.value if t.type_modifier else None)
            assert key in entries, f"{label_set.name}/{s.key} is not in HeadSeg.term.json"
            assert entries[key]["3dSlicerLabel"] == s.name  # names agree across label sets too
            assert len(entries[key]["recommendedDisplayRGBValue"]) == 3
            found += 1
    assert found == sum(len(s) for s in LABEL_SETS.values()) == 26
    assert len(entries) == len({(s.terminology.type.value, getattr(s.terminology.type_modifier, "value", None))
                                for ls in LABEL_SETS.values() for s in ls}), "no entry HeadSeg does not use"


@pytest.fixture
def terminologies_logic(tmp_path):
    """Slicer's terminology logic (slicer-core) with no other terminology loaded."""
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    logic.SetModuleShareDirectory(str(tmp_path))
    return logic


def test_slicer_loads_the_file_once_and_resolves_every_structure(terminologies_logic):
    logic = terminologies_logic
    entry_text = get_label_set("orbit").by_key("superior_rectus_right").terminology.to_slicer_string()
    assert terminology.resolve_entry(entry_text, logic) is None, "nothing resolves before the file is loaded"
    assert terminology.load_terminology(logic) == HEADSEG_TERMINOLOGY_CONTEXT
    assert terminology.load_terminology(logic) == HEADSEG_TERMINOLOGY_CONTEXT  # again: no second copy
    for label_set in LABEL_SETS.values():
        for s in label_set:
            entry = terminology.resolve_entry(s.terminology.to_slicer_string(), logic)
            assert entry is not None, f"{label_set.name}/{s.key}"
            shown = entry.GetTypeModifierObject() if s.side else entry.GetTypeObject()
            assert shown.GetSlicerLabel() == s.name
            assert entry.GetTypeObject().GetCodeValue() == s.terminology.type.value
    # Slicer's own look-up (what the terminology selector and colour suggestions use) finds it in our context
    import slicer

    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(entry_text, entry)
    assert logic.UpdateEntryFromLoadedTerminologies(entry, [HEADSEG_TERMINOLOGY_CONTEXT], [])
    assert entry.GetTerminologyContextName() == HEADSEG_TERMINOLOGY_CONTEXT
    assert entry.GetTypeModifierObject().GetSlicerLabel() == "right superior rectus"


def test_a_side_that_does_not_match_the_file_does_not_resolve(terminologies_logic):
    terminology.load_terminology(terminologies_logic)
    parotid = get_label_set("pddca").by_key("parotid_left").terminology
    mandible = get_label_set("pddca").by_key("mandible").terminology
    without_side = parotid.to_slicer_string().replace("~SCT^7771000^Left~", "~^^~")
    with_side = mandible.to_slicer_string().replace("~^^~Anatomic", "~SCT^7771000^Left~Anatomic")
    assert without_side != parotid.to_slicer_string() and with_side != mandible.to_slicer_string()
    assert terminology.resolve_entry(parotid.to_slicer_string(), terminologies_logic) is not None
    assert terminology.resolve_entry(without_side, terminologies_logic) is None
    assert terminology.resolve_entry(with_side, terminologies_logic) is None


@pytest.mark.parametrize("label_set_name", ["orbit", "pddca", "openkbp"])
def test_every_imported_segment_names_an_entry_of_the_loaded_file(mrml_scene, small_phantom, tmp_path,
                                                                  label_set_name, terminologies_logic):
    """What a user gets in Slicer: a result imported into a segmentation node, every segment's terminology
    resolving in the terminology the module loaded at start-up."""
    from headseg.io import write_segmentation
    from headseg.slicer.scene import node_from_volume
    from headseg.slicer.segments import import_segmentation_file, segment_terminology

    label_set = get_label_set(label_set_name)
    labels = np.zeros(small_phantom.image.shape, np.uint8)
    for n, s in enumerate(label_set):  # one small block per structure
        labels[2 + 3 * (n // 5):4 + 3 * (n // 5), 5 + 8 * (n % 5):10 + 8 * (n % 5), 5:10] = s.label
    labelmap = small_phantom.image.with_array(labels)
    ct = node_from_volume(small_phantom.image, "CT")
    node = import_segmentation_file(write_segmentation(labelmap, label_set, tmp_path / "r.seg.nrrd"), label_set, ct)
    terminology.load_terminology(terminologies_logic)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == len(label_set)
    for segment_id in segmentation.GetSegmentIDs():
        segment = segmentation.GetSegment(segment_id)
        text = segment_terminology(segment)
        assert text.split("~")[0] == HEADSEG_TERMINOLOGY_CONTEXT
        entry = terminology.resolve_entry(text, terminologies_logic)
        assert entry is not None, segment_id
        side = label_set.by_key(segment_id).side
        shown = entry.GetTypeModifierObject() if side else entry.GetTypeObject()
        assert shown.GetSlicerLabel() == segment.GetName()
