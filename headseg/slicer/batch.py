"""The modules' headless batch (``Resources/Scripts/<Module>Batch.py``): the panel's logic on every CT of a
folder, each case saved with Slicer's own writers.

The batch itself -- the outputs planned and refused before any work, a failed case leaving nothing
behind, ``volumes.csv`` kept up to date after every case -- is :mod:`headseg.run.batch`, the one the command
line runs; only the segmentation of one case (:func:`_segment_case`: the module's child process, the
result imported into the scene, saved, its nodes removed) is written here.
"""

from __future__ import annotations

import csv
import tempfile
from functools import partial
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from headseg.errors import HeadSegError
from headseg.io.cases import Case
from headseg.measure.volumes import REVIEW_COLUMNS, VolumeRow
from headseg.run.batch import BatchEvents, BatchReport, run_batch
from headseg.run.plan import CaseOutputs, plan_batch
from headseg.slicer.review import COLOR_NODE_TAG
from headseg.slicer.runs import TASK_LABEL_SETS, SegmentationRun, missing_packages, model_choices
from headseg.slicer.scene import (
    PathLike,
    in_slicer_app,
    init_scene,
    node_from_volume,
    remove_nodes,
    write_segmentation_node,
)
from headseg.slicer.tables import export_rows_csv

__all__ = ["segment_folder", "batch_main", "batch_self_test"]


def segment_folder(task: str, input_dir: PathLike, output_dir: PathLike, model: Optional[str] = None,
                   device: str = "auto", structures: Optional[Sequence[str]] = None, overwrite: bool = False,
                   log: Callable[[str], None] = print,
                   timeout_per_case: Optional[float] = None) -> BatchReport:
    """Segment every CT in ``input_dir`` exactly as the module does, writing ``<case>.seg.nrrd``,
    ``<case>_volumes.csv`` (with doubt and flags) and ``<case>_uncertainty.nrrd`` (when the run made a
    map) per case, plus ``volumes.csv`` for all cases, into ``output_dir`` (:func:`headseg.run.batch.run_batch`).

    One case failing does not stop the others; the report says what happened to each. Existing outputs
    are refused before any work unless ``overwrite``."""
    from headseg.io.cases import discover_cases

    plan = plan_batch(discover_cases([str(input_dir)]), output_dir, overwrite=overwrite, uncertainty=True)
    segment = partial(_segment_case, task=task, model=model, device=device, structures=structures, log=log,
                      timeout=timeout_per_case)
    return run_batch(plan, segment, case_errors=(HeadSegError, TimeoutError), events=BatchEvents(log=log))


def _segment_case(case: Case, outputs: CaseOutputs, task: str, model: Optional[str], device: str,
                  structures: Optional[Sequence[str]], log: Callable[[str], None],
                  timeout: Optional[float]) -> List[VolumeRow]:
    """One case as the panel segments it, saved with Slicer's writers; every node it adds is removed."""
    from headseg.io import read_volume

    created = []
    try:
        volume_node = node_from_volume(read_volume(case.path), case.name)
        created.append(volume_node)
        scene = volume_node.GetScene()
        if scene.GetSingletonNode(COLOR_NODE_TAG, "vtkMRMLColorTableNode") is None:
            created.append(_ColourTableOf(scene))  # the map's colour table, made by this case: removed too
        run = SegmentationRun(task, volume_node, model=model, device=device, structures=structures,
                              result_name=f"{case.name} segmentation")
        run.start()
        state = run.wait(timeout=timeout)
        created += [n for n in (run.segmentation_node, run.table_node, run.uncertainty_node) if n is not None]
        for line in run.warnings:
            log(f"  warning: {line}")
        if state != "succeeded":
            raise HeadSegError(run.message)  # fails this case only
        write_segmentation_node(run.segmentation_node, outputs.segmentation)
        export_rows_csv(run.rows, outputs.volumes_csv)
        if run.uncertainty_node is not None and outputs.uncertainty is not None:
            _write_volume_node(run.uncertainty_node, outputs.uncertainty)
        return run.rows
    finally:
        remove_nodes([n.node() if isinstance(n, _ColourTableOf) else n for n in created])


class _ColourTableOf:
    """The uncertainty colour table a case may add (looked up at clean-up, when it exists)."""

    def __init__(self, scene) -> None:
        self.scene = scene

    def node(self):
        return self.scene.GetSingletonNode(COLOR_NODE_TAG, "vtkMRMLColorTableNode")


def _write_volume_node(volume_node, path: Path) -> None:
    """Slicer's volume writer (the node's default storage node, vtkMRMLVolumeArchetypeStorageNode),
    compressed; the storage node is made for this write only and never added to the scene."""
    storage = volume_node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    storage.SetUseCompression(True)
    if not storage.WriteData(volume_node):
        raise HeadSegError(f"Slicer could not write {path}.")


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
        report = segment_folder(args.task, args.input_dir, args.output_dir, model=args.model, device=args.device,
                                structures=structures, overwrite=args.overwrite)
    except HeadSegError as exc:
        print(f"batch: {exc}")
        return 2
    total, done = len(report.outcomes), len(report.succeeded)
    print(f"{done} of {total} case(s) segmented; results in {args.output_dir}")
    return 0 if done == total else (1 if done else 2)


def batch_self_test(task: str, seed: int = 1, model: Optional[str] = None) -> None:
    """The check behind the modules' ``<Module>BatchTest.py`` (CTest runs them inside Slicer): what the batch
    script runs, on one synthetic phantom, writes the case's segmentation and volume CSV, exits 0 and (in the
    Slicer application) leaves the scene with as many nodes as before.

    Raises ``unittest.SkipTest`` when no ``task`` model or a needed Python package is installed (a fresh
    build passes and says why) and ``AssertionError`` when a check fails. Outside Slicer ``batch_main``
    builds its own headless scene, so the scene check is left to the pytest suite there.
    """
    import unittest

    from headseg.io import write_volume
    from headseg.synth.phantoms import make_head_phantom

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
