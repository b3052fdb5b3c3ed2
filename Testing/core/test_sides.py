"""Paired organs predicted as one class and split into sides in patient space (headseg.segment.sides).

The phantom is asymmetric on purpose: the right gland is larger than the left, and the midline
structure sits off the grid's centre, so a swap of sides, a split about the grid centre instead of the
patient's midline, or a mirrored axis all change the numbers asserted here."""

from __future__ import annotations

import numpy as np
import pytest

from headseg.geometry import Volume
from headseg.segment.packages import write_package
from headseg.segment.pipeline import segment_volume
from headseg.segment.sides import midline_x, network_class_of, output_classes, split_classes_by_side

SPLIT = {"parotid": {"right": "parotid_right", "left": "parotid_left"}}
CARD = {"classes": ["background", "brainstem", "parotid", "mandible"], "side_split": SPLIT}


def rotation_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def test_output_classes_replace_the_merged_class_in_place():
    assert output_classes(CARD) == ["background", "brainstem", "parotid_right", "parotid_left", "mandible"]
    assert network_class_of(CARD)["parotid_left"] == "parotid"
    assert output_classes({"classes": ["background", "mandible"]}) == ["background", "mandible"]
    with pytest.raises(ValueError, match="right"):
        output_classes({"classes": ["background", "parotid"], "side_split": {"parotid": {"a": "b"}}})


def _phantom(direction: np.ndarray, midline_mm: float = 30.0):
    """Body of soft tissue (40 HU); a bone bar (1000 HU) on the midline at LPS x = ``midline_mm``; glands
    (300 HU) 35 mm to each side of it, the right one (LPS x < midline) twice as long in k."""
    shape = (40, 100, 110)  # k, j, i
    spacing = (2.0, 2.0, 2.5)
    centre_index = (np.asarray(shape[::-1], float) - 1) / 2
    origin = -(direction @ (np.asarray(spacing) * centre_index))  # the grid's centre at LPS (0, 0, 0)
    grid = Volume(np.zeros(shape, np.int16), spacing, origin, direction)
    k, j, i = np.indices(shape)
    lps = np.stack([i, j, k], axis=-1).reshape(-1, 3) @ (direction @ np.diag(spacing)).T + origin
    x, y, z = (lps[:, n].reshape(shape) for n in range(3))
    hu = np.full(shape, -1000, np.int16)
    hu[((x - midline_mm) ** 2 + y ** 2) < 80 ** 2] = 40
    bone = (np.abs(x - midline_mm) < 6) & (np.abs(y) < 30) & (np.abs(z) < 30)
    right = ((x - (midline_mm - 35)) ** 2 + y ** 2 < 10 ** 2) & (np.abs(z) < 20)
    left = ((x - (midline_mm + 35)) ** 2 + y ** 2 < 10 ** 2) & (np.abs(z) < 10)
    hu[bone] = 1000
    hu[right | left] = 300
    return grid.with_array(hu), right, left, bone


@pytest.mark.parametrize("orientation", ["lps", "ras_index_order", "oblique"])
def test_split_follows_patient_space_not_array_order(orientation):
    direction = {"lps": np.eye(3), "ras_index_order": np.diag([-1.0, -1.0, 1.0]),
                 "oblique": rotation_z(25.0)}[orientation]
    image, right, left, bone = _phantom(direction)
    labels = np.zeros(image.shape, np.uint8)
    labels[right | left] = 2  # network class "parotid"
    labels[bone] = 3  # mandible: a midline class
    out = split_classes_by_side(labels, image, CARD, image=image.array)
    names = output_classes(CARD)
    assert np.array_equal(out == names.index("parotid_right"), right)
    assert np.array_equal(out == names.index("parotid_left"), left)
    assert np.array_equal(out == names.index("mandible"), bone)
    assert midline_x(labels, image, [1, 3]) == pytest.approx(30.0, abs=1.5)


def test_midline_falls_back_to_the_body_then_the_grid():
    image, right, left, _ = _phantom(np.eye(3), midline_mm=0.0)
    labels = np.zeros(image.shape, np.uint8)
    labels[right | left] = 2
    assert midline_x(labels, image, [1, 3], image=image.array) == pytest.approx(0.0, abs=1.5)
    assert midline_x(labels, image, [1, 3]) == pytest.approx(0.0, abs=1e-6)  # the grid's centre


class BandNet:
    """A known-answer 'network': parotid where 200 < HU < 500, mandible where HU > 800."""

    def __new__(cls):
        import torch

        class _Net(torch.nn.Module):
            def forward(self, x):
                hu = x * 2000.0 - 1000.0  # the card's window [-1000, 1000] -> [0, 1], undone
                gland = 50.0 * torch.minimum(hu - 200.0, 500.0 - hu) / 100.0
                bone = 50.0 * (hu - 800.0) / 100.0
                zero = torch.zeros_like(hu)
                return torch.cat([zero, zero - 100.0, gland, bone], dim=1)

        return _Net()


@pytest.mark.parametrize("orientation", ["lps", "oblique"])
def test_pipeline_splits_sides_before_keeping_the_largest_component(tmp_path, orientation):
    """Through segment_volume: both glands survive the largest-component step, each on its own side,
    and the label-set values are the right and left parotid's."""
    direction = {"lps": np.eye(3), "oblique": rotation_z(-20.0)}[orientation]
    image, right, left, bone = _phantom(direction)
    card = {
        "format_version": 1, "name": "band-split-test", "task": "han", "architecture": "anatomynet",
        "architecture_params": {"widths": [4, 4, 4, 4], "blocks_per_stage": 1, "output_block_channels": 4},
        "in_channels": 1, "label_set": "openkbp", "classes": CARD["classes"], "side_split": SPLIT,
        "output_activation": "softmax",
        "input": {"spacing_mm": [2.0, 2.0, 2.5], "orientation": "LPS",
                  "normalization": {"type": "window", "lower": -1000, "upper": 1000}},
        "inference": {"max_voxels": 128 ** 3, "patch_kji": [32, 64, 64]},
        "postprocess": {"fill_holes": True, "largest_component": True}, "weights": {},
    }
    package = write_package(tmp_path / "band", card, {})
    result = segment_volume(image, package, device="cpu", model=BandNet())
    ls = result.label_set
    got_right = result.labelmap.array == ls.by_key("parotid_right").label
    got_left = result.labelmap.array == ls.by_key("parotid_left").label
    from headseg.measure.metrics import dice

    assert dice(got_right, right) > 0.9 and dice(got_left, left) > 0.9
    assert got_right.sum() > 1.5 * got_left.sum()  # the larger gland is the right one
    assert dice(result.labelmap.array == ls.by_key("mandible").label, bone) > 0.9
