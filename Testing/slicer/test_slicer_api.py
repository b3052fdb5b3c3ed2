"""The Slicer API the modules call exists in every Slicer release README names (5.6.2, 5.8.1, 5.10.0).

``Testing/slicer/slicer_api.json`` lists every use of Slicer's API in the Slicer-side code with the
releases whose source declares it (made by ``tools/slicer_api_manifest.py`` from Slicer's git tags and the
CTK commits they build; its header says how to regenerate it). The code is read here with the same
collector: a use the manifest lacks, or one missing from a supported release without a guard
(``hasattr``, a version branch, a ``try``), fails. The wheel these tests run on is Slicer 5.11 or newer,
so the terminology code also runs against a real terminology logic that offers only Slicer 5.6.2's
methods, as the manifest lists them.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import slicer_api_manifest as api  # noqa: E402

MANIFEST = json.loads(api.MANIFEST.read_text(encoding="utf-8"))
README_VERSIONS = ("5.6", "5.8", "5.10")


def test_the_manifest_says_how_to_regenerate_it_and_covers_the_readmes_versions():
    assert "python tools/slicer_api_manifest.py --slicer-git" in MANIFEST["about"]
    assert tuple(MANIFEST["supported"]) == api.SUPPORTED
    assert [re.match(r"v(\d+\.\d+)\.", tag).group(1) for tag in api.SUPPORTED] == list(README_VERSIONS)
    readme = " ".join((REPO / "README.md").read_text(encoding="utf-8").split())
    assert "3D Slicer 5.6, 5.8 and 5.10" in readme and "5.6 or newer" not in readme


def test_every_use_of_slicers_api_exists_in_every_supported_release():
    uses = api.collect_uses()
    assert len({u.key for u in uses}) > 150, "the collector found too little: is the code where it looks?"
    known = MANIFEST["uses"]
    missing = sorted({f"{u.key} ({u.file}:{u.line})" for u in uses if u.key not in known})
    assert not missing, f"not in the manifest (regenerate it, see its 'about'): {missing}"
    problems = []
    for use in uses:
        versions = set(known[use.key]["versions"])
        if use.guarded and not versions & set(api.SUPPORTED):
            problems.append(f"{use.key} ({use.file}:{use.line}): guarded, but no supported release has it")
        elif not use.guarded and not set(api.SUPPORTED) <= versions:
            problems.append(f"{use.key} ({use.file}:{use.line}): only in {sorted(versions)}; guard it or use "
                            "what every release has")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_call_that_only_newer_slicer_has(tmp_path):
    """The collector reads calls the way the test relies on: unguarded, guarded by hasattr, by a version
    branch, on the class (static) and on a .ui widget."""
    folder = tmp_path / "headseg" / "slicer"
    folder.mkdir(parents=True)
    (folder / "x.py").write_text(
        "def f(logic, segment, editor, slicer):\n"
        "    logic.IsTerminologyContextLoaded('a')\n"
        "    if hasattr(segment, 'SetTerminology'):\n"
        "        segment.SetTerminology('t')\n"
        "    else:\n"
        "        segment.SetTag('x', 't')\n"
        "    if (slicer.app.majorVersion, slicer.app.minorVersion) < (5, 10) and editor.turnOffLightboxes():\n"
        "        pass\n"
        "    slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry('s', None)\n")
    uses = {(u.key, u.guarded) for u in api.collect_uses(tmp_path)}
    assert ("method IsTerminologyContextLoaded", False) in uses
    assert ("method SetTerminology", True) in uses and ("method SetTag", True) in uses
    assert ("static vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry", False) in uses
    assert MANIFEST["members"]["vtkSlicerTerminologiesModuleLogic"]["v5.6.2"]["static"].count(
        "DeserializeTerminologyEntry") == 0, "static only from 5.10: called on the class it fails on 5.6"


class LogicAtRelease:
    """A real terminology logic that offers only the methods a given release declares (the manifest's
    ``members``): what HeadSeg's code meets in that Slicer."""

    def __init__(self, logic, release: str) -> None:
        members = MANIFEST["members"]["vtkSlicerTerminologiesModuleLogic"]
        self._logic = logic
        self._everywhere = {name for per_release in members.values() for name in per_release["methods"]}
        self._here = set(members[release]["methods"])

    def __getattr__(self, name: str):
        if name in self._everywhere and name not in self._here:
            raise AttributeError(f"'vtkSlicerTerminologiesModuleLogic' object has no attribute '{name}'")
        return getattr(self._logic, name)


@pytest.mark.parametrize("release", api.SUPPORTED)
def test_the_terminology_loads_and_resolves_with_each_releases_methods(release, tmp_path):
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed")
    from headseg.labels import HEADSEG_TERMINOLOGY_CONTEXT, LABEL_SETS
    from headseg.slicer import terminology

    real = slicer.vtkSlicerTerminologiesModuleLogic()
    real.SetModuleShareDirectory(str(tmp_path))
    logic = LogicAtRelease(real, release)
    if release == "v5.6.2":
        with pytest.raises(AttributeError):
            logic.IsTerminologyContextLoaded  # noqa: B018  (what the code called before)
    assert terminology.load_terminology(logic) == HEADSEG_TERMINOLOGY_CONTEXT
    assert terminology.load_terminology(logic) == HEADSEG_TERMINOLOGY_CONTEXT  # loaded once
    assert terminology.loaded_terminology_names(logic).count(HEADSEG_TERMINOLOGY_CONTEXT) == 1
    for label_set in LABEL_SETS.values():
        for structure in label_set:
            entry = terminology.resolve_entry(structure.terminology.to_slicer_string(), logic)
            assert entry is not None, f"{label_set.name}/{structure.key} does not resolve on {release}"
