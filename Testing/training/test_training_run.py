"""The training loop end to end on synthetic phantoms (CPU, small): a tiny SV-net overfits a phantom,
a resumed run repeats an uninterrupted one exactly, and the exported package segments a new phantom
through ``headseg.segment.pipeline``."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from headseg.segment.packages import load_package
from headseg.synth.phantoms import make_head_phantom, write_phantom_cases
from training.cli import main as train_main
from training.config import load_config
from training.engine import checkpoint_path, train

PHANTOM_GRID = {"spacing": (0.8, 0.8, 1.5)}  # coarser than the default: quick to write, read and resample


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantoms")
    write_phantom_cases(str(folder), 2, seed=5, **PHANTOM_GRID)
    return folder


def _tiny_recipe(extra=()):
    return load_config(None, [
        "name=test-orbit-tiny",
        'model.params={"base_channels": 8}',
        "input.spacing_mm=[1.25,1.25,1.5]",
        "input.window_kji=[32,48,48]",
        'inference={"step_k": 32, "batch_size": 1}',
        'loss={"type": "hybrid", "activation": "softmax"}',
        'optimizer.phases=[{"type": "adam", "lr": 0.005, "epochs": 20}]',
        "batch_size=1",
        "samples_per_epoch=5",
        "augment.enabled=false",
        'split={"type": "lists", "train": ["phantom_000"], "validation": ["phantom_000"]}',
        "data.crop_source=labels",
        "num_threads=2",
        *extra,
    ])


@pytest.fixture(scope="module")
def overfit_run(phantom_dir, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    torch_threads = torch.get_num_threads()
    start = time.perf_counter()
    try:
        result = train(_tiny_recipe(), phantom_dir, run_dir, progress=False, command="pytest overfit",
                       callback=lambda row: row["val_mean_dsc"] > 0.92)
    finally:
        torch.set_num_threads(torch_threads)
    return result, time.perf_counter() - start


def test_tiny_model_overfits_a_phantom(overfit_run):
    result, seconds = overfit_run
    assert result.best_metric > 0.9, [round(h["val_mean_dsc"], 3) for h in result.history]
    print(f"overfit: {len(result.history)} epochs, {seconds:.0f} s")
    assert seconds < 600  # about a minute on two free cores; generous for shared machines
    run = result.run_dir
    for name in ("config.json", "metrics.csv", "training_curve.png", "data_report.json", "log.txt"):
        assert (run / name).is_file(), name
    assert checkpoint_path(run, "best").is_file() and checkpoint_path(run, "last").is_file()
    rows = (run / "metrics.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("epoch,phase,optimizer,lr,train_loss,val_mean_dsc,val_dsc_superior_rectus")
    assert len(rows) == 1 + len(result.history)


def test_exported_package_loads_and_segments_a_new_phantom(overfit_run):
    from headseg.measure.metrics import dice
    from headseg.segment.pipeline import segment_volume

    result, _ = overfit_run
    package = load_package(result.package_dir)
    card = package.card.to_dict()  # model.json as written
    assert card["synthetic"] is True and "NOT for clinical use" in card["intended_use"]
    assert card["training"]["split"]["train"] == ["phantom_000"]
    assert card["training"]["best_epoch"] == result.best_epoch and card["training"]["training_seconds"] > 0
    assert set(card["metrics"]["per_structure"]) >= {"superior_rectus_right", "optic_nerve_left"}
    model = package.load_model("cpu")
    assert not model.training
    phantom = make_head_phantom(seed=11, **PHANTOM_GRID)
    out = segment_volume(phantom.image, package, device="cpu", model=model)
    assert out.labelmap.same_geometry(phantom.image)
    found = set(np.unique(out.labelmap.array).tolist()) - {0}
    assert found <= set(range(1, 11)) and found & {1, 2, 3, 4, 5} and found & {6, 7, 8, 9, 10}
    # A different phantom than the one trained on: overlap well above chance for the large muscles.
    scores = [dice(out.labelmap.array == v, phantom.labels.array == v) for v in (2, 3, 4, 7, 8, 9)]
    assert np.nanmean(scores) > 0.3, scores


def test_export_can_change_what_the_card_claims_not_the_weights(overfit_run, tmp_path):
    """``headseg-train export --set``: a run's package made the default, with the note of its own generator."""
    from training.cli import main as train_main

    result, _ = overfit_run
    note = "Trained ONLY on SYNTHETIC heads of another generator (a test)."
    out = tmp_path / "pkg"
    code = train_main(["export", "--run", str(result.run_dir), "--out", str(out), "--no-evaluate",
                       "--set", "export.default=true", "--set", f"export.synthetic_note={note}"])
    assert code == 0
    card = load_package(out).card.to_dict()
    original = load_package(result.package_dir).card.to_dict()
    assert card["default"] is True and original["default"] is False
    assert card["intended_use"] == note and note in card["description"]
    assert "headseg.synth.phantoms" not in card["description"]  # not the geometric phantoms' note
    assert card["weights"]["sha256"] == original["weights"]["sha256"]


