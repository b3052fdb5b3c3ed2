"""User-facing error types of HeadSeg, and the one table that maps them to exit codes and sentences.

Every message should name the problem and say what the user can do about it, because these
errors end up in Slicer message boxes and on the command line, read by people who cannot debug.

The exit codes are a contract: the Slicer modules run ``headseg segment`` as a child process and read
its code (``headseg.run.child_process``); the CLI (``headseg.cli``) and the training CLI return them. Both take
codes and sentences from here, so a code never means two things.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Dict, Tuple, Type

__all__ = [
    "HeadSegError",
    "InputError",
    "ModelPackageError",
    "Cancelled",
    "DeviceUnavailableError",
    "InferenceOutOfMemoryError",
    "NotEnoughMemoryError",
    "ExitCode",
    "EXIT_MESSAGES",
    "ERROR_EXIT_CODES",
    "exit_code_for",
    "error_message",
]


class HeadSegError(Exception):
    """Base class of errors meant to be shown to the user as they are (no traceback needed)."""


class InputError(HeadSegError, ValueError):
    """The input image, label map or parameter cannot be used (wrong file, dimension, pixel type...).

    Also a ``ValueError`` so callers that only know the standard library still catch it.
    """


class ModelPackageError(HeadSegError):
    """A model package is missing, incomplete, corrupt or incompatible with this version of HeadSeg."""


class Cancelled(HeadSegError):
    """The user asked to stop a long-running operation; not a failure."""


class DeviceUnavailableError(HeadSegError, RuntimeError):
    """The requested compute device does not exist on this machine or in this PyTorch build."""


class InferenceOutOfMemoryError(HeadSegError, RuntimeError):
    """Every attempt (smaller batches, then the CPU if allowed) ran out of memory."""


class NotEnoughMemoryError(HeadSegError, MemoryError):
    """An input needs more memory than this computer has free; refused before allocating (exit 4)."""


class ExitCode(IntEnum):
    """Exit codes of ``headseg`` and ``headseg-train`` (stable: other programs rely on them)."""

    OK = 0
    BUG = 1  # an unexpected error: a bug to report
    INPUT = 2  # bad input, usage, data or output folder
    MODEL = 3  # the model package
    OUT_OF_MEMORY = 4
    CANCELLED = 5


# What a user reads when only the exit code of a run is known (the Slicer modules follow a child
# process); the run's own sentence, when there is one, says more.
EXIT_MESSAGES: Dict[int, str] = {
    ExitCode.BUG: "Segmentation failed with an unexpected error (details in the log).",
    ExitCode.INPUT: "The input could not be used (see the log for the reason).",
    ExitCode.MODEL: "The model package is missing, incomplete or incompatible. Choose another model or reinstall it.",
    ExitCode.OUT_OF_MEMORY: "Out of memory. Try device 'cpu', draw a smaller box (ROI) around the region, "
                            "or close other programs.",
    ExitCode.CANCELLED: "Segmentation was cancelled.",
}

# Which error gives which exit code; the first matching row wins, anything else is a bug.
ERROR_EXIT_CODES: Tuple[Tuple[Type[BaseException], ExitCode], ...] = (
    (Cancelled, ExitCode.CANCELLED),
    (InferenceOutOfMemoryError, ExitCode.OUT_OF_MEMORY),
    (MemoryError, ExitCode.OUT_OF_MEMORY),
    (ModelPackageError, ExitCode.MODEL),
    (HeadSegError, ExitCode.INPUT),  # InputError, DeviceUnavailableError, OutputExistsError, ...
    (OSError, ExitCode.INPUT),  # missing files, full disk, permissions
)


def exit_code_for(error: BaseException) -> ExitCode:
    """The exit code of a run that ended with ``error`` (see :data:`ERROR_EXIT_CODES`)."""
    for kind, code in ERROR_EXIT_CODES:
        if isinstance(error, kind):
            return code
    return ExitCode.BUG


def error_message(error: BaseException) -> str:
    """The one sentence the user reads for ``error``: HeadSeg's own message, or one that names the file
    and says what to do for system errors."""
    if isinstance(error, HeadSegError):
        return str(error)
    if isinstance(error, (FileNotFoundError, FileExistsError)):
        return str(error)
    if isinstance(error, OSError):  # disk full, permissions, I/O errors: name the file, no traceback
        where = f" {error.filename}" if error.filename else ""
        return (f"Could not read or write{where}: {error.strerror or error}. Check the free disk space, the "
                "permissions and the path; no partial file was left under the final name.")
    if isinstance(error, MemoryError):
        return "Out of memory. Close other programs, use --device cpu, or crop the image to the region of interest."
    return f"Unexpected error: {type(error).__name__}: {error}. Run with -v for details."
