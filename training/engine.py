"""The training loop: seeding, optimiser phases, mixed precision, checkpoints with exact resume,
validation with ``headseg`` metrics each epoch, early stopping, and the run folder.

Run folder (``--out RUN``)::

    config.json          the resolved recipe (train again with --config RUN/config.json)
    data_report.json     dataset validation report and the split used
    metrics.csv          one row per epoch: loss, learning rate, validation DSC per class, timing
    training_curve.png   loss and validation DSC per epoch
    checkpoints/last.pt  model + optimiser + scheduler + scaler + RNG states, for --resume
    checkpoints/best.pt  the same at the best validation epoch
    model/<name>/        the exported headseg model package (model.json + model.pt)
    log.txt              what was printed

Exact resume: every random choice of a sample comes from a generator seeded by (seed, epoch,
position) (``training.data.sample_seed``), the model, optimiser, scheduler and scaler states and the
global RNG states are restored, and the epoch restarts where the checkpoint left off, so a resumed
run gives the same losses and weights as an uninterrupted one (bit for bit on the CPU; on CUDA up to
the non-determinism of some kernels, which ``deterministic`` reduces).

The pieces: :func:`prepare_data` (check, split, preprocess), ``training.trainer`` (the optimisation step),
``training.checkpoints`` (what is saved and restored) and :class:`_Run`, whose :meth:`_Run.fit` reads as the
loop of nnU-Net's ``run_training``: train an epoch, validate, end the epoch (best model, phase change,
checkpoints, log), until the phases are done or a limit is reached.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from headseg.segment.model_card import ModelCard

from .augment import AugmentOptions
from .card import build_card
from .checkpoints import (
    CHECKPOINT_FORMAT,
    TrainingState,
    checkpoint_path,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from .config import load_config
from .data import Item, SampleSource, collate, epoch_order, make_items, sample_seed
from .datasets import DatasetReport, discover_records, load_case, split_cases, validate_dataset
from .distributed import Distributed, rank_device, setup, sync_batchnorm
from .export import export_run
from .losses import annotation_weights, build_loss
from .run_log import RunLog, plot_curve, write_metrics
from .trainer import Precision, Trainer, autocast_dtype, check_phases, make_optimizer, make_scheduler

__all__ = ["RunResult", "TrainingData", "train", "set_determinism", "validate_items", "load_items",
           "prepare_data", "autocast_dtype", "checkpoint_path", "CHECKPOINT_FORMAT"]

log = logging.getLogger("training")


@dataclass
class RunResult:
    run_dir: Path
    package_dir: Optional[Path]
    best_metric: float
    best_epoch: int
    epochs_done: int
    history: List[Dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False
    seconds: float = 0.0


# -- set-up ------------------------------------------------------------------------------------------
def set_determinism(seed: int, deterministic: bool = True) -> None:
    """Seed Python, numpy and torch; ask for deterministic kernels (CUDA needs CUBLAS_WORKSPACE_CONFIG)."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def _device(spec: str) -> torch.device:
    from headseg.segment.runtime import select_device

    return torch.device(select_device(spec).device)


def _hardware(device: torch.device) -> Dict[str, Any]:
    info: Dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# -- data --------------------------------------------------------------------------------------------
def load_items(records, names: Sequence[str], label_set, card: ModelCard, crop_source: str,
               progress: bool = False, cache_dir: Optional[Path] = None) -> Tuple[List[Item], List[str]]:
    """Items of the named cases; cases that fail to preprocess are reported, not fatal.

    With ``cache_dir`` each case is decoded and resampled once: its items are saved there (float16 image,
    uint8 labels) and memory-mapped on every later run, so a resumed run starts in seconds."""
    from headseg.errors import HeadSegError

    from .data import cache_key, load_cached_items, save_items

    by_name = {r.case: r for r in records}
    items: List[Item] = []
    failures: List[str] = []
    iterator = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc="Preparing cases", unit="case", file=sys.stderr, leave=False)
    for name in iterator:
        try:
            key = cache_key(by_name[name], card, crop_source) if cache_dir is not None else ""
            cached = load_cached_items(Path(cache_dir), key) if cache_dir is not None else None
            if cached is None:
                cached = make_items(load_case(by_name[name], label_set), card, crop_source)
                if cache_dir is not None:
                    save_items(Path(cache_dir), key, cached)
                    cached = load_cached_items(Path(cache_dir), key) or cached
            items += cached
        except (HeadSegError, ValueError, RuntimeError, OSError) as exc:
            failures.append(f"{name}: {exc}")
    return items, failures



