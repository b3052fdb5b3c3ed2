"""A real Orthanc (Debian package ``orthanc``) and a real ``headseg serve``, each in its own process on
loopback ports with a temporary config, for the DICOM node's tests and ``benchmarks/bench_dicom_node.py``.

Orthanc is driven through its REST API (``urllib``): store files, send a series to a modality, find the
RT Structure Sets that came back."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[2]
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"


def orthanc_binary() -> Optional[str]:
    return shutil.which("Orthanc") or next((p for p in ("/usr/sbin/Orthanc",) if os.path.exists(p)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition, timeout: float, what: str, interval: float = 0.2):
    """Poll ``condition()`` until it returns something true; AssertionError naming ``what`` on timeout."""
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Orthanc:
    """One Orthanc process with its own storage, AE ``ORTHANC`` and the node as modality ``headseg``
    (plus ``headseg_<ae>`` for each extra called AE title)."""

    def __init__(self, folder: Path, node_port: int, node_aes: Sequence[str] = ("HEADSEG_HAN",)) -> None:
        self.folder = Path(folder)
        self.http_port, self.dicom_port = free_port(), free_port()
        self.node_aes = list(node_aes)
        self.node_port = node_port
        self.process: Optional[subprocess.Popen] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> Orthanc:
        binary = orthanc_binary()
        assert binary, "Orthanc is not installed"
        self.folder.mkdir(parents=True, exist_ok=True)
        modalities = {ae.lower(): [ae, "127.0.0.1", self.node_port] for ae in self.node_aes}
        config = {
            "Name": "headseg-test", "StorageDirectory": str(self.folder / "storage"),
            "IndexDirectory": str(self.folder / "storage"), "HttpPort": self.http_port, "DicomPort": self.dicom_port,
            "DicomAet": "ORTHANC", "RemoteAccessAllowed": False, "AuthenticationEnabled": False,
            "HttpServerEnabled": True, "DicomServerEnabled": True, "DicomCheckCalledAet": False,
            "DicomModalities": modalities, "Plugins": [], "StableAge": 1, "DicomScuTimeout": 30,
            "HttpTimeout": 120, "ConcurrentJobs": 2, "LimitJobs": 100, "SaveJobs": False,
        }
        (self.folder / "orthanc.json").write_text(json.dumps(config), encoding="utf-8")
        self._log = open(self.folder / "orthanc.log", "wb")
        self.process = subprocess.Popen([binary, str(self.folder / "orthanc.json")], stdout=self._log,
                                        stderr=subprocess.STDOUT, cwd=self.folder)
        wait_for(self._alive, 30, "Orthanc to answer on its HTTP port")
        return self

    def _alive(self) -> bool:
        assert self.process is not None and self.process.poll() is None, \
            (self.folder / "orthanc.log").read_text(errors="replace")[-2000:]
        try:
            self.get("/system")
            return True
        except (OSError, urllib.error.URLError):
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    # -- REST --------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, raw: bool = False, timeout: float = 300) -> Any:
        data = body if isinstance(body, bytes) else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
        return payload if raw else json.loads(payload or b"null")

    def get(self, path: str, raw: bool = False) -> Any:
        return self.request("GET", path, raw=raw)

    def store_files(self, files: Sequence[Path]) -> str:
        """POST each file; returns the Orthanc ID of their series."""
        series = set()
        for f in files:
            answer = self.request("POST", "/instances", Path(f).read_bytes())
            series.add(answer["ParentSeries"])
        assert len(series) == 1, series
        return series.pop()

    def send(self, series_id: str, modality: str = "headseg_han", asynchronous: bool = False) -> Any:
        """Ask Orthanc to C-STORE the series to ``modality``; raises HTTPError when the node refused it."""
        body: Dict[str, Any] = {"Resources": [series_id], "Synchronous": not asynchronous}
        return self.request("POST", f"/modalities/{modality}/store", body)

    def rtstructs(self) -> List[Dict[str, Any]]:
        """Every RT Structure Set instance Orthanc holds: ``{"id", "tags"}``."""
        ids = self.request("POST", "/tools/find", {"Level": "Instance", "Query": {"Modality": "RTSTRUCT"}})
        return [{"id": i, "tags": self.get(f"/instances/{i}/simplified-tags")} for i in ids]

    def instance_file(self, instance_id: str) -> bytes:
        return self.get(f"/instances/{instance_id}/file", raw=True)


class NodeProcess:
    """``headseg serve --config CONFIG`` in a child process, its JSON log lines kept."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log_path = Path(config), Path(log)
        self.process: Optional[subprocess.Popen] = None

    def start(self) -> NodeProcess:
        env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
        self._log = open(self.log_path, "ab")
        self.process = subprocess.Popen([sys.executable, "-m", "headseg", "serve", "--config", str(self.config)],
                                        stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        wait_for(lambda: self.events("listening") or self._dead(), 120, "the node to listen")
        return self

    def _dead(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"headseg serve exited with {self.process.returncode}:\n{self.text()[-3000:]}")
        return False

    def text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def events(self, event: Optional[str] = None, **match: Any) -> List[Dict[str, Any]]:
        found = []
        for line in self.text().splitlines():
            if line.startswith("{"):
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if (event is None or item.get("event") == event) and all(item.get(k) == v for k, v in match.items()):
                    found.append(item)
        return found

    def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def terminate(self, timeout: float = 120) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def node_config(folder: Path, port: int, orthanc: Orthanc, model_dir: Path, model: str, task: str = "han",
                quiet: float = 1.0, extra: str = "") -> str:
    """The TOML of a test node: ORTHANC allowed from loopback, HEADSEG_HAN routes to ``task`` with
    ``model`` and sends the RTSTRUCT back to Orthanc."""
    return f"""
[node]
ae_title = "HEADSEG"
host = "127.0.0.1"
port = {port}
folder = "{folder}"
quiet_seconds = {quiet}
model_dirs = ["{model_dir}"]
device = "cpu"
{extra}

[allow]
ae_titles = ["ORTHANC"]
hosts = ["127.0.0.1"]

[[route]]
called_ae = "HEADSEG_HAN"
modality = "CT"
task = "{task}"
model = "{model}"
export = ["rtstruct"]
send_to = ["orthanc"]

[destination.orthanc]
ae_title = "ORTHANC"
host = "127.0.0.1"
port = {orthanc.dicom_port}

[send]
retries = 3
backoff_seconds = 1
"""
