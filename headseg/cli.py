"""``headseg`` command line: segment, evaluate, phantom, models.

Exit codes (stable, the Slicer modules rely on them): 0 success, 1 unexpected error (a bug: please
report it), 2 bad input or usage, 3 model package problem, 4 out of memory, 5 cancelled.

``--progress-format json`` prints one JSON object per line on stdout for programs driving the CLI
(the Slicer modules): ``{"event": "progress", "fraction": f, "message": m}``, ``{"event": "log", ...}``,
``{"event": "result", ...}`` and ``{"event": "error", "message": m, "code": n}``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set

from headseg import __version__
from headseg.errors import Cancelled, ExitCode, HeadSegError, InputError, error_message, exit_code_for
from headseg.io.cases import IMAGE_SUFFIXES, LABEL_HINTS, Case, discover_cases
from headseg.io.cases import is_image as _is_image
from headseg.measure.volumes import VolumeRow
from headseg.run.batch import BatchEvents, CaseOutputs, existing_outputs_error, plan_batch, run_batch
from headseg.run.segment_case import collect_warnings as _collect_warnings
from headseg.run.segment_case import native_stderr_captured as _native_stderr_captured

# The codes of headseg.errors.ExitCode under their older names (tests and scripts import them from here).
EXIT_OK, EXIT_BUG, EXIT_INPUT, EXIT_MODEL, EXIT_OOM, EXIT_CANCELLED = (int(c) for c in ExitCode)


log = logging.getLogger("headseg")


# -- reporting ---------------------------------------------------------------------------------------
class Reporter:
    """Progress bars for people, JSON lines for programs."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self._bar = None
        self.flagged: List[str] = []  # "case: structure: flag in words", for the end of the run

    def emit(self, event: str, **fields: Any) -> None:
        if self.fmt == "json":
            sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
            sys.stdout.flush()

    def start(self, title: str) -> None:
        if self.fmt == "bar":
            from tqdm import tqdm

            self.close()
            self._bar = tqdm(total=1000, desc=title, unit="‰", leave=True, file=sys.stderr,
                             bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining} {postfix}")
        self.emit("progress", fraction=0.0, message=title)

    def progress(self, fraction: float, message: str = "") -> None:
        if self._bar is not None:
            self._bar.n = int(1000 * fraction)
            self._bar.set_postfix_str(message[:40], refresh=False)
            self._bar.refresh()
        self.emit("progress", fraction=round(float(fraction), 4), message=message)

    def info(self, message: str, level: str = "info") -> None:
        """A line for the user. Warnings are shown in every format: ``--progress-format none`` silences
        progress and chatter, never a warning."""
        if self.fmt == "json":
            self.emit("log", level=level, message=message)
        elif self.fmt != "none" or level == "warning":
            self._write(("Warning: " if level == "warning" else "") + message)

    def notice(self, message: str) -> None:
        """A line every user must see (the flags of a run): on stderr in every human format, as a warning
        for programs."""
        if self.fmt == "json":
            self.emit("log", level="warning", message=message)
        else:
            self._write(message)

    def _write(self, line: str) -> None:
        if self._bar is not None or self.fmt == "bar":
            from tqdm import tqdm

            tqdm.write(line, file=sys.stderr)  # above a running bar, not through it
        else:
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# -- commands ------------------------------------------------------------------------------------------
def parse_roi(text: Optional[str]):
    if not text:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 6 or not all(math.isfinite(v) for v in values) or min(values[3:]) <= 0:
        raise InputError("--roi needs six finite numbers: centre x,y,z and size x,y,z (positive) in LPS millimetres.")
    return values[:3], values[3:]


