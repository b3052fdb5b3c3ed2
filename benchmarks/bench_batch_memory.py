"""Memory over a batch: many small cases through read -> ``segment_volume`` -> write in ONE process, as
``headseg segment`` and the Slicer batch do. Prints the peak RSS of every case and the growth from the
first cases to the last; a leak (tensors, caches, logging handlers kept per case) shows as a steady slope.

Baseline, measured in the same run: the peak of the first cases after warm-up (imports, first model
call). The script reports growth = median peak of the last 5 cases - median peak of cases 2-6, and the
least-squares slope of the peaks over cases 2..N in MB per case.

    python benchmarks/bench_batch_memory.py [--cases 50] [--task han|orbit] [--model PACKAGE] [--keep DIR]

Without --model a tiny AnatomyNet (han) or SV-net (orbit) package with random weights is built: the
pipeline's memory behaviour, not accuracy, is measured.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


@dataclass
class CaseMemory:
    case: int
    peak_mb: float  # highest RSS sampled while the case ran
    after_mb: float  # RSS when the case was done
    seconds: float
    python_mb: float = float("nan")  # Python + numpy memory still allocated after the case (tracemalloc, after gc)


class PeakSampler:
    """Samples this process's RSS every ``interval`` s in a thread; ``reset()`` starts a new peak."""

    def __init__(self, interval: float = 0.005):
        self.process = psutil.Process(os.getpid())
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(self.interval)

    def reset(self) -> None:
        self.peak = self.process.memory_info().rss

    def __enter__(self) -> PeakSampler:
        self.reset()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def small_head_ct(seed: int, shape=(24, 48, 48), spacing=(2.0, 2.0, 2.5)):
    """A small int16 head-like CT (air, soft tissue, bone shell, noise); a different seed per case."""
    from headseg.geometry import Volume

    k, j, i = shape
    z, y, x = np.meshgrid(np.linspace(-1, 1, k), np.linspace(-1, 1, j), np.linspace(-1, 1, i), indexing="ij")
    rng = np.random.default_rng(seed)
    scale = 1.0 + 0.05 * rng.standard_normal(3)
    r = np.sqrt((x / (0.8 * scale[0])) ** 2 + (y / (0.85 * scale[1])) ** 2 + (z / (0.9 * scale[2])) ** 2)
    array = np.full(shape, -1000.0)
    array[r < 1.0] = 40.0
    array[(r > 0.8) & (r < 1.0)] = 1100.0
    array += rng.normal(0, 10, shape)
    return Volume(array.astype(np.int16), spacing, (-48.0, -48.0, -30.0))


def random_package(folder: Path, task: str):
    """A tiny package with random weights (han: AnatomyNet on openkbp's mandible; orbit: SV-net)."""
    import torch

    from headseg.models import build_model
    from headseg.segment.packages import write_package

    if task == "han":
        card = {
            "format_version": 1, "name": "bench-random-han", "task": "han", "architecture": "anatomynet",
            "architecture_params": {"widths": [4, 4, 4, 4], "blocks_per_stage": 1, "output_block_channels": 4},
            "in_channels": 1, "label_set": "openkbp", "classes": ["background", "mandible"],
            "output_activation": "softmax",
            "input": {"spacing_mm": [1.5, 1.5, 2.0], "orientation": "LPS",
                      "normalization": {"type": "window", "lower": -1000, "upper": 1000}},
            "inference": {"max_voxels": 64 ** 3, "patch_kji": [32, 64, 64], "batch_size": 2},
            "postprocess": {"fill_holes": True, "largest_component": True}, "synthetic": True, "weights": {},
        }
    else:
        card = {
            "format_version": 1, "name": "bench-random-orbit", "task": "orbit", "architecture": "svnet",
            "architecture_params": {"base_channels": 2}, "in_channels": 1, "label_set": "orbit",
            "classes": ["background", "superior_rectus", "lateral_rectus", "medial_rectus", "inferior_rectus",
                        "optic_nerve"],
            "output_activation": "softmax",
            "input": {"spacing_mm": [1.0, 1.0, 2.0], "orientation": "LPS", "window_kji": [16, 64, 64],
                      "normalization": {"type": "window", "lower": -200, "upper": 300}, "mirror_left": True},
            "inference": {"step_k": 8, "blend": "gaussian", "batch_size": 2},
            "postprocess": {"fill_holes": True, "largest_component": True}, "synthetic": True, "weights": {},
        }
    torch.manual_seed(0)
    model = build_model(card["architecture"], 1, len(card["classes"]), **card["architecture_params"])
    return write_package(folder, card, model.state_dict())


def write_cases(folder: Path, n_cases: int, task: str) -> List[Path]:
    from headseg.io import write_volume

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(n_cases):
        path = folder / f"case{n:03d}.nrrd"
        if not path.exists():
            if task == "orbit":
                from headseg.synth.phantoms import make_head_phantom

                image = make_head_phantom(seed=n % 5, spacing=(1.0, 1.0, 2.0)).image
            else:
                image = small_head_ct(n)
            write_volume(image, path)
        paths.append(path)
    return paths


