"""One optimisation step and what it needs: the model, the loss, the optimiser phase and the precision.

:class:`Trainer` owns the objects one step changes; :meth:`Trainer.train_step` is the step itself (forward
under autocast, loss in float32, backward, optimiser and scaler), used by the training loop
(``training.engine``) and timed by ``benchmarks/bench_training.py``, so both run the same code.

Optimiser phases (the AnatomyNet paper: RMSprop, then SGD from the best weights) are built here from the recipe's
``optimizer.phases`` entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch

from headseg.errors import HeadSegError

__all__ = ["OPTIMIZERS", "Precision", "Trainer", "TrainingDivergedError", "autocast_dtype", "check_phases",
           "make_optimizer", "make_scheduler"]


class TrainingDivergedError(HeadSegError, RuntimeError):
    """The loss became NaN or infinite: a recipe problem (learning rate, precision), not a bug."""


OPTIMIZERS = ("adam", "adamw", "rmsprop", "sgd")

LossFunction = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


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


@dataclass(frozen=True)
class Precision:
    """How a step computes: the device, the autocast type (None: float32) and the memory format."""

    device: torch.device
    amp_dtype: Optional[torch.dtype] = None
    channels_last: bool = False

    @classmethod
    def for_recipe(cls, config: Dict[str, Any], device: torch.device) -> Precision:
        """The recipe's choice: ``amp`` (default on) where it is fast, on a CPU only with ``cpu_amp``;
        ``channels_last`` (default on) where it pays, on CUDA or under autocast."""
        amp_dtype = autocast_dtype(device) if bool(config.get("amp", True)) else None
        if device.type == "cpu" and not config.get("cpu_amp", False):
            amp_dtype = None
        channels_last = bool(config.get("channels_last", True)) and (device.type == "cuda" or amp_dtype is not None)
        return cls(device, amp_dtype, channels_last)

    @property
    def use_amp(self) -> bool:
        return self.amp_dtype is not None

    @property
    def name(self) -> str:
        return {None: "float32", torch.float16: "float16 autocast", torch.bfloat16: "bfloat16 autocast"}[self.amp_dtype]

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model on the device, in the memory format the steps use."""
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # torch's stubs lack it
        return model


