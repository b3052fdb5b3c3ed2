"""Small model packages built by the tests themselves (random weights: code paths, not accuracy).

Shared by every test folder: ``Testing/`` is on ``sys.path`` because its ``conftest.py`` lives there."""

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


def write_random_package(folder: Path, card: Dict[str, Any], seed: int = 0):
    """Build the card's network with seeded random weights and write it as a package."""
    import torch

    from headseg.models import build_model
    from headseg.segment.packages import write_package

    torch.manual_seed(seed)
    model = build_model(card["architecture"], int(card.get("in_channels", 1)), len(card["classes"]),
                        **card["architecture_params"])
    return write_package(folder, card, model.state_dict())


def write_tiny_orbit_package(folder: Path, name: str = "tiny-orbit-test", seed: int = 0):
    return write_random_package(folder, tiny_orbit_card(name), seed)


def threshold_han_card(name: str = "threshold-han-test") -> Dict[str, Any]:
    return {
        "format_version": 1,
        "name": name,
        "task": "han",
        "description": "A fixed threshold 'network' (bone -> mandible): makes geometry errors measurable.",
        "architecture": "anatomynet",
        "architecture_params": {"widths": [4, 4, 4, 4], "blocks_per_stage": 1, "output_block_channels": 4},
        "in_channels": 1,
        "label_set": "openkbp",
        "classes": ["background", "mandible"],
        "output_activation": "softmax",
        "input": {"spacing_mm": [1.5, 1.5, 2.0], "orientation": "LPS",
                  "normalization": {"type": "window", "lower": -1000, "upper": 1000}},
        "inference": {"max_voxels": 64 ** 3, "patch_kji": [32, 64, 64], "batch_size": 2},
        "postprocess": {"fill_holes": False, "largest_component": False},
        "license": "Apache-2.0",
        "weights": {},
    }


class ThresholdNet:
    """Logits of 'bone' (> 400 HU after the card's window) vs background: a model whose right answer is
    known, so the whole-volume path (resample, predict, resample back) can be checked voxel by voxel."""

    def __new__(cls, threshold_hu: float = 400.0):
        import torch

        class _Net(torch.nn.Module):
            def forward(self, x):
                level = (threshold_hu + 1000.0) / 2000.0  # the card's window maps [-1000, 1000] to [0, 1]
                bone = 200.0 * (x - level)
                return torch.cat([torch.zeros_like(bone), bone], dim=1)

        return _Net()


def write_threshold_han_package(folder: Path):
    from headseg.segment.packages import write_package

    return write_package(folder, threshold_han_card(), {})
