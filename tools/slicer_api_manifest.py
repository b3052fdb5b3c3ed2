"""The Slicer API HeadSeg's Slicer code calls, and the Slicer releases in which each call exists.

Two halves:

* :func:`collect_uses` reads the Slicer-side code (``headseg/slicer``, both modules with their Lib
  packages, batch scripts and self-tests) with ``ast`` and lists every use of Slicer's API: MRML/VTK-MRML
  methods and enums, Slicer classes, qMRML/qSlicer/CTK widget methods and signals (the widget's class
  comes from the module's ``.ui`` file), ``slicer.app`` properties and Slicer's Python API
  (``slicer.util``, ``slicer.i18n``, ``ScriptedLoadableModule``, ``SampleData``) with the keyword
  arguments passed. A use is *guarded* when the code checks for it first (``hasattr``/``getattr`` of its
  name, a branch on ``slicer.app.majorVersion``/``minorVersion``, or a ``try`` that catches the
  AttributeError/TypeError/ImportError of an older release).
* :func:`build_manifest` looks every use up in Slicer's own source at each release tag (a git mirror of
  github.com/Slicer/Slicer) and in the CTK commit each tag pins (SuperBuild/External_CTK.cmake), and
  writes ``Testing/slicer/slicer_api.json``.

``Testing/slicer/test_slicer_api.py`` runs :func:`collect_uses` on the code as it is and fails on a use
the manifest lacks, or one that is missing from a supported release without a guard. Regenerate the
manifest after changing the Slicer code::

    python tools/slicer_api_manifest.py --slicer-git /path/to/Slicer.git --ctk-git /path/to/CTK.git

Imports only the standard library (no ``headseg``, no ``slicer``).
"""

from __future__ import annotations

import argparse
import ast
import io
import json
import re
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Set, Tuple

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "Testing" / "slicer" / "slicer_api.json"
#: The releases README names; the oldest first.
SUPPORTED = ("v5.6.2", "v5.8.1", "v5.10.0")
#: Where the Slicer-side code lives (everything that runs inside the Slicer application).
CODE_GLOBS = ("headseg/slicer/*.py", "OrbitSegmentation/**/*.py", "AnatomyNetHaN/**/*.py")
UI_GLOB = "*/Resources/UI/*.ui"

#: Slicer's Python API: the module name in the code -> its file(s) in Slicer's tree.
PYTHON_MODULES = {
    "slicer.util": ("Base/Python/slicer/util.py",),
    "slicer.i18n": ("Base/Python/slicer/i18n.py",),
    "slicer.ScriptedLoadableModule": ("Base/Python/slicer/ScriptedLoadableModule.py",),
    "slicer.parameterNodeWrapper": ("Base/Python/slicer/parameterNodeWrapper/__init__.py",
                                    "Base/Python/slicer/parameterNodeWrapper/wrapper.py",
                                    "Base/Python/slicer/parameterNodeWrapper/parameterPack.py",
                                    "Base/Python/slicer/parameterNodeWrapper/validators.py"),
    "SampleData": ("Modules/Scripted/SampleData/SampleData.py",),
}
#: ``slicer.app`` is a qSlicerApplication (GUI) or qSlicerCoreApplication.
APP_CLASSES = ("qSlicerApplication", "qSlicerCoreApplication")
#: Modules that are not Slicer's: uses through them are not Slicer API (PyTorchUtils is the PyTorch
#: extension's, imported inside a try that asks the user to install it).
FOREIGN_ROOTS = {"argparse", "csv", "metadata", "types", "unittest", "tempfile", "qt", "os", "sys", "np",
                 "numpy", "logging", "json", "hashlib", "PyTorchUtils", "importlib", "ndimage", "shutil", "re",
                 "math", "time", "subprocess", "threading", "dataclasses", "Path", "torch"}
