"""One batch of cases, run the same way by ``headseg segment`` (here or on a cluster), the DICOM node and
the Slicer modules' batch scripts.

The rules every batch follows:

* **Nothing overwritten.** The outputs of every case are planned before any work starts
  (:func:`headseg.run.plan.plan_batch`). If any exists, or ``volumes.csv`` already lists a case of this
  batch, the batch stops with one sentence, unless ``overwrite``.
* **Nothing half-done.** A case is written completely or not at all: when it fails, the files it wrote
  are removed (:func:`run_batch`).
* **Nothing lost.** ``volumes.csv`` (all cases, ``case`` column first;
  :class:`headseg.run.volumes_csv.CombinedVolumes`) is rewritten after each case, so a cancelled or
  interrupted batch keeps the cases it finished.

The segmentation of one case is the caller's ``segment_case(case, outputs)``: in this process
(:func:`headseg.run.segment_case.run_in_process`), on a Dask worker (:mod:`headseg.run.cluster`), for a
job of the DICOM node (:mod:`headseg.node.worker`), or through the Slicer module's child process, saved
with Slicer's writers (:func:`headseg.slicer.batch.segment_folder`).

**Another executor.** ``run_batch(plan, segment_case, executor=...)`` runs the same batch with the cases as
tasks elsewhere (``headseg.run.cluster``: Dask workers; :class:`FuturesExecutor`: a thread or process pool).
``segment_case`` then runs on the worker and must be picklable (a module-level function or a
``functools.partial`` of one). What stays the same: the plan (collisions refused before any work), the
files per case, ``volumes.csv`` updated by the caller's process as each result arrives and finally in the
plan's order, as a serial run leaves it. What the executor path adds: each attempt at a case writes into
its own hidden folder, ``OUTDIR/.headseg-staging-<batch>/<case>.<attempt>/``, and the caller moves the
files to their names only when the attempt's result arrives, so an attempt whose worker died (and which
the executor retries elsewhere), failed, or was cancelled never shows a file under an output name; the
staging folder is removed when the batch ends.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Collection, Dict, List, Optional, Sequence, Tuple, Type

from headseg.errors import Cancelled, ExitCode, HeadSegError, InputError, error_message, exit_code_for
from headseg.io.cases import Case
from headseg.measure.volumes import VolumeRow
from headseg.run.plan import BatchPlan, CaseOutputs, existing_outputs_error

__all__ = ["CaseOutcome", "BatchReport", "BatchEvents", "run_batch", "CaseExecutor", "FuturesExecutor", "CaseLost"]

log = logging.getLogger(__name__)


def _remove_stale(plan: BatchPlan, case: str) -> None:
    """After ``case`` succeeded with ``overwrite``: remove its older files this run did not rewrite."""
    for path in plan.stale.get(case, ()):
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("Could not remove the older %s: %s", path, exc)


@dataclass
class CaseOutcome:
    """What happened to one case."""

    case: Case
    state: str  # "succeeded", "failed" or "cancelled"
    message: str = ""
    code: int = ExitCode.OK  # the exit code its error would give on its own
    outputs: Optional[CaseOutputs] = None
    rows: List[VolumeRow] = field(default_factory=list)
    details: Any = None  # what segment_case returned when it returned more than rows (an object with .rows)


@dataclass
class BatchReport:
    outcomes: List[CaseOutcome]
    volumes_csv: Path

    @property
    def succeeded(self) -> List[CaseOutcome]:
        return [o for o in self.outcomes if o.state == "succeeded"]

    @property
    def failed(self) -> List[CaseOutcome]:
        return [o for o in self.outcomes if o.state == "failed"]

    @property
    def cancelled(self) -> bool:
        return any(o.state == "cancelled" for o in self.outcomes)


class BatchEvents:
    """What :func:`run_batch` tells its caller while it runs; override what you need. The default prints
    through ``log`` (e.g. ``print``), or says nothing."""

    def __init__(self, log: Optional[Callable[[str], None]] = None) -> None:
        self.log = log

    def case_started(self, number: int, total: int, case: Case) -> None:
        if self.log:
            self.log(f"[{number}/{total}] {case.name}")

    def case_failed(self, case: Case, error: BaseException, code: int) -> None:
        if self.log:
            self.log(f"  failed: {error_message(error)}")

    def case_finished(self, case: Case, outputs: CaseOutputs, rows: Sequence[VolumeRow]) -> None:
        if self.log:
            self.log(f"  wrote {outputs.segmentation.name} and {outputs.volumes_csv.name}")

    def case_done(self, outcome: CaseOutcome, done: int, failed: int, total: int) -> None:
        """After each case that succeeded or failed (after :meth:`case_finished` or :meth:`case_failed`):
        ``done`` of ``total`` cases are over, ``failed`` of them failed. Says nothing by default."""


SegmentCase = Callable[[Case, CaseOutputs], Any]  # returns the case's VolumeRows, or an object with .rows


def run_batch(plan: BatchPlan, segment_case: SegmentCase,
              case_errors: Tuple[Type[BaseException], ...] = (InputError, MemoryError),
              stop_on_error: bool = False, events: Optional[BatchEvents] = None,
              executor: Optional[CaseExecutor] = None, cancel: Any = None) -> BatchReport:
    """Run ``segment_case(case, outputs)`` for every case of ``plan``, in order.

    ``segment_case`` reads and segments the case, writes ``outputs.segmentation`` and
    ``outputs.volumes_csv`` (and the DICOM files it was asked for) and returns the case's volume rows,
    which go into ``volumes.csv`` at once (or an object whose ``rows`` are those; it is kept as the
    outcome's ``details``). An error in ``case_errors`` fails that case only: the files it
    wrote are removed and the batch goes on, unless ``stop_on_error`` (then it is raised, as is any other
    error, after the same clean-up). :class:`Cancelled` stops the batch after the same clean-up; the
    report then says ``cancelled`` and the cases finished before are in ``volumes.csv``.

    With ``executor`` (a :class:`CaseExecutor`) the cases run as its tasks, in parallel, and the results
    are booked as they arrive (see the module docstring); ``cancel`` (a ``CancelToken``) is checked while
    waiting, and :class:`CaseLost` (the worker died more often than the executor retries) fails that case
    only. ``events.case_started`` is not called then (workers start cases when they are free)."""
    events = events or BatchEvents()
    try:
        if executor is not None:
            return _run_on_executor(executor, plan, segment_case, case_errors, stop_on_error, events, cancel)
        return _run_serial(plan, segment_case, case_errors, stop_on_error, events)
    finally:
        plan.release()


def _run_serial(plan: BatchPlan, segment_case: SegmentCase, case_errors: Tuple[Type[BaseException], ...],
                stop_on_error: bool, events: BatchEvents) -> BatchReport:
    outcomes: List[CaseOutcome] = []
    done = failed = 0
    for number, case in enumerate(plan.cases, start=1):
        outputs = plan.outputs[case.name]
        events.case_started(number, len(plan.cases), case)
        before = {p: _signature(p) for p in outputs.files()}
        try:
            rows, details = _rows_and_details(segment_case(case, outputs))
        except BaseException as exc:
            _remove_written(before)
            code = exit_code_for(exc)
            if isinstance(exc, Cancelled):
                outcomes.append(CaseOutcome(case, "cancelled", error_message(exc), code))
                break
            if stop_on_error or not isinstance(exc, case_errors):
                raise
            outcomes.append(CaseOutcome(case, "failed", error_message(exc), code))
            events.case_failed(case, exc, code)
            done, failed = done + 1, failed + 1
            events.case_done(outcomes[-1], done, failed, len(plan.cases))
            continue
        try:
            plan.volumes.put(case.name, rows)
        except BaseException:  # e.g. the disk filled up at this last step: leave nothing of the case
            _remove_written(before)
            raise
        if plan.overwrite:
            _remove_stale(plan, case.name)
        outcomes.append(CaseOutcome(case, "succeeded", outputs=outputs, rows=rows, details=details))
        events.case_finished(case, outputs, rows)
        done += 1
        events.case_done(outcomes[-1], done, failed, len(plan.cases))
    return BatchReport(outcomes, plan.volumes_csv)


def _rows_and_details(result: Any) -> Tuple[List[VolumeRow], Any]:
    if hasattr(result, "rows"):
        return list(result.rows), result
    return list(result), None


# -- other executors -----------------------------------------------------------------------------------
class CaseLost(HeadSegError):
    """The process running a case died (killed, out of memory, its machine lost) more often than the
    executor retries a case."""


class CaseExecutor:
    """Where :func:`run_batch` runs cases besides its own process: ``submit`` a task, ``wait`` for some to
    end, take a ``result``, ``cancel`` the rest. ``headseg.run.cluster.DaskExecutor`` and
    :class:`FuturesExecutor` implement it."""

    #: At most this many cases submitted and not yet done (None: all at once). A local cluster sets its
    #: worker count, so that no case waits behind another on a worker that may die.
    max_in_flight: Optional[int] = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Start ``fn(*args)`` somewhere; a handle to it."""
        raise NotImplementedError

    def wait(self, handles: Collection[Any], timeout: float) -> Collection[Any]:
        """The handles among ``handles`` whose task has ended, after at most ``timeout`` seconds (maybe none)."""
        raise NotImplementedError

    def result(self, handle: Any) -> Any:
        """The task's value; raises its error, or :class:`CaseLost` when the processes running it died."""
        raise NotImplementedError

    def cancel(self, handles: Collection[Any]) -> None:
        """Give up these tasks (those not started never start)."""
        raise NotImplementedError


class FuturesExecutor(CaseExecutor):
    """A ``concurrent.futures`` executor (a thread or process pool on this machine) as a :class:`CaseExecutor`."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    def submit(self, fn: Callable[..., Any], *args: Any) -> Any:
        return self.pool.submit(fn, *args)

    def wait(self, handles: Collection[Any], timeout: float) -> Collection[Any]:
        import concurrent.futures

        done, _ = concurrent.futures.wait(list(handles), timeout=timeout,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        return done

    def result(self, handle: Any) -> Any:
        from concurrent.futures.process import BrokenProcessPool

        try:
            return handle.result()
        except BrokenProcessPool as exc:
            raise CaseLost(f"The process running the case died ({exc}).") from None

    def cancel(self, handles: Collection[Any]) -> None:
        for handle in handles:
            handle.cancel()


STAGING_PREFIX = ".headseg-staging-"


@dataclass
class _Attempt:
    """What one attempt at a case sends back from the worker: its staged files, or why it failed."""

    state: str  # "succeeded" or "failed"
    staged: Optional[CaseOutputs] = None
    result: Any = None
    message: str = ""
    code: int = ExitCode.OK
    error: Optional[BaseException] = None


def _staged(outputs: CaseOutputs, folder: Path) -> CaseOutputs:
    """``outputs`` with every file in ``folder`` (same names)."""
    def move(path: Optional[Path]) -> Optional[Path]:
        return None if path is None else folder / path.name

    return CaseOutputs(folder / outputs.segmentation.name, folder / outputs.volumes_csv.name,
                       {k: folder / v.name for k, v in outputs.dicom.items()}, move(outputs.uncertainty),
                       move(outputs.run_record))


def _attempt_case(segment_case: SegmentCase, case: Case, outputs: CaseOutputs, staging: str,
                  case_errors: Tuple[Type[BaseException], ...]) -> _Attempt:
    """One attempt at ``case`` on a worker, writing into a fresh folder of the batch's staging folder.

    The attempt's folder is made without its parents: once the batch has ended (and removed the staging
    folder), a late attempt cannot write anything."""
    folder = Path(staging) / f"{case.name}.{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    staged = _staged(outputs, folder)
    try:
        result = segment_case(case, staged)
    except case_errors as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return _Attempt("failed", message=error_message(exc), code=int(exit_code_for(exc)), error=_portable(exc))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return _Attempt("succeeded", staged=staged, result=result)


def _portable(error: BaseException) -> Optional[BaseException]:
    """``error`` when it survives pickling (to be raised again by the caller), else None."""
    try:
        pickle.loads(pickle.dumps(error))
    except Exception:
        return None
    return error


def _publish(staged: CaseOutputs, outputs: CaseOutputs, overwrite: bool) -> None:
    """Move a finished attempt's files to their names (``os.replace``: each appears whole)."""
    pairs = [(s, o) for s, o in zip(staged.files(), outputs.files()) if s.exists()]
    if not overwrite:
        taken = [str(o) for _, o in pairs if o.exists()]
        if taken:
            raise existing_outputs_error(taken)
    for source, target in pairs:
        os.replace(source, target)
    shutil.rmtree(staged.segmentation.parent, ignore_errors=True)


