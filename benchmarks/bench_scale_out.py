"""Scaling out (docs/scaling_out.md): what the two engines cost and give on this machine. Printed, not
asserted.

1. ``headseg segment`` of N phantom cases (default 8) serially, with ``--cluster local:W`` (default 2)
   and with ``--cluster local:1``: the wall times, their ratio, and the engine's overhead per case,
   ``(t[local:1] - t[serial]) / N`` (one worker with all the cores against the serial run: what Dask's
   start, the task round trips, staging and the per-worker model load add), besides the cluster's start
   (a LocalCluster started and closed with nothing to do).
2. DDP: seconds per optimisation step of the demo recipe's SV-net (base_channels 8) on a global batch of
   2 windows, 1 process x 2 against ``torchrun --nproc_per_node=2`` x 1 (gloo, SyncedBatchNorm3d on the
   CPU), i.e. what the gradient and BatchNorm all-reduces cost against the second process's compute.

    python benchmarks/bench_scale_out.py [--cases 8] [--workers 2] [--model orbit-svnet-demo] [--steps 4]
                                         [--coarse] [--skip-batch] [--skip-ddp] [--skip-worker] [--rounds 4]

0. One case segmented in this process, in a ``local:1`` worker with Dask's own worker settings, and in one
   with ``headseg.run.cluster.local_worker_settings`` (what ``--cluster local:N`` uses), interleaved round by
   round: the seconds and the worker / in-process ratio, before and after that fix; beside them the suspects
   (another thread of this process, OpenMP waiting actively, glibc's own malloc trim, a worker inside this
   process). Each cluster starts from this process's own environment: Dask's nanny writes its worker
   variables into the parent's environment and never overrides one already set, so one cluster's
   ``OMP_NUM_THREADS=1`` would otherwise reach the next cluster's workers.

Both sides of each comparison run the same code (``headseg.cli.main``; ``training.trainer.Trainer``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

WINDOW = (32, 112, 96)  # the demo recipe's training window (bench_training.py's svnet-demo)


def _segment(cases: Path, out: Path, model: str, cluster: Optional[str]) -> Dict:
    """Wall time of one ``headseg segment`` in a fresh process (each run pays its own imports)."""
    command = [sys.executable, "-m", "headseg", "segment", str(cases), "--task", "orbit", "--model", model,
               "-o", str(out), "--device", "cpu", "--progress-format", "json", "--no-uncertainty"]
    if cluster:
        command += ["--cluster", cluster]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"headseg segment {'--cluster ' + cluster if cluster else ''} failed:\n{done.stderr[-3000:]}")
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    case_seconds = [float(e["seconds"]) for e in events if e.get("event") == "result"]
    return {"wall": seconds, "segment": sum(case_seconds), "cases": len(case_seconds)}


def _cluster_start(workers: int) -> float:
    from distributed import Client, LocalCluster

    start = time.perf_counter()
    with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            client.wait_for_workers(workers)
    return time.perf_counter() - start


def bench_batch(n_cases: int, workers: int, model: str, coarse: bool) -> None:
    from headseg.synth.phantoms import write_phantom_cases

    with tempfile.TemporaryDirectory(prefix="headseg_scale_") as tmp:
        cases = Path(tmp) / "cases"
        grid = {"spacing": (0.8, 0.8, 1.5)} if coarse else {}  # the tests' grid; default 0.5 x 0.5 x 1 mm
        write_phantom_cases(str(cases), n_cases, seed=3, **grid)
        print(f"headseg segment: {n_cases} phantom cases ({'0.8 x 0.8 x 1.5' if coarse else '0.5 x 0.5 x 1.0'} mm), "
              f"model {model}, {os.cpu_count()} CPU cores")
        serial = _segment(cases, Path(tmp) / "serial", model, None)
        many = _segment(cases, Path(tmp) / "many", model, f"local:{workers}")
        one = _segment(cases, Path(tmp) / "one", model, "local:1")
        start = _cluster_start(workers)
    for name, run in (("serial", serial), (f"--cluster local:{workers}", many), ("--cluster local:1", one)):
        print(f"  {name:<20} {run['wall']:7.1f} s wall   {run['segment'] / max(run['cases'], 1):6.2f} s "
              "segmenting per case (as each worker reports it)")
    print(f"  serial / local:{workers} = {serial['wall'] / many['wall']:.2f}x")
    print(f"  engine overhead per case (local:1 - serial) / {n_cases} = {(one['wall'] - serial['wall']) / n_cases:+.2f} s"
          f"   (LocalCluster of {workers} started and closed empty: {start:.1f} s)")


# -- one case inside a Dask worker against the same case in this process ----------------------------------
def _case_seconds(case, outputs, settings) -> float:
    """The pipeline's own seconds for one case (``headseg.run.segment_case.segment_case_on_worker``), wherever it runs."""
    from headseg.run.segment_case import segment_case_on_worker

    return float(segment_case_on_worker(case, outputs, settings).seconds)


