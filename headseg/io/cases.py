"""Finding the cases in what a user names as input: image files, DICOM series folders, case folders.

Shared by ``headseg segment`` and the Slicer modules' headless batch, so both name and find cases alike
(and the Slicer code needs no import of the command line).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence

from headseg.errors import InputError
from headseg.io.files import is_dicom_file

__all__ = ["IMAGE_SUFFIXES", "LABEL_HINTS", "Case", "case_name", "is_image", "is_dicom_input", "discover_cases"]

IMAGE_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd")
LABEL_HINTS = ("label", "seg", "mask", "truth")


def case_name(path: Path) -> str:
    name = path.name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_image(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(IMAGE_SUFFIXES) and not path.name.startswith(".")


def is_dicom_input(path: Path) -> bool:
    """A ``.dcm`` file, or any file with the DICOM Part 10 marker, whatever its name."""
    return path.suffix.lower() == ".dcm" or is_dicom_file(path)


class Case(NamedTuple):
    """One case of a batch: the name its outputs get, and the image file, DICOM folder or DICOM file to read.

    A tuple, so ``for name, path in discover_cases(...)`` works as before."""

    name: str
    path: Path

    @property
    def is_dicom(self) -> bool:
        """Read from a DICOM series (a folder, or one file of it): the case can be exported to DICOM."""
        return self.path.is_dir() or is_dicom_input(self.path)


def _is_dicom_dir(path: Path) -> bool:
    return any(child.is_file() and is_dicom_input(child) for child in list(path.iterdir())[:50])


def _case_image_in(folder: Path) -> Optional[Path]:
    """The image of a case folder: ``image.*`` or ``ct.*`` (as written by ``headseg phantom``/OpenKBP)."""
    for child in sorted(folder.iterdir()):
        if is_image(child) and case_name(child).lower() in ("image", "ct"):
            return child
    return None


def _folder_name(path: Path) -> str:
    """The folder's own name, also for ``.`` or ``..`` (symbolic links are not followed)."""
    return Path(os.path.abspath(path)).name


def discover_cases(inputs: Sequence[str], notes: Optional[List[str]] = None) -> List[Case]:
    """The cases in files, DICOM folders and folders of cases, each named as its outputs will be.

    A DICOM series is named after its folder, also when one of its files is given (the file stands for
    the whole series, so its name would be misleading). Files whose names collide (``p1/ct.nii.gz`` and
    ``p2/ct.nii.gz``) are named after their folders instead, and ``notes`` gets a sentence saying so."""
    cases: List[Case] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            if path.is_symlink():
                raise InputError(f"Input {path} is a symbolic link to nothing (or to itself); give the image file or "
                                 "folder it should point to.")
            raise InputError(f"Input {path} does not exist.")
        if not path.is_file() and not path.is_dir():
            raise InputError(f"Input {path} is neither a file nor a folder (a pipe, socket or device); give an image "
                             "file, a DICOM folder or a folder of cases.")
        if path.is_file():
            dicom = is_dicom_input(path) and not path.name.lower().endswith(IMAGE_SUFFIXES)
            cases.append(Case(_folder_name(path.parent) if dicom else case_name(path), path))
        elif _is_dicom_dir(path):
            cases.append(Case(_folder_name(path), path))
        elif (image := _case_image_in(path)) is not None:
            cases.append(Case(_folder_name(path), image))
        else:
            for child in sorted(path.iterdir()):
                if is_image(child) and not any(h in child.name.lower() for h in LABEL_HINTS):
                    cases.append(Case(case_name(child), child))
                elif child.is_dir():
                    image = _case_image_in(child)
                    if image is not None:
                        cases.append(Case(child.name, image))
                    elif _is_dicom_dir(child):
                        cases.append(Case(child.name, child))
    if not cases:
        raise InputError(f"No CT images found in {', '.join(inputs)} (looked for {', '.join(IMAGE_SUFFIXES)} "
                         "files, DICOM folders and case folders with an image.* file).")
    cases = _named_after_folders(cases, notes if notes is not None else [])
    names = [c[0] for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"Several inputs would write the same output name: {', '.join(dupes)}, also when named "
                         "after their folders. Rename them, or give them from folders of different names.")
    return cases


def _named_after_folders(cases: List[Case], notes: List[str]) -> List[Case]:
    """Cases whose names collide renamed after the folder each lies in, when that makes every name unique."""
    names = [c.name for c in cases]
    clashing = {n for n in names if names.count(n) > 1}
    if not clashing:
        return cases
    renamed = [Case(_folder_name(c.path.parent), c.path) if c.name in clashing and c.path.is_file() else c
               for c in cases]
    new_names = [c.name for c in renamed]
    if len(set(new_names)) != len(new_names):
        return cases  # the folders share names too: the caller refuses, naming them
    for old, new in zip(cases, renamed):
        if old.name != new.name:
            notes.append(f"{old.path} is named {new.name!r} after its folder ({old.name!r} was the name of "
                         "several inputs).")
    return renamed
