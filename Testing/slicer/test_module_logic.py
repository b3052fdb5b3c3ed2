"""The two modules' Qt-free Lib logic (what their panels call), on a real MRML scene."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")

REPO = Path(__file__).resolve().parents[2]
for _module_name in ("OrbitSegmentation", "AnatomyNetHaN"):
    sys.path.insert(0, str(REPO / _module_name))

from AnatomyNetHaNLib import HeadNeckLogic  # noqa: E402
from OrbitSegmentationLib import OrbitLogic  # noqa: E402

from headseg.errors import InputError, ModelPackageError  # noqa: E402
from headseg.io import write_segmentation  # noqa: E402
from headseg.labels import get_label_set  # noqa: E402
from headseg.slicer import scene, segments, tables  # noqa: E402
from headseg.slicer.logic import TaskLogic  # noqa: E402

ORBIT = get_label_set("orbit")
PDDCA = get_label_set("pddca")


def test_model_menu_lists_task_models_and_refuses_the_wrong_task(tiny_orbit_package, tiny_han_package):
    extra = [tiny_orbit_package.path.parent, tiny_han_package.path.parent]
    orbit_models = OrbitLogic().models(extra)
    assert (tiny_orbit_package.summary(), str(tiny_orbit_package.path)) in orbit_models
    assert all("tiny-han" not in label for label, _ in orbit_models)
    assert OrbitLogic().add_model_folder(tiny_orbit_package.path)[1] == str(tiny_orbit_package.path)
    with pytest.raises(ModelPackageError, match="segments task 'han', not 'orbit'"):
        OrbitLogic().add_model_folder(tiny_han_package.path)
    with pytest.raises(ModelPackageError, match="no model.json"):
        HeadNeckLogic().add_model_folder(tiny_han_package.path.parent)


def test_organ_checklist_follows_the_model(tiny_han_package, tiny_orbit_package):
    organs = HeadNeckLogic().organs(str(tiny_han_package.path))
    assert organs == [(s.key, s.name) for s in PDDCA]  # the model's label set, in label order
    with pytest.raises(ModelPackageError):
        HeadNeckLogic().organs(str(tiny_orbit_package.path))


def test_orbit_panel_numbers_and_review_list(mrml_scene, small_phantom, tmp_path):
    ct = scene.node_from_volume(small_phantom.image, "CT")
    node = segments.import_segmentation_file(write_segmentation(small_phantom.labels, ORBIT, tmp_path / "s.seg.nrrd"),
                                         ORBIT, ct)
    logic = OrbitLogic()
    assert logic.refresh_volumes(node).table_node is None, "no table node unless asked"
    made = logic.refresh_volumes(node, create_table=True)
    table, summary = made.table_node, made.summary
    assert logic.refresh_volumes(node).table_node is table, "the same table is updated, not a new one per edit"
    counts = np.bincount(small_phantom.labels.array.ravel(), minlength=11)
    voxel_cm3 = float(np.prod(small_phantom.image.spacing)) / 1000.0
    right, left = counts[1:5].sum() * voxel_cm3, counts[6:10].sum() * voxel_cm3
    assert summary == f"Extraocular muscles: right {right:.2f} cm3, left {left:.2f} cm3, left/right {left / right:.2f}."
    assert logic.reviewable_structures(node) == [(s.key, s.name) for s in ORBIT]
    assert logic.label_set(node) is ORBIT
    with pytest.raises(InputError, match="dataset folder"):
        logic.add_to_training_set(ct, node, "", ["optic_nerve_left"])


def test_head_neck_summary_names_empty_organs(mrml_scene, small_phantom, tmp_path):
    ct = scene.node_from_volume(small_phantom.image, "CT")
    labels = np.zeros(small_phantom.image.shape, np.uint8)
    labels[5:10, 20:30, 20:30] = PDDCA.by_key("mandible").label
    labelmap = small_phantom.image.with_array(labels)
    node = segments.import_segmentation_file(write_segmentation(labelmap, PDDCA, tmp_path / "o.seg.nrrd"), PDDCA, ct,
                                         keep=["mandible", "brainstem"])
    logic = HeadNeckLogic()
    assert logic.label_set(node) is PDDCA  # from the node attribute set on import
    summary = logic.refresh_volumes(node).summary
    assert summary == "1 organ(s) segmented; empty: brainstem."
    case = logic.add_to_training_set(ct, node, tmp_path / "data", ["mandible", "brainstem"])
    assert any("brainstem" in w for w in case.warnings)  # reviewed but empty is recorded, and said


def test_head_neck_end_to_end_keeps_only_the_chosen_organs(mrml_scene, small_phantom, tiny_han_package):
    pytest.importorskip("torch")
    ct = scene.node_from_volume(small_phantom.image, "CT")
    run = HeadNeckLogic().start(ct, model=str(tiny_han_package.path), device="cpu",
                                structures=["mandible", "parotid_left"])
    state = run.wait(timeout=180)
    assert state == "succeeded", run.message
    node = run.segmentation_node
    assert node.GetName() == "CT organs at risk"
    assert sorted(node.GetSegmentation().GetSegmentIDs()) == ["mandible", "parotid_left"]
    rows = tables.rows_from_table_node(run.table_node)
    assert sorted((r.structure, r.side) for r in rows) == [("mandible", ""), ("parotid", "left")]  # by doubt
    assert [(r.structure, r.side) for r in run.rows] == [("mandible", ""), ("parotid", "left")]  # label order
    with pytest.raises(InputError, match="at least one"):
        HeadNeckLogic().start(ct, model=str(tiny_han_package.path), structures=[])


def test_segmentations_not_imported_by_headseg_read_as_the_tasks_label_set():
    """Without a label-set attribute a segmentation follows the task's label set (TASK_LABEL_SETS)."""
    assert OrbitLogic().label_set(None).name == "orbit"
    assert HeadNeckLogic().label_set(None).name == "pddca"
    assert TaskLogic().label_set(None) is None  # no task, no guess
