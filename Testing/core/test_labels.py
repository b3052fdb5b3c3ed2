"""Label sets: values as in docs/ARCHITECTURE.md, sides, names, colours and terminology codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from headseg.errors import InputError
from headseg.labels import (
    LABEL_SETS,
    ORBIT_MODEL_CLASSES,
    TG263_NAMES,
    TG263_NEW_NAMES,
    Code,
    Terminology,
    get_label_set,
    orbit_combined_label,
    orbit_model_to_combined_lut,
)

# The tables of docs/ARCHITECTURE.md, written out independently of labels.py.
EXPECTED = {
    "orbit": {
        1: "superior_rectus_right", 2: "lateral_rectus_right", 3: "medial_rectus_right",
        4: "inferior_rectus_right", 5: "optic_nerve_right", 6: "superior_rectus_left",
        7: "lateral_rectus_left", 8: "medial_rectus_left", 9: "inferior_rectus_left", 10: "optic_nerve_left",
    },
    "pddca": {
        1: "brainstem", 2: "optic_chiasm", 3: "mandible", 4: "optic_nerve_left", 5: "optic_nerve_right",
        6: "parotid_left", 7: "parotid_right", 8: "submandibular_left", 9: "submandibular_right",
    },
    "openkbp": {
        1: "brainstem", 2: "spinal_cord", 3: "parotid_right", 4: "parotid_left", 5: "esophagus",
        6: "larynx", 7: "mandible",
    },
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_values_match_architecture(name: str):
    label_set = get_label_set(name)
    assert {s.label: s.key for s in label_set} == EXPECTED[name]
    assert len(set(label_set.labels)) == len(label_set.labels)
    assert label_set.keys() == tuple(EXPECTED[name][v] for v in sorted(EXPECTED[name]))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_structure_fields_are_consistent(name: str):
    label_set = get_label_set(name)
    for s in label_set:
        assert s.side in ("", "right", "left")
        assert s.key == (f"{s.base_key}_{s.side}" if s.side else s.base_key)
        assert s.side in s.name  # "" is in every name
        assert all(0.0 <= c <= 1.0 for c in s.color) and len(s.color) == 3
        modifier = s.terminology.type_modifier
        if s.side == "right":
            assert modifier == Code("SCT", "24028007", "Right")
        elif s.side == "left":
            assert modifier == Code("SCT", "7771000", "Left")
        else:
            assert modifier is None
        assert label_set.by_label(s.label) is s and label_set.by_key(s.key) is s
        assert label_set.by_name(s.name) is s and label_set.by_name(s.key.upper()) is s
    colours = [s.color for s in label_set]
    assert len(set(colours)) == len(colours), "two structures share a colour"


def test_orbit_sides_and_model_classes():
    orbit = get_label_set("orbit")
    for value in range(1, 6):
        assert orbit.by_label(value).side == "right"
        assert orbit.by_label(value + 5).side == "left"
        assert orbit.by_label(value).base_key == ORBIT_MODEL_CLASSES[value - 1]
        assert orbit_combined_label("right", value) == value
        assert orbit_combined_label("left", value) == value + 5
    assert orbit_combined_label("left", 0) == 0
    lut = orbit_model_to_combined_lut("left")
    model_output = np.array([[0, 1, 5], [3, 2, 4]])
    np.testing.assert_array_equal(lut[model_output], [[0, 6, 10], [8, 7, 9]])
    with pytest.raises(InputError, match="side"):
        orbit_combined_label("L", 1)
    with pytest.raises(InputError):
        orbit_combined_label("right", 6)


def test_orbit_colours_follow_seed_paper():
    """The SV-net paper: green SR, blue LR, yellow MR, pink IR, white ON; left is a darker shade of the same hue."""
    orbit = get_label_set("orbit")
    r, g, b = orbit.by_key("superior_rectus_right").color
    assert g > 0.6 and r < 0.4 and b < 0.4
    r, g, b = orbit.by_key("lateral_rectus_right").color
    assert b > 0.8 and r < 0.4
    r, g, b = orbit.by_key("medial_rectus_right").color
    assert r > 0.8 and g > 0.8 and b < 0.3
    r, g, b = orbit.by_key("inferior_rectus_right").color
    assert r > 0.8 and b > 0.6 and g < 0.7
    assert min(orbit.by_key("optic_nerve_right").color) > 0.95
    for base in ORBIT_MODEL_CLASSES:
        right = np.array(orbit.by_key(base + "_right").color)
        left = np.array(orbit.by_key(base + "_left").color)
        assert left.sum() < right.sum() - 0.2
        if right.max() - right.min() > 0.2:  # same hue: the same channel dominates
            assert np.argmax(left) == np.argmax(right)


def test_extraocular_muscle_groups():
    orbit = get_label_set("orbit")
    assert orbit.group_labels("extraocular_muscles_right") == (1, 2, 3, 4)
    assert orbit.group_labels("extraocular_muscles_left") == (6, 7, 8, 9)
    with pytest.raises(InputError):
        orbit.group_labels("muscles")


@pytest.mark.parametrize(
    "set_name, alias, key",
    [
        ("pddca", "Parotid_L", "parotid_left"),
        ("pddca", "LeftParotid", "parotid_left"),
        ("pddca", "Parotid left", "parotid_left"),
        ("pddca", "parotid-R", "parotid_right"),
        ("pddca", "OpticNerve_L", "optic_nerve_left"),
        ("pddca", "BrainStem", "brainstem"),
        ("pddca", "Brain stem", "brainstem"),
        ("pddca", "Chiasm", "optic_chiasm"),
        ("pddca", "Submandibular_R", "submandibular_right"),
        ("openkbp", "SpinalCord", "spinal_cord"),
        ("openkbp", "RightParotid", "parotid_right"),
        ("openkbp", "Oesophagus", "esophagus"),
        ("orbit", "Right Superior Rectus", "superior_rectus_right"),
        ("orbit", "superior_rectus_left", "superior_rectus_left"),
        ("orbit", "Optic nerve left", "optic_nerve_left"),
        ("orbit", "left lateral rectus muscle", "lateral_rectus_left"),
    ],
)
def test_name_aliases(set_name: str, alias: str, key: str):
    assert get_label_set(set_name).by_name(alias).key == key


def test_unknown_names_and_values_give_helpful_errors():
    pddca = get_label_set("pddca")
    with pytest.raises(InputError, match=r"Known \(key, or TG-263 name\): brainstem \(Brainstem\)"):
        pddca.by_name("Liver")
    assert pddca.find("Liver") is None
    with pytest.raises(InputError, match="valid"):
        pddca.by_label(12)
    with pytest.raises(InputError, match="orbit, pddca, openkbp"):
        get_label_set("totalseg")
    assert get_label_set(" ORBIT ") is LABEL_SETS["orbit"]


def test_terminology_string_format_and_round_trip():
    s = get_label_set("pddca").by_key("parotid_left")
    text = s.terminology.to_slicer_string()
    assert text == (
        "Segmentation category and type - HeadSeg~SCT^123037004^Anatomical Structure"
        "~SCT^45289007^Parotid gland~SCT^7771000^Left~Anatomic codes - DICOM master list~^^~^^"
    )
    assert s.terminology.to_tag_string() == "TerminologyEntry:" + text + "|"
    for variant in (text, s.terminology.to_tag_string()):
        parsed = Terminology.from_slicer_string(variant)
        assert parsed == s.terminology
    midline = get_label_set("pddca").by_key("mandible").terminology
    assert Terminology.from_slicer_string(midline.to_slicer_string()).type_modifier is None
    with pytest.raises(InputError):
        Terminology.from_slicer_string("TerminologyEntry:only~three~fields")


def _verhoeff_valid(number: str) -> bool:
    d = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 2, 3, 4, 0, 6, 7, 8, 9, 5], [2, 3, 4, 0, 1, 7, 8, 9, 5, 6],
         [3, 4, 0, 1, 2, 8, 9, 5, 6, 7], [4, 0, 1, 2, 3, 9, 5, 6, 7, 8], [5, 9, 8, 7, 6, 0, 4, 3, 2, 1],
         [6, 5, 9, 8, 7, 1, 0, 4, 3, 2], [7, 6, 5, 9, 8, 2, 1, 0, 4, 3], [8, 7, 6, 5, 9, 3, 2, 1, 0, 4],
         [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]]
    p = [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 5, 7, 6, 2, 8, 3, 0, 9, 4], [5, 8, 0, 3, 7, 9, 6, 1, 4, 2],
         [8, 9, 1, 6, 0, 4, 3, 5, 2, 7], [9, 4, 5, 3, 1, 2, 6, 8, 7, 0], [4, 2, 8, 6, 5, 7, 3, 9, 0, 1],
         [2, 7, 9, 3, 8, 0, 6, 4, 1, 5], [7, 0, 4, 6, 9, 1, 3, 2, 5, 8]]
    check = 0
    for position, digit in enumerate(reversed(number)):
        check = d[check][p[position % 8][int(digit)]]
    return check == 0


def test_snomed_codes_have_valid_check_digits():
    """SNOMED CT concept ids end in a Verhoeff check digit and partition '00' (a concept)."""
    assert not _verhoeff_valid("20020131")  # a wrong "optic nerve" code seen in a public value set
    for label_set in LABEL_SETS.values():
        for s in label_set:
            t = s.terminology
            for code in (t.category, t.type, t.type_modifier):
                if code is None:
                    continue
                assert code.scheme == "SCT"
                assert _verhoeff_valid(code.value), code
                assert code.value[-3:-1] == "00", code


def test_codes_agree_with_slicer_terminology_files(slicer_share_dir: Path):
    """Every type that Slicer's DICOM master list has must carry the same code and meaning there."""
    master = json.loads((slicer_share_dir / "terminologies" /
                         "SegmentationCategoryTypeModifier-DICOM-Master.term.json").read_text(encoding="utf-8"))
    categories = master["SegmentationCodes"]["Category"]
    anatomical = next(c for c in categories if c["CodeValue"] == "123037004")
    types = {t["CodeValue"]: t for t in anatomical["Type"]}
    found = 0
    for label_set in LABEL_SETS.values():
        for s in label_set:
            assert s.terminology.category.value == anatomical["CodeValue"]
            assert s.terminology.context_name == "Segmentation category and type - HeadSeg"  # our own file
            entry = types.get(s.terminology.type.value)
            if entry is None:
                assert s.base_key in ORBIT_MODEL_CLASSES  # recti and optic nerve are not in Slicer's list
                continue
            found += 1
            assert entry["CodeMeaning"] == s.terminology.type.meaning
            if s.side:
                modifiers = {m["CodeValue"]: m["CodeMeaning"] for m in entry.get("Modifier", [])}
                assert modifiers[s.terminology.type_modifier.value] == s.terminology.type_modifier.meaning
    assert found >= 14


