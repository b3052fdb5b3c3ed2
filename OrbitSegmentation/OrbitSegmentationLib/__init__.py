"""Qt-free logic of the OrbitSegmentation module (importable and testable without the Slicer GUI)."""

from __future__ import annotations

from .logic import OrbitLogic

__all__ = ["OrbitLogic"]
