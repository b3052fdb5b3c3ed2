"""Static contract of the two Slicer modules, checked without the Slicer application.

* each .ui parses; every ``self.ui.<name>`` the widget uses exists there with the expected class, and
  every method the widget calls on it belongs to that class; the same for the shared panel
  (``headseg/slicer/panel.py`` with the mixins it is composed of), against BOTH modules' .ui files;
* every push button's ``clicked`` signal is connected to a handler that the widget or the shared panel
  defines, every connected signal exists on its widget class, and parameter-node bindings match the
  wrapper's fields;
* each widget puts the shared panel first among its bases and sets every class attribute it needs;
* the CMake files list existing files and every module file is listed;
* module files parse as Python 3.9 (Slicer 5.6/5.8), the modules never import each other, and their
  Lib packages import without Qt.
"""

from __future__ import annotations

import ast
import copy
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
MODULES = ("OrbitSegmentation", "AnatomyNetHaN")

# Methods/properties/signals the widgets use, per widget class (from the Qt 5 and Slicer API docs).
COMMON = {"enabled", "visible", "toolTip", "hide", "show", "setStyleSheet", "connect", "text"}
API = {
    "QPushButton": COMMON | {"clicked(bool)"},
    "QComboBox": COMMON | {"clear", "addItem", "count", "currentIndex", "currentText", "itemData", "findData",
                           "setCurrentIndex", "currentIndexChanged(int)"},
    "QProgressBar": COMMON | {"setRange", "setValue"},
    "QLabel": COMMON,
    "QPlainTextEdit": COMMON | {"clear", "appendPlainText"},
    "QListWidget": COMMON | {"clear", "addItem", "count", "item"},
    "ctkCollapsibleButton": COMMON | {"collapsed"},
    "ctkDirectoryButton": COMMON | {"directory", "directoryChanged(QString)"},
    "qMRMLNodeComboBox": COMMON | {"currentNode", "setCurrentNode", "currentNodeChanged(vtkMRMLNode*)",
                                   "sortFilterProxyModel"},
    # qMRMLTableView.h (v5.6.2 and main): its own selectionChanged() signal; selectionModel and
    # clearSelection are QAbstractItemView's
    "qMRMLTableView": COMMON | {"setMRMLTableNode", "resizeColumnsToContents", "setMRMLScene", "selectionChanged()",
                                "selectionModel", "clearSelection"},
    "QCheckBox": COMMON | {"checked", "toggled(bool)"},
    # ctkSliderWidget: value property and valueChanged(double), as Slicer's editor effects connect it
    "ctkSliderWidget": COMMON | {"value", "valueChanged(double)"},
    # qMRMLSegmentEditorWidget.h (v5.6.2 and main): turnOffLightboxes() is deprecated (a no-op) from 5.10 on
    "qMRMLSegmentEditorWidget": COMMON | {
        "setMaximumNumberOfUndoStates", "setMRMLScene", "setMRMLSegmentEditorNode", "installKeyboardShortcuts",
        "uninstallKeyboardShortcuts", "updateWidgetFromMRML", "setActiveEffect", "removeViewObservations",
        "setSegmentationNode", "setSourceVolumeNode", "setMasterVolumeNode", "updateEffectList",
        "turnOffLightboxes"},
}
NAME_SUFFIX_CLASS = {
    "Selector": "qMRMLNodeComboBox", "ComboBox": "QComboBox", "ProgressBar": "QProgressBar",
    "Label": "QLabel", "TextEdit": "QPlainTextEdit", "ListWidget": "QListWidget",
    "CheckBox": "QCheckBox", "Slider": "ctkSliderWidget", "CollapsibleButton": "ctkCollapsibleButton", "DirectoryButton": "ctkDirectoryButton",
    "TableView": "qMRMLTableView", "EditorWidget": "qMRMLSegmentEditorWidget", "Button": "QPushButton",
}