def test_terminology_parses_in_slicer():
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    logic = slicer.vtkSlicerTerminologiesModuleLogic
    for label_set in LABEL_SETS.values():
        for s in label_set:
            entry = slicer.vtkSlicerTerminologyEntry()
            assert logic.DeserializeTerminologyEntry(s.terminology.to_slicer_string(), entry)
            assert entry.GetTypeObject().GetCodeValue() == s.terminology.type.value
            assert entry.GetTypeObject().GetCodingSchemeDesignator() == "SCT"
            assert entry.GetCategoryObject().GetCodeMeaning() == "Anatomical Structure"
            modifier = entry.GetTypeModifierObject().GetCodeValue() or None
            expected = s.terminology.type_modifier.value if s.terminology.type_modifier else None
            assert modifier == expected
            # Serializing Slicer's object again gives back our exact string.
            assert logic.SerializeTerminologyEntry(entry) == s.terminology.to_slicer_string()


# -- one key, one display name, one TG-263 name per structure --------------------------------------
TG263_LISTED = {  # names as the AAPM TG-263 report lists them
    "brainstem": "Brainstem", "optic_chiasm": "OpticChiasm", "mandible": "Bone_Mandible",
    "optic_nerve_left": "OpticNrv_L", "optic_nerve_right": "OpticNrv_R", "parotid_left": "Parotid_L",
    "parotid_right": "Parotid_R", "submandibular_left": "Glnd_Submand_L", "submandibular_right": "Glnd_Submand_R",
    "spinal_cord": "SpinalCord", "esophagus": "Esophagus", "larynx": "Larynx",
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_structure_has_one_tg263_name(name: str):
    label_set = get_label_set(name)
    names = [s.tg263 for s in label_set]
    assert len(set(names)) == len(names), "one TG-263 name per structure"
    for s in label_set:
        if s.key in TG263_LISTED:
            assert s.tg263 == TG263_LISTED[s.key]
        # The standard's rules for names it does not list: at most 16 characters, no spaces, side last.
        assert len(s.tg263) <= 16 and " " not in s.tg263
        assert s.tg263.endswith({"right": "_R", "left": "_L", "": ""}[s.side]) and (s.side or s.tg263[-2:] not in
                                                                                   ("_R", "_L"))


def test_recti_tg263_names_follow_its_rules_and_are_marked_new():
    orbit = get_label_set("orbit")
    assert [s.tg263 for s in orbit][:5] == ["Musc_RectusSup_R", "Musc_RectusLat_R", "Musc_RectusMed_R",
                                            "Musc_RectusInf_R", "OpticNrv_R"]
    assert set(TG263_NEW_NAMES) == {s.base_key for s in orbit if s.tg263.startswith("Musc_")}
    assert set(TG263_NAMES) >= {s.base_key for ls in LABEL_SETS.values() for s in ls}


@pytest.mark.parametrize("spelling", ["parotid_left", "PAROTID_LEFT", "left parotid", "Left Parotid", "Parotid_L",
                                      "parotid_l", "PAROTID_L"])
def test_key_display_and_tg263_name_all_resolve_case_insensitively(spelling: str):
    assert get_label_set("openkbp").resolve([spelling]) == ("parotid_left",)


def test_resolve_keeps_order_drops_repeats_and_suggests_the_nearest_key():
    openkbp = get_label_set("openkbp")
    assert openkbp.resolve(["Bone_Mandible", "spinalcord", "mandible", " "]) == ("mandible", "spinal_cord")
    with pytest.raises(InputError, match=r"Did you mean 'parotid_left'"):
        openkbp.resolve(["brainstem", "parotd_left"])
    with pytest.raises(InputError, match=r"Did you mean 'submandibular_right'"):
        get_label_set("pddca").resolve(["Glnd_Submand_Rt"])
    assert get_label_set("orbit").suggest("xyzzy") == ()
