"""Peak memory (RSS) and time of ``headseg segment`` on a 512 x 512 x 300 head CT, on the CPU.

Baseline, measured in the same run: a child process that only imports headseg and reads the same CT
(the memory no segmentation can avoid). Prints both and their ratio.

    python benchmarks/bench_segment_memory.py [--task orbit|han] [--slices 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]


def run_measured(cmd, env) -> tuple:
    """Run ``cmd``; return (exit code, peak RSS in MiB of the process tree, seconds)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(recursive=True))
            peak = max(peak, rss)
        except psutil.Error:
            pass
        time.sleep(0.05)
    err = proc.stderr.read()
    if proc.returncode != 0:
        print(err[-2000:], file=sys.stderr)
    return proc.returncode, peak / 2**20, time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("orbit", "han"), default="orbit")
    parser.add_argument("--model", default=None, help="model package (default: the task's default)")
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--keep", help="write the CT and results here instead of a temporary folder")
    args = parser.parse_args()

    from headseg.io import write_volume
    from headseg.synth.phantoms import make_head_phantom

    work = Path(args.keep or tempfile.mkdtemp(prefix="headseg_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    ct_path = work / "ct512.nrrd"
    if not ct_path.exists():
        t = time.perf_counter()
        phantom = make_head_phantom(seed=0, spacing=(0.45, 0.45, 0.6), shape=(args.slices, 512, 512))
        write_volume(phantom.image, ct_path, overwrite=True)
        print(f"phantom CT {phantom.image.shape} (k, j, i) written in {time.perf_counter() - t:.1f} s")
        del phantom
    env = dict(os.environ, PYTHONPATH=str(REPO))
    read_only = [sys.executable, "-c", f"import headseg.io as io; v = io.read_volume({str(ct_path)!r}); print(v.shape)"]
    code0, base_mib, base_s = run_measured(read_only, env)
    out = work / "out"
    cmd = [sys.executable, "-m", "headseg", "segment", str(ct_path), "--task", args.task, "-o", str(out),
           "--device", "cpu", "--overwrite", "--progress-format", "none"]
    if args.model:
        cmd += ["--model", args.model]
    code1, seg_mib, seg_s = run_measured(cmd, env)
    print(f"{'what':<38}{'peak RSS MiB':>14}{'seconds':>10}")
    print(f"{'read the CT only (baseline)':<38}{base_mib:>14.0f}{base_s:>10.1f}")
    print(f"{'headseg segment --task ' + args.task:<38}{seg_mib:>14.0f}{seg_s:>10.1f}")
    print(f"ratio segment / baseline: {seg_mib / base_mib:.2f}; extra over baseline: {seg_mib - base_mib:.0f} MiB")
    return code0 or code1


if __name__ == "__main__":
    sys.exit(main())
