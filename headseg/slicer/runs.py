"""One segmentation run (the Segment button, the batch script): the input written for a ``headseg segment``
child process, the child followed without blocking, the result imported with its volume table; plus the
installed models of a task and the Python packages the child needs.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterable, List, Optional, Sequence

from headseg.errors import HeadSegError, InputError
from headseg.slicer.measures import SegmentMeasures
from headseg.slicer.scene import PathLike, in_slicer_app, roi_from_markups, safe_case_id, volume_from_node
from headseg.slicer.segments import import_segmentation_file
from headseg.slicer.tables import find_volume_table, new_volume_table_node, update_volume_table

if TYPE_CHECKING:  # annotations only; importing them here would slow down 'import headseg.slicer.runs'
    from headseg.labels import LabelSet
    from headseg.measure.volumes import VolumeRow
    from headseg.run.child_process import SegmentationProcess
    from headseg.segment.packages import ModelPackage

__all__ = ["HEADSEG_REQUIREMENTS", "PANEL_REQUIREMENTS", "TASK_LABEL_SETS", "missing_packages", "model_choices", "child_environment",
           "SegmentationRun"]

#: Python packages the segmentation child process needs (same as pyproject's dependencies; tested).
HEADSEG_REQUIREMENTS = ("numpy>=1.22", "scipy>=1.8", "SimpleITK>=2.2", "pynrrd>=1.0", "torch>=2.1",
                        "tqdm>=4.60")
#: Python packages the panel's own actions need in Slicer's Python (the volume table's doubt, "Add to
#: training set", "Compare with earlier scan"). Slicer 5.6 to 5.10 ship numpy, scipy and SimpleITK
#: (SuperBuild/External_python-numpy.cmake, External_python-scipy.cmake, External_SimpleITK.cmake), not
#: pynrrd, with which headseg.io writes .seg.nrrd files (tested against the imports of that code).
PANEL_REQUIREMENTS = ("numpy>=1.22", "scipy>=1.8", "SimpleITK>=2.2", "pynrrd>=1.0")
TASK_LABEL_SETS = {"orbit": "orbit", "han": "pddca"}  # label set used when no model card says otherwise


def missing_packages(requirements: Sequence[str] = HEADSEG_REQUIREMENTS) -> List[str]:
    """Requirements (pip syntax) that are not installed or too old. Imports nothing heavy (torch!).

    The Slicer widget asks the user before installing them; this function only looks.
    """
    from importlib import metadata

    missing = []
    for requirement in requirements:
        name = re.split(r"[<>=!~ \[;]", requirement, maxsplit=1)[0]
        try:
            installed = metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(requirement)
            continue
        try:
            from packaging.requirements import Requirement
            from packaging.version import Version

            if not Requirement(requirement).specifier.contains(Version(installed), prereleases=True):
                missing.append(requirement)
        except ImportError:  # no 'packaging': presence is all we can check
            pass
        except ValueError:  # unparsable local version string: accept what is installed
            pass
    return missing


def model_choices(task: str, extra_dirs: Iterable[PathLike] = ()) -> List[ModelPackage]:
    """Installed model packages for ``task``, the default one first."""
    from headseg.segment.packages import list_packages

    packages = list_packages([Path(d) for d in extra_dirs], task=task)
    return sorted(packages, key=lambda p: (not p.card.default, p.name))


def child_environment() -> Optional[Dict[str, str]]:
    """The environment a segmentation child starts from.

    Inside the Slicer application: Slicer's startup environment (``slicer.util.startupEnvironment()``), the
    one ``slicer.util.launchConsoleProcess`` gives its children by default, so the child Python does not
    inherit the library and Python paths Slicer set for itself (the ``PythonSlicer`` launcher sets its
    own). Elsewhere None: the child inherits this process's environment.
    """
    if not in_slicer_app():
        return None
    import slicer

    return {str(key): str(value) for key, value in slicer.util.startupEnvironment().items()}


class SegmentationRun:
    """Segment one volume node in a child process and import the result; never blocks the caller.

    ``start()`` checks the input and writes it to a temporary file, ``poll()`` (from a GUI timer) follows
    the child and, when it succeeds, imports the result into a segmentation node with a volume table.
    Nothing is added to the scene before that moment, so a cancelled or failed run leaves it unchanged.

    Args:
        task: "orbit" or "han".
        input_node: the CT volume node.
        model: model name or package folder; None = the task's default model.
        device: "auto", "cuda" or "cpu" (passed to ``headseg segment --device``).
        roi_node: optional markups ROI restricting the search.
        structures: label-set keys to keep (AnatomyNetHaN's organ choice); None = all.
        output_node: a segmentation node to overwrite; None = create a new one.
        show_3d: create closed surfaces for the 3D view (off in headless runs).
        result_name: name of a new segmentation node.
        tta: test-time augmentation (``headseg segment --tta``).
    """

    def __init__(self, task: str, input_node, model: Optional[str] = None, device: str = "auto",
                 roi_node=None, structures: Optional[Sequence[str]] = None, output_node=None,
                 show_3d: bool = False,
                 result_name: Optional[str] = None, extra_model_dirs: Iterable[PathLike] = (),
                 work_root: Optional[PathLike] = None, python: Optional[str] = None, tta: bool = False) -> None:
        self.task = task
        self.input_node = input_node
        self.model = model
        self.device = device
        self.roi_node = roi_node
        self.structures = list(structures) if structures is not None else None
        self.output_node = output_node
        self.show_3d = show_3d
        self.result_name = result_name
        self.extra_model_dirs = list(extra_model_dirs)
        self.work_root = work_root
        self.python = python
        self.tta = bool(tta)
        self.package: Optional[ModelPackage] = None
        self.label_set: Optional[LabelSet] = None
        self.process: Optional[SegmentationProcess] = None
        self.segmentation_node: Any = None  # MRML nodes of the result, once imported
        self.table_node: Any = None
        self.uncertainty_node: Any = None
        self.measures: Optional[SegmentMeasures] = None  # the result's measures (doubt and flags included)
        self.rows: List[VolumeRow] = []  # the result's volume rows with doubt and flags, in label order
        self.warnings: List[str] = []
        self._failure: Optional[str] = None
        self.log: List[str] = []

    # -- steps -----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Check the input, write it for the child and start it. Raises HeadSegError for the user."""
        from headseg.run.child_process import SegmentationProcess, segment_command
        from headseg.segment.packages import find_package
        from headseg.validation import check_ct

        if self.task not in TASK_LABEL_SETS:
            raise InputError(f"Unknown task {self.task!r}; expected one of {', '.join(TASK_LABEL_SETS)}.")
        volume = volume_from_node(self.input_node)
        self.warnings = check_ct(volume)
        self.package = package = find_package(self.model, task=self.task,
                                              extra_dirs=[Path(d) for d in self.extra_model_dirs])
        self.label_set = label_set = package.label_set
        if self.structures is not None:
            if not self.structures:
                raise InputError("Choose at least one structure to segment.")
            unknown = [k for k in self.structures if k not in label_set]
            if unknown:
                raise InputError(f"Model {package.name} does not segment {unknown}.")
        roi = roi_from_markups(self.roi_node)
        from headseg.io import write_volume

        root = str(self.work_root) if self.work_root else None
        work_dir = Path(tempfile.mkdtemp(prefix="headseg_run_", dir=root))
        try:
            case = safe_case_id(self.input_node.GetName())
            (work_dir / "input").mkdir()
            input_path = write_volume(volume, work_dir / "input" / f"{case}.nrrd", compress=False)
            command = segment_command([input_path], self.task, work_dir / "output",
                                      model=str(package.path), device=self.device, roi=roi,
                                      structures=self.structures, python=self.python, tta=self.tta)
            self.process = process = SegmentationProcess(command, work_dir=work_dir, base_env=child_environment())
            process.start()
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        self.log.append(f"Model {package.name} on {self.device}; input {self.input_node.GetName()}")
        self.log.extend(f"warning: {w}" for w in self.warnings)

    def poll(self) -> List[Dict[str, object]]:
        """Follow the child (never blocks); import the result once it succeeded. Returns the new events."""
        from headseg.run.child_process import RunState

        if self.process is None or self.finished:
            return []
        events = self.process.poll()
        for event in events:
            if event.get("event") == "log":
                level = str(event.get("level", "info"))
                text = str(event.get("message", ""))
                self.log.append(text if level in ("info", "stderr") else f"{level}: {text}")
                if level == "warning":
                    self.warnings.append(text)
            elif event.get("event") == "error":
                self.log.append(f"error: {event.get('message', '')}")
        if self.process.state is RunState.SUCCEEDED:
            try:
                self._import_result()
            except HeadSegError as exc:
                self._failure = str(exc)
            except Exception as exc:  # a bug, but the user still deserves a sentence
                self._failure = f"Importing the result failed: {type(exc).__name__}: {exc}"
            finally:
                self.process.cleanup()
            if self._failure:
                self.log.append(f"error: {self._failure}")
        elif self.process.finished:
            self.log.append(self.process.error_message)
        return events

    def cancel(self) -> None:
        if self.process is not None:
            self.process.cancel()

    def wait(self, timeout: Optional[float] = None, interval: float = 0.1) -> str:
        """Poll until finished (scripts and tests only: it blocks). Returns :attr:`state`."""
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            self.poll()
            if self.finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                self.cancel()
                raise TimeoutError(f"Segmentation did not finish within {timeout} s; it was cancelled.")
            time.sleep(interval)
        return self.state

    # -- state for the panel ---------------------------------------------------------------------------
    @property
    def state(self) -> str:
        """'not started', 'running', 'cancelling', 'succeeded', 'failed' or 'cancelled'."""
        from headseg.run.child_process import RunState

        if self._failure is not None:
            return RunState.FAILED.value
        if self.process is None:
            return RunState.NOT_STARTED.value
        if self.process.state is RunState.SUCCEEDED and self.segmentation_node is None:
            return RunState.RUNNING.value  # importing
        return self.process.state.value

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed", "cancelled")

    @property
    def fraction(self) -> float:
        return self.process.fraction if self.process is not None else 0.0

    @property
    def message(self) -> str:
        """One line for the status label."""
        if self._failure is not None:
            return self._failure
        if self.process is None:
            return ""
        if self.state == "succeeded":
            node = self.segmentation_node
            extra = f" {len(self.warnings)} warning(s), see the log." if self.warnings else ""
            return f"Done: '{node.GetName()}' is ready for review in the Segment Editor below.{extra}"
        if self.process.finished:
            return self.process.error_message
        return self.process.message

    # -- internals -------------------------------------------------------------------------------------
    def _import_result(self) -> None:
        assert self.process is not None  # called once the run's process has finished
        result = self.process.result or {}
        path = result.get("segmentation")
        if not path:
            raise InputError("The segmentation process reported no result file.")
        name = self.result_name or f"{self.input_node.GetName()} {self.task} segmentation"
        node = import_segmentation_file(str(path), self.label_set, self.input_node, name=name,
                                        output_node=self.output_node, keep=self.structures,
                                        show_3d=self.show_3d)
        self._import_review_aids(node, result)
        self.table_node = find_volume_table(node) or new_volume_table_node(node)
        # measured once, here: the panel's follower takes these measures over (VolumeFollower.observe)
        self.measures = SegmentMeasures(node, self.label_set, self.input_node).measure_all()
        self.rows = update_volume_table(node, self.table_node, self.label_set, measures=self.measures)
        self.segmentation_node = node

    def _import_review_aids(self, node, result: Dict[str, object]) -> None:
        """The child's uncertainty map as a volume next to the segmentation (so doubt can be recomputed
        after edits) and its ``fragmented`` flags (which need the raw output the scene does not hold)."""
        from headseg.io import read_volume
        from headseg.slicer.review import add_uncertainty_node, mark_fragmented

        uncertainty = result.get("uncertainty")
        if uncertainty and Path(str(uncertainty)).is_file():
            self.uncertainty_node = add_uncertainty_node(read_volume(str(uncertainty)), node)
        fragmented = []
        volumes_csv = result.get("volumes_csv")
        if volumes_csv and Path(str(volumes_csv)).is_file():
            import csv

            with open(str(volumes_csv), newline="", encoding="utf-8") as f:
                for row in csv.DictReader(f):
                    if "fragmented" in (row.get("flags") or "").split(";"):
                        side = row.get("side") or ""
                        fragmented.append(f"{row['structure']}_{side}" if side else row["structure"])
        mark_fragmented(node, self.label_set, fragmented, self.input_node)
