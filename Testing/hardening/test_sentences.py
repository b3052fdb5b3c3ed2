"""Where a traceback or exit 1 used to stand, one sentence and exit 2 or 3: boxes that are not numbers or
not in the image, mistyped model cards, checkpoints that are not HeadSeg's, run records and volume
tables that are not what ``report`` expects; and the notes a strange but usable image gets."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hardening_factory import head_ct, run_cli
from model_factory import write_tiny_orbit_package

from headseg.io import write_volume
from headseg.synth.phantoms import make_head_phantom


@pytest.fixture(scope="module")
def orbit_package(tmp_path_factory):
    return write_tiny_orbit_package(tmp_path_factory.mktemp("models") / "tiny-orbit-test")


@pytest.fixture(scope="module")
def orbit_ct(tmp_path_factory):
    return write_volume(make_head_phantom().image, tmp_path_factory.mktemp("ct") / "ct.nrrd")


ROIS = {
    "nan": "nan,0,0,100,80,60",
    "infinite size": "0,0,0,inf,80,60",
    "infinite centre": "-inf,0,0,100,80,60",
    "two metres": "0,0,0,2000,80,60",
    "outside the image": "0,5000,0,100,80,60",
    "huge centre": "1e308,0,0,100,80,60",
}


@pytest.mark.parametrize("name", sorted(ROIS))
def test_a_bad_roi_gets_a_sentence_and_exit_2(name, orbit_package, orbit_ct, tmp_path):
    run = run_cli(["segment", orbit_ct, "--task", "orbit", "--model", orbit_package.path, "-o", tmp_path / "out",
                   "--device", "cpu", "--progress-format", "none", f"--roi={ROIS[name]}"], f"--roi {name}")
    assert run.code == 2 and not run.traceback_shown, run.stderr
    assert "region of interest" in run.stderr or "--roi" in run.stderr
    assert not (tmp_path / "out").exists()


def test_a_sheared_image_is_segmented_with_a_note(tmp_path, han_package):
    shear = math.radians(10)
    direction = np.array([[1.0, math.sin(shear), 0.0], [0.0, math.cos(shear), 0.0], [0.0, 0.0, 1.0]])
    path = write_volume(head_ct(direction=direction), tmp_path / "sheared.nrrd")
    run = run_cli(["segment", path, "--task", "han", "--model", han_package.path, "-o", tmp_path / "out",
                   "--device", "cpu", "--progress-format", "none"], "sheared direction")
    assert run.code == 0, run.stderr
    notes = json.loads((tmp_path / "out" / "sheared_run.json").read_text(encoding="utf-8"))["notes"]
    assert any("not perpendicular (sheared by 10.0 degrees" in n for n in notes), notes


# -- model cards with mistyped fields -----------------------------------------------------------------
CARD_EDITS = {
    "spacing as strings": lambda c: c["input"].__setitem__("spacing_mm", ["2", "2", "2.5"]),
    "weights null": lambda c: c.__setitem__("weights", None),
    "window -1 0 5": lambda c: c["input"].__setitem__("window_kji", [-1, 0, 5]),
    "base_channels 200000": lambda c: c["architecture_params"].__setitem__("base_channels", 200000),
    "input null": lambda c: c.__setitem__("input", None),
    "normalization a string": lambda c: c["input"].__setitem__("normalization", "window"),
    "patch of zeros": lambda c: c.setdefault("inference", {}).__setitem__("patch_kji", [0, 0, 0]),
}


@pytest.mark.parametrize("name", sorted(CARD_EDITS))
def test_a_mistyped_model_card_gets_a_sentence_and_exit_3(name, orbit_package, orbit_ct, tmp_path):
    folder = tmp_path / "pkg"
    shutil.copytree(orbit_package.path, folder)
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    CARD_EDITS[name](card)
    (folder / "model.json").write_text(json.dumps(card))
    run = run_cli(["segment", orbit_ct, "--task", "orbit", "--model", folder, "-o", tmp_path / "out", "--device",
                   "cpu", "--progress-format", "none"], f"model card: {name}")
    assert run.code == 3 and not run.traceback_shown, run.stderr
    assert "model card" in run.stderr and "Unexpected" not in run.stderr


# -- checkpoints that are not headseg-train's -----------------------------------------------------------
class _Payload:
    """Unpickling this would create the file it names: a malicious checkpoint."""

    def __init__(self, target: str) -> None:
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def _bad_checkpoints(tmp_path: Path):
    import torch

    marker = tmp_path / "the_payload_ran"
    yield "garbage", lambda p: p.write_bytes(b"this is not a checkpoint" * 100), marker
    yield "malicious pickle", lambda p: torch.save({"format": 1, "x": _Payload(str(marker))}, p), marker
    yield "foreign dict", lambda p: torch.save({"format": 1, "model": {}}, p), marker
    yield "a tensor", lambda p: torch.save(torch.zeros(3), p), marker


@pytest.mark.parametrize("command", ["train --resume", "export"])
def test_a_bad_checkpoint_gets_a_sentence_and_nothing_in_it_runs(command, tmp_path, capsys):
    from training.cli import main as train_main

    data = tmp_path / "data"
    data.mkdir()
    for name, write, marker in _bad_checkpoints(tmp_path):
        run_dir = tmp_path / name.replace(" ", "_")
        (run_dir / "checkpoints").mkdir(parents=True)
        write(run_dir / "checkpoints" / "last.pt")
        args = (["train", "--resume", "--data", str(data), "--out", str(run_dir), "--quiet"] if command != "export"
                else ["export", "--run", str(run_dir), "--no-evaluate"])
        code = train_main(args)
        said = capsys.readouterr()
        assert code == 2, (name, code, said.err)
        assert "headseg-train checkpoint" in said.out + said.err and "Traceback" not in said.err, said
        assert not marker.exists(), name  # weights_only: the payload never ran


# -- report: files that are not what it expects -----------------------------------------------------------
@pytest.fixture(scope="module")
def result_folder(tmp_path_factory, han_package):
    folder = tmp_path_factory.mktemp("results")
    ct = write_volume(head_ct(), folder / "ct.nrrd")
    run = run_cli(["segment", ct, "--task", "han", "--model", han_package.path, "-o", folder / "out", "--device",
                   "cpu", "--no-uncertainty", "--progress-format", "none"], "segment for report tests")
    assert run.code == 0, run.stderr
    return folder / "out"


DAMAGE = {
    "run.json not JSON": ("ct_run.json", b"{not json"),
    "run.json a list": ("ct_run.json", b"[1, 2]"),
    "run.json seconds a string": ("ct_run.json", b'{"model": "m", "seconds": "fast"}'),
    "run.json notes a number": ("ct_run.json", b'{"notes": 5}'),
    "volumes csv binary": ("ct_volumes.csv", bytes(range(256)) * 4),
    "volumes csv other columns": ("ct_volumes.csv", b"name,value\nx,1\n"),
    "volumes csv volume not a number": ("ct_volumes.csv", b"structure,side,voxels,volume_cm3\nbrainstem,,3,lots\n"),
}


@pytest.mark.parametrize("name", sorted(DAMAGE))
def test_report_of_a_damaged_result_gets_a_sentence_and_exit_2(name, result_folder, tmp_path):
    folder = tmp_path / "results"
    shutil.copytree(result_folder, folder)
    file_name, content = DAMAGE[name]
    (folder / file_name).write_bytes(content)
    run = run_cli(["report", folder, "-o", tmp_path / "report.html"], f"report: {name}")
    assert run.code == 2 and not run.traceback_shown, run.stderr
    assert file_name in run.stderr and not (tmp_path / "report.html").exists()


def test_report_never_writes_its_page_over_a_ct(result_folder, tmp_path):
    ct = write_volume(head_ct(), tmp_path / "ct.nrrd")
    before = ct.read_bytes()
    run = run_cli(["report", result_folder, "-o", ct, "--overwrite"], "report -o ct.nrrd --overwrite")
    assert run.code == 2 and ".html" in run.stderr and ct.read_bytes() == before


# -- inputs and outputs that are not files or folders ---------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_and_self_links_get_a_sentence(tmp_path, han_package):
    os.mkfifo(tmp_path / "pipe.nrrd")
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    ct = write_volume(head_ct(), tmp_path / "ct.nrrd")
    for inputs, out, expected in (([tmp_path / "pipe.nrrd"], tmp_path / "o1", "neither a file nor a folder"),
                                  ([tmp_path / "loop"], tmp_path / "o2", "symbolic link to nothing"),
                                  ([ct], tmp_path / "loop", "symbolic link to nothing"),
                                  ([ct], tmp_path / "pipe.nrrd", "exists and is not a folder")):
        run = run_cli(["segment", *inputs, "--task", "han", "--model", han_package.path, "-o", out, "--device", "cpu",
                       "--progress-format", "none"], f"not a file: {expected}")
        assert run.code == 2 and expected in run.stderr and "Not a directory" not in run.stderr, run.stderr