def _on_a_thread(case, outputs, settings) -> float:
    """:func:`_case_seconds` on a new thread of this process, as a Dask worker runs a task off its main thread."""
    import threading

    result: List[float] = []
    thread = threading.Thread(target=lambda: result.append(_case_seconds(case, outputs, settings)))
    thread.start()
    thread.join()
    return result[0]


def _without(settings: Dict, variable: str) -> Dict:
    """``settings`` with ``variable`` left out of the workers' environment."""
    environ = dict(settings["distributed.nanny.pre-spawn-environ"])
    environ.pop(variable, None)
    return {**settings, "distributed.nanny.pre-spawn-environ": environ}


#: What Dask's nanny writes into this process's own environment before it spawns a worker (the worker
#: inherits it): a variant that leaves one out must also take it out of here, or an earlier cluster's
#: value leaks into the next worker.
_WORKER_VARIABLES = ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                     "OMP_WAIT_POLICY")


def _local_cluster(settings: Dict, processes: bool = True):
    import dask
    from distributed import Client, LocalCluster

    before = dict(os.environ)
    wanted = settings.get("distributed.nanny.pre-spawn-environ",
                          dask.config.get("distributed.nanny.pre-spawn-environ", default={})) or {}
    for variable in _WORKER_VARIABLES:
        if variable not in wanted:
            os.environ.pop(variable, None)
    try:
        with dask.config.set(settings):
            cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=processes, dashboard_address=None)
    finally:
        os.environ.clear()
        os.environ.update(before)
    return cluster, Client(cluster)


def bench_worker_ratio(rounds: int, model: str, coarse: bool) -> None:
    """Seconds per case in this process, in a ``local:1`` worker with Dask's own worker settings (as before
    ``headseg.run.cluster.local_worker_settings``) and with HeadSeg's, interleaved round by round on one case
    so that the load of a shared machine falls on all three alike; the first round (model loads) is dropped."""
    import statistics

    from headseg.io.cases import Case, discover_cases
    from headseg.run.cluster import local_worker_settings, worker_threads
    from headseg.run.plan import case_outputs
    from headseg.run.segment_case import SegmentSettings
    from headseg.segment.packages import find_package
    from headseg.synth.phantoms import write_phantom_cases

    with tempfile.TemporaryDirectory(prefix="headseg_worker_") as tmp:
        grid = {"spacing": (0.8, 0.8, 1.5)} if coarse else {}
        write_phantom_cases(str(Path(tmp) / "cases"), 1, seed=3, **grid)
        (case,) = [Case(n, Path(p)) for n, p in discover_cases([str(Path(tmp) / "cases")])]
        settings = SegmentSettings(str(find_package(model, task="orbit").path), "cpu", uncertainty=False,
                                   torch_threads=worker_threads(1))
        ours = local_worker_settings(1)
        runners = {"in this process": None, "in this process, another thread": "thread",
                   "local:1, Dask's worker settings": _local_cluster({}),
                   "local:1, headseg's worker settings": _local_cluster(ours),
                   "local:1, headseg's, OpenMP waits actively": _local_cluster(_without(ours, "OMP_WAIT_POLICY")),
                   "local:1, headseg's, glibc's own malloc trim": _local_cluster(_without(ours, "MALLOC_TRIM_THRESHOLD_")),
                   "a Dask worker inside this process": _local_cluster(ours, processes=False)}
        times: Dict[str, List[float]] = {name: [] for name in runners}
        try:
            for n in range(rounds + 1):
                for name, runner in runners.items():
                    folder = Path(tmp) / f"out{n}_{len(times[name])}_{abs(hash(name)) % 1000}"
                    folder.mkdir()
                    outputs = case_outputs(folder, case.name)
                    if runner is None:
                        seconds = _case_seconds(case, outputs, settings)
                    elif runner == "thread":
                        seconds = _on_a_thread(case, outputs, settings)
                    else:
                        seconds = runner[1].submit(_case_seconds, case, outputs, settings, pure=False).result()
                    if n:
                        times[name].append(seconds)
        finally:
            for runner in runners.values():
                if isinstance(runner, tuple):
                    runner[1].close()
                    runner[0].close()
    base = statistics.median(times["in this process"])
    print(f"One phantom case, model {model}, {worker_threads(1)} torch threads everywhere, {rounds} interleaved rounds "
          f"after a warm-up (median seconds segmenting; worker / this process)")
    for name, values in times.items():
        print(f"  {name:<44} {statistics.median(values):7.2f} s   {statistics.median(values) / base:5.2f}x   "
              f"({', '.join(f'{v:.1f}' for v in values)})")


