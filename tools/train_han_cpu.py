"""Finish the CPU-trained OpenKBP head-and-neck model: ship it, score it on the test split once, draw it.

Training itself is plain ``headseg-train`` (the package already trains on random patches and validates on
a few cases per epoch); this script does what comes after, so that the shipped card holds numbers measured
through the real inference path (OPENKBP: the OpenKBP folder, patients under train/, validation/ and test/):

    # 1. train (26 minutes of training on 2 CPU cores; the GPU recipe is anatomynet_openkbp)
    headseg-train train --config anatomynet_openkbp_cpu --data /path/to/openkbp --out runs/han_cpu
    # 2. copy the package into headseg/packaged_models/han-anatomynet-openkbp
    python tools/train_han_cpu.py ship runs/han_cpu
    # 3. score it ONCE on the 20 test cases (headseg.segment.pipeline on each CT's own grid) and write the card
    python tools/train_han_cpu.py test --data /path/to/openkbp --run runs/han_cpu
    # 4. the overlay picture of docs/han_model.md
    python tools/train_han_cpu.py overlay --data /path/to/openkbp --case pt_246

Volume error is (predicted - reference) / reference in percent, per case and organ; organs not contoured
in a case (``meta.json`` ``contoured``, and the flagged spinal cord of pt_260) are skipped, never scored 0.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PACKAGE_NAME = "han-anatomynet-openkbp"
SHIPPED = REPO / "headseg" / "packaged_models" / PACKAGE_NAME
TRAINING = REPO / "training"


def _shipped_card() -> Dict[str, Any]:
    return json.loads((SHIPPED / "model.json").read_text(encoding="utf-8"))

# AnatomyNet's published DSC (%) on the PDDCA / MICCAI 2015 test set (Zhu et al., Medical Physics 2019), a different data set.
PUBLISHED_PDDCA_DSC = {"brainstem": 86.65, "mandible": 92.51, "parotid_left": 88.07, "parotid_right": 87.35}

CITATIONS = [
    "Babier A. et al., OpenKBP: The open-access knowledge-based planning grand challenge and dataset, "
    "Medical Physics 48:5549-5561, 2021.",
    "Clark K. et al., The Cancer Imaging Archive (TCIA): maintaining and operating a public information "
    "repository, J Digit Imaging 26:1045-1057, 2013.",
    "Zhu W. et al., AnatomyNet: Deep learning for fast and fully automated whole-volume segmentation of head "
    "and neck anatomy, Medical Physics 46:576-589, 2019.",
]


def ship(run_dir: Path, dest: Path = SHIPPED) -> Path:
    """Copy the run's exported package (model.json + model.pt) into the repository."""
    source = Path(run_dir) / "model" / PACKAGE_NAME
    if not (source / "model.json").is_file():
        raise FileNotFoundError(f"{source} holds no exported package; run headseg-train train (or export) first.")
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "model.pt"):
        shutil.copy2(source / name, dest / name)
    return dest


def volume_errors(rows: Sequence[Dict[str, Any]]) -> None:
    """Add ``volume_error_pct`` = 100 (pred - ref) / ref to each metrics row (in place)."""
    for row in rows:
        ref = float(row["ref_volume_cm3"])
        row["volume_error_pct"] = 100.0 * (float(row["pred_volume_cm3"]) - ref) / ref if ref > 0 else math.nan


def _mean_sd(values: Sequence[float]) -> Dict[str, Optional[float]]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], float)
    return {"mean": round(float(arr.mean()), 4) if arr.size else None,
            "sd": round(float(arr.std(ddof=1)), 4) if arr.size > 1 else None, "n": int(arr.size)}


