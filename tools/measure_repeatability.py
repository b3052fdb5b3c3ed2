"""Measure how much a structure's volume changes when the *same* scan is segmented again after a small
rigid motion (the patient lies a little differently): the bound above which ``headseg compare`` calls a
change real.

    python tools/measure_repeatability.py orbit          # held-out headseg.synth heads, default orbit model
    python tools/measure_repeatability.py han --data /path/to/openkbp   # OpenKBP validation CTs

For each scan and each of ``--motions`` random rigid motions (rotation up to 3 degrees about each axis,
shift up to 2 mm), the scan is resampled (linear), both versions are segmented with the default model,
and the relative change of every structure's volume is recorded. The bound of a structure is the 95th
percentile of |change| in percent over scans and motions; it is written with the model name, the
number of measurements and the method into ``headseg/review/repeatability.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "headseg" / "repeatability.json"


def random_motion(rng: np.random.Generator, centre: Sequence[float], max_deg: float = 3.0, max_mm: float = 2.0):
    import SimpleITK as sitk

    t = sitk.Euler3DTransform()
    t.SetCenter([float(c) for c in centre])
    t.SetRotation(*[float(np.deg2rad(rng.uniform(-max_deg, max_deg))) for _ in range(3)])
    t.SetTranslation([float(rng.uniform(-max_mm, max_mm)) for _ in range(3)])
    return t


def moved(volume, transform):
    import SimpleITK as sitk

    from headseg.geometry import Volume

    image = volume.to_sitk()
    out = sitk.Resample(image, image, transform, sitk.sitkLinear, -1000.0, sitk.sitkFloat32)
    return Volume.from_sitk(out).with_array(np.round(sitk.GetArrayFromImage(out)).astype(np.int16))


def scans(task: str, count: int, data: Optional[Path]):
    """(name, CT) pairs: held-out synthetic anatomical heads (headseg.synth, what the default orbit model
    was trained on; seeds 9000+, never in training) for the orbit, OpenKBP validation CTs for head and neck."""
    if task == "orbit":
        from headseg.synth import make_synthetic_head

        for seed in range(9000, 9000 + count):
            yield f"synth_{seed}", make_synthetic_head(seed, max_voxels=2.5e6).image
        return
    from headseg.io import read_volume

    folder = Path(data or REPO.parent / "shared" / "data" / "openkbp") / "validation"
    for case in sorted(p for p in folder.iterdir() if p.is_dir())[:count]:
        yield case.name, read_volume(case / "ct.nii.gz")


def measure(task: str, count: int, motions: int, data: Optional[Path], seed: int = 0) -> Dict[str, object]:
    import torch

    from headseg.errors import InputError
    from headseg.measure.volumes import volume_table
    from headseg.segment.packages import default_package
    from headseg.segment.pipeline import segment_volume

    torch.set_num_threads(2)
    package = default_package(task)
    model = package.load_model("cpu")
    rng = np.random.default_rng(seed)
    changes: Dict[str, List[float]] = {}
    start = time.perf_counter()
    for name, ct in scans(task, count, data):
        def volumes(volume):
            result = segment_volume(volume, package, device="cpu", model=model, uncertainty=False)
            rows = volume_table(result.labelmap, result.label_set)
            return {(r.structure, r.side): r.volume_cm3 for r in rows}

        try:
            base = volumes(ct)
        except InputError as exc:  # e.g. a synthetic head whose orbits the search refuses: not a measurement
            print(f"{name}: skipped ({exc})", file=sys.stderr)
            continue
        centre = ct.index_to_lps((np.asarray(ct.size_ijk, float) - 1) / 2)
        for _ in range(motions):
            again = volumes(moved(ct, random_motion(rng, centre)))
            for (structure, side), v0 in base.items():
                if v0 > 0 and (structure, side) in again:
                    changes.setdefault(structure, []).append(100.0 * abs(again[(structure, side)] - v0) / v0)
        print(f"{name}: done ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
    bounds = {k: round(float(np.percentile(v, 95)), 2) for k, v in sorted(changes.items())}
    return {"model": package.name, "bound_pct": bounds,
            "measurements": {k: len(v) for k, v in sorted(changes.items())},
            "median_pct": {k: round(float(np.median(v)), 2) for k, v in sorted(changes.items())},
            "how": (f"{count} {'held-out synthetic anatomical heads (headseg.synth, seeds 9000+)' if task == 'orbit' else 'OpenKBP validation CTs'}"
                    f" x {motions} random rigid motions (rotation <= 3 deg per axis, shift <= 2 mm, linear "
                    "resampling), each segmented with the default model; bound = 95th percentile of |relative "
                    "volume change| per structure (both sides pooled)"),
            "seconds": round(time.perf_counter() - start, 1)}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=("orbit", "han"))
    parser.add_argument("--scans", type=int, default=6)
    parser.add_argument("--motions", type=int, default=4)
    parser.add_argument("--data", type=Path, default=None)
    parser.add_argument("--output", type=Path, default=OUT)
    args = parser.parse_args(argv)
    entry = measure(args.task, args.scans, args.motions, args.data)
    label_set = "orbit" if args.task == "orbit" else "openkbp"
    data = json.loads(args.output.read_text(encoding="utf-8")) if args.output.is_file() else {}
    data[label_set] = entry
    args.output.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(entry, indent=1))
    return 0 if all(math.isfinite(v) for v in entry["bound_pct"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
