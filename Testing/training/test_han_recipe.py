"""The CPU head-and-neck recipe (anatomynet_openkbp_cpu) on real OpenKBP cases, shrunk to seconds: the
marginal loss, class-balanced patches, the memory-mapped item cache, bf16 autocast where the CPU has it,
the parotid side split, and a resumed run that continues the uninterrupted one's loss curve exactly."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from training.augment import AugmentOptions
from training.config import load_config
from training.data import Item, SampleSource
from training.engine import autocast_dtype, checkpoint_path, train
from training.losses import build_loss, marginal_loss

OPENKBP = Path(__file__).resolve().parents[3] / "shared" / "data" / "openkbp"
CASES = {"train": ["pt_1", "pt_10", "pt_100"], "validation": ["pt_201"]}


# -- the marginal loss ---------------------------------------------------------------------------------
def test_marginal_loss_equals_ce_plus_dice_when_everything_is_annotated():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 3, 5, 5)
    target = torch.randint(0, 4, (2, 3, 5, 5))
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert float(marginal_loss(logits, target, dice_weight=0.0)) == pytest.approx(float(ce), rel=1e-6)
    p = torch.softmax(logits, 1)
    g = torch.nn.functional.one_hot(target, 4).movedim(-1, 1).float()
    dice = (2 * (p * g).flatten(2).sum(2) + 1e-5) / (p.flatten(2).sum(2) + g.flatten(2).sum(2) + 1e-5)
    expected = ce + (1 - dice[:, 1:]).mean()  # every class is in the target of both cases
    assert float(marginal_loss(logits, target)) == pytest.approx(float(expected), rel=1e-5)


def test_marginal_loss_lets_a_missing_organ_be_predicted_for_free():
    """Class 2 not contoured in case 0: swapping its logits with background's changes nothing there,
    whatever the label map says inside it; with class 2 annotated the same swap costs."""
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 4, 6, 6)
    swapped = logits[:, [2, 1, 0]]
    target = torch.randint(0, 2, (1, 4, 6, 6))  # only background and class 1 drawn
    drawn = target.clone()
    corner = drawn[:, :, :2, :2]
    corner[corner == 0] = 2  # class 2 drawn over background although not reviewed
    missing = torch.tensor([[0.0, 1.0, 0.0]])
    base = float(marginal_loss(logits, target, missing, dice_weight=0.0))
    assert float(marginal_loss(swapped, target, missing, dice_weight=0.0)) == pytest.approx(base, rel=1e-6)
    assert float(marginal_loss(logits, drawn, missing, dice_weight=0.0)) == pytest.approx(base, rel=1e-6)
    full = torch.ones(1, 3)
    assert float(marginal_loss(swapped, target, full, 0.0)) != pytest.approx(float(marginal_loss(logits, target,
                                                                                                   full, 0.0)))
    with pytest.raises(ValueError, match="softmax"):
        build_loss({"type": "marginal", "activation": "sigmoid"})


# -- class-balanced sampling ---------------------------------------------------------------------------
def _item(name: str, classes: dict, shape=(20, 40, 40)) -> Item:
    labels = np.zeros(shape, np.uint8)
    for c, (k, j, i) in classes.items():
        labels[k:k + 2, j:j + 2, i:i + 2] = c
    mask = np.ones(4, np.float32)
    return Item(name, "", np.zeros(shape, np.float32), labels, mask)


def test_class_balanced_windows_hold_each_class_about_equally_often():
    """Class 3 exists in one item of five; with foreground_fraction 1 it is still in a third of windows."""
    items = [_item(f"c{n}", {1: (5, 5, 5), 2: (12, 30, 30)}) for n in range(4)]
    items.append(_item("rare", {1: (5, 5, 5), 2: (12, 30, 30), 3: (15, 5, 32)}))
    source = SampleSource(items, (8, 12, 12), AugmentOptions(enabled=False), foreground_fraction=1.0,
                          sampling="class_balanced")
    held = {1: 0, 2: 0, 3: 0}
    for n in range(300):
        _, labels, _ = source.sample(n % 5, seed=n)
        for c in held:
            held[c] += bool((labels == c).any())
    assert all(80 <= held[c] <= 140 for c in held), held
    assert SampleSource(items, (8, 12, 12), AugmentOptions(enabled=False), foreground_fraction=0.0,
                        sampling="class_balanced").sample(4, seed=3)[0].shape == (1, 8, 12, 12)


# -- the recipe on real data ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def openkbp_subset(tmp_path_factory):
    if not OPENKBP.is_dir():
        pytest.skip(f"the shared OpenKBP data is not at {OPENKBP}")
    root = tmp_path_factory.mktemp("openkbp_subset")
    for split, patients in CASES.items():
        (root / split).mkdir()
        for patient in patients:
            os.symlink(OPENKBP / split / patient, root / split / patient)
    with open(OPENKBP / "manifest.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["patient"] in sum(CASES.values(), [])]
    with open(root / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def _recipe(cache: Path, epochs: int = 2, extra=()):
    return load_config("anatomynet_openkbp_cpu", [
        'model.params={"widths":[4,4,6,6],"blocks_per_stage":1,"output_block_channels":4,"se_reduction":2}',
        "data.train_window_kji=[16,32,32]", f"data.cache_dir={cache}", "batch_size=2", "samples_per_epoch=4",
        f"optimizer.phases.0.epochs={epochs}", "validation.max_cases=1", *extra,
    ])


def test_cpu_recipe_caches_resumes_exactly_and_splits_parotids(openkbp_subset, tmp_path):
    cache = tmp_path / "cache"
    threads = torch.get_num_threads()
    try:
        whole = train(_recipe(cache), openkbp_subset, tmp_path / "whole", progress=False, export=False)
        cached = sorted(p.name for p in cache.iterdir())
        assert len([p for p in cached if p.endswith(".json")]) == 4  # 3 training + 1 validation case
        first = train(_recipe(cache), openkbp_subset, tmp_path / "split", progress=False, export=False,
                      stop_after_epochs=1)
        assert sorted(p.name for p in cache.iterdir()) == cached  # read back, not written again
        assert first.epochs_done == 1
        resumed = train(None, openkbp_subset, tmp_path / "split", resume=True, progress=False, export=False)
        after_two = torch.load(checkpoint_path(tmp_path / "split"), weights_only=True)["model"]
        longer = train(None, openkbp_subset, tmp_path / "split", resume=True, progress=False, export=False,
                       overrides=["optimizer.phases.0.epochs=3"])
    finally:
        torch.set_num_threads(threads)
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in whole.history]
    a = torch.load(checkpoint_path(tmp_path / "whole"), weights_only=True)["model"]
    b = torch.load(checkpoint_path(tmp_path / "split"), weights_only=True)
    assert b["epoch"] == 3 and longer.epochs_done == 3  # --resume honoured the longer schedule
    log = (tmp_path / "whole" / "log.txt").read_text(encoding="utf-8")
    precision = "bfloat16 autocast" if autocast_dtype(torch.device("cpu")) is not None else "float32"
    assert precision in log and "marginal" in log
    assert "parotid_right" in log and "parotid_left" in log  # validation is scored per side
    card = b["card"]
    assert card["classes"] == ["background", "brainstem", "spinal_cord", "parotid", "esophagus", "larynx",
                               "mandible"]
    assert card["side_split"]["parotid"] == {"right": "parotid_right", "left": "parotid_left"}
    assert a.keys() == after_two.keys()
    assert all(torch.equal(a[k], after_two[k]) for k in a)  # the same weights, bit for bit

