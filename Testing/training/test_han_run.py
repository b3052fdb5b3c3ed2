"""AnatomyNet's recipe end to end on small synthetic head-and-neck cases in the OpenKBP layout: whole
volumes, masked + weighted hybrid loss, RMSprop then SGD, export, and segmentation by the package."""

from __future__ import annotations

import json

import numpy as np
import pytest

from headseg.geometry import Volume
from headseg.io import write_labelmap, write_volume
from headseg.segment.packages import load_package
from training.config import load_config
from training.engine import train


def _case(seed: int):
    """A 48 x 48 x 24 CT-like block: air around a soft-tissue body, a bone ring, three 'organs'."""
    rng = np.random.default_rng(seed)
    shape = (24, 48, 48)
    k, j, i = np.indices(shape)
    body = (j - 24) ** 2 + (i - 24) ** 2 < 20 ** 2
    image = np.where(body, 40, -1000).astype(np.int16)
    ring = body & ((j - 24) ** 2 + (i - 24) ** 2 > 17 ** 2)
    image[ring] = 700
    labels = np.zeros(shape, np.uint8)
    shift = int(rng.integers(-2, 3))
    labels[4:20, 20 + shift:28 + shift, 20:28] = 1  # brainstem
    image[labels == 1] = 30
    labels[4:20, 30:34, 22:26] = 2  # spinal cord
    image[labels == 2] = 55
    labels[ring & (j < 24)] = 7  # mandible
    image = image + rng.normal(0, 5, shape).astype(np.int16)
    volume = Volume(image, (2.0, 2.0, 3.0), (-48.0, -48.0, 0.0))
    return volume, volume.with_array(labels)


@pytest.fixture(scope="module")
def openkbp_like(tmp_path_factory):
    root = tmp_path_factory.mktemp("openkbp_like")
    layout = {("train", "pt_1"): ["Brainstem", "SpinalCord", "Mandible"],
              ("train", "pt_2"): ["Brainstem", "Mandible"],  # cord drawn in the file but not contoured
              ("validation", "pt_3"): ["Brainstem", "SpinalCord", "Mandible"]}
    for n, ((split, patient), contoured) in enumerate(layout.items()):
        folder = root / split / patient
        folder.mkdir(parents=True)
        image, labels = _case(n)
        write_volume(image, folder / "ct.nii.gz")
        write_labelmap(labels, folder / "labels.nii.gz")
        (folder / "meta.json").write_text(json.dumps({"contoured": contoured}))
    return root


def test_anatomynet_recipe_runs_both_phases_and_exports(openkbp_like, tmp_path):
    from headseg.segment.pipeline import segment_volume

    config = load_config("anatomynet_seed004", [
        "label_set=openkbp", 'data.structures=["brainstem","spinal_cord","mandible"]',
        "input.spacing_mm=[2.0,2.0,3.0]",
        'model.params={"widths":[4,4,6,6],"blocks_per_stage":1,"output_block_channels":4,"se_reduction":2}',
        "optimizer.phases.0.epochs=2", "optimizer.phases.1.epochs=1", "samples_per_epoch=2", "num_threads=2",
    ])
    result = train(config, openkbp_like, tmp_path / "run", progress=False)
    assert [h["optimizer"] for h in result.history] == ["rmsprop", "rmsprop", "sgd"]
    report = json.loads((tmp_path / "run" / "data_report.json").read_text(encoding="utf-8"))
    assert report["split"]["validation"] == ["pt_3"] and report["split"]["train"] == ["pt_1", "pt_2"]
    log = (tmp_path / "run" / "log.txt").read_text(encoding="utf-8")
    # w(c) = 1/#annotations over the two training cases: background 1/1, brainstem 1/2, cord 1/1, mandible 1/2.
    assert "[1.0, 0.5, 1.0, 0.5]" in log
    package = load_package(result.package_dir)
    card = package.card.to_dict()  # model.json as written
    assert card["classes"] == ["background", "brainstem", "spinal_cord", "mandible"]
    assert card["training"]["loss"]["masked"] and card["training"]["loss"]["weighted"]
    assert set(card["metrics"]["per_structure"]) == {"brainstem", "spinal_cord", "mandible"}
    image, _ = _case(7)
    out = segment_volume(image, package, device="cpu")
    assert out.labelmap.same_geometry(image)
    assert set(np.unique(out.labelmap.array).tolist()) <= {0, 1, 2, 7}
