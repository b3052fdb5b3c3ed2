"""The modules' headless batch (``Resources/Scripts/<Module>Batch.py``): the panel's logic on every CT of a
folder, each case saved with Slicer's own writers. Moved here as it was; it is to be switched to the one
batch API of ``headseg.batch`` that the command line shares.
"""

from __future__ import annotations

import csv
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from ..errors import HeadSegError, InputError
from ..volumes import REVIEW_COLUMNS
from .runs import TASK_LABEL_SETS, SegmentationRun, missing_packages, model_choices
from .scene import PathLike, in_slicer_app, init_scene, node_from_volume, remove_nodes, write_segmentation_node
from .tables import export_table_csv, rows_from_table_node

__all__ = ["BatchCase", "run_batch", "batch_main", "batch_self_test"]


@dataclass
class BatchCase:
    case: str
    state: str
    message: str = ""
    segmentation: Optional[Path] = None
    volumes_csv: Optional[Path] = None


def run_batch(task: str, input_dir: PathLike, output_dir: PathLike, model: Optional[str] = None,
              device: str = "auto", structures: Optional[Sequence[str]] = None, overwrite: bool = False,
              log: Callable[[str], None] = print,
              timeout_per_case: Optional[float] = None) -> List[BatchCase]:
    """Segment every CT in ``input_dir`` exactly as the module does, writing ``<case>.seg.nrrd`` and
    ``<case>_volumes.csv`` per case plus ``volumes.csv`` for all cases into ``output_dir``.

    One case failing does not stop the others; the returned list says what happened to each.
    """

    from ..cases import discover_cases
    from ..io import read_volume
    from ..volumes import write_volume_csv

    cases = discover_cases([str(input_dir)])
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    targets = {name: (output_dir / f"{name}.seg.nrrd", output_dir / f"{name}_volumes.csv")
               for name, _ in cases}
    existing = [str(p) for pair in targets.values() for p in pair if p.exists()]
    if existing and not overwrite:
        raise InputError(f"{len(existing)} output file(s) already exist (e.g. {existing[0]}). "
                         "Choose another output folder or pass --overwrite.")
    outcomes: List[BatchCase] = []
    all_rows = []
    for n, (name, path) in enumerate(cases, start=1):
        log(f"[{n}/{len(cases)}] {name}")
        created = []
        try:
            volume_node = node_from_volume(read_volume(path), name)
            created.append(volume_node)
            run = SegmentationRun(task, volume_node, model=model, device=device, structures=structures,
                                  result_name=f"{name} segmentation")
            run.start()
            state = run.wait(timeout=timeout_per_case)
            created += [node for node in (run.segmentation_node, run.table_node) if node is not None]
            for line in run.warnings:
                log(f"  warning: {line}")
            if state != "succeeded":
                outcomes.append(BatchCase(name, state, run.message))
                log(f"  {state}: {run.message}")
                continue
            seg_path, csv_path = targets[name]
            write_segmentation_node(run.segmentation_node, seg_path)
            export_table_csv(run.table_node, csv_path)
            all_rows.extend((name, row) for row in rows_from_table_node(run.table_node))
            outcomes.append(BatchCase(name, state, run.message, seg_path, csv_path))
            log(f"  wrote {seg_path.name} and {csv_path.name}")
        except HeadSegError as exc:
            outcomes.append(BatchCase(name, "failed", str(exc)))
            log(f"  failed: {exc}")
        finally:
            remove_nodes(created)
    if all_rows:
        combined = output_dir / "volumes.csv"
        for index, (case, row) in enumerate(all_rows):
            write_volume_csv([row], combined, case=case, append=index > 0)
    return outcomes


def batch_main(argv: Optional[Sequence[str]] = None, default_task: Optional[str] = None) -> int:
    """Command line of the modules' batch scripts (``<Module>Batch.py``) (run with ``Slicer --no-main-window --python-script``).

    Exit codes: 0 every case succeeded, 1 some failed, 2 bad arguments or nothing could be done.
    """
    import argparse

    parser = argparse.ArgumentParser(
        prog="<Module>Batch.py", description="Segment every CT of a folder with the HeadSeg Slicer module logic.")
    parser.add_argument("--task", choices=sorted(TASK_LABEL_SETS), default=default_task,
                        required=default_task is None)
    parser.add_argument("--input-dir", required=True, help="folder of CT files, case folders, DICOM folders")
    parser.add_argument("--output-dir", required=True, help="where <case>.seg.nrrd and <case>_volumes.csv go")
    parser.add_argument("--model", help="model name or package folder (default: the task's default model)")
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--structures", help="comma-separated structure keys to keep (default: all)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        return 2 if exc.code else 0
    init_scene()
    structures = [s.strip() for s in args.structures.split(",") if s.strip()] if args.structures else None
    try:
        outcomes = run_batch(args.task, args.input_dir, args.output_dir, model=args.model, device=args.device,
                             structures=structures, overwrite=args.overwrite)
    except HeadSegError as exc:
        print(f"batch: {exc}")
        return 2
    failed = [o for o in outcomes if o.state != "succeeded"]
    print(f"{len(outcomes) - len(failed)} of {len(outcomes)} case(s) segmented; results in {args.output_dir}")
    return 0 if not failed else (2 if len(failed) == len(outcomes) else 1)


def batch_self_test(task: str, seed: int = 1, model: Optional[str] = None) -> None:
    """The check behind the modules' ``<Module>BatchTest.py`` (CTest runs them inside Slicer): what the batch
    script runs, on one synthetic phantom, writes the case's segmentation and volume CSV, exits 0 and (in the
    Slicer application) leaves the scene with as many nodes as before.

    Raises ``unittest.SkipTest`` when no ``task`` model or a needed Python package is installed (a fresh
    build passes and says why) and ``AssertionError`` when a check fails. Outside Slicer ``batch_main``
    builds its own headless scene, so the scene check is left to the pytest suite there.
    """
    import unittest

    from ..io import write_volume
    from ..phantoms import make_head_phantom

    if (model is None and not model_choices(task)) or missing_packages():
        raise unittest.SkipTest(f"no {task} model package or Python packages installed")
    scene = init_scene() if in_slicer_app() else None
    with tempfile.TemporaryDirectory() as folder:
        inputs, outputs = Path(folder) / "in", Path(folder) / "out"
        inputs.mkdir()
        phantom = make_head_phantom(seed=seed, spacing=(1.5, 1.5, 2.0), noise_hu=5.0)
        write_volume(phantom.image, inputs / "case1.nrrd")
        nodes_before = scene.GetNumberOfNodes() if scene is not None else None
        argv = ["--input-dir", str(inputs), "--output-dir", str(outputs), "--device", "cpu"]
        code = batch_main(argv + (["--model", model] if model else []), default_task=task)
        if code != 0:
            raise AssertionError(f"the {task} batch exited with {code}, expected 0 (see its output above)")
        seg_path, csv_path = outputs / "case1.seg.nrrd", outputs / "case1_volumes.csv"
        if not seg_path.is_file():
            raise AssertionError(f"the {task} batch wrote no {seg_path.name}")
        with open(csv_path, newline="") as f:
            header = next(csv.reader(f))
        if header != list(REVIEW_COLUMNS):
            raise AssertionError(f"{csv_path.name} starts with {header}")
        if scene is not None and scene.GetNumberOfNodes() != nodes_before:
            raise AssertionError(f"the batch left {scene.GetNumberOfNodes() - nodes_before} node(s) in the scene")
