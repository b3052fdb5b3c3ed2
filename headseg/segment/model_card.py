"""The model card: what a package's ``model.json`` says about its model, read and checked once.

A card is a JSON object (``format_version`` 1)::

    format_version       1
    name, description    the model's name and what it is
    task                 "orbit" (one orbit per crop, the SV-net paper) or "han" (the whole head and neck,
                         the AnatomyNet paper)
    architecture         a name of ``headseg.models`` and its ``architecture_params``; ``in_channels`` (1)
    label_set, classes   the label set the result is written in; the network's classes, background first
    side_split           han, optional: paired organs predicted as one class (``headseg.segment.sides``)
    output_activation    "softmax" (default), "sigmoid" or null (the network returns probabilities)
    input                spacing_mm (i, j, k), orientation, normalization; orbit: window_kji, mirror_left
    inference            orbit: step_k, blend, batch_size; han: max_voxels, patch_kji (and batch_size)
    postprocess          fill_holes, largest_component
    weights              file, sha256, bytes (written by ``headseg.segment.packages.write_package``)

and whatever documents the model (synthetic, default, license, intended_use, training, metrics, ...).

:class:`ModelCard` is that object parsed: typed sections (:class:`InputGrid`, :class:`InferenceOptions`,
:class:`PostprocessOptions`, :class:`WeightsRef`) with the defaults of every optional entry written here
once, and the task's differences as properties (:attr:`ModelCard.is_orbit`, :attr:`ModelCard.window_kji`,
:attr:`ModelCard.output_classes`, :meth:`ModelCard.structure_keys`). It keeps the JSON object it was read
from, unchanged, so :meth:`ModelCard.to_dict` gives back exactly what was read (a card written again is
byte-identical).
"""

from __future__ import annotations

import json
import math
from dataclasses import InitVar, dataclass, field
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from headseg.errors import ModelPackageError
from headseg.segment.sides import parse_side_split, split_output_classes

__all__ = ["ModelCard", "InputGrid", "InferenceOptions", "PostprocessOptions", "WeightsRef", "validate_card",
           "new_inference_section", "default_step_k", "is_orbit_task", "FORMAT_VERSION", "WEIGHTS_FILE", "TASKS", "REQUIRED_KEYS",
           "MAX_ARCHITECTURE_INT", "DEFAULT_ACTIVATION", "DEFAULT_BLEND", "DEFAULT_BATCH_SIZE", "DEFAULT_MAX_VOXELS",
           "DEFAULT_PATCH_KJI"]

FORMAT_VERSION = 1
WEIGHTS_FILE = "model.pt"
TASKS = ("orbit", "han")

# Keys every card must have; nested requirements are checked in ``validate_card``.
REQUIRED_KEYS = ("format_version", "name", "task", "architecture", "label_set", "classes", "input", "weights")

#: The largest whole number a card's architecture may give (channels, widths, blocks): far above any model
#: HeadSeg builds, far below one that would ask for terabytes.
MAX_ARCHITECTURE_INT = 4096

# What a card that leaves an entry out gets (and what a new card is written with).
DEFAULT_ACTIVATION = "softmax"
DEFAULT_BLEND = "gaussian"  # the orbit slab's blending along k (headseg.segment.windows)
DEFAULT_BATCH_SIZE = 2  # windows per forward pass
DEFAULT_MAX_VOXELS = 160 ** 3  # han: the largest volume predicted in one pass; larger ones go in patches
DEFAULT_PATCH_KJI = (96, 160, 160)  # han: the patches of a volume above max_voxels


def is_orbit_task(task: str) -> bool:
    """Whether ``task`` names the orbit task (per-orbit crops with a slab window) rather than the whole
    head and neck: the one place the task's name decides anything (:attr:`ModelCard.is_orbit`)."""
    return task == "orbit"


