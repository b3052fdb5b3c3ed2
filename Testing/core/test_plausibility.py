"""headseg.measure.plausibility: the label-free checks of an orbit segmentation pass on true anatomy and name
what is wrong otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from headseg.labels import get_label_set
from headseg.measure.plausibility import orbit_plausibility


@pytest.fixture(scope="module")
def head():
    from headseg.synth import make_synthetic_head

    return make_synthetic_head(7, spacing=(0.8, 0.8, 1.0), max_voxels=2.5e6, ted=False)


def test_true_labels_of_a_synthetic_head_are_plausible(head):
    """Without thyroid eye disease: seed 7 draws it, unequal on the two sides (left inferior rectus
    enlarged 1.8 times, the right one not), and the ratio check flags that asymmetry, as it should."""
    check = orbit_plausibility(head.image, head.labels, get_label_set("orbit"))
    assert check["plausible"], check["failed"]
    assert 1.0 <= check["recti_total_cm3"]["right"] <= 3.5 and 10 <= check["muscle_mean_hu"] <= 100


def test_each_failure_is_named(head):
    orbit = get_label_set("orbit")
    labels = np.array(head.labels.array)
    lateral_left = orbit.by_key("lateral_rectus_left").label
    labels[labels == lateral_left] = 0  # one muscle missing
    fat = head.image.with_array(np.where(labels > 0, -100, head.image.array).astype(head.image.array.dtype))
    check = orbit_plausibility(fat, head.labels.with_array(labels), orbit)
    assert not check["plausible"]
    text = " | ".join(check["failed"])
    assert "lateral_rectus left empty" in text
    assert "muscle mean HU -100 outside 10-100" in text and "100 % of muscle voxels below -30 HU" in text
    assert not any("superior_rectus" in f for f in check["failed"])  # what is fine is not reported
