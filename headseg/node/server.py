"""``headseg serve``: the receiver, the job queue, the workers and the sender in one process.

Threads: pynetdicom's server (one per association), a collector that turns quiet series into jobs,
``workers`` workers (each segments one job at a time) and one sender. SIGTERM or SIGINT stops receiving
at once, lets each worker finish its job and the sender its send, and exits; a job cut short by a kill
is queued again on the next start (``headseg.node.queue``).

Log: one JSON object per line on stderr and in ``FOLDER/node.log``, per association, series, job and
send. It names jobs, hashed series UIDs, AE titles and hosts, never a patient attribute."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from typing import Any, Dict, List, Optional, TextIO

from headseg.errors import InputError
from headseg.node.config import NodeConfig, describe
from headseg.node.queue import JobQueue, SeriesInfo
from headseg.node.worker import Worker, executor_for, route_dict

__all__ = ["Node", "serve", "status_lines"]


class Node:
    """One running node (see the module docstring); :meth:`run` blocks until :meth:`stop`."""

    def __init__(self, config: NodeConfig, log_stream: Optional[TextIO] = None) -> None:
        self.config = config
        self.stopping = threading.Event()
        self._log_lock = threading.Lock()
        self._stream = log_stream if log_stream is not None else sys.stderr
        self.packages = self._find_packages()
        os.umask(0o077)  # patient data: every folder and file of this process is the owner's only
        try:
            config.folder.mkdir(parents=True, exist_ok=True)
            os.chmod(config.folder, 0o700)
            self._log_file = open(config.folder / "node.log", "a", encoding="utf-8")
        except OSError as exc:
            raise InputError(f"Cannot use the node folder {config.folder}: {exc.strerror or exc}.") from None
        self.queue = JobQueue(config.folder, config.max_disk_mb * 1e6, self.log)  # logs what it recovers

    def _find_packages(self) -> Dict[int, str]:
        """Each route's model package, found before listening (a missing model is a config error)."""
        from headseg.segment.packages import find_package

        found = {}
        for n, route in enumerate(self.config.routes):
            found[n] = str(find_package(route.model, task=route.task, extra_dirs=self.config.model_dirs).path)
        return found

    def log(self, event: str, **fields: Any) -> None:
        line = json.dumps({"time": round(time.time(), 3), "event": event, **fields}, sort_keys=False)
        with self._log_lock:
            self._stream.write(line + "\n")
            self._stream.flush()
            if not self._log_file.closed:
                self._log_file.write(line + "\n")
                self._log_file.flush()

    def route_of(self, info: SeriesInfo) -> Optional[Dict[str, Any]]:
        route = self.config.route_for(info.called_ae, info.attributes)
        if route is None:
            return None
        index = self.config.routes.index(route)
        return route_dict(route, self.packages[index])

    def complete(self, keys: List[str]) -> None:
        self.queue.complete_series(self.route_of, self.config.quiet_seconds, only=keys)

    # -- threads -----------------------------------------------------------------------------------
    def _collect(self) -> None:
        while not self.stopping.wait(0.25):
            self.queue.complete_series(self.route_of, self.config.quiet_seconds)

    def _work(self, worker: Worker) -> None:
        while not self.stopping.is_set():
            if not worker.run_one():
                self.queue.wait_for_change(0.5)

    def _send(self) -> None:
        from headseg.node.sender import Sender

        sender = Sender(self.config, self.queue, self.log)
        while not self.stopping.is_set():
            if not sender.send_due():
                self.queue.wait_for_change(0.5)

    def run(self) -> int:
        from headseg.node.receiver import Receiver

        for line in describe(self.config):
            self.log("start", detail=line)
        receiver = Receiver(self.config, self.queue, self.log, self.complete)
        with executor_for(self.config) as executor:
            port = receiver.start()
            self.log("listening", ae_title=self.config.ae_title, host=self.config.host, port=port,
                     queued=sum(1 for j in self.queue.jobs() if j.state == "queued"))
            threads = [threading.Thread(target=self._collect, name="headseg-collect", daemon=True),
                       threading.Thread(target=self._send, name="headseg-send", daemon=True)]
            threads += [threading.Thread(target=self._work, args=(Worker(self.config, self.queue, self.log, executor),),
                                         name=f"headseg-worker-{n}", daemon=True) for n in range(self.config.workers)]
            for thread in threads:
                thread.start()
            try:
                while not self.stopping.wait(0.5):
                    pass
            finally:
                receiver.stop()
                self.log("stopping", reason="signal: finishing the jobs and sends in progress")
                for thread in threads:
                    thread.join()
        self.log("stopped")
        self._log_file.close()
        return 0

    def stop(self, *_: Any) -> None:
        self.stopping.set()


def serve(config: NodeConfig) -> int:
    """Run a node until SIGTERM or SIGINT (a second one exits at once; its job is redone on restart)."""
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        raise InputError("headseg serve needs pynetdicom: pip install 'headseg[node]'.") from None
    node = Node(config)

    def on_signal(signum: int, frame: Any) -> None:
        if node.stopping.is_set():
            raise SystemExit(130)
        node.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    return node.run()


def status_lines(config: NodeConfig) -> List[str]:
    """``headseg serve --status``: one line per job (ids, states, counts; no patient data)."""
    queue = JobQueue(config.folder, config.max_disk_mb * 1e6, lambda *a, **k: None, recover=False)
    rows = list(queue.summary())
    counts: Dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    lines = [f"{len(rows)} job(s) in {config.folder}: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))]
    for row in rows:
        sends = " ".join(f"{k}:{v}" for k, v in row["sends"].items())
        lines.append(f"{row['job']}  {row['state']:<11} {row['task'] or '-':<5} {row['instances']:>5} instances  "
                     f"attempts {row['attempts']}  {sends}  {row['reason']}".rstrip())
    return lines
