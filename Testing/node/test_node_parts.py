"""The DICOM node's parts without Orthanc: the config's refusals (one sentence, exit 2), the queue after a
restart, and the sender's retries with backoff against a port where nothing listens (then ``send_failed``,
the files kept); on loopback associations from a pynetdicom SCU to a node in this process,
``complete_on_release`` and a series the orbit search refuses (a failed job, the next one still sent); the
``cluster`` setting, and a job on a ``local:1`` Dask cluster giving the in-process label map."""

from __future__ import annotations

import io
import json
import os
import socket
import stat
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hardening"))
from hardening_factory import head_ct  # noqa: E402
from model_factory import threshold_han_card, write_random_package, write_tiny_orbit_package  # noqa: E402
from orthanc_server import wait_for  # noqa: E402

from headseg.cli import main  # noqa: E402
from headseg.errors import InputError  # noqa: E402
from headseg.node.config import parse_config  # noqa: E402
from headseg.node.queue import MAX_ATTEMPTS, JobQueue, SeriesInfo, uid_hash  # noqa: E402

ROUTE = {"task": "han", "called_ae": "HEADSEG_HAN", "send_to": ["pacs"]}
PACS = {"pacs": {"ae_title": "PACS", "host": "127.0.0.1", "port": 4242}}


def test_config_refusals_are_one_sentence(tmp_path, capsys):
    ok = {"node": {"folder": str(tmp_path)}, "route": [ROUTE], "destination": PACS}
    config = parse_config(ok)
    assert config.route_for("HEADSEG_HAN", {"Modality": "CT"}) is not None
    assert config.route_for("OTHER", {"Modality": "CT"}) is None
    assert config.host_allowed("10.0.0.5") and not parse_config({**ok, "allow": {"hosts": ["10.1.0.0/16"]}}
                                                                 ).host_allowed("10.0.0.5")
    bad = [({"route": [ROUTE], "destination": PACS}, "needs 'folder'"),
           ({**ok, "route": []}, "at least one [[route]]"),
           ({**ok, "route": [{**ROUTE, "task": "liver"}]}, 'task = "orbit" or "han"'),
           ({**ok, "route": [{**ROUTE, "send_to": ["tps"]}]}, "which no [destination.*] defines"),
           ({**ok, "route": [{**ROUTE, "export": ["nifti"]}]}, "export may name"),
           ({**ok, "allow": {"ae_titles": ["A" * 17]}}, "AE title of 1 to 16"),
           ({**ok, "allow": {"hosts": ["somewhere"]}}, "not an IP address"),
           ({**ok, "route": [{**ROUTE, "series_description": "("}]}, "not a regular expression")]
    for data, words in bad:
        with pytest.raises(InputError, match=None) as info:
            parse_config(data)
        assert words in str(info.value)
    (tmp_path / "bad.toml").write_text("[node\nfolder = 1", encoding="utf-8")
    assert main(["serve", "--config", str(tmp_path / "bad.toml")]) == 2
    err = capsys.readouterr().err
    assert "is not valid TOML" in err and "Traceback" not in err


def _queue_with_job(folder: Path, lines: list) -> JobQueue:
    queue = JobQueue(folder, 1e9, lambda event, **f: lines.append({"event": event, **f}))
    info = queue.start_series(SeriesInfo(uid_hash("1.2.3"), {"Modality": "CT"}, "HEADSEG_HAN", "ORTHANC"))
    queue.store_instance(info.key, "1.2.3.4", b"DICM" * 10)
    route = {"task": "han", "package": "unused", "export": ["rtstruct"], "send_to": ["pacs"]}
    (job,) = queue.complete_series(lambda i: route, 0.0)
    return queue


