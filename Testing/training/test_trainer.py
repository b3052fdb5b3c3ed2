"""training.trainer (the optimisation step) and training.checkpoints (the format resume relies on), and that
the training benchmark times that same step instead of a copy of it."""

from __future__ import annotations

import ast
import importlib.util
import math
from pathlib import Path

import pytest
import torch

from training.checkpoints import CHECKPOINT_FORMAT, TrainingState, load_checkpoint, save_checkpoint
from training.losses import SegmentationLoss
from training.trainer import Precision, Trainer, TrainingDivergedError, make_optimizer

REPO = Path(__file__).resolve().parents[2]
FORMAT_1_KEYS = {"format", "config", "card", "model", "optimizer", "scheduler", "scaler", "rng", "epoch", "phase",
                 "phase_start", "best_metric", "best_epoch", "stale", "history", "elapsed", "stopped_early"}


def tiny_trainer(lr: float = 0.05) -> Trainer:
    torch.manual_seed(0)
    precision = Precision(torch.device("cpu"))
    model = precision.prepare(torch.nn.Conv3d(1, 3, 3, padding=1))
    optimizer = make_optimizer(model, {"type": "adam", "lr": lr}, weight_decay=0.0)
    return Trainer(model, SegmentationLoss("hybrid", activation="softmax"), optimizer, None, precision)


def batch():
    generator = torch.Generator().manual_seed(1)
    images = torch.rand(2, 1, 4, 8, 8, generator=generator)
    labels = (images[:, 0] > 0.5).long() + (images[:, 0] > 0.8).long()
    return images, labels, torch.ones(2, 3)


def test_train_step_lowers_the_loss_on_a_fixed_batch():
    trainer = tiny_trainer()
    losses = [trainer.train_step(*batch()) for _ in range(30)]
    assert all(isinstance(v, float) and math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0]


def test_a_non_finite_loss_names_where_it_happened():
    trainer = tiny_trainer()
    images, labels, masks = batch()
    images[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(TrainingDivergedError, match="at epoch 3, step 7: lower the learning rate"):
        trainer.train_step(images, labels, masks, where="at epoch 3, step 7")


def test_precision_follows_the_recipe():
    cpu = torch.device("cpu")
    plain = Precision.for_recipe({"amp": True}, cpu)  # a CPU uses autocast only with cpu_amp
    assert plain.amp_dtype is None and not plain.channels_last and plain.name == "float32"
    assert Precision.for_recipe({"amp": False, "cpu_amp": True}, cpu).amp_dtype is None


def test_checkpoint_keeps_format_1(tmp_path):
    """The keys a running headseg-train writes and --resume reads (a change here breaks resuming old runs)."""
    trainer = tiny_trainer()
    trainer.start_phase({"type": "sgd", "lr": 0.01, "epochs": 2, "schedule": "cosine"}, weight_decay=0.0)
    trainer.train_step(*batch())
    state = TrainingState(epoch=1, best_metric=0.5, best_epoch=1, history=[{"epoch": 1, "train_loss": 1.0}])
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"format": CHECKPOINT_FORMAT, "config": {}, "card": {}, **trainer.state_dicts(),
                           "rng": {}, **state.to_dict()})
    checkpoint = load_checkpoint(path)
    assert set(checkpoint) == FORMAT_1_KEYS
    assert TrainingState.from_checkpoint(checkpoint) == state
    again = tiny_trainer()
    again.load_state_dicts(checkpoint, {"type": "sgd", "lr": 0.01, "epochs": 2, "schedule": "cosine"}, 0.0)
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                 trainer.model.state_dict().values()))
    assert again.scheduler.state_dict()["last_epoch"] == trainer.scheduler.state_dict()["last_epoch"]


def _imports(path: Path) -> set:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add(("." * node.level) + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_export_and_checkpoints_do_not_import_the_engine():
    for module in ("export", "checkpoints", "trainer"):
        found = _imports(REPO / "training" / f"{module}.py")
        assert not found & {".engine", "training.engine"}, (module, found)


def test_the_benchmark_times_the_trainers_step():
    path = REPO / "benchmarks" / "bench_training.py"
    source = path.read_text(encoding="utf-8")
    assert "Trainer(" in source and ".train_step(" in source and ".backward(" not in source
    spec = importlib.util.spec_from_file_location("bench_training", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    config = {"name": "tiny", "arch": "svnet", "params": {"base_channels": 2}, "classes": 6, "shape": (16, 32, 32),
              "batch": 1, "loss": ("hybrid", "softmax"), "opt": "adam"}
    result = bench.bench(config, torch.device("cpu"), steps=1, amp=False)
    assert result["step_s"] > 0 and result["data_s"] >= 0


@pytest.mark.parametrize("schedule", ["cosine", "poly"])
def test_a_resumed_schedule_follows_the_phase_length_given_on_resume(schedule):
    """``--resume --set optimizer.phases.0.epochs=N`` shortens or lengthens the schedule from the next step
    on (a cosine schedule kept its old length before: its stored T_max won)."""
    from training.trainer import make_scheduler

    model = torch.nn.Linear(2, 2)
    phase = {"type": "adamw", "lr": 1e-3, "epochs": 20, "schedule": schedule, "min_lr": 1e-4}
    trainer = Trainer(model, lambda *a: None, make_optimizer(model, phase, 0.0), None, Precision(torch.device("cpu")))
    trainer.scheduler = make_scheduler(trainer.optimizer, phase)
    for _ in range(8):
        trainer.optimizer.step()
        trainer.step_schedule()
    checkpoint = trainer.state_dicts()
    same = Trainer(torch.nn.Linear(2, 2), lambda *a: None, None, None, Precision(torch.device("cpu")))
    same.load_state_dicts(checkpoint, phase, 0.0)
    assert same.lr == trainer.lr  # unchanged recipe: exactly where it stopped
    shorter = Trainer(torch.nn.Linear(2, 2), lambda *a: None, None, None, Precision(torch.device("cpu")))
    shorter.load_state_dicts(checkpoint, dict(phase, epochs=10), 0.0)
    if schedule == "cosine":
        expected = 1e-4 + 0.9e-3 * 0.5 * (1 + math.cos(math.pi * 8 / 10))
    else:
        expected = 1e-3 * (1 - 8 / 10) ** 0.9
    assert shorter.lr == pytest.approx(expected, rel=1e-9)