def _reopen_extended_phase(state: TrainingState, phases: List[Dict[str, Any]]) -> None:
    """On resume: if the phase that ended last now has more epochs (``--set optimizer.phases.N.epochs``)
    and the next phase has not started, continue it instead of moving on (or stopping)."""
    if state.phase == 0 or state.stopped_early:
        return
    last = state.phase - 1
    done = sum(1 for row in state.history if row.get("phase") == last)
    started_next = any(row.get("phase") == state.phase for row in state.history)
    if not started_next and done < int(phases[last]["epochs"]):
        state.phase, state.phase_start = last, int(state.epoch) - done


# -- validation --------------------------------------------------------------------------------------
def validate_items(model: torch.nn.Module, items: Sequence[Item], card: ModelCard, device: torch.device,
                   amp: bool = True) -> Dict[str, Any]:
    """DSC per class on the model grid, predicted by the pipeline's own predictor
    (``headseg.segment.windows.predict_probabilities``: the slab window over an orbit crop, the whole volume
    or patches for ``han``); missing structures are skipped, NaNs ignored."""
    from headseg.measure.metrics import dice
    from headseg.segment.sides import split_classes_by_side
    from headseg.segment.windows import predict_probabilities

    names = card.output_classes
    scores: Dict[str, List[float]] = {c: [] for c in names[1:]}
    was_training = model.training
    model.eval()
    try:
        for item in items:
            # han volumes go one patch at a time here, beside the training state (the card's batch in segment)
            probs = predict_probabilities(model, item.image, card, device, amp=amp,
                                          batch_size=None if card.is_orbit else 1)
            pred = probs.argmax(axis=0)
            reference, mask = np.asarray(item.labels), item.class_mask
            if item.output_labels is not None:  # a side-split card: score each side as inference gives it
                pred = split_classes_by_side(pred, item.grid, card)
                reference, mask = np.asarray(item.output_labels), np.asarray(item.output_mask)
            for c, name in enumerate(names[1:], start=1):
                if mask[c] > 0:
                    value = dice(pred == c, reference == c)
                    if math.isfinite(value):
                        scores[name].append(value)
    finally:
        model.train(was_training)
    per_class = {name: (float(np.mean(v)) if v else float("nan")) for name, v in scores.items()}
    finite = [v for v in per_class.values() if math.isfinite(v)]
    return {"mean_dsc": float(np.mean(finite)) if finite else float("nan"), "dsc": per_class,
            "items": len(items)}


# -- the run -----------------------------------------------------------------------------------------
# -- data --------------------------------------------------------------------------------------------
@dataclass
class TrainingData:
    """The cases a run learns from and is validated on, and how training windows are cut from them."""

    train_items: List[Item]
    val_items: List[Item]
    source: SampleSource
    report: Dict[str, Any]  # what data_report.json holds: the dataset check, the split, skipped cases