def default_step_k(window_k: int) -> int:
    """The orbit slab's step along k when the card gives none: half the window (50 % overlap)."""
    return max(1, int(window_k) // 2)


def new_inference_section(window_kji: Optional[Sequence[int]] = None, max_voxels: Optional[int] = None,
                          patch_kji: Optional[Sequence[int]] = None) -> Dict[str, Any]:
    """The ``inference`` object a new card is written with: the slab window's defaults for a model with a
    ``window_kji`` (orbit), else the whole-volume limit and patch size (``None``: the defaults)."""
    if window_kji is not None:
        return {"step_k": default_step_k(window_kji[0]), "blend": DEFAULT_BLEND, "batch_size": DEFAULT_BATCH_SIZE}
    return {"max_voxels": int(max_voxels or DEFAULT_MAX_VOXELS), "patch_kji": list(patch_kji or DEFAULT_PATCH_KJI)}


# -- the sections ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InputGrid:
    """What the network sees: the grid spacing (i, j, k mm), the intensity normalisation
    (``headseg.segment.preprocessing.normalize``) and, for orbit models, the crop window (k, j, i voxels)
    and whether left orbits are mirrored into right ones."""

    spacing_mm: Tuple[float, float, float]
    normalization: Mapping[str, Any]
    orientation: str = "LPS"
    window_kji: Optional[Tuple[int, int, int]] = None
    mirror_left: bool = True

    @classmethod
    def parse(cls, section: Mapping[str, Any]) -> InputGrid:
        window = section.get("window_kji")
        i, j, k = (float(s) for s in section["spacing_mm"])
        return cls((i, j, k), MappingProxyType(dict(section["normalization"])), str(section.get("orientation", "LPS")),
                   None if window is None else _whole_triple(window), bool(section.get("mirror_left", True)))


@dataclass(frozen=True)
class InferenceOptions:
    """How the network is run over an image (``headseg.segment.windows.predict_probabilities``).

    ``step_k``, ``blend``: the orbit slab window's step along k and its blending (``step_k`` is None for
    a model without a window); ``max_voxels``, ``patch_kji``: the han whole-volume limit and the patches
    above it; ``batch_size``: windows per forward pass."""

    step_k: Optional[int] = None
    blend: str = DEFAULT_BLEND
    batch_size: int = DEFAULT_BATCH_SIZE
    max_voxels: int = DEFAULT_MAX_VOXELS
    patch_kji: Tuple[int, int, int] = DEFAULT_PATCH_KJI

    @classmethod
    def parse(cls, section: Mapping[str, Any], window_kji: Optional[Sequence[int]]) -> InferenceOptions:
        step = section.get("step_k")
        if step is None and window_kji is not None:
            step = default_step_k(window_kji[0])
        return cls(None if step is None else int(step), section.get("blend", DEFAULT_BLEND),
                   int(section.get("batch_size", DEFAULT_BATCH_SIZE)), int(section.get("max_voxels", DEFAULT_MAX_VOXELS)),
                   _whole_triple(section.get("patch_kji", DEFAULT_PATCH_KJI)))


@dataclass(frozen=True)
class PostprocessOptions:
    """The clean-up of the label map on the input grid (``headseg.segment.postprocess.postprocess_labels``)."""

    fill_holes: bool = True
    largest_component: bool = True

    @classmethod
    def parse(cls, section: Mapping[str, Any]) -> PostprocessOptions:
        return cls(bool(section.get("fill_holes", True)), bool(section.get("largest_component", True)))

    def kwargs(self) -> Dict[str, bool]:
        """The keyword arguments of ``postprocess_labels``."""
        return {"fill_holes": self.fill_holes, "largest_component": self.largest_component}


@dataclass(frozen=True)
class WeightsRef:
    """The weights file of the package, its checksum and size (as ``write_package`` recorded them)."""

    file: str = WEIGHTS_FILE
    sha256: Optional[str] = None
    bytes: Optional[int] = None

    @classmethod
    def parse(cls, section: Mapping[str, Any]) -> WeightsRef:
        return cls(section.get("file", WEIGHTS_FILE), section.get("sha256"), section.get("bytes"))


# -- the card ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelCard:
    """A checked model card (see the module docstring): ``ModelCard(json_object)`` or :meth:`from_dict`.

    ``document`` is the JSON object as read (read-only); every other field is parsed from it when the card
    is made, so the two never disagree (``dataclasses.replace(card, document=...)`` parses again).
    Raises :class:`headseg.errors.ModelPackageError` naming the first problem of the object."""

    document: Mapping[str, Any] = field(repr=False)
    where: InitVar[str] = "model card"  # how errors name the card, e.g. "model card /path/model.json"
    name: str = field(init=False, compare=False)
    task: str = field(init=False, compare=False)
    architecture: str = field(init=False, compare=False)
    in_channels: int = field(init=False, compare=False, repr=False)
    label_set: str = field(init=False, compare=False, repr=False)  # the label set's name (headseg.labels)
    classes: Tuple[str, ...] = field(init=False, compare=False, repr=False)  # the network's classes
    side_split: Mapping[str, Mapping[str, str]] = field(init=False, compare=False, repr=False)
    output_classes: Tuple[str, ...] = field(init=False, compare=False, repr=False)  # after the side split
    output_activation: Optional[str] = field(init=False, compare=False, repr=False)
    input: InputGrid = field(init=False, compare=False, repr=False)
    inference: InferenceOptions = field(init=False, compare=False, repr=False)
    postprocess: PostprocessOptions = field(init=False, compare=False, repr=False)
    weights: WeightsRef = field(init=False, compare=False, repr=False)

    def __post_init__(self, where: str) -> None:
        document = _thaw(self.document)
        if not isinstance(document, dict):
            raise ModelPackageError(f"The {where} is not a JSON object.")
        validate_card(document, where)
        try:
            parsed = _parse(document)
        except (TypeError, ValueError) as exc:  # e.g. a step_k or in_channels that is not a number
            raise ModelPackageError(f"The {where} has an invalid value: {exc}. Fix the card or re-export the model "
                                    "with headseg-train.") from None
        for key, value in parsed.items():
            object.__setattr__(self, key, value)

    @classmethod
    def from_dict(cls, document: Mapping[str, Any], where: str = "model card") -> ModelCard:
        """The card of a JSON object (``where`` names it in error messages)."""
        return cls(document, where)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON object of the card, a fresh copy (``json.dumps(card.to_dict(), indent=2)`` is model.json)."""
        return _thaw(self.document)

    # -- the task's differences ------------------------------------------------------------------------
    @property
    def is_orbit(self) -> bool:
        """One orbit per crop (left orbits mirrored), predicted with a slab window sliding along k; else
        (han) the whole volume, or patches of it, on the model's LPS grid."""
        return is_orbit_task(self.task)

    @property
    def window_kji(self) -> Optional[Tuple[int, int, int]]:
        """The orbit model's window (slices, rows, columns): the crop is the in-plane window, the slab
        slides along k; None for whole-volume models."""
        return self.input.window_kji if self.is_orbit else None

    def structure_keys(self) -> List[str]:
        """The label-set keys a model of this card segments: every structure of both orbits for an orbit
        model (the crop's side names them), the output classes for a han model."""
        if self.is_orbit:
            from headseg.labels import get_label_set

            return [s.key for s in get_label_set(self.label_set).structures]
        return list(self.output_classes[1:])

    # -- what documents the model ----------------------------------------------------------------------
    @property
    def architecture_params(self) -> Dict[str, Any]:
        """The keyword arguments of ``headseg.models.build_model`` (a copy)."""
        return _thaw(self.document.get("architecture_params") or {})

    @property
    def description(self) -> str:
        return str(self.document.get("description", ""))

    @property
    def default(self) -> bool:
        """Marked as its task's default model (``headseg.segment.packages.default_package``)."""
        return bool(self.document.get("default"))

    @property
    def synthetic(self) -> bool:
        """Trained on synthetic data: a demonstration, not for clinical use."""
        return bool(self.document.get("synthetic"))

    @property
    def license(self) -> str:
        return str(self.document.get("license", "unknown"))

    @property
    def metrics(self) -> Dict[str, Any]:
        """What measured the model (``summary``, ``per_structure``, ...; a copy, empty when none)."""
        return _thaw(self.document.get("metrics") or {})

    @property
    def training(self) -> Dict[str, Any]:
        """How the model was trained (recipe, data, ``split``, ...; a copy, empty when none)."""
        return _thaw(self.document.get("training") or {})


def _parse(document: Dict[str, Any]) -> Dict[str, Any]:
    """The fields of :class:`ModelCard` from a checked JSON object (``validate_card``)."""
    inp = InputGrid.parse(document["input"])
    classes = tuple(str(c) for c in document["classes"])
    split = parse_side_split(document.get("side_split"))
    return {
        "document": _freeze(document), "name": str(document["name"]), "task": str(document["task"]),
        "architecture": str(document["architecture"]), "in_channels": int(document.get("in_channels", 1)),
        "label_set": str(document["label_set"]), "classes": classes,
        "side_split": MappingProxyType({k: MappingProxyType(v) for k, v in split.items()}),
        "output_classes": tuple(split_output_classes(classes, split)),
        "output_activation": document.get("output_activation", DEFAULT_ACTIVATION), "input": inp,
        "inference": InferenceOptions.parse(document.get("inference") or {}, inp.window_kji),
        "postprocess": PostprocessOptions.parse(document.get("postprocess") or {}),
        "weights": WeightsRef.parse(document["weights"]),
    }


def _whole_triple(values: Sequence[Any]) -> Tuple[int, int, int]:
    k, j, i = (int(v) for v in values)
    return k, j, i


def _freeze(value: Any) -> Any:
    """A read-only copy of a JSON value (objects as mapping proxies, arrays as tuples)."""
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """A plain copy of a JSON value (dicts and lists), the inverse of :func:`_freeze`."""
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(item) for item in value]
    return value


