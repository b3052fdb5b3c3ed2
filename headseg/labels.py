"""Label sets: which integer in a label map means which structure, its colour and its standard code.

Three sets exist (values exactly as in docs/ARCHITECTURE.md):

* ``orbit``  -- SV-net (the SV-net paper): four recti and the optic nerve, per side (1-5 right, 6-10 left).
* ``pddca``  -- AnatomyNet (the AnatomyNet paper): nine head-and-neck organs at risk of the PDDCA data.
* ``openkbp`` -- the seven organs at risk as labelled in the OpenKBP data.

Every structure carries a DICOM/SNOMED CT terminology (category, type, laterality modifier) so that
Slicer shows proper names and other tools can match segments by meaning rather than by spelling. The
entries name HeadSeg's own terminology context (:data:`HEADSEG_TERMINOLOGY_CONTEXT`): the recti and the
optic nerve are not in Slicer's DICOM master list, so the Slicer modules load a terminology file of their
own that holds every structure below (``headseg/slicer/Resources/HeadSeg.term.json``, generated from
these label sets), as TotalSegmentator and MONAIAuto3DSeg do. The codes are matched by value, not by
context, so files written with Slicer's context names still match.

Code sources (coding scheme "SCT" = SNOMED CT, as DICOM PS3.16 uses it):

* Anatomical Structure 123037004, Brain stem 119238007, Optic chiasm 244453006, Mandible 91609006,
  Parotid gland 45289007, Submandibular gland 54019009, Spinal cord 2748008, Esophagus 32849002,
  Larynx 4596009 and the laterality modifiers Right 24028007 / Left 7771000 (DICOM CID 244) are copied
  from Slicer's ``SegmentationCategoryTypeModifier-DICOM-Master.term.json`` (and the anatomic context
  ``AnatomicRegionAndModifier-DICOM-Master.term.json``) in Slicer's own terminologies (Modules/Loadable/Terminologies/Resources in the Slicer source).
* The extraocular recti and the optic nerve are NOT in those files. Their SNOMED CT concept ids come from
  HL7 FHIR SNOMED body-site value sets: Superior rectus muscle 5815008 (FHIR R4 "approach-site-codes"),
  Lateral rectus muscle 31836009, Medial rectus muscle 24937009, Inferior rectus muscle 47869003 (a FHIR
  body-site value set over http://snomed.info/sct) and Optic nerve structure 18234004 (FHIR value sets
  of two independent implementation guides). Every id used here passes the SNOMED CT Verhoeff check
  digit (tested), which catches transcription errors but not a wrong concept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Iterator, Mapping, NamedTuple, Optional, Sequence, Tuple

from headseg.errors import InputError

__all__ = [
    "Code",
    "Terminology",
    "Structure",
    "LabelSet",
    "LABEL_SETS",
    "get_label_set",
    "TG263_NAMES",
    "TG263_NEW_NAMES",
    "ORBIT_MODEL_CLASSES",
    "orbit_combined_label",
    "orbit_model_to_combined_lut",
    "HEADSEG_TERMINOLOGY_CONTEXT",
    "SLICER_TERMINOLOGY_CONTEXT",
    "SLICER_ANATOMIC_CONTEXT",
]

#: The context (``SegmentationCategoryTypeContextName``) of HeadSeg's own terminology file, named by
#: every structure's terminology entry.
HEADSEG_TERMINOLOGY_CONTEXT = "Segmentation category and type - HeadSeg"
# Context names exactly as in Slicer's own terminology files (its DICOM master list).
SLICER_TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
SLICER_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
_TAG_PREFIX = "TerminologyEntry:"


class Code(NamedTuple):
    """A coded concept (coding scheme designator, code value, code meaning): ("SCT", "7771000", "Left")."""

    scheme: str
    value: str
    meaning: str

    def to_slicer(self) -> str:
        """Slicer's ``scheme^value^meaning`` form."""
        return f"{self.scheme}^{self.value}^{self.meaning}"

    def same_concept(self, other: Optional[Code]) -> bool:
        """Codes mean the same when scheme and value agree; meanings are free text and may differ."""
        return other is not None and (self.scheme, self.value) == (other.scheme, other.value)


