"""What the uncertainty map costs: ``segment_volume`` with and without it, in the same run.

    python benchmarks/bench_uncertainty.py [--repeats 3] [--han-ct PATH]

Prints the median seconds of each and the added share (target: at most 15 % of the segmentation time).
The orbit case is a synthetic phantom with the default orbit model; the head-and-neck case (when a HaN
model is installed) an OpenKBP CT, or ``--han-ct``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

REPO = Path(__file__).resolve().parents[1]


def timed(volume, package, model, uncertainty: bool, repeats: int) -> float:
    from headseg.segment.pipeline import segment_volume

    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        segment_volume(volume, package, device="cpu", model=model, uncertainty=uncertainty)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: Optional[Sequence[str]] = None) -> int:
    import torch

    from headseg.errors import ModelPackageError
    from headseg.io import read_volume
    from headseg.segment.packages import default_package
    from headseg.synth.phantoms import make_head_phantom

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--han-ct", type=Path, default=REPO.parent / "shared" / "data" / "openkbp" / "test" / "pt_246" / "ct.nii.gz")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    cases = [("orbit", make_head_phantom(seed=1).image)]
    if args.han_ct.is_file():
        cases.append(("han", read_volume(args.han_ct)))
    print(f"{'task':6} {'shape':>16} {'without (s)':>12} {'with (s)':>10} {'added':>8}")
    for task, volume in cases:
        try:
            package = default_package(task)
        except ModelPackageError as exc:
            print(f"{task:6} skipped: {exc}")
            continue
        model = package.load_model("cpu")
        timed(volume, package, model, True, 1)  # warm-up
        without = timed(volume, package, model, False, args.repeats)
        with_map = timed(volume, package, model, True, args.repeats)
        shape = "x".join(str(n) for n in volume.shape)
        print(f"{task:6} {shape:>16} {without:12.2f} {with_map:10.2f} {100 * (with_map / without - 1):7.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
