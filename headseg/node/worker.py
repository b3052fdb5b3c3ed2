"""Segmenting a job: the series in its folder through the same batch as ``headseg segment``
(``headseg.run.plan.plan_batch`` / ``headseg.run.batch.run_batch`` with
``headseg.run.segment_case.segment_case_on_worker``, so a job gives exactly the files the command line
gives), here or on the Dask cluster of ``headseg.run.cluster``.

The case is named after the job id, so the outputs are ``out/<job>.seg.nrrd``, ``out/<job>_volumes.csv``,
``out/<job>_run.json`` and ``out/<job>_rtstruct.dcm`` / ``out/<job>_seg.dcm``."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
from functools import partial
from typing import Any, Callable, Dict, Iterator, Optional

from headseg.errors import HeadSegError, error_message
from headseg.node.config import NodeConfig, Route
from headseg.node.queue import Job, JobQueue
from headseg.run.batch import run_batch
from headseg.run.plan import plan_batch
from headseg.run.segment_case import SegmentSettings, segment_case_on_worker

__all__ = ["Worker", "settings_for", "executor_for"]

log = logging.getLogger("headseg.node")


def settings_for(route: Dict[str, Any], config: NodeConfig, package_path: str, torch_threads: Optional[int]
                 ) -> SegmentSettings:
    """What ``headseg segment --task T --export ...`` would use for this route."""
    structures = route.get("structures")
    return SegmentSettings(package_path, device=config.device, keep=tuple(structures) if structures else None,
                           uncertainty=True, export_formats=tuple(route.get("export") or ("rtstruct",)),
                           torch_threads=torch_threads)


@contextlib.contextmanager
def executor_for(config: NodeConfig) -> Iterator[Any]:
    """The Dask executor of ``cluster`` (open for the node's lifetime), or None: segment in this process."""
    if not config.cluster:
        yield None
        return
    from headseg.run.cluster import dask_executor

    with dask_executor(config.cluster) as executor:
        yield executor


class Worker:
    """Takes queued jobs, oldest first, and segments them one at a time."""

    def __init__(self, config: NodeConfig, queue: JobQueue, log: Callable[..., None], executor: Any = None) -> None:
        self.config, self.queue, self.log, self.executor = config, queue, log, executor
        cores = os.cpu_count() or 1
        self.torch_threads = None if config.cluster else max(1, cores // max(1, config.workers))

    def run_one(self) -> bool:
        """Segment the oldest queued job; False when there is none."""
        job = self.queue.take_next()
        if job is None:
            return False
        self.log("job", job=job.id, state="running", attempt=job.data["attempts"])
        try:
            self._segment(job)
        except Exception as exc:  # a bug must fail this job, not stop the node; -v logs the traceback
            log.debug("job %s", job.id, exc_info=True)
            self.queue.update(job, state="failed", reason=f"unexpected error: {error_message(exc)}",
                              finished_at=time.time())
            self.log("job", job=job.id, state="failed", reason=job.data["reason"])
        return True

    def _segment(self, job: Job) -> None:
        route = job.data["route"]
        shutil.rmtree(job.out_dir, ignore_errors=True)  # a run the node died in leaves nothing behind
        case = (job.id, job.instances_dir)
        plan = plan_batch([case], job.out_dir, export_formats=tuple(route["export"]), uncertainty=True,
                          run_record=True)
        settings = settings_for(route, self.config, str(route["package"]), self.torch_threads)
        started = time.time()
        report = run_batch(plan, partial(segment_case_on_worker, settings=settings),
                           case_errors=(HeadSegError, MemoryError), executor=self.executor)
        outcome = report.outcomes[0]
        if outcome.state != "succeeded" or outcome.outputs is None:
            self.queue.update(job, state="failed", reason=outcome.message, finished_at=time.time())
            self.log("job", job=job.id, state="failed", reason=outcome.message)
            return
        dicom = [p.name for p in outcome.outputs.dicom.values() if p.exists()]
        state = "segmented" if job.data["sends"] else "done"
        self.queue.update(job, state=state, dicom=dicom, segmented_at=time.time(),
                          segment_seconds=round(time.time() - started, 2))
        self.log("job", job=job.id, state=state, seconds=round(time.time() - started, 2), files=len(dicom))


def route_dict(route: Route, package: str) -> Dict[str, Any]:
    """A route as a job records it (the job keeps what it was routed with, whatever the config becomes)."""
    return {"package": package, "task": route.task, "model": route.model, "export": list(route.export),
            "structures": list(route.structures) if route.structures else None, "send_to": list(route.send_to)}
