"""Run a segmentation network over a whole CT: the sliding window (AMP, cancel, progress) and
:func:`predict_probabilities`, the one mapping from a model card and a model-grid image to class
probabilities that ``headseg segment`` and training's validation both use. Where it runs (device choice,
out-of-memory fallback) is ``headseg.segment.runtime``'s.

Arrays are ``[C, k, j, i]`` per case; the network sees ``[B, C, k, j, i]`` tensors (see
docs/ARCHITECTURE.md). Probabilities are accumulated on the CPU so that the GPU only ever holds one
batch of windows, whatever the size of the CT.

Blending, in one sentence: every window's probabilities are multiplied by a per-voxel weight that is
*already divided by the sum of the weights of all windows covering that voxel*, so the running sum
is the final answer. This needs no separate weight map (the window grid is known in advance and the
weights are separable per axis, so the normaliser is a product of three 1D sums), keeps every
contribution in [0, 1] (safe for float16 accumulation) and lets memory be the output array only.

Modes:

* ``"constant"``: plain mean of the overlapping windows -- the SV-net paper's step-1 sliding window.
* ``"gaussian"``: nnU-Net's importance weighting (sigma = window / 8) along the axes where windows
  actually slide, floored at ``MIN_IMPORTANCE`` so that voxels seen only by a window edge still count.

Agreement with MONAI's ``sliding_window_inference`` at the same window grid (checked by
``Testing/core/test_monai_equivalence.py``; :func:`window_starts` gives MONAI's grid exactly):

* ``"constant"``, windows sliding along any axes: equal up to float32 rounding (max |difference| of
  the probabilities below 1e-6).
* ``"gaussian"`` sliding along one axis (the orbit slab), compared with MONAI's map restricted to that
  axis (``sigma_scale`` huge on the others): equal up to float32 rounding (below 1e-6) for odd windows;
  for even windows MONAI centres its Gaussian on voxel ``window // 2``, half a voxel off the window
  centre where ours lies, which moves probabilities by less than 2e-3 for windows of 16 voxels or more
  at up to 75 % overlap (about 2e-6 for the 32-slice slab at 50 %).
* ``"gaussian"`` sliding along several axes is not MONAI's: MONAI floors the product of the axis
  weights, we floor each axis' weights, so the two differ near window corners.
"""

from __future__ import annotations

import itertools
import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from headseg.errors import Cancelled, InputError

if TYPE_CHECKING:
    from headseg.segment.model_card import ModelCard

__all__ = [
    "ProgressCallback",
    "Predictor",
    "CancelToken",
    "SlidingWindowOptions",
    "window_starts",
    "sliding_window_predict",
    "slab_sliding_window",
    "paper_sliding_window",
    "whole_volume_or_patches",
    "predict_probabilities",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[float, str], None]
"""Called with (fraction done in [0, 1], short message). Must be cheap: it runs once per batch."""

Predictor = Callable[[torch.Tensor], torch.Tensor]
"""Maps a ``[B, C_in, k, j, i]`` batch on the device to ``[B, C_out, k, j, i]`` logits/probabilities."""

BLEND_MODES = ("gaussian", "constant")
ACTIVATIONS = ("softmax", "sigmoid", None)
GAUSSIAN_SIGMA_FRACTION = 1.0 / 8.0  # nnU-Net's choice: sigma = window / 8
MIN_IMPORTANCE = 1e-3  # floor of the 1D gaussian (peak 1), so edge voxels keep a usable weight
PAPER_SLAB_SLICES = 32  # the SV-net paper: 32-slice inputs, sliding along the slice axis with a step of 1

Size3 = Tuple[int, int, int]
WindowSpec = Union[int, None, Sequence[Optional[int]]]