def test_queue_after_restarts_and_its_files(tmp_path):
    lines: list = []
    queue = _queue_with_job(tmp_path / "node", lines)
    job = queue.take_next()
    assert job is not None and job.state == "running"
    for attempt in range(1, MAX_ATTEMPTS):
        queue = JobQueue(tmp_path / "node", 1e9, lambda event, **f: lines.append({"event": event, **f}))
        (job,) = queue.jobs()
        assert job.state == "queued"  # a job the node died in is done again
        job = queue.take_next()
        assert job is not None and job.data["attempts"] == attempt + 1
    queue = JobQueue(tmp_path / "node", 1e9, lambda event, **f: lines.append({"event": event, **f}))
    (job,) = queue.jobs()
    assert job.state == "failed" and f"stopped {MAX_ATTEMPTS} times" in job.data["reason"]
    for path in [tmp_path / "node", *(tmp_path / "node").rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        assert "1.2.3" not in path.name
    assert all("1.2.3" not in json.dumps(line) for line in lines)


def test_disk_limit_refuses_instances(tmp_path):
    from headseg.node.queue import DiskFull

    queue = JobQueue(tmp_path / "node", 100, lambda *a, **k: None)
    info = queue.start_series(SeriesInfo(uid_hash("1.2"), {"Modality": "CT"}, "A", "B"))
    queue.store_instance(info.key, "1.2.1", b"x" * 60)
    with pytest.raises(DiskFull):
        queue.store_instance(info.key, "1.2.2", b"x" * 60)


def test_a_send_that_fails_is_retried_with_backoff_then_kept(tmp_path):
    from headseg.node.sender import Sender

    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = parse_config({"node": {"folder": str(tmp_path / "node")}, "route": [ROUTE], "send": {
        "retries": 2, "backoff_seconds": 0.05}, "destination": {"pacs": {**PACS["pacs"], "port": port}}})
    lines: list = []
    queue = _queue_with_job(tmp_path / "node", lines)
    job = queue.take_next()
    assert job is not None
    os.makedirs(job.out_dir)
    _write_rtstruct_like(job.out_dir / "result.dcm")
    queue.update(job, state="segmented", dicom=["result.dcm"])
    sender = Sender(config, queue, lambda event, **f: lines.append({"event": event, **f}))
    for _ in range(200):
        sender.send_due()
        if queue.jobs()[0].state != "segmented":
            break
        time.sleep(0.02)
    (job,) = queue.jobs()
    assert job.state == "send_failed" and (job.out_dir / "result.dcm").is_file()
    sends = [line for line in lines if line["event"] == "send"]
    assert [line["state"] for line in sends] == ["retry", "retry", "failed"]
    assert sends[1]["retry_in_s"] >= sends[0]["retry_in_s"]  # the backoff grows


def _write_rtstruct_like(path: Path) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = "1.2.840.10008.5.1.4.1.1.481.3", generate_uid(), "RTSTRUCT"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(str(path), enforce_file_format=True)


def test_a_series_still_being_delivered_is_not_complete(tmp_path):
    """However long a sender pauses inside its association, the series stays one job."""
    queue = JobQueue(tmp_path / "node", 1e9, lambda *a, **k: None)
    info = queue.start_series(SeriesInfo(uid_hash("1.5"), {"Modality": "CT"}, "HEADSEG_HAN", "ORTHANC"))
    queue.hold(info.key)
    queue.store_instance(info.key, "1.5.1", b"DICM")
    assert queue.complete_series(lambda i: {"send_to": []}, 0.0) == []
    queue.let_go([info.key])
    (job,) = queue.complete_series(lambda i: {"send_to": []}, 0.0)
    assert job.data["instances"] == 1


# ----------------------------------------------------------------------------------------------------
# complete_on_release, a series the orbit search refuses, the cluster setting
# ----------------------------------------------------------------------------------------------------
HAN_MODEL, ORBIT_MODEL = "random-han-test", "tiny-orbit-test"


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """A tiny random head-and-neck package (coarse grid: seconds a series) and a tiny random orbit package."""
    folder = tmp_path_factory.mktemp("node_models")
    card = threshold_han_card(HAN_MODEL)
    card["input"]["spacing_mm"] = [3.0, 3.0, 4.0]
    write_random_package(folder / HAN_MODEL, card)
    write_tiny_orbit_package(folder / ORBIT_MODEL, ORBIT_MODEL)
    return folder


def _ct_series(folder: Path, seed: int) -> list:
    """A small synthetic head CT (a soft-tissue ellipsoid in a bony shell: no eyes) as a DICOM series."""
    from headseg.io import write_dicom_series

    return write_dicom_series(head_ct(seed=seed), folder)


def _node_settings(tmp_path: Path, models: Path, **node: object) -> dict:
    return {"node": {"folder": str(tmp_path / "node"), "port": 0, "model_dirs": [str(models)], **node},
            "allow": {"ae_titles": ["SCANNER"], "hosts": ["127.0.0.1"]},
            "route": [{"called_ae": "HEADSEG_HAN", "modality": "CT", "task": "han", "model": HAN_MODEL}]}


def _open_and_store(port: int, files: list, called_ae: str = "HEADSEG_HAN"):
    """An association from SCANNER that has C-STOREd every file (each answered with success), still open."""
    import pydicom
    from pynetdicom import AE
    from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined,unused-ignore]

    ae = AE(ae_title="SCANNER")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    assert assoc.is_established
    for f in files:
        status = assoc.send_c_store(pydicom.dcmread(str(f)))
        assert status and int(status.Status) == 0x0000
    return assoc


