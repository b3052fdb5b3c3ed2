"""The `headseg` command end to end, in a subprocess, on phantoms, with a model package built here."""

from __future__ import annotations

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from model_factory import write_tiny_orbit_package

from headseg.errors import ExitCode, InputError
from headseg.io.cases import discover_cases

REPO = Path(__file__).resolve().parents[2]


def headseg(*args, check_code=0):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "headseg", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == check_code, f"exit {proc.returncode}\nstdout:{proc.stdout}\nstderr:{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantoms")
    headseg("phantom", "-o", out, "--cases", 2, "--seed", 3)
    return out


def test_phantom_command_writes_cases(phantom_dir):
    cases = sorted(p for p in phantom_dir.iterdir() if p.is_dir())
    assert len(cases) == 2
    for case in cases:
        assert [c for c in discover_cases([str(case)])][0][0] == case.name


def test_segment_evaluate_end_to_end(phantom_dir, tmp_path):
    package = write_tiny_orbit_package(tmp_path / "models" / "tiny")
    out = tmp_path / "out"
    proc = headseg("segment", phantom_dir, "--task", "orbit", "--model", package.path, "-o", out,
                   "--progress-format", "json", "--device", "cpu")
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    results = [e for e in events if e["event"] == "result"]
    assert len(results) == 2
    fractions = [e["fraction"] for e in events if e["event"] == "progress"]
    assert fractions and max(fractions) == pytest.approx(1.0)
    messages = [e["message"] for e in events if e["event"] == "progress"]
    assert all(len(m) <= 40 and "window" not in m for m in messages), "plain words, whole in the bar"

    from headseg.io import read_segmentation, read_volume
    from headseg.labels import get_label_set

    for result in results:
        case = result["case"]
        seg = read_segmentation(result["segmentation"], get_label_set("orbit"))
        image = read_volume(phantom_dir / case / "image.nrrd")
        assert seg.same_geometry(image), "the segmentation must be on the input grid"
        rows = list(csv.DictReader(open(result["volumes_csv"])))
        assert list(rows[0].keys()) == ["structure", "side", "voxels", "volume_cm3", "doubt", "flags", "key"]
        assert all(r["key"] == f"{r['structure']}_{r['side']}" for r in rows)
        assert {r["side"] for r in rows} == {"right", "left"}
        for r in rows:  # numbers are voxel count x voxel volume, exactly
            assert float(r["volume_cm3"]) == pytest.approx(int(r["voxels"]) * image.voxel_volume_mm3 / 1000, abs=1e-4)
        sr = [r for r in rows if r["structure"] == "superior_rectus" and r["side"] == "right"][0]
        assert int(sr["voxels"]) == int(np.sum(seg.array == 1))
    batch = list(csv.DictReader(open(out / "volumes.csv")))
    assert list(batch[0].keys())[0] == "case"
    assert {r["case"] for r in batch} == {r["case"] for r in results}

    # Re-running into the same folder refuses to overwrite unless asked.
    proc = headseg("segment", phantom_dir, "--task", "orbit", "--model", package.path, "-o", out,
                   check_code=ExitCode.INPUT)
    assert "--overwrite" in proc.stderr and "Traceback" not in proc.stderr

    report = tmp_path / "report.csv"
    headseg("evaluate", out, phantom_dir, "--task", "orbit", "-o", report)
    rows = list(csv.DictReader(open(report)))
    assert len(rows) == 2 * 10
    assert set(rows[0]) >= {"case", "structure", "dsc", "iou", "sensitivity", "specificity", "hd95_mm", "assd_mm",
                            "pred_volume_cm3", "ref_volume_cm3"}
    summary = list(csv.DictReader(open(tmp_path / "report_summary.csv")))
    assert {"dsc_mean", "dsc_std"} <= set(summary[0])


def test_evaluate_skips_structures_missing_from_reference(tmp_path):
    from headseg.geometry import Volume
    from headseg.io import write_labelmap

    ref = np.zeros((10, 20, 20), np.uint8)
    ref[2:6, 5:10, 5:10] = 1  # only structure 1 was contoured
    pred = ref.copy()
    pred[2:6, 12:15, 12:15] = 2  # a predicted structure the reference never drew
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    write_labelmap(Volume(pred), tmp_path / "pred" / "c1.nrrd")
    write_labelmap(Volume(ref), tmp_path / "gt" / "c1.nrrd")
    headseg("evaluate", tmp_path / "pred", tmp_path / "gt", "--task", "orbit", "-o", tmp_path / "r.csv")
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [r["structure"] for r in rows] == ["superior_rectus_right"]
    assert float(rows[0]["dsc"]) == pytest.approx(1.0)


