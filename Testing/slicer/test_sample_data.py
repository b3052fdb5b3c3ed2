"""The samples both modules register with Slicer's Sample Data module (``headseg.slicer.sample_data``)
and what each module does once Slicer has started.

SampleData.py imports Qt, so its ``SampleDataLogic`` is replaced here by a recorder that accepts only the
keyword arguments ``registerCustomSampleDataSource`` has in both Slicer 5.6.2 and main (read from
Modules/Scripted/SampleData/SampleData.py of both).
"""

from __future__ import annotations

import ast
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from headseg.slicer import sample_data

REPO = Path(__file__).resolve().parents[2]
DATA_DIRS = {"orbit": REPO / "OrbitSegmentation" / "Resources" / "SampleData",
             "han": REPO / "AnatomyNetHaN" / "Resources" / "SampleData"}
# registerCustomSampleDataSource's keywords in v5.6.2 and on main alike (loadFileType/loadFileTypes differ)
SHARED_KEYWORDS = {"category", "sampleName", "uris", "fileNames", "nodeNames", "customDownloader",
                   "thumbnailFileName", "loadFiles", "loadFileProperties", "checksums"}


@pytest.fixture
def sample_data_module(monkeypatch):
    """A stand-in ``SampleData`` module whose logic records each registration."""
    registered = []

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataSource(**kwargs):
            unknown = set(kwargs) - SHARED_KEYWORDS
            assert not unknown, f"not accepted by every supported Slicer: {unknown}"
            registered.append(kwargs)

    monkeypatch.setitem(sys.modules, "SampleData", types.SimpleNamespace(SampleDataLogic=SampleDataLogic))
    return registered


def test_the_head_and_neck_sample_is_the_shipped_openkbp_ct_with_its_attribution():
    from headseg.io import read_volume
    from headseg.validation import check_ct

    sample = sample_data.SAMPLES["han"]
    path = DATA_DIRS["han"] / sample.file_name
    assert sample.bundled and sample_data.sha256_of(path) == sample.sha256
    assert path.stat().st_size < 1_000_000, "shipped small"
    ct = read_volume(path)
    assert ct.shape == (128, 128, 128) and ct.array.dtype == np.int16 and check_ct(ct) == []
    readme = (DATA_DIRS["han"] / "OpenKBP_pt_286_README.md").read_text(encoding="utf-8")
    assert "Babier" in readme and "Clark" in readme and "CC BY" in readme.replace("Creative Commons Attribution", "CC BY")


def test_the_orbit_phantom_is_made_on_first_use_and_then_reused(tmp_path):
    from headseg.io import read_volume
    from headseg.synth.phantoms import make_head_phantom

    cache = tmp_path / "cache"
    path = sample_data.sample_file("orbit", DATA_DIRS["orbit"], cache)
    assert path == cache / "HeadSegOrbitPhantom.nrrd" and path.is_file()
    made = path.stat().st_mtime_ns
    assert sample_data.sample_file("orbit", DATA_DIRS["orbit"], cache) == path
    assert path.stat().st_mtime_ns == made, "made once, then read from the cache"
    expected = make_head_phantom(seed=sample_data.PHANTOM_SEED, spacing=sample_data.PHANTOM_SPACING).image
    image = read_volume(path)
    assert image.same_geometry(expected) and np.array_equal(image.array, expected.array)
    assert not list(cache.glob(".headseg_phantom_*")), "no temporary file left behind"


@pytest.mark.parametrize("task", ["orbit", "han"])
def test_each_module_registers_a_sample_that_loads_with_one_press(mrml_scene, sample_data_module, tmp_path, task):
    """The registration's arguments, and the sample button (customDownloader) loading a usable CT node."""
    from headseg.slicer.scene import volume_from_node
    from headseg.validation import check_ct

    thumbnail = DATA_DIRS[task] / {"orbit": "OrbitSegmentationSample.png", "han": "AnatomyNetHaNSample.png"}[task]
    sample_data.register_sample(task, DATA_DIRS[task], thumbnail=thumbnail, cache_dir=tmp_path / "cache")
    (entry,) = sample_data_module
    sample = sample_data.SAMPLES[task]
    assert entry["category"] == "HeadSeg" and entry["sampleName"] == sample.name
    assert Path(entry["thumbnailFileName"]).is_file()
    assert len(entry["uris"]) == len(entry["fileNames"]) == len(entry["nodeNames"]) == len(entry["checksums"]) == 1
    assert entry["uris"][0].startswith("file://") and entry["fileNames"] == [sample.file_name]
    if sample.bundled:
        assert entry["checksums"] == [f"SHA256:{sample.sha256}"]
    node = entry["customDownloader"](object())  # what the Sample Data module's button calls
    assert node.GetName() == sample.node_name and node.GetScene() is mrml_scene.scene
    assert check_ct(volume_from_node(node)) == []
    if not sample.bundled:  # the URI names the file the phantom was made into
        assert Path(entry["uris"][0][len("file://"):]).is_file()


def test_startup_loads_the_terminology_and_registers_the_sample(mrml_scene, sample_data_module, monkeypatch):
    """``startup_completed`` (connected to startupCompleted() by each module) does both, and a failure in
    one is logged, not raised into Slicer's start-up."""
    import slicer

    from headseg.labels import HEADSEG_TERMINOLOGY_CONTEXT
    from headseg.slicer.panel import SAMPLE_THUMBNAILS, startup_completed

    logic = slicer.vtkSlicerTerminologiesModuleLogic()
    monkeypatch.setattr(slicer.modules, "terminologies", types.SimpleNamespace(logic=lambda: logic), raising=False)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(cachePath=str(mrml_scene.temp_dir)), raising=False)
    startup_completed("orbit", str(DATA_DIRS["orbit"]))
    assert logic.IsTerminologyContextLoaded(HEADSEG_TERMINOLOGY_CONTEXT)
    assert [e["sampleName"] for e in sample_data_module] == [sample_data.SAMPLES["orbit"].name]
    assert Path(sample_data_module[0]["thumbnailFileName"]).name == SAMPLE_THUMBNAILS["orbit"]
    monkeypatch.delitem(sys.modules, "SampleData")  # no Sample Data module: start-up goes on
    startup_completed("han", str(DATA_DIRS["han"]))


@pytest.mark.parametrize("module,task", [("OrbitSegmentation", "orbit"), ("AnatomyNetHaN", "han")])
def test_each_module_runs_the_startup_step_once_slicer_has_started(module, task):
    tree = ast.parse((REPO / module / f"{module}.py").read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == module)
    init = ast.unparse(next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"))
    assert "slicer.app.connect('startupCompleted()'" in init
    assert f"startup_completed('{task}', self.resourcePath('SampleData'))" in init
    from headseg.slicer.panel import SAMPLE_THUMBNAILS

    assert (DATA_DIRS[task] / SAMPLE_THUMBNAILS[task]).is_file()