def prepare_data(config: Dict[str, Any], data_dir, card: ModelCard, label_set, run_dir: Path,
                 say: Callable[[str], None], progress: bool = False, write_report: bool = True) -> TrainingData:
    """Check the dataset, split it, preprocess the cases (through the item cache) and write
    ``data_report.json`` (``write_report``: only rank 0 of a torchrun run writes it); unusable cases are
    listed, not fatal, unless none is left."""
    records = discover_records(data_dir)
    say(f"Dataset {data_dir}: {len(records)} case(s). Checking them...")
    report: DatasetReport = validate_dataset(records, label_set, task=config["task"])
    say(report.summary())
    if not report.usable:
        raise ValueError(f"No usable case in {data_dir}; see the problems above.")
    split = split_cases(records, config["split"], usable=report.usable)
    say(f"Split ({split['type']}): {len(split['train'])} training, {len(split['validation'])} validation, "
        f"{len(split['test'])} test case(s).")
    crop_source = config["data"].get("crop_source", "auto")
    cache_dir = config["data"].get("cache_dir")
    cache_dir = Path(cache_dir).expanduser() if cache_dir else None
    train_items, failed = load_items(records, split["train"], label_set, card, crop_source, progress, cache_dir)
    val_items, failed_val = load_items(records, split["validation"], label_set, card, crop_source, progress,
                                       cache_dir)
    for message in failed + failed_val:
        say(f"  skipped {message}")
    max_val = config["validation"].get("max_cases")
    if max_val:  # per-epoch validation on the first cases only (the exported package is scored on all)
        kept = set(sorted({i.case for i in val_items})[: int(max_val)])
        val_items = [i for i in val_items if i.case in kept]
    data_report = {"data_dir": str(data_dir), "report": report.to_dict(), "split": split,
                   "train_items": [i.name for i in train_items], "validation_items": [i.name for i in val_items],
                   "skipped": failed + failed_val}
    if write_report:
        (run_dir / "data_report.json").write_text(json.dumps(data_report, indent=2) + "\n", encoding="utf-8")

    augment = AugmentOptions.from_dict(config.get("augment"))
    if augment.mirror_probability > 0:
        sided = [c for c in card.classes if c in label_set and label_set.by_key(c).side]
        if card.is_orbit or sided:
            raise ValueError("augment.mirror_probability flips left and right, which would swap the labels of "
                             f"sided classes ({', '.join(sided) or 'the orbit recti'}); train one class per pair "
                             "with side_split, or leave mirroring off.")
    window = config["data"].get("train_window_kji") or (card.window_kji if card.is_orbit
                                                        else config["data"].get("patch_kji"))
    source = SampleSource(train_items, window, augment,
                          float(config["data"].get("foreground_fraction", 0.9)),
                          max_voxels=config["data"].get("max_voxels"),
                          fallback_patch_kji=card.inference.patch_kji,
                          sampling=config["data"].get("sampling", "slices"))
    return TrainingData(train_items, val_items, source, data_report)


def _scaled(loss_fn: Callable[..., torch.Tensor], factor: float) -> Callable[..., torch.Tensor]:
    def scaled(*args: Any) -> torch.Tensor:
        return loss_fn(*args) * factor

    return scaled


