"""Follow-up comparison (headseg.review.compare) on synthetic pairs with a known change: one muscle enlarged by
a known volume, the follow-up scanned after a small rigid motion. Catches a wrong sign, a side swap, a
change reported where there is none, and pairs that must be refused."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io import write_segmentation, write_volume
from headseg.labels import get_label_set
from headseg.review.compare import TimePoint, compare_timepoints, write_comparison
from headseg.synth.phantoms import make_head_phantom

ORBIT = get_label_set("orbit")
GROWN = "inferior_rectus_left"


def _motion(volume: Volume, nearest: bool) -> Volume:
    t = sitk.Euler3DTransform()
    t.SetCenter([0.0, 40.0, 0.0])
    t.SetRotation(0.0, np.deg2rad(1.5), np.deg2rad(3.0))
    t.SetTranslation([1.5, -1.0, 1.0])
    image = volume.to_sitk()
    out = sitk.Resample(image, image, t, sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear,
                        0.0 if nearest else -1000.0)
    array = sitk.GetArrayFromImage(out)
    return Volume.from_sitk(out).with_array(array.astype(volume.array.dtype))


def _grown_pair(ct: Volume, truth: Volume):
    """(baseline CT, baseline truth, follow-up CT, follow-up truth, true relative change of GROWN in %):
    GROWN thickened by 1 mm, in-plane, into the orbital fat around it (as thyroid eye disease thickens
    the belly; a coherent layer, not a speckle no reader would call a muscle), and the follow-up scanned
    after a small rigid motion."""
    image, labels = ct.array, truth.array
    muscle = labels == ORBIT.by_key(GROWN).label
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    fat = (labels == 0) & (image > -300) & (image < 0)
    grow = ndimage.binary_dilation(muscle, in_plane, iterations=2) & fat
    labels2, image2 = labels.copy(), image.copy()
    labels2[grow] = ORBIT.by_key(GROWN).label
    image2[grow] = int(np.median(image[muscle]))
    true_pct = 100.0 * grow.sum() / muscle.sum()
    follow_ct = _motion(ct.with_array(image2), nearest=False)
    follow_labels = _motion(truth.with_array(labels2), nearest=True)
    return ct, truth, follow_ct, follow_labels, true_pct


@pytest.fixture(scope="module")
def pair():
    """A geometric phantom pair (fast; the comparison's arithmetic, registration and files)."""
    phantom = make_head_phantom(seed=11, left_scale=1.0)
    return _grown_pair(phantom.image, phantom.labels)


@pytest.fixture(scope="module")
def anatomical_pair():
    """A headseg.synth head pair (what the default orbit model was trained on; seed 9100 is in neither its
    training, seeds 5000-5194, nor the repeatability measurement, 9000-9013), for the comparisons through
    the model."""
    from headseg.synth import make_synthetic_head

    case = make_synthetic_head(9100, ted=False, spacing=(0.6, 0.6, 1.0), max_voxels=2.5e6)
    return _grown_pair(case.image, case.labels)


def test_known_change_with_registration_sign_and_sides(pair):
    base_ct, base_labels, follow_ct, follow_labels, true_pct = pair
    comparison = compare_timepoints(TimePoint(base_labels, ORBIT, "t0", base_ct),
                                    TimePoint(follow_labels, ORBIT, "t1", follow_ct), bounds={})
    assert comparison.bone_dice > 0.9
    rows = {r.key: r for r in comparison.rows}
    assert rows[GROWN].change_pct == pytest.approx(true_pct, abs=2.0)  # nearest-neighbour motion only
    assert rows[GROWN].change_pct > 20 and rows[GROWN].exceeds
    assert abs(rows["inferior_rectus_right"].change_pct) < 2.0 and not rows["inferior_rectus_right"].exceeds
    assert {r.key for r in comparison.rows if r.exceeds} == {GROWN, "extraocular_muscles_left"}
    assert "left inferior rectus +" in comparison.summary()
    reverse = compare_timepoints(TimePoint(follow_labels, ORBIT, "t1", follow_ct),
                                 TimePoint(base_labels, ORBIT, "t0", base_ct), register=False, bounds={})
    assert {r.key: r for r in reverse.rows}[GROWN].change_pct < -15  # shrinks when read the other way


@pytest.fixture(scope="module")
def model_comparison(anatomical_pair):
    """The anatomical pair segmented by the default orbit model and compared (registration included)."""
    from headseg.segment.packages import default_package
    from headseg.segment.pipeline import segment_volume

    base_ct, _, follow_ct, _, _ = anatomical_pair
    package = default_package("orbit")
    model = package.load_model("cpu")
    seg = [segment_volume(ct, package, device="cpu", model=model, uncertainty=False).labelmap
           for ct in (base_ct, follow_ct)]
    return compare_timepoints(TimePoint(seg[0], ORBIT, "t0", base_ct), TimePoint(seg[1], ORBIT, "t1", follow_ct))


def test_model_segmentations_report_the_change_on_the_right_muscle(anatomical_pair, model_comparison):
    """Through the shipped orbit model: the grown muscle (and only it, with its side's total) exceeds its
    repeatability bound, with the right sign; its twin on the other side does not move."""
    true_pct = anatomical_pair[4]
    rows = {r.key: r for r in model_comparison.rows}
    assert rows[GROWN].exceeds and 0 < rows[GROWN].change_pct < true_pct + 5  # +38 % for +74 % (measured)
    assert not rows["inferior_rectus_right"].exceeds  # 4.8 % against its 23 % bound (measured)
    unchanged = [r for r in model_comparison.rows if r.key != GROWN and not r.key.startswith("extraocular")]
    assert not [r.key for r in unchanged if r.exceeds]


@pytest.mark.xfail(strict=True, reason="the default orbit model reports +38 % for a 74 % thickening of the left "
                   "inferior rectus (it finds about half of the new voxels; measured, see docs/compare.md)")
def test_model_segmentations_find_the_change_within_5_percent(anatomical_pair, model_comparison):
    """The accuracy goal for the change as the model reports it: within 5 points of the truth."""
    rows = {r.key: r for r in model_comparison.rows}
    assert rows[GROWN].change_pct == pytest.approx(anatomical_pair[4], abs=5.0)


def test_files_written_and_never_overwritten(pair, tmp_path):
    base_ct, base_labels, follow_ct, follow_labels, _ = pair
    for name, ct, labels in (("t0", base_ct, base_labels), ("t1", follow_ct, follow_labels)):
        folder = tmp_path / name
        folder.mkdir()
        write_volume(ct, folder / f"{name}.nrrd")
        write_segmentation(labels, ORBIT, folder / f"{name}.seg.nrrd")
    from headseg.review.compare import load_timepoint

    comparison = compare_timepoints(load_timepoint(tmp_path / "t0"), load_timepoint(tmp_path / "t1" / "t1.seg.nrrd"))
    written = write_comparison(comparison, tmp_path / "out")
    assert {p.name for p in written} == {"change.csv", "summary.txt", "change_right_orbit.png", "change_left_orbit.png"}
    rows = list(csv.DictReader(open(tmp_path / "out" / "change.csv")))
    grown = next(r for r in rows if r["structure"] == "inferior_rectus" and r["side"] == "left")
    assert float(grown["change_pct"]) > 20 and grown["exceeds"] == "yes"
    with pytest.raises(FileExistsError):
        write_comparison(comparison, tmp_path / "out")


def test_refusals(pair):
    base_ct, base_labels, follow_ct, follow_labels, _ = pair
    han = get_label_set("openkbp")
    with pytest.raises(InputError, match="same kind"):
        compare_timepoints(TimePoint(base_labels, ORBIT, "a"), TimePoint(base_labels.with_array(
            np.zeros(base_labels.shape, np.uint8)), han, "b"), register=False)
    with pytest.raises(InputError, match="different patients"):
        compare_timepoints(TimePoint(base_labels, ORBIT, "a", patient_id="P1"),
                           TimePoint(follow_labels, ORBIT, "b", patient_id="P2"), register=False)
    k, j, i = np.indices(base_ct.shape)
    not_a_head = np.where((i - 40) ** 2 + (j - 200) ** 2 < 30 ** 2, 1200, -1000).astype(np.int16)  # a bone rod
    with pytest.raises(InputError, match="do not align"):
        compare_timepoints(TimePoint(base_labels, ORBIT, "a", base_ct),
                           TimePoint(base_labels, ORBIT, "b", base_ct.with_array(not_a_head)))


def test_cli_refuses_existing_outputs_before_registering_and_pictures_have_a_legend(pair, tmp_path, monkeypatch,
                                                                                    capsys):
    """An existing change.csv stops 'headseg compare' before the registration (seconds) starts; the
    change pictures carry a legend: each structure's colour, and which line is which scan."""
    import matplotlib.figure

    from headseg.cli import main
    from headseg.review import compare

    base_ct, base_labels, follow_ct, follow_labels, _ = pair
    for name, ct, labels in (("t0", base_ct, base_labels), ("t1", follow_ct, follow_labels)):
        (tmp_path / name).mkdir()
        write_volume(ct, tmp_path / name / f"{name}.nrrd")
        write_segmentation(labels, ORBIT, tmp_path / name / f"{name}.seg.nrrd")
    out = tmp_path / "out"
    out.mkdir()
    (out / "change.csv").write_text("earlier\n")
    monkeypatch.setattr(compare, "register_rigid", lambda *a, **k: pytest.fail("registered before refusing"))
    args = ["compare", str(tmp_path / "t0"), str(tmp_path / "t1"), "-o", str(out), "--progress-format", "none"]
    assert main(args) == 2
    assert "change.csv exists" in capsys.readouterr().err
    monkeypatch.undo()

    legends = []
    original = matplotlib.figure.Figure.legend

    def recording_legend(fig, *a, **k):
        legends.append([h.get_label() for h in k.get("handles", [])])
        return original(fig, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "legend", recording_legend)
    assert main(args + ["--overwrite"]) == 0
    assert len(legends) == 2  # one per orbit
    right = next(labels for labels in legends if "right superior rectus" in labels)
    assert {"right inferior rectus", "right optic nerve", "baseline (t0)", "follow-up (t1), registered"} <= set(right)
