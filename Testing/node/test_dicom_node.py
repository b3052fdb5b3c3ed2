"""``headseg serve`` against a real Orthanc (Debian package ``orthanc``), both real processes on loopback
ports: the round trip, a SIGKILL while segmenting, the refusals and a small load.

Orthanc stores a CT and, through its REST API, sends it to the node (C-STORE); the node segments it and
C-STOREs the RT Structure Set back to Orthanc. Skipped only when the Orthanc binary is missing, unless
HEADSEG_REQUIRE_ORTHANC is set (CI: ``.ci/run`` installs it), then missing Orthanc is a failure."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
import urllib.error
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest

if os.environ.get("HEADSEG_REQUIRE_ORTHANC"):  # CI: every piece must be there, none may skip
    import highdicom  # noqa: F401
    import pydicom
    import pynetdicom  # noqa: F401
else:
    pytest.importorskip("pynetdicom")
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "hardening"))
from hardening_factory import edit_series, head_ct  # noqa: E402
from model_factory import threshold_han_card, write_random_package  # noqa: E402
from orthanc_server import REPO, NodeProcess, Orthanc, free_port, node_config, orthanc_binary, wait_for  # noqa: E402

from headseg.dicom_export import read_rtstruct  # noqa: E402
from headseg.io import read_segmentation, write_dicom_series  # noqa: E402
from headseg.labels import get_label_set  # noqa: E402

OPENKBP = get_label_set("openkbp")
MODEL = "random-han-test"

if orthanc_binary() is None:
    if os.environ.get("HEADSEG_REQUIRE_ORTHANC"):
        pytest.fail("Orthanc is required here (HEADSEG_REQUIRE_ORTHANC is set) but its binary was not found.",
                    pytrace=False)
    pytest.skip("Orthanc is not installed (apt-get install orthanc); the DICOM node tests need a real one",
                allow_module_level=True)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A model package, a running Orthanc and a running node (module scope: started once)."""
    root = tmp_path_factory.mktemp("node_site")
    card = threshold_han_card(MODEL)  # a tiny AnatomyNet with random weights, on a coarse grid: seconds a series
    card["input"]["spacing_mm"] = [3.0, 3.0, 4.0]
    write_random_package(root / "models" / MODEL, card)
    port = free_port()
    orthanc = Orthanc(root / "orthanc", port).start()
    (root / "node.toml").write_text(node_config(root / "node", port, orthanc, root / "models", MODEL), encoding="utf-8")
    node = NodeProcess(root / "node.toml", root / "node.log")
    try:
        node.start()
        yield {"root": root, "orthanc": orthanc, "node": node, "port": port}
    finally:
        node.stop()
        orthanc.stop()


def ct_series(folder: Path, seed: int = 0, modality: str = "CT") -> List[Path]:
    return write_dicom_series(head_ct(seed=seed), folder, modality=modality)


def rtstructs_for(orthanc: Orthanc, study_uid: str) -> List[Dict]:
    return [r for r in orthanc.rtstructs() if r["tags"].get("StudyInstanceUID") == study_uid]


def job_states(folder: Path) -> Dict[str, Dict]:
    import json

    return {p.parent.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / "jobs").glob("*/job.json"))}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float(np.logical_and(a, b).sum()) / max(1, int(a.sum() + b.sum()))


