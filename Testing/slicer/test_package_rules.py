"""The import rules of the Slicer package, checked by reading every import (``ast``), lazy ones included.

* Only the two Slicer modules (with their Lib packages, batch scripts and Slicer tests) and the pytest
  suites import ``headseg.slicer``; the rest of ``headseg``, ``training``, ``benchmarks`` and ``tools``
  never do (but for the image tool of :data:`OTHER_USERS`).
* ``headseg.slicer`` never imports ``headseg.cli``, not even through another ``headseg`` module.
* Imports stay one-way: the core imports neither ``training`` nor the modules; ``headseg.slicer`` does
  not import ``training`` (cases reach training as files, in the format of ``headseg.manifest``).
"""

from __future__ import annotations

import ast

from import_rules import REPO, import_graph, imported_modules, is_within, module_name, python_files

MODULE_FOLDERS = ("OrbitSegmentation", "AnatomyNetHaN")
#: Files outside the modules that may use the Slicer package, and why.
OTHER_USERS = {
    "tools/make_slicer_images.py": "draws the extension's Sample Data thumbnails and screenshot from its samples",
    "benchmarks/bench_volume_follower.py": "times the panel's volume-table recompute after a stroke, through its code",
}


def test_only_the_modules_and_the_tests_import_the_slicer_package():
    offenders = []
    for path in python_files("headseg", "training", "benchmarks", "tools"):
        if is_within(module_name(path), "headseg.slicer") or path.relative_to(REPO).as_posix() in OTHER_USERS:
            continue
        if any(is_within(m, "headseg.slicer") for m in imported_modules(path)):
            offenders.append(path.relative_to(REPO).as_posix())
    assert not offenders, f"these files import headseg.slicer, which only the Slicer modules may: {offenders}"
    users = [p for p in python_files(*MODULE_FOLDERS)
             if any(is_within(m, "headseg.slicer") for m in imported_modules(p))]
    assert len(users) >= 6, "the modules, their Lib logic and batch scripts use headseg.slicer"


def test_the_slicer_package_never_reaches_the_cli():
    graph = import_graph("headseg")
    slicer_modules = sorted(m for m in graph if is_within(m, "headseg.slicer"))
    assert {"headseg.slicer.scene", "headseg.slicer.panel", "headseg.slicer.batch"} <= set(slicer_modules)
    for start in slicer_modules:
        seen, todo, via = {start}, [start], {start: start}
        while todo:
            current = todo.pop()
            for target in graph[current]:
                if target not in seen:
                    seen.add(target)
                    via[target] = current
                    todo.append(target)
        if "headseg.cli" in seen:
            chain, step = ["headseg.cli"], "headseg.cli"
            while step != start:
                step = via[step]
                chain.append(step)
            raise AssertionError(f"{start} imports the command line: {' <- '.join(chain)}")


def test_imports_are_one_way():
    for path in python_files("headseg"):
        imported = imported_modules(path)
        assert not any(is_within(m, "training") for m in imported), f"{path}: the core must not import training"
        assert not any(m.split(".")[0] in MODULE_FOLDERS or m.split(".")[0] in {f"{f}Lib" for f in MODULE_FOLDERS}
                       for m in imported), f"{path}: the core must not import a Slicer module"
    for path in python_files("training"):
        assert not any(is_within(m, "headseg.slicer") for m in imported_modules(path)), path


def test_the_rules_see_relative_and_lazy_imports(tmp_path):
    """The checker itself: lazy relative imports of the CLI from inside the package are seen."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from .. import cli\n    from ..cli import main\n    import headseg.slicer\n",
                     encoding="utf-8")
    assert {"headseg", "headseg.cli", "headseg.cli.main", "headseg.slicer"} <= imported_modules(
        probe, "headseg.slicer.probe")


def test_the_slicer_package_parses_as_python_39():
    """Slicer 5.6 and 5.8 embed Python 3.9; every module of the package must parse there."""
    for path in python_files("headseg/slicer"):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path), feature_version=(3, 9))