def ui_widgets(module: str) -> dict:
    tree = ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui")
    widgets = {}
    for widget in tree.iter("widget"):
        name = widget.get("name")
        assert name not in widgets, f"{module}.ui: duplicate widget name {name}"
        widgets[name] = widget
    return widgets


def module_tree(module: str) -> ast.Module:
    return ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"), feature_version=(3, 9))


def widget_class(tree: ast.Module, module: str) -> ast.ClassDef:
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}Widget")


PANEL_FILE = REPO / "headseg" / "slicer" / "panel.py"
PANEL_CLASS = "SegmentationPanelMixin"
#: the modules' shared self-test (ModuleSelfTestMixin), which also imports Slicer only inside functions
SELF_TEST_FILE = REPO / "headseg" / "slicer" / "self_test.py"


def panel_parts() -> list:
    """(file, class) of the shared panel's class and of every base it inherits from ``headseg.slicer``
    (the mixins it is composed of, each in its own file): the panel first, then its bases breadth-first,
    each once -- the order Python's MRO gives these mixins, which all stand on one common base."""
    parts, todo, seen = [], [(PANEL_FILE, PANEL_CLASS)], set()
    while todo:
        path, name = todo.pop(0)
        if (path, name) in seen:
            continue
        seen.add((path, name))
        tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
        cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == name)
        parts.append((path, cls))
        imported = {a.asname or a.name: n.module for n in tree.body if isinstance(n, ast.ImportFrom)
                    for a in n.names}
        local = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in local:
                todo.append((path, base.id))
            elif isinstance(base, ast.Name) and str(imported.get(base.id)).startswith("headseg.slicer."):
                todo.append((REPO / (imported[base.id].replace(".", "/") + ".py"), base.id))
    return parts


def panel_files() -> list:
    """Every file of the shared panel (its class's file and its mixins' files) and of the shared self-test."""
    return sorted({path for path, _ in panel_parts()} | {SELF_TEST_FILE})


def panel_class() -> ast.ClassDef:
    """The shared widget behaviour both modules' widgets inherit: the panel's class with the bodies of the
    mixins it is composed of, read as one class (a method defined twice among them would be ambiguous)."""
    parts = panel_parts()
    merged = copy.copy(parts[0][1])
    merged.body = [node for _, cls in parts for node in cls.body]
    names = [n.name for n in merged.body if isinstance(n, ast.FunctionDef)]
    assert len(names) == len(set(names)), f"defined twice among the panel's parts: {sorted(n for n in names if names.count(n) > 1)}"
    return merged


def _is_self_ui(node) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "ui" and isinstance(node.value, ast.Name) \
        and node.value.id == "self"


def ui_uses(cls: ast.ClassDef):
    """(widget name, attribute used on it) for every ``self.ui.<name>.<attr>`` and bare ``self.ui.<name>``;
    ``editor = self.ui.<name>`` followed by ``editor.<attr>`` in the same method counts as a use too."""
    uses = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and _is_self_ui(node.value):
            uses.append(node.attr)
    pairs = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and _is_self_ui(node.value.value):
            pairs.append((node.value.attr, node.attr))
    for function in ast.walk(cls):
        if not isinstance(function, ast.FunctionDef):
            continue
        aliases = {}
        for node in ast.walk(function):
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name) \
                    and isinstance(node.value, ast.Attribute) and _is_self_ui(node.value.value):
                aliases[node.targets[0].id] = node.value.attr
        for node in ast.walk(function):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases:
                pairs.append((aliases[node.value.id], node.attr))
    return uses, pairs


def connections(cls: ast.ClassDef):
    """(widget name, signal, handler method name) of every ``self.ui.<w>.connect("sig", self.<handler>)``."""
    found = []
    for node in ast.walk(cls):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "connect":
            target = node.func.value
            if isinstance(target, ast.Attribute) and _is_self_ui(target.value) and len(node.args) == 2:
                signal = node.args[0].value
                handler = node.args[1].attr if isinstance(node.args[1], ast.Attribute) else None
                found.append((target.attr, signal, handler))
    return found


