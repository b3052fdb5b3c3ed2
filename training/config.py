"""Training recipes: JSON files in ``training/configs`` with command-line overrides.

A recipe is a nested JSON object (see the shipped ones). ``--set key.sub=value`` overrides any entry;
the value is parsed as JSON when it can be (``--set optimizer.phases.0.lr=3e-4``,
``--set model.params={"base_channels":8}``) and kept as text otherwise (``--set name=my-model``).
A run's full, resolved recipe is written to ``config.json`` in its folder, so a run can be repeated with
``--config RUN/config.json``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Union

__all__ = ["CONFIG_DIR", "DEFAULTS", "load_config", "apply_overrides", "list_recipes", "resolve_config_path"]

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Every key a recipe may use, with the value used when the recipe leaves it out.
DEFAULTS: Dict[str, Any] = {
    "name": "headseg-model",
    "description": "",
    "task": "orbit",
    "label_set": "orbit",
    "seed": 0,
    "device": "auto",
    "amp": True,  # mixed precision: float16 on CUDA; on the CPU only with cpu_amp
    "cpu_amp": False,  # bfloat16 autocast on CPUs with native bf16 (checked at run time; fp32 elsewhere)
    "channels_last": True,  # channels_last_3d memory format on CUDA, and on the CPU when it runs in bf16
    "deterministic": True,
    "num_threads": 0,  # CPU threads for torch; 0 = torch's default
    "sync_batchnorm": True,
    "init_weights": None,  # fine-tuning: start from a model package (name or folder) or a checkpoint file  # torchrun: BatchNorm statistics of the global batch (training.distributed)
    "model": {"architecture": "svnet", "params": {}},
    "side_split": None,  # han: {"parotid": {"right": "parotid_right", "left": "parotid_left"}} (headseg.segment.sides)
    "input": {
        "spacing_mm": [0.5, 0.5, 1.0],
        "window_kji": [32, 256, 256],
        "normalization": {"type": "window", "lower": -200.0, "upper": 200.0},
        "mirror_left": True,
    },
    "inference": {},
    "postprocess": {"fill_holes": True, "largest_component": True},
    "data": {
        "structures": None,  # None: every structure of the label set
        "cache": True,  # keep preprocessed crops / volumes in memory
        "crop_source": "auto",  # orbit: 'locate' (the localiser), 'labels' (box from labels), 'auto' (both)
        "foreground_fraction": 0.9,  # share of windows centred on labelled slices / structures
        "sampling": "slices",  # or "class_balanced" (training.data.SampleSource)
        "cache_dir": None,  # folder for preprocessed items (memory-mapped .npy), reused across runs
        "train_window_kji": None,  # training window; None: input.window_kji (orbit) or patch_kji (han)
        "patch_kji": None,  # han: train on random patches of this size when a volume is bigger
        "max_voxels": 160 ** 3,
    },
    "split": {"type": "auto", "folds": 10, "fold": 0, "validation_fraction": 0.2, "seed": 0},
    "loss": {"type": "hybrid", "activation": "softmax", "lambda": 0.5, "gamma": 2.0, "masked": True,
             "weighted": False},
    "optimizer": {"phases": [{"type": "adam", "lr": 1e-4, "epochs": 100}], "weight_decay": 0.0},
    "batch_size": 4,
    "samples_per_epoch": None,  # None: one sample per training crop/case
    "augment": {"enabled": True, "translate_vox": [2, 8, 8], "rotate_deg": 10.0, "noise_std": 0.03,
                "probability": 0.8},
    "validation": {"every": 1, "metric": "mean_dsc", "patience": 20, "min_delta": 0.0, "max_cases": None},
    "checkpoint": {"every": 1},
    "time_limit_minutes": None,
    "export": {"license": "Apache-2.0", "intended_use": "", "default": False, "synthetic": None},
}


def _merge(base: Dict[str, Any], update: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "params":
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def list_recipes() -> List[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def resolve_config_path(name_or_path: Union[str, Path]) -> Path:
    """A recipe file by path, or by name among the shipped recipes (``svnet_seed000``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    shipped = CONFIG_DIR / (str(name_or_path) if str(name_or_path).endswith(".json") else f"{name_or_path}.json")
    if shipped.is_file():
        return shipped
    raise FileNotFoundError(
        f"No training recipe {name_or_path!r}: not a file, and not one of the shipped recipes "
        f"({', '.join(list_recipes())})."
    )


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def apply_overrides(config: Dict[str, Any], overrides: Iterable[str]) -> Dict[str, Any]:
    """Apply ``key.sub.0=value`` overrides (list items by index); unknown top-level keys are refused."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"Override {item!r} is not of the form key=value (e.g. batch_size=2).")
        dotted, raw = item.split("=", 1)
        keys = [k for k in dotted.strip().split(".") if k]
        if not keys:
            raise ValueError(f"Override {item!r} has no key.")
        if keys[0] not in DEFAULTS:
            raise ValueError(f"Unknown recipe key {keys[0]!r} in override {item!r}; known: {', '.join(DEFAULTS)}.")
        node: Any = config
        for n, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                node = node[int(key)]
                continue
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, (dict, list)):
                raise ValueError(f"Override {item!r}: {'.'.join(keys[: n + 1])} is a value, not a section.")
        last = keys[-1]
        if isinstance(node, list):
            node[int(last)] = _parse_value(raw)
        else:
            node[last] = _parse_value(raw)
    return config


def load_config(name_or_path: Union[str, Path, None] = None, overrides: Iterable[str] = (),
                base: Union[Dict[str, Any], None] = None) -> Dict[str, Any]:
    """Defaults, then the recipe file (or ``base``), then the overrides."""
    config = copy.deepcopy(DEFAULTS)
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        try:
            recipe = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"The recipe {path} is not valid JSON: {exc}") from exc
        config = _merge(config, recipe)
    if base is not None:
        config = _merge(config, base)
    unknown = sorted(set(config) - set(DEFAULTS) - {"comment", "source"})
    if unknown:
        raise ValueError(f"Unknown recipe key(s) {unknown}; known: {', '.join(DEFAULTS)}.")
    config = apply_overrides(config, overrides)
    if config["task"] not in ("orbit", "han"):
        raise ValueError(f"Recipe task must be 'orbit' or 'han', got {config['task']!r}.")
    if int(config["batch_size"]) < 1:
        raise ValueError("batch_size must be at least 1.")
    return config