#: Methods and enums of VTK itself (vtkObject, vtkDataArray, vtkImageData, vtkMatrix4x4...), which
#: Slicer 5.6 to 5.10 inherit unchanged from VTK 9 and which are not declared in Slicer's tree.
VTK_CORE = {
    "AddObserver", "RemoveObserver", "Modified", "ModifiedEvent", "GetMTime", "IsA", "UnRegister", "DeepCopy",
    "GetPointData", "GetScalars", "GetNumberOfTuples", "GetNumberOfValues", "GetValue", "InsertNextValue",
    "SetName", "GetName", "GetElement", "GetExtent", "GetNumberOfPoints", "GetNumberOfScalarComponents",
    "GetColumnByName", "GetNumberOfRows", "SetElement", "GetDimensions", "GetSpacing", "GetOrigin",
    "SetNumberOfValues", "SetValue", "GetNumberOfComponents", "Copy", "GetScalarType", "AllocateScalars",
    "SetExtent", "GetDataObject", "GetBounds", "ErrorEvent", "WarningEvent",
    "CallDataType",  # VTK's Python observers: the type the call data is handed to a callback as
}
#: Code that never runs inside the Slicer application: the headless scene of the slicer-core wheel
#: (``in_slicer_app()`` is False there), which the tests and scripts outside Slicer use.
HEADLESS_ONLY = {("headseg/slicer/scene.py", "init_headless_slicer"), ("headseg/slicer/scene.py", "HeadlessSlicer")}
#: Classes whose whole public method list per release goes into the manifest ("members"), so that tests can
#: run HeadSeg's code against a real object that offers only an older release's methods.
MEMBER_CLASSES = ("vtkSlicerTerminologiesModuleLogic",)
#: A module-level tuple of Slicer module names the modules declare as dependencies.
DEPENDENCY_CONSTANT = "MODULE_DEPENDENCIES"
GUARD_EXCEPTIONS = {"AttributeError", "TypeError", "ImportError", "ModuleNotFoundError"}


@dataclass(frozen=True)
class Use:
    """One use of Slicer's API: ``key`` is what the manifest is indexed by."""

    key: str
    file: str
    line: int
    guarded: bool


# -- reading the code ---------------------------------------------------------------------------------
def ui_widget_classes(root: Path = REPO) -> Dict[str, str]:
    """objectName -> widget class of every widget in the modules' ``.ui`` files."""
    classes: Dict[str, str] = {}
    for path in sorted(root.glob(UI_GLOB)):
        for widget in ET.parse(path).iter("widget"):
            name, cls = widget.get("name"), widget.get("class")
            if name and cls:
                classes[name] = cls
    return classes