def summarise(rows: Sequence[Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per organ: cases, and mean / SD of DSC, HD95 (mm) and volume error (%)."""
    out: Dict[str, Dict[str, Any]] = {}
    for name in dict.fromkeys(r["structure"] for r in rows):
        items = [r for r in rows if r["structure"] == name]
        out[name] = {"cases": len(items),
                     "dsc": _mean_sd([float(r["dsc"]) for r in items]),
                     "hd95_mm": _mean_sd([float(r["hd95_mm"]) for r in items]),
                     "volume_error_pct": _mean_sd([float(r["volume_error_pct"]) for r in items])}
    return out


def evaluate_test(data_dir: Path, package_dir: Path = SHIPPED, out_csv: Optional[Path] = None,
                  run_dir: Optional[Path] = None) -> Dict[str, Any]:
    """Score the package on the test split through ``headseg.segment.pipeline`` and write the numbers into its card."""
    import torch

    from headseg.review.evaluate import write_evaluation
    from headseg.segment.packages import load_package, write_package
    from training.datasets import discover_records
    from training.evaluate import RUN_COLUMNS, evaluate_package

    torch.set_num_threads(2)
    package = load_package(package_dir)
    records = [r for r in discover_records(data_dir) if r.split == "test"]
    if not records:
        raise FileNotFoundError(f"No test cases under {data_dir} (expected {data_dir}/test/<patient>/ct.nii.gz).")
    start = time.perf_counter()
    rows = evaluate_package(package, records, device="cpu", say=print)
    seconds = time.perf_counter() - start
    volume_errors(rows)
    if out_csv is not None:
        write_evaluation(out_csv, rows, extra_columns=RUN_COLUMNS)
        with open(out_csv.with_name(out_csv.stem + "_volume_error.json"), "w", encoding="utf-8") as f:
            json.dump([{k: r[k] for k in ("case", "structure", "volume_error_pct")} for r in rows], f, indent=1)
    summary = summarise(rows)
    card = package.card.to_dict()
    mean_dsc = float(np.mean([e["dsc"]["mean"] for e in summary.values() if e["dsc"]["mean"] is not None]))
    card["test_metrics"] = {
        "split": "test", "cases": [r.case for r in records],
        "how": "headseg.segment.pipeline.segment_volume on each test CT's own grid (resampled to the model grid and back, "
               "post-processed) vs. the clinical contours; organs not contoured in a case are skipped; measured "
               "once, after training and model selection on the validation split",
        "mean_dsc": round(mean_dsc, 4), "per_structure": summary,
        "cpu_seconds_per_case": round(seconds / len(records), 2),
    }
    card["published_comparison"] = {
        "what": "AnatomyNet's published DSC (%) on the MICCAI 2015 / PDDCA test set (Zhu et al., Medical Physics 2019). DIFFERENT "
                "data, different contouring protocol and the paper's full recipe: not a like-for-like comparison.",
        "dsc_pct": PUBLISHED_PDDCA_DSC,
        "this_model_dsc_pct": {k: round(100 * summary[k]["dsc"]["mean"], 2) for k in PUBLISHED_PDDCA_DSC
                               if k in summary and summary[k]["dsc"]["mean"] is not None},
    }
    card["data_notice"] = ("Trained and tested on research data (OpenKBP head-and-neck CTs, derived from TCIA "
                           "collections). This model is NOT a clinical device: review every result.")
    card["citations"] = CITATIONS
    card["reproduce"] = {
        "cpu_shipped_model": [
            "headseg-train train --config anatomynet_openkbp_cpu --data /path/to/openkbp --out runs/han_cpu",
            "python tools/train_han_cpu.py ship runs/han_cpu",
            "python tools/train_han_cpu.py test --data /path/to/openkbp --run runs/han_cpu",
        ],
        "gpu_paper_recipe": [
            "headseg-train train --config anatomynet_openkbp --data /path/to/openkbp --out runs/han_gpu",
            "headseg-train evaluate --model runs/han_gpu/model/han-anatomynet-openkbp --data "
            "../shared/data/openkbp --split test --output runs/han_gpu/test.csv",
        ],
    }
    training = card.get("training", {})
    widths = card.get("architecture_params", {}).get("widths", "32/40/48/56")
    window = training.get("train_window_kji")
    progress = run_progress(Path(run_dir)) if run_dir is not None else {}
    training.update(progress)
    # What the trainer recorded it computed in (bf16 only where the CPU had native bf16 at run time).
    used = str(training.get("hardware", {}).get("precision", ""))
    training["precision"] = "bf16" if "bfloat16" in used else "fp16" if "float16" in used else "fp32"
    training["hardware_note"] = (
        f"CPU, 2 cores (shared with other work at times), {progress.get('cpu_hours', float('nan')):.1f} hours, "
        f"{progress.get('steps', '?')} steps of batch {training.get('batch_size', '?')}; widths {widths} (paper 32/40/48/56), model grid "
        f"{card['input']['spacing_mm']} mm, patches {window} voxels instead of whole volumes: not the AnatomyNet paper's "
        "recipe (see the card's recipe comment and docs/han_model.md)")
    if run_dir is not None and (Path(run_dir) / "log.txt").is_file():
        training["run_log_tail"] = (Path(run_dir) / "log.txt").read_text(encoding="utf-8").splitlines()[-30:]
    card["training"] = training
    finish_card(card)
    state = torch.load(package.path / "model.pt", map_location="cpu", weights_only=True)
    write_package(package.path, card, state)
    return card


def read_run(run_dir: Path) -> Tuple[Dict[str, Any], List[Dict[str, str]], int]:
    """A run folder's recipe (``config.json``), its ``metrics.csv`` rows (one per epoch) and the optimisation
    steps per epoch, counted as the trainer counts them. ``run_dir`` may also be a copy of the shipped run's
    ``metrics.csv`` (``docs/han_training_metrics.csv``); its recipe is then the shipped card's."""
    import csv

    if Path(run_dir).suffix == ".csv":
        path = Path(run_dir)
        config = json.loads((TRAINING / "configs" / f"{_shipped_card()['training']['recipe']}.json")
                            .read_text(encoding="utf-8"))
    else:
        config = json.loads((Path(run_dir) / "config.json").read_text(encoding="utf-8"))
        path = Path(run_dir) / "metrics.csv"
    rows: List[Dict[str, str]] = []
    if path.is_file():
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    return config, rows, math.ceil(int(config["samples_per_epoch"]) / int(config["batch_size"]))


def run_progress(run_dir: Path) -> Dict[str, Any]:
    """Optimisation steps and wall-clock hours of training from the run's ``metrics.csv`` (summed over
    resumes by the trainer's ``elapsed_hours``); the card's export already holds the rest."""
    _, rows, steps_per_epoch = read_run(run_dir)
    if not rows:
        return {}
    return {"epochs": int(rows[-1]["epoch"]), "steps": int(rows[-1]["epoch"]) * steps_per_epoch,
            "cpu_hours": round(float(rows[-1]["elapsed_hours"]), 2)}


def finish_card(card: Dict[str, Any], inference_seconds: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """Headline, hardware and inference-time fields of the card, from its ``test_metrics`` (no re-evaluation)."""
    tm = card["test_metrics"]
    organs = tm["per_structure"]
    best = max(organs, key=lambda k: organs[k]["dsc"]["mean"] or 0.0)
    card["metrics"] = {
        "summary": (f"test mean DSC {tm['mean_dsc']:.3f} over {len(organs)} organs, {len(tm['cases'])} OpenKBP test "
                    f"cases, segmented as 'headseg segment' does (best: {best} {organs[best]['dsc']['mean']:.3f}); trained "
                    "on 2 CPU cores at half width on patches (not the published recipe)"),
        "evaluated_on": {"split": "test", "cases": tm["cases"], "how": tm["how"]},
        "mean_dsc": tm["mean_dsc"],
    }
    training = card.setdefault("training", {})
    if not training.get("hardware"):
        training["hardware"] = {"device": "cpu", "cpu_cores": 2, "shared_with_other_jobs": True, "torch_threads": 2}
    if not training.get("command"):
        training["command"] = card.get("reproduce", {}).get("cpu_shipped_model", [None])[0]
    if inference_seconds:
        card["inference_seconds"] = inference_seconds
    return card


def markdown_table(card: Dict[str, Any]) -> str:
    """The card's test metrics as a Markdown table (mean +- SD per organ), with the published PDDCA DSC."""
    def fmt(entry: Dict[str, Any], scale: float = 1.0, digits: int = 1) -> str:
        if entry["mean"] is None:
            return "n/a"
        sd = "" if entry["sd"] is None else f" +- {scale * entry['sd']:.{digits}f}"
        return f"{scale * entry['mean']:.{digits}f}{sd}"

    lines = ["| organ | cases | DSC (%) | HD95 (mm), n = cases with a prediction | volume error (%) | AnatomyNet on PDDCA, DSC (%) |",
             "|---|---|---|---|---|---|"]
    for name, e in card["test_metrics"]["per_structure"].items():
        published = PUBLISHED_PDDCA_DSC.get(name)
        hd95 = f"{fmt(e['hd95_mm'])} (n={e['hd95_mm']['n']})"
        lines.append(f"| {name.replace('_', ' ')} | {e['cases']} | {fmt(e['dsc'], 100.0)} | {hd95} | "
                     f"{fmt(e['volume_error_pct'], 1.0, 0)} | {'' if published is None else published} |")
    lines.append(f"| **mean of organs** | | {100 * card['test_metrics']['mean_dsc']:.1f} | | | |")
    return "\n".join(lines)


def _centre_slices(mask: np.ndarray) -> List[int]:
    return [int(round(float(np.mean(np.nonzero(mask)[axis])))) for axis in range(3)]


def overlay(data_dir: Path, case: str, out_png: Path, package_dir: Path = SHIPPED) -> Path:
    """Axial and coronal slices of one test case: reference (solid) and prediction (dashed) contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from matplotlib.lines import Line2D

    from headseg.segment.packages import load_package
    from headseg.segment.pipeline import segment_volume
    from training.datasets import discover_records, load_case

    torch.set_num_threads(2)
    package = load_package(package_dir)
    record = next((r for r in discover_records(data_dir) if r.case == case), None)
    if record is None:
        raise FileNotFoundError(f"No case {case!r} under {data_dir}.")
    loaded = load_case(record, package.label_set)
    ct, ref = loaded.image, loaded.labels.array
    pred = segment_volume(ct, package, device="cpu").labelmap.array
    structures = [s for s in package.label_set.structures if s.key in package.card.output_classes]
    colours = plt.get_cmap("tab10")
    k_of = {s.key: _centre_slices(ref == s.label)[0] for s in structures if (ref == s.label).any()}
    axial = sorted({k_of.get("brainstem"), k_of.get("parotid_right"), k_of.get("larynx") or k_of.get("mandible")}
                   - {None})
    sp = ct.spacing_kji
    body = np.argwhere(ct.array > -500)
    lo, hi = np.maximum(body.min(axis=0) - 4, 0), np.minimum(body.max(axis=0) + 5, ct.shape)
    organs = np.argwhere(ref > 0)
    j_coronal = int(np.median(organs[:, 1])) if organs.size else ct.shape[1] // 2
    k_lo = max(0, int(organs[:, 0].min()) - 12) if organs.size else 0
    k_hi = min(ct.shape[0], int(organs[:, 0].max()) + 13) if organs.size else ct.shape[0]
    # Superior at the top of the coronal panel whatever the slice order.
    z_down = ct.index_to_lps((0, 0, 1))[2] < ct.index_to_lps((0, 0, 0))[2]
    panels = [("axial", k) for k in axial[:3]] + [("coronal", j_coronal)]
    # contour() follows the axes that imshow() set up (row 0 at the top for origin="upper").
    fig, axes = plt.subplots(2, 2, figsize=(10, 8.4), dpi=100)
    for ax, (view, index) in zip(axes.ravel(), panels):
        ii = slice(lo[2], hi[2])
        if view == "axial":
            jj = slice(lo[1], hi[1])
            image, r2, p2, aspect = ct.array[index, jj, ii], ref[index, jj, ii], pred[index, jj, ii], sp[1] / sp[2]
            title = f"axial slice {index} (z {ct.index_to_lps((0, 0, index))[2]:.0f} mm)"
            origin = "upper"
        else:
            kk = slice(k_lo, k_hi)
            image, r2, p2, aspect = (ct.array[kk, index, ii], ref[kk, index, ii], pred[kk, index, ii],
                                     sp[0] / sp[2])
            title = f"coronal slice {index}"
            origin = "upper" if z_down else "lower"
        ax.imshow(np.clip(image, -300, 500), cmap="gray", aspect=aspect, origin=origin)
        for n, s in enumerate(structures):
            colour = colours(n)
            if (r2 == s.label).any():
                ax.contour((r2 == s.label).astype(float), levels=[0.5], colors=[colour], linewidths=1.6)
            if (p2 == s.label).any():
                ax.contour((p2 == s.label).astype(float), levels=[0.5], colors=[colour], linewidths=1.6,
                           linestyles="dashed")
        ax.set_title(title, fontsize=11)
        ax.set_axis_off()
    handles = [Line2D([], [], color=colours(n), lw=2, label=s.key.replace("_", " ")) for n, s in enumerate(structures)]
    handles += [Line2D([], [], color="k", lw=1.4, label="reference (solid)"),
                Line2D([], [], color="k", lw=1.4, ls="--", label="prediction (dashed)")]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=10, frameon=False)
    fig.suptitle(f"{package.name} on OpenKBP test case {case} (image left = patient right)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 0.96))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def curve(run_dir: Path, out_png: Path) -> Path:
    """Training loss and per-organ validation DSC against training steps and CPU-hours (two x axes)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, rows, steps_per_epoch = read_run(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}/metrics.csv has no epochs yet.")
    steps = np.array([int(r["epoch"]) * steps_per_epoch for r in rows])
    hours = np.array([float(r.get("elapsed_hours") or "nan") for r in rows])
    organs = [k[len("val_dsc_"):] for k in rows[0] if k.startswith("val_dsc_")]
    fig, (ax_loss, ax_dsc) = plt.subplots(2, 1, figsize=(8, 7), dpi=110, sharex=True)
    ax_loss.plot(steps, [float(r["train_loss"]) for r in rows], color="black")
    ax_loss.set_ylabel("training loss (CE + Dice, marginal)")
    for organ in organs:
        values = [float(r[f"val_dsc_{organ}"] or "nan") for r in rows]
        ax_dsc.plot(steps, values, label=organ.replace("_", " "), linewidth=1.2)
    ax_dsc.plot(steps, [float(r["val_mean_dsc"] or "nan") for r in rows], color="black", linewidth=2.2,
                label="mean of organs")
    shipped = [int(r["epoch"]) for r in rows if r.get("best") == "True"]
    if shipped:  # the last best epoch is the one whose weights are exported
        for ax in (ax_loss, ax_dsc):
            ax.axvline(shipped[-1] * steps_per_epoch, color="tab:green", linestyle="--", linewidth=1.2)
        ax_dsc.annotate(f"best: epoch {shipped[-1]} (exported)", (shipped[-1] * steps_per_epoch, 0.92), xytext=(-4, 0),
                        textcoords="offset points", ha="right", color="tab:green", fontsize=9)
    ax_dsc.set_ylim(0, 1)
    ax_dsc.set_ylabel(f"validation DSC ({config['validation'].get('max_cases') or 'all'} cases, model grid)")
    ax_dsc.set_xlabel(f"training steps (batches of {int(config['batch_size'])} patches)")
    ax_dsc.legend(loc="lower right", fontsize=8, ncol=2)
    for ax in (ax_loss, ax_dsc):
        ax.grid(alpha=0.3)
    if np.isfinite(hours).all() and len(rows) > 1:  # CPU-hours on a top axis, read off the same epochs
        top = ax_loss.secondary_xaxis(
            "top", functions=(lambda x: np.interp(x, steps, hours), lambda h: np.interp(h, hours, steps)))
        top.set_xlabel("wall-clock hours of training on 2 CPU cores")
    fig.suptitle(f"{config['name']}: training on OpenKBP ({config['model']['architecture']}, "
                 f"{config['model']['params'].get('widths', 'paper widths')})", fontsize=10)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)
    return out_png


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("ship", help="copy RUN/model/han-anatomynet-openkbp into headseg/packaged_models")
    p.add_argument("run", type=Path)
    p = sub.add_parser("test", help="score the shipped package on the test split once and write its card")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--run", type=Path, default=None, help="the training run (its log goes into the card)")
    p.add_argument("--package", type=Path, default=SHIPPED)
    p.add_argument("--output", type=Path, default=None, help="CSV of per-case metrics (default RUN/test.csv)")
    p = sub.add_parser("card", help="rewrite the card's headline fields from its test metrics (no evaluation)")
    p.add_argument("--package", type=Path, default=SHIPPED)
    p.add_argument("--inference-seconds", type=json.loads, default=None,
                   help='JSON object of measured times, e.g. {"cpu_2_threads_512x512x200": 9.4}')
    p = sub.add_parser("overlay", help="draw docs/images/han_overlay.png")
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--case", default="pt_246")
    p.add_argument("--package", type=Path, default=SHIPPED)
    p.add_argument("--output", type=Path, default=REPO / "docs" / "images" / "han_overlay.png")
    p = sub.add_parser("curve", help="draw docs/images/han_training_curve.png from a run's metrics.csv")
    p.add_argument("run", type=Path, help="a run folder, or the shipped run's metrics (docs/han_training_metrics.csv)")
    p.add_argument("--output", type=Path, default=REPO / "docs" / "images" / "han_training_curve.png")
    args = parser.parse_args(argv)
    if args.command == "curve":
        print(curve(args.run, args.output))
    elif args.command == "ship":
        print(ship(args.run))
    elif args.command == "test":
        out = args.output or ((args.run / "test.csv") if args.run else None)
        card = evaluate_test(args.data, args.package, out, args.run)
        print(json.dumps(card["test_metrics"], indent=1))
        print(markdown_table(card))
    elif args.command == "card":
        folder = Path(args.package)
        card = finish_card(json.loads((folder / "model.json").read_text(encoding="utf-8")), args.inference_seconds)
        (folder / "model.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        print(card["metrics"]["summary"])
        print(markdown_table(card))
    else:
        print(overlay(args.data, args.case, args.output, args.package))
    return 0


if __name__ == "__main__":
    sys.exit(main())
