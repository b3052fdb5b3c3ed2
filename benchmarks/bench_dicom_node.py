"""``headseg serve`` under load (docs/dicom_node.md): N CT series sent at once from a real Orthanc to a
real node, which segments them and C-STOREs each RT Structure Set back. Printed, not asserted:

* series per hour: N / (the last RTSTRUCT sent - the first instance received);
* latency per series: from its last instance received to its RTSTRUCT sent (median, 90th percentile, max);
* the segmentation's own seconds per series, and whether the jobs ran in the order their series completed.

    python benchmarks/bench_dicom_node.py [--series 20] [--model han-anatomynet-openkbp] [--workers 1]
                                          [--synthetic --shape 40,128,128 --spacing 2,2,2.5]

Each series is the real OpenKBP sample CT of the AnatomyNet module (``AnatomyNetHaN/Resources/SampleData``,
128 x 128 x 128 voxels, CC BY) written as DICOM by ``headseg.io.write_dicom_series`` with new UIDs, or with
``--synthetic`` a synthetic head (``Testing/hardening/hardening_factory.head_ct``; the shipped model finds
no organ in it, so use a test model there). Orthanc and the node run as in ``Testing/node`` (loopback
ports, temporary folders). Needs the Debian package ``orthanc`` and ``pip install 'headseg[node]'``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "Testing", REPO / "Testing" / "hardening", REPO / "Testing" / "node"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))


def _floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",")]


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=20)
    parser.add_argument("--model", default=None, help="model package name (default: the task's default model)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--synthetic", action="store_true", help="synthetic heads instead of the OpenKBP sample CT")
    parser.add_argument("--shape", default="40,128,128", help="k,j,i voxels of each synthetic CT")
    parser.add_argument("--spacing", default="2.0,2.0,2.5", help="i,j,k mm of each synthetic CT")
    args = parser.parse_args(argv)

    from hardening_factory import head_ct
    from orthanc_server import NodeProcess, Orthanc, free_port, node_config, orthanc_binary, wait_for

    from headseg.io import read_volume, write_dicom_series
    from headseg.segment.packages import find_package

    if orthanc_binary() is None:
        raise SystemExit("Orthanc is not installed (apt-get install orthanc).")
    package = find_package(args.model, task="han")
    shape = tuple(int(v) for v in _floats(args.shape))
    sample = REPO / "AnatomyNetHaN" / "Resources" / "SampleData" / "OpenKBP_pt_286_CT.nii.gz"
    ct = head_ct(shape, tuple(_floats(args.spacing))) if args.synthetic else read_volume(sample)
    what = (f"synthetic heads of {shape[2]} x {shape[1]} x {shape[0]} voxels" if args.synthetic
            else "copies of the OpenKBP sample CT (128 x 128 x 128 voxels)")
    with tempfile.TemporaryDirectory(prefix="headseg_node_bench_") as tmp:
        root = Path(tmp)
        port = free_port()
        orthanc = Orthanc(root / "orthanc", port).start()
        extra = f"workers = {args.workers}"
        (root / "node.toml").write_text(node_config(root / "node", port, orthanc, package.path.parent, package.name,
                                                    extra=extra), encoding="utf-8")
        node = NodeProcess(root / "node.toml", root / "node.log")
        try:
            node.start()
            ids = []
            for n in range(args.series):  # each write gives the series new study, series and instance UIDs
                ids.append(orthanc.store_files(write_dicom_series(ct, root / f"ct{n}")))
            print(f"{args.series} CT series ({what}), model {package.name}, {args.workers} worker(s); sending all "
                  "at once from Orthanc")
            start = time.time()
            for series_id in ids:
                orthanc.send(series_id, asynchronous=True)
            wait_for(lambda: _finished(root / "node", args.series), 600 + 300 * args.series,
                     f"{args.series} jobs to end", interval=1.0)
            arrived = len(orthanc.rtstructs())
            wall = time.time() - start
        finally:
            node.stop()
            orthanc.stop()
        jobs = [json.loads(p.read_text()) for p in sorted((root / "node" / "jobs").glob("*/job.json"))]
    print(f"  RT Structure Sets in Orthanc: {arrived}")
    _report(jobs, wall)
    return 0


def _finished(folder: Path, count: int) -> bool:
    """All ``count`` jobs have ended (sent, failed, send_failed or unrouted)."""
    states = [json.loads(p.read_text()).get("state") for p in folder.glob("jobs/*/job.json")]
    return len(states) >= count and all(s in ("sent", "failed", "send_failed", "unrouted") for s in states)


def _report(jobs: List[dict], wall: float) -> None:
    sent = [j for j in jobs if j["state"] == "sent"]
    if not sent:
        reasons = sorted({j.get("reason", "") for j in jobs})
        raise SystemExit(f"No job was sent ({len(jobs)} ended: {'; '.join(reasons)}).")
    sent_at = [j["sends"]["orthanc"]["sent_at"] for j in sent]
    first = min(j["received_first"] for j in sent)
    span = max(sent_at) - first
    latency = sorted(s - j["received_last"] for s, j in zip(sent_at, sent))
    segment = [float(j.get("segment_seconds", 0)) for j in sent]
    in_order = [j["started_at"] for j in sent] == sorted(j["started_at"] for j in sent)
    p90 = latency[min(len(latency) - 1, int(round(0.9 * (len(latency) - 1))))]
    print(f"  {len(sent)} of {len(jobs)} job(s) sent; {wall:.0f} s from the first send request to the last RTSTRUCT")
    print(f"  throughput: {3600 * len(sent) / span:.0f} series/hour (first instance received to last RTSTRUCT sent, "
          f"{span:.0f} s)")
    print(f"  latency, last instance received -> RTSTRUCT sent: median {statistics.median(latency):.1f} s, "
          f"90th percentile {p90:.1f} s, max {latency[-1]:.1f} s")
    print(f"  segmentation per series (the job's batch run): median {statistics.median(segment):.1f} s")
    print(f"  jobs ran in the order their series completed: {'yes' if in_order else 'NO'}")


if __name__ == "__main__":
    sys.exit(main())