def _dotted(node: ast.AST) -> Optional[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _root(node: ast.AST) -> Optional[str]:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _is_slicer_class(name: str) -> bool:
    return bool(re.match(r"^(vtk|q)(MRML|Slicer|Segment|Oriented)\w*$", name))


class _Collector(ast.NodeVisitor):
    """Walks one file; keeps the guards in force at each node on a stack."""

    def __init__(self, rel: str, widgets: Dict[str, str]) -> None:
        self.rel = rel
        self.widgets = widgets
        self.uses: List[Use] = []
        self.guards: List[Set[str]] = []  # names checked by hasattr/getattr, or "*" (version branch, try)
        self.aliases: Dict[str, str] = {}  # local name or self.attr -> widget/Slicer class
        self.imported: Dict[str, str] = {}  # local name -> "module.name" it was imported as

    # guards
    def _guarded(self, name: str) -> bool:
        return any("*" in g or name in g for g in self.guards)

    def _checked_names(self, test: ast.AST) -> Set[str]:
        names: Set[str] = set()
        for node in ast.walk(test):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                    and node.func.id in ("hasattr", "getattr") and len(node.args) >= 2 \
                    and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str):
                names.add(node.args[1].value)
            if isinstance(node, ast.Attribute) and node.attr in ("majorVersion", "minorVersion"):
                names.add("*")
        return names

    def _visit_guarded(self, names: Set[str], nodes: Iterable[ast.AST]) -> None:
        self.guards.append(names)
        for node in nodes:
            self.visit(node)
        self.guards.pop()

    def _branches(self, test: ast.AST, body: List[ast.AST], orelse: List[ast.AST]) -> None:
        """The body is guarded for the names the test checks; the other branch (the older release's
        way) for everything, when the test checks anything."""
        self.visit(test)
        checked = self._checked_names(test)
        self._visit_guarded(checked, body)
        self._visit_guarded({"*"} if checked else set(), orelse)

    def visit_If(self, node: ast.If) -> None:
        self._branches(node.test, node.body, node.orelse)

    def visit_IfExp(self, node: ast.IfExp) -> None:
        self._branches(node.test, [node.body], [node.orelse])

    def visit_BoolOp(self, node: ast.BoolOp) -> None:
        """``version_check and call()``: what follows a check is guarded by it."""
        checked: Set[str] = set()
        for value in node.values:
            self._visit_guarded(set(checked), [value])
            checked |= self._checked_names(value)

    def visit_Try(self, node: ast.Try) -> None:
        caught = set()
        for handler in node.handlers:
            for n in ast.walk(handler.type) if handler.type is not None else []:
                if isinstance(n, ast.Name):
                    caught.add(n.id)
        guard = {"*"} if caught & GUARD_EXCEPTIONS else set()
        self._visit_guarded(guard, node.body)
        for other in node.handlers + node.orelse + node.finalbody:
            self.visit(other)

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        if (self.rel, node.name) not in HEADLESS_ONLY:
            self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        if (self.rel, node.name) in HEADLESS_ONLY:
            return
        checked: Set[str] = set()
        for sub in ast.walk(node):  # getattr(x, "Name", None) anywhere in the function guards Name in it
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name) and sub.func.id == "getattr" \
                    and len(sub.args) == 3:
                checked |= self._checked_names(sub)
        self._visit_guarded(checked, node.body)
        for decorator in node.decorator_list:
            self.visit(decorator)

    # imports and aliases
    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.imported[(alias.asname or alias.name).split(".")[0]] = alias.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        for alias in node.names:
            self.imported[alias.asname or alias.name] = f"{module}.{alias.name}"
            if module == "slicer" and _is_slicer_class(alias.name):
                self._add(f"class {alias.name}", node)
            elif module in PYTHON_MODULES:
                self._add(f"python {module}.{alias.name}", node)

    def visit_Assign(self, node: ast.Assign) -> None:
        cls = self._class_of(node.value)
        for target in node.targets:
            name = _dotted(target)
            if cls and name:
                self.aliases[name] = cls
            if isinstance(target, ast.Name) and target.id == DEPENDENCY_CONSTANT \
                    and isinstance(node.value, (ast.Tuple, ast.List)):
                for element in node.value.elts:
                    if isinstance(element, ast.Constant):
                        self._add(f"module {element.value}", node)
            owner = self._class_of(target.value) if isinstance(target, ast.Attribute) else None
            if owner and isinstance(target, ast.Attribute):  # a Qt property set: proxy.hiddenNodeIDs = ...
                self._add(f"widget {owner}.{target.attr}", node, target.attr)
        self.generic_visit(node)

    def _class_of(self, node: ast.AST) -> Optional[str]:
        name = _dotted(node)
        if name and name.startswith("self.ui.") and name.count(".") == 2:
            return self.widgets.get(name.split(".")[2])
        if name in self.aliases:
            return self.aliases[name]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "sortFilterProxyModel" and self._class_of(node.func.value):
            return "qMRMLSortFilterProxyModel"
        if isinstance(node, ast.Call):  # slicer.qSomething.instance()
            func = _dotted(node.func)
            if func and func.startswith("slicer.") and func.endswith(".instance") and func.count(".") == 2:
                return func.split(".")[1]
        return None

    # uses
    def _add(self, key: str, node: ast.AST, member: str = "") -> None:
        member = member or re.split(r"[ .]", key)[-1]
        self.uses.append(Use(key, self.rel, getattr(node, "lineno", 0), self._guarded(member)))

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if isinstance(func, ast.Attribute):
            cls = self._class_of(func.value)
            if cls and func.attr == "connect" and node.args and isinstance(node.args[0], ast.Constant):
                self._add(f"signal {cls}.{str(node.args[0].value).split('(')[0]}", node)
            elif cls and func.attr[:1].islower() and func.attr not in ("connect", "disconnect"):
                self._add(f"widget {cls}.{func.attr}", node, func.attr)
            dotted = _dotted(func)
            if dotted == "slicer.app.connect" and node.args and isinstance(node.args[0], ast.Constant):
                self._add(f"signal qSlicerApplication.{str(node.args[0].value).split('(')[0]}", node)
            module = self._python_module(dotted)
            if module and node.keywords:
                for keyword in node.keywords:
                    if keyword.arg:
                        self._add(f"python-arg {module}({keyword.arg})", node, func.attr)
        self.generic_visit(node)

    def _python_module(self, dotted: Optional[str]) -> Optional[str]:
        """``slicer.util.f`` / ``SampleData.SampleDataLogic.f`` / a name imported from one: its full name."""
        if not dotted:
            return None
        head = dotted.split(".")[0]
        if head in self.imported and self.imported[head] != head:
            dotted = self.imported[head] + dotted[len(head):]
        for module in PYTHON_MODULES:
            if dotted.startswith(module + ".") and dotted != module:
                return dotted
        return None

    def visit_Attribute(self, node: ast.Attribute) -> None:
        dotted = _dotted(node)
        root = _root(node)
        python = self._python_module(dotted)
        if python:
            self._add(f"python {python}", node, node.attr)
        elif dotted and dotted.startswith("slicer.app.") and dotted.count(".") == 2 and node.attr != "connect":
            self._add(f"app {node.attr}", node)
        elif dotted and dotted.count(".") == 1 and dotted.startswith("slicer.") and _is_slicer_class(node.attr):
            self._add(f"class {node.attr}", node)
        elif dotted and dotted.count(".") == 2 and dotted.startswith("slicer.") \
                and _is_slicer_class(dotted.split(".")[1]):
            self._add(f"static {dotted.split('.', 1)[1]}", node, node.attr)
        elif re.match(r"^[A-Z][a-z]\w*$", node.attr) and root not in FOREIGN_ROOTS \
                and self.imported.get(root or "", "") not in FOREIGN_ROOTS and root != "vtk" \
                and not (dotted or "").startswith("slicer.util."):
            self._add(f"method {node.attr}", node)
        self.generic_visit(node)


