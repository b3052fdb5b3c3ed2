"""Export a run's best checkpoint as a ``headseg`` model package, its card filled from the run: data,
split, training time and hardware, and per-structure metrics of the *packaged* model on the validation
cases through the same pipeline users run (``headseg.segment.pipeline.segment_volume``)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from headseg.review.evaluate import summarise_rows, write_evaluation

from .checkpoints import checkpoint_path, load_checkpoint
from .datasets import discover_records
from .evaluate import RUN_COLUMNS, evaluate_package

__all__ = ["export_run", "final_card"]

SYNTHETIC_NOTE = ("Trained on SYNTHETIC head-CT phantoms made by headseg.synth.phantoms (geometric shapes, not patient "
                  "anatomy). A demonstration of the software only: NOT for clinical use, and its metrics say "
                  "nothing about accuracy on real CT.")


def _is_synthetic(data_report: Dict[str, Any], config: Dict[str, Any]) -> bool:
    flag = config.get("export", {}).get("synthetic")
    if flag is not None:
        return bool(flag)
    names = data_report.get("split", {}).get("train", [])
    return bool(names) and all(str(n).startswith("phantom_") for n in names)


def final_card(checkpoint: Dict[str, Any], data_report: Dict[str, Any], command: Optional[str],
               hardware: Dict[str, Any]) -> Dict[str, Any]:
    """The card of the exported package (metrics are added after evaluation)."""
    config = checkpoint["config"]
    card = dict(checkpoint["card"])
    export = config.get("export", {})
    synthetic = _is_synthetic(data_report, config)
    history = checkpoint.get("history", [])
    best = next((h for h in history if h["epoch"] == checkpoint.get("best_epoch")), None)
    # A recipe trained on another generator than headseg.synth.phantoms says what it learned from instead.
    note = export.get("synthetic_note", SYNTHETIC_NOTE)
    card.update({
        "synthetic": synthetic,
        "default": bool(export.get("default", False)),
        "license": export.get("license", "Apache-2.0"),
        "intended_use": export.get("intended_use") or (note if synthetic else
                                                        "Research use. Review every result before use."),
    })
    if synthetic and note not in card.get("description", ""):
        card["description"] = (card.get("description", "") + " " + note).strip()
    split = data_report.get("split", {})
    card["training"] = {
        "recipe": config.get("source") or config["name"],
        "command": command,
        "data": {"folder": data_report.get("data_dir"), "cases": len(data_report.get("report", {}).get("usable", [])),
                 "annotated_cases_per_structure": data_report.get("report", {}).get("annotations", {}),
                 "synthetic": synthetic},
        "split": {"type": split.get("type"), "train": split.get("train", []),
                  "validation": split.get("validation", []), "test": split.get("test", [])},
        "model_grid_items": {"train": len(data_report.get("train_items", [])),
                             "validation": len(data_report.get("validation_items", []))},
        "loss": config["loss"],
        "optimizer": config["optimizer"],
        "batch_size": config["batch_size"],
        "train_window_kji": config["data"].get("train_window_kji") or card["input"].get("window_kji"),
        "augmentation": config.get("augment"),
        "seed": config["seed"],
        "epochs": checkpoint.get("epoch"),
        "best_epoch": checkpoint.get("best_epoch"),
        "best_validation_mean_dsc_model_grid": None if best is None else round(float(best["val_mean_dsc"]), 4),
        "stopped_early": bool(checkpoint.get("stopped_early")),
        "training_seconds": round(float(checkpoint.get("elapsed", 0.0)), 1),
        "hardware": hardware,
        "date": time.strftime("%Y-%m-%d"),
    }
    return card


def rows_reason(rows) -> str:
    """The distinct failure messages of evaluation rows, shortened to their first sentence."""
    reasons = sorted({str(r["failure"]).split(". ")[0].split(" (")[0] for r in rows if r.get("failure")})
    return "; ".join(reasons)


def export_run(run_dir, data_report: Optional[Dict[str, Any]] = None, command: Optional[str] = None,
               hardware: Optional[Dict[str, Any]] = None, say: Optional[Callable[[str], None]] = None,
               evaluate: bool = True, device: str = "auto", out_dir=None, overrides: Sequence[str] = ()) -> Path:
    """Write ``run_dir/model/<name>`` (or ``out_dir``) from ``checkpoints/best.pt`` (``last.pt`` if there is
    no best) and, with ``evaluate``, put the validation metrics of the package into its card.

    ``overrides`` (``export.default=true``, as ``--set`` of ``headseg-train train``) change the run's stored
    recipe for the card only: what a package claims can be decided after the run, not what it learned."""
    from headseg.segment.packages import write_package

    from .config import apply_overrides

    run_dir = Path(run_dir)
    say = say or (lambda message: None)
    path = checkpoint_path(run_dir, "best")
    if not path.is_file():
        path = checkpoint_path(run_dir, "last")
    checkpoint = load_checkpoint(path)  # a damaged or foreign file: a sentence, not a traceback
    last = load_checkpoint(checkpoint_path(run_dir, "last"))
    checkpoint["history"], checkpoint["elapsed"] = last["history"], last["elapsed"]  # the whole run's facts
    checkpoint["epoch"], checkpoint["stopped_early"] = last["epoch"], last["stopped_early"]
    if overrides:
        checkpoint["config"] = apply_overrides(checkpoint["config"], overrides)
    if data_report is None:
        data_report = json.loads((run_dir / "data_report.json").read_text(encoding="utf-8"))
    card = final_card(checkpoint, data_report, command, hardware or {})
    folder = Path(out_dir) if out_dir is not None else run_dir / "model" / card["name"]
    package = write_package(folder, card, checkpoint["model"])
    say(f"Exported the model package {folder} (weights of epoch {checkpoint.get('best_epoch')}).")
    validation = data_report.get("split", {}).get("validation", [])
    if evaluate and validation:
        records = [r for r in discover_records(data_report["data_dir"]) if r.case in set(validation)]
        say(f"Evaluating the package on {len(records)} validation case(s) segmented as 'headseg segment' does...")
        rows = evaluate_package(package, records, device=device, say=say)
        summary = summarise_rows(rows)
        write_evaluation(run_dir / "validation_metrics.csv", rows, summary, extra_columns=RUN_COLUMNS)
        dsc = [e["dsc_mean"] for e in summary.values() if e["dsc_mean"] is not None]
        mean = float(np.mean(dsc)) if dsc else math.nan
        failed = sorted({r["case"] for r in rows if r.get("failure")})
        text = (f"validation mean DSC {mean:.3f} over {len(summary)} structures, {len(records)} "
                f"{'synthetic ' if card.get('synthetic') else ''}case(s), segmented as 'headseg segment' does")
        if failed:
            ok_rows = [r for r in rows if not r.get("failure")]
            ok = [e["dsc_mean"] for e in summarise_rows(ok_rows).values() if e["dsc_mean"] is not None]
            text += (f"; {len(failed)} case(s) not segmented (scored 0: {rows_reason(rows)}); mean DSC "
                     f"{float(np.mean(ok)) if ok else math.nan:.3f} over the {len(records) - len(failed)} others")
        card["metrics"] = {
            "summary": text,
            "failed_cases": {c: next(r["failure"] for r in rows if r["case"] == c) for c in failed},
            "evaluated_on": {"split": "validation", "cases": [r.case for r in records],
                             "how": "headseg.segment.pipeline.segment_volume on the original CT grid, post-processed, "
                                    "vs. the reference label map; structures not contoured are skipped"},
            "mean_dsc": round(mean, 4),
            "per_structure": summary,
        }
        package = write_package(folder, card, checkpoint["model"])
        say(f"Package validation: {card['metrics']['summary']}")
        for name, entry in summary.items():
            say(f"  {name:<26} DSC {entry['dsc_mean']}  HD95 {entry['hd95_mm_mean']} mm  (n={entry['cases']})")
    return folder