# -- checks ------------------------------------------------------------------------------------------------
def validate_card(card: Dict[str, Any], where: str = "model card") -> None:
    """Raise ModelPackageError naming the first problem of a card's JSON object (missing key, bad value)."""
    missing = [k for k in REQUIRED_KEYS if k not in card]
    if missing:
        raise ModelPackageError(f"The {where} lacks {', '.join(missing)}. Re-export the model with headseg-train.")
    if card["format_version"] != FORMAT_VERSION:
        raise ModelPackageError(
            f"The {where} has format_version {card['format_version']}; this headseg reads version "
            f"{FORMAT_VERSION}. Update headseg or re-export the model."
        )
    if card["task"] not in TASKS:
        raise ModelPackageError(f"The {where} names task {card['task']!r}; expected one of {TASKS}.")
    _check_card_types(card, where)
    inp = card["input"]
    if is_orbit_task(card["task"]) and len(inp.get("window_kji") or ()) != 3:
        raise ModelPackageError(f"The {where} of an orbit model needs input.window_kji (slices, rows, columns).")
    if not card["classes"] or card["classes"][0] != "background":
        raise ModelPackageError(f"The {where} must list the output classes, starting with 'background'.")
    from headseg.labels import get_label_set  # local: labels is light, but keep import order simple

    try:
        label_set = get_label_set(card["label_set"])
    except (KeyError, ValueError) as exc:
        raise ModelPackageError(f"The {where} names an unknown label set {card['label_set']!r}: {exc}") from exc
    if is_orbit_task(card["task"]):
        from headseg.labels import ORBIT_MODEL_CLASSES

        unknown = [c for c in card["classes"][1:] if c not in ORBIT_MODEL_CLASSES]
    else:
        known = set(label_set.keys())
        try:
            outputs = split_output_classes(card["classes"], parse_side_split(card.get("side_split")))
        except (ValueError, AttributeError) as exc:
            raise ModelPackageError(f"The {where} has an invalid side_split: {exc}") from exc
        unknown = [c for c in outputs[1:] if c not in known]
    if unknown:
        raise ModelPackageError(
            f"The {where} lists classes {unknown} that the label set '{card['label_set']}' does not have."
        )