def _sct(value: str, meaning: str) -> Code:
    return Code("SCT", value, meaning)


ANATOMICAL_STRUCTURE = _sct("123037004", "Anatomical Structure")
RIGHT = _sct("24028007", "Right")
LEFT = _sct("7771000", "Left")
_SIDE_CODES = {"right": RIGHT, "left": LEFT}


def _parse_code(text: str) -> Optional[Code]:
    parts = text.split("^")
    if len(parts) != 3:
        raise InputError(f"Malformed terminology code {text!r}: expected 'scheme^value^meaning'.")
    return Code(*parts) if any(parts) else None


@dataclass(frozen=True)
class Terminology:
    """A DICOM segmentation terminology entry as Slicer stores it on a segment."""

    category: Code
    type: Code
    type_modifier: Optional[Code] = None
    context_name: str = HEADSEG_TERMINOLOGY_CONTEXT
    anatomic_context_name: str = SLICER_ANATOMIC_CONTEXT

    def to_slicer_string(self) -> str:
        """The serialized entry accepted by ``vtkSegment.SetTerminology`` and
        ``vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry``:
        ``context~SCT^code^meaning (category)~type~modifier~anatomic context~region~region modifier``.

        It has no ``TerminologyEntry:`` prefix: Slicer adds that itself when it writes the segment's
        tags (see :meth:`to_tag_string`), and passing the prefix to ``SetTerminology`` would double it.
        """
        modifier = self.type_modifier.to_slicer() if self.type_modifier else "^^"
        fields = [
            self.context_name,
            self.category.to_slicer(),
            self.type.to_slicer(),
            modifier,
            self.anatomic_context_name,
            "^^",  # anatomic region: none, the type already names the structure
            "^^",  # anatomic region modifier
        ]
        return "~".join(fields)

    def to_tag_string(self) -> str:
        """The ``SegmentN_Tags`` entry of a .seg.nrrd header: ``TerminologyEntry:<entry>|``."""
        return f"{_TAG_PREFIX}{self.to_slicer_string()}|"

    @classmethod
    def from_slicer_string(cls, text: str) -> Terminology:
        """Parse a serialized entry, with or without the ``TerminologyEntry:`` prefix and ``|`` end."""
        text = text.strip()
        if text.startswith(_TAG_PREFIX):
            text = text[len(_TAG_PREFIX):]
        text = text.rstrip("|")
        fields = text.split("~")
        if len(fields) != 7:
            raise InputError(
                f"Malformed Slicer terminology entry {text!r}: expected 7 '~'-separated fields, "
                f"found {len(fields)}."
            )
        category, type_, modifier = (_parse_code(f) for f in fields[1:4])
        if category is None or type_ is None:
            raise InputError(f"Slicer terminology entry {text!r} has no category or type code.")
        return cls(category, type_, modifier, fields[0], fields[4])

    def same_concept(self, other: Terminology) -> bool:
        """True when category, type and laterality codes agree (meanings and context names may differ)."""
        if not (self.category.same_concept(other.category) and self.type.same_concept(other.type)):
            return False
        if self.type_modifier is None or other.type_modifier is None:
            return self.type_modifier is None and other.type_modifier is None
        return self.type_modifier.same_concept(other.type_modifier)


@dataclass(frozen=True)
class Structure:
    """One labelled structure of a label set."""

    key: str  # stable identifier, e.g. "superior_rectus_right"; also the segment ID in .seg.nrrd files
    name: str  # shown to users, e.g. "right superior rectus"
    label: int  # value in the label map
    color: Tuple[float, float, float]  # r, g, b in 0..1
    side: str  # "right", "left" (patient's sides) or "" for midline structures
    base_key: str  # structure without side, e.g. "superior_rectus"
    terminology: Terminology
    tg263: str = ""  # the AAPM TG-263 name radiotherapy systems expect, e.g. "Parotid_R" (see TG263_NAMES)


