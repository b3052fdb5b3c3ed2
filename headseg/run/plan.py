"""The outputs of a batch, planned before any work: the first rule of :mod:`headseg.run.batch`, nothing
overwritten.

:func:`plan_batch` names the files of every case (:func:`case_outputs`: ``<case>.seg.nrrd``,
``<case>_volumes.csv``, and the uncertainty map, run record and DICOM exports a run asks for), reads the
folder's ``volumes.csv`` (:class:`headseg.run.volumes_csv.CombinedVolumes`) and refuses, with one sentence
(:func:`existing_outputs_error`), any case whose files exist or whose rows that table already holds,
unless ``overwrite``. The :class:`BatchPlan` it returns holds the claim on its cases
(:mod:`headseg.run.outputlock`) until the batch ends.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from headseg.errors import InputError
from headseg.io.cases import Case
from headseg.io.files import PathLike
from headseg.run.volumes_csv import VOLUMES_CSV, CombinedVolumes

__all__ = ["CaseOutputs", "BatchPlan", "case_outputs", "plan_batch", "existing_outputs_error"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaseOutputs:
    """The files one case writes into the output folder."""

    segmentation: Path  # <case>.seg.nrrd
    volumes_csv: Path  # <case>_volumes.csv
    dicom: Mapping[str, Path] = field(default_factory=dict)  # export format -> <case>_seg.dcm / _rtstruct.dcm
    uncertainty: Optional[Path] = None  # <case>_uncertainty.nrrd (headseg.measure.quality), unless turned off
    run_record: Optional[Path] = None  # <case>_run.json: input, model, device, time, notes (for reports)

    def files(self) -> List[Path]:
        extra = [p for p in (self.uncertainty, self.run_record) if p is not None]
        return [self.segmentation, self.volumes_csv, *self.dicom.values(), *extra]


def case_outputs(output_dir: PathLike, case: str, export_formats: Sequence[str] = (), uncertainty: bool = False,
                 run_record: bool = False) -> CaseOutputs:
    """Where case ``case`` writes (``export_formats``: ``dicom-seg``, ``rtstruct``; ``uncertainty`` and
    ``run_record`` add ``<case>_uncertainty.nrrd`` and ``<case>_run.json``)."""
    output_dir = Path(output_dir)
    dicom: Dict[str, Path] = {}
    if export_formats:
        from headseg.dicom_export import export_paths

        dicom = export_paths(output_dir, case, export_formats)
    return CaseOutputs(output_dir / f"{case}.seg.nrrd", output_dir / f"{case}_volumes.csv", dicom,
                       output_dir / f"{case}_uncertainty.nrrd" if uncertainty else None,
                       output_dir / f"{case}_run.json" if run_record else None)


@dataclass
class BatchPlan:
    """What a batch will do, decided before any work: the cases and the files each of them writes."""

    cases: List[Case]
    output_dir: Path
    outputs: Dict[str, CaseOutputs]
    volumes: CombinedVolumes
    overwrite: bool = False
    claim: Any = None  # headseg.run.outputlock.CaseClaim: no other run writes these cases while it is held
    created_folder: bool = False  # the plan made the output folder (removed again when left empty)
    stale: Dict[str, List[Path]] = field(default_factory=dict)  # case -> older files it does not rewrite

    @property
    def volumes_csv(self) -> Path:
        return self.volumes.path

    def release(self) -> None:
        """Let other runs write these cases again, and remove the folder the plan made when nothing was
        written into it (:func:`headseg.run.batch.run_batch` does it when the batch ends; call it when the
        batch never ran)."""
        if self.claim is not None:
            self.claim.release()
            self.claim = None
        if self.created_folder:
            with contextlib.suppress(OSError):
                self.output_dir.rmdir()  # only when empty


def existing_outputs_error(existing: Sequence[str]) -> InputError:
    """The one sentence for outputs that are in the way (the same for the CLI and the Slicer batch)."""
    return InputError(f"{len(existing)} output(s) already exist (e.g. {existing[0]}). Choose another output "
                      "folder or pass --overwrite.")


def plan_batch(cases: Sequence[Tuple[str, Path]], output_dir: PathLike, overwrite: bool = False,
               export_formats: Sequence[str] = (), create: bool = True, uncertainty: bool = False,
               run_record: bool = False) -> BatchPlan:
    """Plan the outputs of ``cases`` in ``output_dir`` and refuse, before any work, what would overwrite.

    A case collides when one of its files exists (also one it writes only in other runs, e.g. an
    uncertainty map), ``volumes.csv`` already lists it, or another live run is writing it (always refused,
    see :mod:`headseg.run.outputlock`); the first two raise :class:`InputError` naming the first collision,
    unless ``overwrite``. DICOM exports are planned only for DICOM cases. With ``create`` the folder is made
    and checked to be writable; the plan then holds a claim on its cases until :meth:`BatchPlan.release`."""
    from headseg.run.outputlock import claim_cases, folder_lock

    output_dir = Path(output_dir)
    planned = [Case(str(name), Path(path)) for name, path in cases]
    outputs = {case.name: case_outputs(output_dir, case.name, export_formats if case.is_dicom else (), uncertainty,
                                       run_record) for case in planned}
    created = create and not output_dir.exists()
    if create:
        if output_dir.is_symlink() and not output_dir.exists():
            raise InputError(f"The output folder {output_dir} is a symbolic link to nothing (or to itself); choose "
                             "another one with -o.")
        if output_dir.exists() and not output_dir.is_dir():
            raise InputError(f"The output folder {output_dir} exists and is not a folder; choose another one with -o.")
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"Cannot create the output folder {output_dir}: {exc.strerror or exc}.") from exc
        if not os.access(output_dir, os.W_OK):
            raise InputError(f"The output folder {output_dir} is not writable. Choose another one with -o.")
    lock = folder_lock(output_dir) if output_dir.is_dir() else contextlib.nullcontext()
    with lock:
        volumes = CombinedVolumes.read(output_dir / VOLUMES_CSV, overwrite=overwrite)
        stale = {case: [p for p in _other_files(output_dir, case, outputs[case]) if p.exists()] for case in outputs}
        if not overwrite:
            existing = [str(p) for planned in outputs.values() for p in planned.files() if p.exists()]
            existing += [str(p) for paths in stale.values() for p in paths]
            listed = set(volumes.cases)
            existing += [f"the rows of case {c.name!r} in {volumes.path}" for c in planned if c.name in listed]
            if existing:
                raise existing_outputs_error(existing)
        claim = claim_cases(output_dir, list(outputs)) if output_dir.is_dir() else None
        if claim is not None:  # no live run writes these cases or volumes.csv now: any temporary is an orphan
            _remove_orphan_temporaries(output_dir, [output_dir / VOLUMES_CSV] + [
                p for case in outputs for p in outputs[case].files() + _other_files(output_dir, case, outputs[case])])
    return BatchPlan(planned, output_dir, outputs, volumes, overwrite, claim, created,
                     {c: paths for c, paths in stale.items() if paths})


def _other_files(output_dir: Path, case: str, outputs: CaseOutputs) -> List[Path]:
    """The files ``case`` writes in other runs (uncertainty map, run record, DICOM exports) that this run
    does not write: a result beside them would be mixed with an older one."""
    every = case_outputs(output_dir, case, ("dicom-seg", "rtstruct"), uncertainty=True, run_record=True)
    mine = set(outputs.files())
    return [p for p in every.files() if p not in mine]


def _remove_orphan_temporaries(output_dir: Path, names: Sequence[Path]) -> None:
    """Remove the temporaries (``.<name>.<8 hex>.partial<ext>``, headseg/io/files.py) that a killed run
    left for ``names``."""
    from headseg.io.files import extension

    stems = {p.name[: len(p.name) - len(extension(p))] for p in names}
    pattern = re.compile(r"^\.(.+)\.[0-9a-f]{8}\.partial")
    for path in output_dir.glob(".*.partial*"):
        match = pattern.match(path.name)
        if match and match.group(1) in stems and path.is_file():
            with contextlib.suppress(OSError):
                path.unlink()
                log.info("Removed %s, left by a run that was killed while writing.", path.name)