class _CliBatchEvents(BatchEvents):
    """The batch's progress as the CLI shows it: bars or JSON lines (see the module docstring)."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self.reporter = reporter

    def case_started(self, number: int, total: int, case: Case) -> None:
        self.reporter.start(f"[{number}/{total}] {case.name}")

    def case_failed(self, case: Case, error: BaseException, code: int) -> None:
        self.reporter.close()
        self.reporter.info(f"{case.name}: skipped: {error_message(error)}", "warning")
        self.reporter.emit("error", case=case.name, message=error_message(error), code=int(code))


def cmd_segment(args, reporter: Reporter, cancel) -> int:
    """Plan the batch (nothing is overwritten), then segment and write each case (see ``headseg.run.batch``),
    here or, with ``--cluster``, on Dask workers (``headseg.run.cluster``)."""
    from headseg.dicom_export import parse_export_formats
    from headseg.segment.packages import find_package

    if args.cluster:  # before any work: without Dask, or with a spec that names no cluster, say so
        from headseg.run.cluster import parse_cluster, require_dask

        require_dask()
        parse_cluster(args.cluster)
    naming: List[str] = []
    cases = discover_cases(args.inputs, notes=naming)
    for note in naming:
        reporter.info(note, "warning")
    export_formats = parse_export_formats(getattr(args, "export", None))
    if export_formats and not any(case.is_dicom for case in cases):
        raise InputError("--export writes DICOM SEG/RT Structure Sets, which must reference the CT's DICOM series: "
                         "give the DICOM folder (or one of its files) as input. For other files, load the result "
                         "in 3D Slicer and use its DICOM export (see 'DICOM in and out' in README.md).")
    package = find_package(args.model, task=args.task, extra_dirs=args.model_dir or ())
    uncertainty = not args.no_uncertainty
    roi = parse_roi(args.roi)
    page = Path(args.output) / "report.html"
    if args.report and page.exists() and not args.overwrite:  # the no-overwrite rule, before any work
        raise existing_outputs_error([str(page)])
    plan = plan_batch(cases, args.output, overwrite=args.overwrite, export_formats=export_formats,
                      uncertainty=uncertainty, run_record=True)
    try:
        return _segment_planned(args, reporter, cancel, plan, package, roi, uncertainty, export_formats)
    finally:
        plan.release()  # when the batch never ran (a bad --structures, a model that does not load)


def _segment_planned(args, reporter: Reporter, cancel, plan, package, roi, uncertainty: bool,
                     export_formats) -> int:
    """The part of :func:`cmd_segment` after planning (the plan holds the claim on its cases)."""
    from headseg.run.segment_case import SegmentSettings, segment_and_write

    cases = plan.cases
    # Keys, display names or TG-263 names, checked before the model is loaded (a typo costs nothing).
    keep = package.label_set.resolve(args.structures.split(",")) if args.structures else None
    settings = SegmentSettings(str(package.path), args.device, roi, keep, args.batch_size, args.allow_non_ct,
                               uncertainty, tuple(export_formats), roi_names=args.roi_names, tta=args.tta)
    reporter.info(f"Model {package.name} ({package.card.architecture}); {len(cases)} case(s)")
    if package.card.synthetic:
        reporter.info(f"Model {package.name} was trained on synthetic phantoms: a demonstration, not for clinical use.",
                      "warning")
    if args.cluster:
        from headseg.run.cluster import run_on_cluster

        reporter.info(f"Cluster {args.cluster}: each worker chooses its device from '{args.device}' and loads the "
                      "model once")
        events = _CliClusterEvents(reporter)
        report = run_on_cluster(args.cluster, plan, settings, events=events, cancel=cancel,
                                stop_on_error=len(cases) == 1)
        events.summary(report)
    else:
        from headseg.segment.runtime import load_on_device

        device, model = load_on_device(package, args.device)  # once for every case
        reporter.info(f"Device: {device.device} ({device.reason})")

        def segment_case(case: Case, outputs: CaseOutputs) -> List[VolumeRow]:
            result = segment_and_write(case, outputs, package, model, device, settings,
                                       warn=lambda message: reporter.info(message, "warning"),
                                       progress=reporter.progress, cancel=cancel)
            reporter.close()
            _report_case(reporter, case, outputs, result)
            return result.rows

        report = run_batch(plan, segment_case, case_errors=(InputError, MemoryError), stop_on_error=len(cases) == 1,
                           events=_CliBatchEvents(reporter))
    _say_flags(reporter)
    if report.cancelled:
        kept = f" The {len(report.succeeded)} finished case(s) are in {report.volumes_csv}." if report.succeeded else ""
        raise Cancelled(f"Cancelled; nothing was written for the case in progress.{kept}")
    if args.report and report.succeeded:
        from headseg.review.report import write_report

        page = write_report(plan.output_dir, plan.output_dir / "report.html", overwrite=args.overwrite)
        reporter.info(f"Batch report: {page}")
    return int(ExitCode.INPUT if not report.succeeded else ExitCode.OK)


def _report_case(reporter: Reporter, case: Case, outputs: CaseOutputs, result) -> None:
    """What the CLI says about a finished case (the same here and for a case run on a cluster)."""
    for note in result.notes:
        reporter.info(f"{case.name}: {note}", "warning")
    from headseg.measure.flag_words import flag_sentences

    reporter.flagged.extend(f"{case.name}: {sentence}" for sentence in flag_sentences(result.rows))
    reporter.info(f"{case.name}: wrote {outputs.segmentation.name} and {outputs.volumes_csv.name} "
                  f"({result.seconds:.1f} s on {result.device})")
    reporter.emit("result", case=case.name, segmentation=str(outputs.segmentation),
                  volumes_csv=str(outputs.volumes_csv), device=result.device, seconds=round(result.seconds, 2),
                  notes=result.notes, dicom=[str(p) for p in outputs.dicom.values()] if result.dicom else [],
                  uncertainty=str(outputs.uncertainty) if outputs.uncertainty and result.uncertainty else None,
                  run_record=str(outputs.run_record) if outputs.run_record else None)


def _say_flags(reporter: Reporter) -> None:
    """The end of a run: every flag of every case, in words (the CSVs and run records hold them too)."""
    from headseg.measure.flag_words import FLAG_INTRO

    reporter.close()
    if reporter.flagged:
        reporter.notice(FLAG_INTRO)
        for line in reporter.flagged:
            reporter.notice(f"  {line}")


class _CliClusterEvents(_CliBatchEvents):
    """A cluster batch as the CLI shows it: one bar of cases done and failed, each case's lines as its
    result arrives."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__(reporter)
        self.started = False

    def _start(self, total: int) -> None:
        if not self.started:
            self.reporter.start(f"{total} case(s) on the cluster")
            self.started = True

    def case_failed(self, case: Case, error: BaseException, code: int) -> None:
        self.reporter.info(f"{case.name}: skipped: {error_message(error)}", "warning")
        self.reporter.emit("error", case=case.name, message=error_message(error), code=int(code))

    def case_done(self, outcome, done: int, failed: int, total: int) -> None:
        self._start(total)
        if outcome.state == "succeeded" and outcome.details is not None:
            for warning in outcome.details.warnings:
                self.reporter.info(warning, "warning")
            _report_case(self.reporter, outcome.case, outcome.outputs, outcome.details)
        self.reporter.progress(done / max(total, 1), f"{done}/{total} done, {failed} failed")

    def summary(self, report) -> None:
        self.reporter.close()
        details = [o.details for o in report.succeeded if o.details is not None]
        workers = sorted({d.worker for d in details})
        loads = sum(1 for d in details if d.loaded_model)
        self.reporter.info(f"{len(report.succeeded)} case(s) done and {len(report.failed)} failed on "
                           f"{len(workers)} worker(s); the model was loaded {loads} time(s)")


