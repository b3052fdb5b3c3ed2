"""What the panel does as Slicer 5.6 to 5.10 users meet it: the follower stops when the module is left,
every action that needs a Python package checks for it first, the uncertainty map is never the input CT,
the modules declare the Slicer modules they use, Reload re-reads HeadSeg's own packages, and replacing a
segmentation keeps the segments HeadSeg did not make. Qt widgets cannot run here: their side is read
from the code (AST), the rest runs on a real MRML scene (slicer-core)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest
from test_module_contract import calls_in, method, panel_class

from headseg.labels import get_label_set

REPO = Path(__file__).resolve().parents[2]
ORBIT = get_label_set("orbit")


# -- the panel, read ----------------------------------------------------------------------------------
def test_leaving_the_module_stops_the_follower_and_its_timer():
    panel = panel_class()
    assert "self.stopFollowing" in calls_in(method(panel, "exit"))
    stop = calls_in(method(panel, "stopFollowing"))
    assert {"self._tableTimer.stop", "self._follower.stop"} <= set(stop)
    assert "self._observedSegmentation = None" in ast.unparse(method(panel, "stopFollowing")), \
        "enter() must find the segmentation unfollowed and follow it again"
    assert "self.selectSegmentEditorNode" in calls_in(method(panel, "enter"))


#: panel handlers -> the logic call that needs the panel's packages (pynrrd and Slicer's own)
PACKAGE_ACTIONS = {"onAddToTrainingSetButton": "self.logic.add_to_training_set",
                   "onCreateTableButton": "self.logic.refresh_volumes",
                   "onExportCsvButton": "self.logic.export_csv",
                   "onCompareButton": "self.logic.compare",
                   "onExportChangeCsvButton": "self.logic.export_changes_csv"}


@pytest.mark.parametrize("handler, action", sorted(PACKAGE_ACTIONS.items()))
def test_every_action_checks_its_packages_before_it_runs(handler, action):
    function = method(panel_class(), handler)
    source = ast.unparse(function)
    check = source.find("self.ensurePythonPackages(PANEL_REQUIREMENTS)")
    assert check >= 0, f"{handler} does not check the packages"
    assert check < source.find(action), f"{handler} runs {action} before checking the packages"
    apply = ast.unparse(method(panel_class(), "onApplyButton"))
    assert apply.index("self.ensurePythonPackages()") < apply.index("self.logic.start")


def test_every_handler_that_runs_headseg_code_is_listed():
    """A new button that calls the logic must be added above (and check its packages)."""
    panel = panel_class()
    exempt = {"onApplyButton", "onAddModelFolderButton"}  # the segmentation's own check; reads a JSON card
    handlers = {f.name for f in panel.body if isinstance(f, ast.FunctionDef)
                and f.name.startswith("on") and f.name.endswith("Button")}
    assert handlers - exempt == set(PACKAGE_ACTIONS)


def test_the_panel_requirements_cover_what_its_actions_import():
    """Third-party modules imported by the code behind the panel's actions, as pip names."""
    from headseg.slicer.runs import HEADSEG_REQUIREMENTS, PANEL_REQUIREMENTS

    pip_names = {"nrrd": "pynrrd", "SimpleITK": "SimpleITK", "scipy": "scipy", "numpy": "numpy"}
    files = ["headseg/io/segmentation.py", "headseg/io/images.py", "headseg/slicer/training_set.py",
             "headseg/slicer/measures.py", "headseg/measure/quality.py", "headseg/slicer/followup.py", "headseg/review/compare.py",
             "headseg/manifest.py", "headseg/measure/volumes.py"]
    needed = set()
    for name in files:
        for node in ast.walk(ast.parse((REPO / name).read_text(encoding="utf-8"))):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            needed |= {pip_names[m.split(".")[0]] for m in modules if m.split(".")[0] in pip_names}
    declared = {r.split(">")[0].split("=")[0] for r in PANEL_REQUIREMENTS}
    assert needed <= declared and "pynrrd" in needed
    assert set(PANEL_REQUIREMENTS) <= set(HEADSEG_REQUIREMENTS), "one version floor per package"


def test_the_result_is_followed_before_the_editor_shows_it():
    """The run measured its result; following it first means the editor's node change finds it followed
    (one measure at the end of a run, not three)."""
    calls = calls_in(method(panel_class(), "showResult"))
    assert calls.index("self.observeSegmentation") < calls.index("editor.setSegmentationNode")
    assert "self.observeSegmentation(run.segmentation_node, run.measures)" in ast.unparse(
        method(panel_class(), "showResult"))
    on_node = ast.unparse(method(panel_class(), "onEditorNodeModified"))
    assert "if segmentation is not self._observedSegmentation" in on_node


def test_the_input_selector_hides_uncertainty_maps():
    panel = panel_class()
    update = ast.unparse(method(panel, "updateInputSelector"))
    assert "inputVolumeSelector.sortFilterProxyModel()" in update
    assert "hiddenNodeIDs = self.logic.hidden_input_ids(slicer.mrmlScene)" in update
    initialize = ast.unparse(method(panel, "initializeParameterNode"))
    assert "self.updateInputSelector()" in initialize and "self.logic.default_input_volume" in initialize
    assert "self.logic.is_input_candidate(current)" in initialize
    assert "self.updateInputSelector()" in ast.unparse(method(panel, "showResult"))


