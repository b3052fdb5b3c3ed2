"""Results out: C-STORE (pynetdicom SCU) of a job's RTSTRUCT and/or SEG to each destination, or a copy
into a destination folder. A failed send is tried again after a backoff that doubles each time
(``send.backoff_seconds``, at most ``send.backoff_max_seconds``); after ``send.retries`` retries the job
is ``send_failed``: its files stay in its folder, and the log and ``--status`` say so."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Callable, List, Sequence

from headseg.node.config import Destination, NodeConfig
from headseg.node.queue import Job, JobQueue

__all__ = ["Sender", "store_files"]

STORAGE_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set Storage",
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
}


class SendError(Exception):
    """A destination refused or could not be reached."""


def store_files(files: Sequence[Path], destination: Destination, calling_ae: str, timeout: float = 30) -> None:
    """C-STORE ``files`` to ``destination`` in one association; :class:`SendError` names what failed."""
    import pydicom
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    datasets = [pydicom.dcmread(str(f)) for f in files]
    for uid in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(uid)
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title)
    if not assoc.is_established:
        raise SendError(f"no association with {destination.ae_title}@{destination.host}:{destination.port}")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            code = int(status.Status) if status and "Status" in status else None
            if code is None:
                raise SendError("the destination did not answer the C-STORE")
            if code not in (0x0000, 0xB000, 0xB007, 0xB006):  # success, or warnings (stored)
                raise SendError(f"the destination answered status 0x{code:04X}")
    finally:
        if assoc.is_established:
            assoc.release()


def copy_files(files: Sequence[Path], destination: Destination, job_id: str) -> None:
    """Copy ``files`` into ``<folder>/<job id>/``, each appearing whole."""
    assert destination.folder is not None
    target = destination.folder / job_id
    target.mkdir(parents=True, exist_ok=True)
    for f in files:
        temp = target / f".{f.name}.partial"
        shutil.copyfile(f, temp)
        os.replace(temp, target / f.name)


class Sender:
    """Sends what segmented jobs produced, one destination at a time, with retries and backoff."""

    def __init__(self, config: NodeConfig, queue: JobQueue, log: Callable[..., None]) -> None:
        self.config, self.queue, self.log = config, queue, log

    def due(self) -> List[Job]:
        now = time.time()
        return [j for j in self.queue.jobs() if j.state == "segmented"
                and any(s["state"] == "pending" and s.get("next", 0) <= now for s in j.data["sends"].values())]

    def send_due(self) -> int:
        """Try every send that is due; returns how many were tried."""
        tried = 0
        for job in self.due():
            for name, send in list(job.data["sends"].items()):
                if send["state"] == "pending" and send.get("next", 0) <= time.time():
                    self._send(job, name)
                    tried += 1
            self._finish(job)
        return tried

    def _send(self, job: Job, name: str) -> None:
        destination = self.config.destinations.get(name)
        files = [job.out_dir / f for f in job.data.get("dicom", [])]
        sends = job.data["sends"]
        started = time.time()
        try:
            if destination is None:
                raise SendError(f"destination {name!r} is no longer in the config")
            if destination.is_folder:
                copy_files(files, destination, job.id)
            else:
                store_files(files, destination, self.config.ae_title)
        except (SendError, OSError, ValueError) as exc:
            attempts = int(sends[name].get("attempts", 0)) + 1
            if attempts > self.config.send_retries:
                sends[name] = {"state": "failed", "attempts": attempts, "error": str(exc)}
                self.log("send", job=job.id, destination=name, state="failed", attempts=attempts, reason=str(exc))
            else:
                delay = min(self.config.send_backoff_max_seconds, self.config.send_backoff_seconds * 2 ** (attempts - 1))
                sends[name] = {"state": "pending", "attempts": attempts, "next": time.time() + delay, "error": str(exc)}
                self.log("send", job=job.id, destination=name, state="retry", attempts=attempts,
                         retry_in_s=round(delay, 1), reason=str(exc))
            self.queue.update(job, sends=sends)
            return
        sends[name] = {"state": "sent", "attempts": int(sends[name].get("attempts", 0)) + 1, "sent_at": time.time()}
        self.queue.update(job, sends=sends)
        latency = time.time() - float(job.data.get("received_last", started))
        self.log("send", job=job.id, destination=name, state="sent", files=len(files),
                 seconds=round(time.time() - started, 2), latency_s=round(latency, 2))

    def _finish(self, job: Job) -> None:
        states = [s["state"] for s in job.data["sends"].values()]
        if "pending" in states:
            return
        state = "send_failed" if "failed" in states else "sent"
        self.queue.update(job, state=state, finished_at=time.time())
        self.log("job", job=job.id, state=state)
