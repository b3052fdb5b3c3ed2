"""HeadSeg's own Slicer terminology: every structure of every label set, with its SNOMED CT codes.

Slicer's DICOM master list lacks the extraocular recti and the optic nerve, so segments that named it
could not be found in the terminology selector. Like TotalSegmentator and MONAIAuto3DSeg, HeadSeg ships a
terminology file of its own, in Slicer's format (``Resources/HeadSeg.term.json`` next to this module,
the schema of dcmqi's segment context files), and every segment's terminology entry names its context
(:data:`headseg.labels.HEADSEG_TERMINOLOGY_CONTEXT`). The file is generated from ``headseg.labels`` by
:func:`terminology_document` (a test keeps the two identical), and the modules load it when Slicer has
started (:func:`load_terminology`).

``slicer`` is imported inside the functions; the file itself is plain JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from headseg.labels import HEADSEG_TERMINOLOGY_CONTEXT, LABEL_SETS, Code, Structure

__all__ = ["TERMINOLOGY_FILE", "terminology_document", "terminology_json", "loaded_terminology_names",
           "load_terminology", "resolve_entry"]

#: The terminology file the modules load (installed with the package).
TERMINOLOGY_FILE = Path(__file__).resolve().parent / "Resources" / "HeadSeg.term.json"
_SCHEMA = "https://raw.githubusercontent.com/qiicr/dcmqi/master/doc/segment-context-schema.json#"


def _code(code: Code) -> Dict[str, Any]:
    entry: Dict[str, Any] = {"CodeMeaning": code.meaning, "CodingSchemeDesignator": code.scheme,
                             "CodeValue": code.value}
    if code.scheme == "SCT":
        entry["SNOMEDCTConceptID"] = code.value
    return entry


def _display(structure: Structure) -> Dict[str, Any]:
    """Name and colour Slicer gives a segment when the user picks this entry in the terminology selector."""
    return {"3dSlicerLabel": structure.name,
            "recommendedDisplayRGBValue": [int(round(255 * c)) for c in structure.color]}


def terminology_document() -> Dict[str, Any]:
    """The terminology file's content: one category per category code, one type per SNOMED CT type (with
    Right/Left modifiers for paired structures), in label-set order (orbit, pddca, openkbp).

    A structure found in several label sets (the optic nerves, brain stem, mandible, parotids) is listed
    once; its name and colour are those of the first label set that has it.
    """
    categories: Dict[tuple, Dict[str, Any]] = {}
    types: Dict[tuple, Dict[str, Any]] = {}
    for label_set in LABEL_SETS.values():
        for structure in label_set:
            terminology = structure.terminology
            category_key = (terminology.category.scheme, terminology.category.value)
            category = categories.setdefault(category_key, {**_code(terminology.category), "showAnatomy": False,
                                                            "Type": []})
            type_key = category_key + (terminology.type.scheme, terminology.type.value)
            if type_key not in types:
                types[type_key] = _code(terminology.type)
                category["Type"].append(types[type_key])
            type_entry = types[type_key]
            modifier = terminology.type_modifier
            if modifier is None:
                if "3dSlicerLabel" not in type_entry:
                    type_entry.update(_display(structure))
                continue
            modifiers: List[Dict[str, Any]] = type_entry.setdefault("Modifier", [])
            if not any(m["CodeValue"] == modifier.value and m["CodingSchemeDesignator"] == modifier.scheme
                       for m in modifiers):
                modifiers.append({**_code(modifier), **_display(structure)})
    return {
        "SegmentationCategoryTypeContextName": HEADSEG_TERMINOLOGY_CONTEXT,
        "@schema": _SCHEMA,
        "SegmentationCodes": {"Category": list(categories.values())},
    }


def terminology_json() -> str:
    """The file's exact text (what is shipped; ``python -m headseg.slicer.terminology`` rewrites it)."""
    return json.dumps(terminology_document(), indent=2, ensure_ascii=False) + "\n"


def _terminologies_logic(logic=None):
    if logic is not None:
        return logic
    import slicer

    return slicer.modules.terminologies.logic()


