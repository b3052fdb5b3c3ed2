"""Model packages: a folder with the weights and a model card, so a model never travels without the facts
needed to use it correctly (input spacing, orientation, intensity window, label set) and to trust it
(training data, metrics, licence, checksum).

A package folder holds::

    model.json   the model card (schema below, ``format_version`` 1)
    model.pt     a ``state_dict`` saved with ``torch.save``; loaded with ``weights_only=True``

Packages are searched, in order, in the folders of ``$HEADSEG_MODEL_PATH`` (``os.pathsep``-separated),
in ``~/.headseg/models`` and in the ``packaged_models`` folder shipped with ``headseg``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

from headseg.errors import ModelPackageError

CARD_FILE = "model.json"
WEIGHTS_FILE = "model.pt"
FORMAT_VERSION = 1
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "packaged_models"
USER_DIR = Path.home() / ".headseg" / "models"
TASKS = ("orbit", "han")

# Keys every card must have; nested requirements are checked in ``validate_card``.
REQUIRED_KEYS = ("format_version", "name", "task", "architecture", "label_set", "classes", "input", "weights")


def sha256_of(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def validate_card(card: Dict[str, Any], where: str = "model card") -> None:
    """Raise ModelPackageError naming the first problem of a card (missing key, bad value)."""
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
    if card["task"] == "orbit" and len(inp.get("window_kji") or ()) != 3:
        raise ModelPackageError(f"The {where} of an orbit model needs input.window_kji (slices, rows, columns).")
    if not card["classes"] or card["classes"][0] != "background":
        raise ModelPackageError(f"The {where} must list the output classes, starting with 'background'.")
    from headseg.labels import get_label_set  # local: labels is light, but keep import order simple

    try:
        label_set = get_label_set(card["label_set"])
    except (KeyError, ValueError) as exc:
        raise ModelPackageError(f"The {where} names an unknown label set {card['label_set']!r}: {exc}") from exc
    if card["task"] == "orbit":
        from headseg.labels import ORBIT_MODEL_CLASSES

        unknown = [c for c in card["classes"][1:] if c not in ORBIT_MODEL_CLASSES]
    else:
        from headseg.segment.sides import output_classes

        known = set(label_set.keys())
        try:
            outputs = output_classes(card)
        except ValueError as exc:
            raise ModelPackageError(f"The {where} has an invalid side_split: {exc}") from exc
        unknown = [c for c in outputs[1:] if c not in known]
    if unknown:
        raise ModelPackageError(
            f"The {where} lists classes {unknown} that the label set '{card['label_set']}' does not have."
        )


#: The largest whole number a card's architecture may give (channels, widths, blocks): far above any model
#: HeadSeg builds, far below one that would ask for terabytes.
MAX_ARCHITECTURE_INT = 4096


def _numbers(value: Any, count: int, whole: bool = False) -> bool:
    """Whether ``value`` is a list of ``count`` finite positive numbers (whole numbers with ``whole``)."""
    import math

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


@dataclass
class ModelPackage:
    """A model folder and its parsed card. Weights are only read by :meth:`load_model`."""

    path: Path
    card: Dict[str, Any] = field(repr=False)

    @property
    def name(self) -> str:
        return str(self.card["name"])

    @property
    def task(self) -> str:
        return str(self.card["task"])

    @property
    def weights_path(self) -> Path:
        return self.path / self.card["weights"].get("file", WEIGHTS_FILE)

    @property
    def label_set(self):
        from headseg.labels import get_label_set

        return get_label_set(self.card["label_set"])

    def verify(self) -> None:
        """Check that the weights exist and match the card's sha256 (a corrupt download, a wrong file)."""
        if not self.weights_path.is_file():
            raise ModelPackageError(
                f"Model '{self.name}' has no weights file {self.weights_path}. Reinstall or re-export the model."
            )
        expected = self.card["weights"].get("sha256")
        if expected and sha256_of(self.weights_path) != expected:
            raise ModelPackageError(
                f"The weights of model '{self.name}' ({self.weights_path}) do not match the checksum in its "
                "card: the file is corrupt or was replaced. Reinstall or re-export the model."
            )

    def build_model(self):
        from headseg.errors import HeadSegError
        from headseg.models import build_model

        try:
            return build_model(
                self.card["architecture"],
                int(self.card.get("in_channels", 1)),
                len(self.card["classes"]),
                **self.card.get("architecture_params", {}),
            )
        except (HeadSegError, TypeError, ValueError, RuntimeError, MemoryError) as exc:  # the card's numbers
            raise ModelPackageError(f"Model '{self.name}' cannot be built from its card ({self.card['architecture']}, "
                                    f"{self.card.get('architecture_params', {})}): {str(exc).splitlines()[0]}. Fix "
                                    "the card or re-export the model.") from None

    def load_model(self, device: Any = "cpu", verify: bool = True):
        """Build the network, load its weights (``weights_only=True``) and put it in eval mode."""
        import torch

        if verify:
            self.verify()
        model = self.build_model()
        try:
            state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for a bad file
            raise ModelPackageError(
                f"Could not read the weights of model '{self.name}' ({self.weights_path}): {exc}"
            ) from exc
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise ModelPackageError(
                f"The weights of model '{self.name}' do not fit its declared architecture "
                f"({self.card['architecture']}): {str(exc).splitlines()[0]}"
            ) from exc
        return model.to(device).eval()

    def summary(self) -> str:
        metrics = self.card.get("metrics") or {}
        headline = metrics.get("summary", "")
        synthetic = " [synthetic training data, not for clinical use]" if self.card.get("synthetic") else ""
        return f"{self.name} ({self.task}, {self.card['architecture']}){synthetic} {headline}".strip()


