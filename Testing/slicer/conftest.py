"""Fixtures of the Slicer-module tests: phantoms on a small grid and a tiny model package.

The ``mrml_scene`` fixture (a real headless MRML scene from the slicer-core wheel) comes from
``Testing/conftest.py``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from model_factory import tiny_orbit_card, write_random_package


@pytest.fixture(scope="session")
def small_phantom():
    """A synthetic head CT with orbit labels, 100 x 100 x 40 voxels of 1.5 x 1.5 x 2 mm (LPS aligned)."""
    from headseg.synth.phantoms import make_head_phantom

    return make_head_phantom(seed=1, spacing=(1.5, 1.5, 2.0), noise_hu=5.0)


@pytest.fixture(scope="session")
def oblique_phantom():
    """The same anatomy on an oblique grid (rotated 20 degrees about the z axis)."""
    from headseg.synth.phantoms import make_head_phantom, rotation_matrix_deg

    return make_head_phantom(seed=1, spacing=(1.5, 1.5, 2.0), direction=rotation_matrix_deg((0.0, 0.0, 20.0)),
                             noise_hu=5.0)


def write_tiny_orbit_package(folder: Path, name: str = "tiny-orbit-slicer-test"):
    return write_random_package(folder, tiny_orbit_card(name))


@pytest.fixture(scope="session")
def tiny_orbit_package(tmp_path_factory):
    pytest.importorskip("torch")
    return write_tiny_orbit_package(tmp_path_factory.mktemp("models") / "tiny-orbit-slicer-test")


def write_tiny_han_package(folder: Path, name: str = "tiny-han-slicer-test"):
    """A valid AnatomyNet package (PDDCA organs, random weights, tiny widths)."""
    card = {
        "format_version": 1, "name": name, "task": "han",
        "description": "Random weights, built by the Slicer-module tests.",
        "architecture": "anatomynet",
        "architecture_params": {"widths": [4, 4, 4, 4], "blocks_per_stage": 1, "output_block_channels": 4},
        "in_channels": 1, "label_set": "pddca",
        "classes": ["background", "brainstem", "mandible", "parotid_left", "parotid_right"],
        "output_activation": "softmax",
        "input": {"spacing_mm": [3.0, 3.0, 4.0], "orientation": "LPS",
                  "normalization": {"type": "window", "lower": -1000, "upper": 1000}},
        "inference": {"max_voxels": 64 ** 3, "patch_kji": [16, 32, 32], "batch_size": 2},
        "postprocess": {"fill_holes": False, "largest_component": False},
        "synthetic": True, "license": "Apache-2.0", "weights": {},
    }
    return write_random_package(folder, card)


@pytest.fixture(scope="session")
def tiny_han_package(tmp_path_factory):
    pytest.importorskip("torch")
    return write_tiny_han_package(tmp_path_factory.mktemp("models") / "tiny-han-slicer-test")


def count_by_label(labels: np.ndarray, max_label: int) -> np.ndarray:
    return np.bincount(labels.ravel().astype(np.int64), minlength=max_label + 1)
