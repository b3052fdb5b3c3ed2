"""``headseg convert``: one CT (a DICOM series, one of its files, or any image ``headseg segment`` takes)
written as one image file, exactly the volume ``segment`` would segment: the same case finding, the same
reader and the same reader warnings (e.g. a tilted series regularised).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io.cases import Case, discover_cases
from headseg.io.diagnostics import collect_warnings, native_stderr_captured
from headseg.io.files import OutputExistsError, PathLike, check_write_extension
from headseg.io.images import write_volume
from headseg.io.read import read_volume

__all__ = ["CONVERT_EXTENSIONS", "Converted", "convert_input"]

#: The image files ``headseg convert`` writes.
CONVERT_EXTENSIONS = (".nrrd", ".nii.gz", ".nii", ".mha")


@dataclass
class Converted:
    """What :func:`convert_input` read and wrote."""

    case: Case
    path: Path  # the file written
    volume: Volume
    warnings: List[str] = field(default_factory=list)  # what reading said (the warnings 'segment' shows)


def convert_input(source: PathLike, output: PathLike, overwrite: bool = False, allow_non_ct: bool = False) -> Converted:
    """Read the one CT ``source`` names and write it to ``output`` (refused, before reading, when the
    file exists and not ``overwrite``)."""
    cases = discover_cases([str(source)])
    if len(cases) != 1:
        raise InputError(f"{source} holds {len(cases)} images ({', '.join(c.name for c in cases[:5])}); "
                         "convert reads one DICOM series or image at a time.")
    case, output = cases[0], Path(output)
    check_write_extension(output, CONVERT_EXTENSIONS)
    if output.exists() and not overwrite:  # before reading: a refusal costs nothing
        raise OutputExistsError(f"Output file {str(output)!r} already exists. Choose another name or pass --overwrite.")
    with collect_warnings("headseg.io") as read_warnings, native_stderr_captured():
        volume = read_volume(case.path, allow_non_ct=allow_non_ct)
    written = write_volume(volume, output, overwrite=overwrite)
    return Converted(case, Path(written), volume, list(read_warnings))
