"""Model packages: a folder with the weights and a model card, so a model never travels without the facts
needed to use it correctly (input spacing, orientation, intensity window, label set) and to trust it
(training data, metrics, licence, checksum).

A package folder holds::

    model.json   the model card (``headseg.segment.model_card``, ``format_version`` 1)
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
from headseg.segment.model_card import FORMAT_VERSION, TASKS, WEIGHTS_FILE, ModelCard

__all__ = ["ModelPackage", "ModelCard", "load_package", "list_packages", "find_package", "default_package",
           "write_package", "search_dirs", "sha256_of", "CARD_FILE", "WEIGHTS_FILE", "FORMAT_VERSION", "TASKS",
           "SHIPPED_DIR", "USER_DIR"]

CARD_FILE = "model.json"
SHIPPED_DIR = Path(__file__).resolve().parents[1] / "packaged_models"
USER_DIR = Path.home() / ".headseg" / "models"


def sha256_of(path: Union[str, Path]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class ModelPackage:
    """A model folder and its parsed card. Weights are only read by :meth:`load_model`."""

    path: Path
    card: ModelCard = field(repr=False)

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def task(self) -> str:
        return self.card.task

    @property
    def weights_path(self) -> Path:
        return self.path / self.card.weights.file

    @property
    def label_set(self):
        from headseg.labels import get_label_set

        return get_label_set(self.card.label_set)

    def verify(self) -> None:
        """Check that the weights exist and match the card's sha256 (a corrupt download, a wrong file)."""
        if not self.weights_path.is_file():
            raise ModelPackageError(
                f"Model '{self.name}' has no weights file {self.weights_path}. Reinstall or re-export the model."
            )
        expected = self.card.weights.sha256
        if expected and sha256_of(self.weights_path) != expected:
            raise ModelPackageError(
                f"The weights of model '{self.name}' ({self.weights_path}) do not match the checksum in its "
                "card: the file is corrupt or was replaced. Reinstall or re-export the model."
            )

    def build_model(self):
        from headseg.errors import HeadSegError
        from headseg.models import build_model

        card = self.card
        try:
            return build_model(card.architecture, card.in_channels, len(card.classes), **card.architecture_params)
        except (HeadSegError, TypeError, ValueError, RuntimeError, MemoryError) as exc:  # the card's numbers
            raise ModelPackageError(f"Model '{self.name}' cannot be built from its card ({card.architecture}, "
                                    f"{card.architecture_params}): {str(exc).splitlines()[0]}. Fix "
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
                f"({self.card.architecture}): {str(exc).splitlines()[0]}"
            ) from exc
        return model.to(device).eval()

    def summary(self) -> str:
        headline = self.card.metrics.get("summary", "")
        synthetic = " [synthetic training data, not for clinical use]" if self.card.synthetic else ""
        return f"{self.name} ({self.task}, {self.card.architecture}){synthetic} {headline}".strip()


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
    return ModelPackage(path, ModelCard.from_dict(card, where=f"model card {card_path}"))


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
    defaults = [p for p in packages if p.card.default]
    return (defaults or packages)[0]


def write_package(folder: Union[str, Path], card: Union[ModelCard, Dict[str, Any]],
                  state_dict: Dict[str, Any]) -> ModelPackage:
    """Save weights and card (with the weights' sha256) into ``folder``; used by training's exporter.
    ``card`` is a :class:`ModelCard` or its JSON object; model.json is that object with ``weights`` filled in."""
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / WEIGHTS_FILE
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    torch.save({k: v.detach().cpu() for k, v in state_dict.items()}, tmp)
    os.replace(tmp, weights)
    document = card.to_dict() if isinstance(card, ModelCard) else dict(card)
    document.setdefault("format_version", FORMAT_VERSION)
    document["weights"] = {"file": WEIGHTS_FILE, "sha256": sha256_of(weights), "bytes": weights.stat().st_size}
    written = ModelCard.from_dict(document, where=f"model card for {folder}")
    tmp_card = folder / (CARD_FILE + ".tmp")
    tmp_card.write_text(json.dumps(written.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_card, folder / CARD_FILE)
    return ModelPackage(folder, written)
