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
from typing import Any, Dict, List, Optional, Sequence

from headseg import __version__
from headseg.errors import Cancelled, ExitCode, InputError, error_message, exit_code_for
from headseg.io.cases import Case, discover_cases
from headseg.run.batch import BatchEvents
from headseg.run.plan import CaseOutputs, existing_outputs_error, plan_batch
from headseg.run.segment_case import SegmentSettings

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

    def case_done(self, outcome, done: int, failed: int, total: int) -> None:
        if outcome.state == "succeeded" and outcome.details is not None:
            self.reporter.close()
            _report_case(self.reporter, outcome.case, outcome.outputs, outcome.details)


def cmd_segment(args, reporter: Reporter, cancel) -> int:
    """Plan the batch (nothing is overwritten; ``headseg.run.plan``), then segment and write each case
    (``headseg.run.batch``), here or, with ``--cluster``, on Dask workers (``headseg.run.cluster``)."""
    from headseg.dicom_export import check_export_inputs, parse_export_formats
    from headseg.segment.packages import find_package

    cluster = None
    if args.cluster:  # before any work: without Dask, or with a spec that names no cluster, say so
        from headseg.run.cluster import parse_cluster, require_dask

        require_dask()
        cluster = parse_cluster(args.cluster)
    naming: List[str] = []
    cases = discover_cases(args.inputs, notes=naming)
    for note in naming:
        reporter.info(note, "warning")
    export_formats = parse_export_formats(args.export)
    check_export_inputs(cases, export_formats)
    package = find_package(args.model, task=args.task, extra_dirs=args.model_dir or ())
    uncertainty = not args.no_uncertainty
    roi = parse_roi(args.roi)
    page = Path(args.output) / "report.html"
    if args.report and page.exists() and not args.overwrite:  # the no-overwrite rule, before any work
        raise existing_outputs_error([str(page)])
    plan = plan_batch(cases, args.output, overwrite=args.overwrite, export_formats=export_formats,
                      uncertainty=uncertainty, run_record=True)
    try:
        # Keys, display names or TG-263 names, checked before the model is loaded (a typo costs nothing).
        keep = package.label_set.resolve(args.structures.split(",")) if args.structures else None
        settings = SegmentSettings(str(package.path), args.device, roi, keep, args.batch_size, args.allow_non_ct,
                                   uncertainty, tuple(export_formats), roi_names=args.roi_names, tta=args.tta)
        return _segment_planned(args, reporter, cancel, plan, package, settings, cluster)
    finally:
        plan.release()  # when the batch never ran (a bad --structures, a model that does not load)


def _segment_planned(args, reporter: Reporter, cancel, plan, package, settings, cluster) -> int:
    """The part of :func:`cmd_segment` after planning (the plan holds the claim on its cases)."""
    cases = plan.cases
    reporter.info(f"Model {package.name} ({package.card.architecture}); {len(cases)} case(s)")
    if package.card.synthetic:
        reporter.info(f"Model {package.name} was trained on synthetic phantoms: a demonstration, not for clinical use.",
                      "warning")
    if cluster is not None:
        from headseg.run.cluster import run_on_cluster

        reporter.info(f"Cluster {cluster}: each worker chooses its device from '{args.device}' and loads the "
                      "model once")
        events = _CliClusterEvents(reporter)
        report = run_on_cluster(cluster, plan, settings, events=events, cancel=cancel, stop_on_error=len(cases) == 1)
        events.summary(report)
    else:
        from headseg.run.segment_case import run_in_process

        report = run_in_process(plan, package, settings, events=_CliBatchEvents(reporter), say=reporter.info,
                                warn=lambda message: reporter.info(message, "warning"), progress=reporter.progress,
                                cancel=cancel, stop_on_error=len(cases) == 1)
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
    from headseg.review.compare import compare_results

    comparison, written = compare_results(args.baseline, args.followup, args.output, baseline_ct=args.baseline_ct,
                                          followup_ct=args.followup_ct, register=not args.no_register,
                                          allow_different_models=args.allow_different_models,
                                          overwrite=args.overwrite)
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
    """One CT written as one file: exactly the volume 'segment' would segment (``headseg.io.convert``)."""
    from headseg.io.convert import convert_input

    done = convert_input(args.input, args.output, overwrite=args.overwrite, allow_non_ct=args.allow_non_ct)
    name = done.case.name
    for warning in done.warnings:  # the warnings 'segment' shows for this input
        reporter.info(f"{name}: {warning}", "warning")
    size, spacing = done.volume.size_ijk, done.volume.spacing
    reporter.info(f"{name}: wrote {done.path} ({size[0]} x {size[1]} x {size[2]} voxels of "
                  f"{spacing[0]:.3g} x {spacing[1]:.3g} x {spacing[2]:.3g} mm)")
    reporter.emit("result", case=name, image=str(done.path), size=list(size), spacing=list(spacing))
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


