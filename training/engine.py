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
"""

from __future__ import annotations

import csv
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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from headseg.sides import output_classes

from .augment import AugmentOptions
from .config import load_config
from .data import Item, SampleSource, collate, epoch_order, make_items, sample_seed
from .datasets import DatasetReport, discover_cases, load_case, split_cases, validate_dataset
from .losses import annotation_weights, build_loss

__all__ = ["RunResult", "train", "build_card", "set_determinism", "validate_items", "load_items",
           "checkpoint_path", "CHECKPOINT_FORMAT"]

log = logging.getLogger("training")
CHECKPOINT_FORMAT = 1
OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")


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


def _classes(config: Dict[str, Any]) -> List[str]:
    from headseg.labels import ORBIT_MODEL_CLASSES, get_label_set

    if config["task"] == "orbit":
        return ["background", *ORBIT_MODEL_CLASSES]
    label_set = get_label_set(config["label_set"])
    wanted = config["data"].get("structures") or list(label_set.keys())
    unknown = [k for k in wanted if k not in label_set]
    if unknown:
        raise ValueError(f"data.structures {unknown} are not in the {label_set.name!r} label set "
                         f"({', '.join(label_set.keys())}).")
    classes = ["background"]
    split = config.get("side_split") or {}
    merged_of = {side_key: merged for merged, sides in split.items() for side_key in sides.values()}
    for key in wanted:  # a side-split pair becomes one network class, where its first side was
        name = merged_of.get(key, key)
        if name not in classes:
            classes.append(name)
    missing = [k for merged, sides in split.items() for k in sides.values() if k not in wanted]
    if missing:
        raise ValueError(f"side_split names {missing}, which data.structures leaves out.")
    return classes


def build_card(config: Dict[str, Any]) -> Dict[str, Any]:
    """The model card of a recipe before training (what preprocessing and inference need); training
    facts and metrics are added at export."""
    inp = config["input"]
    classes = _classes(config)
    card: Dict[str, Any] = {
        "format_version": 1,
        "name": config["name"],
        "description": config.get("description", ""),
        "task": config["task"],
        "architecture": config["model"]["architecture"],
        "architecture_params": dict(config["model"].get("params") or {}),
        "in_channels": 1,
        "label_set": config["label_set"],
        "classes": classes,
        "output_activation": config["loss"].get("activation", "softmax"),
        "input": {"spacing_mm": [float(s) for s in inp["spacing_mm"]], "orientation": "LPS",
                  "normalization": dict(inp["normalization"])},
        "postprocess": dict(config.get("postprocess") or {}),
        "weights": {},
    }
    if config.get("side_split"):
        card["side_split"] = {k: dict(v) for k, v in config["side_split"].items()}
    if config["task"] == "orbit":
        window = [int(w) for w in inp["window_kji"]]
        card["input"]["window_kji"] = window
        card["input"]["mirror_left"] = bool(inp.get("mirror_left", True))
        card["inference"] = {"step_k": max(1, window[0] // 2), "blend": "gaussian", "batch_size": 2}
    else:
        card["inference"] = {"max_voxels": int(config["data"].get("max_voxels") or 160 ** 3),
                             "patch_kji": list(config["data"].get("patch_kji") or (96, 160, 160))}
    card["inference"].update(config.get("inference") or {})
    return card


def _device(spec: str) -> torch.device:
    from headseg.inference import select_device

    return torch.device(select_device(spec).device)


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The mixed-precision type that is fast on ``device``: float16 on CUDA, bfloat16 on a CPU with native
    bf16 (AVX512-BF16 / AMX; bf16 autocast made a 3D U-Net step 3.8x faster than fp32 on such a CPU),
    None (float32) elsewhere: emulated bf16 is slower than fp32."""
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu":
        try:
            return torch.bfloat16 if bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()) else None
        except (AttributeError, RuntimeError):
            return None
    return None


def _hardware(device: torch.device) -> Dict[str, Any]:
    info: Dict[str, Any] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
                            "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# -- data --------------------------------------------------------------------------------------------
