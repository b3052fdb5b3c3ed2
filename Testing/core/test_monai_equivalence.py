"""What the docstrings say about MONAI, checked against MONAI itself: the sliding-window grid and blending
(``headseg.segment.windows``) and the 95 % Hausdorff distance (``headseg.measure.metrics.hausdorff95``), each within the
tolerance its docstring states. Skipped only where MONAI is not installed (it is in the test extra)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from headseg.measure.metrics import hausdorff95
from headseg.segment.windows import sliding_window_predict, window_starts

monai = pytest.importorskip("monai")
from monai.data.utils import dense_patch_slices  # noqa: E402
from monai.inferers import sliding_window_inference  # noqa: E402
from monai.metrics import compute_hausdorff_distance  # noqa: E402

IMAGE_KJI = (45, 24, 20)
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # MONAI's own deprecations, not ours


@pytest.fixture(scope="module")
def net_and_image():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv3d(4, 3, 3, padding=1)).eval()
    image = np.random.default_rng(0).uniform(-2, 2, (1, *IMAGE_KJI)).astype(np.float32)
    return net, image


def ours(net, image, window, step, blend):
    return sliding_window_predict(image, net, window, step=step, blend=blend, batch_size=3, device="cpu", amp=False,
                                  activation="softmax")


def monais(net, image, window, overlap, mode, sigma_scale=0.125):
    with torch.inference_mode():
        out = sliding_window_inference(torch.from_numpy(image)[None], window, 3, lambda x: torch.softmax(net(x), 1),
                                       overlap=overlap, mode=mode, sigma_scale=sigma_scale)
    return out[0].numpy()


@pytest.mark.parametrize("length, window, step", [(45, 16, 8), (45, 15, 7), (100, 32, 16), (33, 32, 16),
                                                  (40, 12, 3), (32, 32, 16), (20, 32, 16)])
def test_window_starts_are_monais_grid(length, window, step):
    slices = dense_patch_slices((length,), (min(window, length),), (step,))
    assert window_starts(length, window, step) == [s[0].start for s in slices]


@pytest.mark.parametrize("window, step, overlap", [
    ((16, 24, 20), (8, 24, 20), (0.5, 0.0, 0.0)),  # slab along k
    ((16, 12, 8), (8, 6, 4), 0.5),  # sliding along all three axes
    ((32, 24, 20), (8, 24, 20), (0.75, 0.0, 0.0)),
])
def test_constant_blending_equals_monai(net_and_image, window, step, overlap):
    net, image = net_and_image
    difference = np.abs(ours(net, image, window, step, "constant") - monais(net, image, window, overlap, "constant"))
    assert difference.max() < 1e-6


@pytest.mark.parametrize("window_k, overlap, tolerance", [(15, 0.5, 1e-6), (15, 0.75, 1e-6), (16, 0.5, 2e-3),
                                                          (16, 0.75, 2e-3), (32, 0.5, 2e-3)])
def test_gaussian_slab_blending_equals_monai(net_and_image, window_k, overlap, tolerance):
    """One sliding axis (k), MONAI's Gaussian restricted to it; odd windows to rounding, even ones within the
    half-voxel centring difference the inference docstring states."""
    net, image = net_and_image
    window = (window_k, IMAGE_KJI[1], IMAGE_KJI[2])
    step = (int(window_k * (1 - overlap)), IMAGE_KJI[1], IMAGE_KJI[2])
    difference = np.abs(ours(net, image, window, step, "gaussian")
                        - monais(net, image, window, (overlap, 0.0, 0.0), "gaussian", sigma_scale=(0.125, 1e4, 1e4)))
    assert difference.max() < tolerance
    if window_k == 32:
        assert difference.max() < 1e-5  # the paper's 32-slice slab at 50 %: no visible difference


def _blob(shape, seed, fraction=0.2):
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)
    return field > np.quantile(field, 1 - fraction)


def _one_hot(mask):
    return torch.from_numpy(np.stack([~mask, mask])[None].astype(np.float32))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("percentile", [95.0, 100.0])
def test_hausdorff_equals_monai(seed, percentile):
    shape, spacing = (20, 30, 26), (2.5, 0.9, 1.1)  # anisotropic, in k, j, i order as both take it
    pred, ref = _blob(shape, seed), _blob(shape, seed + 10)
    theirs = float(compute_hausdorff_distance(_one_hot(pred), _one_hot(ref), percentile=percentile,
                                              spacing=spacing)[0, 0])
    assert hausdorff95(pred, ref, spacing, percentile=percentile) == pytest.approx(theirs, rel=1e-5)


def test_hausdorff_of_a_mask_touching_the_border_equals_monai():
    pred = np.zeros((12, 16, 16), bool)
    ref = np.zeros((12, 16, 16), bool)
    pred[:5, :9, 3:12] = True  # on the first slice and row: the array border is part of the surface
    ref[2:8, 4:16, 5:14] = True
    theirs = float(compute_hausdorff_distance(_one_hot(pred), _one_hot(ref), percentile=95, spacing=(2.0, 1.0, 0.7))[0, 0])
    assert hausdorff95(pred, ref, (2.0, 1.0, 0.7)) == pytest.approx(theirs, rel=1e-5)
