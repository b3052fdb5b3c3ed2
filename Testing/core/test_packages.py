"""Model packages: cards validated, weights checksummed, broken packages explained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_factory import tiny_orbit_card, write_tiny_orbit_package

from headseg.errors import ModelPackageError
from headseg.segment.packages import (
    SHIPPED_DIR,
    default_package,
    find_package,
    list_packages,
    load_package,
    write_package,
)


def test_round_trip_gives_identical_network(tiny_orbit_package):
    package = load_package(tiny_orbit_package.path)
    assert package.card.weights.sha256 == tiny_orbit_package.card.weights.sha256
    a, b = tiny_orbit_package.load_model(), package.load_model()
    x = torch.randn(1, 1, 16, 32, 32)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_corrupt_weights_are_detected(tiny_orbit_package):
    weights = tiny_orbit_package.weights_path
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelPackageError, match="checksum"):
        load_package(tiny_orbit_package.path).load_model()


def test_missing_weights_and_card(tiny_orbit_package, tmp_path):
    tiny_orbit_package.weights_path.unlink()
    with pytest.raises(ModelPackageError, match="no weights file"):
        load_package(tiny_orbit_package.path).load_model()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelPackageError, match="no model.json"):
        load_package(tmp_path / "empty")
    with pytest.raises(ModelPackageError, match="does not exist"):
        load_package(tmp_path / "nowhere")


def test_card_problems_are_named(tmp_path):
    card = tiny_orbit_card()
    del card["input"]
    with pytest.raises(ModelPackageError, match="lacks input"):
        write_package(tmp_path / "a", card, {})
    card = tiny_orbit_card()
    card["classes"] = ["background", "parotid"]
    with pytest.raises(ModelPackageError, match="does not have"):
        write_package(tmp_path / "b", card, {})
    folder = tmp_path / "c"
    folder.mkdir()
    (folder / "model.json").write_text("{not json")
    with pytest.raises(ModelPackageError, match="cannot be read"):
        load_package(folder)


def test_weights_of_another_architecture_are_refused(tmp_path):
    package = write_tiny_orbit_package(tmp_path / "p")
    card = package.card.to_dict()
    card["architecture_params"] = {"base_channels": 4}
    (package.path / "model.json").write_text(json.dumps(card))
    with pytest.raises(ModelPackageError, match="do not fit"):
        load_package(package.path).load_model(verify=False)


def test_discovery_by_env_name_and_task(tmp_path, monkeypatch):
    write_tiny_orbit_package(tmp_path / "models" / "one", name="one")
    broken = tmp_path / "models" / "broken"
    broken.mkdir(parents=True)
    (broken / "model.json").write_text("{}")
    monkeypatch.setenv("HEADSEG_MODEL_PATH", str(tmp_path / "models"))
    errors = []
    names = [p.name for p in list_packages(errors=errors)]
    assert "one" in names
    assert any("lacks" in e for e in errors)
    assert find_package("one", task="orbit").name == "one"
    with pytest.raises(ModelPackageError, match="not 'han'"):
        find_package("one", task="han")
    with pytest.raises(ModelPackageError, match="No model named 'nope'"):
        find_package("nope")


def test_shipped_demo_model_is_valid_and_default():
    package = default_package("orbit")
    assert package.path.parent == SHIPPED_DIR
    assert package.card.synthetic is True
    assert "not for clinical use" in json.dumps(package.card.to_dict()).lower()
    package.verify()
    assert package.weights_path.stat().st_size < 20 * 2**20
    model = package.load_model()
    n = sum(p.numel() for p in model.parameters())
    assert n > 0 and np.isfinite(sum(float(p.detach().abs().sum()) for p in model.parameters()))
