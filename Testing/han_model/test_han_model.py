"""The CPU-trained head-and-neck model (han-anatomynet-openkbp) on real OpenKBP test CTs.

It is under-trained (test mean DSC 0.04, no GPU in the session that made it), so it is NOT installed as
a model: it lives here to exercise the real-CT path. Checks: no head-and-neck model is installed by
default (``--task han`` refuses clearly rather than returning near-empty results), the package segments
a real test case end to end with at least the accuracy its card reports (minus a margin), and it works on a CT of
another resolution and extent (1 x 1 x 2 mm, padded with 40 mm of air): the organs land where they are.
The data lives outside the repository (``../shared/data/openkbp``); without it the data tests skip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from headseg.geometry import Volume
from headseg.io import read_volume
from headseg.packages import default_package, load_package
from headseg.pipeline import segment_volume
from headseg.resample import Grid, resample_labels_to_grid, resample_to_grid

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIR = Path(__file__).resolve().parent / "undertrained-han-anatomynet-openkbp"
DATA = REPO.parent / "shared" / "data" / "openkbp"
OPENKBP_KEYS = {"Brainstem": "brainstem", "SpinalCord": "spinal_cord", "RightParotid": "parotid_right",
                "LeftParotid": "parotid_left", "Esophagus": "esophagus", "Larynx": "larynx", "Mandible": "mandible"}

# Per-organ DSC floors: the shipped model's measured DSC on these cases minus a margin. The shipped CPU-trained
# model is weak (test mean DSC 0.04; see docs/han_model.md): only the mandible is found reliably, so only it
# has a floor (pt_306 measured 0.145, pt_246 on the 1 x 1 x 2 mm padded grid 0.194). Retraining with the GPU
# recipe should raise these floors and add the other organs.
END_TO_END_CASE = "pt_306"
END_TO_END_FLOOR = {"mandible": 0.08}
RESAMPLED_CASE = "pt_246"
RESAMPLED_FLOOR = {"mandible": 0.12}
# Same CT on another grid: the organ's centroid must stay where the native-grid prediction puts it (measured
# 3.4 mm). Against the clinical contour the shipped model is 27 mm off (under-trained), hence the loose bound.
MAX_SHIFT_FROM_NATIVE_MM = 6.0
MAX_OFFSET_FROM_REFERENCE_MM = 40.0

needs_data = pytest.mark.skipif(not (DATA / "test").is_dir(), reason=f"OpenKBP data not found at {DATA}")


@pytest.fixture(scope="module")
def package():
    import torch

    torch.set_num_threads(2)
    return load_package(PACKAGE_DIR)


@pytest.fixture(scope="module")
def model(package):
    return package.load_model("cpu")


def _case(name: str):
    folder = DATA / "test" / name
    meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
    contoured = {OPENKBP_KEYS[o] for o in meta["contoured"]}
    return read_volume(folder / "ct.nii.gz"), read_volume(folder / "labels.nii.gz"), contoured


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum()))


def _centroid_lps(volume: Volume, mask: np.ndarray) -> np.ndarray:
    kji = np.argwhere(mask).mean(axis=0)
    return np.asarray(volume.index_to_lps(kji[::-1]), float)


def test_undertrained_package_is_not_installed_and_is_documented(package):
    from headseg.errors import ModelPackageError

    with pytest.raises(ModelPackageError, match="No model for task 'han'"):
        default_package("han")
    card = package.card
    assert card["default"] is False and card["synthetic"] is False
    assert card["label_set"] == "openkbp" and card["task"] == "han"
    size = sum(p.stat().st_size for p in PACKAGE_DIR.iterdir())
    assert size < 20 * 1024 * 1024
    tested = card["test_metrics"]
    assert len(tested["cases"]) == 20 and 0.0 < tested["mean_dsc"] <= 1.0
    assert "not a clinical device" in card["data_notice"].lower()
    assert any("OpenKBP" in c for c in card["citations"]) and any("TCIA" in c for c in card["citations"])


@needs_data
def test_segments_a_test_case_end_to_end(package, model):
    ct, ref, contoured = _case(END_TO_END_CASE)
    result = segment_volume(ct, package, device="cpu", model=model)
    assert result.labelmap.shape == ct.shape
    assert np.allclose(result.labelmap.ijk_to_lps, ct.ijk_to_lps)
    label_set = package.label_set
    scores: Dict[str, float] = {}
    for key in END_TO_END_FLOOR:
        assert key in contoured
        value = label_set.by_key(key).label
        scores[key] = _dice(result.labelmap.array == value, ref.array == value)
    failing = {k: round(v, 3) for k, v in scores.items() if v < END_TO_END_FLOOR[k]}
    assert not failing, f"DSC below the floor on {END_TO_END_CASE}: {failing} (all: {scores})"
    assert set(np.unique(result.labelmap.array)) <= {0, *(s.label for s in label_set.structures)}


def _fine_grid(ct: Volume, ref: Volume) -> Grid:
    """A 1 x 1 x 2 mm LPS grid over the body (in-plane) and the organs (+-30 mm along z)."""
    body = np.argwhere(ct.array > -500)
    organs = np.argwhere(ref.array > 0)
    lo_kji = np.array([organs[:, 0].min() - 12, body[:, 1].min(), body[:, 2].min()])
    hi_kji = np.array([organs[:, 0].max() + 12, body[:, 1].max(), body[:, 2].max()])
    lo_kji = np.clip(lo_kji, 0, np.array(ct.shape) - 1)
    hi_kji = np.clip(hi_kji, 0, np.array(ct.shape) - 1)
    corners = np.array([ct.index_to_lps(c[::-1]) for c in (lo_kji, hi_kji)])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    spacing = np.array([1.0, 1.0, 2.0])
    size = np.round((hi - lo) / spacing).astype(int) + 1
    return Grid((size[2], size[1], size[0]), tuple(spacing), tuple(lo), np.eye(3))


def _pad(volume: Volume, pad_kji, value: float) -> Volume:
    """``volume`` with ``pad_kji`` voxels of ``value`` added on both sides (axis-aligned LPS grid)."""
    array = np.pad(volume.array, [(p, p) for p in pad_kji], constant_values=value)
    origin = np.asarray(volume.origin) - np.asarray(pad_kji[::-1]) * np.asarray(volume.spacing)
    return Volume(array, volume.spacing, tuple(origin), volume.direction.copy())


@needs_data
def test_other_resolution_and_extent_puts_organs_in_place(package, model):
    ct, ref, contoured = _case(RESAMPLED_CASE)
    grid = _fine_grid(ct, ref)
    pad = (10, 40, 40)  # 20 mm above and below, 40 mm of air on each side in-plane
    fine_ct = _pad(resample_to_grid(ct, grid, interpolation="linear", default_value=-1000.0, dtype=np.int16),
                   pad, -1000)
    fine_ref = _pad(resample_labels_to_grid(ref, grid), pad, 0)
    assert fine_ct.spacing == (1.0, 1.0, 2.0) and fine_ct.shape[1] > 1.2 * ct.shape[1]
    assert fine_ct.array[:, :, :40].max() == -1000 and fine_ct.array[:, :40, :].max() == -1000

    fine = segment_volume(fine_ct, package, device="cpu", model=model).labelmap
    native = segment_volume(ct, package, device="cpu", model=model).labelmap
    assert fine.shape == fine_ct.shape
    label_set = package.label_set
    problems = []
    for key, floor in RESAMPLED_FLOOR.items():
        assert key in contoured
        value = label_set.by_key(key).label
        pred, truth = fine.array == value, fine_ref.array == value
        score = _dice(pred, truth)
        if score < floor:
            problems.append(f"{key}: DSC {score:.3f} < {floor}")
        if not pred.any():
            problems.append(f"{key}: not found")
            continue
        # Same CT, other grid: the organ must sit where the native-grid prediction puts it ...
        shift = np.linalg.norm(_centroid_lps(fine, pred) - _centroid_lps(native, native.array == value))
        if shift > MAX_SHIFT_FROM_NATIVE_MM:
            problems.append(f"{key}: centroid {shift:.1f} mm from the native-grid prediction")
        # ... and near the clinical contour.
        off = np.linalg.norm(_centroid_lps(fine, pred) - _centroid_lps(fine_ref, truth))
        if off > MAX_OFFSET_FROM_REFERENCE_MM:
            problems.append(f"{key}: centroid {off:.1f} mm from the reference")
    assert not problems, "; ".join(problems)
