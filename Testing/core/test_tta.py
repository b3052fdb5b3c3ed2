"""Test-time augmentation (headseg.segment.pipeline, ``tta=True``): the orbit's shifted crops and the head-and-neck
mirror keep every structure on its own side of an asymmetric phantom, agree with the single prediction,
and the mirror maps each sided class onto its twin."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_asserts import centroid_lps

from headseg.labels import get_label_set
from headseg.measure.metrics import dice
from headseg.segment.packages import default_package
from headseg.segment.pipeline import ORBIT_TTA_SHIFTS_KJI, _mirror_channels, segment_volume, tta_variants
from headseg.synth.phantoms import make_head_phantom

ORBIT = get_label_set("orbit")


@pytest.fixture(scope="module")
def orbit_results():
    """The asymmetric phantom (left orbit 1.25 times the right) segmented with and without TTA."""
    phantom = make_head_phantom(seed=5, spacing=(0.6, 0.6, 1.0))
    package = default_package("orbit")
    model = package.load_model("cpu")
    runs = {tta: segment_volume(phantom.image, package, device="cpu", model=model, uncertainty=True, tta=tta)
            for tta in (False, True)}
    return phantom, runs


def test_orbit_tta_keeps_sides_and_agrees_with_one_prediction(orbit_results):
    phantom, runs = orbit_results
    single, averaged = runs[False].labelmap.array, runs[True].labelmap.array
    midline_x = phantom.image.index_to_lps(np.array(phantom.image.size_ijk) / 2.0 - 0.5)[0]
    for s in ORBIT.structures:
        mask = averaged == s.label
        assert mask.any(), s.key
        x = centroid_lps(phantom.image, mask)[0]
        assert (x < midline_x) == (s.side == "right"), f"{s.key} on the wrong side"  # LPS +x: patient's left
        assert dice(mask, single == s.label) > 0.8, s.key
    truth = phantom.labels.array
    mean_dsc = {tta: np.mean([dice(runs[tta].labelmap.array == s.label, truth == s.label) for s in ORBIT.structures])
                for tta in (False, True)}
    assert mean_dsc[True] >= mean_dsc[False] - 0.02
    assert runs[True].uncertainty is not None and runs[True].uncertainty.same_geometry(phantom.image)


def test_variant_counts():
    assert tta_variants("orbit", False) == tta_variants("han", False) == 1
    assert tta_variants("orbit", True) == len(ORBIT_TTA_SHIFTS_KJI) and ORBIT_TTA_SHIFTS_KJI[0] == (0, 0, 0)
    assert tta_variants("han", True) == 2


def test_mirror_maps_each_sided_class_to_its_twin():
    han = get_label_set("openkbp")
    merged = {"classes": ["background", "brainstem", "parotid", "mandible"]}
    assert _mirror_channels(merged["classes"], han) == [0, 1, 2, 3]  # one parotid class: nothing to swap
    sided = {"classes": ["background", "parotid_right", "brainstem", "parotid_left"]}
    assert _mirror_channels(sided["classes"], han) == [0, 3, 2, 1]


def test_cli_tta_is_on_record(tmp_path):
    """``headseg segment --tta``: the run record says the result was averaged over test-time variants."""
    import json

    from headseg.cli import main

    phantom = make_head_phantom(seed=2, spacing=(0.8, 0.8, 1.5))
    from headseg.io import write_volume

    write_volume(phantom.image, tmp_path / "ct.nrrd")
    code = main(["segment", str(tmp_path / "ct.nrrd"), "--task", "orbit", "--tta", "--no-uncertainty",
                 "-o", str(tmp_path / "out"), "--progress-format", "none"])
    assert code == 0
    record = json.loads((tmp_path / "out" / "ct_run.json").read_text(encoding="utf-8"))
    assert record["test_time_augmentation"] is True
