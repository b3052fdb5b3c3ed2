"""One case of ``headseg segment``: read it, segment it, write its files. The per-case writer that the
serial command line and the cluster workers (``headseg.run.cluster``) both call, so a case gives the same
files whichever ran it.

* :class:`SegmentSettings`: what every case of a run is segmented with, as plain values (a cluster
  worker receives them pickled).
* :func:`segment_and_write`: one case with a loaded model: ``<case>.seg.nrrd``, ``<case>_volumes.csv``,
  ``<case>_uncertainty.nrrd`` and ``<case>_run.json`` (those its :class:`~headseg.run.plan.CaseOutputs`
  name), the DICOM exports it was asked for; every file written atomically.
* :func:`run_in_process`: a planned batch of such cases in this process, the model loaded once.
* :func:`segment_case_on_worker`: the same on a worker process, with the model package loaded once per
  process (:func:`loaded_model`, keyed by package folder and device), not once per case.

A run chooses its device and loads its model once (``headseg.segment.runtime.load_on_device``: the command
line before its cases, a worker on its first case) and passes both to every case; a case builds its
volume table once (``SegmentationResult.volumes``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Type

from headseg.errors import InputError
from headseg.io.cases import Case
from headseg.io.diagnostics import collect_warnings, native_stderr_captured
from headseg.measure.volumes import VolumeRow
from headseg.run.batch import BatchEvents, BatchReport, run_batch
from headseg.run.plan import BatchPlan, CaseOutputs

__all__ = ["SegmentSettings", "CaseResult", "segment_and_write", "run_in_process", "loaded_model",
           "segment_case_on_worker"]

log = logging.getLogger("headseg")

Roi = Tuple[Sequence[float], Sequence[float]]  # LPS centre and size in mm


@dataclass(frozen=True)
class SegmentSettings:
    """How every case of a run is segmented (the options of ``headseg segment``)."""

    package: str  # the model package folder (found on the client: workers need no model search)
    device: str = "auto"  # the device *request*; each worker chooses its own device from it
    roi: Optional[Roi] = None
    keep: Optional[Tuple[str, ...]] = None  # structure keys to keep (None: all)
    batch_size: Optional[int] = None
    allow_non_ct: bool = False
    uncertainty: bool = True
    export_formats: Tuple[str, ...] = ()
    roi_names: str = "tg263"  # RT Structure Set ROI names: "tg263" (Parotid_R) or "display" (right parotid)
    torch_threads: Optional[int] = None  # workers only: torch threads per worker process (None: torch's default)
    tta: bool = False  # test-time augmentation (headseg.segment.pipeline.tta_variants)


@dataclass
class CaseResult:
    """What one case gave besides its files: the volume rows for ``volumes.csv`` and what to report."""

    rows: List[VolumeRow]
    device: str
    seconds: float
    notes: List[str] = field(default_factory=list)
    dicom: List[str] = field(default_factory=list)  # DICOM files written
    uncertainty: bool = False  # the uncertainty map was written
    warnings: List[str] = field(default_factory=list)  # what was said before segmenting (worker runs)
    worker: str = ""  # host:pid of the process that ran it
    loaded_model: bool = False  # this case loaded the model (the worker's first case)


def segment_and_write(case: Case, outputs: CaseOutputs, package: Any, model: Any, device: Any,
                      settings: SegmentSettings, warn: Callable[[str], None],
                      progress: Optional[Callable[[float, str], None]] = None, cancel: Any = None) -> CaseResult:
    """Segment ``case`` with ``model`` (loaded from ``package`` on ``device``, the run's
    ``headseg.segment.runtime.DeviceChoice`` or a device request) and write the files of ``outputs``.
    ``warn`` receives each warning (a sentence naming the case) as soon as it is known."""
    from headseg.dicom_export import check_export_source, export_dicom
    from headseg.io import read_volume, write_segmentation, write_volume
    from headseg.io.coverage import coverage_notes, dicom_folder_extras
    from headseg.measure.volumes import with_quality, write_volume_csv
    from headseg.review.report import write_run_record
    from headseg.segment import pipeline

    if settings.export_formats and not case.is_dicom:
        warn(f"{case.name}: not a DICOM input, so no DICOM SEG/RT Structure Set will be written.")
    with collect_warnings("headseg.io") as read_warnings, native_stderr_captured():
        source = check_export_source(case.path) if outputs.dicom else None  # before any work on the case
        volume = read_volume(case.path, allow_non_ct=settings.allow_non_ct)
    # What the folder held besides the series, and a series too short for the task (refused) or short (a note).
    read_warnings.extend(dicom_folder_extras(Path(case.path)) + coverage_notes(volume, str(package.task)))
    for warning in read_warnings:  # e.g. which DICOM series was chosen
        warn(f"{case.name}: {warning}")
    patient = _hashed_patient_id(case)
    if source is not None:
        source.check_grid(volume)
    keep = list(settings.keep) if settings.keep is not None else None
    result = pipeline.segment_volume(volume, package, device=device, roi=settings.roi, keep=keep, progress=progress,
                                     cancel=cancel, batch_size=settings.batch_size, model=model,
                                     uncertainty=settings.uncertainty, tta=settings.tta)
    rows = with_quality(result.volumes, result.quality)
    write_segmentation(result.labelmap, result.label_set, outputs.segmentation, overwrite=True)
    write_volume_csv(rows, outputs.volumes_csv)
    wrote_uncertainty = False
    if outputs.uncertainty is not None and result.uncertainty is not None:
        from headseg.measure.quality import stored_uncertainty

        write_volume(result.uncertainty.with_array(stored_uncertainty(result.uncertainty.array)), outputs.uncertainty,
                     overwrite=True)
        wrote_uncertainty = True
    if outputs.run_record is not None:
        # Every warning the user needs to trust the result, whatever the console showed (or did not).
        write_run_record(outputs.run_record, case, package, result, notes=list(read_warnings) + list(result.notes),
                         patient=patient)
    dicom_files: List[Path] = []
    if source is not None:
        dicom_files = export_dicom(result.labelmap, result.label_set, source, dict(outputs.dicom), overwrite=True,
                                   algorithm_name=package.name, roi_names=settings.roi_names)
    return CaseResult(rows, str(result.device), float(result.seconds), list(result.notes),
                      [str(f) for f in dicom_files], wrote_uncertainty)


def run_in_process(plan: BatchPlan, package: Any, settings: SegmentSettings, events: Optional[BatchEvents] = None,
                   say: Optional[Callable[[str], None]] = None, warn: Optional[Callable[[str], None]] = None,
                   progress: Optional[Callable[[float, str], None]] = None, cancel: Any = None,
                   stop_on_error: bool = False,
                   case_errors: Tuple[Type[BaseException], ...] = (InputError, MemoryError)) -> BatchReport:
    """Run ``plan`` in this process (``headseg segment`` without ``--cluster``): the model of ``package``
    loaded once, on the device ``settings.device`` chooses (``say`` is told which), then each case through
    :func:`segment_and_write` in :func:`headseg.run.batch.run_batch`. Each outcome's ``details`` is the
    case's :class:`CaseResult`."""
    from headseg.segment.runtime import load_on_device

    device, model = load_on_device(package, settings.device)  # once for every case
    if say is not None:
        say(f"Device: {device.device} ({device.reason})")
    segment = partial(segment_and_write, package=package, model=model, device=device,
                      settings=settings, warn=warn or log.warning, progress=progress, cancel=cancel)
    return run_batch(plan, segment, case_errors=case_errors, stop_on_error=stop_on_error, events=events)