def methods_of(cls: ast.ClassDef) -> set:
    return {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}


def class_attributes(cls: ast.ClassDef) -> dict:
    """Class-level ``name = value`` assignments (value as an AST node)."""
    return {n.targets[0].id: n.value for n in cls.body
            if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name)}


@pytest.mark.parametrize("module", MODULES)
def test_ui_parses_with_a_qmrmlwidget_root_and_known_classes(module):
    tree = ET.parse(REPO / module / "Resources" / "UI" / f"{module}.ui")
    root = tree.getroot().find("widget")
    assert root.get("class") == "qMRMLWidget" and root.get("name") == module
    custom = {c.findtext("class") for c in tree.getroot().iter("customwidget")}
    for widget in tree.iter("widget"):
        cls = widget.get("class")
        assert cls.startswith("Q") or cls in custom, f"{cls} is used but not declared as a custom widget"
    # every MRML widget receives the scene from the top-level widget (the table view too: its Plot action
    # needs it, qMRMLTableView::plotSelection) -- except the segment editor, which the panel gives the scene
    # itself, after its parameter node, as Slicer's SegmentEditor.py does
    mrml_widgets = {n for n, w in ui_widgets(module).items()
                    if w.get("class").startswith("qMRML") and w.get("class") != "qMRMLWidget"}
    wired = {c.findtext("receiver") for c in tree.getroot().iter("connection")
             if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
             and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert wired == mrml_widgets - {"segmentEditorWidget"}
    assert "volumeTableView" in wired


def check_ui_uses(cls: ast.ClassDef, source: str, module: str) -> None:
    """Every ``self.ui.<name>`` used in ``cls`` is in ``module``'s .ui with the class its name promises,
    and every attribute used on it is an API of that class."""
    widgets = ui_widgets(module)
    names, pairs = ui_uses(cls)
    for name in set(names):
        assert name in widgets, f"{source} uses self.ui.{name}, which is not in {module}.ui"
        actual = widgets[name].get("class")
        expected = next(c for suffix, c in NAME_SUFFIX_CLASS.items() if name.lower().endswith(suffix.lower()))
        assert actual == expected, f"self.ui.{name} is a {actual}, the name promises a {expected}"
    for name, attribute in pairs:
        cls_name = widgets[name].get("class")
        assert attribute in API[cls_name], f"{source}: self.ui.{name}.{attribute}: not an API of {cls_name}"


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_name_the_widget_uses_exists_with_the_expected_class(module):
    check_ui_uses(widget_class(module_tree(module), module), f"{module}.py", module)


@pytest.mark.parametrize("module", MODULES)
def test_every_ui_name_the_shared_panel_uses_exists_in_both_modules_ui(module):
    panel = panel_class()
    names, pairs = ui_uses(panel)
    assert len(set(names)) >= 10 and pairs, "the shared panel uses (almost) no self.ui names?"
    assert ("segmentEditorWidget", "setMRMLSegmentEditorNode") in pairs, "aliases (editor = self.ui...) are seen"
    check_ui_uses(panel, "headseg/slicer/panel*.py", module)


@pytest.mark.parametrize("module", MODULES)
def test_every_button_is_connected_to_an_existing_handler(module):
    widgets = ui_widgets(module)
    cls, panel = widget_class(module_tree(module), module), panel_class()
    methods = methods_of(cls) | methods_of(panel)
    links = connections(cls) + connections(panel)
    buttons = {n for n, w in widgets.items() if w.get("class") == "QPushButton"}
    clicked = {w for w, signal, _ in links if signal.startswith("clicked(")}
    assert buttons == clicked, f"buttons without handler: {buttons - clicked}"
    for name, signal, handler in links:
        assert handler in methods, f"{name}.{signal} -> {handler}, which neither {module}Widget nor {PANEL_CLASS} defines"
        assert signal in API[widgets[name].get("class")], f"{name} has no signal {signal}"


@pytest.mark.parametrize("module", MODULES)
def test_widget_inherits_the_shared_panel_first_and_sets_what_it_needs(module):
    tree = module_tree(module)
    cls, panel = widget_class(tree, module), panel_class()
    bases = [b.id for b in cls.bases if isinstance(b, ast.Name)]
    assert bases == [PANEL_CLASS, "ScriptedLoadableModuleWidget", "VTKObservationMixin"], \
        "the shared panel must come first so that its setup/enter/exit/cleanup are the ones Slicer calls"
    imports = {(n.module, a.name) for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
    assert ("headseg.slicer.panel", PANEL_CLASS) in imports
    required = {name for name, value in class_attributes(panel).items()
                if isinstance(value, ast.Constant) and value.value is None}
    assert required >= {"logicClass", "segmentButtonText", "noModelMessage", "datasetFolderSetting"}
    attributes = class_attributes(cls)
    assert required <= set(attributes), f"{module}Widget does not set {required - set(attributes)}"
    assert isinstance(attributes["logicClass"], ast.Name) and attributes["logicClass"].id == f"{module}Logic"
    for name in required - {"logicClass"}:
        value = attributes[name]
        if name in {"segmentButtonText", "noModelMessage"}:  # shown to users: translated in the module's context
            assert isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "_", \
                f"{module}Widget.{name} is not wrapped in _() for translation"
            value = value.args[0]
        assert isinstance(value, ast.Constant) and value.value, f"{name} is empty"
    # the widget adds or overrides only hooks; it does not re-implement the shared panel's behaviour
    overridden = methods_of(cls) & methods_of(panel)
    assert overridden <= {"startOptions", "onModelChanged"}, f"re-implemented in {module}Widget: {overridden}"
    # the two modules never share a settings key for their dataset folders
    other = next(m for m in MODULES if m != module)
    other_attrs = class_attributes(widget_class(module_tree(other), other))
    assert attributes["datasetFolderSetting"].value != other_attrs["datasetFolderSetting"].value


@pytest.mark.parametrize("module", MODULES)
def test_parameter_bindings_match_the_parameter_node_and_node_types(module):
    tree = module_tree(module)
    wrapper = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == f"{module}ParameterNode")
    fields = {n.target.id: n.annotation.id for n in wrapper.body if isinstance(n, ast.AnnAssign)}
    bound = {}
    for widget in ui_widgets(module).values():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = widget
    assert set(bound) == set(fields)
    for parameter, widget in bound.items():
        node_types = [s.text for s in widget.iter("string") if s.text and s.text.startswith("vtkMRML")]
        assert node_types == [fields[parameter]], f"{parameter}: selector shows {node_types}"


def _cmake_list(text: str, variable: str) -> list:
    match = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set"
    return match.group(1).split()


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_every_file_and_only_existing_ones(module):
    folder = REPO / module
    text = (folder / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f"set(MODULE_NAME {module})" in text
    listed = [item.replace("${MODULE_NAME}", module) for item in
              _cmake_list(text, "MODULE_PYTHON_SCRIPTS") + _cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    for item in listed:
        assert (folder / item).is_file(), f"{module}/CMakeLists.txt lists missing {item}"
    shipped = {p.relative_to(folder).as_posix() for p in folder.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts and p.parts[len(folder.parts)] != "Testing"
               and p.name != "CMakeLists.txt"}
    assert shipped == set(listed), f"not listed: {shipped - set(listed)}"
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert "add_subdirectory(Testing)" in text
    assert (folder / "Testing" / "CMakeLists.txt").read_text(encoding="utf-8").strip() == "add_subdirectory(Python)"
    testing = (folder / "Testing" / "Python" / "CMakeLists.txt").read_text(encoding="utf-8")
    scripts = re.findall(r"slicer_add_python_unittest\(SCRIPT (\S+)\)", testing)
    assert scripts and all((folder / "Testing" / "Python" / s).is_file() for s in scripts)
    python_tests = {p.name for p in (folder / "Testing" / "Python").glob("*.py")}
    assert python_tests == set(scripts)


def test_top_level_cmake_describes_the_extension():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert "project(HeadSeg)" in text
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(r"set\(" + key + r" ", text), key
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text and 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert "find_package(Slicer REQUIRED)" in text and "include(${Slicer_USE_FILE})" in text
    subdirs = re.findall(r"add_subdirectory\((\w+)\)", text)
    assert subdirs == list(MODULES)
    assert all((REPO / d / "CMakeLists.txt").is_file() for d in subdirs)
    assert re.search(r"install\(DIRECTORY \$\{HEADSEG_PACKAGE_DIR\}\s+DESTINATION \$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}",
                     text)
    assert "set(HEADSEG_PACKAGE_DIR ${CMAKE_CURRENT_SOURCE_DIR}/headseg)" in text and (REPO / "headseg").is_dir()
    assert text.index("include(${Slicer_EXTENSION_GENERATE_CONFIG})") < text.index("include(${Slicer_EXTENSION_CPACK})")
    icon_name = text.split("EXTENSION_ICONURL")[1].split('"')[1].rsplit("/", 1)[1]
    assert (REPO / icon_name).is_file()


RAW_PREFIX = "https://raw.githubusercontent.com/headseg/SlicerHeadSeg/main/"


def test_every_screenshot_url_names_a_file_of_the_repository():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    urls = re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]*)"\)', text).group(1).split()
    assert urls, "no screenshot listed (then remove EXTENSION_SCREENSHOTURLS instead)"
    for url in urls:
        assert url.startswith(RAW_PREFIX), url
        path = REPO / url[len(RAW_PREFIX):]
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{url}: no such image in the repository"
    assert (REPO / "tools" / "make_slicer_images.py").is_file(), "the screenshot can be made again"


# Slicer/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json (Slicer 5.8 and main): its properties and
# required keys (additionalProperties is false)
CATALOG_PROPERTIES = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                      "build_subdirectory", "enabled", "tier"}
CATALOG_REQUIRED = {"$schema", "category", "scm_url"}