def test_clear_errors_and_exit_codes(tmp_path, phantom_dir):
    proc = headseg("segment", tmp_path / "missing.nrrd", "--task", "orbit", "-o", tmp_path / "o", check_code=ExitCode.INPUT)
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    bad_model = tmp_path / "badmodel"
    bad_model.mkdir()
    proc = headseg("segment", phantom_dir, "--task", "orbit", "--model", bad_model, "-o", tmp_path / "o",
                   check_code=ExitCode.MODEL)
    assert "model.json" in proc.stderr
    (tmp_path / "notct.nii.gz").write_bytes(b"this is not an image")
    proc = headseg("segment", tmp_path / "notct.nii.gz", "--task", "orbit", "-o", tmp_path / "o",
                   check_code=ExitCode.INPUT)
    assert "Traceback" not in proc.stderr
    with pytest.raises(InputError, match="No CT images"):
        discover_cases([str(tmp_path / "o")] if (tmp_path / "o").exists() else [str(bad_model)])


def test_models_command_lists_the_demo_model():
    proc = headseg("models")
    assert "orbit" in proc.stdout and "SYNTHETIC" in proc.stdout
    listed = json.loads(headseg("models", "--json").stdout)
    assert any(m["task"] == "orbit" and m.get("default") for m in listed)


def test_structures_takes_keys_display_and_tg263_names_in_any_case(phantom_dir, tmp_path):
    from headseg.io import read_segmentation
    from headseg.labels import get_label_set

    package = write_tiny_orbit_package(tmp_path / "models" / "tiny")
    out = tmp_path / "out"
    headseg("segment", phantom_dir / "phantom_000", "--task", "orbit", "--model", package.path, "-o", out,
            "--structures", "Musc_RectusSup_R, LEFT OPTIC NERVE,medial_rectus_left", "--device", "cpu",
            "--progress-format", "none", "--no-uncertainty")
    orbit = get_label_set("orbit")
    values = set(np.unique(read_segmentation(out / "phantom_000.seg.nrrd", orbit).array).tolist()) - {0}
    assert values <= {orbit.by_key(k).label for k in ("superior_rectus_right", "optic_nerve_left",
                                                      "medial_rectus_left")}


def test_a_misspelt_structure_is_refused_with_the_nearest_key_before_the_model_loads(phantom_dir, tmp_path,
                                                                                  monkeypatch, capsys):
    from headseg import cli
    from headseg.segment import packages

    package = write_tiny_orbit_package(tmp_path / "models" / "tiny")
    monkeypatch.setattr(packages.ModelPackage, "load_model", lambda *a, **k: pytest.fail("the model was loaded"))
    code = cli.main(["segment", str(phantom_dir / "phantom_000"), "--task", "orbit", "--model", str(package.path),
                     "-o", str(tmp_path / "out"), "--structures", "superior_rectus_rigth", "--progress-format", "none"])
    err = capsys.readouterr().err
    assert code == ExitCode.INPUT
    assert "Did you mean 'superior_rectus_right'" in err and "Musc_RectusSup_R" in err
    assert not (tmp_path / "out" / "phantom_000.seg.nrrd").exists()


def test_flags_and_warnings_reach_stderr_without_progress(phantom_dir, tmp_path):
    """--progress-format none silences progress, not warnings; the run ends with every flag in words,
    the same flags as the CSV holds."""
    from headseg.measure.flag_words import FLAG_INTRO

    package = write_tiny_orbit_package(tmp_path / "models" / "tiny")
    out = tmp_path / "out"
    proc = headseg("segment", phantom_dir / "phantom_000", "--task", "orbit", "--model", package.path, "-o", out,
                   "--device", "cpu", "--progress-format", "none", "--no-uncertainty")
    assert "Warning: Model tiny-orbit-test was trained on synthetic phantoms" in proc.stderr
    assert "%|" not in proc.stderr, "no progress bar"
    rows = list(csv.DictReader(open(out / "phantom_000_volumes.csv")))
    flagged = [r for r in rows if r["flags"]]
    assert flagged, "a tiny untrained model leaves structures empty or implausible"
    lines = proc.stderr.split(FLAG_INTRO)[1].strip().splitlines()
    assert len(lines) == len(flagged)
    words = {"empty": "empty (nothing was segmented)", "volume_low": "volume below the plausible range",
             "volume_high": "volume above the plausible range", "asymmetric": "asymmetric (",
             "fragmented": "fragmented (over 10%", "wrong_side": "on the other side of the patient's midline"}
    for line, row in zip(lines, flagged):
        name = f"{row['side']} {row['structure'].replace('_', ' ')}".strip()
        assert line.strip().startswith(f"phantom_000: {name}"), line
        for flag in row["flags"].split(";"):
            assert words[flag] in line, (flag, line)