def test_modules_declare_the_slicer_modules_they_use():
    from headseg.slicer.panel import MODULE_DEPENDENCIES

    source = ast.unparse(next(n for n in ast.parse((REPO / "headseg/slicer/panel.py").read_text(encoding="utf-8")).body
                              if isinstance(n, ast.FunctionDef) and n.name == "describe_module"))
    assert "parent.dependencies = list(MODULE_DEPENDENCIES)" in source
    assert set(MODULE_DEPENDENCIES) == {"Segmentations", "SegmentEditor", "Terminologies", "SampleData"}


def test_reload_forgets_headseg_and_the_modules_lib_before_slicers_reload():
    body = ast.unparse(method(panel_class(), "onReload"))
    assert body.index("forget_modules(('headseg', f'{self.moduleName}Lib'))") < body.index(
        "ScriptedLoadableModuleWidget.onReload(self)")


def test_forget_modules_makes_the_next_import_read_the_files_again(tmp_path, monkeypatch):
    from headseg.slicer.panel import forget_modules

    package = tmp_path / "DemoLib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "logic.py").write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import DemoLib.logic  # noqa: F401

    assert sys.modules["DemoLib.logic"].VALUE == 1
    (package / "logic.py").write_text("VALUE = 2  # edited\n")
    assert sorted(forget_modules(["DemoLib"])) == ["DemoLib", "DemoLib.logic"]
    import DemoLib.logic as again

    assert again.VALUE == 2
    assert "headseg" in sys.modules and not forget_modules(["headseg_not_loaded"])


# -- on a real scene ----------------------------------------------------------------------------------
@pytest.fixture
def ct_and_result(mrml_scene, small_phantom, tmp_path):
    from headseg.io import write_segmentation
    from headseg.slicer import segments
    from headseg.slicer.scene import node_from_volume

    ct = node_from_volume(small_phantom.image, "CT")
    path = write_segmentation(small_phantom.labels, ORBIT, tmp_path / "result.seg.nrrd")
    node = segments.import_segmentation_file(path, ORBIT, ct, name="CT orbit segmentation")
    return ct, node, path


def test_an_uncertainty_map_is_never_the_input(ct_and_result, small_phantom, mrml_scene):
    from headseg.slicer.logic import TaskLogic
    from headseg.slicer.review import add_uncertainty_node

    ct, node, _ = ct_and_result
    uncertainty = add_uncertainty_node(small_phantom.image.with_array(np.zeros(small_phantom.image.shape)), node)
    logic = TaskLogic()
    scene = mrml_scene.scene
    assert logic.hidden_input_ids(scene) == [uncertainty.GetID()]
    assert logic.default_input_volume(scene) is ct, "the map, added last, must not become the input"
    assert logic.is_input_candidate(ct) and not logic.is_input_candidate(uncertainty)


def test_replacing_a_segmentation_keeps_the_users_own_segments(ct_and_result, small_phantom):
    from headseg.slicer import segments

    ct, node, path = ct_and_result
    segmentation = node.GetSegmentation()
    own = segmentation.AddEmptySegment("tumour", "Tumour")
    assert own == "tumour"
    import slicer

    mask = np.zeros(small_phantom.image.shape, np.uint8)
    mask[2:5, 2:5, 2:5] = 1
    slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, "tumour", ct)
    segmentation.RemoveSegment("optic_nerve_left")  # the user deleted one of HeadSeg's segments
    again = segments.import_segmentation_file(path, ORBIT, ct, output_node=node)
    assert again is node
    ids = list(node.GetSegmentation().GetSegmentIDs())
    assert "tumour" in ids and len(ids) == 11, ids
    assert int(slicer.util.arrayFromSegmentBinaryLabelmap(node, "tumour", ct).sum()) == 27, "its voxels stay"
    nerve = slicer.util.arrayFromSegmentBinaryLabelmap(node, "optic_nerve_left", ct)
    assert int(nerve.sum()) == int((small_phantom.labels.array == ORBIT.by_key("optic_nerve_left").label).sum())


# -- the Extensions Index entry of Slicer 5.6 ---------------------------------------------------------------
#: Extensions/CMake/SlicerExtensionDescriptionSpec.cmake (v5.6.2): the 13 keywords of an .s4ext file
S4EXT_KEYWORDS = {"scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors",
                  "category", "iconurl", "description", "screenshoturls", "enabled", "status"}


def test_the_56_index_entry_says_what_the_cmake_and_the_json_entry_say():
    import json
    import re

    fields = {}
    for line in (REPO / "HeadSeg.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            keyword, _, value = line.partition(" ")
            assert keyword not in fields, f"{keyword} twice"
            fields[keyword] = value.strip()
    assert set(fields) == S4EXT_KEYWORDS
    entry = json.loads((REPO / "HeadSeg.json").read_text(encoding="utf-8"))
    assert (fields["scm"], fields["scmurl"], fields["scmrevision"]) == (
        entry["scm_type"], entry["scm_url"], entry["scm_revision"])
    assert fields["depends"].split() == entry["build_dependencies"]
    assert fields["category"] == entry["category"] and fields["enabled"] == "1"
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for keyword, variable in (("homepage", "HOMEPAGE"), ("contributors", "CONTRIBUTORS"), ("iconurl", "ICONURL"),
                              ("description", "DESCRIPTION"), ("screenshoturls", "SCREENSHOTURLS")):
        assert fields[keyword] == re.search(rf'set\(EXTENSION_{variable} "([^"]*)"\)', cmake).group(1), keyword