def cmd_compare(args, reporter: Reporter, cancel) -> int:
    """Two scans of one patient: volume change per structure against the repeatability bound."""
    from headseg.review.compare import check_comparison_outputs, compare_timepoints, load_timepoint, write_comparison

    baseline = load_timepoint(args.baseline, args.baseline_ct)
    followup = load_timepoint(args.followup, args.followup_ct)
    check_comparison_outputs(args.output, baseline.label_set, overwrite=args.overwrite)  # before registering
    comparison = compare_timepoints(baseline, followup, register=not args.no_register,
                                    allow_different_models=args.allow_different_models)
    written = write_comparison(comparison, args.output, overwrite=args.overwrite)
    print(comparison.summary(), end="")
    reporter.info(f"Wrote {', '.join(p.name for p in written)} in {args.output}")
    return int(ExitCode.OK)


def cmd_report(args, reporter: Reporter, cancel) -> int:
    """One self-contained HTML page for a folder of results."""
    from headseg.review.report import write_report

    page = write_report(args.results, args.output, overwrite=args.overwrite)
    reporter.info(f"Wrote {page}")
    return int(ExitCode.OK)


def cmd_convert(args, reporter: Reporter, cancel) -> int:
    """One CT (a DICOM series, one of its files, or any image 'segment' takes) written as one file: exactly
    the volume 'segment' would segment (the same reader, the same warnings, e.g. a tilted series regularised)."""
    from headseg.io import OutputExistsError, read_volume, write_volume
    from headseg.io.files import check_write_extension

    cases = discover_cases([args.input])
    if len(cases) != 1:
        raise InputError(f"{args.input} holds {len(cases)} images ({', '.join(c.name for c in cases[:5])}); "
                         "convert reads one DICOM series or image at a time.")
    case, output = cases[0], Path(args.output)
    check_write_extension(output, (".nrrd", ".nii.gz", ".nii", ".mha"))
    if output.exists() and not args.overwrite:  # before reading: a refusal costs nothing
        raise OutputExistsError(f"Output file {str(output)!r} already exists. Choose another name or pass --overwrite.")
    with _collect_warnings("headseg.io") as read_warnings, _native_stderr_captured():
        volume = read_volume(case.path, allow_non_ct=args.allow_non_ct)
    for warning in read_warnings:  # the warnings 'segment' shows for this input
        reporter.info(f"{case.name}: {warning}", "warning")
    written = write_volume(volume, output, overwrite=args.overwrite)
    size, spacing = volume.size_ijk, volume.spacing
    reporter.info(f"{case.name}: wrote {written} ({size[0]} x {size[1]} x {size[2]} voxels of "
                  f"{spacing[0]:.3g} x {spacing[1]:.3g} x {spacing[2]:.3g} mm)")
    reporter.emit("result", case=case.name, image=str(written), size=list(size), spacing=list(spacing))
    return int(ExitCode.OK)