class Trainer:
    """The model, loss, optimiser, scheduler and gradient scaler of a run, and the step that changes them.

    Args:
        model: the network, already prepared with :meth:`Precision.prepare`.
        loss_fn: ``loss_fn(logits, labels, class_mask)``; logits reach it in float32.
        optimizer, scheduler: the current phase's (see :meth:`start_phase`); the scheduler may be None
            when only steps are run (the benchmark).
        precision: device, autocast type and memory format.
    """

    def __init__(self, model: torch.nn.Module, loss_fn: LossFunction, optimizer: torch.optim.Optimizer,
                 scheduler: Optional[Any], precision: Precision) -> None:
        self.model = model
        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.precision = precision
        # Loss scaling only for float16 on CUDA; bfloat16 has float32's range and needs none.
        self.scaler = torch.amp.GradScaler("cuda", enabled=precision.use_amp and precision.device.type == "cuda")

    def train_step(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor, where: str = "") -> float:
        """One optimisation step on a batch (``[B, 1, k, j, i]`` images, ``[B, k, j, i]`` labels, ``[B, C]``
        class masks, on any device); returns the loss. ``where`` ("at epoch 3, step 7") goes into the error
        raised when the loss is not finite."""
        device = self.precision.device
        images, labels, masks = images.to(device), labels.to(device), masks.to(device)
        if self.precision.channels_last:
            images = images.contiguous(memory_format=torch.channels_last_3d)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=self.precision.amp_dtype or torch.float32,
                            enabled=self.precision.use_amp):
            logits = self.model(images)
        loss = self.loss_fn(logits.float(), labels, masks)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"The loss became {float(loss.detach())}{' ' + where if where else ''}: lower the learning rate, or "
                "turn off mixed precision (--set amp=false; bf16 autocast made SV-net's loss NaN on a CPU, with "
                "channels_last_3d within 3-32 steps and without it within 25 steps at lr 1e-3), then continue "
                "from the last checkpoint with --resume.")
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())

    @property
    def network(self) -> torch.nn.Module:
        """The model itself, without the DistributedDataParallel wrapper of a torchrun run: what is saved,
        loaded and validated (its state dict has no ``module.`` prefix, whatever the number of processes)."""
        from torch.nn.parallel import DistributedDataParallel

        return self.model.module if isinstance(self.model, DistributedDataParallel) else self.model

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def step_schedule(self) -> None:
        """The end of an epoch for the learning-rate schedule (schedules count epochs, not steps)."""
        if self.scheduler is not None:
            self.scheduler.step()

    def start_phase(self, phase: Dict[str, Any], weight_decay: float) -> None:
        """A new optimiser and schedule for ``phase`` (a recipe ``optimizer.phases`` entry)."""
        self.optimizer = make_optimizer(self.model, phase, weight_decay)
        self.scheduler = make_scheduler(self.optimizer, phase)

    def state_dicts(self) -> Dict[str, Any]:
        """The ``model``, ``optimizer``, ``scheduler`` and ``scaler`` entries of a checkpoint."""
        return {"model": self.network.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
                "scaler": self.scaler.state_dict()}

    def load_state_dicts(self, checkpoint: Dict[str, Any], phase: Dict[str, Any], weight_decay: float) -> None:
        """Restore the state of a checkpoint whose phase in progress is ``phase``."""
        self.network.load_state_dict(checkpoint["model"])
        self.optimizer = make_optimizer(self.model, phase, weight_decay)
        self.scheduler = scheduler = make_scheduler(self.optimizer, phase)
        # The optimiser's state after the scheduler's creation: a new scheduler resets the learning rate to
        # its epoch-0 value, which would restart a poly or cosine schedule from the top.
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        state = {k: v for k, v in checkpoint["scheduler"].items() if k not in ("T_max", "eta_min", "_get_lr_called_within_step")}
        state.setdefault("lr_lambdas", [None] * len(self.optimizer.param_groups))  # checkpoints of CosineAnnealingLR
        scheduler.load_state_dict(state)
        if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):  # the phase's schedule as it is now
            for group, base, fn in zip(self.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base * fn(scheduler.last_epoch)
            scheduler._last_lr = [group["lr"] for group in self.optimizer.param_groups]
        self.scaler.load_state_dict(checkpoint["scaler"])


# -- optimiser phases ----------------------------------------------------------------------------------
def check_phases(config: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The recipe's optimiser phases, refused with the entry's name when one cannot be built."""
    phases = config["optimizer"].get("phases") or []
    if not phases:
        raise ValueError("The recipe's optimizer.phases is empty; give at least one phase.")
    for n, phase in enumerate(phases):
        if phase.get("type") not in OPTIMIZERS:
            raise ValueError(f"optimizer.phases.{n}.type must be one of {OPTIMIZERS}, got {phase.get('type')!r}.")
        if int(phase.get("epochs", 0)) < 1 or float(phase.get("lr", 0)) <= 0:
            raise ValueError(f"optimizer.phases.{n} needs epochs >= 1 and lr > 0.")
    return list(phases)


def make_optimizer(model: torch.nn.Module, phase: Dict[str, Any], weight_decay: float) -> torch.optim.Optimizer:
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


def make_scheduler(optimizer: torch.optim.Optimizer, phase: Dict[str, Any]) -> Any:
    schedule = phase.get("schedule", "constant")
    epochs = int(phase["epochs"])
    if schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: 1.0)
    if schedule == "cosine":
        # Closed form (not CosineAnnealingLR, whose recursive update and stored T_max would keep the old
        # length when a resumed run changes the phase's epochs).
        floor = float(phase.get("min_lr", 0.0)) / float(phase["lr"])
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda e: floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(e, epochs) / epochs)))
    if schedule == "poly":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda e: (1.0 - min(e, epochs - 1) / epochs) ** 0.9)
    raise ValueError(f"Unknown schedule {schedule!r}; use constant, cosine or poly.")
