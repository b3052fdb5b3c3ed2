"""Training on several processes with ``torchrun`` (DistributedDataParallel).

    torchrun --nproc_per_node=N -m training train --config RECIPE --data DATA --out RUN

``torchrun`` starts N copies of ``headseg-train`` and tells each its rank (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``); :func:`setup` joins them into one process group (gloo on the CPU, NCCL on GPUs, one GPU
per process). What changes, and why the run stays the run a single process would make:

* ``batch_size`` stays the *global* batch: each step's samples (positions of the epoch's order, drawn
  from ``(seed, epoch, position)`` as ever) are split into N equal shares, one per rank (:meth:`Distributed.shard`),
  and DDP averages the gradients, so N ranks x ``batch_size/N`` take the step one process takes with
  ``batch_size``. A checkpoint therefore knows nothing of N: a run resumes with another number of processes.
* BatchNorm sees the whole global batch: NCCL runs use torch's ``SyncBatchNorm``; on the CPU, where that
  does not run, :class:`SyncedBatchNorm3d` all-reduces the statistics (``sync_batchnorm: false`` in the
  recipe keeps per-rank statistics, which is faster and no longer equal to one process).
* Only rank 0 validates, writes ``log.txt``, ``metrics.csv``, checkpoints and the exported package; it
  sends its validation scores to the others (:meth:`Distributed.broadcast`) so every rank takes the same
  decisions (best epoch, phase change, early stop).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch
from torch import nn

__all__ = ["Distributed", "setup", "launched_ranks", "is_main_process", "SyncedBatchNorm3d", "sync_batchnorm"]


def launched_ranks() -> int:
    """How many processes ``torchrun`` started for this run (1 when it did not)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def is_main_process() -> bool:
    """True on rank 0 and in a run without ``torchrun``: the process that prints and writes."""
    return int(os.environ.get("RANK", "0") or 0) == 0


@dataclass
class Distributed:
    """This process's place in the run: rank of ``world`` processes (world 1: no process group)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    bn_group: Any = None  # the process group of SyncedBatchNorm3d (apart from DDP's gradient all-reduces)

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def local_batch(self, batch_size: int) -> int:
        """This rank's share of the global ``batch_size``; refused unless it divides evenly."""
        if batch_size % self.world:
            raise ValueError(f"batch_size {batch_size} cannot be split over {self.world} processes: with torchrun "
                             f"the recipe's batch_size is the global batch; make it a multiple of {self.world}.")
        return batch_size // self.world

    def shard(self, positions: Sequence[int]) -> List[int]:
        """This rank's contiguous share of one step's positions (rank 0 the first ones)."""
        share = len(positions) // self.world
        return list(positions[self.rank * share:(self.rank + 1) * share])

    def mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (a loss: each rank saw its share of the batch)."""
        if not self.active:
            return float(value)
        import torch.distributed as dist

        tensor = torch.tensor([float(value)], dtype=torch.float64, device=self._device())
        dist.all_reduce(tensor)
        return float(tensor.item()) / self.world

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.active:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0, device=self._device())
        return box[0]

    def barrier(self) -> None:
        """Wait for every rank (e.g. until rank 0 has written a checkpoint the others read)."""
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        """Leave the process group. No barrier: the other ranks need not wait while rank 0 exports."""
        if self.active:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def _device(self) -> torch.device:
        import torch.distributed as dist

        return torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else torch.device("cpu")


def setup(device: torch.device) -> Distributed:
    """Join the process group ``torchrun`` set up (nothing without torchrun, or with one process); the
    device this rank trains on is then :func:`rank_device`'s."""
    world = launched_ranks()
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))  # rank 0 validates alone meanwhile
    bn_group = dist.new_group(backend="gloo") if backend == "gloo" else None
    return Distributed(rank, world, local_rank, local_world, bn_group)


def rank_device(device: torch.device, ranks: Distributed) -> torch.device:
    """The device of this rank: its own GPU (``cuda:LOCAL_RANK``) on CUDA, else ``device``."""
    if ranks.active and device.type == "cuda":
        return torch.device("cuda", ranks.local_rank)
    return device


class SyncedBatchNorm3d(nn.BatchNorm3d):
    """BatchNorm3d whose training statistics are those of the global batch over all ranks, for the CPU
    (gloo), where ``torch.nn.SyncBatchNorm`` does not run. Two differentiable all-reduces per layer and
    step (mean, then the centred second moment, as BatchNorm computes them); evaluation uses the running
    statistics like any BatchNorm, and the state dict has BatchNorm3d's keys, so packages do not change."""

    group: Any = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized()
                and dist.get_world_size(self.group) > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        dims = [0, 2, 3, 4]
        values = x if x.dtype in (torch.float32, torch.float64) else x.float()  # statistics not in half precision
        count = torch.tensor([values.numel() / values.shape[1]], dtype=torch.float64)
        dist.all_reduce(count, group=self.group)
        n = float(count.item())
        mean = all_reduce(values.sum(dims), group=self.group) / n
        centred = values - mean.view(1, -1, 1, 1, 1)
        var = all_reduce(centred.square().sum(dims), group=self.group) / n
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1, 1) + self.bias.view(1, -1, 1, 1, 1)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                assert self.num_batches_tracked is not None
                self.num_batches_tracked += 1
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                            else float(self.momentum))
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                unbiased = var.detach() * (n / max(n - 1.0, 1.0))
                self.running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
        return out.to(x.dtype)


def sync_batchnorm(model: nn.Module, ranks: Distributed, device: torch.device) -> nn.Module:
    """``model`` with every BatchNorm computing global-batch statistics (see the module docstring)."""
    if not ranks.active:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _replace_batchnorm(model, ranks.bn_group)


def _replace_batchnorm(module: nn.Module, group: Optional[Any]) -> nn.Module:
    if isinstance(module, nn.BatchNorm3d) and not isinstance(module, SyncedBatchNorm3d):
        synced = SyncedBatchNorm3d(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
        synced.load_state_dict(module.state_dict())
        synced.to(next(iter(module.state_dict().values())).device)
        synced.train(module.training)
        synced.group = group
        return synced
    for name, child in module.named_children():
        replaced = _replace_batchnorm(child, group)
        if replaced is not child:
            setattr(module, name, replaced)
    return module
