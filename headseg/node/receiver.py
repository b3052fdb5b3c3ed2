"""The node's storage SCP on pynetdicom: C-ECHO, and C-STORE of CT instances into the job queue.

A series is complete after ``quiet_seconds`` without an instance and once no association is still
delivering it (so a slow sender never splits a series in two), or when that association ends with
``complete_on_release``.

Refusals, each with one log line (per association or per series, never per patient):

* a host outside ``allow.hosts``: the connection is closed before any association (``verify_request``,
  the hook of Python's ``socketserver`` that pynetdicom's server is built on);
* a calling AE title outside ``allow.ae_titles``: the association is rejected (pynetdicom's
  ``require_calling_aet``);
* an instance that is not CT, lacks its UIDs, is larger than ``max_instance_mb``, holds less pixel data
  than its rows, columns and bits say (a truncated file), or would take the folder over ``max_disk_mb``
  or its series over ``max_series_instances``: a failure status for it, and its whole series is refused
  (kept out of the queue) except for the disk limit, which refuses instances only.
"""

from __future__ import annotations

import re
import socketserver
import threading
from io import BytesIO
from typing import Any, Callable, Dict, List, Set, Tuple

from headseg.node.config import NodeConfig
from headseg.node.queue import DiskFull, JobQueue, SeriesInfo, uid_hash

__all__ = ["Receiver"]

STATUS_OK = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
ROUTING_ATTRIBUTES = ("Modality", "BodyPartExamined", "SeriesDescription")
UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2")


def pixel_data_problem(ds: Any, transfer_syntax: str) -> str:
    """Why the pixel data cannot be a whole image ('' when it can): uncompressed data only."""
    if "PixelData" not in ds:
        return "it has no pixel data"
    if transfer_syntax not in UNCOMPRESSED:
        return ""
    try:
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
                    * int(ds.get("NumberOfFrames", 1) or 1))
    except (AttributeError, TypeError, ValueError):
        return "its image size (Rows, Columns, BitsAllocated) is missing"
    actual = len(ds.PixelData)
    return f"its pixel data holds {actual} of {expected} bytes (truncated)" if actual < expected else ""


