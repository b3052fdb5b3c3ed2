"""Does doubt mean something? Measure the review aids of ``headseg.measure.quality`` against reference labels.

    python tools/measure_review_aids.py orbit --cases 12            # held-out synthetic anatomical phantoms
    python tools/measure_review_aids.py han --data /path/to/openkbp --cases 33   # OpenKBP validation

Two numbers, over every case and structure that has a reference:

* **Spearman correlation between a structure's ``doubt`` and ``1 - DSC``**: does a doubtful structure
  tend to be a wrong one? (goal >= 0.5)
* **Share of wrong voxels inside the most uncertain 10 % of voxels near the structures** ("near" = within
  3 voxels of a predicted or reference structure): if the map told nothing, a random 10 % would hold
  about 10 % of the errors. (goal >= 50 %)

For head and neck only the organs contoured in a case count; a predicted organ that was not contoured is
neither right nor wrong there. Results go to ``--output`` (JSON) and stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    from scipy import stats

    result = stats.spearmanr(np.asarray(x, float), np.asarray(y, float))
    return float(result.statistic if hasattr(result, "statistic") else result[0])


def orbit_cases(count: int, seed: int) -> Iterator[Tuple[str, object, object, Optional[List[str]]]]:
    from headseg.synth import make_synthetic_head

    for n in range(count):
        case = make_synthetic_head(seed=seed + n)
        yield f"synth_{seed + n}", case.image, case.labels, None


def han_cases(data: Path, count: int) -> Iterator[Tuple[str, object, object, Optional[List[str]]]]:
    from headseg.labels import get_label_set
    from training.datasets import discover_records, load_case

    label_set = get_label_set("openkbp")
    records = [r for r in discover_records(data) if r.split == "validation"][:count]
    for record in records:
        loaded = load_case(record, label_set)
        yield record.case, loaded.image, loaded.labels, list(loaded.annotated)


def measure(task: str, cases, near_voxels: int = 3, model_dir: Optional[Path] = None) -> Dict[str, object]:
    import torch
    from scipy import ndimage

    from headseg.locate import OrbitNotFoundError
    from headseg.measure.metrics import dice
    from headseg.segment.packages import default_package, load_package
    from headseg.segment.pipeline import segment_volume

    torch.set_num_threads(2)
    package = load_package(model_dir) if model_dir is not None else default_package(task)
    model = package.load_model("cpu")
    label_set = package.label_set
    doubts, errors_1m_dsc, keys_of = [], [], []
    in_top, total_errors, shares = 0, 0, []
    per_case = []
    start = time.perf_counter()
    refused: List[str] = []
    for name, image, labels, annotated in cases:
        try:
            result = segment_volume(image, package, device="cpu", model=model)
        except OrbitNotFoundError as exc:  # the search refused the case: nothing to measure doubt on
            refused.append(name)
            print(f"{name}: refused by the orbit search ({str(exc)[:120]}...)", file=sys.stderr)
            continue
        pred, ref = result.labelmap.array, labels.array
        keys = annotated if annotated is not None else [s.key for s in label_set.structures]
        values = [label_set.by_key(k).label for k in keys]
        pred = np.where(np.isin(pred, values), pred, 0)
        ref = np.where(np.isin(ref, values), ref, 0)
        for key, value in zip(keys, values):
            if not (ref == value).any():
                continue
            quality = result.quality.get(key)
            d = dice(pred == value, ref == value)
            if quality is not None and math.isfinite(quality.doubt) and math.isfinite(d):
                doubts.append(quality.doubt)
                errors_1m_dsc.append(1.0 - d)
                keys_of.append(label_set.by_key(key).base_key)
        near = ndimage.binary_dilation((pred > 0) | (ref > 0), iterations=near_voxels)
        uncertainty = result.uncertainty.array[near]
        wrong = (pred != ref)[near]
        threshold = np.quantile(uncertainty, 0.9)
        top = uncertainty >= threshold
        in_top += int((wrong & top).sum())
        total_errors += int(wrong.sum())
        share = float((wrong & top).sum() / max(1, wrong.sum()))
        shares.append(share)
        per_case.append({"case": name, "error_share_top10": round(share, 3), "errors": int(wrong.sum())})
        print(f"{name}: {share:.2f} of {int(wrong.sum())} wrong voxels in the top 10 % ({time.perf_counter() - start:.0f} s)",
              file=sys.stderr)
    # Within one kind of structure (sides pooled): does doubt rank the cases of, say, the larynx? Pooled
    # over kinds, a kind's typical doubt and typical DSC can hide or fake that.
    within = {}
    for kind in sorted(set(keys_of)):
        idx = [n for n, k in enumerate(keys_of) if k == kind]
        if len(idx) >= 5:
            within[kind] = round(spearman([doubts[n] for n in idx], [errors_1m_dsc[n] for n in idx]), 3)
    return {"task": task, "model": package.name, "structures": len(doubts),
            "spearman_doubt_vs_1_minus_dsc": round(spearman(doubts, errors_1m_dsc), 3),
            "spearman_within_structure": within,
            "spearman_within_structure_median": round(float(np.median(list(within.values()))), 3) if within else None,
            "error_share_top10_pooled": round(in_top / max(1, total_errors), 3),
            "error_share_top10_median_case": round(float(np.median(shares)), 3),
            "cases": per_case, "refused_by_search": refused, "seconds": round(time.perf_counter() - start, 1),
            "pairs": [[k, round(a, 4), round(b, 4)] for k, a, b in zip(keys_of, doubts, errors_1m_dsc)]}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("task", choices=("orbit", "han"))
    parser.add_argument("--cases", type=int, default=12)
    parser.add_argument("--seed", type=int, default=90000, help="orbit: first phantom seed (never used in training)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "openkbp")
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--model", type=Path, default=None, help="a model package folder (default: the task's default)")
    args = parser.parse_args(argv)
    cases = orbit_cases(args.cases, args.seed) if args.task == "orbit" else han_cases(args.data, args.cases)
    out = measure(args.task, cases, model_dir=args.model)
    text = json.dumps(out, indent=1)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in out.items() if k not in ("cases", "pairs")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