# ----------------------------------------------------------------------------------------------------
# Cancel
# ----------------------------------------------------------------------------------------------------
class CancelToken:
    """A thread-safe stop flag: the GUI thread calls :meth:`cancel`, the worker checks it per batch."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("Segmentation was cancelled.")


# ----------------------------------------------------------------------------------------------------
# Window grid and weights
# ----------------------------------------------------------------------------------------------------
def window_starts(length: int, window: int, step: int) -> List[int]:
    """Start indices of windows of size ``window`` covering ``[0, length)`` with stride ``step``.

    The last window is moved back to end exactly at ``length`` (no partial windows). A volume shorter
    than the window gets a single start, 0: the caller pads it up to the window. Same grid as MONAI's
    ``dense_patch_slices``, so results are directly comparable.
    """
    if length < 1 or window < 1 or step < 1:
        raise ValueError(f"length, window and step must be >= 1, got {length}, {window}, {step}.")
    if step > window:
        raise ValueError(f"step ({step}) larger than window ({window}) would leave voxels unseen.")
    if window >= length:
        return [0]
    starts = list(range(0, length - window + 1, step))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


def _gaussian_1d(window: int) -> np.ndarray:
    offsets = np.arange(window, dtype=np.float64) - (window - 1) / 2.0
    sigma = max(window * GAUSSIAN_SIGMA_FRACTION, 1e-6)
    weights = np.exp(-0.5 * (offsets / sigma) ** 2)
    return np.maximum(weights / weights.max(), MIN_IMPORTANCE)


def _normalised_axis_weights(
    padded_length: int, window: int, starts: Sequence[int], blend: str
) -> Dict[int, np.ndarray]:
    """Per start: the window's 1D weights divided by the summed weights of all windows at each voxel."""
    if len(starts) == 1 or blend == "constant":
        base = np.ones(window, dtype=np.float64)
    else:
        base = _gaussian_1d(window)
    total = np.zeros(padded_length, dtype=np.float64)
    for start in starts:
        total[start : start + window] += base
    return {start: (base / total[start : start + window]).astype(np.float32) for start in starts}


# ----------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------
def _as_triple(value: WindowSpec, name: str) -> Tuple[Optional[int], Optional[int], Optional[int]]:
    if value is None or isinstance(value, (int, np.integer)):
        return (value, value, value)
    items = tuple(value)
    if len(items) != 3:
        raise InputError(f"{name} needs 3 values (k, j, i), got {value!r}.")
    return tuple(None if v is None else int(v) for v in items)  # type: ignore[return-value]