def test_round_trip_rtstruct_references_the_ct_and_equals_headseg_segment(site, tmp_path):
    orthanc, node = site["orthanc"], site["node"]
    files = ct_series(tmp_path / "ct")
    first = pydicom.dcmread(str(files[0]))
    orthanc.send(orthanc.store_files(files))
    (found,) = wait_for(lambda: rtstructs_for(orthanc, first.StudyInstanceUID), 240, "the RTSTRUCT in Orthanc")

    (tmp_path / "rtstruct.dcm").write_bytes(orthanc.instance_file(found["id"]))
    rt = pydicom.dcmread(str(tmp_path / "rtstruct.dcm"))
    frame = rt.ReferencedFrameOfReferenceSequence[0]
    assert frame.FrameOfReferenceUID == first.FrameOfReferenceUID
    series = frame.RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == first.SeriesInstanceUID
    ct_sops = {str(pydicom.dcmread(str(f), stop_before_pixels=True).SOPInstanceUID) for f in files}
    assert {str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence} == ct_sops
    contour_refs = {str(c.ContourImageSequence[0].ReferencedSOPInstanceUID)
                    for roi in rt.ROIContourSequence for c in roi.ContourSequence}
    assert contour_refs and contour_refs <= ct_sops

    # The same series through `headseg segment`: the contours must agree (Dice >= 0.99 per structure).
    out = tmp_path / "cli"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "headseg", "segment", str(tmp_path / "ct"), "--task", "han", "--model",
                           MODEL, "--model-dir", str(site["root"] / "models"), "-o", str(out), "--export", "rtstruct",
                           "--device", "cpu", "--progress-format", "none"], capture_output=True, text=True, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    labelmap = read_segmentation(out / "ct.seg.nrrd", OPENKBP)
    ours = read_rtstruct(tmp_path / "rtstruct.dcm", OPENKBP, labelmap).array
    theirs = read_rtstruct(out / "ct_rtstruct.dcm", OPENKBP, labelmap).array
    present = [s for s in OPENKBP.structures if (theirs == s.label).any()]
    assert present, "the CLI segmented nothing: the comparison would be empty"
    for s in OPENKBP.structures:
        assert (ours == s.label).any() == (theirs == s.label).any(), s.key
    for s in present:
        assert dice(ours == s.label, theirs == s.label) >= 0.99, s.key

    # What stays on the node: the job's volumes CSV and run record, owner-only, named by hashes and job ids.
    folder = site["root"] / "node"
    (job_id, job), *_ = [(k, v) for k, v in job_states(folder).items() if v["state"] == "sent"]
    job_dir = folder / "jobs" / job_id
    assert (job_dir / "out" / f"{job_id}_volumes.csv").is_file() and (job_dir / "out" / f"{job_id}_run.json").is_file()
    uids = {first.StudyInstanceUID, first.SeriesInstanceUID, *ct_sops}
    for path in [folder, *folder.rglob("*")]:
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode & 0o077 == 0, f"{path} is readable by others ({oct(mode)})"
        assert not any(uid in path.name for uid in uids), path
    assert str(first.PatientID) not in node.text() and str(first.StudyInstanceUID) not in node.text()
    status = subprocess.run([sys.executable, "-m", "headseg", "serve", "--config", str(site["root"] / "node.toml"),
                             "--status"], capture_output=True, text=True, env=env, timeout=120)
    assert status.returncode == 0 and job_id in status.stdout and "sent" in status.stdout, status.stderr


def test_refusals_and_the_node_keeps_serving(site, tmp_path):
    from headseg.node.receiver import echo

    orthanc, node, port = site["orthanc"], site["node"], site["port"]
    # An unknown calling AE title is rejected at association; so is a host outside the allow-list.
    assert not echo("127.0.0.1", port, "HEADSEG_HAN", calling_ae="INTRUDER")
    wait_for(lambda: node.events("association", state="rejected", calling_ae="INTRUDER"), 30, "the rejection line")
    assert not _echo_from("127.0.0.2", port)
    wait_for(lambda: node.events("association", state="refused", host="127.0.0.2"), 30, "the host refusal line")

    # An MR series and a truncated CT series are refused, each with a reason, and never become jobs.
    jobs_before = set(job_states(site["root"] / "node"))
    mr = ct_series(tmp_path / "mr", seed=1, modality="MR")
    with pytest.raises(urllib.error.HTTPError):
        orthanc.send(orthanc.store_files(mr))
    truncated = ct_series(tmp_path / "cut", seed=2)

    def cut(n: int, ds) -> None:
        if n == 5:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 2]

    edit_series(truncated, cut)
    with pytest.raises(urllib.error.HTTPError):
        orthanc.send(orthanc.store_files(truncated))
    wait_for(lambda: node.events("series", state="refused", reason="Modality MR, not CT"), 30, "the MR refusal")
    wait_for(lambda: [e for e in node.events("series", state="refused") if "truncated" in e["reason"]], 30,
             "the truncated-series refusal")
    wait_for(lambda: len(node.events("series", state="dropped")) >= 2, 30, "the refused series to be dropped")
    assert set(job_states(site["root"] / "node")) == jobs_before  # refused series never become jobs
    for study in (pydicom.dcmread(str(mr[0])).StudyInstanceUID, pydicom.dcmread(str(truncated[0])).StudyInstanceUID):
        assert not rtstructs_for(orthanc, study)

    # A CT sent to a called AE title that no route names is kept as an unrouted job, reported, not segmented.
    orthanc.request("PUT", "/modalities/unrouted", {"AET": "HEADSEG_NONE", "Host": "127.0.0.1", "Port": port})
    orthanc.send(orthanc.store_files(ct_series(tmp_path / "unrouted", seed=3)), modality="unrouted")
    (unrouted,) = wait_for(lambda: node.events("job", state="unrouted"), 60, "the unrouted job")
    assert "no route matches" in unrouted["reason"]
    assert job_states(site["root"] / "node")[unrouted["job"]]["state"] == "unrouted"

    # Still serving: C-ECHO from Orthanc's AE title answers.
    assert echo("127.0.0.1", port, "HEADSEG_HAN", calling_ae="ORTHANC")
    assert node.process is not None and node.process.poll() is None