def _openkbp_like(labels_value_boxes, shape=(12, 24, 24)):
    from headseg.geometry import Volume

    array = np.zeros(shape, np.uint8)
    for value, box in labels_value_boxes:
        array[box] = value
    return Volume(array, spacing=(2.0, 2.0, 2.5))


def test_evaluate_skips_side_files_suspect_and_excluded_contours_and_says_so(tmp_path, capsys):
    """A 'segment' folder (segmentations and uncertainty maps) against OpenKBP-style references: the
    uncertainty maps are not cases, OpenKBP's suspect cord is not scored, an exclude list removes more,
    and the summary reads 'mean ± SD' for several cases, the value alone for one."""
    from headseg.cli import main
    from headseg.io import write_labelmap, write_segmentation, write_volume
    from headseg.labels import get_label_set

    openkbp = get_label_set("openkbp")
    boxes = [(1, np.s_[2:6, 4:10, 4:10]), (2, np.s_[2:10, 14:17, 11:14]), (7, np.s_[6:10, 4:12, 14:22])]
    pred, root = tmp_path / "pred", tmp_path / "openkbp"
    pred.mkdir()
    for case in ("pt_1", "pt_2", "pt_9"):
        labels = _openkbp_like(boxes)
        write_segmentation(labels, openkbp, pred / f"{case}.seg.nrrd")
        write_volume(labels.with_array(np.full(labels.shape, 0.2, np.float32)), pred / f"{case}_uncertainty.nrrd")
        if case != "pt_9":  # pt_9 has no reference
            shifted = labels.with_array(np.roll(labels.array, 1 if case == "pt_1" else 2, axis=2))
            (root / "test" / case).mkdir(parents=True)
            write_labelmap(shifted, root / "test" / case / "labels.nii.gz")
    (root / "manifest.csv").write_text("split,patient,flag\ntest,pt_1,suspect_SpinalCord_PRV\ntest,pt_2,\n")
    exclude = tmp_path / "exclude.csv"
    exclude.write_text("case,structure\npt_2,Bone_Mandible\n")
    out = tmp_path / "r.csv"
    assert main(["evaluate", str(pred), str(root / "test"), "--task", "han", "-o", str(out), "--exclude",
                 str(exclude), "--progress-format", "none"]) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader(open(out)))
    assert {(r["case"], r["structure"]) for r in rows} == {
        ("pt_1", "brainstem"), ("pt_1", "mandible"), ("pt_2", "brainstem"), ("pt_2", "spinal_cord")}
    assert "Scored 2 of 3 case(s):" in printed and "uncertainty" not in printed
    assert "No reference, not scored: pt_9." in printed
    assert "Not scored in pt_1 (suspect or excluded contour): spinal_cord." in printed
    assert "Not scored in pt_2 (suspect or excluded contour): mandible." in printed
    line = {ln.split()[0]: ln for ln in printed.splitlines() if ln.startswith("  ") and "structure" not in ln}
    assert re.search(r"brainstem\s+2\s+0\.\d{3} ± 0\.\d{3}\s+\d+\.\d ± \d+\.\d$", line["brainstem"])
    assert re.search(r"spinal_cord\s+1\s+0\.\d{3}\s+\d+\.\d$", line["spinal_cord"]), "one case: no ±"


def test_every_argument_has_help_and_model_dir_only_where_it_does_something():
    import argparse

    from headseg.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, sub in subparsers.choices.items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help and action.help.strip(), f"headseg {name} {action.option_strings or action.dest}"
        has_model_dir = any("--model-dir" in a.option_strings for a in sub._actions)
        assert has_model_dir == (name in ("segment", "models")), name
    text = subparsers.choices["segment"].format_help()
    assert "parotid_left (Parotid_L)" in text and "superior_rectus_right (Musc_RectusSup_R)" in text


def test_models_lists_each_models_structures_in_plain_words():
    out = headseg("models").stdout
    assert "segments: superior_rectus_right (Musc_RectusSup_R)" in out
    assert "parotid_left (Parotid_L)" in out and "mandible (Bone_Mandible)" in out
    for jargon in ("seed paper", "seed 00", "headseg.segment.pipeline", "window None", "label set"):
        assert jargon not in out, jargon