def test_resume_continues_exactly(phantom_dir, tmp_path):
    extra = ['model.params={"base_channels": 2}', "input.window_kji=[16,48,48]", 'inference={"step_k": 8}',
             'optimizer.phases=[{"type": "adam", "lr": 0.01, "epochs": 1}, '
             '{"type": "sgd", "lr": 0.01, "momentum": 0.9, "epochs": 2, "schedule": "cosine"}]',
             "batch_size=2", "samples_per_epoch=4", "augment.enabled=true", "augment.probability=1.0",
             'split={"type": "lists", "train": ["phantom_000", "phantom_001"], "validation": ["phantom_001"]}',
             "validation.patience=0"]
    config = _tiny_recipe(extra)
    straight = train(config, phantom_dir, tmp_path / "straight", progress=False, export=False)
    first = train(config, phantom_dir, tmp_path / "resumed", progress=False, export=False, stop_after_epochs=2)
    assert first.epochs_done == 2
    resumed = train(None, phantom_dir, tmp_path / "resumed", resume=True, progress=False, export=False)
    assert resumed.epochs_done == straight.epochs_done == 3
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert [h["optimizer"] for h in resumed.history] == ["adam", "sgd", "sgd"]
    a = torch.load(checkpoint_path(tmp_path / "straight"), weights_only=True)
    b = torch.load(checkpoint_path(tmp_path / "resumed"), weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert torch.equal(a["optimizer"]["state"][0]["momentum_buffer"], b["optimizer"]["state"][0]["momentum_buffer"])


def test_cli_validate_data_and_overrides(phantom_dir, tmp_path, capsys):
    assert train_main(["validate-data", "--data", str(phantom_dir), "--task", "orbit", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["usable"] == ["phantom_000", "phantom_001"]
    assert train_main(["validate-data", "--data", str(tmp_path)]) == 2  # an empty folder: a clear error
    assert "No cases found" in capsys.readouterr().err
    config = load_config("anatomynet_seed004", ["label_set=openkbp", "optimizer.phases.1.lr=0.0005"])
    assert config["optimizer"]["phases"][1] == {"type": "sgd", "lr": 0.0005, "momentum": 0.9, "epochs": 50}
    assert config["loss"]["masked"] and config["loss"]["weighted"] and config["batch_size"] == 1
    with pytest.raises(ValueError, match="Unknown recipe key"):
        load_config("svnet_seed000", ["learning_rate=0.1"])
    for name in ("svnet_seed000", "anatomynet_seed004", "orbit_demo_cpu"):
        from training.card import build_card

        card = build_card(load_config(name))
        assert card.classes[0] == "background"


def test_fine_tuning_starts_from_a_package_and_mirroring_is_refused_for_sided_classes(overfit_run, phantom_dir,
                                                                                        tmp_path):
    """``init_weights``: a run started from the overfitted package is already as good as it at epoch 1 (a run
    from scratch is not), and a recipe that would mirror the orbit's sided classes stops with a sentence."""
    result, _ = overfit_run
    extra = [f"init_weights={result.package_dir}", 'optimizer.phases=[{"type": "adam", "lr": 1e-5, "epochs": 1}]']
    tuned = train(_tiny_recipe(extra), phantom_dir, tmp_path / "tuned", progress=False, export=False)
    assert tuned.history[0]["val_mean_dsc"] > 0.85, tuned.history
    assert "Started from the weights of" in (tmp_path / "tuned" / "log.txt").read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="swap the labels of sided classes"):
        train(_tiny_recipe(["augment.enabled=true", "augment.mirror_probability=0.5"]), phantom_dir,
              tmp_path / "mirrored", progress=False, export=False)
    with pytest.raises(ValueError, match="does not fit this recipe's network"):
        train(_tiny_recipe([f"init_weights={result.package_dir}", 'model.params={"base_channels": 4}']), phantom_dir,
              tmp_path / "misfit", progress=False, export=False)