def _echo_from(source: str, port: int) -> bool:
    """A C-ECHO whose connection comes from ``source`` (a loopback address outside the allow-list)."""
    from pynetdicom import AE
    from pynetdicom.sop_class import Verification

    ae = AE(ae_title="ORTHANC")
    ae.add_requested_context(Verification)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", port, ae_title="HEADSEG_HAN", bind_address=(source, 0))
    established = assoc.is_established
    if established:
        assoc.release()
    return established


def test_load_series_are_all_processed_in_order(site, tmp_path):
    orthanc = site["orthanc"]
    count = int(os.environ.get("HEADSEG_NODE_LOAD_SERIES", "2"))
    studies, ids = [], []
    for n in range(count):
        files = ct_series(tmp_path / f"ct{n}", seed=10 + n)
        studies.append(pydicom.dcmread(str(files[0])).StudyInstanceUID)
        ids.append(orthanc.store_files(files))
    for series_id in ids:  # all at once: Orthanc's jobs run side by side
        orthanc.send(series_id, asynchronous=True)
    wait_for(lambda: all(rtstructs_for(orthanc, s) for s in studies), 240 * count, f"{count} RTSTRUCTs")
    assert all(len(rtstructs_for(orthanc, s)) == 1 for s in studies)
    jobs = [j for j in job_states(site["root"] / "node").values() if j["state"] == "sent"][-count:]
    assert [j["seq"] for j in jobs] == sorted(j["seq"] for j in jobs)
    started = [j["started_at"] for j in jobs]
    assert started == sorted(started), "jobs ran out of the order their series completed"


def test_sigkill_while_segmenting_then_restart_sends_exactly_one(site, tmp_path):
    orthanc = site["orthanc"]
    port = free_port()
    orthanc.request("PUT", "/modalities/restart", {"AET": "HEADSEG_HAN", "Host": "127.0.0.1", "Port": port})
    config = tmp_path / "node.toml"
    config.write_text(node_config(tmp_path / "node", port, orthanc, site["root"] / "models", MODEL), encoding="utf-8")
    node = NodeProcess(config, tmp_path / "node.log").start()
    try:
        files = ct_series(tmp_path / "ct", seed=42)
        study = pydicom.dcmread(str(files[0])).StudyInstanceUID
        orthanc.send(orthanc.store_files(files), modality="restart")
        wait_for(lambda: node.events("job", state="running"), 120, "the job to start", interval=0.02)
        node.kill()  # SIGKILL while segmenting
        (job,) = job_states(tmp_path / "node").values()
        assert job["state"] == "running" and not rtstructs_for(orthanc, study)

        node = NodeProcess(config, tmp_path / "node.log").start()
        wait_for(lambda: node.events("job", state="sent"), 240, "the resumed job to be sent")
        assert node.events("job", reason="resumed after a restart")
        time.sleep(2)  # a second send would arrive now
        assert len(rtstructs_for(orthanc, study)) == 1
        (job,) = job_states(tmp_path / "node").values()
        assert job["state"] == "sent" and job["attempts"] == 2 and job["sends"]["orthanc"]["state"] == "sent"
        code = node.terminate()  # SIGTERM: a clean stop
        assert code == 0, node.text()[-2000:]
        assert node.events("stopped")
    finally:
        node.stop()