def test_extensions_index_entry_matches_the_catalog_schema_and_the_cmake_description():
    import json

    entry = json.loads((REPO / "HeadSeg.json").read_text(encoding="utf-8"))
    assert entry["$schema"].startswith(
        "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.1.json")
    assert CATALOG_REQUIRED <= set(entry) <= CATALOG_PROPERTIES
    assert entry["scm_type"] in ("git", "local") and 1 <= entry["tier"] <= 5 and isinstance(entry["enabled"], bool)
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert f'set(EXTENSION_CATEGORY "{entry["category"]}")' in cmake
    depends = re.search(r'set\(EXTENSION_DEPENDS "([^"]*)"\)', cmake).group(1).split()
    assert entry["build_dependencies"] == depends == ["PyTorch"]
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"#]*)', cmake).group(1)
    assert entry["scm_url"] == homepage + ".git"


def test_the_licence_file_is_the_apache_2_licence_the_project_declares():
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text[:200] and "Version 2.0, January 2004" in text[:200]
    assert "END OF TERMS AND CONDITIONS" in text
    assert 'license = { text = "Apache-2.0" }' in (REPO / "pyproject.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", [f"{m}/Resources/Icons/{m}.png" for m in MODULES] + ["HeadSeg.png"])
def test_icons_are_128_pixel_pngs(path):
    data = (REPO / path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)


