"""Small model packages built by the tests themselves (random weights: code paths, not accuracy)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict


def tiny_orbit_card(name: str = "tiny-orbit-test") -> Dict[str, Any]:
    return {
        "format_version": 1,
        "name": name,
        "task": "orbit",
        "description": "Random weights, built by the tests: exercises the code paths only.",
        "architecture": "svnet",
        "architecture_params": {"base_channels": 2},
        "in_channels": 1,
        "label_set": "orbit",
        "classes": ["background", "superior_rectus", "lateral_rectus", "medial_rectus", "inferior_rectus",
                    "optic_nerve"],
        "output_activation": "softmax",
        "input": {"spacing_mm": [1.0, 1.0, 2.0], "orientation": "LPS", "window_kji": [16, 64, 64],
                  "normalization": {"type": "window", "lower": -200, "upper": 300}, "mirror_left": True},
        "inference": {"step_k": 8, "blend": "gaussian", "batch_size": 2},
        "postprocess": {"fill_holes": True, "largest_component": True},
        "synthetic": True,
        "license": "Apache-2.0",
        "weights": {},
    }


def write_tiny_orbit_package(folder: Path, name: str = "tiny-orbit-test", seed: int = 0):
    import torch

    from headseg.packages import write_package

    card = tiny_orbit_card(name)
    torch.manual_seed(seed)
    from headseg.models import build_model

    model = build_model("svnet", 1, len(card["classes"]), **card["architecture_params"])
    return write_package(folder, card, model.state_dict())
