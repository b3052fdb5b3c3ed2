"""Where and how a network runs: the device (chosen once per run, :func:`select_device`), the model put
there (:func:`prepare_model`, :func:`load_on_device`), and what happens when it runs out of memory
(:func:`run_with_fallback`: a smaller batch, then the CPU).

``headseg.segment.windows`` runs the network over an image; this module decides where."""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, List, Optional, Tuple, TypeVar, Union

import torch

from headseg.errors import DeviceUnavailableError, InferenceOutOfMemoryError, InputError

__all__ = [
    "DeviceChoice",
    "DeviceUnavailableError",
    "InferenceOutOfMemoryError",
    "FallbackResult",
    "select_device",
    "as_device_choice",
    "load_on_device",
    "prepare_model",
    "run_with_fallback",
    "is_out_of_memory",
    "release_memory",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


# ----------------------------------------------------------------------------------------------------
# Device
# ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceChoice:
    """The device to run on and a sentence saying why (shown to users in logs and the Slicer status)."""

    device: torch.device
    reason: str


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(requested: Union[str, torch.device] = "auto") -> DeviceChoice:
    """Pick a torch device: ``"auto"`` tries CUDA, then Apple MPS, then the CPU.

    Explicit requests (``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``) are honoured or refused with
    :class:`DeviceUnavailableError`, never silently replaced: a user who asked for the GPU should learn
    that it is not used rather than wait ten times longer without knowing why.
    """
    text = str(requested).strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            return DeviceChoice(torch.device("cuda", 0), f"automatic: CUDA GPU found ({name})")
        if _mps_available():
            return DeviceChoice(torch.device("mps"), "automatic: Apple GPU (MPS) found")
        return DeviceChoice(
            torch.device("cpu"), "automatic: no CUDA or Apple MPS GPU found; using the CPU (slower)"
        )
    try:
        device = torch.device(text)
    except RuntimeError as err:
        raise InputError(
            f"Unknown device {requested!r}; choose 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."
        ) from err
    if device.type == "cpu":
        return DeviceChoice(device, "requested: CPU")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(
                f"A CUDA GPU was requested but PyTorch {torch.__version__} cannot use one on this machine "
                "(no NVIDIA GPU/driver, or a CPU-only PyTorch build). Choose device 'auto' or 'cpu', "
                "or install a CUDA-enabled PyTorch."
            )
        index = 0 if device.index is None else device.index
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceUnavailableError(
                f"GPU cuda:{index} was requested but only {count} CUDA GPU(s) exist."
            )
        device = torch.device("cuda", index)
        return DeviceChoice(device, f"requested: CUDA GPU {index} ({torch.cuda.get_device_name(index)})")
    if device.type == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(
                "Apple MPS was requested but is not available (needs macOS 12.3+ on Apple silicon and an "
                "MPS-enabled PyTorch). Choose device 'auto' or 'cpu'."
            )
        return DeviceChoice(device, "requested: Apple GPU (MPS)")
    raise InputError(f"Unsupported device {requested!r}; choose 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")


def as_device_choice(device: Union[str, torch.device, DeviceChoice]) -> DeviceChoice:
    """``device`` itself when it was already chosen (a :class:`DeviceChoice`), else :func:`select_device`'s
    choice for the request: a run chooses once and passes the choice down to every case."""
    return device if isinstance(device, DeviceChoice) else select_device(device)


def load_on_device(package: Any, requested: Union[str, torch.device, DeviceChoice] = "auto") -> Tuple[DeviceChoice, Any]:
    """``(device, model)``: the device chosen for ``requested`` and the network of ``package``
    (``headseg.segment.packages.ModelPackage``) loaded there, once for a whole run of cases."""
    choice = as_device_choice(requested)
    return choice, package.load_model(choice.device)


def prepare_model(
    model: torch.nn.Module, device: Union[str, torch.device], channels_last: bool = True
) -> torch.nn.Module:
    """Put ``model`` in eval mode on ``device`` (channels_last_3d on CUDA) so it can serve as a predictor."""
    device = torch.device(device)
    model = model.eval().to(device)
    if channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last_3d)  # type: ignore[call-overload]  # torch's stubs lack it
    return model


# ----------------------------------------------------------------------------------------------------
# Out-of-memory fallback
# ----------------------------------------------------------------------------------------------------
def is_out_of_memory(error: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors (typed or only recognisable by their message)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_memory(device: torch.device) -> None:
    """Free what the device's allocator caches (after an out-of-memory error, before the next try)."""
    gc.collect()
    if device.type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()
    elif device.type == "mps" and _mps_available():
        torch.mps.empty_cache()


@dataclass
class FallbackResult(Generic[T]):
    """What :func:`run_with_fallback` returned and where it finally ran; ``notes`` are for the user log."""

    output: T
    device: torch.device
    batch_size: int
    notes: List[str] = field(default_factory=list)


def run_with_fallback(
    fn: Callable[[torch.device, int], T],
    device: Union[str, torch.device],
    batch_size: int = 4,
    *,
    allow_cpu: bool = True,
    model: Optional[torch.nn.Module] = None,
) -> FallbackResult[T]:
    """Call ``fn(device, batch_size)``, retrying on out-of-memory errors with fewer resources.

    Sequence: the requested batch size, half of it, 1, then (if ``allow_cpu`` and not already on the
    CPU) the CPU with the requested batch size -- CPU RAM is usually plentiful and the batch size barely
    changes CPU speed. The device cache is emptied between attempts. ``fn`` must put the model on the
    device it receives and restart from scratch (progress restarts too); pass ``model`` to have it moved
    there (with :func:`prepare_model`) before each attempt, so ``fn`` can simply close over it.
    Errors other than out-of-memory propagate at once. If every attempt runs out of memory,
    :class:`InferenceOutOfMemoryError` says what to do.
    """
    device = torch.device(device)
    batch_size = int(batch_size)
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}.")
    attempts: List[Tuple[torch.device, int]] = []
    for size in (batch_size, batch_size // 2, 1):
        if size >= 1 and (device, size) not in attempts:
            attempts.append((device, size))
    if allow_cpu and device.type != "cpu":
        attempts.append((torch.device("cpu"), batch_size))

    notes: List[str] = []
    for number, (attempt_device, attempt_batch) in enumerate(attempts):
        failure = ""
        try:
            if model is not None:
                prepare_model(model, attempt_device)
            output = fn(attempt_device, attempt_batch)
            return FallbackResult(output, attempt_device, attempt_batch, notes)
        except Exception as error:  # noqa: BLE001 -- filtered right below
            if not is_out_of_memory(error):
                raise
            failure = str(error).splitlines()[0] if str(error) else type(error).__name__
        # Outside the except block, so the traceback (and the tensors its frames hold) can be freed.
        release_memory(attempt_device)
        if number + 1 < len(attempts):
            next_device, next_batch = attempts[number + 1]
            note = (
                f"Out of memory on {attempt_device} with batch size {attempt_batch} ({failure}); "
                f"retrying on {next_device} with batch size {next_batch}."
            )
            if next_device.type == "cpu" and attempt_device.type != "cpu":
                note += " Running on the CPU is much slower."
            logger.warning(note)
            notes.append(note)
    raise InferenceOutOfMemoryError(
        f"Out of memory even with batch size 1 on {device}"
        + (" and on the CPU" if allow_cpu and device.type != "cpu" else "")
        + ". Close other programs using the GPU/RAM, crop the image to the region of interest, or use a "
        "machine with more memory."
    )