def loaded_terminology_names(logic=None) -> List[str]:
    """Context names of the terminologies Slicer has loaded.

    ``GetLoadedTerminologyNames(vtkStringArray)`` exists in Slicer 5.6, 5.8 and 5.10;
    ``IsTerminologyContextLoaded`` only from 5.10 (Testing/slicer/slicer_api.json)."""
    import vtk

    names = vtk.vtkStringArray()
    _terminologies_logic(logic).GetLoadedTerminologyNames(names)
    return [names.GetValue(n) for n in range(names.GetNumberOfValues())]


def load_terminology(logic=None, path: Optional[Path] = None) -> str:
    """Load HeadSeg's terminology into Slicer's terminology logic (once); returns its context name.

    Called by both modules when Slicer has started (``startupCompleted()``, as TotalSegmentator does) and
    again when their panel is first shown, for a module loaded after start-up. ``logic`` defaults to
    ``slicer.modules.terminologies.logic()``.
    """
    logic = _terminologies_logic(logic)
    if HEADSEG_TERMINOLOGY_CONTEXT in loaded_terminology_names(logic):
        return HEADSEG_TERMINOLOGY_CONTEXT
    path = Path(path) if path is not None else TERMINOLOGY_FILE
    name = logic.LoadTerminologyFromFile(str(path))
    if name != HEADSEG_TERMINOLOGY_CONTEXT:
        raise RuntimeError(f"Slicer could not load HeadSeg's terminology file {path} (got context {name!r}); "
                           "reinstall the HeadSeg extension.")
    return name


def resolve_entry(terminology_string: str, logic=None):
    """The entry of a serialized terminology (a segment's) as found in the loaded terminology it names:
    the context must be loaded and hold the category, the type and the type modifier. Returns the filled
    ``vtkSlicerTerminologyEntry`` (with the file's 3D Slicer label and colour) or None when any part is
    missing."""
    import slicer

    logic = _terminologies_logic(logic)
    entry = slicer.vtkSlicerTerminologyEntry()
    # called on the instance: DeserializeTerminologyEntry is static only from Slicer 5.10
    if not logic.DeserializeTerminologyEntry(terminology_string, entry):
        return None
    context = entry.GetTerminologyContextName() or ""
    if context not in loaded_terminology_names(logic):
        return None

    def same(a, b) -> bool:
        return (a.GetCodingSchemeDesignator(), a.GetCodeValue()) == (b.GetCodingSchemeDesignator(), b.GetCodeValue())

    category = slicer.vtkSlicerTerminologyCategory()
    for n in range(logic.GetNumberOfCategoriesInTerminology(context)):
        if logic.GetNthCategoryInTerminology(context, n, category) and same(category, entry.GetCategoryObject()):
            break
    else:
        return None
    type_ = slicer.vtkSlicerTerminologyType()
    for n in range(logic.GetNumberOfTypesInTerminologyCategory(context, category)):
        if logic.GetNthTypeInTerminologyCategory(context, category, n, type_) and same(type_, entry.GetTypeObject()):
            break
    else:
        return None
    wanted_modifier = entry.GetTypeModifierObject()
    if bool(wanted_modifier.GetCodeValue()) != bool(type_.GetHasModifiers()):
        return None  # a paired structure named without its side, or a side given to an unpaired one
    if wanted_modifier.GetCodeValue():
        modifier = slicer.vtkSlicerTerminologyType()
        for n in range(logic.GetNumberOfTypeModifiersInTerminologyType(context, category, type_)):
            if logic.GetNthTypeModifierInTerminologyType(context, category, type_, n, modifier) \
                    and same(modifier, wanted_modifier):
                break
        else:
            return None
        entry.GetTypeModifierObject().Copy(modifier)
    entry.GetCategoryObject().Copy(category)
    entry.GetTypeObject().Copy(type_)
    return entry


if __name__ == "__main__":  # regenerate the shipped file after changing headseg.labels
    TERMINOLOGY_FILE.parent.mkdir(parents=True, exist_ok=True)
    TERMINOLOGY_FILE.write_text(terminology_json(), encoding="utf-8")
    print(f"wrote {TERMINOLOGY_FILE}")
