"""The DICOM node's parts without Orthanc: the config's refusals (one sentence, exit 2), the queue after a
restart, and the sender's retries with backoff against a port where nothing listens (then ``send_failed``,
the files kept)."""

from __future__ import annotations

import json
import os
import socket
import stat
import time
from pathlib import Path

import pytest

pytest.importorskip("pynetdicom")

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
