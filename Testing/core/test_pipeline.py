"""segment_volume end to end: geometry kept, sides never swapped, progress and cancel, on phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_asserts import centroid_lps

from headseg.errors import Cancelled
from headseg.measure.metrics import dice
from headseg.measure.volumes import volume_table
from headseg.segment.packages import default_package
from headseg.segment.pipeline import segment_volume
from headseg.segment.windows import CancelToken
from headseg.synth.phantoms import make_head_phantom

RIGHT, LEFT = range(1, 6), range(6, 11)


def rotation_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def test_tiny_model_keeps_geometry_reports_progress_and_cancels(tiny_orbit_package):
    phantom = make_head_phantom(seed=1, spacing=(0.8, 0.8, 1.5))
    seen = []
    result = segment_volume(phantom.image, tiny_orbit_package, device="cpu",
                            progress=lambda f, m: seen.append(f))
    assert result.labelmap.same_geometry(phantom.image)
    assert result.labelmap.array.dtype == np.uint8
    assert set(np.unique(result.labelmap.array)) <= set(range(11))
    assert set(result.regions) == {"right", "left"}
    assert seen == sorted(seen) and seen[-1] == 1.0
    for side, box in result.regions.items():  # each crop is centred near its own globe
        assert np.linalg.norm(np.asarray(box.center_lps) - phantom.globe_centers_lps[side]) < 40

    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        segment_volume(phantom.image, tiny_orbit_package, device="cpu", cancel=token)


@pytest.fixture(scope="module")
def demo():
    return default_package("orbit")


@pytest.mark.parametrize("orientation", ["lps", "ras_index_order", "oblique"])
def test_demo_model_segments_each_side_on_its_own_side(demo, orientation):
    direction = {"lps": np.eye(3), "ras_index_order": np.diag([-1.0, -1.0, 1.0]),
                 "oblique": rotation_z(12.0)}[orientation]
    phantom = make_head_phantom(seed=101, spacing=(0.6, 0.6, 1.0), direction=direction)
    result = segment_volume(phantom.image, demo, device="cpu")
    pred, truth = result.labelmap.array, phantom.labels.array
    right_x = centroid_lps(result.labelmap, np.isin(pred, RIGHT))[0]
    left_x = centroid_lps(result.labelmap, np.isin(pred, LEFT))[0]
    assert left_x > right_x + 40, "left structures must lie on the patient's left (+x in LPS)"
    scores = {value: dice(pred == value, truth == value) for value in range(1, 11)}
    assert np.mean(list(scores.values())) > 0.6, scores
    # Lateral rectus lateral of the medial rectus on both sides (a mirrored crop must be mirrored back).
    for lateral, medial, side_sign in ((2, 3, -1), (7, 8, +1)):
        lat_x = centroid_lps(result.labelmap, pred == lateral)[0]
        med_x = centroid_lps(result.labelmap, pred == medial)[0]
        assert side_sign * (lat_x - med_x) > 5
    rows = volume_table(result.labelmap, result.label_set)
    totals = [r for r in rows if r.derived]
    assert {r.side for r in totals} == {"right", "left"}


@pytest.mark.parametrize("orientation", ["lps", "ras_index_order", "oblique"])
def test_whole_volume_path_keeps_geometry(tmp_path, orientation):
    """A known-answer model (threshold at 400 HU) through resampling to 1.5 x 1.5 x 2 mm and back: the
    result must overlay the CT's own bone, and the left marker bead must stay on the left."""
    from model_factory import ThresholdNet, write_threshold_han_package

    direction = {"lps": np.eye(3), "ras_index_order": np.diag([-1.0, -1.0, 1.0]),
                 "oblique": rotation_z(20.0)}[orientation]
    phantom = make_head_phantom(seed=5, spacing=(1.0, 1.0, 1.5), direction=direction)
    package = write_threshold_han_package(tmp_path / "threshold")
    result = segment_volume(phantom.image, package, device="cpu", model=ThresholdNet())
    assert result.labelmap.same_geometry(phantom.image)
    mandible = result.label_set.by_key("mandible").label
    pred = result.labelmap.array == mandible
    truth = phantom.image.array > 400
    assert dice(pred, truth) > 0.85
    # The marker bead on the patient's left: predicted bone near it exists, and nothing at its mirror image.
    marker = phantom.marker_center_lps
    mirrored = marker * np.array([-1.0, 1.0, 1.0]) + np.array([2 * float(np.mean([
        phantom.globe_centers_lps["right"][0], phantom.globe_centers_lps["left"][0]])), 0, 0])
    for point, expected in ((marker, True), (mirrored, False)):
        i, j, k = np.round(result.labelmap.lps_to_index(point)).astype(int)
        window = pred[max(k - 2, 0):k + 3, max(j - 2, 0):j + 3, max(i - 2, 0):i + 3]
        assert bool(window.any()) is expected


def test_keep_drops_other_structures(tmp_path):
    from model_factory import ThresholdNet, write_threshold_han_package

    phantom = make_head_phantom(seed=6, spacing=(1.2, 1.2, 2.0))
    package = write_threshold_han_package(tmp_path / "threshold")
    result = segment_volume(phantom.image, package, device="cpu", model=ThresholdNet(), keep=["brainstem"])
    assert not result.labelmap.array.any()