@pytest.mark.parametrize("module", MODULES)
def test_module_sources_are_python39_and_independent(module):
    other = next(m for m in MODULES if m != module)
    for path in (REPO / module).rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module.split(".")[0])
        assert not imported & {other, f"{other}Lib"}, f"{path} imports the other module"
        if f"{module}Lib" in path.parts:
            assert not imported & {"qt", "ctk", "slicer"}, f"{path}: Lib code must be Qt-free"


def imports_outside_functions(node) -> set:
    """Top-level names imported by ``node`` and its children, not counting function bodies (run later)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return set()
    if isinstance(node, ast.Import):
        return {a.name.split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom):
        return {node.module.split(".")[0]} if node.module and not node.level else set()
    return set().union(*(imports_outside_functions(child) for child in ast.iter_child_nodes(node)))


def test_shared_panel_is_python39_and_imports_qt_and_slicer_only_inside_functions():
    files = panel_files()
    assert PANEL_FILE in files and SELF_TEST_FILE in files and len(files) >= 3, files
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
        eager = imports_outside_functions(tree)
        assert eager and not eager & {"qt", "ctk", "slicer", "vtk"}, \
            f"{path.relative_to(REPO).as_posix()} imports {eager} at import time"
    code = ("import sys, headseg.slicer.panel as p, headseg.slicer.self_test as t; "
            "assert not {'qt', 'ctk', 'slicer', 'vtk', 'torch'} & set(sys.modules), sorted(sys.modules); "
            "assert p.SegmentationPanelMixin.segmentButtonText is None and t.ModuleSelfTestMixin.sampleTask is None")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("module", MODULES)
def test_lib_imports_without_qt_or_slicer(module):
    code = (f"import sys; sys.path.insert(0, {str(REPO / module)!r}); import {module}Lib; "
            "assert 'qt' not in sys.modules and 'slicer' not in sys.modules and 'torch' not in sys.modules")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_module_resources_do_not_collide_in_the_shared_install_folder():
    """Slicer installs every scripted module's resources into one qt-scripted-modules/Resources tree."""
    listed = []
    for module in MODULES:
        text = (REPO / module / "CMakeLists.txt").read_text(encoding="utf-8")
        listed += [item.replace("${MODULE_NAME}", module) for item in _cmake_list(text, "MODULE_PYTHON_RESOURCES")]
    assert len(listed) == len(set(listed))


