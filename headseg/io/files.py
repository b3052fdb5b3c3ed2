"""File names and atomic writes shared by every HeadSeg reader and writer.

Writes are atomic: the data goes to a temporary file in the destination folder, which then replaces
the final name with ``os.replace``; a crash or a full disk never leaves a half-written file under the
name the user asked for. The temporary file is created like any other file, so the result follows the
umask. Existing files are only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable, Iterable

from headseg.errors import HeadSegError, InputError
from headseg.paths import PathLike

__all__ = [
    "PathLike",
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "InputFileNotFoundError",
    "OutputExistsError",
    "extension",
    "is_dicom_file",
    "write_atomically",
    "check_write_extension",
]


READ_EXTENSIONS = (".seg.nrrd", ".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd", ".dcm")
# Only single-file formats: a two-file format (.nhdr + .raw, .mhd + .raw) cannot be replaced atomically.
WRITE_EXTENSIONS = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii", ".mha")


class InputFileNotFoundError(InputError, FileNotFoundError):
    """An input file or folder does not exist (both an :class:`InputError` and a FileNotFoundError)."""


class OutputExistsError(HeadSegError, FileExistsError):
    """The output file exists and ``overwrite`` was not requested."""


def extension(path: Path) -> str:
    name = path.name.lower()
    for ext in READ_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def is_dicom_file(path: Path) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble, whatever their name."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


def write_atomically(path: PathLike, write: Callable[[Path], object], overwrite: bool) -> Path:
    """Run ``write(temp_path)`` and move the result to ``path`` in one step."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"Output file {str(path)!r} already exists. Choose another name or pass overwrite=True."
        )
    if not path.parent.is_dir():
        raise InputFileNotFoundError(f"Output folder {str(path.parent)!r} does not exist; create it first.")
    ext = extension(path)
    # Keep the real extension at the end: SimpleITK chooses the writer by it.
    temp = path.parent / f".{path.name[: len(path.name) - len(ext)]}.{uuid.uuid4().hex[:8]}.partial{ext}"
    try:
        write(temp)
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(
                f"Output file {str(path)!r} was created by someone else while writing; nothing was replaced."
            )
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    return path


def check_write_extension(path: Path, allowed: Iterable[str]) -> str:
    ext = extension(path)
    allowed = tuple(allowed)
    if ext not in allowed:
        raise InputError(
            f"Cannot write {path.name!r}: use one of the extensions {', '.join(allowed)} "
            "(single-file formats only)."
        )
    return ext


