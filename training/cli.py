"""``headseg-train`` (or ``python -m training``): train, check data, evaluate and export models.

    headseg-train train --config svnet_seed000 --data DATA --out RUN [--set key=value ...] [--resume]
    torchrun --nproc_per_node=N -m training train ...   (the same on N processes: training.distributed)
    headseg-train validate-data --data DATA [--config RECIPE | --task orbit --label-set orbit]
    headseg-train evaluate --model PACKAGE --data DATA [--split validation|test|train|all] [--output CSV]
    headseg-train export --run RUN [--out FOLDER] [--no-evaluate]
    headseg-train recipes

Exit codes (``headseg.errors.ExitCode``, as for ``headseg``): 0 success, 1 unexpected error, 2 bad input
or data, 3 model package problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import traceback
from pathlib import Path
from typing import Optional, Sequence

from headseg.errors import ExitCode

__all__ = ["main", "build_parser"]



def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_train(args) -> int:
    from .config import load_config, resolve_config_path
    from .engine import train

    if args.resume:
        config = None
    else:
        if not args.config:
            raise ValueError("Give a recipe with --config (see 'headseg-train recipes'), or --resume a run.")
        config = load_config(args.config, args.set or [])
        resolve_config_path(args.config)  # fails early with the list of recipes
        config["source"] = str(args.config)
    out = Path(args.out)
    if not args.resume and (out / "checkpoints" / "last.pt").is_file() and not args.overwrite:
        raise ValueError(f"{out} already holds a run. Continue it with --resume, or choose another --out "
                         "(--overwrite starts it again).")
    command = "headseg-train " + " ".join(shlex.quote(a) for a in (args.argv or []))
    result = train(config, args.data, out, resume=args.resume, progress=not args.quiet,
                   stop_after_epochs=args.epochs_this_run, command=command, export=not args.no_export,
                   overrides=(args.set or []) if args.resume else ())
    from .distributed import is_main_process

    if not is_main_process():  # torchrun: rank 0 reports the run
        return ExitCode.OK
    _say(f"Run folder: {result.run_dir}  (best validation mean DSC {result.best_metric:.4f} at epoch "
         f"{result.best_epoch}, {result.epochs_done} epoch(s), {result.seconds / 60:.1f} min)")
    if result.package_dir:
        _say(f"Model package: {result.package_dir}  (use it with: headseg segment CT --model {result.package_dir})")
    return ExitCode.OK


def cmd_validate_data(args) -> int:
    from headseg.labels import get_label_set

    from .config import load_config
    from .datasets import discover_records, validate_dataset

    task, label_set = args.task, args.label_set
    if args.config:
        config = load_config(args.config, args.set or [])
        task, label_set = task or config["task"], label_set or config["label_set"]
    task = task or "orbit"
    label_set = label_set or {"orbit": "orbit", "han": "openkbp"}[task]
    records = discover_records(args.data)
    report = validate_dataset(records, get_label_set(label_set), task=task)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.summary())
    if not report.usable or (args.strict and report.errors):
        return ExitCode.INPUT
    return ExitCode.OK


def cmd_evaluate(args) -> int:
    from headseg.review.evaluate import summary_lines, write_evaluation
    from headseg.segment.packages import find_package

    from .datasets import discover_records
    from .evaluate import RUN_COLUMNS, evaluate_package

    package = find_package(args.model)
    records = discover_records(args.data)
    if args.split != "all":
        chosen = [r for r in records if (r.split or "") == args.split]
        if not chosen and args.split == "validation":
            trained = set(package.card.training.get("split", {}).get("validation", []))
            chosen = [r for r in records if r.case in trained]
        if not chosen:
            raise ValueError(f"No case of split {args.split!r} in {args.data}; use --split all.")
        records = chosen
    rows = evaluate_package(package, records, device=args.device, progress=True, say=_say, tta=args.tta)
    if not rows:
        raise ValueError("Nothing to evaluate: no case had a structure that the model predicts.")
    summary = write_evaluation(Path(args.output), rows, extra_columns=RUN_COLUMNS)
    _say(f"{package.summary()}")
    for line in summary_lines(rows, len(records)):
        _say(line)
    _say(f"Wrote {args.output} and {summary}")
    return ExitCode.OK


def cmd_export(args) -> int:
    from .export import export_run

    folder = export_run(args.run, say=_say, evaluate=not args.no_evaluate, device=args.device, out_dir=args.out,
                        overrides=args.set or [])
    _say(f"Model package: {folder}")
    return ExitCode.OK


def cmd_recipes(args) -> int:
    from .config import CONFIG_DIR, list_recipes

    for name in list_recipes():
        data = json.loads((CONFIG_DIR / f"{name}.json").read_text(encoding="utf-8"))
        print(f"{name:<22} {data.get('description', '')}")
    return ExitCode.OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="headseg-train", description="Train and export HeadSeg models.")
    parser.add_argument("-v", "--verbose", action="store_true", help="print debugging information")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model from a recipe and a dataset")
    p.add_argument("--config", help="recipe file or shipped recipe name (see 'headseg-train recipes': "
                                    "svnet_seed000, orbit_synth_cpu, anatomynet_openkbp_cpu, ...)")
    p.add_argument("--data", required=True, help="dataset folder (manifest.csv, case folders or OpenKBP layout)")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a recipe entry (repeatable)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again even if --out holds a run")
    p.add_argument("--epochs-this-run", type=int, default=None, help="stop after this many epochs (resume later)")
    p.add_argument("--no-export", action="store_true", help="do not export the model package at the end")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("validate-data", help="check a dataset before training")
    p.add_argument("--data", required=True)
    p.add_argument("--config", help="take task and label set from this recipe")
    p.add_argument("--set", action="append", metavar="KEY=VALUE")
    p.add_argument("--task", choices=("orbit", "han"))
    p.add_argument("--label-set", help="orbit, pddca or openkbp")
    p.add_argument("--strict", action="store_true", help="exit with code 2 if any case has an error")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_validate_data)

    p = sub.add_parser("evaluate", help="evaluate a model package on labelled cases")
    p.add_argument("--model", required=True, help="model package folder or installed model name")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="all", choices=("all", "train", "validation", "test"))
    p.add_argument("--device", default="auto")
    p.add_argument("--output", default="evaluation.csv")
    p.add_argument("--tta", action="store_true", help="with test-time augmentation (as 'headseg segment --tta')")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("export", help="export a run's best checkpoint as a model package")
    p.add_argument("--run", required=True)
    p.add_argument("--out", default=None, help="package folder (default RUN/model/<name>)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-evaluate", action="store_true")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change the run's recipe for the card only (e.g. export.default=true); repeatable")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("recipes", help="list the shipped training recipes")
    p.set_defaults(func=cmd_recipes)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    from headseg.errors import HeadSegError, ModelPackageError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return int(args.func(args))
    except ModelPackageError as exc:
        _say(f"Error: {exc}")
        return ExitCode.MODEL
    except (HeadSegError, ValueError, FileNotFoundError) as exc:
        if args.verbose:
            traceback.print_exc()
        _say(f"Error: {exc}")
        return ExitCode.INPUT
    except KeyboardInterrupt:
        _say("Interrupted. Continue with: headseg-train train --resume --data ... --out ...")
        return ExitCode.BUG
    except Exception:  # a bug: show everything
        traceback.print_exc()
        _say("Unexpected error (a bug); please report it with the traceback above.")
        return ExitCode.BUG
