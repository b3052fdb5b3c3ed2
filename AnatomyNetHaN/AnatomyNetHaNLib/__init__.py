"""Qt-free logic of the AnatomyNetHaN module (importable and testable without the Slicer GUI)."""

from __future__ import annotations

from .logic import HeadNeckLogic

__all__ = ["HeadNeckLogic"]