def _hashed_patient_id(case: Case) -> Optional[str]:
    """The case's PatientID as ``<case>_run.json`` keeps it (hashed; ``compare`` checks it), for DICOM input."""
    if not case.is_dicom:
        return None
    from headseg.io.dicom_series import dicom_patient_id, hash_patient_id

    return hash_patient_id(dicom_patient_id(case.path))


# -- on a worker process -------------------------------------------------------------------------------
_MODELS: Dict[Tuple[str, str], Tuple[Any, Any, Any]] = {}
_MODELS_LOCK = threading.Lock()


def loaded_model(package_dir: str, device_request: str) -> Tuple[Any, Any, Any, bool]:
    """``(package, model, device, loaded_now)`` for this process (``device``: the
    ``headseg.segment.runtime.DeviceChoice``): the package is read, the device chosen and the weights loaded
    on the first call for ``(package_dir, device_request)`` only; later calls reuse them."""
    key = (str(Path(package_dir).resolve()), str(device_request))
    with _MODELS_LOCK:
        if key in _MODELS:
            package, model, device = _MODELS[key]
            return package, model, device, False
        from headseg.segment.packages import load_package
        from headseg.segment.runtime import load_on_device

        package = load_package(package_dir)
        device, model = load_on_device(package, device_request)
        _MODELS[key] = (package, model, device)
        return package, model, device, True


def segment_case_on_worker(case: Case, outputs: CaseOutputs, settings: SegmentSettings) -> CaseResult:
    """:func:`segment_and_write` in a worker process (the task ``headseg segment --cluster`` runs per
    case): the model comes from this process's cache, warnings travel back in the result."""
    if settings.torch_threads:
        import torch

        if torch.get_num_threads() != settings.torch_threads:
            torch.set_num_threads(int(settings.torch_threads))
    package, model, device, loaded_now = loaded_model(settings.package, settings.device)
    warnings: List[str] = []
    result = segment_and_write(case, outputs, package, model, device, settings, warn=warnings.append)
    result.warnings = warnings
    result.worker = f"{socket.gethostname()}:{os.getpid()}"
    result.loaded_model = loaded_now
    return result