def _numbers(value: Any, count: int, whole: bool = False) -> bool:
    """Whether ``value`` is a list of ``count`` finite positive numbers (whole numbers with ``whole``)."""
    kinds = (int,) if whole else (int, float)
    return (isinstance(value, list) and len(value) == count and
            all(isinstance(v, kinds) and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in value))


def _check_card_types(card: Dict[str, Any], where: str) -> None:
    """Refuse a card whose fields have the wrong type or impossible values, naming the field, before any of
    them is used (a mistyped card must not end in a traceback or a model of terabytes)."""
    def refuse(field_name: str, expected: str) -> None:
        raise ModelPackageError(f"The {where} has an invalid {field_name} ({json.dumps(_get(card, field_name))}): "
                                f"expected {expected}. Fix the card or re-export the model with headseg-train.")

    if not isinstance(card["input"], dict):
        refuse("input", "an object with spacing_mm and normalization")
    for key in ("spacing_mm", "normalization"):
        if key not in card["input"]:
            raise ModelPackageError(f"The {where} lacks input.{key}.")
    if not _numbers(card["input"]["spacing_mm"], 3):
        refuse("input.spacing_mm", "three positive numbers (mm)")
    if not isinstance(card["input"]["normalization"], dict):
        refuse("input.normalization", "an object such as {\"type\": \"window\", \"lower\": -300, \"upper\": 400}")
    if "window_kji" in card["input"] and not _numbers(card["input"]["window_kji"], 3, whole=True):
        refuse("input.window_kji", "three positive whole numbers (slices, rows, columns)")
    if not isinstance(card["weights"], dict) or not isinstance(card["weights"].get("file", WEIGHTS_FILE), str):
        refuse("weights", "an object naming the weights file, e.g. {\"file\": \"model.pt\", \"sha256\": \"...\"}")
    inference = card.get("inference", {})
    if not isinstance(inference, dict):
        refuse("inference", "an object")
    if "patch_kji" in inference and not _numbers(inference["patch_kji"], 3, whole=True):
        refuse("inference.patch_kji", "three positive whole numbers")
    for key in ("max_voxels", "batch_size"):
        if key in inference and not _numbers([inference[key]], 1, whole=True):
            refuse(f"inference.{key}", "a positive whole number")
    params = card.get("architecture_params", {})
    if not isinstance(params, dict):
        refuse("architecture_params", "an object")
    for key, value in params.items():
        values = value if isinstance(value, list) else [value]
        if any(isinstance(v, int) and not isinstance(v, bool) and not 0 < v <= MAX_ARCHITECTURE_INT for v in values):
            refuse(f"architecture_params.{key}", f"whole numbers from 1 to {MAX_ARCHITECTURE_INT}")


def _get(card: Dict[str, Any], dotted: str) -> Any:
    value: Any = card
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