def method(cls: ast.ClassDef, name: str) -> ast.FunctionDef:
    return next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == name)


def calls_in(function: ast.FunctionDef) -> list:
    """Dotted names of the calls in ``function`` in source order ("self.ui.segmentEditorWidget.setMRMLScene")."""
    found = []
    for node in ast.walk(function):
        if isinstance(node, ast.Call):
            found.append((node.lineno, node.col_offset, ast.unparse(node.func)))
    return [name for _, _, name in sorted(found)]


def test_the_editor_follows_slicers_segment_editor_life_cycle():
    """What Modules/Scripted/SegmentEditor/SegmentEditor.py does (v5.6.2 and main), the panel does too."""
    panel = panel_class()
    setup, cleanup, enter, exit_ = (method(panel, n) for n in ("setup", "cleanup", "enter", "exit"))
    setup_calls = calls_in(setup)
    # the parameter node before the scene: the editor's automatic choices are saved in it
    assert setup_calls.index("self.selectSegmentEditorNode") < setup_calls.index("editor.setMRMLScene")
    source = ast.unparse(setup)
    assert "qSlicerSegmentEditorEffectFactory.instance()" in source
    assert "connect('effectRegistered(QString)', self.onEffectRegistered)" in source
    assert "disconnect('effectRegistered(QString)', self.onEffectRegistered)" in ast.unparse(cleanup)
    assert "updateEffectList" in ast.unparse(method(panel, "onEffectRegistered"))
    for event, handler in (("StartCloseEvent", "onSceneStartClose"), ("EndCloseEvent", "onSceneEndClose"),
                           ("EndImportEvent", "onSceneEndImport")):
        assert f"slicer.mrmlScene.{event}, self.{handler}" in source, event
        body = ast.unparse(method(panel, handler))
        if handler != "onSceneStartClose":
            assert "self.parent.isEntered" in body and "self.selectSegmentEditorNode()" in body
            assert "updateWidgetFromMRML()" in body
    start_close = ast.unparse(method(panel, "onSceneStartClose"))
    assert "setSegmentationNode(None)" in start_close and "removeViewObservations()" in start_close
    enter_source = ast.unparse(enter)
    assert "turnOffLightboxes()" in enter_source and "(5, 10)" in enter_source, "light boxes off before 5.10"
    assert calls_in(enter).index("editor.installKeyboardShortcuts") < calls_in(enter).index("editor.updateWidgetFromMRML")
    exit_calls = calls_in(exit_)
    assert {"editor.setActiveEffect", "editor.uninstallKeyboardShortcuts", "editor.removeViewObservations"} <= set(
        exit_calls)