def cmd_serve(args, reporter: Reporter, cancel) -> int:
    """A DICOM node (``headseg.node``): receive CT, segment, send the RTSTRUCT/SEG back; or its queue."""
    from headseg.node import load_config
    from headseg.node.server import serve, status_lines

    config = load_config(args.config)
    if args.status:
        print("\n".join(status_lines(config)))
        return int(ExitCode.OK)
    return serve(config)


def find_reference(gt_dir: Path, case: str) -> Optional[Path]:
    """The reference label map of ``case``: ``<case>.seg.nrrd``/``<case>.<ext>``, ``<case>_labels.<ext>`` or
    ``<case>/labels.<ext>`` (the layout of ``headseg phantom`` and OpenKBP)."""
    for suffix in IMAGE_SUFFIXES:
        for stem in (case, f"{case}_labels", f"{case}_label", f"{case}_seg"):
            candidate = gt_dir / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    folder = gt_dir / case
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            if _is_image(child) and any(h in child.name.lower() for h in LABEL_HINTS):
                return child
    return None


def contoured_in(reference: Path) -> Optional[List[str]]:
    """Structures a ``meta.json`` beside the reference says were contoured (OpenKBP), else None."""
    meta = reference.parent / "meta.json"
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            return list(data.get("contoured")) if "contoured" in data else None
        except (OSError, ValueError):
            return None
    return None