def _events(stream: io.StringIO, event: str, **match: object) -> list:
    """The node's JSON log lines of ``event`` whose fields hold ``match``."""
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    return [e for e in lines if e["event"] == event and all(e.get(k) == v for k, v in match.items())]


class _ReceivingNode:
    """A node's receiver, queue, routes and log in this process, without its workers (nothing is segmented)."""

    def __init__(self, config) -> None:
        from headseg.node.receiver import Receiver
        from headseg.node.server import Node

        self.stream = io.StringIO()
        self.node = Node(config, log_stream=self.stream)
        self.receiver = Receiver(config, self.node.queue, self.node.log, self.node.complete)
        self.port = self.receiver.start()

    def events(self, event: str, **match: object) -> list:
        return _events(self.stream, event, **match)

    def close(self) -> None:
        self.receiver.stop()
        self.node._log_file.close()


def test_complete_on_release_queues_the_series_when_its_association_is_released(models, tmp_path):
    files = _ct_series(tmp_path / "ct", seed=0)
    config = parse_config(_node_settings(tmp_path, models, quiet_seconds=600, complete_on_release=True))
    node = _ReceivingNode(config)
    try:
        assoc = _open_and_store(node.port, files)
        time.sleep(0.5)
        assert node.node.queue.jobs() == [], "a series was complete while its association was still open"
        assoc.release()
        (job,) = wait_for(node.node.queue.jobs, 10, "the job after the release", interval=0.05)
        # The release completed it, not the quiet time (600 s, when it would still be receiving):
        assert job.data["queued_at"] - job.data["received_last"] < 10 < config.quiet_seconds
        assert job.state == "queued" and job.data["instances"] == len(files)
        assert job.data["route"]["task"] == "han" and job.data["called_ae"] == "HEADSEG_HAN"
        assert len(list(job.instances_dir.glob("*.dcm"))) == len(files)
        assert node.events("job", job=job.id, state="queued")
        assert node.node.queue.series_info(job.data["series"]) is None  # no longer receiving
    finally:
        node.close()


def test_without_complete_on_release_a_released_series_waits_for_the_quiet_time(models, tmp_path):
    files = _ct_series(tmp_path / "ct", seed=0)
    config = parse_config(_node_settings(tmp_path, models, quiet_seconds=600, complete_on_release=False))
    node = _ReceivingNode(config)
    try:
        _open_and_store(node.port, files).release()
        queue = node.node.queue
        wait_for(lambda: node.events("association", state="ended", stored=len(files)), 10, "the association to end",
                 interval=0.05)
        time.sleep(0.5)
        assert queue.jobs() == [] and not node.events("job"), "the release completed the series"
        for _ in range(3):  # what the collector thread does every 0.25 s
            assert queue.complete_series(node.node.route_of, config.quiet_seconds) == []
            time.sleep(0.3)
        assert queue.jobs() == [] and not queue.open
        (info,) = queue.series.values()
        assert info.instances == len(files)
        info.last -= config.quiet_seconds + 1  # the quiet time has passed: now it is complete
        (job,) = queue.complete_series(node.node.route_of, config.quiet_seconds)
        assert job.state == "queued" and job.data["instances"] == len(files)
    finally:
        node.close()


def test_a_series_the_orbit_search_refuses_fails_alone_and_the_node_goes_on(models, tmp_path):
    """A CT without eyes routed to the orbit task: a failed job whose log line says why, nothing sent; the
    head-and-neck series after it is segmented and sent. The whole node runs here, threads and all."""
    from headseg.node.server import Node

    settings = _node_settings(tmp_path, models, quiet_seconds=600, complete_on_release=True)
    settings["route"] = [{"called_ae": "HEADSEG_ORBIT", "task": "orbit", "model": ORBIT_MODEL, "send_to": ["archive"]},
                         {**settings["route"][0], "send_to": ["archive"]}]
    settings["destination"] = {"archive": {"folder": str(tmp_path / "archive")}}
    config = parse_config(settings)
    stream = io.StringIO()
    node = Node(config, log_stream=stream)
    result: list = []
    thread = threading.Thread(target=lambda: result.append(node.run()), daemon=True)
    thread.start()

    def events(event: str, **match: object) -> list:
        return _events(stream, event, **match)

    try:
        (listening,) = wait_for(lambda: events("listening"), 30, "the node to listen", interval=0.05)
        _open_and_store(listening["port"], _ct_series(tmp_path / "eyeless", seed=1), "HEADSEG_ORBIT").release()
        _open_and_store(listening["port"], _ct_series(tmp_path / "han", seed=2), "HEADSEG_HAN").release()
        (sent,) = wait_for(lambda: events("job", state="sent"), 240, "the head-and-neck job to be sent", interval=0.05)
    finally:
        node.stop()
        thread.join(120)
    assert result == [0] and events("stopped")
    orbit_job, han_job = node.queue.jobs()
    assert orbit_job.data["route"]["task"] == "orbit" and han_job.data["route"]["task"] == "han"
    assert sent["job"] == han_job.id and han_job.state == "sent"

    assert orbit_job.state == "failed" and "Could not find both orbits" in orbit_job.data["reason"]
    (failed,) = events("job", job=orbit_job.id, state="failed")
    assert failed["reason"] == orbit_job.data["reason"] and "unexpected error" not in failed["reason"]
    assert not list(orbit_job.out_dir.glob("*.dcm")) and "dicom" not in orbit_job.data
    assert not events("send", job=orbit_job.id) and not (tmp_path / "archive" / orbit_job.id).exists()
    assert han_job.data["started_at"] > orbit_job.data["started_at"]
    assert (tmp_path / "archive" / han_job.id / f"{han_job.id}_rtstruct.dcm").is_file()


