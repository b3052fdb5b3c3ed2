"""The shipped orbit demonstration model: an honest card, and the README's first run works with it."""

from __future__ import annotations

import numpy as np
import pytest

from headseg.packages import SHIPPED_DIR, find_package, load_package

DEMO = SHIPPED_DIR / "orbit-svnet-demo"

pytestmark = pytest.mark.skipif(not (DEMO / "model.json").is_file(), reason="demo model not packaged")


def test_demo_card_is_honest_and_small():
    package = load_package(DEMO)
    card = package.card
    assert card["default"] is True and card["synthetic"] is True and card["task"] == "orbit"
    assert "synthetic" in card["description"].lower() and "not for clinical use" in card["intended_use"].lower()
    assert "headseg-train train --config orbit_demo_cpu" in card["training"]["command"]
    assert card["training"]["hardware"]["device"] == "cpu"
    assert (DEMO / "model.pt").stat().st_size < 20 * 2 ** 20
    assert card["metrics"]["per_structure"]["optic_nerve_left"]["dsc_mean"] > 0.5
    package.verify()


def test_readme_first_run_segments_a_fresh_phantom():
    from headseg.metrics import dice
    from headseg.phantoms import make_head_phantom
    from headseg.pipeline import segment_volume

    package = find_package(None, task="orbit")
    assert package.path.resolve() == DEMO.resolve()  # the default orbit model
    phantom = make_head_phantom(seed=0)  # what `headseg phantom -o sample` writes; not a training case
    result = segment_volume(phantom.image, package, device="cpu")
    scores = [dice(result.labelmap.array == v, phantom.labels.array == v) for v in range(1, 11)]
    assert min(scores) > 0.6 and np.mean(scores) > 0.8, np.round(scores, 3)
