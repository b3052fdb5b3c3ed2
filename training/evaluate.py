"""Evaluate a model package on labelled cases exactly as users run it: ``headseg.segment.pipeline.segment_volume``
on the original CT grid, then ``headseg.measure.metrics`` against the reference, skipping structures that were
not contoured in a case (missing is not a zero score). The rows are summarised and written by
``headseg.review.evaluate`` (the same files as ``headseg evaluate``, plus :data:`RUN_COLUMNS`)."""

from __future__ import annotations

import math
import time
from typing import Any, Dict, List, Sequence

import numpy as np

from .datasets import CaseRecord, load_case

__all__ = ["evaluate_package", "RUN_COLUMNS"]

#: What :func:`evaluate_package`'s rows add to the metrics (``headseg.review.evaluate.write_evaluation``'s
#: ``extra_columns``): the seconds the case took, and why the pipeline refused it ("" when it did not).
RUN_COLUMNS = ("seconds", "failure")


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
            from headseg.segment.runtime import select_device

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
