"""The model card a training run builds from its recipe: classes, input grid, inference options, the
side split of side-less classes (headseg.segment.model_card.ModelCard checks it)."""

from __future__ import annotations

from typing import Any, Dict, List

from headseg.segment.model_card import (
    DEFAULT_ACTIVATION,
    FORMAT_VERSION,
    ModelCard,
    is_orbit_task,
    new_inference_section,
)


def _classes(config: Dict[str, Any]) -> List[str]:
    from headseg.labels import ORBIT_MODEL_CLASSES, get_label_set

    if is_orbit_task(config["task"]):
        return ["background", *ORBIT_MODEL_CLASSES]
    label_set = get_label_set(config["label_set"])
    wanted = config["data"].get("structures") or list(label_set.keys())
    unknown = [k for k in wanted if k not in label_set]
    if unknown:
        raise ValueError(f"data.structures {unknown} are not in the {label_set.name!r} label set "
                         f"({', '.join(label_set.keys())}).")
    classes = ["background"]
    split = config.get("side_split") or {}
    merged_of = {side_key: merged for merged, sides in split.items() for side_key in sides.values()}
    for key in wanted:  # a side-split pair becomes one network class, where its first side was
        name = merged_of.get(key, key)
        if name not in classes:
            classes.append(name)
    missing = [k for merged, sides in split.items() for k in sides.values() if k not in wanted]
    if missing:
        raise ValueError(f"side_split names {missing}, which data.structures leaves out.")
    return classes


def build_card(config: Dict[str, Any]) -> ModelCard:
    """The model card of a recipe before training (what preprocessing and inference need); training
    facts and metrics are added at export (to its ``to_dict()``, which the checkpoints keep)."""
    inp = config["input"]
    classes = _classes(config)
    card: Dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "name": config["name"],
        "description": config.get("description", ""),
        "task": config["task"],
        "architecture": config["model"]["architecture"],
        "architecture_params": dict(config["model"].get("params") or {}),
        "in_channels": 1,
        "label_set": config["label_set"],
        "classes": classes,
        "output_activation": config["loss"].get("activation", DEFAULT_ACTIVATION),
        "input": {"spacing_mm": [float(s) for s in inp["spacing_mm"]], "orientation": "LPS",
                  "normalization": dict(inp["normalization"])},
        "postprocess": dict(config.get("postprocess") or {}),
        "weights": {},
    }
    if config.get("side_split"):
        card["side_split"] = {k: dict(v) for k, v in config["side_split"].items()}
    if is_orbit_task(config["task"]):
        window = [int(w) for w in inp["window_kji"]]
        card["input"]["window_kji"] = window
        card["input"]["mirror_left"] = bool(inp.get("mirror_left", True))
        card["inference"] = new_inference_section(window)
    else:
        card["inference"] = new_inference_section(max_voxels=config["data"].get("max_voxels"),
                                                  patch_kji=config["data"].get("patch_kji"))
    card["inference"].update(config.get("inference") or {})
    return ModelCard.from_dict(card, where=f"model card of the recipe {config['name']!r}")
