"""The layers of ``headseg``, checked by reading every import (lazy ones included): a stage imports only
the stages below it, sibling packages of one layer do not import each other, and no module reaches
itself through a circle of imports. ``docs/ARCHITECTURE.md`` draws the same layers."""

from __future__ import annotations

import ast
from typing import Dict, List, Optional, Set

from import_rules import import_graph, is_within, python_files

#: Bottom to top; a unit is a module or a package with everything inside it.
LAYERS: List[Set[str]] = [
    {"headseg", "headseg.errors", "headseg.geometry", "headseg.paths"},
    {"headseg.labels", "headseg.resample", "headseg.validation", "headseg.manifest"},
    {"headseg.io"},
    {"headseg.models", "headseg.dicom_export", "headseg.synth", "headseg.locate"},
    {"headseg.measure"},
    {"headseg.segment"},
    {"headseg.review"},
    {"headseg.run"},
    {"headseg.slicer", "headseg.node"},
    {"headseg.cli"},
    {"headseg.__main__"},
]
#: What training may use of the core: everything but the user-facing layers above the runs.
TRAINING_MAY_NOT_IMPORT = ("headseg.slicer", "headseg.node", "headseg.cli")


def unit_of(module: str) -> Optional[str]:
    """The longest listed unit that holds ``module`` (``headseg`` itself only for the package's __init__)."""
    best = None
    for layer in LAYERS:
        for unit in layer:
            if (module == unit if unit == "headseg" else is_within(module, unit)) and (
                    best is None or len(unit) > len(best)):
                best = unit
    return best


def layer_of(unit: str) -> int:
    return next(n for n, layer in enumerate(LAYERS) if unit in layer)


def test_every_module_belongs_to_a_layer():
    unplaced = sorted(m for m in import_graph("headseg") if unit_of(m) is None)
    assert not unplaced, f"add these modules to a layer (here and in docs/ARCHITECTURE.md): {unplaced}"


def test_stages_import_only_downwards():
    wrong = []
    for module, imported in import_graph("headseg").items():
        own = unit_of(module)
        assert own is not None
        for target in imported:
            other = unit_of(target)
            assert other is not None
            if other != own and layer_of(other) >= layer_of(own):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(sorted(wrong))


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    found: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_circle():
    graph = import_graph("headseg", "training")
    assert not cycles(graph), f"import circles: {cycles(graph)}"


def test_the_cycle_finder_finds_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_training_uses_the_core_but_not_its_user_layers():
    wrong = [f"{m} -> {t}" for m, imported in import_graph("headseg", "training").items() if m.startswith("training")
             for t in imported if any(is_within(t, u) for u in TRAINING_MAY_NOT_IMPORT)]
    assert not wrong, wrong


#: Lines a module or a function may have; longer needs a reason (functions: in their docstring).
MAX_FILE_LINES = 600
MAX_FUNCTION_LINES = 80
LONG_ON_PURPOSE = "One long function on purpose"


def test_rooms_are_small():
    """No module over 600 lines; no function whose code (docstring left out) is over 80 lines unless its
    docstring says why it is "One long function on purpose"."""
    big, long = [], []
    for path in python_files("headseg", "training"):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_FILE_LINES:
            big.append(f"{path.name}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                has_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
                start = first.end_lineno + 1 if has_doc and len(node.body) > 1 else node.lineno
                lines = node.end_lineno - start + 1
                if lines > MAX_FUNCTION_LINES and LONG_ON_PURPOSE not in (ast.get_docstring(node) or ""):
                    long.append(f"{path.name}:{node.lineno} {node.name}: {lines} lines")
    assert not big, f"modules over {MAX_FILE_LINES} lines: {big}"
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines with no reason: {long}"