# -- the run -----------------------------------------------------------------------------------------
class _Run:
    """One call of :func:`train`: the run folder, the data, the :class:`Trainer` and the loop's state."""

    def __init__(self, config: Optional[Dict[str, Any]], data_dir, out_dir, resume: bool, overrides: Sequence[str],
                 progress: bool) -> None:
        from headseg.labels import get_label_set

        self.run_dir = Path(out_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = None
        if resume:
            checkpoint = load_checkpoint(checkpoint_path(self.run_dir, "last"))
            config = load_config(base=checkpoint["config"], overrides=overrides)
        if config is None:
            raise ValueError("Give a recipe, or resume a run that has a checkpoint.")
        self.config = config
        device = _device(config.get("device", "auto"))
        self.ranks: Distributed = setup(device)  # torchrun: this process's rank (nothing to do without it)
        device = rank_device(device, self.ranks)
        main = self.ranks.main
        self.progress = progress and main
        self.say: Callable[[str], None] = RunLog(self.run_dir / "log.txt", self.progress) if main else log.debug
        self.start_time = time.perf_counter()
        if config.get("num_threads"):  # ranks on one machine share its cores
            torch.set_num_threads(max(1, int(config["num_threads"]) // self.ranks.local_world))
        set_determinism(int(config["seed"]), bool(config.get("deterministic", True)))
        self.precision = Precision.for_recipe(config, device)
        self.card = build_card(config)
        self.phases = check_phases(config)
        self.batch_size = int(config["batch_size"])
        local_batch = self.ranks.local_batch(self.batch_size)  # refuses a batch that does not split
        if self.ranks.active:
            self.say(f"torchrun: {self.ranks.world} processes on {device.type}, each step's batch of "
                     f"{self.batch_size} split {self.ranks.world} x {local_batch}.")
        if main:
            (self.run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        self.data = prepare_data(config, data_dir, self.card, get_label_set(config["label_set"]), self.run_dir,
                                 self.say, self.progress, write_report=main)
        self.trainer = self._build_trainer()
        self.weight_decay = float(config["optimizer"].get("weight_decay", 0.0))
        self.state = TrainingState()
        if checkpoint is not None:
            self._restore(checkpoint)
        elif config.get("init_weights"):
            self._initialise(str(config["init_weights"]))
        self.elapsed_before = float(self.state.elapsed)
        samples_per_epoch = int(config.get("samples_per_epoch") or len(self.data.train_items))
        self.steps_per_epoch = max(1, math.ceil(samples_per_epoch / self.batch_size))
        self.seed = int(config["seed"])
        self.epoch_start = 0.0

    # -- set-up ----------------------------------------------------------------------------------------
    def _build_trainer(self) -> Trainer:
        from headseg.models import build_model, count_parameters

        card, precision = self.card, self.precision
        masks = torch.from_numpy(np.stack([i.class_mask for i in self.data.train_items]))
        class_weights = annotation_weights(masks)
        loss_fn: Any = build_loss(self.config["loss"], class_weights=class_weights)
        self.say(f"Loss: {loss_fn}; class weights w(c) = 1/#annotations: "
                 f"{[round(float(w), 4) for w in class_weights]}")
        if self.ranks.active and self.config["loss"].get("reduction") == "sum":
            loss_fn = _scaled(loss_fn, self.ranks.world)  # DDP averages gradients; a summed loss must not shrink
        model = precision.prepare(build_model(card.architecture, card.in_channels, len(card.classes),
                                              **card.architecture_params))
        self.say(f"Model {card.architecture} {card.architecture_params}: {count_parameters(model):,} "
                 f"parameters, device {precision.device}, {precision.name}"
                 f"{', channels_last_3d' if precision.channels_last else ''}.")
        if self.ranks.active:
            if self.config.get("sync_batchnorm", True):
                model = sync_batchnorm(model, self.ranks, precision.device)
            from torch.nn.parallel import DistributedDataParallel

            model = DistributedDataParallel(
                model, device_ids=[self.ranks.local_rank] if precision.device.type == "cuda" else None)
        weight_decay = float(self.config["optimizer"].get("weight_decay", 0.0))
        optimizer = make_optimizer(model, self.phases[0], weight_decay)
        return Trainer(model, loss_fn, optimizer, make_scheduler(optimizer, self.phases[0]), precision)

    def _restore(self, checkpoint: Dict[str, Any]) -> None:
        self.state = TrainingState.from_checkpoint(checkpoint)
        _reopen_extended_phase(self.state, self.phases)
        phase = self.phases[min(self.state.phase, len(self.phases) - 1)]
        self.trainer.load_state_dicts(checkpoint, phase, self.weight_decay)
        restore_rng(checkpoint["rng"])
        self.say(f"Resumed from epoch {self.state.epoch} (phase {self.state.phase}, best "
                 f"{self.state.best_metric:.4f} at epoch {self.state.best_epoch}).")

    def _initialise(self, source: str) -> None:
        """Start from trained weights (fine-tuning): an installed model name or package folder, or a
        checkpoint file. The network must have the same architecture and classes; the optimiser starts
        afresh."""
        from headseg.segment.packages import find_package

        path = Path(source).expanduser()
        weights = path if path.suffix == ".pt" and path.is_file() else find_package(source).weights_path
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # a damaged, foreign or unsafe file (weights_only: nothing in it is run)
            reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise ValueError(f"init_weights {source!r}: {weights} cannot be read as weights ({reason}).") from None
        if weights == path:
            state = state.get("model", state) if isinstance(state, dict) else state
        try:
            self.trainer.network.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError) as error:
            raise ValueError(f"init_weights {source!r} does not fit this recipe's network ({error}).") from None
        self.say(f"Started from the weights of {source}.")

    def payload(self) -> Dict[str, Any]:
        """A checkpoint of the run as it stands (see ``training.checkpoints``)."""
        return {"format": CHECKPOINT_FORMAT, "config": self.config, "card": self.card.to_dict(), **self.trainer.state_dicts(),
                "rng": rng_state(), **self.state.to_dict()}

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.start_time

    # -- the loop --------------------------------------------------------------------------------------
    def fit(self, stop_after_epochs: Optional[int] = None,
            callback: Optional[Callable[[Dict[str, Any]], Any]] = None) -> None:
        """Epochs until every phase is done, ``stop_after_epochs`` epochs have run in this call, the time
        limit is reached or ``callback(row)`` returns True."""
        epochs_this_call = 0
        with self._progress_bar() as bar:
            while self.state.phase < len(self.phases):
                if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                    break
                if self._time_is_up():
                    break
                row = self.train_epoch(bar)
                self.validate_epoch(row)
                self.end_epoch(row)
                epochs_this_call += 1
                if callback is not None and callback(row):
                    self.say(f"Stopped after epoch {row['epoch']} on request.")
                    break

    def _time_is_up(self) -> bool:
        limit = self.config.get("time_limit_minutes")
        if limit and self.elapsed() / 60.0 >= float(limit):
            self.say(f"Time limit of {limit} min reached.")
            return True
        return False

    @contextlib.contextmanager
    def _progress_bar(self) -> Iterator[Any]:
        """One bar for the whole run (steps of every phase), so its ETA is the run's."""
        if not self.progress:
            yield None
            return
        from tqdm import tqdm

        total = sum(int(p["epochs"]) for p in self.phases) * self.steps_per_epoch
        bar = tqdm(total=total, initial=min(total, int(self.state.epoch) * self.steps_per_epoch), desc="Training",
                   unit="step", file=sys.stderr, dynamic_ncols=True)
        try:
            yield bar
        finally:
            bar.close()

    def train_epoch(self, bar: Any = None) -> Dict[str, Any]:
        """One epoch of steps; the metrics row so far (epoch, phase, optimiser, lr, loss, speed)."""
        epoch, phase = self.state.epoch, self.phases[self.state.phase]
        self.epoch_start = time.perf_counter()
        self.trainer.model.train()
        batch_size, source = self.batch_size, self.data.source
        order = epoch_order(len(source), self.steps_per_epoch * batch_size, self.seed, epoch)
        losses: List[float] = []
        if bar is not None:
            bar.set_description(f"Epoch {epoch + 1}")
        for step in range(self.steps_per_epoch):
            positions = self.ranks.shard(range(step * batch_size, (step + 1) * batch_size))  # this rank's share
            images, labels, masks = collate([source.sample(order[p], sample_seed(self.seed, epoch, p))
                                             for p in positions])
            losses.append(self.trainer.train_step(images, labels, masks, where=f"at epoch {epoch + 1}, step {step + 1}"))
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(losses):.4f}", refresh=False)
        lr = self.trainer.lr
        self.trainer.step_schedule()
        seconds = time.perf_counter() - self.epoch_start
        return {"epoch": epoch + 1, "phase": self.state.phase, "optimizer": phase["type"], "lr": lr,
                "train_loss": self.ranks.mean(float(np.mean(losses))),  # the global batch's, as one process
                "samples_per_second": self.steps_per_epoch * batch_size / max(seconds, 1e-9)}

    def validate_epoch(self, row: Dict[str, Any]) -> None:
        """Validation DSC into ``row`` on the epochs ``validation.every`` asks for (NaN on the others)."""
        every = int(self.config["validation"].get("every", 1) or 1)
        row["val_mean_dsc"] = float("nan")
        if self.data.val_items and row["epoch"] % every == 0 and self.ranks.main:
            precision = self.precision
            result = validate_items(self.trainer.network, self.data.val_items, self.card, precision.device,
                                    amp=precision.use_amp and precision.device.type == "cuda")
            row["val_mean_dsc"] = result["mean_dsc"]
            row.update({f"val_dsc_{k}": v for k, v in result["dsc"].items()})
        if self.ranks.active:  # rank 0's scores everywhere: every rank then decides alike
            row.update(self.ranks.broadcast({k: v for k, v in row.items() if k.startswith("val_")}))

    def end_epoch(self, row: Dict[str, Any]) -> None:
        """Book the epoch: best model, early stop, phase change (from the best weights), checkpoints,
        metrics.csv and the log line."""
        state, val_cfg = self.state, self.config["validation"]
        phase = self.phases[state.phase]
        metric = float(row["val_mean_dsc"])
        improved = math.isfinite(metric) and metric > state.best_metric + float(val_cfg.get("min_delta", 0.0))
        if not self.data.val_items:  # nothing to validate on: the last epoch is the best
            improved, metric = True, -float(row["train_loss"])
        row["best"] = bool(improved)
        row["epoch_seconds"] = time.perf_counter() - self.epoch_start
        row["elapsed_hours"] = self.elapsed() / 3600.0
        state.history.append(row)
        state.epoch = int(row["epoch"])
        state.elapsed = self.elapsed()
        if improved:
            state.best_metric, state.best_epoch, state.stale = metric, state.epoch, 0
        elif math.isfinite(metric):
            state.stale += 1
        phase_over = state.epoch - state.phase_start >= int(phase["epochs"])
        patience = int(val_cfg.get("patience") or 0)
        if patience and state.stale >= patience:
            self.say(f"No validation improvement for {patience} epochs: ending phase {state.phase}.")
            state.stopped_early = phase_over = True
        main = self.ranks.main
        if improved and main:
            save_checkpoint(checkpoint_path(self.run_dir, "best"), self.payload())
        if phase_over:
            self._next_phase()
        if main and (state.epoch % int(self.config["checkpoint"].get("every", 1) or 1) == 0 or improved
                     or phase_over):
            save_checkpoint(checkpoint_path(self.run_dir, "last"), self.payload())
        if main:
            write_metrics(self.run_dir / "metrics.csv", state.history, self.card.output_classes)
        self._log_epoch(row, phase, improved)

    def _next_phase(self) -> None:
        state = self.state
        state.phase += 1
        state.phase_start, state.stale = state.epoch, 0
        if state.phase < len(self.phases):
            nxt = self.phases[state.phase]
            self.say(f"Phase {state.phase}: {nxt['type']} lr {nxt['lr']} for {nxt['epochs']} epochs, "
                     "starting from the best weights so far.")
            best = checkpoint_path(self.run_dir, "best")
            self.ranks.barrier()  # rank 0 has written best.pt
            if best.is_file():
                self.trainer.network.load_state_dict(load_checkpoint(best)["model"])
            self.trainer.start_phase(nxt, self.weight_decay)

    def _log_epoch(self, row: Dict[str, Any], phase: Dict[str, Any], improved: bool) -> None:
        self.say(f"epoch {row['epoch']:4d}  {phase['type']} lr {row['lr']:.2e}  loss {row['train_loss']:.4f}  "
                 f"val mean DSC {row['val_mean_dsc']:.4f}{'  *best*' if improved else ''}  "
                 f"({row['epoch_seconds']:.1f} s, {row['samples_per_second']:.2f} samples/s)")
        per_class = [(k[len("val_dsc_"):], v) for k, v in row.items() if k.startswith("val_dsc_")]
        if per_class and math.isfinite(row["val_mean_dsc"]):
            self.say("           " + "  ".join(f"{name} {value:.3f}" for name, value in per_class))

    def finish(self, export: bool, stop_after_epochs: Optional[int], command: Optional[str]) -> RunResult:
        """The last checkpoint, metrics and curve; the model package when the run is over."""
        state = self.state
        if not self.ranks.main:  # rank 0 writes; the others are done
            self.ranks.close()
            return RunResult(self.run_dir, None, float(state.best_metric), int(state.best_epoch), int(state.epoch),
                             list(state.history), bool(state.stopped_early), float(state.elapsed))
        save_checkpoint(checkpoint_path(self.run_dir, "last"), self.payload())
        write_metrics(self.run_dir / "metrics.csv", state.history, self.card.output_classes)
        if state.history:
            try:
                plot_curve(self.run_dir / "training_curve.png", state.history, self.config["name"])
            except Exception as exc:  # a plotting problem must not lose a trained model
                self.say(f"Could not draw the training curve: {exc}")
        finished = state.phase >= len(self.phases)
        package_dir = None
        if export and (finished or stop_after_epochs is None):
            package_dir = export_run(self.run_dir, data_report=self.data.report, command=command,
                                     hardware={**_hardware(self.precision.device), "precision": self.precision.name,
                                               "processes": self.ranks.world},
                                     say=self.say)
        self.ranks.close()
        return RunResult(self.run_dir, package_dir, float(state.best_metric), int(state.best_epoch), int(state.epoch),
                         list(state.history), bool(state.stopped_early), float(state.elapsed))


def train(config: Optional[Dict[str, Any]], data_dir, out_dir, resume: bool = False,
          stop_after_epochs: Optional[int] = None, progress: bool = True, export: bool = True,
          command: Optional[str] = None, callback: Optional[Callable[[Dict[str, Any]], Any]] = None,
          overrides: Sequence[str] = ()) -> RunResult:
    """Train the recipe ``config`` (see :func:`training.config.load_config`) on the dataset in ``data_dir``
    and write the run folder ``out_dir``.

    ``resume`` continues from ``out_dir/checkpoints/last.pt`` (the stored config with ``overrides``
    applied, e.g. a longer schedule or another time limit; ``config`` may be None). ``stop_after_epochs``
    ends this call after that many epochs (the run can be resumed later). ``export`` writes the model
    package and evaluates it on the validation cases. ``callback(row)`` is called with each epoch's
    metrics row; returning True ends training there."""
    run = _Run(config, data_dir, out_dir, resume, overrides, progress)
    run.fit(stop_after_epochs, callback)
    return run.finish(export, stop_after_epochs, command)