def cmd_evaluate(args, reporter: Reporter, cancel) -> int:
    import numpy as np

    from headseg.io import read_segmentation
    from headseg.labels import get_label_set
    from headseg.measure.metrics import evaluate_labels
    from headseg.resample import labels_on_common_grid
    from headseg.review.evaluate import prediction_files, read_exclude_list, summary_lines, suspect_structures

    label_set = get_label_set(args.label_set or {"orbit": "orbit", "han": "openkbp"}.get(args.task, args.task))
    pred_dir, gt_dir = Path(args.pred_dir), Path(args.gt_dir)
    for d in (pred_dir, gt_dir):
        if not d.is_dir():
            raise InputError(f"{d} is not a folder.")
    preds = prediction_files(pred_dir)  # not HeadSeg's side files (uncertainty maps)
    not_scored = suspect_structures(gt_dir, label_set)  # OpenKBP's suspect contours
    if args.exclude:
        for case, keys in read_exclude_list(Path(args.exclude), label_set).items():
            not_scored.setdefault(case, set()).update(keys)
    excluded: Dict[str, Set[str]] = {}
    no_reference: List[str] = []
    if not preds:
        raise InputError(f"No predicted segmentations (.seg.nrrd or label maps) in {pred_dir}.")
    rows: List[Dict[str, Any]] = []
    reporter.start(f"Evaluating {len(preds)} case(s)")
    for n, (case, pred_path) in enumerate(preds):
        if cancel is not None:
            cancel.raise_if_cancelled()
        ref_path = find_reference(gt_dir, case)
        if ref_path is None:
            no_reference.append(case)
            continue
        pred = read_segmentation(pred_path, label_set)
        ref = read_segmentation(ref_path, label_set)
        pred, ref, grid_warning = labels_on_common_grid(pred, ref)  # never crop the prediction to the reference
        if grid_warning:
            reporter.info(f"{case}: {grid_warning}", "warning")
        contoured = contoured_in(ref_path)
        present = set(np.unique(ref.array).tolist())
        skip = set()
        contoured_keys = None
        if contoured is not None:
            contoured_keys = {getattr(_safe_lookup(label_set, c), "key", None) for c in contoured}
        for s in label_set.structures:
            if contoured_keys is not None and s.key not in contoured_keys:
                skip.add(s.key)  # not contoured in this case (meta.json): missing, not background
            elif contoured_keys is None and s.label not in present:
                skip.add(s.key)  # missing from the reference: not contoured, never scored as zero
            elif s.key in not_scored.get(case, ()):
                skip.add(s.key)  # a suspect contour (OpenKBP's manifest) or on the exclude list
                excluded.setdefault(case, set()).add(s.key)
        for row in evaluate_labels(pred.array, ref.array, {s.key: s.label for s in label_set.structures},
                                   spacing_kji=ref.spacing_kji, skip=skip):
            rows.append({"case": case, **row})
        reporter.progress((n + 1) / len(preds), case)
    reporter.close()
    if not rows:
        raise InputError(f"No case had a reference to compare with in {gt_dir} (cases: "
                         f"{', '.join(no_reference[:5])}{' ...' if len(no_reference) > 5 else ''}).")
    _write_report(Path(args.output), rows)
    for line in summary_lines(rows, len(preds), no_reference, excluded):
        print(line)
    reporter.info(f"Wrote {args.output} ({len(rows)} rows) and {Path(args.output).with_suffix('')}_summary.csv")
    return EXIT_OK


def _safe_lookup(label_set, name):
    try:
        return label_set.by_name(name)
    except (KeyError, ValueError, HeadSegError):
        return None


METRIC_COLUMNS = ("dsc", "iou", "sensitivity", "specificity", "hd95_mm", "assd_mm", "pred_volume_cm3",
                  "ref_volume_cm3")


def _summarise(rows):
    import numpy as np

    by_structure: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        by_structure.setdefault(r["structure"], []).append(r)
    summary = []
    for structure, items in by_structure.items():
        entry: Dict[str, Any] = {"structure": structure, "cases": len(items)}
        for m in METRIC_COLUMNS:
            values = np.array([float(i[m]) for i in items if i.get(m) is not None], dtype=float)
            values = values[np.isfinite(values)]
            entry[f"{m}_mean"] = round(float(values.mean()), 4) if values.size else ""
            entry[f"{m}_std"] = round(float(values.std(ddof=1)), 4) if values.size > 1 else ""
        summary.append(entry)
    return summary