def segment_in_one_process(case_paths: Sequence[Path], package, out_dir: Path,
                           on_case: Optional[Callable[[CaseMemory], None]] = None, trace_python: bool = True) -> List[CaseMemory]:
    """Read, segment and write every case in this process (one model, as the CLI does); per-case memory.

    RSS includes the allocator's reserve, which grows in steps and is returned late, so a small leak hides in
    its noise; ``trace_python`` also records, after a garbage collection, the bytes Python objects and numpy
    arrays still hold (numpy reports its buffers to tracemalloc): there a leak of one array per case shows.
    """
    import gc
    import tracemalloc

    from headseg.io import read_volume, write_segmentation
    from headseg.measure.volumes import volume_table, write_volume_csv
    from headseg.segment.pipeline import segment_volume

    out_dir.mkdir(parents=True, exist_ok=True)
    model = package.load_model("cpu")
    results: List[CaseMemory] = []
    if trace_python:
        tracemalloc.start()
    with PeakSampler() as sampler:
        for n, path in enumerate(case_paths):
            sampler.reset()
            start = time.perf_counter()
            volume = read_volume(path)
            result = segment_volume(volume, package, device="cpu", model=model)
            write_segmentation(result.labelmap, result.label_set, out_dir / f"{path.stem}.seg.nrrd", overwrite=True)
            write_volume_csv(volume_table(result.labelmap, result.label_set), out_dir / f"{path.stem}.csv")
            del volume, result
            seconds = time.perf_counter() - start
            python_mb = float("nan")
            if trace_python:
                gc.collect()
                python_mb = tracemalloc.get_traced_memory()[0] / 2**20
            record = CaseMemory(n + 1, sampler.peak / 2**20, psutil.Process(os.getpid()).memory_info().rss / 2**20,
                                seconds, python_mb)
            results.append(record)
            if on_case is not None:
                on_case(record)
    if trace_python:
        tracemalloc.stop()
    return results


def growth_summary(records: Sequence[CaseMemory]) -> dict:
    """Growth of the per-case peak: last 5 vs cases 2-6 (medians), and the slope over cases 2..N."""
    peaks = np.array([r.peak_mb for r in records])
    after = np.array([r.after_mb for r in records])
    python = np.array([r.python_mb for r in records])
    early = float(np.median(peaks[1:6]))
    late = float(np.median(peaks[-5:]))
    cases = np.arange(2, len(peaks) + 1)
    slope = float(np.polyfit(cases, peaks[1:], 1)[0]) if len(peaks) > 2 else 0.0
    return {"cases": len(records), "first_peak_mb": float(peaks[0]), "early_peak_mb": early, "late_peak_mb": late,
            "peak_growth_mb": late - early, "slope_mb_per_case": slope,
            "rss_after_growth_mb": float(np.median(after[-5:]) - np.median(after[1:6])),
            "python_growth_mb": float(python[-1] - python[1]) if len(python) > 1 else 0.0,
            "max_peak_mb": float(peaks.max())}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=50)
    parser.add_argument("--task", choices=("han", "orbit"), default="han")
    parser.add_argument("--model", help="model package folder (default: a tiny random package built here)")
    parser.add_argument("--keep", help="write cases and results here instead of a temporary folder")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)  # kind to a shared machine; memory, not speed, is measured
    work = Path(args.keep or tempfile.mkdtemp(prefix="headseg_batch_"))
    if args.model:
        from headseg.segment.packages import load_package

        package = load_package(args.model)
    else:
        package = random_package(work / "model", args.task)
    cases = write_cases(work / "cases", args.cases, package.task)
    print(f"{len(cases)} cases, model {package.name}, work folder {work}")
    print(f"{'case':>5} {'peak RSS MB':>12} {'RSS after MB':>13} {'Python+numpy MB':>16} {'seconds':>8}")

    def show(r: CaseMemory) -> None:
        print(f"{r.case:>5} {r.peak_mb:>12.1f} {r.after_mb:>13.1f} {r.python_mb:>16.2f} {r.seconds:>8.2f}", flush=True)

    records = segment_in_one_process(cases, package, work / "out", on_case=show)
    s = growth_summary(records)
    print(f"\npeak RSS: case 1 {s['first_peak_mb']:.1f} MB (warm-up), cases 2-6 median {s['early_peak_mb']:.1f} MB, "
          f"last 5 median {s['late_peak_mb']:.1f} MB")
    print(f"growth over the batch: {s['peak_growth_mb']:+.1f} MB (peak), {s['rss_after_growth_mb']:+.1f} MB (RSS "
          f"after a case); slope {s['slope_mb_per_case'] * 1024:+.0f} KB per case over {s['cases']} cases")
    print(f"Python objects + numpy arrays held after a case: {s['python_growth_mb'] * 1024:+.0f} KB from case 2 to "
          f"case {s['cases']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