def collect_uses(root: Path = REPO) -> List[Use]:
    """Every use of Slicer's API in the Slicer-side code (see the module docstring)."""
    widgets = ui_widget_classes(root)
    uses: List[Use] = []
    for pattern in CODE_GLOBS:
        for path in sorted(root.glob(pattern)):
            collector = _Collector(str(path.relative_to(root)), widgets)
            collector.visit(ast.parse(path.read_text(encoding="utf-8"), str(path)))
            uses += collector.uses
    return uses


# -- reading Slicer's source --------------------------------------------------------------------------
class SourceTree:
    """Headers and Python files of one revision of a git repository, read once."""

    def __init__(self, git_dir: Path, rev: str, patterns: Tuple[str, ...] = ("*.h", "*.py")) -> None:
        data = subprocess.run(["git", "-C", str(git_dir), "archive", "--format=tar", rev, "--", *patterns],
                              check=True, capture_output=True).stdout
        self.files: Dict[str, str] = {}
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            for member in archive:
                if member.isfile():
                    extracted = archive.extractfile(member)
                    if extracted is not None:
                        self.files[member.name] = extracted.read().decode("utf-8", errors="replace")
        self.headers = {Path(p).stem: p for p in self.files if p.endswith(".h")}

    def bases(self, cls: str) -> List[str]:
        """``cls`` and its base classes, as far as this tree declares them."""
        chain = [cls]
        while chain[-1] in self.headers:
            match = re.search(r"class\s+(?:\w+\s+)?" + chain[-1] + r"\s*:\s*public\s+(\w+)",
                              self.files[self.headers[chain[-1]]])
            if not match or match.group(1) in chain:
                break
            chain.append(match.group(1))
        return chain