@dataclass(frozen=True)
class SlidingWindowOptions:
    """Everything that decides *what* the sliding window computes, validated once.

    Args:
        window: window size (k, j, i); ``None`` or a value <= 0 on an axis means "the whole axis".
        step: stride (k, j, i) or one int; ``None`` entries default to ``window // 2``. Exclusive with
            ``overlap``.
        overlap: fraction in [0, 1) of window overlap; step = max(1, int(window * (1 - overlap))).
        blend: ``"gaussian"`` or ``"constant"`` (see module docstring).
        batch_size: windows per forward pass.
        amp: float16 autocast -- only used on CUDA (CPU autocast is slow and MPS support is patchy).
        channels_last: ``channels_last_3d`` inputs -- only used on CUDA, where cuDNN prefers it.
        activation: ``"softmax"`` (over channels), ``"sigmoid"`` or ``None`` (the predictor already
            returns probabilities).
        pad_value: value used to pad volumes smaller than the window; ``None`` = image minimum (air in CT).
        accumulate_dtype: ``np.float32`` or ``np.float16`` (halves the memory of the output buffer at a
            cost of about 1e-3 absolute error on probabilities).
        output_dtype: dtype of the returned probabilities.
    """

    window: Tuple[Optional[int], Optional[int], Optional[int]]
    step: Optional[Tuple[Optional[int], Optional[int], Optional[int]]] = None
    overlap: Optional[float] = None
    blend: str = "gaussian"
    batch_size: int = 4
    amp: bool = True
    channels_last: bool = True
    activation: Optional[str] = "softmax"
    pad_value: Optional[float] = None
    accumulate_dtype: type = np.float32
    output_dtype: type = np.float32

    def __post_init__(self) -> None:
        object.__setattr__(self, "window", _as_triple(self.window, "window"))
        if self.step is not None:
            object.__setattr__(self, "step", _as_triple(self.step, "step"))
            if any(s is not None and s < 1 for s in self.step):
                raise InputError(f"step values must be >= 1, got {self.step}.")
        if self.step is not None and self.overlap is not None:
            raise InputError("Give either step or overlap, not both.")
        if self.overlap is not None and not 0.0 <= float(self.overlap) < 1.0:
            raise InputError(f"overlap must be in [0, 1), got {self.overlap}.")
        if self.blend not in BLEND_MODES:
            raise InputError(f"blend must be one of {BLEND_MODES}, got {self.blend!r}.")
        if self.activation not in ACTIVATIONS:
            raise InputError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}.")
        if int(self.batch_size) < 1:
            raise InputError(f"batch_size must be >= 1, got {self.batch_size}.")
        if np.dtype(self.accumulate_dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise InputError(f"accumulate_dtype must be float32 or float16, got {self.accumulate_dtype}.")

    def resolve(self, shape: Size3) -> Tuple[Size3, Size3]:
        """Concrete (window, step) for an image of spatial ``shape`` (k, j, i)."""
        windows: List[int] = []
        steps: List[int] = []
        for axis in range(3):
            win = self.window[axis]
            win = shape[axis] if win is None or win <= 0 else int(win)
            if self.overlap is not None:
                stp = max(1, int(win * (1.0 - float(self.overlap))))
            else:
                requested = None if self.step is None else self.step[axis]
                stp = max(1, win // 2) if requested is None else int(requested)
            if stp > win:
                raise InputError(f"step {stp} on axis {'kji'[axis]} is larger than the window {win}.")
            windows.append(win)
            steps.append(stp)
        return tuple(windows), tuple(steps)  # type: ignore[return-value]

    def predict(
        self,
        image,
        predictor: Predictor,
        *,
        device: Union[str, torch.device] = "cpu",
        out_channels: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
        cancel: Optional[CancelToken] = None,
    ) -> np.ndarray:
        """Run the sliding window with these options (see :func:`sliding_window_predict`)."""
        return _run_sliding_window(
            self, image, predictor, torch.device(device), out_channels, progress, cancel
        )


# ----------------------------------------------------------------------------------------------------
# Sliding window
# ----------------------------------------------------------------------------------------------------
def sliding_window_predict(
    image,
    predictor: Predictor,
    window: WindowSpec,
    *,
    step: WindowSpec = None,
    overlap: Optional[float] = None,
    blend: str = "gaussian",
    batch_size: int = 4,
    device: Union[str, torch.device] = "cpu",
    amp: bool = True,
    channels_last: bool = True,
    out_channels: Optional[int] = None,
    activation: Optional[str] = "softmax",
    pad_value: Optional[float] = None,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
    accumulate_dtype: type = np.float32,
    output_dtype: type = np.float32,
) -> np.ndarray:
    """Probabilities ``[out_channels, k, j, i]`` of ``predictor`` over ``image`` ``[C, k, j, i]``.

    Windows are batched, moved to ``device``, passed through ``predictor`` (under ``torch.inference_mode``;
    put models in ``eval()`` first, e.g. with :func:`headseg.segment.runtime.prepare_model`), turned into probabilities by
    ``activation``, weighted and added into a CPU array. A 3D ``[k, j, i]`` image is taken as one channel.
    Axes where the volume is smaller than the window are padded (``pad_value``, default the image
    minimum) and cropped back. ``progress`` is called after every batch (monotonic, ends at 1.0);
    ``cancel`` is checked before every batch and raises :class:`headseg.errors.Cancelled`.
    See :class:`SlidingWindowOptions` for the meaning of the other arguments.
    """
    options = SlidingWindowOptions(
        window=_as_triple(window, "window"),
        step=None if step is None else _as_triple(step, "step"),
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        amp=amp,
        channels_last=channels_last,
        activation=activation,
        pad_value=pad_value,
        accumulate_dtype=accumulate_dtype,
        output_dtype=output_dtype,
    )
    return options.predict(
        image, predictor, device=device, out_channels=out_channels, progress=progress, cancel=cancel
    )


def _image_tensor(image) -> torch.Tensor:
    tensor = (
        image.detach().cpu()
        if isinstance(image, torch.Tensor)
        else torch.from_numpy(np.ascontiguousarray(image))
    )
    if tensor.ndim == 3:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 4:
        raise InputError(f"The image must be [C, k, j, i] (or [k, j, i]); got shape {tuple(tensor.shape)}.")
    if min(tensor.shape) < 1:
        raise InputError(f"The image is empty: shape {tuple(tensor.shape)}.")
    return tensor.to(torch.float32)


def _pad_to_window(
    tensor: torch.Tensor, window: Size3, pad_value: Optional[float]
) -> Tuple[torch.Tensor, List[int]]:
    """Pad (centred) the axes shorter than the window; return the tensor and the padding before each axis."""
    shape = tensor.shape[1:]
    before = [max(0, w - n) // 2 for w, n in zip(window, shape)]
    after = [max(0, w - n) - b for w, n, b in zip(window, shape, before)]
    if any(before) or any(after):
        value = float(tensor.min()) if pad_value is None else float(pad_value)
        spec = (before[2], after[2], before[1], after[1], before[0], after[0])  # F.pad lists i first
        tensor = torch.nn.functional.pad(tensor, spec, mode="constant", value=value)
    return tensor, before


def _forward(predictor: Predictor, batch: torch.Tensor, use_amp: bool) -> torch.Tensor:
    """One forward pass (under float16 autocast on CUDA if asked), checked for shape."""
    if use_amp:
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            raw = predictor(batch)
    else:
        raw = predictor(batch)
    if not isinstance(raw, torch.Tensor):
        raise InputError(f"The predictor must return a tensor, got {type(raw).__name__}.")
    if raw.ndim != 5 or (raw.shape[0], *raw.shape[2:]) != (batch.shape[0], *batch.shape[2:]):
        raise InputError(
            f"The predictor returned shape {tuple(raw.shape)} for input {tuple(batch.shape)}; it "
            "must keep batch and spatial sizes ([B, C_out, k, j, i])."
        )
    return raw


def _activate(logits: torch.Tensor, activation: Optional[str]) -> torch.Tensor:
    logits = logits.float()
    if activation == "softmax":
        return torch.softmax(logits, dim=1)
    if activation == "sigmoid":
        return torch.sigmoid(logits)
    return logits


def _run_sliding_window(
    options: SlidingWindowOptions,
    image,
    predictor: Predictor,
    device: torch.device,
    out_channels: Optional[int],
    progress: Optional[ProgressCallback],
    cancel: Optional[CancelToken],
) -> np.ndarray:
    tensor = _image_tensor(image)
    shape: Size3 = tuple(int(n) for n in tensor.shape[1:])  # type: ignore[assignment]
    window, step = options.resolve(shape)

    tensor, pad_before = _pad_to_window(tensor, window, options.pad_value)
    padded: Size3 = tuple(int(n) for n in tensor.shape[1:])  # type: ignore[assignment]

    starts = [window_starts(padded[a], window[a], step[a]) for a in range(3)]
    axis_weights = [
        _normalised_axis_weights(padded[a], window[a], starts[a], options.blend) for a in range(3)
    ]
    positions = list(itertools.product(*starts))
    total = len(positions)

    on_cuda = device.type == "cuda"
    use_amp = bool(options.amp and on_cuda)
    use_channels_last = bool(options.channels_last and on_cuda)
    tensor = tensor.to(device)  # the (small, few-channel) image goes once; windows are cut on the device
    weight_tensors = [{s: torch.from_numpy(w).to(device) for s, w in aw.items()} for aw in axis_weights]
    acc_torch_dtype = torch.float16 if np.dtype(options.accumulate_dtype) == np.float16 else torch.float32
    output: Optional[np.ndarray] = None
    wk, wj, wi = window

    if progress is not None:
        progress(0.0, f"Running the model on {total} part(s)")
    with torch.inference_mode():
        for first in range(0, total, options.batch_size):
            if cancel is not None:
                cancel.raise_if_cancelled()
            batch_positions = positions[first : first + options.batch_size]
            batch = torch.stack(
                [tensor[:, k : k + wk, j : j + wj, i : i + wi] for k, j, i in batch_positions]
            )
            if use_channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last_3d)
            raw = _forward(predictor, batch, use_amp)
            if out_channels is None:
                out_channels = int(raw.shape[1])
            if raw.shape[1] != out_channels:
                raise InputError(f"The predictor returned {raw.shape[1]} channels, expected {out_channels}.")
            probabilities = _activate(raw, options.activation)
            weights = torch.stack(
                [
                    weight_tensors[0][k][:, None, None]
                    * weight_tensors[1][j][None, :, None]
                    * weight_tensors[2][i][None, None, :]
                    for k, j, i in batch_positions
                ]
            )
            contribution = (probabilities * weights[:, None]).to(acc_torch_dtype).cpu().numpy()
            if output is None:
                output = np.zeros((out_channels,) + padded, dtype=options.accumulate_dtype)
            for n, (k, j, i) in enumerate(batch_positions):
                output[:, k : k + wk, j : j + wj, i : i + wi] += contribution[n]
            if progress is not None:
                done = first + len(batch_positions)
                progress(done / total, f"Running the model: part {done} of {total}")

    assert output is not None  # total >= 1 always
    crop = tuple(slice(b, b + n) for b, n in zip(pad_before, shape))
    result = output[(slice(None),) + crop]
    if result.dtype != np.dtype(options.output_dtype) or result.shape != output.shape:
        result = np.ascontiguousarray(result, dtype=options.output_dtype)
    return result


def slab_sliding_window(
    image,
    predictor: Predictor,
    *,
    slab_slices: int = PAPER_SLAB_SLICES,
    slab_step: Optional[int] = None,
    blend: str = "gaussian",
    **kwargs,
) -> np.ndarray:
    """Slabs of ``slab_slices`` slices spanning the whole (k-cropped) image in j and i.

    Our default for SV-net: step ``slab_slices // 2`` with gaussian blending along k -- about 16 times
    fewer forward passes than the paper's step 1 (see benchmarks/bench_sliding_window.py for the
    measured cost and agreement). Other keyword arguments go to :func:`sliding_window_predict`.
    """
    step = max(1, slab_slices // 2) if slab_step is None else slab_step
    return sliding_window_predict(
        image, predictor, (slab_slices, None, None), step=(step, None, None), blend=blend, **kwargs
    )


def paper_sliding_window(
    image, predictor: Predictor, *, slab_slices: int = PAPER_SLAB_SLICES, **kwargs
) -> np.ndarray:
    """The SV-net paper's inference: 32-slice slabs, step 1 along k, whole j and i, plain mean of the overlaps."""
    return slab_sliding_window(
        image, predictor, slab_slices=slab_slices, slab_step=1, blend="constant", **kwargs
    )


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def whole_volume_or_patches(
    image,
    predictor: Predictor,
    *,
    max_voxels: int,
    patch: Sequence[int] = (64, 160, 160),
    size_multiple: Union[int, Sequence[int]] = 1,
    overlap: float = 0.5,
    **kwargs,
) -> np.ndarray:
    """For fully convolutional whole-volume models (the AnatomyNet paper).

    The whole volume, padded up to a multiple of ``size_multiple`` (the network's total down-sampling
    factor), is run in one pass when it has at most ``max_voxels`` voxels -- what the paper does and
    what gives the network its global context. Larger volumes fall back to 3D patches of ``patch``
    (rounded up to the multiple) with ``overlap`` and gaussian blending. Other keyword arguments go to
    :func:`sliding_window_predict`.
    """
    tensor = _image_tensor(image)
    shape = tuple(int(n) for n in tensor.shape[1:])
    multiples = _as_triple(size_multiple, "size_multiple")
    whole = tuple(_round_up(n, int(m or 1)) for n, m in zip(shape, multiples))
    for name in ("window", "step", "blend"):
        if name in kwargs:
            raise InputError(f"whole_volume_or_patches chooses {name} itself; do not pass it.")
    if int(np.prod(whole)) <= int(max_voxels):
        logger.info(
            "Whole-volume inference on a %s grid (%s voxels <= %s).", whole, int(np.prod(whole)), max_voxels
        )
        return sliding_window_predict(tensor, predictor, whole, step=whole, blend="constant", **kwargs)
    patch_window = tuple(_round_up(int(p), int(m or 1)) for p, m in zip(patch, multiples))
    logger.info(
        "Volume %s exceeds %s voxels: %s patches with overlap %.2f.", shape, max_voxels, patch_window, overlap
    )
    return sliding_window_predict(
        tensor, predictor, patch_window, overlap=overlap, blend="gaussian", **kwargs
    )


# ----------------------------------------------------------------------------------------------------
# The card's strategy
# ----------------------------------------------------------------------------------------------------
def predict_probabilities(
    model: Predictor,
    image,
    card: ModelCard,
    device: Union[str, torch.device],
    *,
    batch_size: Optional[int] = None,
    amp: bool = True,
    progress: Optional[ProgressCallback] = None,
    cancel: Optional[CancelToken] = None,
) -> np.ndarray:
    """Class probabilities ``[C, k, j, i]`` of ``model`` for one normalised model-grid image ``[k, j, i]``,
    run the way ``card`` says: an orbit crop with the slab window (``window_kji[0]`` slices spanning the
    crop in j and i) sliding along k by ``inference.step_k``; a whole-volume (han) image in one pass, or in
    ``inference.patch_kji`` patches above ``inference.max_voxels``.

    The one predictor of ``headseg segment`` (``headseg.segment.pipeline``, which adds the out-of-memory
    fallback of ``headseg.segment.runtime.run_with_fallback``) and of training's validation
    (``training.engine.validate_items``). ``batch_size`` None: the card's ``inference.batch_size``."""
    x = np.asarray(image, dtype=np.float32)[None]
    inference = card.inference
    common: Dict[str, Any] = dict(batch_size=int(batch_size or inference.batch_size), device=device, amp=amp,
                  out_channels=len(card.classes), activation=card.output_activation, progress=progress,
                  cancel=cancel)
    window_kji = card.window_kji
    if window_kji is not None:
        window = (window_kji[0], x.shape[2], x.shape[3])  # the crop is exactly the in-plane window
        return sliding_window_predict(x, model, window, step=(inference.step_k, window[1], window[2]),
                                      blend=inference.blend, **common)
    return whole_volume_or_patches(x, model, max_voxels=inference.max_voxels, patch=inference.patch_kji,
                                   **common)
