"""MRML helpers shared by the Slicer modules, the tests and headless scripts.

``slicer`` is imported lazily inside the functions: the rest of ``headseg`` must import (and the CLI
must run) on machines without Slicer or the ``slicer-core`` wheel.

Inside the Slicer application the real scene and module logics are used. Elsewhere
:func:`init_headless_slicer` builds an equivalent scene with the ``slicer-core`` wheel; its set-up order
is the verified one of ``shared/SLICER_CORE.md`` (application logic before each module logic's scene,
every logic registered with the application logic, colour logic set last).
"""

from __future__ import annotations

import os
import tempfile
import types
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

__all__ = ["HeadlessSlicer", "in_slicer_app", "init_scene", "init_headless_slicer", "module_logic"]


def in_slicer_app() -> bool:
    """True when running inside the Slicer application (not the headless slicer-core wheel)."""
    try:
        import slicer
    except ImportError:
        return False
    return getattr(slicer, "app", None) is not None


@dataclass
class HeadlessSlicer:
    """A scene with its application logic and module logics (kept here so they stay alive)."""

    scene: Any
    app_logic: Any
    logics: Dict[str, Any] = field(default_factory=dict)
    temp_dir: str = ""

    def close(self) -> None:
        """Empty the scene (nodes, observers) so that it can be dropped without leaking."""
        self.scene.Clear(1)


_current: Optional[HeadlessSlicer] = None  # the last headless scene, so its logics are not collected


def init_headless_slicer(
    share_dir: Optional[str] = None,
    temp_dir: Optional[str] = None,
    install_shims: bool = True,
) -> HeadlessSlicer:
    """Build a new MRML scene with Colors, SubjectHierarchy, Volumes, (Terminologies,) Segmentations and
    Tables logics using the ``slicer-core`` wheel.

    ``share_dir`` is a folder with ``ColorFiles/`` and ``terminologies/`` (Slicer's share files, which the
    wheel lacks); without it a file-free colour logic is used and terminology look-ups are unavailable.
    With ``install_shims`` ``slicer.mrmlScene`` and ``slicer.modules.<name>.logic()`` are set, which
    ``slicer.util`` functions (arrayFromVolume, ...) rely on.
    """
    global _current
    import slicer
    from vtkmodules.vtkCommonCore import vtkCollection

    scene = slicer.vtkMRMLScene()
    app_logic = slicer.vtkSlicerApplicationLogic()
    temp_dir = temp_dir or tempfile.mkdtemp(prefix="headseg_slicer_")
    app_logic.SetTemporaryPath(temp_dir)
    if share_dir:
        share_dir = os.path.abspath(share_dir)
        # Slicer looks files up as HomeDirectory/ShareDirectory/<relative path>.
        app_logic.SetHomeDirectory(os.path.dirname(share_dir))
        app_logic.SetShareDirectory(os.path.basename(share_dir))
    app_logic.SetMRMLScene(scene)
    app_logic.SetSliceLogics(vtkCollection())
    app_logic.SetViewLogics(vtkCollection())

    # Colour files are only loadable with a share dir; the plain colour logic needs none.
    specs = [
        ("Colors", slicer.vtkSlicerColorLogic if share_dir else slicer.vtkMRMLColorLogic),
        ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ("Volumes", slicer.vtkSlicerVolumesLogic),
    ]
    if share_dir:  # without the JSON files this logic only logs errors
        specs.append(("Terminologies", slicer.vtkSlicerTerminologiesModuleLogic))
    specs += [
        ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
        ("Tables", slicer.vtkSlicerTablesLogic),
    ]
    logics: Dict[str, Any] = {}
    for name, logic_class in specs:
        logic = logic_class()
        if name == "Terminologies":
            logic.SetModuleShareDirectory(os.path.join(share_dir, "terminologies"))
        logic.SetMRMLApplicationLogic(app_logic)  # must come before SetMRMLScene
        logic.SetMRMLScene(scene)
        app_logic.SetModuleLogic(name, logic)
        logics[name] = logic
    app_logic.SetColorLogic(logics["Colors"])

    if install_shims:
        slicer.mrmlScene = scene
        slicer.modules = types.SimpleNamespace(
            **{
                name.lower(): types.SimpleNamespace(logic=(lambda logic=logic: logic))
                for name, logic in logics.items()
            }
        )
    _current = HeadlessSlicer(scene, app_logic, logics, temp_dir)
    return _current


def init_scene(share_dir: Optional[str] = None):
    """The MRML scene to work in: ``slicer.mrmlScene`` inside the Slicer application, otherwise a new
    headless scene built by :func:`init_headless_slicer` (which also sets ``slicer.mrmlScene``)."""
    if in_slicer_app():
        import slicer

        return slicer.mrmlScene
    return init_headless_slicer(share_dir=share_dir).scene


def module_logic(name: str):
    """A module logic by module name ("Segmentations", "Volumes", ...), in the app or headless."""
    import slicer

    modules = getattr(slicer, "modules", None)
    holder = getattr(modules, name.lower(), None) if modules is not None else None
    if holder is None:
        raise RuntimeError(
            f"The Slicer module logic {name!r} is not available. Inside Slicer, check that the module is "
            "loaded; headless, call headseg.slicer_glue.init_scene() first."
        )
    return holder.logic()
