"""``headseg evaluate`` when the reference's grid is not the prediction's: a reference that covers only
part of the prediction must not inflate the score, and grids that do not meet are said to."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from hardening_factory import run_cli

from headseg.geometry import Volume
from headseg.io import write_segmentation
from headseg.labels import get_label_set

OPENKBP = get_label_set("openkbp")


def ball() -> Volume:
    """A brainstem (label 1) ball in the middle of a 40^3 grid of 2 mm."""
    k, j, i = np.indices((40, 40, 40))
    array = (((k - 20) ** 2 + (j - 20) ** 2 + (i - 20) ** 2) < 12 ** 2).astype(np.uint8)
    return Volume(array, (2.0, 2.0, 2.0), (-40.0, -40.0, -40.0))


def evaluate(tmp_path: Path, prediction: Volume, reference: Volume, label: str):
    pred_dir, ref_dir = tmp_path / f"pred_{label}", tmp_path / f"ref_{label}"
    pred_dir.mkdir()
    ref_dir.mkdir()
    write_segmentation(prediction, OPENKBP, pred_dir / "c1.seg.nrrd")
    write_segmentation(reference, OPENKBP, ref_dir / "c1.seg.nrrd")
    report = tmp_path / f"{label}.csv"
    run = run_cli(["evaluate", pred_dir, ref_dir, "--task", "han", "-o", report, "--progress-format", "json"],
                  f"evaluate ({label})")
    assert run.code == 0 and not run.traceback_shown, run.stderr
    rows = {r["structure"]: r for r in csv.DictReader(open(report))}
    return float(rows["brainstem"]["dsc"]), run.stdout + run.stderr


def test_a_reference_cropped_to_half_the_prediction_does_not_inflate_the_score(tmp_path):
    prediction = ball()
    truth = prediction.array.copy()
    truth[20:] = 0  # the reference has the structure's lower half only ...
    full, _ = evaluate(tmp_path, prediction, prediction.with_array(truth), "full grid")
    cropped = Volume(truth[:20], prediction.spacing, prediction.origin)  # ... and its grid stops there
    score, said = evaluate(tmp_path, prediction, cropped, "cropped reference")
    assert full < 0.75
    assert score == full  # the same as on the full grid, not 1.0 (the prediction cut to the reference)
    assert "covers only part of the prediction" in said


def test_a_shifted_reference_that_does_not_meet_the_prediction_is_said(tmp_path):
    prediction = ball()
    shifted = Volume(prediction.array, prediction.spacing, (-40.0, -40.0, 200.0))  # 240 mm away along z
    score, said = evaluate(tmp_path, prediction, shifted, "shifted reference")
    assert score == 0.0 and "do not overlap" in said


def test_a_reference_shifted_20_mm_is_scored_on_both_grids(tmp_path):
    prediction = ball()
    shifted = Volume(prediction.array, prediction.spacing, (-40.0, -40.0, -20.0))  # 20 mm: ten slices
    score, said = evaluate(tmp_path, prediction, shifted, "reference shifted 20 mm")
    expected = 2 * np.logical_and(prediction.array[10:], prediction.array[:-10]).sum() / (2 * prediction.array.sum())
    assert abs(score - expected) < 1e-3 and "covers only part" in said
