"""``headseg segment`` end to end, this checkout against another commit, on the same CTs in one run.

A refactoring must not slow a user down. Both versions run as the command a user types (``python -m
headseg segment``: start-up, reading, model loading, the orbit search, the network, writing), taking
turns on the same input so that a busy machine slows both alike. The other commit is exported with
``git archive`` into a temporary folder (its shipped models included) and imported from there.

Inputs: for ``orbit``, the real GE head CT shipped in ``Testing/data`` resampled onto 512 x 512 x 200
voxels; for ``han``, one OpenKBP CT (``--data``) on the same clinical grid, or the orbit's CT when the
data set is not there. The printed ratio is this checkout's median time over the baseline's (below 1.05:
no slowdown within the noise of this machine).

    python benchmarks/bench_segment_versions.py --baseline 872fd33 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))


def export_commit(ref: str, folder: Path) -> Path:
    """The tree of ``ref`` written under ``folder`` (``git archive``), for importing that version."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", ref],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    return folder


def write_inputs(folder: Path, data_dir: Path, case: str) -> Dict[str, Path]:
    """The two CTs, as NIfTI files on a 512 x 512 x 200 clinical grid."""
    import numpy as np
    from bench_han_inference import clinical_grid_like
    from bench_orbit_inference import clinical_ct

    from headseg.io import read_volume, write_volume
    from headseg.resample import resample_to_grid

    inputs = {"orbit": folder / "orbit_ct.nii.gz"}
    write_volume(clinical_ct(), inputs["orbit"])
    han_ct = data_dir / "test" / case / "ct.nii.gz"
    if han_ct.is_file():
        ct = read_volume(han_ct)
        inputs["han"] = folder / "han_ct.nii.gz"
        write_volume(resample_to_grid(ct, clinical_grid_like(ct), interpolation="linear", default_value=-1000.0,
                                      dtype=np.int16), inputs["han"])
    else:
        inputs["han"] = inputs["orbit"]
    return inputs


def time_segment(tree: Path, ct: Path, task: str, out: Path, threads: int) -> float:
    """Seconds for one ``python -m headseg segment`` of ``ct`` with the code under ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "headseg", "segment", str(ct), "--task", task, "-o", str(out),
               "--overwrite", "--device", "cpu", "--progress-format", "none"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=str(out.parent))
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{tree.name}: segment --task {task} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds


def run(baseline: str, repeats: int, threads: int, data_dir: Path, case: str,
        tasks: Sequence[str]) -> Dict[str, Dict[str, float]]:
    results: Dict[str, Dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="headseg-bench-") as tmp:
        root = Path(tmp)
        (root / "baseline").mkdir()
        old = export_commit(baseline, (root / "baseline").resolve())
        inputs = write_inputs(root, data_dir, case)
        trees = {"baseline": old, "current": REPO}
        for task in tasks:
            times: Dict[str, List[float]] = {"baseline": [], "current": []}
            for name, tree in trees.items():  # one warm-up each: file caches, torch's first import
                time_segment(tree, inputs[task], task, root / f"out_{name}", threads)
            for repeat in range(repeats):
                order = list(trees) if repeat % 2 == 0 else list(reversed(list(trees)))
                for name in order:
                    times[name].append(time_segment(trees[name], inputs[task], task, root / f"out_{name}", threads))
            old_s, new_s = statistics.median(times["baseline"]), statistics.median(times["current"])
            results[task] = {"baseline_s": old_s, "current_s": new_s, "ratio": new_s / old_s}
            print(f"{task:5s}  baseline {baseline}: {old_s:6.1f} s   current: {new_s:6.1f} s   "
                  f"ratio current/baseline {new_s / old_s:.3f}   (medians of {repeats}; "
                  f"baseline {', '.join(f'{t:.1f}' for t in times['baseline'])}; "
                  f"current {', '.join(f'{t:.1f}' for t in times['current'])})", flush=True)
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="the commit (or branch, tag) to compare against")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each version per task")
    parser.add_argument("--threads", type=int, default=2, help="torch / OpenMP threads for both versions")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "openkbp",
                        help="the OpenKBP folder for the head-and-neck CT (optional)")
    parser.add_argument("--case", default="pt_306", help="the OpenKBP case to use")
    parser.add_argument("--tasks", nargs="+", default=["orbit", "han"], choices=["orbit", "han"])
    args = parser.parse_args(argv)
    run(args.baseline, args.repeats, args.threads, args.data, args.case, args.tasks)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