# -- DDP -------------------------------------------------------------------------------------------------
def _step_times(steps: int, local_batch: int, sync_bn: bool = True) -> List[float]:
    """Seconds of each step after one warm-up step, on this process's share of the batch."""
    import torch

    from headseg.models import build_model
    from training.distributed import setup, sync_batchnorm
    from training.losses import build_loss
    from training.trainer import Precision, Trainer, make_optimizer

    device = torch.device("cpu")
    ranks = setup(device)
    torch.manual_seed(0)
    model: torch.nn.Module = build_model("svnet", 1, 6, base_channels=8)
    if ranks.active:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(sync_batchnorm(model, ranks, device) if sync_bn else model)
    loss = build_loss({"type": "hybrid", "activation": "softmax"})
    phase = {"type": "adam", "lr": 1e-3, "epochs": 1}
    trainer = Trainer(model, loss, make_optimizer(model, phase, 0.0), None, Precision(device))
    generator = torch.Generator().manual_seed(ranks.rank)
    images = torch.randn(local_batch, 1, *WINDOW, generator=generator)
    labels = torch.randint(0, 6, (local_batch, *WINDOW), generator=generator)
    masks = torch.ones(local_batch, 6)
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        trainer.train_step(images, labels, masks)
        ranks.barrier()
        times.append(time.perf_counter() - start)
    ranks.close()
    return times[1:]


def bench_ddp(steps: int) -> None:
    import torch

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    one = _step_times(steps, 2)
    mean1 = sum(one) / len(one)
    two = {}
    for sync_bn in (True, False):
        launched = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", __file__,
             "--ddp-worker", "--steps", str(steps)] + ([] if sync_bn else ["--plain-bn"]),
            capture_output=True, text=True, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": str(max(1, threads // 2))})
        if launched.returncode != 0:
            raise SystemExit(f"torchrun failed:\n{launched.stderr[-3000:]}")
        times = json.loads([line for line in launched.stdout.splitlines() if line.startswith("{")][0])["times"]
        two[sync_bn] = sum(times) / len(times)
    print(f"DDP: SV-net base_channels 8, global batch 2 x 1 x {WINDOW[0]} x {WINDOW[1]} x {WINDOW[2]}, "
          f"{steps} steps after a warm-up, {threads} CPU cores")
    print(f"  1 process x batch 2 ({threads} threads)        {mean1:6.2f} s/step")
    for sync_bn, mean2 in two.items():
        print(f"  torchrun 2 processes x batch 1 ({max(1, threads // 2)} thread(s) each), "
              f"{'SyncedBatchNorm3d' if sync_bn else 'per-rank BatchNorm'}   {mean2:6.2f} s/step"
              f"   (1 process / 2 processes = {mean1 / mean2:.2f}x)")


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--model", default="orbit-svnet-demo")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--coarse", action="store_true", help="phantoms on the tests' 0.8 x 0.8 x 1.5 mm grid")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--skip-ddp", action="store_true")
    parser.add_argument("--skip-worker", action="store_true", help="skip the per-case worker / in-process ratio")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds of the worker / in-process ratio")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--plain-bn", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.ddp_worker:  # one rank under torchrun
        times = _step_times(args.steps, 1, sync_bn=not args.plain_bn)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps({"times": times}), flush=True)
        return 0
    if not args.skip_worker:
        bench_worker_ratio(args.rounds, args.model, args.coarse)
    if not args.skip_batch:
        bench_batch(args.cases, args.workers, args.model, args.coarse)
    if not args.skip_ddp:
        bench_ddp(args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