def _declares(text: str, name: str, static: bool = False) -> bool:
    """Whether a header declares ``name``: a method, an enum value, a Qt property or signal, a VTK macro."""
    if static:
        return bool(re.search(r"static[^;(]*\b" + name + r"\s*\(", text)
                    or re.search(r"\b" + name + r"\b\s*(=|,|\n\s*})", text))
    field = re.sub(r"^(Get|Set)", "", name)
    if re.sub(r"(On|Off)$", "", field) not in text:
        return False
    return bool(re.search(r"\b" + name + r"\s*\(", text) or re.search(r"^\s*" + name + r"\b\s*(=|,|$)", text, re.M)
                or re.search(r"Q_PROPERTY\([^)]*\b" + name + r"\b", text)
                or re.search(r"vtk\w*Macro\s*\(\s*" + field + r"\s*[,)]", text)
                or re.search(r"vtkBooleanMacro\s*\(\s*" + re.sub(r"(On|Off)$", "", name) + r"\s*,", text))


def _python_names(text: str) -> Dict[str, List[str]]:
    """Top-level and class-level names of a Python file -> the parameter names of the function."""
    names: Dict[str, List[str]] = {}
    tree = ast.parse(text)
    for node in tree.body:
        targets: List[Tuple[str, ast.AST]] = []
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            targets.append((node.name, node))
            if isinstance(node, ast.ClassDef):
                targets += [(f"{node.name}.{m.name}", m) for m in node.body if isinstance(m, ast.FunctionDef)]
        elif isinstance(node, ast.Assign):
            targets += [(t.id, node) for t in node.targets if isinstance(t, ast.Name)]
        for name, target in targets:
            params: List[str] = []
            if isinstance(target, ast.FunctionDef):
                a = target.args
                params = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
                params += ["**"] if a.kwarg else []
            names[name] = params
    return names


def lookup(use_key: str, slicer: SourceTree, ctk: SourceTree) -> Optional[str]:
    """The file of ``slicer``/``ctk`` that declares the use, "VTK" for VTK's own API, or None (absent)."""
    kind, what = use_key.split(" ", 1)
    if kind == "class":
        return slicer.headers.get(what)
    if kind == "module":
        return next((f"Modules/{group}/{what}" for group in ("Loadable", "Scripted")
                     if any(p.startswith(f"Modules/{group}/{what}/") for p in slicer.files)), None)
    if kind == "method":
        if what in VTK_CORE:
            return "VTK"
        return next((p for p, t in slicer.files.items() if p.endswith(".h") and _declares(t, what)), None)
    if kind in ("static", "widget", "signal", "app"):
        if kind == "app":
            classes, member = list(APP_CLASSES), what
        else:
            cls, member = what.split(".", 1)
            classes = [cls]
        for cls in classes:
            for tree in (slicer, ctk):
                for base in tree.bases(cls) if cls in tree.headers else []:
                    if base in tree.headers and _declares(tree.files[tree.headers[base]], member, kind == "static"):
                        return tree.headers[base]
        # a method Qt itself provides (QWidget, QComboBox...): the class chain reaches a Qt class
        chain = slicer.bases(classes[0]) if classes[0] in slicer.headers else ctk.bases(classes[0])
        if kind in ("widget", "signal") and (chain[-1].startswith("Q") or classes[0].startswith("Q")):
            return f"Qt ({chain[-1]})"
        return None
    if kind in ("python", "python-arg"):
        return _lookup_python(kind, what, slicer)
    raise ValueError(f"unknown use kind {kind!r}")


def _lookup_python(kind: str, what: str, slicer: SourceTree) -> Optional[str]:
    keyword = None
    if kind == "python-arg":
        what, keyword = what[:-1].split("(")
    for module, paths in PYTHON_MODULES.items():
        if not what.startswith(module + "."):
            continue
        name = what[len(module) + 1:]
        for path in paths:
            if path not in slicer.files:
                continue
            names = _python_names(slicer.files[path])
            if name in names and (keyword is None or keyword in names[name] or "**" in names[name]):
                return path
    return None


