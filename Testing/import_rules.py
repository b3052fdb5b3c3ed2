"""Reading a file's imports with ``ast`` (top level and inside functions): the basis of the import rules
(``Testing/core/test_layers.py`` for the whole package, ``Testing/slicer/test_package_rules.py`` for the
Slicer layer)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, Optional, Set

REPO = Path(__file__).resolve().parents[1]


def module_name(path: Path) -> str:
    """Dotted name of a file of the ``headseg`` or ``training`` package ("headseg.slicer.scene")."""
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(path: Path, name: Optional[str] = None) -> Set[str]:
    """Every module ``path`` imports anywhere (top level and inside functions), as absolute dotted names.

    ``from a.b import c`` counts as both ``a.b`` and ``a.b.c`` (c may be a module); relative imports are
    resolved against the file's package (``name``: the file's dotted name; default from its path).
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    if name is None:
        name = module_name(path) if path.is_relative_to(REPO) else ""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: Set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                if node.level > 1:
                    base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def python_files(*folders: str) -> Iterator[Path]:
    for folder in folders:
        for path in sorted((REPO / folder).rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def is_within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def import_graph(*folders: str) -> Dict[str, Set[str]]:
    """module -> the modules of ``folders`` it imports (directly, anywhere in the file)."""
    modules = {module_name(p): p for p in python_files(*folders)}
    return {name: {m for m in imported_modules(path) if m in modules and m != name}
            for name, path in modules.items()}
