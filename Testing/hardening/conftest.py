"""Fixtures of the hardening suite; prints what users would have seen over all CLI runs at the end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hardening_factory import TALLY, head_ct, write_random_han_package, write_threshold_han_package  # noqa: E402


@pytest.fixture(scope="session")
def han_package(tmp_path_factory):
    """A loadable tiny AnatomyNet package (random weights) for CLI runs."""
    return write_random_han_package(tmp_path_factory.mktemp("models") / "random-han-test")


@pytest.fixture(scope="session")
def threshold_package(tmp_path_factory):
    """The threshold card (no weights): use with ``model=ThresholdNet()`` in segment_volume."""
    return write_threshold_han_package(tmp_path_factory.mktemp("models") / "threshold-han-test")


@pytest.fixture
def ct():
    return head_ct()


@pytest.fixture
def tmpfs_dir(tmp_path):
    """A 1 MiB tmpfs (a disk that fills up); skipped where mounting is not allowed."""
    target = tmp_path / "tiny_disk"
    target.mkdir()
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    try:
        yield target
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)


def pytest_terminal_summary(terminalreporter):
    if TALLY.runs:
        s = TALLY.summary()
        terminalreporter.write_line(
            f"hardening CLI runs: {s['inputs_tried']} inputs tried, {s['crashes']} crashes (exit 1/signal), "
            f"{s['tracebacks_shown']} tracebacks shown to users"
        )
        out = os.environ.get("HEADSEG_HARDENING_REPORT")
        if out:
            TALLY.write(Path(out))