def class_members(tree: SourceTree, cls: str) -> Dict[str, List[str]]:
    """The methods a class header declares: {"methods": [...], "static": [...]} (constructors and VTK's
    macros left out)."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", "", tree.files[tree.headers[cls]], flags=re.S)
    body = text[text.find("class"):]
    methods, static = set(), set()
    for line in body.splitlines():
        for name in re.findall(r"\b([A-Z]\w*)\s*\(", line):
            if name.startswith(("VTK", "vtk")) or name == cls or name.isupper():
                continue
            methods.add(name)
            if re.search(r"\bstatic\b", line):
                static.add(name)
    return {"methods": sorted(methods), "static": sorted(static)}


def ctk_commit(slicer_git: Path, tag: str) -> str:
    """The CTK commit a Slicer release builds (SuperBuild/External_CTK.cmake)."""
    text = subprocess.run(["git", "-C", str(slicer_git), "show", f"{tag}:SuperBuild/External_CTK.cmake"],
                          check=True, capture_output=True, text=True).stdout
    match = re.search(r"Slicer_\$\{proj\}_GIT_TAG\s*\n\s*\"([0-9a-f]{40})\"", text)
    if not match:
        raise RuntimeError(f"no CTK commit in {tag}:SuperBuild/External_CTK.cmake")
    return match.group(1)


def build_manifest(slicer_git: Path, ctk_git: Path, tags: Tuple[str, ...] = SUPPORTED) -> dict:
    """The manifest (see the module docstring) for the code as it is now."""
    keys = sorted({use.key for use in collect_uses()})
    entries: Dict[str, dict] = {key: {"versions": [], "declared_in": {}} for key in keys}
    members: Dict[str, Dict[str, dict]] = {cls: {} for cls in MEMBER_CLASSES}
    for tag in tags:
        slicer = SourceTree(slicer_git, tag)
        for cls in MEMBER_CLASSES:
            members[cls][tag] = class_members(slicer, cls)
        ctk = SourceTree(ctk_git, ctk_commit(slicer_git, tag), ("*.h",))
        for key in keys:
            where = lookup(key, slicer, ctk)
            if where is not None:
                entries[key]["versions"].append(tag)
                entries[key]["declared_in"][tag] = where
    for entry in entries.values():  # one path when every release declares it in the same file
        paths = set(entry["declared_in"].values())
        if len(paths) == 1:
            entry["declared_in"] = paths.pop()
    return {
        "about": "Slicer API that HeadSeg's Slicer code uses, and the Slicer releases that have each use, read "
                 "from Slicer's source at each tag and the CTK commit the tag builds. Regenerate after changing "
                 "the Slicer code: python tools/slicer_api_manifest.py --slicer-git <Slicer mirror> "
                 "--ctk-git <CTK mirror> (git mirrors of github.com/Slicer/Slicer and github.com/commontk/CTK). "
                 "Testing/slicer/test_slicer_api.py checks the code against it.",
        "supported": list(tags),
        "kinds": {"class": "a class of the slicer module", "method": "a VTK/MRML method or enum on a node or "
                  "logic (any Slicer header declares it; 'VTK' = VTK's own API)", "static": "called on the "
                  "class (a static method or an enum value)", "widget": "a method of a widget of the .ui file",
                  "signal": "a signal connected by name", "app": "a property or method of slicer.app",
                  "python": "Slicer's Python API", "python-arg": "a keyword argument of Slicer's Python API",
                  "module": "a Slicer module named in the modules' dependencies"},
        "uses": entries,
        "members": members,
    }


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slicer-git", type=Path, required=True, help="git mirror of github.com/Slicer/Slicer")
    parser.add_argument("--ctk-git", type=Path, required=True, help="git mirror of github.com/commontk/CTK")
    parser.add_argument("-o", "--output", type=Path, default=MANIFEST)
    args = parser.parse_args(argv)
    manifest = build_manifest(args.slicer_git, args.ctk_git)
    args.output.write_text(json.dumps(manifest, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    missing = {k: v["versions"] for k, v in manifest["uses"].items() if len(v["versions"]) < len(SUPPORTED)}
    print(f"wrote {args.output}: {len(manifest['uses'])} uses; not in every release: {missing}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