@dataclass(frozen=True, eq=False)
class LabelSet:
    """An ordered set of structures with lookups by label value, key and (forgiving) name."""

    name: str
    structures: Tuple[Structure, ...]
    groups: Mapping[str, Tuple[str, ...]] = field(default_factory=dict)  # derived totals: name -> keys
    _by_label: Dict[int, Structure] = field(init=False, repr=False, compare=False)
    _by_key: Dict[str, Structure] = field(init=False, repr=False, compare=False)
    _by_alias: Dict[str, Structure] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_label: Dict[int, Structure] = {}
        by_key: Dict[str, Structure] = {}
        by_alias: Dict[str, Structure] = {}
        for s in self.structures:
            if s.label <= 0 or s.label in by_label:
                raise ValueError(f"Label set {self.name}: label value {s.label} is not positive or repeated.")
            if s.key in by_key:
                raise ValueError(f"Label set {self.name}: key {s.key!r} is repeated.")
            by_label[s.label] = s
            by_key[s.key] = s
            for alias in _aliases(s):
                other = by_alias.setdefault(alias, s)
                if other is not s:
                    raise ValueError(f"Label set {self.name}: alias {alias!r} fits {other.key} and {s.key}.")
        for group, keys in self.groups.items():
            missing = [k for k in keys if k not in by_key]
            if missing:
                raise ValueError(f"Label set {self.name}: group {group!r} names unknown keys {missing}.")
        object.__setattr__(self, "_by_label", by_label)
        object.__setattr__(self, "_by_key", by_key)
        object.__setattr__(self, "_by_alias", by_alias)

    # -- container protocol ----------------------------------------------------------------------
    def __iter__(self) -> Iterator[Structure]:
        return iter(self.structures)

    def __len__(self) -> int:
        return len(self.structures)

    def __contains__(self, key: object) -> bool:
        return key in self._by_key

    # -- lookups ---------------------------------------------------------------------------------
    def keys(self) -> Tuple[str, ...]:
        return tuple(s.key for s in self.structures)

    @property
    def labels(self) -> Tuple[int, ...]:
        return tuple(s.label for s in self.structures)

    @property
    def max_label(self) -> int:
        return max(self.labels)

    def by_label(self, label: int) -> Structure:
        try:
            return self._by_label[int(label)]
        except KeyError:
            raise InputError(
                f"Label value {label} is not part of the {self.name!r} label set "
                f"(valid: {list(self.labels)})."
            ) from None

    def by_key(self, key: str) -> Structure:
        try:
            return self._by_key[key]
        except KeyError:
            raise InputError(
                f"Unknown structure key {key!r} for the {self.name!r} label set (valid: {list(self.keys())})."
            ) from None

    def find(self, name: str) -> Optional[Structure]:
        """Like :meth:`by_name` but returns None for an unknown name."""
        return self._by_alias.get(_normalize(name))

    def by_name(self, name: str) -> Structure:
        """Find a structure by key, display name, TG-263 name or a common spelling (case and separators
        ignored): "superior_rectus_right", "right superior rectus", "Parotid_L", "Glnd_Submand_R",
        "LeftParotid", "OpticNerve_R", "BrainStem"... An unknown name gets the nearest ones ("did you mean")."""
        found = self.find(name)
        if found is None:
            close = self.suggest(name)
            hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise InputError(
                f"Structure {name!r} is not in the {self.name!r} label set.{hint} "
                f"Known (key, or TG-263 name): {', '.join(f'{s.key} ({s.tg263})' for s in self.structures)}."
            )
        return found

    def suggest(self, name: str, n: int = 2) -> Tuple[str, ...]:
        """The keys nearest to a misspelt ``name`` (its key, display name or TG-263 name), best first."""
        import difflib

        spellings: Dict[str, str] = {}
        for s in self.structures:
            for spelling in (s.key, s.name, s.tg263):
                if spelling:
                    spellings.setdefault(_normalize(spelling), s.key)
        close = difflib.get_close_matches(_normalize(name), list(spellings), n=4, cutoff=0.6)
        return tuple(dict.fromkeys(spellings[c] for c in close))[:n]

    def resolve(self, names: Sequence[str]) -> Tuple[str, ...]:
        """The keys of ``names`` (keys, display names or TG-263 names, any case), in the given order; an
        unknown one raises with the nearest names, before any work is done."""
        return tuple(dict.fromkeys(self.by_name(n).key for n in names if n.strip()))

    def group_labels(self, group: str) -> Tuple[int, ...]:
        """Label values of a derived group such as "extraocular_muscles_right"."""
        if group not in self.groups:
            raise InputError(f"Unknown group {group!r} for the {self.name!r} label set: {list(self.groups)}.")
        return tuple(self._by_key[k].label for k in self.groups[group])