def cmd_evaluate(args, reporter: Reporter, cancel) -> int:
    """Score a results folder against references (``headseg.review.evaluate``) and say the result."""
    from headseg.labels import get_label_set
    from headseg.review.evaluate import score_folder, summary_lines, write_evaluation

    label_set = get_label_set(args.label_set or {"orbit": "orbit", "han": "openkbp"}.get(args.task, args.task))

    def progress(done: int, total: int, case: str) -> None:
        if done == 0:
            reporter.start(f"Evaluating {total} case(s)")
        else:
            reporter.progress(done / total, case)

    scores = score_folder(Path(args.pred_dir), Path(args.gt_dir), label_set, exclude=args.exclude,
                          warn=lambda message: reporter.info(message, "warning"), progress=progress, cancel=cancel)
    reporter.close()
    summary = write_evaluation(Path(args.output), scores.rows)
    for line in summary_lines(scores.rows, scores.cases, scores.no_reference, scores.excluded):
        print(line)
    reporter.info(f"Wrote {args.output} ({len(scores.rows)} rows) and {summary}")
    return int(ExitCode.OK)


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
    return int(ExitCode.OK)


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
    return int(ExitCode.OK)


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


# -- parser and entry point ---------------------------------------------------------------------------
def _add_common(p) -> None:
    """The options of every command."""
    p.add_argument("--progress-format", choices=("bar", "json", "none"), default="bar",
                   help="progress bars (default), JSON lines on stdout for programs, or none (warnings and flags are "
                        "still shown)")
    p.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks) to stderr")


def _add_segment_parser(sub) -> None:
    """``headseg segment``'s options."""
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
    _add_common(seg)
    seg.set_defaults(func=cmd_segment)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headseg", description="Deep-learning segmentation of head CT.")
    parser.add_argument("--version", action="version", version=f"headseg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_segment_parser(sub)

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
    _add_common(cp)
    cp.set_defaults(func=cmd_compare)

    rp = sub.add_parser("report", help="one self-contained HTML page for a folder of 'segment' results")
    rp.add_argument("results", metavar="RESULTS", help="the output folder of 'headseg segment'")
    rp.add_argument("-o", "--output", default="report.html", metavar="HTML", help="the page to write "
                                                                                  "(default report.html)")
    rp.add_argument("--overwrite", action="store_true", help="replace HTML if it exists")
    _add_common(rp)
    rp.set_defaults(func=cmd_report)

    cv = sub.add_parser("convert", help="write a DICOM series (or any input of 'segment') as the one image file "
                                        "'segment' would segment (tilted series regularised)")
    cv.add_argument("input", metavar="SERIES", help="DICOM folder, one file of the series, or an image file")
    cv.add_argument("-o", "--output", required=True, metavar="FILE", help=".nrrd, .nii.gz, .nii or .mha")
    cv.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    cv.add_argument("--allow-non-ct", action="store_true", help="read a DICOM series whose Modality is not CT")
    _add_common(cv)
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
    _add_common(ev)
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
    _add_common(ph)
    ph.set_defaults(func=cmd_phantom)

    sv = sub.add_parser("serve", help="a DICOM node: receive CT series, segment them, send the RT Structure Set "
                                      "and/or SEG back (needs pip install 'headseg[node]')")
    sv.add_argument("--config", required=True, metavar="TOML", help="the node's config file (README: 'As a DICOM node')")
    sv.add_argument("--status", action="store_true", help="print the node's jobs and their states, then exit")
    _add_common(sv)
    sv.set_defaults(func=cmd_serve)

    mo = sub.add_parser("models", help="list installed model packages and their cards")
    mo.add_argument("--json", action="store_true", help="print the full model cards as JSON, for programs")
    mo.add_argument("--model-dir", action="append", metavar="FOLDER",
                    help="another folder to search for model packages (may be given several times)")
    _add_common(mo)
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
