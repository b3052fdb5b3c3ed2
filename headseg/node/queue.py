"""The node's folder: received instances, and one job per complete series, all on disk.

Layout (every folder 0700, every file 0600: patient data never leaves the owner)::

    FOLDER/incoming/<series hash>/info.json             what routing needs, counts, a refusal if any
    FOLDER/incoming/<series hash>/instances/<hash>.dcm  one file per SOP instance
    FOLDER/jobs/<seq>-<series hash>/job.json            the job's state (written atomically)
    FOLDER/jobs/<seq>-<series hash>/received/           the incoming folder, moved here whole
    FOLDER/jobs/<seq>-<series hash>/out/                the segmentation, volumes CSV, run record, DICOM

No name comes from a DICOM attribute: folders and files are SHA-256 hashes of UIDs and sequence numbers.

A job's states: ``queued`` -> ``running`` -> ``segmented`` -> ``sent`` (or ``send_failed``); ``failed``
when segmenting refused the series; ``unrouted`` when no route matched (kept, reported). After a restart,
a ``running`` job is queued again (its ``out`` folder is rebuilt from scratch), so it is done once; a
``segmented`` job sends only what it has not yet sent, and its DICOM objects keep their SOP Instance
UIDs, so a send repeated because the node died between the peer's success and our record of it stores
the same instance again instead of a second one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional

__all__ = ["uid_hash", "JobQueue", "Job", "SeriesInfo", "DiskFull"]

JOB_STATES = ("queued", "running", "segmented", "sent", "send_failed", "failed", "unrouted")
REFUSED_FOR_SECONDS = 86400.0
MAX_ATTEMPTS = 3  # a job the node died on this often (e.g. killed for memory each time) fails instead of looping


def uid_hash(uid: str, length: int = 16) -> str:
    """The file-system name for a UID: hex digits only, whatever the UID holds."""
    return hashlib.sha256(str(uid).encode("utf-8", "replace")).hexdigest()[:length]


class DiskFull(Exception):
    """Storing would take the node's folder over its limit."""


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    """Write ``data`` to ``path`` so that a reader (or a restart) sees the old or the new file, whole."""
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    with open(temp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def _read_json(path: Path) -> Optional[Dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


@dataclass
class SeriesInfo:
    """A series being received (in memory, mirrored in its ``info.json``)."""

    key: str  # hash of the SeriesInstanceUID
    attributes: Dict[str, str]  # Modality, BodyPartExamined, SeriesDescription: what routing reads
    called_ae: str
    calling_ae: str
    instances: int = 0
    bytes: int = 0
    first: float = field(default_factory=time.time)
    last: float = field(default_factory=time.time)
    refused: str = ""  # why the series is refused (then it never becomes a job)

    def as_dict(self) -> Dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Job:
    """One series' job: its folder and its state file's contents."""

    folder: Path
    data: Dict[str, Any]

    @property
    def id(self) -> str:
        return str(self.data["id"])

    @property
    def state(self) -> str:
        return str(self.data["state"])

    @property
    def instances_dir(self) -> Path:
        return self.folder / "received" / "instances"

    @property
    def out_dir(self) -> Path:
        return self.folder / "out"


class JobQueue:
    """Receiving, jobs and their states in the node's folder; thread-safe (one lock for all changes)."""

    def __init__(self, folder: Path, max_disk_bytes: float, log: Callable[..., None], recover: bool = True) -> None:
        if not recover:  # only reading (``--status``): change nothing
            self.folder, self.jobs_dir = Path(folder), Path(folder) / "jobs"
            return
        os.umask(0o077)  # every file this process writes from now on is the owner's only
        self.folder = _private_dir(Path(folder))
        self.incoming = _private_dir(self.folder / "incoming")
        self.jobs_dir = _private_dir(self.folder / "jobs")
        self.max_disk_bytes = float(max_disk_bytes)
        self.log = log
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self.series: Dict[str, SeriesInfo] = {}
        self.open: Dict[str, int] = {}  # series -> associations still delivering it (not complete while any is)
        # Series refused once stay refused for a day: instances a sender goes on sending after the refusal
        # must not become a job of a partial series.
        self.refused: Dict[str, Any] = _read_json(self.folder / "refused.json") or {}
        self.used_bytes = sum(p.stat().st_size for p in self.folder.rglob("*") if p.is_file())
        self._recover()

    # -- receiving ---------------------------------------------------------------------------------
    def series_info(self, key: str) -> Optional[SeriesInfo]:
        with self.lock:
            return self.series.get(key)

    def start_series(self, info: SeriesInfo) -> SeriesInfo:
        """The series ``info.key`` (made with ``info`` when it is new)."""
        with self.lock:
            if info.key not in self.series:
                earlier = self.refused.get(info.key)
                if earlier and time.time() - float(earlier["time"]) < REFUSED_FOR_SECONDS:
                    info.refused = str(earlier["reason"])
                _private_dir(self.incoming / info.key / "instances")
                self.series[info.key] = info
                _write_json(self.incoming / info.key / "info.json", info.as_dict())
            return self.series[info.key]

    def hold(self, key: str) -> None:
        """An association has begun delivering series ``key``: it is not complete before :meth:`let_go`."""
        with self.lock:
            self.open[key] = self.open.get(key, 0) + 1

    def let_go(self, keys: List[str]) -> None:
        """Those associations ended (released or aborted; pynetdicom aborts one that stalls)."""
        with self.lock:
            for key in keys:
                self.open[key] = self.open.get(key, 1) - 1
                if self.open[key] <= 0:
                    del self.open[key]

    def refuse_series(self, key: str, reason: str) -> bool:
        """Mark the series refused (its files go at completion); True the first time (one log line each)."""
        with self.lock:
            info = self.series.get(key)
            if info is None or info.refused:
                return False
            info.refused = reason
            _write_json(self.incoming / key / "info.json", info.as_dict())
            now = time.time()
            self.refused = {k: v for k, v in self.refused.items() if now - float(v["time"]) < REFUSED_FOR_SECONDS}
            self.refused[key] = {"time": now, "reason": reason}
            _write_json(self.folder / "refused.json", self.refused)
            return True

    def store_instance(self, key: str, sop_uid: str, data: bytes) -> None:
        """Write one instance of series ``key``; :class:`DiskFull` when the folder would exceed its limit."""
        with self.lock:
            info = self.series[key]
            if self.used_bytes + len(data) > self.max_disk_bytes:
                raise DiskFull()
            target = self.incoming / key / "instances" / f"{uid_hash(sop_uid, 32)}.dcm"
            temp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
            with open(temp, "wb") as f:
                f.write(data)
            replaced = target.stat().st_size if target.exists() else None
            os.replace(temp, target)
            self.used_bytes += len(data) - (replaced or 0)
            if replaced is None:
                info.instances += 1
            info.bytes += len(data) - (replaced or 0)
            info.last = time.time()
            _write_json(self.incoming / key / "info.json", info.as_dict())

    def complete_series(self, route_of: Callable[[SeriesInfo], Optional[Dict[str, Any]]],
                        quiet_seconds: float, only: Optional[List[str]] = None) -> List[Job]:
        """Turn series quiet for ``quiet_seconds`` (or those in ``only``, at once) into jobs; refused
        series are removed. ``route_of`` gives a series' route as a dict, or None (unrouted)."""
        made: List[Job] = []
        with self.lock:
            now = time.time()
            for key, info in list(self.series.items()):
                if only is not None and key not in only:
                    continue
                if only is None and (now - info.last < quiet_seconds or self.open.get(key)):
                    continue
                del self.series[key]
                if info.refused or info.instances == 0:
                    self._remove(self.incoming / key)
                    self.log("series", series=key, state="dropped", reason=info.refused or "no instances")
                    continue
                made.append(self._make_job(info, route_of(info)))
            if made:
                self.changed.notify_all()
        return made

    def _make_job(self, info: SeriesInfo, route: Optional[Dict[str, Any]]) -> Job:
        seq = 1 + max((int(p.name.split("-")[0]) for p in self.jobs_dir.iterdir() if p.name[:6].isdigit()), default=0)
        folder = _private_dir(self.jobs_dir / f"{seq:06d}-{info.key}")
        os.replace(self.incoming / info.key, folder / "received")
        data: Dict[str, Any] = {
            "id": folder.name, "seq": seq, "series": info.key, "state": "queued" if route else "unrouted",
            "route": route, "instances": info.instances, "bytes": info.bytes, "called_ae": info.called_ae,
            "calling_ae": info.calling_ae, "received_first": info.first, "received_last": info.last,
            "queued_at": time.time(), "attempts": 0, "sends": {d: {"state": "pending", "attempts": 0, "next": 0.0}
                                                               for d in (route or {}).get("send_to", [])},
        }
        if not route:
            data["reason"] = "no route matches its called AE title, Modality, BodyPartExamined or SeriesDescription"
        _write_json(folder / "job.json", data)
        job = Job(folder, data)
        self.log("job", job=job.id, state=job.state, instances=info.instances, task=(route or {}).get("task"),
                 **({"reason": data["reason"]} if not route else {}))
        return job

    # -- jobs --------------------------------------------------------------------------------------
    def jobs(self) -> List[Job]:
        """Every job, in the order its series completed."""
        found = []
        if not self.jobs_dir.is_dir():
            return []
        for folder in sorted(self.jobs_dir.iterdir()):
            data = _read_json(folder / "job.json")
            if data is not None:
                found.append(Job(folder, data))
        return found

    def update(self, job: Job, **changes: Any) -> Job:
        with self.lock:
            job.data.update(changes)
            _write_json(job.folder / "job.json", job.data)
            self.changed.notify_all()
        return job

    def take_next(self) -> Optional[Job]:
        """The oldest queued job, now marked running (one worker gets it)."""
        with self.lock:
            job = next((j for j in self.jobs() if j.state == "queued"), None)
            if job is None:
                return None
            return self.update(job, state="running", attempts=int(job.data.get("attempts", 0)) + 1,
                               started_at=time.time())

    def wait_for_change(self, timeout: float) -> None:
        with self.lock:
            self.changed.wait(timeout)

    # -- after a restart ---------------------------------------------------------------------------
    def _recover(self) -> None:
        """Pick up what a previous run left: series still receiving (they complete after the quiet time),
        jobs that were running (queued again, or failed after MAX_ATTEMPTS), half-made job folders."""
        for folder in sorted(self.incoming.iterdir()):
            data = _read_json(folder / "info.json")
            if data is None:
                self._remove(folder)
                continue
            info = SeriesInfo(**{k: data[k] for k in SeriesInfo.__dataclass_fields__ if k in data})
            info.last = time.time()
            self.series[info.key] = info
        for folder in sorted(self.jobs_dir.iterdir()):
            if not (folder / "job.json").exists():  # the node stopped between moving the series and its state file
                data = _read_json(folder / "received" / "info.json")
                if data is None:
                    self._remove(folder)
                    continue
                os.replace(folder / "received", self.incoming / folder.name.split("-", 1)[1])
                self._remove(folder)
                info = SeriesInfo(**{k: data[k] for k in SeriesInfo.__dataclass_fields__ if k in data})
                self.series[info.key] = info
        for job in self.jobs():
            if job.state == "running":
                if int(job.data.get("attempts", 0)) >= MAX_ATTEMPTS:
                    self.update(job, state="failed", reason=f"the node stopped {MAX_ATTEMPTS} times while segmenting it")
                else:
                    self.update(job, state="queued")
                self.log("job", job=job.id, state=job.state, reason="resumed after a restart")
        for temp in self.folder.rglob(".*.tmp"):
            temp.unlink()

    def _remove(self, path: Path) -> None:
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0
        shutil.rmtree(path, ignore_errors=True)
        self.used_bytes = max(0, self.used_bytes - size)

    def summary(self) -> Iterator[Dict[str, Any]]:
        """One row per job for ``--status`` (ids, states and counts; no patient data)."""
        for job in self.jobs():
            d = job.data
            yield {"job": job.id, "state": job.state, "task": (d.get("route") or {}).get("task"),
                   "instances": d.get("instances"), "attempts": d.get("attempts"),
                   "sends": {k: v.get("state") for k, v in (d.get("sends") or {}).items()},
                   "reason": d.get("reason", "")}