def load_package(path: Union[str, Path]) -> ModelPackage:
    """Read and validate the package in ``path`` (weights are checked when the model is loaded)."""
    path = Path(path).expanduser()
    card_path = path / CARD_FILE
    if not path.is_dir():
        raise ModelPackageError(f"Model folder {path} does not exist.")
    if not card_path.is_file():
        raise ModelPackageError(
            f"{path} is not a headseg model package: it has no {CARD_FILE}. "
            "Choose the folder that contains model.json and model.pt."
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelPackageError(f"The model card {card_path} cannot be read: {exc}") from exc
    if not isinstance(card, dict):
        raise ModelPackageError(f"The model card {card_path} is not a JSON object.")
    validate_card(card, where=f"model card {card_path}")
    return ModelPackage(path, card)


def search_dirs(extra_dirs: Iterable[Union[str, Path]] = ()) -> List[Path]:
    dirs = [Path(d) for d in extra_dirs]
    env = os.environ.get("HEADSEG_MODEL_PATH", "")
    dirs += [Path(d) for d in env.split(os.pathsep) if d]
    dirs += [USER_DIR, SHIPPED_DIR]
    return dirs


def list_packages(extra_dirs: Iterable[Union[str, Path]] = (), task: Optional[str] = None,
                  errors: Optional[List[str]] = None) -> List[ModelPackage]:
    """All valid packages found; broken ones are skipped and described in ``errors`` if given."""
    found: List[ModelPackage] = []
    seen = set()
    for root in search_dirs(extra_dirs):
        if not root.is_dir():
            continue
        candidates = [root] if (root / CARD_FILE).is_file() else sorted(p for p in root.iterdir() if p.is_dir())
        for folder in candidates:
            if not (folder / CARD_FILE).is_file():
                continue
            try:
                package = load_package(folder)
            except ModelPackageError as exc:
                if errors is not None:
                    errors.append(str(exc))
                continue
            if package.name in seen or (task and package.task != task):
                continue
            seen.add(package.name)
            found.append(package)
    return found


def find_package(name_or_path: Optional[str], task: Optional[str] = None,
                 extra_dirs: Sequence[Union[str, Path]] = ()) -> ModelPackage:
    """A package by folder path or by name; ``None`` means the task's default."""
    if name_or_path is None:
        if task is None:
            raise ModelPackageError("Name a model or a task.")
        return default_package(task, extra_dirs)
    candidate = Path(name_or_path).expanduser()
    if candidate.is_dir():
        package = load_package(candidate)
    else:
        matches = [p for p in list_packages(extra_dirs) if p.name == name_or_path]
        if not matches:
            names = ", ".join(p.name for p in list_packages(extra_dirs)) or "none"
            raise ModelPackageError(
                f"No model named '{name_or_path}' is installed (installed: {names}). "
                "Give the model's folder, or add its parent folder to HEADSEG_MODEL_PATH."
            )
        package = matches[0]
    if task and package.task != task:
        raise ModelPackageError(
            f"Model '{package.name}' segments task '{package.task}', not '{task}'. Choose a {task} model."
        )
    return package


def default_package(task: str, extra_dirs: Sequence[Union[str, Path]] = ()) -> ModelPackage:
    """The package marked ``"default": true`` for the task, else the first one found."""
    packages = list_packages(extra_dirs, task=task)
    if not packages:
        raise ModelPackageError(
            f"No model for task '{task}' is installed. Train one with headseg-train, or point "
            "HEADSEG_MODEL_PATH at a folder of model packages."
        )
    defaults = [p for p in packages if p.card.get("default")]
    return (defaults or packages)[0]


def write_package(folder: Union[str, Path], card: Dict[str, Any], state_dict: Dict[str, Any]) -> ModelPackage:
    """Save weights and card (with the weights' sha256) into ``folder``; used by training's exporter."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    os.replace(tmp, weights)
    card = dict(card)
    card.setdefault("format_version", FORMAT_VERSION)
    card["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_of(weights), "bytes": weights.stat().st_size}
    validate_card(card, where=f"model card for {folder}")
    tmp_card = folder / (CARD_FILE + ".tmp")
    tmp_card.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_card, folder / CARD_FILE)
    return ModelPackage(folder, card)
