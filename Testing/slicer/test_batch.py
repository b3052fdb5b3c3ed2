"""The headless batch: ``segment_folder`` (the core of the modules' batch scripts) and the script itself.

In Slicer the script runs as ``Slicer --no-main-window --python-script OrbitSegmentationBatch.py ...``; here the same
file runs under plain Python, where ``batch_main`` builds a headless MRML scene with slicer-core.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("slicer", reason="slicer-core is not installed")
pytest.importorskip("torch", reason="torch is needed by the headseg segment child process")

from headseg.errors import InputError  # noqa: E402
from headseg.io import read_segmentation, read_volume, write_volume  # noqa: E402
from headseg.labels import get_label_set  # noqa: E402
from headseg.measure.volumes import REVIEW_COLUMNS, volume_table  # noqa: E402
from headseg.slicer import batch, runs, scene, segments  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ORBIT = get_label_set("orbit")


def node_classes(mrml) -> list:
    return sorted(mrml.GetNthNode(n).GetClassName() for n in range(mrml.GetNumberOfNodes()))


@pytest.fixture
def case_folder(tmp_path, small_phantom, oblique_phantom):
    folder = tmp_path / "in"
    folder.mkdir()
    mr_like = np.clip(small_phantom.image.array + 1000, 0, 600).astype(np.int16)  # not Hounsfield units
    write_volume(small_phantom.image.with_array(mr_like), folder / "a_mr.nrrd")
    write_volume(oblique_phantom.image, folder / "oblique.nii.gz")
    return folder


def test_segment_folder_writes_per_case_files_and_leaves_the_scene_clean(mrml_scene, case_folder, tmp_path,
                                                                   tiny_orbit_package, oblique_phantom):
    out = tmp_path / "out"
    before = node_classes(mrml_scene.scene)
    lines = []
    report = batch.segment_folder("orbit", case_folder, out, model=str(tiny_orbit_package.path), device="cpu",
                             log=lines.append)
    outcomes = report.outcomes
    # a case that cannot be used is reported and the batch goes on with the next one
    assert [(o.case.name, o.state) for o in outcomes] == [("a_mr", "failed"), ("oblique", "succeeded")]
    assert "Hounsfield" in outcomes[0].message and not (out / "a_mr.seg.nrrd").exists()
    assert not (out / "a_mr_uncertainty.nrrd").exists() and not (out / "a_mr_volumes.csv").exists()
    assert node_classes(mrml_scene.scene) == before, "every node of a case is removed after it"
    assert lines[0] == "[1/2] a_mr" and any("failed" in line for line in lines)

    # the oblique case: the segmentation Slicer wrote is on the input's oblique grid and matches the CSV
    labels = read_segmentation(out / "oblique.seg.nrrd", ORBIT)
    assert labels.same_geometry(oblique_phantom.image)
    with open(out / "oblique_volumes.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    expected = volume_table(labels, ORBIT)
    assert [(r["structure"], r["side"], int(r["voxels"])) for r in rows] == [
        (r.structure, r.side, r.voxels) for r in expected]
    assert list(rows[0]) == list(REVIEW_COLUMNS)
    structures = [r for r in rows if r["structure"] != "extraocular_muscles"]  # totals have no doubt
    assert all((r["doubt"] != "") == (int(r["voxels"]) > 0) for r in structures)
    assert all("empty" in r["flags"].split(";") for r in structures if int(r["voxels"]) == 0)
    # the uncertainty map the child made, saved by Slicer's writer on the input's grid, values in [0, 1]
    uncertainty = read_volume(out / "oblique_uncertainty.nrrd")
    assert uncertainty.same_geometry(oblique_phantom.image, tol=1e-3)
    assert 0.0 <= float(uncertainty.array.min()) and float(uncertainty.array.max()) <= 1.0
    with open(out / "volumes.csv", newline="") as f:
        combined = list(csv.DictReader(f))
    assert {r["case"] for r in combined} == {"oblique"} and len(combined) == len(rows)

    with pytest.raises(InputError, match="already exist"):
        batch.segment_folder("orbit", case_folder, out, model=str(tiny_orbit_package.path), device="cpu",
                       log=lines.append)


def test_batch_script_runs_headless(tmp_path, small_phantom, tiny_orbit_package):
    folder = tmp_path / "in"
    folder.mkdir()
    write_volume(small_phantom.image, folder / "case1.nrrd")
    out = tmp_path / "out"
    script = REPO / "OrbitSegmentation" / "Resources" / "Scripts" / "OrbitSegmentationBatch.py"
    proc = subprocess.run([sys.executable, str(script), "--input-dir", str(folder), "--output-dir", str(out),
                           "--model", str(tiny_orbit_package.path), "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "case1.seg.nrrd").is_file() and (out / "case1_volumes.csv").is_file()
    assert "1 of 1 case(s) segmented" in proc.stdout

    bad = subprocess.run([sys.executable, str(script), "--input-dir", str(tmp_path / "nowhere"),
                          "--output-dir", str(out)], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "does not exist" in bad.stdout
    assert "Traceback" not in bad.stdout + bad.stderr


def test_segment_mask_matches_slicer_resampling(mrml_scene, small_phantom, tmp_path):
    """The fast copy of a segment onto the input grid equals Slicer's own export (used under transforms)."""
    from headseg.io import write_segmentation

    ct = scene.node_from_volume(small_phantom.image, "CT")
    path = write_segmentation(small_phantom.labels, ORBIT, tmp_path / "t.seg.nrrd")
    node = segments.import_segmentation_file(path, ORBIT, ct)
    reference = scene.volume_from_node(ct)
    before = node_classes(mrml_scene.scene)
    for key in ("superior_rectus_right", "optic_nerve_left"):
        fast = segments.segment_mask(node, key, reference, ct)
        slow = segments._export_segment_with_slicer(node, key, ct) > 0
        assert np.array_equal(fast, slow)
        assert np.array_equal(fast, small_phantom.labels.array == ORBIT.by_key(key).label)
    assert node_classes(mrml_scene.scene) == before, "no helper node is left behind"


def test_batch_self_test_passes_with_a_model_and_fails_with_the_wrong_one(tiny_orbit_package, tiny_han_package):
    """What the modules' <Module>BatchTest.py run inside Slicer, here in plain Python."""
    if runs.missing_packages():
        pytest.skip(f"missing Python packages: {runs.missing_packages()}")
    batch.batch_self_test("orbit", model=str(tiny_orbit_package.path))
    with pytest.raises(AssertionError, match="exited with 2"):
        batch.batch_self_test("orbit", model=str(tiny_han_package.path))
