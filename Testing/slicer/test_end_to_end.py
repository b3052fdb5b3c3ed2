"""The Segment button's path for real: phantom volume node -> temporary NRRD -> ``headseg segment`` child
process (the real CLI, a tiny random-weight model built here) -> progress -> imported segmentation node
with its volume table; plus cancel and a failure inside the child.

The model's random weights make the segmentation meaningless; what is checked is the plumbing:
geometry, names, numbers, scene state, messages.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")
pytest.importorskip("torch", reason="torch is needed by the headseg segment child process")

from headseg.errors import InputError, ModelPackageError  # noqa: E402
from headseg.labels import get_label_set  # noqa: E402
from headseg.measure.volumes import volume_table  # noqa: E402
from headseg.slicer import review, runs, scene, segments, tables  # noqa: E402

ORBIT = get_label_set("orbit")


def node_classes(mrml) -> list:
    return sorted(mrml.GetNthNode(n).GetClassName() for n in range(mrml.GetNumberOfNodes()))


def test_segment_button_path_end_to_end(mrml_scene, small_phantom, tiny_orbit_package):
    ct = scene.node_from_volume(small_phantom.image, "CT head")
    before = node_classes(mrml_scene.scene)
    run = runs.SegmentationRun("orbit", ct, model=str(tiny_orbit_package.path), device="cpu",
                               result_name="CT head orbit segmentation")
    run.start()
    work_dir = run.process.work_dir
    assert work_dir.is_dir() and node_classes(mrml_scene.scene) == before  # nothing added while running
    fractions = []
    state = run.state
    import time

    deadline = time.monotonic() + 120
    while not run.finished and time.monotonic() < deadline:  # what the widget's QTimer does
        for event in run.poll():
            if event.get("event") == "progress":
                fractions.append(float(event["fraction"]))
        time.sleep(0.05)
    state = run.state
    assert state == "succeeded", run.message
    assert fractions and fractions == sorted(fractions) and run.fraction == 1.0
    assert any("synthetic" in line for line in run.log)  # the CLI's warnings reach the panel's log
    assert not work_dir.exists(), "temporary input and output are removed after the import"

    node = run.segmentation_node
    assert node.GetName() == "CT head orbit segmentation"
    assert [node.GetSegmentation().GetSegment(s.key).GetName() for s in ORBIT] == [s.name for s in ORBIT]
    labelmap, warnings = segments.labelmap_from_segmentation(node, ORBIT, ct)
    assert warnings == []
    assert labelmap.same_geometry(small_phantom.image)  # the result lands on the input's grid
    assert set(np.unique(labelmap.array)) <= set(range(11))

    rows = tables.rows_from_table_node(run.table_node)
    expected = volume_table(labelmap, ORBIT)
    assert [(r.structure, r.side, r.voxels) for r in run.rows] == [(r.structure, r.side, r.voxels) for r in expected]
    assert sorted((r.structure, r.side, r.voxels) for r in rows) == sorted(
        (r.structure, r.side, r.voxels) for r in expected)
    # the child's uncertainty map came with the result: doubt in the table, most doubtful first
    assert run.uncertainty_node is not None and review.uncertainty_node_of(node) is run.uncertainty_node
    doubts = [r.doubt for r in rows if not np.isnan(r.doubt)]
    assert doubts and doubts == sorted(doubts, reverse=True)
    assert "done" in run.message.lower()
    added = node_classes(mrml_scene.scene)
    for name in before:
        added.remove(name)
    # the uncertainty map comes as a scalar volume with its display node and the shared colour table
    assert added == ["vtkMRMLColorTableNode", "vtkMRMLScalarVolumeDisplayNode", "vtkMRMLScalarVolumeNode",
                     "vtkMRMLSegmentationDisplayNode", "vtkMRMLSegmentationNode", "vtkMRMLTableNode"]


def test_cancel_leaves_the_scene_as_it_was(mrml_scene, small_phantom, tiny_orbit_package):
    import time

    ct = scene.node_from_volume(small_phantom.image, "CT")
    before = node_classes(mrml_scene.scene)
    run = runs.SegmentationRun("orbit", ct, model=str(tiny_orbit_package.path), device="cpu")
    run.start()
    deadline = time.monotonic() + 60
    while not any(e.get("event") == "progress" for e in run.poll()) and not run.finished:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    started = time.monotonic()
    run.cancel()
    assert run.wait(timeout=30) == "cancelled"
    assert time.monotonic() - started < 10
    assert "cancelled" in run.message.lower()
    assert run.segmentation_node is None
    assert node_classes(mrml_scene.scene) == before
    assert not run.process.work_dir.exists()


def test_a_failure_in_the_child_becomes_a_message(mrml_scene, small_phantom, tiny_orbit_package):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA; the test needs the 'no GPU' refusal")
    ct = scene.node_from_volume(small_phantom.image, "CT")
    before = node_classes(mrml_scene.scene)
    run = runs.SegmentationRun("orbit", ct, model=str(tiny_orbit_package.path), device="cuda")
    run.start()
    assert run.wait(timeout=120) == "failed"
    assert "CUDA" in run.message and "cpu" in run.message  # says what happened and what to do
    assert "Traceback" not in run.message
    assert node_classes(mrml_scene.scene) == before
    lines = len(run.log)
    assert run.poll() == [] and len(run.log) == lines  # polling a finished run changes nothing


def test_input_problems_are_refused_before_any_process(mrml_scene, small_phantom, tiny_orbit_package):
    with pytest.raises(InputError, match="No input volume"):
        runs.SegmentationRun("orbit", None, model=str(tiny_orbit_package.path)).start()
    mr_like = small_phantom.image.with_array(np.clip(small_phantom.image.array + 1000, 0, 600).astype(np.int16))
    mr = scene.node_from_volume(mr_like, "MR")
    with pytest.raises(InputError, match="Hounsfield"):
        runs.SegmentationRun("orbit", mr, model=str(tiny_orbit_package.path)).start()
    ct = scene.node_from_volume(small_phantom.image, "CT")
    with pytest.raises(ModelPackageError, match="segments task 'orbit', not 'han'"):
        runs.SegmentationRun("han", ct, model=str(tiny_orbit_package.path)).start()
    with pytest.raises(ModelPackageError):
        runs.SegmentationRun("orbit", ct, model=str(small_phantom and "/nonexistent/model")).start()


class _StartupEnvironment:
    """What ``slicer.app.startupEnvironment()`` returns in Slicer: a QProcessEnvironment (keys(), value())."""

    def __init__(self, variables):
        self.variables = dict(variables)

    def keys(self):
        return list(self.variables)

    def value(self, key):
        return self.variables[key]


class _SlicerApp:
    def __init__(self, variables):
        self._environment = _StartupEnvironment(variables)

    def startupEnvironment(self):
        return self._environment


def test_inside_slicer_the_child_starts_from_slicers_startup_environment(mrml_scene, small_phantom,
                                                                         tiny_orbit_package, monkeypatch):
    """As slicer.util.launchConsoleProcess does: the child gets the environment Slicer started with (read
    through the real slicer.util.startupEnvironment), not the one Slicer set up for itself."""
    import os

    import slicer

    monkeypatch.setenv("HEADSEG_SET_BY_SLICER_ITSELF", "1")
    startup = {k: v for k, v in os.environ.items() if k != "HEADSEG_SET_BY_SLICER_ITSELF"}
    assert runs.child_environment() is None, "outside the Slicer application the child inherits this process's"
    monkeypatch.setattr(slicer, "app", _SlicerApp(startup), raising=False)
    assert runs.child_environment() == startup
    ct = scene.node_from_volume(small_phantom.image, "CT")
    run = runs.SegmentationRun("orbit", ct, model=str(tiny_orbit_package.path), device="cpu")
    run.start()
    assert run.process.base_env == startup and "HEADSEG_SET_BY_SLICER_ITSELF" not in run.process.base_env
    state = run.wait(timeout=180)
    assert state == "succeeded", run.message