# -- forgiving name matching ---------------------------------------------------------------------
_SIDE_WORDS = {"right": ("right", "r", "rt"), "left": ("left", "l", "lt")}
# Other spellings of the side-less part, normalised (lower case, letters and digits only).
_BASE_SYNONYMS: Dict[str, Tuple[str, ...]] = {
    "superior_rectus": ("superiorrectusmuscle", "rectussuperior", "sr"),
    "lateral_rectus": ("lateralrectusmuscle", "rectuslateralis", "lr"),
    "medial_rectus": ("medialrectusmuscle", "rectusmedialis", "mr"),
    "inferior_rectus": ("inferiorrectusmuscle", "rectusinferior", "ir"),
    "optic_nerve": ("opticnerves", "opticnrv", "on"),
    "brainstem": ("brainstem", "brainstem"),
    "optic_chiasm": ("chiasm", "chiasma", "opticchiasma"),
    "mandible": ("mandibula", "mandibularbone", "jaw"),
    "parotid": ("parotidgland", "parotidglands"),
    "submandibular": ("submandibulargland", "submandibularglands", "submand", "smg"),
    "spinal_cord": ("spinalcord", "cord"),
    "esophagus": ("oesophagus", "esophagus"),
    "larynx": ("larynx",),
}


def _normalize(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _aliases(s: Structure) -> Iterator[str]:
    yield _normalize(s.key)
    yield _normalize(s.name)
    if s.tg263:
        yield _normalize(s.tg263)
    bases = (_normalize(s.base_key),) + _BASE_SYNONYMS.get(s.base_key, ())
    for base in dict.fromkeys(bases):
        if not s.side:
            yield base
            continue
        for word in _SIDE_WORDS[s.side]:
            yield word + base
            yield base + word


# -- construction helpers ------------------------------------------------------------------------
def _structure(
    base_key: str,
    display: str,
    label: int,
    rgb255: Sequence[float],
    type_code: Code,
    side: str = "",
) -> Structure:
    key = f"{base_key}_{side}" if side else base_key
    name = f"{side} {display}" if side else display
    terminology = Terminology(ANATOMICAL_STRUCTURE, type_code, _SIDE_CODES.get(side))
    color = tuple(round(c / 255.0, 4) for c in rgb255)
    tg263 = TG263_NAMES[base_key] + ({"right": "_R", "left": "_L"}[side] if side else "")
    return Structure(key, name, label, color, side, base_key, terminology, tg263)  # type: ignore[arg-type]


#: AAPM TG-263 (Standardizing Nomenclatures in Radiation Oncology, 2018) names per side-less key; the side
#: is appended as ``_R`` / ``_L``. The standard lists every organ at risk here. It has no extraocular
#: muscles, so their names are built by its rules for new names: at most 16 characters, the category
#: first (``Musc`` as in ``Musc_Constrict``), then the structure in camel case from general to specific
#: (``Rectus`` then ``Sup``/``Lat``/``Med``/``Inf``, its abbreviations), laterality last; they are marked
#: as HeadSeg's own in :data:`TG263_NEW_NAMES`.
TG263_NAMES: Dict[str, str] = {
    "brainstem": "Brainstem",
    "optic_chiasm": "OpticChiasm",
    "mandible": "Bone_Mandible",
    "optic_nerve": "OpticNrv",
    "parotid": "Parotid",
    "submandibular": "Glnd_Submand",
    "spinal_cord": "SpinalCord",
    "esophagus": "Esophagus",
    "larynx": "Larynx",
    "superior_rectus": "Musc_RectusSup",
    "lateral_rectus": "Musc_RectusLat",
    "medial_rectus": "Musc_RectusMed",
    "inferior_rectus": "Musc_RectusInf",
}
#: Side-less keys whose TG-263 name is built by the standard's rules, not listed in it.
TG263_NEW_NAMES = ("superior_rectus", "lateral_rectus", "medial_rectus", "inferior_rectus")


# SNOMED CT types (see the module docstring for the source of every code).
_SUPERIOR_RECTUS = _sct("5815008", "Superior rectus muscle")
_LATERAL_RECTUS = _sct("31836009", "Lateral rectus muscle")
_MEDIAL_RECTUS = _sct("24937009", "Medial rectus muscle")
_INFERIOR_RECTUS = _sct("47869003", "Inferior rectus muscle")
_OPTIC_NERVE = _sct("18234004", "Optic nerve")
_BRAIN_STEM = _sct("119238007", "Brain stem")
_OPTIC_CHIASM = _sct("244453006", "Optic chiasm")
_MANDIBLE = _sct("91609006", "Mandible")
_PAROTID = _sct("45289007", "Parotid gland")
_SUBMANDIBULAR = _sct("54019009", "Submandibular gland")
_SPINAL_CORD = _sct("2748008", "Spinal cord")
_ESOPHAGUS = _sct("32849002", "Esophagus")
_LARYNX = _sct("4596009", "Larynx")

# -- orbit (SV-net paper) --------------------------------------------------------------------
#: Model output channels 1..5 of the orbit networks (0 is background), in the order of the SV-net paper.
ORBIT_MODEL_CLASSES: Tuple[str, ...] = (
    "superior_rectus",
    "lateral_rectus",
    "medial_rectus",
    "inferior_rectus",
    "optic_nerve",
)
_ORBIT_DISPLAY = ("superior rectus", "lateral rectus", "medial rectus", "inferior rectus", "optic nerve")
_ORBIT_TYPES = (_SUPERIOR_RECTUS, _LATERAL_RECTUS, _MEDIAL_RECTUS, _INFERIOR_RECTUS, _OPTIC_NERVE)
# Colours of the annotation figures of the SV-net paper (green SR, blue LR, yellow MR, pink IR, white ON).
# The right side uses these; the left side uses the same hues about 25 % darker so that the two sides
# stay distinguishable when both orbits are shown in one view.
_ORBIT_RGB_RIGHT = ((40, 200, 40), (50, 110, 255), (255, 225, 30), (255, 130, 190), (255, 255, 255))
_ORBIT_RGB_LEFT = ((30, 150, 30), (35, 80, 190), (190, 170, 20), (190, 95, 140), (200, 200, 200))
_ORBIT_SIDES = ("right", "left")  # right 1-5, left 6-10


def orbit_combined_label(side: str, model_channel: int) -> int:
    """Value in the combined (both orbits) label map of a per-orbit model output value.

    ``model_channel`` is the model's class value: 0 background, 1..5 as in :data:`ORBIT_MODEL_CLASSES`
    (``ORBIT_MODEL_CLASSES[n]`` is channel ``n + 1``). Right orbit -> 1..5, left orbit -> 6..10.
    """
    if side not in _ORBIT_SIDES:
        raise InputError(f"Orbit side must be 'right' or 'left' (the patient's side), got {side!r}.")
    channel = int(model_channel)
    if not 0 <= channel <= len(ORBIT_MODEL_CLASSES):
        raise InputError(f"Orbit model class must be 0..{len(ORBIT_MODEL_CLASSES)}, got {model_channel}.")
    if channel == 0:
        return 0
    return channel + len(ORBIT_MODEL_CLASSES) * _ORBIT_SIDES.index(side)




def orbit_model_to_combined_lut(side: str):
    """Look-up table (numpy uint8 array of 6 values) so that ``lut[model_labels]`` gives combined labels."""
    import numpy as np

    return np.array([orbit_combined_label(side, c) for c in range(len(ORBIT_MODEL_CLASSES) + 1)], np.uint8)


def _orbit_set() -> LabelSet:
    structures = []
    for side_index, side in enumerate(_ORBIT_SIDES):
        palette = _ORBIT_RGB_RIGHT if side == "right" else _ORBIT_RGB_LEFT
        for n, base in enumerate(ORBIT_MODEL_CLASSES):
            label = n + 1 + len(ORBIT_MODEL_CLASSES) * side_index
            structures.append(_structure(base, _ORBIT_DISPLAY[n], label, palette[n], _ORBIT_TYPES[n], side))
    recti = ORBIT_MODEL_CLASSES[:4]
    groups = {f"extraocular_muscles_{side}": tuple(f"{b}_{side}" for b in recti) for side in _ORBIT_SIDES}
    return LabelSet("orbit", tuple(structures), groups)


# -- head and neck organs at risk (AnatomyNet paper) -----------------------------------------
# Colours: Slicer's GenericAnatomyColors where it has the structure (mandible, optic chiasm, spinal cord,
# larynx, esophagus); midbrain colour for the brain stem; salivary-gland green for the parotids and a
# bluer green for the submandibular glands; cranial-nerve yellow for the optic nerves. Left is darker.
_RGB = {
    "brainstem": (145, 92, 109),
    "optic_chiasm": (99, 106, 24),
    "mandible": (222, 198, 101),
    "optic_nerve_left": (205, 185, 50),
    "optic_nerve_right": (255, 234, 92),
    "parotid_left": (50, 125, 88),
    "parotid_right": (70, 163, 117),
    "submandibular_left": (40, 120, 140),
    "submandibular_right": (60, 160, 185),
    "spinal_cord": (244, 214, 49),
    "esophagus": (211, 171, 143),
    "larynx": (150, 208, 243),
}
_OAR_TYPES = {
    "brainstem": ("brainstem", _BRAIN_STEM),
    "optic_chiasm": ("optic chiasm", _OPTIC_CHIASM),
    "mandible": ("mandible", _MANDIBLE),
    "optic_nerve": ("optic nerve", _OPTIC_NERVE),
    "parotid": ("parotid", _PAROTID),
    "submandibular": ("submandibular gland", _SUBMANDIBULAR),
    "spinal_cord": ("spinal cord", _SPINAL_CORD),
    "esophagus": ("esophagus", _ESOPHAGUS),
    "larynx": ("larynx", _LARYNX),
}


def _oar_set(name: str, entries: Sequence[Tuple[int, str, str]]) -> LabelSet:
    structures = []
    for label, base, side in entries:
        display, code = _OAR_TYPES[base]
        key = f"{base}_{side}" if side else base
        structures.append(_structure(base, display, label, _RGB[key], code, side))
    return LabelSet(name, tuple(structures))


def _pddca_set() -> LabelSet:
    return _oar_set(
        "pddca",
        [
            (1, "brainstem", ""),
            (2, "optic_chiasm", ""),
            (3, "mandible", ""),
            (4, "optic_nerve", "left"),
            (5, "optic_nerve", "right"),
            (6, "parotid", "left"),
            (7, "parotid", "right"),
            (8, "submandibular", "left"),
            (9, "submandibular", "right"),
        ],
    )


def _openkbp_set() -> LabelSet:
    return _oar_set(
        "openkbp",
        [
            (1, "brainstem", ""),
            (2, "spinal_cord", ""),
            (3, "parotid", "right"),
            (4, "parotid", "left"),
            (5, "esophagus", ""),
            (6, "larynx", ""),
            (7, "mandible", ""),
        ],
    )


LABEL_SETS: Dict[str, LabelSet] = {s.name: s for s in (_orbit_set(), _pddca_set(), _openkbp_set())}


def get_label_set(name: str) -> LabelSet:
    """The label set called ``name`` ("orbit", "pddca" or "openkbp"; case-insensitive)."""
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in LABEL_SETS:
        raise InputError(f"Unknown label set {name!r}. Available label sets: {', '.join(LABEL_SETS)}.")
    return LABEL_SETS[key]
