"""``headseg segment --cluster``: the batch of ``headseg.run.batch`` with Dask workers as its executor.

``--cluster local:N`` starts a ``dask.distributed.LocalCluster`` of N worker processes with one thread
each (torch then gets the machine's cores divided by N); ``--cluster tcp://HOST:PORT`` connects to a
running scheduler, for example one that ``dask-jobqueue`` started on Slurm or PBS (README, "Scaling
out"). The client (the ``headseg`` process) plans the batch, submits one task per case
(:func:`headseg.run.segment_case.segment_case_on_worker`: the model package is loaded once per worker process),
moves each case's files into place and updates ``volumes.csv`` as results arrive. Inputs, the model
package and the output folder must lie on a file system every worker sees.

A worker that dies during a case (killed, out of memory, its node lost) makes the scheduler run the case
again on another worker, up to ``distributed.scheduler.allowed-failures`` times (Dask's default, 3; the
scheduler's own setting for an external cluster); after that the case fails alone
(:class:`headseg.run.batch.CaseLost`). Dask is the optional extra ``headseg[cluster]``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Collection, Dict, Iterator, Optional, Tuple, Type

from headseg.errors import InputError
from headseg.run.batch import BatchEvents, BatchReport, CaseExecutor, CaseLost, run_batch
from headseg.run.plan import BatchPlan
from headseg.run.segment_case import SegmentSettings, segment_case_on_worker

__all__ = ["INSTALL_HINT", "ClusterSpec", "parse_cluster", "require_dask", "DaskExecutor", "dask_executor",
           "run_on_cluster"]

INSTALL_HINT = "--cluster needs Dask, which is not installed: pip install 'headseg[cluster]'."


def require_dask() -> None:
    """Refuse ``--cluster`` without Dask, with the sentence that says how to install it."""
    try:
        import dask  # noqa: F401
        import distributed  # noqa: F401
    except ImportError:
        raise InputError(INSTALL_HINT) from None


@dataclass(frozen=True)
class ClusterSpec:
    """A cluster as ``--cluster`` (or the node's ``cluster`` setting) names it, parsed once by
    :func:`parse_cluster`: ``workers`` local processes, or the ``address`` of a running scheduler."""

    text: str  # as the user wrote it
    workers: Optional[int] = None  # local:N
    address: Optional[str] = None  # tcp://HOST:PORT and the like

    def __str__(self) -> str:
        return self.text


def parse_cluster(spec: str, setting: str = "--cluster") -> ClusterSpec:
    """The :class:`ClusterSpec` of ``local:N`` or of a scheduler address such as ``tcp://HOST:PORT``;
    anything else is an :class:`InputError` naming ``setting`` (the option or setting it came from)."""
    text = str(spec).strip()
    match = re.fullmatch(r"local:(\d+)", text)
    if match:
        workers = int(match.group(1))
        if workers < 1:
            raise InputError(f"{setting} local:N needs N >= 1 workers.")
        return ClusterSpec(text, workers=workers)
    if re.fullmatch(r"(tcp|tls|ucx|inproc)://\S+", text):
        return ClusterSpec(text, address=text)
    raise InputError(f"{setting} {text!r}: give local:N (N worker processes on this machine) or the address of a "
                     "running Dask scheduler, e.g. tcp://HOST:8786.")


class DaskExecutor(CaseExecutor):
    """A ``dask.distributed.Client`` as a :class:`~headseg.run.batch.CaseExecutor`."""

    def __init__(self, client: Any, max_in_flight: Optional[int] = None) -> None:
        self.client = client
        self.max_in_flight = max_in_flight
        self._submitted = 0

    def submit(self, fn: Any, *args: Any) -> Any:
        self._submitted += 1
        # Earlier cases first (higher priority), as a serial run would take them; pure=False: never merged.
        return self.client.submit(fn, *args, pure=False, priority=-self._submitted)

    def wait(self, handles: Collection[Any], timeout: float) -> Collection[Any]:
        from distributed import wait

        try:
            done, _ = wait(list(handles), timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        return done

    def result(self, handle: Any) -> Any:
        from distributed import KilledWorker

        try:
            return handle.result()
        except KilledWorker as exc:
            raise CaseLost(f"The workers running the case died each time it was tried ({exc}); it may need more "
                           "memory than a worker has.") from None

    def cancel(self, handles: Collection[Any]) -> None:
        if handles:
            self.client.cancel(list(handles))


@contextlib.contextmanager
def dask_executor(cluster: ClusterSpec, allowed_failures: Optional[int] = None) -> Iterator[DaskExecutor]:
    """A :class:`DaskExecutor` on ``cluster`` (see :func:`parse_cluster`), closed afterwards.

    ``allowed_failures`` sets how often a local cluster's scheduler retries a case whose worker died
    (None: Dask's setting); an external scheduler keeps its own."""
    require_dask()
    import dask
    from distributed import Client, LocalCluster

    settings: Dict[str, Any] = {}
    if allowed_failures is not None:
        settings["distributed.scheduler.allowed-failures"] = int(allowed_failures)
    if cluster.workers is not None:
        settings.update(local_worker_settings(cluster.workers))
    with contextlib.ExitStack() as stack:
        stack.enter_context(dask.config.set(settings))
        stack.enter_context(_quiet_dask())
        if cluster.workers is not None:
            local = stack.enter_context(LocalCluster(n_workers=cluster.workers, threads_per_worker=1, processes=True,
                                                     dashboard_address=None, silence_logs=logging.ERROR))
            client = stack.enter_context(Client(local))
            yield DaskExecutor(client, max_in_flight=cluster.workers)
        else:
            try:
                client = stack.enter_context(Client(cluster.address, timeout="30s"))
            except (OSError, TimeoutError) as exc:
                raise InputError(f"Cannot reach the Dask scheduler at {cluster.address} ({exc}). Is it running, and "
                                 "is the address the one it printed?") from None
            # All cases at once: an adaptive cluster (dask-jobqueue's adapt) scales by the tasks it sees.
            yield DaskExecutor(client)


def worker_threads(workers: int) -> int:
    """Torch threads per local worker: this machine's cores shared out, at least one."""
    return max(1, (os.cpu_count() or 1) // max(1, int(workers)))


def local_worker_settings(workers: int) -> Dict[str, Any]:
    """Dask settings for ``local:N`` workers that segment as fast as the ``headseg`` process does.

    Why: Dask starts each worker with ``OMP_NUM_THREADS=1`` (its ``pre-spawn-environ``), so torch's
    OpenMP team is resized only later, from the task's thread (:func:`headseg.run.segment_case.segment_case_on_worker`),
    and the worker's own threads (event loop, the statistical profiler sampling every thread's stack
    every 10 ms) run beside torch's threads on the same cores. OpenMP threads spin at every barrier while
    waiting, so each time one of them is preempted by those threads the other burns its core spinning:
    the same convolution took about 1.4 times the CPU ticks per thread inside a ``local:1`` worker as in
    the ``headseg`` process (``benchmarks/bench_scale_out.py``). Here the worker starts with its share of
    the cores as its thread count (OpenMP, MKL, OpenBLAS), waits passively (``OMP_WAIT_POLICY=PASSIVE``),
    and has no profiler. A variable already set in the environment wins, as everywhere in Dask."""
    import dask

    threads = str(worker_threads(workers))
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    environ.update({"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads,
                    "OMP_WAIT_POLICY": "PASSIVE"})
    return {"distributed.nanny.pre-spawn-environ": environ, "distributed.worker.profile.enabled": False}


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """Dask's own log lines (scheduler started, worker restarted, ...) only with ``-v``."""
    target = logging.getLogger("distributed")
    level = target.level
    verbose = logging.getLogger("headseg").getEffectiveLevel() <= logging.INFO
    target.setLevel(logging.WARNING if verbose else logging.CRITICAL)
    try:
        yield
    finally:
        target.setLevel(level)


def run_on_cluster(cluster: ClusterSpec, plan: BatchPlan, settings: SegmentSettings,
                   events: Optional[BatchEvents] = None, cancel: Any = None, stop_on_error: bool = False,
                   case_errors: Tuple[Type[BaseException], ...] = (InputError, MemoryError),
                   allowed_failures: Optional[int] = None) -> BatchReport:
    """Run ``plan`` on ``cluster``: :func:`headseg.run.batch.run_batch` with a :class:`DaskExecutor` and
    :func:`~headseg.run.segment_case.segment_case_on_worker` as each case's task."""
    if cluster.workers is not None and settings.torch_threads is None:  # N workers share this machine's cores
        settings = replace(settings, torch_threads=worker_threads(cluster.workers))
    with dask_executor(cluster, allowed_failures) as executor:
        return run_batch(plan, partial(segment_case_on_worker, settings=settings), case_errors=case_errors,
                         stop_on_error=stop_on_error, events=events, executor=executor, cancel=cancel)
