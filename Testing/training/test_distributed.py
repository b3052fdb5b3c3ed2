"""``torchrun --nproc_per_node=2 -m training train`` on two CPU processes (gloo): an epoch of 2 ranks x 1
sample per step gives the weights, BatchNorm statistics and loss of 1 process x 2 samples, only rank 0
writes, and the run resumes on one process where the single-process run goes on."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from headseg.synth.phantoms import write_phantom_cases
from training.config import load_config
from training.distributed import Distributed
from training.engine import checkpoint_path, train

ROOT = Path(__file__).resolve().parents[2]


def _recipe(cache: Path):
    return load_config(None, [
        f"data.cache_dir={cache}",  # cases prepared once, by the first run
        "name=test-ddp-tiny",
        'model.params={"base_channels": 2}',
        "input.spacing_mm=[1.25,1.25,1.5]",
        "input.window_kji=[16,48,48]",
        'inference={"step_k": 8, "batch_size": 1}',
        'loss={"type": "hybrid", "activation": "softmax"}',
        'optimizer.phases=[{"type": "sgd", "lr": 0.01, "momentum": 0.9, "epochs": 2}]',
        "batch_size=2",
        "samples_per_epoch=4",
        "augment.enabled=false",
        'split={"type": "lists", "train": ["phantom_000", "phantom_001"], "validation": ["phantom_001"]}',
        "validation.patience=0",
        "validation.every=2",  # validated once, after epoch 2 (rank 0 alone, its scores broadcast)
        "data.crop_source=labels",
        "num_threads=2",
    ])


def _close(a, b, what: str, rtol: float = 1e-4, atol: float = 1e-6, whole: bool = True) -> None:
    """Equal within float32 summation order (other batch sizes and thread counts per convolution, BatchNorm
    statistics and gradients all-reduced): each tensor within rtol of its norm plus atol (a BatchNorm bias
    two steps from zero sums gradients that nearly cancel), the ``whole`` model within rtol/10. (In float64
    SyncedBatchNorm3d's gradients equal BatchNorm3d's to 1e-15.) Per-rank
    BatchNorm statistics or a wrong gradient average miss these by orders of magnitude."""
    errors, scales = [], []
    for key, value in a.items():
        if value.is_floating_point():
            error, scale = float((value - b[key]).norm()), float(b[key].norm())
            assert error <= rtol * scale + atol, (what, key, error, scale)
            errors.append(error ** 2)
            scales.append(scale ** 2)
        else:
            assert torch.equal(value, b[key]), (what, key)
    assert not whole or sum(errors) ** 0.5 <= rtol / 10 * sum(scales) ** 0.5, (what, sum(errors) ** 0.5, sum(scales) ** 0.5)


def test_shares_of_a_batch():
    ranks = Distributed(rank=1, world=2)
    assert ranks.local_batch(4) == 2 and ranks.shard(range(4, 8)) == [6, 7]
    with pytest.raises(ValueError, match="multiple of 2"):
        ranks.local_batch(3)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without torch.distributed")
def test_two_ranks_train_as_one_process_and_resume_on_one(tmp_path):
    data = tmp_path / "data"
    write_phantom_cases(str(data), 2, seed=5, spacing=(0.8, 0.8, 1.5))
    config = _recipe(tmp_path / "cache")
    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps(config))

    threads = torch.get_num_threads()
    try:  # one process, batch 2: epoch 1, then resumed for epoch 2 (exact: test_training_run.py)
        train(config, data, tmp_path / "one", progress=False, export=False, stop_after_epochs=1)
        one_epoch1 = torch.load(checkpoint_path(tmp_path / "one"), weights_only=True)
        single = train(None, data, tmp_path / "one", resume=True, progress=False, export=False)
    finally:
        torch.set_num_threads(threads)

    env = {**os.environ, "PYTHONUTF8": "1"}
    launched = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "training",
         "train", "--config", str(recipe), "--data", str(data), "--out", str(tmp_path / "ddp"),
         "--epochs-this-run", "1", "--no-export", "--quiet"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert launched.returncode == 0, launched.stderr[-4000:]
    assert launched.stderr.count("Run folder:") == 1  # rank 0 reports
    log = (tmp_path / "ddp" / "log.txt").read_text(encoding="utf-8")
    assert log.count("torchrun: 2 processes on cpu, each step's batch of 2 split 2 x 1.") == 1  # one writer
    two_epoch1 = torch.load(checkpoint_path(tmp_path / "ddp"), weights_only=True)
    assert "module." not in next(iter(two_epoch1["model"]))  # the same checkpoint as one process writes
    _close(one_epoch1["model"], two_epoch1["model"], "epoch 1: 2 ranks x 1 against 1 process x 2")
    for n, state in one_epoch1["optimizer"]["state"].items():  # gradient sums: more cancellation
        _close(state, two_epoch1["optimizer"]["state"][n], f"momentum {n}", rtol=1e-2, whole=False)

    try:
        resumed = train(None, data, tmp_path / "ddp", resume=True, progress=False, export=False)  # 2 ranks -> 1
    finally:
        torch.set_num_threads(threads)
    assert resumed.history[0]["train_loss"] == pytest.approx(single.history[0]["train_loss"], rel=1e-5)
    assert resumed.epochs_done == single.epochs_done == 2
    assert resumed.history[1]["train_loss"] == pytest.approx(single.history[1]["train_loss"], rel=1e-4)
    one = torch.load(checkpoint_path(tmp_path / "one"), weights_only=True)
    two = torch.load(checkpoint_path(tmp_path / "ddp"), weights_only=True)
    _close(one["model"], two["model"], "epoch 2, resumed on one process", rtol=1e-3, atol=2e-5)  # 4 steps of noise