class Receiver:
    """A running storage SCP that feeds ``queue``; ``complete`` is called with series keys when an
    association ends (``complete_on_release``)."""

    def __init__(self, config: NodeConfig, queue: JobQueue, log: Callable[..., None],
                 complete: Callable[[List[str]], None]) -> None:
        self.config, self.queue, self.log, self.complete = config, queue, log, complete
        self._association_series: Dict[int, Set[str]] = {}
        self._counts: Dict[int, List[int]] = {}
        self._lock = threading.Lock()
        self.server: Any = None
        self.port = 0

    def start(self) -> int:
        """Listen; returns the port (useful when the config says port 0)."""
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined,unused-ignore]
        from pynetdicom.transport import ThreadedAssociationServer

        ae = AE(ae_title=self.config.ae_title)
        ae.supported_contexts = AllStoragePresentationContexts  # any modality may arrive; non-CT is refused with a reason
        ae.add_supported_context(Verification)
        if self.config.allowed_ae_titles:
            ae.require_calling_aet = list(self.config.allowed_ae_titles)
        ae.maximum_pdu_size = 0
        receiver = self

        class Server(ThreadedAssociationServer):  # type: ignore[misc,unused-ignore]
            def verify_request(self, request: Any, client_address: Any) -> bool:
                host = str(client_address[0])
                if receiver.config.host_allowed(host):
                    return True
                receiver.log("association", state="refused", host=host, reason="host not in allow.hosts")
                return False

        handlers: List[Any] = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_C_ECHO, self._on_echo),
                    (evt.EVT_ACCEPTED, self._on_accepted), (evt.EVT_REJECTED, self._on_rejected),
                    (evt.EVT_RELEASED, self._on_ended), (evt.EVT_ABORTED, self._on_ended)]
        self.server = ae.make_server((self.config.host, self.config.port), evt_handlers=handlers, server_class=Server)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, name="headseg-scp", daemon=True).start()
        return self.port

    def stop(self) -> None:
        if self.server is not None:
            # socketserver's own shutdown: pynetdicom's also drops the server from its AE's list of servers
            # started by start_server, which this one (made by make_server) was never in.
            socketserver.TCPServer.shutdown(self.server)
            self.server.server_close()
            self.server = None

    # -- association events ------------------------------------------------------------------------
    @staticmethod
    def _peer(event: Any) -> Tuple[str, str, str]:
        assoc = event.assoc
        called = str(getattr(assoc.requestor.primitive, "called_ae_title", "") or "").strip()
        return str(assoc.requestor.ae_title).strip(), called, str(assoc.requestor.address)

    def _on_accepted(self, event: Any) -> None:
        calling, called, host = self._peer(event)
        self.log("association", state="accepted", calling_ae=calling, called_ae=called, host=host)

    def _on_rejected(self, event: Any) -> None:
        calling, called, host = self._peer(event)
        self.log("association", state="rejected", calling_ae=calling, called_ae=called, host=host,
                 reason="calling AE title not in allow.ae_titles")

    def _on_ended(self, event: Any) -> None:
        with self._lock:
            series = self._association_series.pop(id(event.assoc), set())
            stored, refused = self._counts.pop(id(event.assoc), [0, 0])
        self.queue.let_go(sorted(series))
        if stored or refused:
            self.log("association", state="ended", stored=stored, refused=refused, series=len(series))
        if series and self.config.complete_on_release:
            self.complete(sorted(series))

    def _on_echo(self, event: Any) -> int:
        return STATUS_OK

    # -- C-STORE -----------------------------------------------------------------------------------
    def _on_store(self, event: Any) -> int:
        status = self._store(event)
        with self._lock:
            counts = self._counts.setdefault(id(event.assoc), [0, 0])
            counts[0 if status == STATUS_OK else 1] += 1
        return status

    def _store(self, event: Any) -> int:
        import pydicom

        calling, called, _ = self._peer(event)
        data = bytes(event.encoded_dataset())
        if len(data) > self.config.max_instance_mb * 1e6:
            self.log("instance", state="refused", reason=f"larger than max_instance_mb ({len(data) / 1e6:.1f} MB)")
            return STATUS_OUT_OF_RESOURCES
        try:
            ds = pydicom.dcmread(BytesIO(data))
            series_uid, sop_uid = str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
        except Exception:  # pydicom raises many kinds for broken data; none must reach the peer as a crash
            self.log("instance", state="refused", reason="cannot be decoded or lacks SeriesInstanceUID/SOPInstanceUID")
            return STATUS_CANNOT_UNDERSTAND
        if not (UID.match(series_uid) and UID.match(sop_uid)):
            self.log("instance", state="refused", reason="its SeriesInstanceUID or SOPInstanceUID is not a UID")
            return STATUS_CANNOT_UNDERSTAND
        key = uid_hash(series_uid)
        attributes = {a: str(ds.get(a, "") or "") for a in ROUTING_ATTRIBUTES}
        info = self.queue.start_series(SeriesInfo(key, attributes, called, calling))
        with self._lock:
            delivering = self._association_series.setdefault(id(event.assoc), set())
            if key not in delivering:
                delivering.add(key)
                self.queue.hold(key)
        reason = info.refused or self._problem(ds, info, str(event.context.transfer_syntax))
        if reason:
            if self.queue.refuse_series(key, reason):
                self.log("series", series=key, state="refused", reason=reason)
            return STATUS_CANNOT_UNDERSTAND
        try:
            self.queue.store_instance(key, sop_uid, data)
        except DiskFull:
            self.log("instance", series=key, state="refused", reason="the node's folder is at max_disk_mb")
            return STATUS_OUT_OF_RESOURCES
        except OSError as exc:
            self.log("instance", series=key, state="refused", reason=f"cannot be written ({exc.strerror or exc})")
            return STATUS_OUT_OF_RESOURCES
        return STATUS_OK

    def _problem(self, ds: Any, info: SeriesInfo, transfer_syntax: str) -> str:
        modality = str(ds.get("Modality", "") or "").strip()
        if modality != "CT":
            return f"Modality {modality or 'missing'}, not CT"
        if info.instances >= self.config.max_series_instances:
            return f"more than max_series_instances ({self.config.max_series_instances}) instances"
        return pixel_data_problem(ds, transfer_syntax)


def echo(host: str, port: int, called_ae: str, calling_ae: str = "HEADSEG_CHECK", timeout: float = 10) -> bool:
    """True when the node at ``host:port`` answers a C-ECHO (for tests and health checks)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification  # type: ignore[attr-defined,unused-ignore]

    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(host, port, ae_title=called_ae)
    if not assoc.is_established:
        return False
    try:
        status = assoc.send_c_echo()
        return bool(status) and int(status.Status) == STATUS_OK
    finally:
        assoc.release()

