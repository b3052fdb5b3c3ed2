"""Evaluate a model package on labelled cases exactly as users run it: ``headseg.segment.pipeline.segment_volume``
on the original CT grid, then ``headseg.measure.metrics`` against the reference, skipping structures that were
not contoured in a case (missing is not a zero score)."""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .datasets import CaseRecord, load_case

__all__ = ["evaluate_package", "summarise_rows", "write_rows", "METRIC_KEYS"]

METRIC_KEYS = ("dsc", "iou", "sensitivity", "specificity", "hd95_mm", "assd_mm", "pred_volume_cm3",
               "ref_volume_cm3")


def evaluate_package(package, records: Sequence[CaseRecord], device: str = "auto", progress: bool = False,
                     say=None, tta: bool = False) -> List[Dict[str, Any]]:
    """One metrics row per (case, structure) for the structures the package predicts and the case has.

    A case the pipeline refuses (e.g. orbits not found) is scored as an empty prediction, with the
    reason in the row's ``failure``: a failure to segment is a result, not something to leave out."""
    from headseg.errors import InputError
    from headseg.measure.metrics import evaluate_labels
    from headseg.segment.pipeline import segment_volume

    label_set = package.label_set
    predicted = set(package.card.structure_keys())
    model = None
    rows: List[Dict[str, Any]] = []
    iterator = records
    if progress:
        import sys

        from tqdm import tqdm

        iterator = tqdm(records, desc="Evaluating", unit="case", file=sys.stderr, leave=False)
    for record in iterator:
        case = load_case(record, label_set)
        if model is None:
            from headseg.segment.windows import select_device

            device = str(select_device(device).device)
            model = package.load_model(device)
        start = time.perf_counter()
        try:
            predicted_map = segment_volume(case.image, package, device=device, model=model, tta=tta).labelmap.array
            failure = ""
        except InputError as exc:  # e.g. the orbits were not found: a failure of the model's pipeline
            predicted_map = np.zeros_like(case.labels.array)
            failure = str(exc)
        seconds = time.perf_counter() - start
        wanted = {s.key: s.label for s in label_set.structures if s.key in predicted and s.key in case.annotated}
        for row in evaluate_labels(predicted_map, case.labels.array, wanted, case.labels.spacing_kji):
            rows.append({"case": record.case, "seconds": round(seconds, 2), "failure": failure, **row})
        if say is not None:
            dsc = [r["dsc"] for r in rows if r["case"] == record.case and math.isfinite(r["dsc"])]
            say(f"  {record.case}: mean DSC {np.mean(dsc) if dsc else float('nan'):.4f} ({seconds:.1f} s)"
                + (f" FAILED, scored as empty: {failure}" if failure else ""))
    return rows


def summarise_rows(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per structure: number of cases and mean / std of every metric (NaNs left out)."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in dict.fromkeys(r["structure"] for r in rows):
        items = [r for r in rows if r["structure"] == name]
        entry: Dict[str, Any] = {"cases": len(items)}
        for key in METRIC_KEYS:
            values = np.array([float(r[key]) for r in items if r.get(key) is not None], float)
            values = values[np.isfinite(values)]
            entry[f"{key}_mean"] = round(float(values.mean()), 4) if values.size else None
            entry[f"{key}_std"] = round(float(values.std(ddof=1)), 4) if values.size > 1 else None
        out[name] = entry
    return out


def write_rows(path: Path, rows: Sequence[Dict[str, Any]], summary: Optional[Dict[str, Dict[str, Any]]] = None) -> None:
    """``path`` (one row per case and structure) and ``<path stem>_summary.csv`` (one per structure)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["case", "structure", *METRIC_KEYS, "seconds", "failure"], extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    summary = summary if summary is not None else summarise_rows(rows)
    if summary:
        first = next(iter(summary.values()))
        with open(path.with_name(path.stem + "_summary.csv"), "w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=["structure", *first.keys()])
            writer.writeheader()
            for name, entry in summary.items():
                writer.writerow({"structure": name, **entry})
