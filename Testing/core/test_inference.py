"""Sliding-window engine: window grid, exact blending, equivariance, batching, cancel, OOM fallback."""

from __future__ import annotations

import threading
from typing import List, Tuple

import numpy as np
import pytest
import torch

from headseg.errors import Cancelled, InputError
from headseg.segment.runtime import (
    DeviceUnavailableError,
    InferenceOutOfMemoryError,
    is_out_of_memory,
    run_with_fallback,
    select_device,
)
from headseg.segment.windows import (
    CancelToken,
    SlidingWindowOptions,
    paper_sliding_window,
    slab_sliding_window,
    sliding_window_predict,
    whole_volume_or_patches,
    window_starts,
)


def plus_one(batch: torch.Tensor) -> torch.Tensor:
    return batch + 1


def random_image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def conv_net(kernel_k: int, seed: int = 0, out_channels: int = 3) -> torch.nn.Module:
    """A fixed random conv net; ``kernel_k = 1`` makes it exactly translation-equivariant along k."""
    torch.manual_seed(seed)
    pad = (kernel_k // 2, 1, 1)
    return torch.nn.Sequential(
        torch.nn.Conv3d(1, 4, (kernel_k, 3, 3), padding=pad),
        torch.nn.ReLU(),
        torch.nn.Conv3d(4, out_channels, (kernel_k, 3, 3), padding=pad),
    ).eval()


# ---------------------------------------------------------------------------------------------- grid
@pytest.mark.parametrize(
    "length, window, step",
    [(10, 4, 3), (11, 4, 3), (32, 32, 1), (33, 32, 1), (100, 32, 16), (7, 3, 3), (5, 1, 1), (97, 32, 5)],
)
def test_window_starts_cover_the_axis_without_overhang(length, window, step):
    starts = window_starts(length, window, step)
    covered = np.zeros(length, dtype=int)
    for start in starts:
        covered[start : start + window] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and starts[-1] == length - window
    assert starts == sorted(set(starts))
    assert all(0 < b - a <= step for a, b in zip(starts, starts[1:]))


def test_window_starts_examples_and_short_axes():
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(3, 8, 1) == [0]  # shorter than the window: one (padded) window
    assert window_starts(8, 8, 4) == [0]  # window = whole axis: no sliding


@pytest.mark.parametrize("length, window, step", [(0, 4, 1), (10, 0, 1), (10, 4, 0), (10, 4, 5)])
def test_window_starts_rejects_bad_arguments(length, window, step):
    with pytest.raises(ValueError):
        window_starts(length, window, step)


# ------------------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize(
    "shape, window, step",
    [
        ((2, 37, 20, 23), (8, 7, 9), (3, 2, 4)),  # odd sizes, slides on all three axes
        ((1, 41, 12, 13), (16, None, None), (1, None, None)),  # paper-like slab, step 1
        ((1, 41, 12, 13), (16, -1, -1), None),  # default step = window // 2
        ((3, 5, 9, 7), (8, 12, 7), None),  # smaller than the window on k and j: pad and crop back
    ],
)
def test_plus_one_predictor_is_reproduced(blend, shape, window, step):
    image = random_image(shape)
    out = sliding_window_predict(
        image, plus_one, window, step=step, blend=blend, activation=None, batch_size=3
    )
    assert out.shape == image.shape and out.dtype == np.float32
    # Blending weights sum to one at every voxel; only float32 rounding remains.
    np.testing.assert_allclose(out, image + 1, rtol=1e-6, atol=1e-6)


def test_padding_uses_image_minimum_or_given_value():
    image = np.full((1, 4, 6, 6), 5.0, np.float32)
    image[0, 0, 0, 0] = -3.0
    seen = []

    def spy(batch):
        seen.append(batch.clone())
        return batch

    sliding_window_predict(image, spy, (8, 6, 6), activation=None)
    assert seen[0].shape == (1, 1, 8, 6, 6)
    assert float(seen[0][0, 0, 0].min()) == -3.0 and float(seen[0][0, 0, 0].max()) == -3.0  # padded slices
    seen.clear()
    sliding_window_predict(image, spy, (8, 6, 6), activation=None, pad_value=-1000.0)
    assert float(seen[0][0, 0, 0, 0, 0]) == -1000.0


def test_softmax_output_is_a_distribution_and_3d_input_is_one_channel():
    image = random_image((20, 10, 11))
    out = sliding_window_predict(image, conv_net(3), (8, 10, 11), step=(3, 10, 11), blend="gaussian")
    assert out.shape == (3, 20, 10, 11)
    np.testing.assert_allclose(out.sum(axis=0), 1.0, atol=1e-5)
    assert out.min() >= 0.0


def test_float16_accumulation_is_close_to_float32():
    image = random_image((1, 40, 12, 13))
    net = conv_net(3)
    exact = paper_sliding_window(image, net, slab_slices=16)
    half = paper_sliding_window(image, net, slab_slices=16, accumulate_dtype=np.float16)
    assert half.dtype == np.float32
    assert np.abs(half - exact).max() < 2e-3