def test_volumes_follow_edits_and_export_recomputes():
    """The panel's timer is started only by the VolumeFollower (source-representation edits included), the
    export goes through the logic's recomputing export_csv, and no table node is made unasked."""
    panel = panel_class()
    source = ast.unparse(panel)
    assert "VolumeFollower(schedule=self._tableTimer.start)" in source
    assert "self._follower.observe(segmentationNode, measures)" in ast.unparse(method(panel, "observeSegmentation"))
    export = ast.unparse(method(panel, "onExportCsvButton"))
    assert "self.logic.export_csv, segmentation, path, follower=self._follower" in export
    assert "create_table=True" in ast.unparse(method(panel, "onCreateTableButton"))
    update = ast.unparse(method(panel, "updateVolumeTable"))
    assert "self.logic.refresh_volumes, segmentation, follower=self._follower)" in update
    assert "create_table" not in update


def test_review_aids_and_comparison_are_wired_through_the_logic():
    """The uncertainty controls, the row selection and the comparison go through the Qt-free logic; the
    table's own refills never count as a click; both modules' .ui hold the same new widgets."""
    panel = panel_class()
    setup = ast.unparse(method(panel, "setup"))
    for wiring in ("volumeTableView.connect('selectionChanged()', self.onVolumeRowSelected)",
                   "showUncertaintyCheckBox.connect('toggled(bool)', self.onShowUncertaintyToggled)",
                   "uncertaintyOpacitySlider.connect('valueChanged(double)', self.onUncertaintyOpacityChanged)"):
        assert wiring in setup, wiring
    selected = ast.unparse(method(panel, "onVolumeRowSelected"))
    assert "self._refreshingTable" in selected and "self.logic.look_at_row" in selected
    update = ast.unparse(method(panel, "updateVolumeTable"))
    assert "self._refreshingTable = True" in update and "self._refreshingTable = False" in update
    assert "clearSelection()" in ast.unparse(method(panel, "showVolumes")), "re-sorted rows: no stale selection"
    assert "self.updateUncertaintyLayer()" in ast.unparse(method(panel, "observeSegmentation"))
    assert "self.logic.show_uncertainty" in ast.unparse(method(panel, "updateUncertaintyLayer"))
    assert "self.logic.compare" in ast.unparse(method(panel, "onCompareButton"))
    assert "self.logic.export_changes_csv" in ast.unparse(method(panel, "onExportChangeCsvButton"))
    assert "self.showChanges(None)" in ast.unparse(method(panel, "onSceneStartClose"))
    new = {"showUncertaintyCheckBox", "uncertaintyOpacitySlider", "compareCollapsibleButton",
           "baselineSegmentationSelector", "followupSegmentationSelector", "registerScansCheckBox", "compareButton",
           "changeTableView", "changeSummaryLabel", "exportChangeCsvButton"}
    for module in MODULES:
        widgets = ui_widgets(module)
        assert new <= set(widgets), f"{module}.ui lacks {new - set(widgets)}"
        for name in ("baselineSegmentationSelector", "followupSegmentationSelector"):
            types = [s.text for s in widgets[name].iter("string") if s.text and s.text.startswith("vtkMRML")]
            assert types == ["vtkMRMLSegmentationNode"], name
