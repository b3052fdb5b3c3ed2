"""Training throughput: seconds per optimisation step (forward, loss, backward, optimiser) and batches /
cases per second for SV-net and AnatomyNet, on the CPU and, when there is one, the GPU (mixed precision
and channels-last there, as ``headseg-train`` trains).

Baseline, measured in the same run: the time ``headseg-train`` spends making the batch (window cut +
augmentation by ``training.data.SampleSource``) is printed next to the step time, as a ratio. The data
path should be a small fraction of a step; if it is not, the loader is the bottleneck.

    python benchmarks/bench_training.py [--full] [--steps 3] [--device auto|cpu|cuda] [--threads N]

Configurations (tensors ``[batch, 1, k, j, i]``):

* ``svnet-demo``: SV-net base_channels 8, 2 x 32 x 112 x 96, Dice + focal (the shipped demo's recipe).
* ``svnet-paper`` (``--full``): SV-net base_channels 16, 4 x 32 x 256 x 256, sigmoid cross-entropy,
  Adam -- the SV-net paper's batch (the paper: 1.68 s per batch on a P100). Needs ~20 GB on a CPU; on the CPU
  ``--full`` runs it with batch 1 unless ``--full-batch`` says otherwise, and reports per-case numbers.
* ``anatomynet-cpu``: the shipped head-and-neck model's CPU recipe (``anatomynet_openkbp_cpu``): AnatomyNet
  widths 16/20/24/28, 2 x 64 x 96 x 96 patches, marginal loss, AdamW. On the CPU every configuration runs
  twice, in float32 and with bfloat16 autocast + channels_last_3d where the CPU has native bf16 (as the
  recipe's ``cpu_amp`` trains), and the float32 / bf16 step-time ratio is printed.
* ``anatomynet``: AnatomyNet (paper widths), one whole OpenKBP-sized volume 1 x 128 x 128 x 128, hybrid
  masked loss, RMSprop -- the AnatomyNet paper's batch of one whole volume. ``--full`` adds a PDDCA-sized volume
  1 x 96 x 256 x 256 (an average head-and-neck CT resampled to 1 x 1 x 2.5 mm is about this size).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from headseg.models import build_model, count_parameters  # noqa: E402
from training.augment import AugmentOptions  # noqa: E402
from training.data import Item, SampleSource, collate  # noqa: E402
from training.losses import SegmentationLoss  # noqa: E402
from training.trainer import Precision, Trainer, autocast_dtype, make_optimizer  # noqa: E402


def _configs(full: bool, full_batch: int, device: torch.device) -> List[Dict]:
    configs = [
        {"name": "svnet-demo", "arch": "svnet", "params": {"base_channels": 8}, "classes": 6,
         "shape": (32, 112, 96), "batch": 2, "loss": ("hybrid", "softmax"), "opt": "adam"},
        {"name": "anatomynet-cpu", "arch": "anatomynet", "params": {"widths": [16, 20, 24, 28]}, "classes": 7,
         "shape": (64, 96, 96), "batch": 2, "loss": ("marginal", "softmax"), "opt": "adamw"},
        {"name": "anatomynet", "arch": "anatomynet", "params": {}, "classes": 8,
         "shape": (128, 128, 128), "batch": 1, "loss": ("hybrid", "softmax"), "opt": "rmsprop"},
    ]
    if full:
        configs.insert(1, {"name": "svnet-paper", "arch": "svnet", "params": {"base_channels": 16}, "classes": 6,
                           "shape": (32, 256, 256), "batch": 4 if device.type == "cuda" else full_batch,
                           "loss": ("sigmoid_ce", "sigmoid"), "opt": "adam"})
        configs.append({"name": "anatomynet-pddca", "arch": "anatomynet", "params": {}, "classes": 10,
                        "shape": (96, 256, 256), "batch": 1, "loss": ("hybrid", "softmax"), "opt": "rmsprop"})
    return configs


def _synthetic_item(shape: Sequence[int], classes: int, seed: int = 0) -> Item:
    """A normalised image with a few labelled boxes (the data path's cost does not depend on content)."""
    rng = np.random.default_rng(seed)
    image = rng.random(shape, dtype=np.float32)
    labels = np.zeros(shape, np.uint8)
    k, j, i = shape
    for c in range(1, classes):
        z, y, x = rng.integers(0, k - 4), rng.integers(0, j - 8), rng.integers(0, i - 8)
        labels[z:z + 4, y:y + 8, x:x + 8] = c
    return Item("synthetic", "", image, labels, np.ones(classes, np.float32))


def bench(config: Dict, device: torch.device, steps: int, amp: bool) -> Dict:
    """Time ``training.trainer.Trainer.train_step``, the step ``headseg-train`` runs, on synthetic batches;
    ``amp``: the device's autocast type (float16 on CUDA, bfloat16 on a CPU with native bf16) and
    channels_last_3d, as ``Precision.for_recipe`` chooses them."""
    torch.manual_seed(0)
    on_cuda = device.type == "cuda"
    amp_dtype = autocast_dtype(device) if amp else None
    precision = Precision(device, amp_dtype, channels_last=on_cuda or amp_dtype is not None)
    model = precision.prepare(build_model(config["arch"], 1, config["classes"], **config["params"]))
    loss_fn = SegmentationLoss(config["loss"][0], activation=config["loss"][1])
    phase = {"adam": {"type": "adam", "lr": 1e-4}, "adamw": {"type": "adamw", "lr": 2e-3, "weight_decay": 1e-4},
             "rmsprop": {"type": "rmsprop", "lr": 2e-3}}[config["opt"]]
    trainer = Trainer(model, loss_fn, make_optimizer(model, phase, weight_decay=0.0), None, precision)
    batch, shape = config["batch"], tuple(config["shape"])
    bigger = (shape[0] + 8, shape[1], shape[2])  # windows are cut from a longer crop, as in training
    source = SampleSource([_synthetic_item(bigger, config["classes"])], shape, AugmentOptions(probability=1.0))

    def make_batch(seed: int):
        return collate([source.sample(0, seed * 100 + n) for n in range(batch)])

    def step(images, labels, masks):
        trainer.train_step(images, labels, masks)
        if on_cuda:
            torch.cuda.synchronize(device)

    data_seconds, step_seconds = [], []
    for n in range(steps + 1):  # the first step warms up (allocations, kernel choice) and is not counted
        start = time.perf_counter()
        images, labels, masks = make_batch(n)
        made = time.perf_counter()
        step(images, labels, masks)
        done = time.perf_counter()
        if n:
            data_seconds.append(made - start)
            step_seconds.append(done - made)
    step_s = float(np.median(step_seconds))
    data_s = float(np.median(data_seconds))
    peak = torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else float("nan")
    return {"name": config["name"], "precision": precision.name, "params": count_parameters(model), "batch": batch, "shape": shape,
            "step_s": step_s, "data_s": data_s, "batches_per_s": 1.0 / step_s, "cases_per_s": batch / step_s,
            "gpu_gib": peak}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true", help="add the paper-size configurations")
    parser.add_argument("--full-batch", type=int, default=1, help="SV-net paper-size batch on the CPU (default 1)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration (after one warm-up)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: torch's default)")
    parser.add_argument("--only", default="", help="comma-separated configuration names to run")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = []
    if args.device in ("auto", "cpu"):
        devices.append(torch.device("cpu"))
    if args.device in ("auto", "cuda") and torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    print(f"torch {torch.__version__}, CPU threads {torch.get_num_threads()}"
          + (f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"))
    print(f"{'device':<6} {'config':<17} {'precision':<18} {'params':>10} {'batch x k x j x i':>22} {'s/step':>8} "
          f"{'batch/s':>8} {'cases/s':>8} {'data s':>8} {'data/step':>9} {'GPU GiB':>8}")
    for device in devices:
        # CUDA: mixed precision only. CPU: float32, then the bf16 autocast the CPU recipe uses (if native).
        modes = [True] if device.type == "cuda" else [False] + ([True] if autocast_dtype(device) else [])
        for config in _configs(args.full, args.full_batch, device):
            if args.only and config["name"] not in args.only.split(","):
                continue
            times = {}
            for amp in modes:
                r = bench(config, device, args.steps, amp=amp)
                times[amp] = r["step_s"]
                dims = f"{r['batch']} x " + " x ".join(str(s) for s in r["shape"])
                print(f"{device.type:<6} {r['name']:<17} {r['precision']:<18} {r['params']:>10,} {dims:>22} "
                      f"{r['step_s']:>8.2f} {r['batches_per_s']:>8.3f} {r['cases_per_s']:>8.3f} {r['data_s']:>8.3f} "
                      f"{r['data_s'] / r['step_s']:>9.3f} {r['gpu_gib']:>8.2f}", flush=True)
            if len(times) == 2:
                print(f"{'':<6} {config['name']:<17} float32 / bf16 step time: {times[False] / times[True]:.2f}x",
                      flush=True)
    print("s/step = forward + loss + backward + optimiser step (median); data s = cutting and augmenting the "
          "batch on the CPU, the baseline measured in the same run. The SV-net paper: 1.68 s per batch of 4 x 32 x 256 "
          "x 256 on a P100.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