def _run_on_executor(executor: CaseExecutor, plan: BatchPlan, segment_case: SegmentCase,
                     case_errors: Tuple[Type[BaseException], ...], stop_on_error: bool, events: BatchEvents,
                     cancel: Any) -> BatchReport:
    total = len(plan.cases)
    previous = list(plan.volumes.cases)
    staging = plan.output_dir / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    pending: Dict[Any, Case] = {}
    waiting: List[Case] = []
    by_name: Dict[str, CaseOutcome] = {}
    done = failed = 0
    try:
        waiting = list(plan.cases)
        order = {case.name: n for n, case in enumerate(plan.cases)}
        limit = executor.max_in_flight
        while pending or waiting:
            while waiting and (limit is None or len(pending) < max(1, limit)):
                case = waiting.pop(0)
                handle = executor.submit(_attempt_case, segment_case, case, plan.outputs[case.name], str(staging),
                                         case_errors)
                pending[handle] = case
            if cancel is not None and cancel.cancelled:
                raise Cancelled("Cancelled.")
            finished = sorted(executor.wait(list(pending), timeout=0.5), key=lambda h: order[pending[h].name])
            for handle in finished:
                case = pending.pop(handle)
                outputs = plan.outputs[case.name]
                try:
                    attempt = executor.result(handle)
                except CaseLost as exc:
                    attempt = _Attempt("failed", message=error_message(exc), code=int(exit_code_for(exc)), error=exc)
                before = {p: _signature(p) for p in outputs.files()}
                if attempt.state == "succeeded":
                    assert attempt.staged is not None
                    try:
                        _publish(attempt.staged, outputs, plan.overwrite)
                    except (OSError, HeadSegError) as exc:
                        attempt = _Attempt("failed", message=error_message(exc), code=int(exit_code_for(exc)),
                                           error=exc)
                if attempt.state == "failed":
                    error = attempt.error or HeadSegError(attempt.message)
                    if stop_on_error:
                        raise error
                    outcome = CaseOutcome(case, "failed", attempt.message, attempt.code)
                    events.case_failed(case, error, attempt.code)
                    failed += 1
                else:
                    rows, details = _rows_and_details(attempt.result)
                    try:
                        plan.volumes.put(case.name, rows)
                    except BaseException:
                        _remove_written(before)
                        raise
                    if plan.overwrite:
                        _remove_stale(plan, case.name)
                    outcome = CaseOutcome(case, "succeeded", outputs=outputs, rows=rows, details=details)
                    events.case_finished(case, outputs, rows)
                by_name[case.name] = outcome
                done += 1
                events.case_done(outcome, done, failed, total)
    except Cancelled as exc:
        executor.cancel(list(pending))
        for case in list(pending.values()) + waiting:
            by_name[case.name] = CaseOutcome(case, "cancelled", error_message(exc), int(ExitCode.CANCELLED))
    except BaseException:
        executor.cancel(list(pending))
        raise
    finally:
        _remove_staging(staging)
        _in_plan_order(plan, previous)
    outcomes = [by_name[c.name] for c in plan.cases if c.name in by_name]
    return BatchReport(outcomes, plan.volumes_csv)


def _remove_staging(staging: Path) -> None:
    for _ in range(3):  # an attempt still writing (cancelled, or abandoned by a lost worker) may race the removal
        shutil.rmtree(staging, ignore_errors=True)
        if not staging.exists():
            return
    log.warning("Could not remove the staging folder %s; it holds no finished output and can be deleted.", staging)


def _in_plan_order(plan: BatchPlan, previous: Sequence[str]) -> None:
    """``volumes.csv`` as a serial run leaves it: earlier cases where they were, this batch's new cases
    after them in the plan's order (results arrive in any order)."""
    before = set(previous)
    plan.volumes.move_to_end([c.name for c in plan.cases if c.name not in before])


def _signature(path: Path) -> Optional[Tuple[int, int, int]]:
    """Enough of a file's identity to tell whether a case (re)wrote it: atomic writes make a new inode."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _remove_written(before: Dict[Path, Optional[Tuple[int, int, int]]]) -> None:
    """Remove what a failed case wrote, so it leaves nothing half-done (files it did not touch stay)."""
    for path, signature in before.items():
        now = _signature(path)
        if now is not None and now != signature:
            try:
                path.unlink()
            except OSError as exc:
                log.warning("Could not remove %s after the case failed: %s", path, exc)