def load_items(records, names: Sequence[str], label_set, card: Dict[str, Any], crop_source: str,
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


# -- optimisation ------------------------------------------------------------------------------------
def _phases(config: Dict[str, Any]) -> List[Dict[str, Any]]:
    phases = config["optimizer"].get("phases") or []
    if not phases:
        raise ValueError("The recipe's optimizer.phases is empty; give at least one phase.")
    for n, phase in enumerate(phases):
        if phase.get("type") not in OPTIMIZERS:
            raise ValueError(f"optimizer.phases.{n}.type must be one of {OPTIMIZERS}, got {phase.get('type')!r}.")
        if int(phase.get("epochs", 0)) < 1 or float(phase.get("lr", 0)) <= 0:
            raise ValueError(f"optimizer.phases.{n} needs epochs >= 1 and lr > 0.")
    return phases


def _make_optimizer(model: torch.nn.Module, phase: Dict[str, Any], weight_decay: float):
    lr = float(phase["lr"])
    kind = phase["type"]
    wd = float(phase.get("weight_decay", weight_decay))
    if kind == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=wd)
    if kind == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    if kind == "rmsprop":
        return torch.optim.RMSprop(model.parameters(), lr=lr, alpha=float(phase.get("alpha", 0.99)),
                                   momentum=float(phase.get("momentum", 0.0)), weight_decay=wd)
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=float(phase.get("momentum", 0.9)),
                           nesterov=bool(phase.get("nesterov", False)), weight_decay=wd)


def _make_scheduler(optimizer, phase: Dict[str, Any]):
    schedule = phase.get("schedule", "constant")
    epochs = int(phase["epochs"])
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs,
                                                          eta_min=float(phase.get("min_lr", 0.0)))
    if schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: (1.0 - min(e, epochs - 1) / epochs) ** 0.9)
    raise ValueError(f"Unknown schedule {schedule!r}; use constant, cosine or poly.")


def _reopen_extended_phase(state: Dict[str, Any], phases: List[Dict[str, Any]]) -> None:
    """On resume: if the phase that ended last now has more epochs (``--set optimizer.phases.N.epochs``)
    and the next phase has not started, continue it instead of moving on (or stopping)."""
    if state["phase"] == 0 or state.get("stopped_early"):
        return
    last = state["phase"] - 1
    done = sum(1 for row in state["history"] if row.get("phase") == last)
    started_next = any(row.get("phase") == state["phase"] for row in state["history"])
    if not started_next and done < int(phases[last]["epochs"]):
        state["phase"], state["phase_start"] = last, int(state["epoch"]) - done


# -- RNG state in a form torch.load(weights_only=True) accepts -----------------------------------------
def _rng_state() -> Dict[str, Any]:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": _to_lists(random.getstate()),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def _restore_rng(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuples(state["python"]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: Path, which: str = "last") -> Path:
    return Path(run_dir) / "checkpoints" / f"{which}.pt"


def _save_checkpoint(path: Path, payload: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_checkpoint(path: Path) -> Dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"No checkpoint at {path}; train without --resume first.")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a headseg-train checkpoint of format {CHECKPOINT_FORMAT}.")
    return checkpoint