def _write_report(path: Path, rows) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = ["case", "structure"] + [c for c in METRIC_COLUMNS]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    summary = _summarise(rows)
    with open(path.with_name(path.stem + "_summary.csv"), "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0].keys()))
        writer.writeheader()
        writer.writerows(summary)


def cmd_phantom(args, reporter: Reporter, cancel) -> int:
    from headseg.synth.phantoms import write_phantom_cases

    out = Path(args.output)
    reporter.start(f"Writing {args.cases} phantom case(s)")
    if getattr(args, "kind", "geometric") == "anatomical":
        from headseg.synth import write_synthetic_cases

        paths = write_synthetic_cases(str(out), args.cases, seed=args.seed,
                                      progress=lambda done, total: reporter.progress(done / max(total, 1), f"case {done}"))
    else:
        paths = write_phantom_cases(out, args.cases, seed=args.seed)
    reporter.progress(1.0, "done")
    reporter.close()
    reporter.info(f"Wrote {len(paths)} synthetic phantom case(s) to {out} (synthetic data, not a patient).")
    return EXIT_OK


def cmd_models(args, reporter: Reporter, cancel) -> int:
    from headseg.segment.packages import list_packages, search_dirs

    errors: List[str] = []
    packages = list_packages(args.model_dir or (), errors=errors)
    if args.json:
        print(json.dumps([{"path": str(p.path), **p.card.to_dict()} for p in packages], indent=2))
    else:
        if not packages:
            print("No model packages installed. Searched: " + ", ".join(str(d) for d in search_dirs(args.model_dir or ())))
        for p in packages:
            print("\n".join(_describe_package(p)))
    for e in errors:
        print(f"Broken package skipped: {e}", file=sys.stderr)
    return EXIT_OK


def _describe_package(package) -> List[str]:
    """What ``headseg models`` says of one model: task, what it segments (key and TG-263 name, the names
    --structures takes), the grid it works on, what it was trained on and measured, where it lies."""
    card = package.card
    label_set = package.label_set
    named = set(card.classes)  # keys, or side-less keys for both sides
    classes = [s.key for s in label_set if s.key in named or s.base_key in named] or list(label_set.keys())
    spacing = " x ".join(f"{v:g}" for v in card.input.spacing_mm)
    window = card.input.window_kji
    region = (f"crops of {' x '.join(str(v) for v in window)} voxels (slices x rows x columns)" if window
              else "the whole image at once")
    lines = [f"{package.name}  (--task {package.task}{', the default' if card.default else ''})",
             f"    {card.description}",
             "    segments: " + ", ".join(f"{k} ({label_set.by_key(k).tg263})" for k in classes),
             f"    works on: voxels of {spacing} mm, {region}; licence {card.license}"]
    if card.synthetic:
        lines.append("    trained on SYNTHETIC images only: a demonstration, not for clinical use")
    summary = card.metrics.get("summary")
    if summary:
        lines.append(f"    measured: {summary}")
    lines.append(f"    folder: {package.path}")
    return lines


def _structures_epilog() -> str:
    """The structures of each task's default label set, for 'segment --help'."""
    from headseg.labels import get_label_set

    parts = []
    for task, name in (("orbit", "orbit"), ("han", "openkbp")):
        names = ", ".join(f"{s.key} ({s.tg263})" for s in get_label_set(name))
        parts.append(f"--task {task}: {names}.")
    return ("Structures, by key (TG-263 name), for --structures: " + " ".join(parts)
            + " Another model may segment others: 'headseg models' lists each model's.")


# -- entry point ---------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headseg", description="Deep-learning segmentation of head CT.")
    parser.add_argument("--version", action="version", version=f"headseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p):
        p.add_argument("--progress-format", choices=("bar", "json", "none"), default="bar",
                       help="progress bars (default), JSON lines on stdout for programs, or none (warnings and flags are "
                            "still shown)")
        p.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks) to stderr")

    seg = sub.add_parser("segment", help="segment CT images (files, case folders, DICOM series folders)",
                         epilog=_structures_epilog())
    seg.add_argument("inputs", nargs="+", metavar="INPUT",
                     help="a CT file (.nrrd, .nii.gz, .nii, .mha), a DICOM series folder or one of its files, a case "
                          "folder holding image.* or ct.*, or a folder of any of these; each becomes one case")
    seg.add_argument("--task", choices=("orbit", "han"), required=True,
                     help="orbit: the four recti and the optic nerve of each orbit; han: head-and-neck organs at risk")
    seg.add_argument("--model", help="model name or package folder (default: the task's default model; "
                                     "'headseg models' lists them)")
    seg.add_argument("--model-dir", action="append", metavar="FOLDER",
                     help="another folder to search for model packages (may be given several times)")
    seg.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                     help="folder for the results (<case>.seg.nrrd, <case>_volumes.csv, volumes.csv, ...)")
    seg.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cuda:N, mps or cpu")
    seg.add_argument("--roi", help="region of interest 'cx,cy,cz,sx,sy,sz' in LPS mm (orbit: overrides the search)")
    seg.add_argument("--structures", metavar="NAMES",
                     help="comma-separated structures to keep (default: all): keys, display names or TG-263 names, "
                          "any case, e.g. parotid_left, 'left parotid' or Parotid_L (listed below)")
    seg.add_argument("--batch-size", type=int, default=None, metavar="N",
                     help="image parts the model runs at once (default: as many as fit; smaller uses less memory)")
    seg.add_argument("--overwrite", action="store_true",
                     help="replace existing output files and the cases' rows in volumes.csv")
    seg.add_argument("--allow-non-ct", action="store_true",
                     help="segment a DICOM series whose Modality is not CT (its values must still be Hounsfield units)")
    seg.add_argument("--export", metavar="FORMATS",
                     help="also write DICOM objects for DICOM input: dicom-seg and/or rtstruct, comma-separated "
                          "(<case>_seg.dcm, <case>_rtstruct.dcm; needs pydicom and highdicom)")
    seg.add_argument("--roi-names", choices=("tg263", "display"), default="tg263",
                     help="names of the RT Structure Set's ROIs: tg263 (AAPM TG-263, e.g. Parotid_R; default) or "
                          "display (e.g. 'right parotid')")
    seg.add_argument("--tta", action="store_true",
                     help="test-time augmentation: average the model over shifted orbit crops (4 passes) or the "
                          "mirrored head and neck (2 passes); slower, steadier")
    seg.add_argument("--no-uncertainty", action="store_true",
                     help="do not write <case>_uncertainty.nrrd (doubt is then left empty; flags are still written)")
    seg.add_argument("--report", action="store_true", help="also write OUTDIR/report.html (headseg report)")
    seg.add_argument("--cluster", metavar="SPEC",
                     help="run the cases on Dask workers: local:N (N processes here) or tcp://HOST:PORT (a running "
                          "scheduler, e.g. from dask-jobqueue); needs pip install 'headseg[cluster]'")
    common(seg)
    seg.set_defaults(func=cmd_segment)

    cp = sub.add_parser("compare", help="volume change between a baseline and a follow-up scan of one patient")
    cp.add_argument("baseline", help="the earlier result: a .seg.nrrd, or a folder holding one (and its CT)")
    cp.add_argument("followup", help="the later result, the same way")
    cp.add_argument("--baseline-ct", help="the baseline CT (file or DICOM folder) when it is not beside the result")
    cp.add_argument("--followup-ct", help="the follow-up CT, the same way")
    cp.add_argument("--no-register", action="store_true", help="compare the volumes only (no registration or picture)")
    cp.add_argument("--allow-different-models", action="store_true",
                    help="compare results of two different models (refused otherwise); the summary then says so "
                         "first and no repeatability bound applies")
    cp.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                    help="folder for change.csv, summary.txt and the pictures")
    cp.add_argument("--overwrite", action="store_true", help="replace existing files in OUTDIR")
    common(cp)
    cp.set_defaults(func=cmd_compare)

    rp = sub.add_parser("report", help="one self-contained HTML page for a folder of 'segment' results")
    rp.add_argument("results", metavar="RESULTS", help="the output folder of 'headseg segment'")
    rp.add_argument("-o", "--output", default="report.html", metavar="HTML", help="the page to write "
                                                                                  "(default report.html)")
    rp.add_argument("--overwrite", action="store_true", help="replace HTML if it exists")
    common(rp)
    rp.set_defaults(func=cmd_report)

    cv = sub.add_parser("convert", help="write a DICOM series (or any input of 'segment') as the one image file "
                                        "'segment' would segment (tilted series regularised)")
    cv.add_argument("input", metavar="SERIES", help="DICOM folder, one file of the series, or an image file")
    cv.add_argument("-o", "--output", required=True, metavar="FILE", help=".nrrd, .nii.gz, .nii or .mha")
    cv.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    cv.add_argument("--allow-non-ct", action="store_true", help="read a DICOM series whose Modality is not CT")
    common(cv)
    cv.set_defaults(func=cmd_convert)

    ev = sub.add_parser("evaluate", help="compare predicted segmentations with references")
    ev.add_argument("pred_dir", metavar="RESULTS", help="the segmentations to score (e.g. the output folder of "
                                                         "'headseg segment'; uncertainty maps are skipped)")
    ev.add_argument("gt_dir", metavar="REFERENCES",
                    help="the reference label maps: <case>.<ext>, <case>_labels.<ext> or <case>/labels.<ext>")
    ev.add_argument("--task", choices=("orbit", "han"), required=True, help="which structures the files hold")
    ev.add_argument("--label-set", help="label set of the files (default: orbit for orbit, openkbp for han)")
    ev.add_argument("-o", "--output", default="report.csv", metavar="CSV",
                    help="per case and structure metrics (default report.csv); CSV_summary.csv gets the means")
    ev.add_argument("--exclude", metavar="CSV",
                    help="case,structure lines not to score (a key, display or TG-263 name; '*' for the whole case); "
                         "contours OpenKBP's manifest.csv flags as suspect are never scored")
    common(ev)
    ev.set_defaults(func=cmd_evaluate)

    ph = sub.add_parser("phantom", help="write synthetic head-CT phantoms with orbit labels")
    ph.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="folder for one sub-folder per case "
                                                                          "(image.nrrd and its true labels)")
    ph.add_argument("--cases", type=int, default=1, metavar="N", help="how many cases to write (default 1)")
    ph.add_argument("--seed", type=int, default=0, metavar="N",
                    help="the first case's random seed (default 0); the same seed gives the same case")
    ph.add_argument("--kind", choices=("geometric", "anatomical"), default="geometric",
                    help="geometric: the simple test phantoms (default); anatomical: randomised anatomy and "
                         "scanner, for training orbit models")
    common(ph)
    ph.set_defaults(func=cmd_phantom)

    sv = sub.add_parser("serve", help="a DICOM node: receive CT series, segment them, send the RT Structure Set "
                                      "and/or SEG back (needs pip install 'headseg[node]')")
    sv.add_argument("--config", required=True, metavar="TOML", help="the node's config file (README: 'As a DICOM node')")
    sv.add_argument("--status", action="store_true", help="print the node's jobs and their states, then exit")
    common(sv)
    sv.set_defaults(func=cmd_serve)

    mo = sub.add_parser("models", help="list installed model packages and their cards")
    mo.add_argument("--json", action="store_true", help="print the full model cards as JSON, for programs")
    mo.add_argument("--model-dir", action="append", metavar="FOLDER",
                    help="another folder to search for model packages (may be given several times)")
    common(mo)
    mo.set_defaults(func=cmd_models)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    reporter = Reporter(args.progress_format)
    cancel = None
    try:
        from headseg.segment.windows import CancelToken

        cancel = CancelToken()
        previous: Dict[int, Any] = {}

        def on_signal(signum, frame):  # cancel cleanly; a second signal kills
            cancel.cancel()
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    except (ImportError, ValueError):  # not in the main thread (tests calling main directly)
        pass
    code, message = int(ExitCode.OK), None
    try:
        code = args.func(args, reporter, cancel)
    except Exception as exc:  # the table in headseg.errors says which code and sentence each error gets
        code, message = int(exit_code_for(exc)), error_message(exc)
        if code == ExitCode.BUG and args.verbose:
            traceback.print_exc()
    finally:
        reporter.close()
    if message:
        reporter.emit("error", message=message, code=code)
        print(f"headseg: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
