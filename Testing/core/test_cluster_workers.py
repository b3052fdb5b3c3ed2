"""``--cluster local:N`` workers start with their share of the cores for OpenMP, MKL and OpenBLAS, wait
passively and run no profiler (``headseg.run.cluster.local_worker_settings``: inside a worker with Dask's
own settings a case segmented more slowly than in the ``headseg`` process; ``benchmarks/bench_scale_out.py``)."""

from __future__ import annotations

import os

import pytest

pytest.importorskip("distributed")


def _worker_view() -> dict:
    import dask

    return {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"),
            "profile": dask.config.get("distributed.worker.profile.enabled")}


def test_local_workers_get_their_share_of_the_cores_and_no_profiler():
    from headseg.run.cluster import dask_executor, local_worker_settings, parse_cluster, worker_threads

    threads = worker_threads(1)
    assert threads == max(1, os.cpu_count() or 1)
    settings = local_worker_settings(2)
    assert settings["distributed.nanny.pre-spawn-environ"]["OMP_NUM_THREADS"] == str(worker_threads(2))
    with dask_executor(parse_cluster("local:1")) as executor:
        view = executor.client.submit(_worker_view, pure=False).result()
    # A variable the user set wins (Dask's rule): the tests' conftest sets OMP_NUM_THREADS=1.
    expected = {k: os.environ.get(k, v) for k, v in (("OMP_NUM_THREADS", str(threads)), ("MKL_NUM_THREADS", str(threads)),
                                                     ("OMP_WAIT_POLICY", "PASSIVE"))}
    assert view == {**expected, "profile": False}