# -- validation --------------------------------------------------------------------------------------
def validate_items(model: torch.nn.Module, items: Sequence[Item], card: Dict[str, Any], device: torch.device,
                   amp: bool = True) -> Dict[str, Any]:
    """DSC per class on the model grid, predicted exactly as the pipeline predicts (sliding window over an
    orbit crop, whole volume or patches for ``han``); missing structures are skipped, NaNs ignored."""
    from headseg.inference import sliding_window_predict, whole_volume_or_patches
    from headseg.metrics import dice
    from headseg.sides import split_classes_by_side

    classes = card["classes"]
    names = output_classes(card)
    activation = card.get("output_activation", "softmax")
    inference = card.get("inference", {})
    scores: Dict[str, List[float]] = {c: [] for c in names[1:]}
    was_training = model.training
    model.eval()
    try:
        for item in items:
            x = np.asarray(item.image, np.float32)[None]
            if card["task"] == "orbit":
                wk = int(card["input"]["window_kji"][0])
                window = (wk, x.shape[2], x.shape[3])
                probs = sliding_window_predict(
                    x, model, window, step=(int(inference.get("step_k", max(1, wk // 2))), window[1], window[2]),
                    blend=inference.get("blend", "gaussian"), batch_size=int(inference.get("batch_size", 2)),
                    device=device, amp=amp, out_channels=len(classes), activation=activation)
            else:
                probs = whole_volume_or_patches(
                    x, model, max_voxels=int(inference.get("max_voxels", 160 ** 3)),
                    patch=tuple(inference.get("patch_kji", (96, 160, 160))), batch_size=1, device=device,
                    amp=amp, out_channels=len(classes), activation=activation)
            pred = probs.argmax(axis=0)
            reference, mask = np.asarray(item.labels), item.class_mask
            if item.output_labels is not None:  # a side-split card: score each side as inference gives it
                pred = split_classes_by_side(pred, item.grid, card)
                reference, mask = np.asarray(item.output_labels), item.output_mask
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
class _Log:
    def __init__(self, path: Path, echo: bool):
        self.path, self.echo = path, echo

    def __call__(self, message: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(message + "\n")
        if self.echo:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)
        log.info(message)


def _write_metrics(path: Path, history: List[Dict[str, Any]], classes: Sequence[str]) -> None:
    columns = ["epoch", "phase", "optimizer", "lr", "train_loss", "val_mean_dsc",
               *[f"val_dsc_{c}" for c in classes[1:]], "epoch_seconds", "samples_per_second", "elapsed_hours",
               "best"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})


def plot_curve(path: Path, history: List[Dict[str, Any]], title: str = "") -> None:
    """Training loss and validation mean DSC per epoch (matplotlib, Agg: works without a display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=100)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], color="tab:blue", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    ax_dsc = ax_loss.twinx()
    ax_dsc.plot(epochs, [h["val_mean_dsc"] for h in history], color="tab:orange", marker=".",
                label="validation mean DSC")
    ax_dsc.set_ylabel("validation mean DSC", color="tab:orange")
    ax_dsc.set_ylim(0, 1)
    ax_loss.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def train(config: Optional[Dict[str, Any]], data_dir, out_dir, resume: bool = False, stop_after_epochs: Optional[int] = None,
          progress: bool = True, export: bool = True, command: Optional[str] = None,
          callback: Optional[Callable[[Dict[str, Any]], None]] = None, overrides: Sequence[str] = ()) -> RunResult:
    """Train the recipe ``config`` (see :func:`training.config.load_config`) on the dataset in ``data_dir``
    and write the run folder ``out_dir``.

    ``resume`` continues from ``out_dir/checkpoints/last.pt`` (the stored config with ``overrides``
    applied, e.g. a longer schedule or another time limit; ``config`` may be None). ``stop_after_epochs`` ends this call after that many epochs (the run can be
    resumed later). ``export`` writes the model package and evaluates it on the validation cases.
    ``callback(row)`` is called with each epoch's metrics row; returning True ends training there."""
    from headseg.labels import get_label_set
    from headseg.models import build_model, count_parameters

    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = None
    if resume:
        checkpoint = _load_checkpoint(checkpoint_path(run_dir, "last"))
        config = load_config(base=checkpoint["config"], overrides=overrides)
    say = _Log(run_dir / "log.txt", progress)
    start_time = time.perf_counter()
    if config.get("num_threads"):
        torch.set_num_threads(int(config["num_threads"]))
    set_determinism(int(config["seed"]), bool(config.get("deterministic", True)))
    device = _device(config.get("device", "auto"))
    on_cuda = device.type == "cuda"
    amp_dtype = autocast_dtype(device) if bool(config.get("amp", True)) else None
    if device.type == "cpu" and not config.get("cpu_amp", False):
        amp_dtype = None
    use_amp = amp_dtype is not None
    channels_last = bool(config.get("channels_last", True)) and (on_cuda or use_amp)
    precision = {None: "float32", torch.float16: "float16 autocast", torch.bfloat16: "bfloat16 autocast"}[amp_dtype]
    card = build_card(config)
    label_set = get_label_set(config["label_set"])
    (run_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")

    # Data: validate, split, preprocess.
    records = discover_cases(data_dir)
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
    (run_dir / "data_report.json").write_text(json.dumps(data_report, indent=2) + "\n", encoding="utf-8")

    window = config["data"].get("train_window_kji") or (card["input"].get("window_kji") if config["task"] == "orbit"
                                                        else config["data"].get("patch_kji"))
    source = SampleSource(train_items, window, AugmentOptions.from_dict(config.get("augment")),
                          float(config["data"].get("foreground_fraction", 0.9)),
                          max_voxels=config["data"].get("max_voxels"),
                          fallback_patch_kji=card.get("inference", {}).get("patch_kji"),
                          sampling=config["data"].get("sampling", "slices"))
    masks = torch.from_numpy(np.stack([i.class_mask for i in train_items]))
    class_weights = annotation_weights(masks)
    loss_fn = build_loss(config["loss"], class_weights=class_weights)
    say(f"Loss: {loss_fn}; class weights w(c) = 1/#annotations: {[round(float(w), 4) for w in class_weights]}")

    # Model and optimisation state.
    model = build_model(card["architecture"], 1, len(card["classes"]), **card["architecture_params"]).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    say(f"Model {card['architecture']} {card['architecture_params']}: {count_parameters(model):,} parameters, "
        f"device {device}, {precision}{', channels_last_3d' if channels_last else ''}.")
    phases = _phases(config)
    batch_size = int(config["batch_size"])
    samples_per_epoch = int(config.get("samples_per_epoch") or len(train_items))
    steps_per_epoch = max(1, math.ceil(samples_per_epoch / batch_size))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and on_cuda)  # bf16 needs no loss scaling
    state = {"epoch": 0, "phase": 0, "phase_start": 0, "best_metric": -math.inf, "best_epoch": -1, "stale": 0,
             "history": [], "elapsed": 0.0, "stopped_early": False}
    weight_decay = float(config["optimizer"].get("weight_decay", 0.0))
    optimizer = _make_optimizer(model, phases[0], weight_decay)
    scheduler = _make_scheduler(optimizer, phases[0])
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        state.update({k: checkpoint[k] for k in state})
        _reopen_extended_phase(state, phases)
        optimizer = _make_optimizer(model, phases[min(state["phase"], len(phases) - 1)], weight_decay)
        scheduler = _make_scheduler(optimizer, phases[min(state["phase"], len(phases) - 1)])
        # The optimiser's state after the scheduler's: a new scheduler resets the learning rate to its
        # epoch-0 value, which would restart a poly or cosine schedule from the top.
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        _restore_rng(checkpoint["rng"])
        say(f"Resumed from epoch {state['epoch']} (phase {state['phase']}, best {state['best_metric']:.4f} "
            f"at epoch {state['best_epoch']}).")
    elapsed_before = float(state["elapsed"])
    val_cfg = config["validation"]
    patience = int(val_cfg.get("patience") or 0)
    min_delta = float(val_cfg.get("min_delta", 0.0))
    time_limit = config.get("time_limit_minutes")
    epochs_this_call = 0
    seed = int(config["seed"])

    def payload() -> Dict[str, Any]:
        return {"format": CHECKPOINT_FORMAT, "config": config, "card": card, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": _rng_state(), **state}

    run_bar = None
    if progress:
        from tqdm import tqdm

        total_steps = sum(int(p["epochs"]) for p in phases) * steps_per_epoch
        run_bar = tqdm(total=total_steps, initial=min(total_steps, int(state["epoch"]) * steps_per_epoch),
                       desc="Training", unit="step", file=sys.stderr, dynamic_ncols=True)
    while state["phase"] < len(phases):
        phase = phases[state["phase"]]
        if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
            break
        if time_limit and (elapsed_before + time.perf_counter() - start_time) / 60.0 >= float(time_limit):
            say(f"Time limit of {time_limit} min reached.")
            break
        epoch = state["epoch"]
        epoch_start = time.perf_counter()
        model.train()
        order = epoch_order(len(source), steps_per_epoch * batch_size, seed, epoch)
        losses = []
        if run_bar is not None:
            run_bar.set_description(f"Epoch {epoch + 1}")
        for step in range(steps_per_epoch):
            positions = range(step * batch_size, (step + 1) * batch_size)
            images, labels, masks_b = collate([source.sample(order[p], sample_seed(seed, epoch, p)) for p in positions])
            images, labels, masks_b = images.to(device), labels.to(device), masks_b.to(device)
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last_3d)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=use_amp):
                logits = model(images)
            loss = loss_fn(logits.float(), labels, masks_b)
            if not torch.isfinite(loss):
                raise RuntimeError(f"The loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}: lower the "
                                   "learning rate or disable mixed precision (--set amp=false).")
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(float(loss.detach()))
            if run_bar is not None:
                run_bar.update(1)
                run_bar.set_postfix(loss=f"{np.mean(losses):.4f}", refresh=False)
        lr = float(optimizer.param_groups[0]["lr"])
        scheduler.step()
        train_seconds = time.perf_counter() - epoch_start
        row: Dict[str, Any] = {"epoch": epoch + 1, "phase": state["phase"], "optimizer": phase["type"], "lr": lr,
                               "train_loss": float(np.mean(losses)),
                               "samples_per_second": steps_per_epoch * batch_size / max(train_seconds, 1e-9)}
        every = int(val_cfg.get("every", 1) or 1)
        metric = float("nan")
        if val_items and ((epoch + 1) % every == 0):
            result = validate_items(model, val_items, card, device, amp=use_amp and on_cuda)
            metric = result["mean_dsc"]
            row["val_mean_dsc"] = metric
            row.update({f"val_dsc_{k}": v for k, v in result["dsc"].items()})
        else:
            row["val_mean_dsc"] = float("nan")
        improved = math.isfinite(metric) and metric > state["best_metric"] + min_delta
        if not val_items:  # nothing to validate on: the last epoch is the best
            improved, metric = True, -float(row["train_loss"])
        row["best"] = bool(improved)
        row["epoch_seconds"] = time.perf_counter() - epoch_start
        row["elapsed_hours"] = (elapsed_before + time.perf_counter() - start_time) / 3600.0
        state["history"].append(row)
        state["epoch"] = epoch + 1
        state["elapsed"] = elapsed_before + time.perf_counter() - start_time
        if improved:
            state["best_metric"], state["best_epoch"], state["stale"] = metric, epoch + 1, 0
        elif math.isfinite(metric):
            state["stale"] += 1
        phase_over = state["epoch"] - state["phase_start"] >= int(phase["epochs"])
        if patience and state["stale"] >= patience:
            say(f"No validation improvement for {patience} epochs: ending phase {state['phase']}.")
            state["stopped_early"] = phase_over = True
        if improved:
            _save_checkpoint(checkpoint_path(run_dir, "best"), payload())
        if phase_over:
            state["phase"] += 1
            state["phase_start"], state["stale"] = state["epoch"], 0
            if state["phase"] < len(phases):
                nxt = phases[state["phase"]]
                say(f"Phase {state['phase']}: {nxt['type']} lr {nxt['lr']} for {nxt['epochs']} epochs, "
                    "starting from the best weights so far.")
                if checkpoint_path(run_dir, "best").is_file():
                    model.load_state_dict(_load_checkpoint(checkpoint_path(run_dir, "best"))["model"])
                optimizer = _make_optimizer(model, nxt, weight_decay)
                scheduler = _make_scheduler(optimizer, nxt)
        if (epoch + 1) % int(config["checkpoint"].get("every", 1) or 1) == 0 or improved or phase_over:
            _save_checkpoint(checkpoint_path(run_dir, "last"), payload())
        _write_metrics(run_dir / "metrics.csv", state["history"], output_classes(card))
        say(f"epoch {epoch + 1:4d}  {phase['type']} lr {lr:.2e}  loss {row['train_loss']:.4f}  "
            f"val mean DSC {row['val_mean_dsc']:.4f}{'  *best*' if improved else ''}  "
            f"({row['epoch_seconds']:.1f} s, {row['samples_per_second']:.2f} samples/s)")
        per_class = [(k[len("val_dsc_"):], v) for k, v in row.items() if k.startswith("val_dsc_")]
        if per_class and math.isfinite(metric):
            say("           " + "  ".join(f"{name} {value:.3f}" for name, value in per_class))
        epochs_this_call += 1
        if callback is not None and callback(row):
            say(f"Stopped after epoch {epoch + 1} on request.")
            break
    if run_bar is not None:
        run_bar.close()
    _save_checkpoint(checkpoint_path(run_dir, "last"), payload())
    _write_metrics(run_dir / "metrics.csv", state["history"], output_classes(card))
    if state["history"]:
        try:
            plot_curve(run_dir / "training_curve.png", state["history"], config["name"])
        except Exception as exc:  # a plotting problem must not lose a trained model
            say(f"Could not draw the training curve: {exc}")
    finished = state["phase"] >= len(phases)
    package_dir = None
    if export and (finished or stop_after_epochs is None):
        from .export import export_run

        package_dir = export_run(run_dir, data_report=data_report, command=command,
                                 hardware={**_hardware(device), "precision": precision}, say=say)
    return RunResult(run_dir, package_dir, float(state["best_metric"]), int(state["best_epoch"]),
                     int(state["epoch"]), list(state["history"]), bool(state["stopped_early"]),
                     float(state["elapsed"]))

