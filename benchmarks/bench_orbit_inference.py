"""Time to segment both orbits of a 512 x 512 x 200 head CT, without and with test-time augmentation.

The CT is the real gantry-tilted GE head series shipped in ``Testing/data`` (read and regularised by
HeadSeg), resampled onto 512 x 512 x 200 voxels over the same field of view: the orbit search runs on the
whole CT, the model on one crop per orbit. The target is under 10 s for ``segment_volume`` on this 2-core
CPU; the ratio TTA / plain is measured in the same run.

    python benchmarks/bench_orbit_inference.py --threads 2 --repeats 2
"""

from __future__ import annotations

import argparse
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
GE_ARCHIVE = REPO / "Testing" / "data" / "dcm_qa_ct_GE.tar.xz"
TARGET_SECONDS = 10.0


def clinical_ct(shape_kji: Sequence[int] = (200, 512, 512)):
    """The GE series on ``shape_kji`` voxels over its own field of view."""
    import numpy as np

    from headseg.io import read_volume
    from headseg.resample import Grid, resample_to_grid

    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(GE_ARCHIVE, "r|xz") as archive:
            archive.extractall(tmp, filter="data")
        ct = read_volume(Path(tmp) / "dcm_qa_ct_GE")
    box = np.asarray(ct.size_ijk, float) * np.asarray(ct.spacing)
    spacing = box / np.array(shape_kji[::-1], float)
    first = np.asarray(ct.index_to_lps((-0.5, -0.5, -0.5))) + ct.direction @ (spacing / 2.0)
    grid = Grid(tuple(int(n) for n in shape_kji), tuple(spacing), tuple(first), ct.direction.copy())
    return resample_to_grid(ct, grid, interpolation="linear", default_value=-1000.0)


def run(threads: int, repeats: int) -> Dict[str, List[float]]:
    import torch

    from headseg.segment.packages import default_package
    from headseg.segment.pipeline import segment_volume

    if threads:
        torch.set_num_threads(threads)
    ct = clinical_ct()
    package = default_package("orbit")
    model = package.load_model("cpu")
    segment_volume(ct, package, device="cpu", model=model, uncertainty=False)  # warm-up (allocations, caches)
    times: Dict[str, List[float]] = {"plain": [], "tta": []}
    for _ in range(repeats):
        for name in times:
            start = time.perf_counter()
            segment_volume(ct, package, device="cpu", model=model, uncertainty=True, tta=name == "tta")
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    times = run(args.threads, args.repeats)
    plain, tta = min(times["plain"]), min(times["tta"])
    print(f"orbit segment_volume, 512 x 512 x 200 CT, {args.threads} threads (best of {args.repeats}):")
    print(f"  plain {plain:.1f} s  ({'within' if plain < TARGET_SECONDS else 'ABOVE'} the {TARGET_SECONDS:.0f} s target)")
    print(f"  TTA   {tta:.1f} s  ({'within' if tta < TARGET_SECONDS else 'ABOVE'} the target)")
    print(f"  ratio TTA / plain: {tta / plain:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
