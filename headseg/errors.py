"""User-facing error types of HeadSeg.

Every message should name the problem and say what the user can do about it, because these
errors end up in Slicer message boxes and on the command line, read by people who cannot debug.
"""

from __future__ import annotations

__all__ = ["HeadSegError", "InputError", "ModelPackageError", "Cancelled"]


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
