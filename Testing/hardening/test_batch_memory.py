"""Memory does not grow over a batch processed in one process (benchmarks/bench_batch_memory.py runs 50+)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_batch_memory.py"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("psutil")
    spec = importlib.util.spec_from_file_location("bench_batch_memory", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_twenty_cases_in_one_process_do_not_grow(bench, han_package, tmp_path):
    cases = bench.write_cases(tmp_path / "cases", 20, "han")
    records = bench.segment_in_one_process(cases, han_package, tmp_path / "out")
    s = bench.growth_summary(records)
    print(f"20 cases: peak RSS {s['first_peak_mb']:.0f} MB (case 1), {s['early_peak_mb']:.0f} -> "
          f"{s['late_peak_mb']:.0f} MB (cases 2-6 -> last 5), Python+numpy {s['python_growth_mb'] * 1024:+.0f} KB")
    assert len(list((tmp_path / "out").glob("*.seg.nrrd"))) == 20
    # Arrays and Python objects: a leak of even one small label map per case (55 KB) would exceed this.
    assert s["python_growth_mb"] < 0.5
    # Process memory: allocator noise is +-20 MB here; a leaked model grid per case would add > 1 MB each.
    assert s["peak_growth_mb"] < 40
    assert s["rss_after_growth_mb"] < 40


def test_the_measurement_sees_a_leak(bench, han_package, tmp_path):
    """The same measurement with a deliberate leak of 1 MiB per case must report it (the test can fail)."""
    kept = []
    cases = bench.write_cases(tmp_path / "cases", 6, "han")
    records = bench.segment_in_one_process(cases, han_package, tmp_path / "out",
                              on_case=lambda r: kept.append(np.ones(2**20, np.uint8)))
    s = bench.growth_summary(records)
    assert s["python_growth_mb"] == pytest.approx(4.0, abs=0.3)  # cases 2 -> 6: four leaked MiB