# ------------------------------------------------------------------------------------ equivariance
def test_step_one_and_default_step_agree_for_a_k_equivariant_net():
    """Kernels of size 1 along k make the net exactly translation-equivariant along the sliding axis, so
    every window predicts exactly the whole-volume value: tolerance 1e-5 (float32 rounding)."""
    image = random_image((1, 45, 12, 13))
    net = conv_net(1)
    with torch.no_grad():
        whole = torch.softmax(net(torch.from_numpy(image)[None]), dim=1)[0].numpy()
    paper = paper_sliding_window(image, net, slab_slices=16)
    default = slab_sliding_window(image, net, slab_slices=16)
    np.testing.assert_allclose(paper, whole, atol=1e-5)
    np.testing.assert_allclose(default, whole, atol=1e-5)


def test_zero_padded_3d_net_edge_effects_are_bounded():
    """With 3x3x3 zero-padded convolutions each window's 2 border slices differ from the whole-volume
    prediction. The gaussian default nearly ignores them (max 2e-3); the paper's step-1 plain mean gives
    them 25 % weight at every voxel (max 0.15, mean 0.01, argmax agreement >= 95 %). Fixed seeds."""
    image = random_image((1, 40, 12, 13))
    net = conv_net(3)
    with torch.no_grad():
        whole = torch.softmax(net(torch.from_numpy(image)[None]), dim=1)[0].numpy()
    default = slab_sliding_window(image, net, slab_slices=16)
    paper = paper_sliding_window(image, net, slab_slices=16)
    assert np.abs(default - whole).max() < 2e-3
    assert np.abs(paper - whole).max() < 0.15 and np.abs(paper - whole).mean() < 0.01
    assert (paper.argmax(0) == default.argmax(0)).mean() >= 0.95


def test_batch_size_does_not_change_results():
    image = random_image((1, 30, 10, 11))
    net = conv_net(3)
    outs = [
        sliding_window_predict(image, net, (8, 6, 11), step=(3, 2, 11), batch_size=size) for size in (1, 3, 7)
    ]
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-6)
    np.testing.assert_allclose(outs[0], outs[2], atol=1e-6)


def test_whole_volume_and_patches_agree_for_a_pointwise_net():
    torch.manual_seed(1)
    pointwise = torch.nn.Conv3d(1, 4, 1).eval()
    image = random_image((1, 23, 18, 21))
    shapes: List[Tuple[int, ...]] = []

    def recording(batch):
        shapes.append(tuple(batch.shape))
        return pointwise(batch)

    whole = whole_volume_or_patches(image, recording, max_voxels=10**6, size_multiple=4)
    assert shapes == [(1, 1, 24, 20, 24)]  # one pass, padded up to the multiple
    shapes.clear()
    patches = whole_volume_or_patches(image, recording, max_voxels=1000, patch=(8, 8, 8), batch_size=2)
    assert len(shapes) > 1 and all(s[2:] == (8, 8, 8) for s in shapes)
    assert whole.shape == patches.shape == (4, 23, 18, 21)
    np.testing.assert_allclose(whole, patches, atol=1e-5)


# ----------------------------------------------------------------------------- progress and cancel
def test_progress_is_monotonic_and_ends_at_one():
    reports: List[float] = []
    image = random_image((1, 30, 8, 8))
    sliding_window_predict(
        image,
        plus_one,
        (8, 8, 8),
        step=(2, 8, 8),
        activation=None,
        batch_size=2,
        progress=lambda fraction, message: reports.append(fraction),
    )
    assert reports[0] == 0.0 and reports[-1] == 1.0
    assert all(b >= a for a, b in zip(reports, reports[1:]))
    assert len(reports) == 1 + 6  # 12 windows in batches of 2, plus the initial report


def test_cancel_stops_between_batches():
    token = CancelToken()
    calls = []

    def cancelling(batch):
        calls.append(1)
        if len(calls) == 2:
            token.cancel()  # as if the user pressed Cancel while batch 2 runs
        return batch

    with pytest.raises(Cancelled):
        sliding_window_predict(
            random_image((1, 40, 8, 8)),
            cancelling,
            (8, 8, 8),
            step=(1, 8, 8),
            activation=None,
            batch_size=2,
            cancel=token,
        )
    assert len(calls) == 2  # batch 2 finishes, batch 3 never starts


def test_cancel_token_is_thread_safe_flag():
    token = CancelToken()
    assert not token.cancelled
    token.raise_if_cancelled()
    worker = threading.Thread(target=token.cancel)
    worker.start()
    worker.join()
    assert token.cancelled
    with pytest.raises(Cancelled):
        token.raise_if_cancelled()


# ------------------------------------------------------------------------------------ OOM fallback
def make_oom(message: str = "CUDA out of memory. Tried to allocate 2.00 GiB") -> BaseException:
    try:
        return torch.cuda.OutOfMemoryError(message)
    except Exception:  # pragma: no cover - very old torch
        return RuntimeError(message)


