"""The MRML scene and the nodes HeadSeg reads and writes: a headless scene for tests and batch runs,
volume nodes <-> :class:`headseg.geometry.Volume`, markups ROI boxes, the subject hierarchy, removal of
nodes with their helpers, and saving a segmentation with Slicer's own writer.

``slicer`` is imported inside the functions, so this module imports on machines without Slicer.
Inside the Slicer application the real scene and module logics are used. Elsewhere
:func:`init_headless_slicer` builds an equivalent scene with the ``slicer-core`` wheel; its set-up order
is the one that works with the wheel (application logic before each module logic's scene,
every logic registered with the application logic, colour logic set last).
"""

from __future__ import annotations

import os
import re
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.paths import PathLike

__all__ = [
    "PathLike", "HeadlessSlicer", "in_slicer_app", "init_headless_slicer", "init_scene", "module_logic",
    "volume_from_node", "node_from_volume", "roi_from_markups", "place_next_to", "remove_nodes",
    "write_segmentation_node", "safe_case_id",
]


Vector3 = Tuple[float, float, float]


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
        if name == "Terminologies" and share_dir:
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
            "loaded; headless, call headseg.slicer.scene.init_scene() first."
        )
    return holder.logic()


def volume_from_node(volume_node, allow_labelmap: bool = False) -> Volume:
    """The voxels and world geometry of a scalar volume node as a :class:`Volume` (LPS).

    A parent linear transform is applied (the geometry is where the user sees the image); a non-linear
    one is refused because a voxel grid cannot represent it.
    """
    import slicer
    import vtk

    if volume_node is None:
        raise InputError("No input volume is selected. Load a CT image and select it as the input volume.")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode"):
        raise InputError(f"'{volume_node.GetName()}' is not a scalar (grey-scale) volume; select a CT image.")
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode") and not allow_labelmap:
        raise InputError(f"'{volume_node.GetName()}' is a label map, not a CT image. Select the CT as input.")
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise InputError(f"The volume '{volume_node.GetName()}' has no voxels (was loading interrupted?).")
    if image.GetNumberOfScalarComponents() != 1:
        raise InputError(
            f"The volume '{volume_node.GetName()}' has {image.GetNumberOfScalarComponents()} components per "
            "voxel (colour or vector image); a grey-scale CT is expected."
        )
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    transform = volume_node.GetParentTransformNode()
    if transform is not None:
        if not transform.IsTransformToWorldLinear():
            raise InputError(
                f"The volume '{volume_node.GetName()}' is under a non-linear transform. Harden the transform "
                "(Data module, right-click > Harden transform) before segmenting."
            )
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)
        ijk_to_ras = slicer.util.arrayFromVTKMatrix(to_world) @ ijk_to_ras
    axes = ijk_to_ras[:3, :3] / np.linalg.norm(ijk_to_ras[:3, :3], axis=0)
    if not np.allclose(axes.T @ axes, np.eye(3), atol=1e-4):
        raise InputError(
            f"The volume '{volume_node.GetName()}' has sheared voxel axes (a shearing transform?). "
            "Resample it to a regular grid first."
        )
    return Volume.from_ijk_to_ras(slicer.util.arrayFromVolume(volume_node).copy(), ijk_to_ras)


def node_from_volume(volume: Volume, name: str, node_class: str = "vtkMRMLScalarVolumeNode"):
    """Add ``volume`` to the scene as a new volume node (``vtkMRMLLabelMapVolumeNode`` for label maps)."""
    import slicer

    array = np.ascontiguousarray(volume.array)
    node = slicer.util.addVolumeFromArray(array, volume.ijk_to_ras, name, node_class)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def roi_from_markups(roi_node) -> Optional[Tuple[Vector3, Vector3]]:
    """``(center_lps, size_mm)`` of the world-axis-aligned box that encloses a markups ROI, or None.

    A rotated ROI is replaced by its enclosing box: the model restricts its search to an axis-aligned
    region, and a slightly larger box is safer than a clipped one.
    """
    if roi_node is None:
        return None
    if roi_node.GetNumberOfControlPoints() == 0:
        raise InputError(f"The box '{roi_node.GetName()}' has not been placed yet; place it or choose none.")
    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)
    lower = np.array(bounds[0::2], dtype=float)
    upper = np.array(bounds[1::2], dtype=float)
    size = upper - lower
    if not np.all(np.isfinite(size)) or np.any(size <= 0):
        raise InputError(f"The box '{roi_node.GetName()}' is empty; resize it around the region to segment.")
    center_ras = (lower + upper) / 2.0
    center_lps = (-center_ras[0], -center_ras[1], center_ras[2])
    return (tuple(float(c) for c in center_lps), tuple(float(s) for s in size))  # type: ignore[return-value]


def place_next_to(node, reference_node) -> None:
    """Put ``node`` in the same subject-hierarchy folder/study as ``reference_node``."""
    import slicer

    scene = reference_node.GetScene()
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    reference_item = hierarchy.GetItemByDataNode(reference_node)
    if not reference_item:
        return
    parent = hierarchy.GetItemParent(reference_item)
    item = hierarchy.GetItemByDataNode(node)
    if item:
        hierarchy.SetItemParent(item, parent)
    else:  # without the application's subject-hierarchy plugins nodes get no item automatically
        hierarchy.CreateItem(parent, node)


def remove_nodes(nodes: Iterable[Any]) -> None:
    """Remove nodes with their display, storage and colour helper nodes (removing a node alone leaves
    its display nodes behind)."""
    for node in nodes:
        if node is None:
            continue
        scene = node.GetScene()
        if scene is None:
            continue
        helpers = []
        if hasattr(node, "GetNumberOfDisplayNodes"):
            for n in range(node.GetNumberOfDisplayNodes()):
                display = node.GetNthDisplayNode(n)
                helpers.append(display)
                color = display.GetColorNode() if display is not None and hasattr(display, "GetColorNode") else None
                if color is not None and not color.GetSingletonTag() and color.GetName().startswith(node.GetName()):
                    helpers.append(color)
        if hasattr(node, "GetStorageNode"):
            helpers.append(node.GetStorageNode())
        scene.RemoveNode(node)
        for helper in helpers:
            if helper is not None and helper.GetScene() is not None:
                scene.RemoveNode(helper)


def write_segmentation_node(segmentation_node, path: PathLike) -> Path:
    """Save a segmentation node as .seg.nrrd with Slicer's own writer (full reference extent)."""
    import slicer

    path = Path(path)
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    if hasattr(storage, "SetCropToMinimumExtent"):
        storage.SetCropToMinimumExtent(False)
    if not storage.WriteData(segmentation_node):
        raise InputError(f"Slicer could not write {path}; check that the folder is writable.")
    return path


def safe_case_id(text: str) -> str:
    """A file-name-safe case ID from a node name ("CT head 3/1" -> "CT_head_3_1")."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._") or "case"
