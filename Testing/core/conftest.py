"""Fixtures shared by the core tests."""

from __future__ import annotations

import pytest
from model_factory import write_tiny_orbit_package


@pytest.fixture
def tiny_orbit_package(tmp_path):
    return write_tiny_orbit_package(tmp_path / "models" / "tiny-orbit-test")