def test_oom_detection():
    assert is_out_of_memory(make_oom())
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_fallback_sequence_ends_on_cpu_with_the_right_result():
    """A "GPU" that is always out of memory: batch 4, 2, 1 on it, then the CPU, which really runs."""
    image = random_image((1, 20, 8, 8))
    net = conv_net(3)
    attempts: List[Tuple[str, int]] = []

    def run(device: torch.device, batch_size: int) -> np.ndarray:
        attempts.append((device.type, batch_size))

        def predictor(batch):
            if device.type == "cuda":
                raise make_oom()
            return net(batch)

        return sliding_window_predict(image, predictor, (8, 8, 8), step=(4, 8, 8), batch_size=batch_size)

    result = run_with_fallback(run, torch.device("cuda"), batch_size=4)
    assert attempts == [("cuda", 4), ("cuda", 2), ("cuda", 1), ("cpu", 4)]
    assert result.device.type == "cpu" and result.batch_size == 4
    assert len(result.notes) == 3 and "CPU is much slower" in result.notes[-1]
    expected = sliding_window_predict(image, net, (8, 8, 8), step=(4, 8, 8), batch_size=4)
    np.testing.assert_array_equal(result.output, expected)


def test_fallback_smaller_batch_succeeds_on_the_same_device():
    """The predictor itself raises OOM for batches above 2: the engine retries with half the batch."""
    image = random_image((1, 20, 8, 8))
    net = conv_net(3)
    attempts: List[int] = []

    def predictor(batch):
        if batch.shape[0] > 2:
            raise make_oom()
        return net(batch)

    def run(device, batch_size):
        attempts.append(batch_size)
        return sliding_window_predict(
            image, predictor, (8, 8, 8), step=(2, 8, 8), batch_size=batch_size, device=device
        )

    result = run_with_fallback(run, "cpu", batch_size=5)
    assert attempts == [5, 2]
    assert result.batch_size == 2 and result.device.type == "cpu" and len(result.notes) == 1
    expected = sliding_window_predict(image, net, (8, 8, 8), step=(2, 8, 8), batch_size=1)
    np.testing.assert_allclose(result.output, expected, atol=1e-6)


def test_fallback_gives_up_with_a_clear_error_and_passes_other_errors():
    def always_oom(device, batch_size):
        raise make_oom()

    with pytest.raises(InferenceOutOfMemoryError, match="batch size 1"):
        run_with_fallback(always_oom, "cuda", batch_size=2, allow_cpu=False)
    calls = []

    def broken(device, batch_size):
        calls.append(batch_size)
        raise RuntimeError("weights do not match the network")

    with pytest.raises(RuntimeError, match="weights do not match"):
        run_with_fallback(broken, "cuda", batch_size=4)
    assert calls == [4]


def test_fallback_moves_the_model_to_each_attempt_device():
    model = conv_net(3)
    devices = []

    def run(device, batch_size):
        devices.append(next(model.parameters()).device.type)
        return batch_size

    assert run_with_fallback(run, "cpu", batch_size=2, model=model).output == 2
    assert devices == ["cpu"] and not model.training


# ------------------------------------------------------------------------------------------ device
def test_select_device_on_a_cpu_only_machine():
    choice = select_device("cpu")
    assert choice.device == torch.device("cpu") and choice.reason
    auto = select_device("auto")
    if not torch.cuda.is_available() and not torch.backends.mps.is_available():
        assert auto.device.type == "cpu" and "CPU" in auto.reason
    if not torch.cuda.is_available():
        with pytest.raises(DeviceUnavailableError, match="CUDA"):
            select_device("cuda")
    with pytest.raises(InputError):
        select_device("tpu")


# --------------------------------------------------------------------------------------- ill cases
@pytest.mark.parametrize(
    "kwargs",
    [
        {"window": (8, 8, 8), "step": 2, "overlap": 0.5},
        {"window": (8, 8, 8), "overlap": 1.0},
        {"window": (8, 8, 8), "blend": "hann"},
        {"window": (8, 8, 8), "activation": "relu"},
        {"window": (8, 8, 8), "batch_size": 0},
        {"window": (8, 8), "step": None},
        {"window": (8, 8, 8), "accumulate_dtype": np.float64},
    ],
)
def test_invalid_options_are_refused(kwargs):
    with pytest.raises(InputError):
        SlidingWindowOptions(**kwargs)


def test_step_larger_than_window_and_bad_predictor_are_refused():
    image = random_image((1, 10, 8, 8))
    with pytest.raises(InputError, match="larger than the window"):
        sliding_window_predict(image, plus_one, (4, 8, 8), step=(5, 8, 8))
    with pytest.raises(InputError, match="must keep batch and spatial"):
        sliding_window_predict(image, lambda b: b[:, :, :2], (4, 8, 8))
    with pytest.raises(InputError, match=r"\[C, k, j, i\]"):
        sliding_window_predict(np.zeros((8, 8)), plus_one, (4, 8, 8))
