"""Checkpoints of a training run: where they live, what they hold, and the random-number states that make
a resumed run give the same losses and weights as an uninterrupted one.

A checkpoint (format :data:`CHECKPOINT_FORMAT`) is a ``torch.save`` dict that ``torch.load(...,
weights_only=True)`` reads: ``format``, ``config`` (the resolved recipe), ``card`` (the model card before
export), the state dicts ``model``, ``optimizer``, ``scheduler`` and ``scaler``, ``rng`` (torch, Python,
numpy and CUDA generator states) and the loop's :class:`TrainingState` fields at the top level
(``epoch``, ``phase``, ``phase_start``, ``best_metric``, ``best_epoch``, ``stale``, ``history``,
``elapsed``, ``stopped_early``).

Both the training loop (``training.engine``) and the export of a run (``training.export``) read them from
here, so neither imports the other.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Tuple, cast

import numpy as np
import torch

from headseg.paths import PathLike

__all__ = ["CHECKPOINT_FORMAT", "TrainingState", "checkpoint_path", "save_checkpoint", "load_checkpoint",
           "rng_state", "restore_rng"]

CHECKPOINT_FORMAT = 1



@dataclass
class TrainingState:
    """Where the epoch loop stands; saved in every checkpoint and restored on resume."""

    epoch: int = 0  # epochs done
    phase: int = 0  # index of the optimiser phase in progress (== number of phases when finished)
    phase_start: int = 0  # epoch at which that phase started
    best_metric: float = -math.inf
    best_epoch: int = -1
    stale: int = 0  # validated epochs without improvement in this phase
    history: List[Dict[str, Any]] = field(default_factory=list)  # one metrics row per epoch
    elapsed: float = 0.0  # training seconds over all calls
    stopped_early: bool = False

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, checkpoint: Dict[str, Any]) -> TrainingState:
        return cls(**{f.name: checkpoint[f.name] for f in fields(cls)})


def checkpoint_path(run_dir: PathLike, which: str = "last") -> Path:
    """``RUN/checkpoints/last.pt`` (every epoch, for --resume) or ``best.pt`` (the best validation epoch)."""
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def save_checkpoint(path: Path, payload: Dict[str, Any]) -> None:
    """Write atomically: an interrupted save never leaves a truncated checkpoint under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """A checkpoint, read with ``weights_only=True`` (nothing in the file is executed); a damaged, foreign or
    hostile file is refused with one sentence (InputError), never a traceback."""
    from headseg.errors import InputError

    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}; train without --resume first.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a truncated, foreign or unsafe file
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"{path} cannot be read as a headseg-train checkpoint ({reason}): it is damaged, or not a "
                         "checkpoint of this program (nothing in it was run). Use another run folder, or train "
                         "again without --resume.") from None
    missing = [] if not isinstance(checkpoint, dict) else [
        k for k in ("config", "card", "model", *(f.name for f in fields(TrainingState))) if k not in checkpoint]
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT or missing:
        raise InputError(f"{path} is not a headseg-train checkpoint of format {CHECKPOINT_FORMAT}"
                         f"{' (it lacks ' + ', '.join(missing[:4]) + ')' if missing else ''}. Use another run "
                         "folder, or train again without --resume.")
    return checkpoint


# -- RNG state in a form torch.load(weights_only=True) accepts (tensors and lists, no numpy objects) --------
def rng_state() -> Dict[str, Any]:
    np_state = cast(Tuple[Any, ...], np.random.get_state())  # the legacy tuple (name, keys, pos, gauss, cached)
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate()),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(value: Any) -> Any:
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value: Any) -> Any:
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value
