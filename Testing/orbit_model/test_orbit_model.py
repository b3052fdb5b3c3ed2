"""The shipped orbit models: the default one, trained on headseg.synth heads and fine-tuned with thickened
muscles, and the older demonstration model trained on geometric phantoms. Honest cards; the README's
first run; a synthetic head the default model never saw; and two real head CTs without muscle labels,
judged by the label-free scorecard (headseg.review.scorecard): the gantry-tilted GE head CT of Testing/data
(BSD-2) and, where a copy lies beside the checkout, the Stanford CThead. Neither chose the model (8
synthetic validation heads did). Floors are the measured values minus a margin; what the model does
not yet do is a strict xfail, so that it is noticed when it does. Measured values: MEASURED below and
docs/orbit_real_ct.md."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from geometry_asserts import centroid_lps

from headseg.segment.packages import SHIPPED_DIR, default_package, find_package, load_package

SYNTH = SHIPPED_DIR / "orbit-svnet-synth"
SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DEMO = SHIPPED_DIR / "orbit-svnet-demo"

pytestmark = pytest.mark.skipif(not (SYNTH / "model.json").is_file(), reason="orbit model not packaged")


@pytest.fixture(scope="module")
def default_orbit():
    package = default_package("orbit")
    return package, package.load_model("cpu")


def test_default_orbit_card_says_what_it_learned_from(default_orbit):
    package, _ = default_orbit
    assert package.path.resolve() == SYNTH.resolve()
    card = package.card.to_dict()  # model.json as written
    assert card["default"] is True and card["synthetic"] is True and card["task"] == "orbit"
    assert "headseg.synth" in card["description"] and "headseg.synth.phantoms" not in card["description"]
    assert "not for clinical use" in card["intended_use"].lower() and "scorecard" in card["intended_use"]
    assert "real CT chose nothing" in card["description"] and "superior muscle group" in card["description"]
    assert card["training"]["recipe"] == "orbit_synth_cpu_ft" and card["training"]["hardware"]["device"] == "cpu"
    augmentation = card["training"]["augmentation"]
    assert augmentation["slice_thickness"] > 1.0 and augmentation["thicken_probability"] > 0
    assert (SYNTH / "model.pt").stat().st_size < 20 * 2**20
    assert card["metrics"]["per_structure"]["optic_nerve_left"]["dsc_mean"] > MEASURED["card_nerve_left"] - 0.05
    package.verify()


def test_demo_model_stays_installed_but_is_not_the_default():
    demo = load_package(DEMO)
    card = demo.card.to_dict()
    assert card["default"] is False and card["synthetic"] is True
    assert "headseg.synth.phantoms" in card["description"] and "not for clinical use" in card["intended_use"].lower()
    assert find_package("orbit-svnet-demo", task="orbit").path.resolve() == DEMO.resolve()
    demo.verify()


def _scores(labelmap, truth) -> list:
    from headseg.measure.metrics import dice

    return [dice(labelmap.array == v, truth.array == v) for v in range(1, 11)]


def test_readme_first_run_segments_a_geometric_phantom(default_orbit):
    """What `bash scripts/demo.sh` segments (`headseg phantom`, seed 0): shapes the model never saw in
    training, so lower than on its own kind of head, but every structure found on its own side."""
    from headseg.segment.pipeline import segment_volume
    from headseg.synth.phantoms import make_head_phantom

    package, model = default_orbit
    phantom = make_head_phantom(seed=0)
    result = segment_volume(phantom.image, package, device="cpu", model=model, uncertainty=False)
    scores = _scores(result.labelmap, phantom.labels)
    assert min(scores) > MEASURED["geometric_min"] - 0.1 and np.mean(scores) > MEASURED["geometric_mean"] - 0.05, (
        np.round(scores, 3))


def test_a_synthetic_head_it_never_saw(default_orbit):
    """headseg.synth seed 7 (training used seeds 5000-5194) on 0.6 x 0.6 x 1.0 mm."""
    from headseg.segment.pipeline import segment_volume
    from headseg.synth import make_synthetic_head

    package, model = default_orbit
    case = make_synthetic_head(7, spacing=(0.6, 0.6, 1.0), max_voxels=2.5e6)
    result = segment_volume(case.image, package, device="cpu", model=model, uncertainty=False)
    scores = _scores(result.labelmap, case.labels)
    assert np.mean(scores) > MEASURED["synth_seed7_mean"] - 0.05, np.round(scores, 3)


def _segment(default_orbit):
    from headseg.segment.pipeline import segment_volume

    package, model = default_orbit
    return lambda ct: segment_volume(ct, package, device="cpu", model=model, uncertainty=False)


@pytest.fixture(scope="module")
def ge_result(default_orbit, ge_tilted_series):
    from headseg.io import read_volume

    ct = read_volume(ge_tilted_series)
    return ct, _segment(default_orbit)(ct)


def test_the_real_tilted_ge_head_ct(ge_result):
    """Each side's structures on that side, the four recti of each side in their normal band, and the one
    warning that 4 mm slices are too coarse for trustworthy muscle volumes."""
    from headseg.measure.plausibility import orbit_plausibility

    ct, result = ge_result
    x = {side: centroid_lps(result.labelmap, np.isin(result.labelmap.array, [
        s.label for s in result.label_set.structures if s.side == side]))[0] for side in ("right", "left")}
    assert x["right"] < x["left"] - 40  # LPS: the patient's right is -x
    assert [n for n in result.notes if "too coarse for eye-muscle volumes" in n]
    check = orbit_plausibility(ct, result.labelmap, result.label_set)
    assert not [f for f in check["failed"] if "recti total" in f or "muscle" in f], check["failed"]


@pytest.mark.xfail(strict=True, reason="the right optic nerve comes out at 0.16 cm3 on the GE scan (left/right "
                   "2.68, measured; docs/orbit_real_ct.md)")
def test_the_real_tilted_ge_head_ct_is_plausible(ge_result):
    from headseg.measure.plausibility import orbit_plausibility

    ct, result = ge_result
    check = orbit_plausibility(ct, result.labelmap, result.label_set)
    assert check["plausible"], check["failed"]


@pytest.fixture(scope="module")
def stanford_scorecard(default_orbit):
    """The scorecard of the Stanford CThead (public domain, beside the checkout, never in the repository)."""
    from headseg.io import read_volume
    from headseg.review.compare import repeatability_bounds
    from headseg.review.scorecard import orbit_scorecard

    path = SHARED / "data" / "real_head_ct" / "stanford_cthead" / "ct.nrrd"
    if not path.is_file():
        pytest.skip(f"the Stanford CThead is not at {path}")
    package, _ = default_orbit
    segment = _segment(default_orbit)
    card = orbit_scorecard(read_volume(path), lambda ct: segment(ct).labelmap, package.label_set,
                           repeatability_bounds("orbit"))
    return {c.name: c for c in card.checks}


def test_stanford_cthead_plausible_and_sees_an_inserted_thickening(stanford_scorecard):
    for name in ("plausible", "resolution", "insertion"):
        assert stanford_scorecard[name].passed, stanford_scorecard[name].detail


@pytest.mark.xfail(strict=True, reason="re-imaged with 3 mm slices, the right superior and medial recti move by 18 "
                   "and 16 %, beyond their repeatability bounds (measured; docs/orbit_real_ct.md)")
def test_stanford_cthead_protocol_invariance(stanford_scorecard):
    assert stanford_scorecard["protocol 3 mm"].passed, stanford_scorecard["protocol 3 mm"].detail


@pytest.mark.xfail(strict=True, reason="mirrored, the right inferior rectus and the left optic nerve come back 8 and "
                   "11 % larger (measured; docs/orbit_real_ct.md)")
def test_stanford_cthead_mirror_equivariance(stanford_scorecard):
    assert stanford_scorecard["mirror"].passed, stanford_scorecard["mirror"].detail


MEASURED = {  # orbit-svnet-synth (fine-tuned, recipe orbit_synth_cpu_ft), measured 2026-12-07 on the project machine
    "card_nerve_left": 0.652,  # the card: validation, 8 synthetic heads no model had seen, through the pipeline
    "geometric_min": 0.827,  # headseg phantom seed 0: worst structure
    "geometric_mean": 0.867,
    "synth_seed7_mean": 0.801,  # headseg.synth seed 7 (thyroid eye disease), 0.6 x 0.6 x 1.0 mm
}