def test_the_cluster_setting_is_checked_when_the_config_is_read(tmp_path, capsys):
    from headseg.run.cluster import ClusterSpec

    ok = {"node": {"folder": str(tmp_path / "node")}, "route": [ROUTE], "destination": PACS}
    assert parse_config(ok).cluster is None
    assert parse_config({**ok, "node": {**ok["node"], "cluster": "local:1"}}).cluster == ClusterSpec("local:1", workers=1)
    spec = parse_config({**ok, "node": {**ok["node"], "cluster": "tcp://10.0.0.1:8786"}}).cluster
    assert spec is not None and spec.address == "tcp://10.0.0.1:8786" and spec.workers is None
    for bad, words in (("local:0", "needs N >= 1 workers"), ("nonsense", "give local:N")):
        with pytest.raises(InputError) as info:
            parse_config({**ok, "node": {**ok["node"], "cluster": bad}})
        message = str(info.value)
        assert message.startswith("Node config: cluster") and words in message, message
        assert "\n" not in message and message.endswith(".")
    # Through the command line: refused before the node listens, exit 2, the one sentence and no traceback.
    (tmp_path / "node.toml").write_text(f'[node]\nfolder = "{tmp_path / "node"}"\ncluster = "local:0"\n'
                                        '[[route]]\ntask = "han"\n', encoding="utf-8")
    assert main(["serve", "--config", str(tmp_path / "node.toml")]) == 2
    err = capsys.readouterr().err
    assert "Node config: cluster local:N needs N >= 1 workers." in err and "Traceback" not in err


def test_a_job_on_a_local_dask_cluster_gives_the_label_map_of_one_in_process(models, tmp_path):
    pytest.importorskip("distributed")
    from headseg.io import read_segmentation
    from headseg.labels import get_label_set
    from headseg.node.worker import Worker, executor_for, route_dict

    files = _ct_series(tmp_path / "ct", seed=3)
    lines: list = []
    log = lambda event, **f: lines.append({"event": event, **f})  # noqa: E731
    in_process = parse_config(_node_settings(tmp_path, models))
    on_cluster = parse_config(_node_settings(tmp_path, models, cluster="local:1"))
    queue = JobQueue(in_process.folder, 1e9, log)
    package = str(models / HAN_MODEL)
    for n in range(2):  # the same series twice: two jobs
        info = queue.start_series(SeriesInfo(uid_hash(f"1.2.3.{n}"), {"Modality": "CT"}, "HEADSEG_HAN", "SCANNER"))
        for f in files:
            queue.store_instance(info.key, f.name, f.read_bytes())
        queue.complete_series(lambda i: route_dict(in_process.routes[0], package), 0.0)
    assert Worker(in_process, queue, log).run_one()
    with executor_for(on_cluster) as executor:
        assert executor is not None
        submitted: list = []
        submit = executor.submit
        executor.submit = lambda fn, *args: submitted.append(fn) or submit(fn, *args)
        assert Worker(on_cluster, queue, log, executor).run_one()
    here, there = queue.jobs()
    assert len(submitted) == 1  # the second job ran on the Dask worker
    assert here.state == there.state == "done", [here.data.get("reason"), there.data.get("reason")]
    openkbp = get_label_set("openkbp")
    ours = read_segmentation(here.out_dir / f"{here.id}.seg.nrrd", openkbp).array
    theirs = read_segmentation(there.out_dir / f"{there.id}.seg.nrrd", openkbp).array
    assert ours.shape == (24, 48, 48) and (ours > 0).any(), "the model segmented nothing: the comparison would be empty"
    assert (ours == theirs).all()
