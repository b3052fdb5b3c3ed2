"""Finding the cases in what a user names as input: image files, DICOM series folders, case folders.

Shared by ``headseg segment`` and the Slicer modules' headless batch, so both name and find cases alike
(and the Slicer code needs no import of the command line).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from .errors import InputError

__all__ = ["IMAGE_SUFFIXES", "LABEL_HINTS", "case_name", "is_image", "discover_cases"]

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


def _is_dicom_dir(path: Path) -> bool:
    for child in list(path.iterdir())[:50]:
        if child.is_file():
            if child.suffix.lower() == ".dcm":
                return True
            try:
                with open(child, "rb") as f:
                    if f.read(132)[128:132] == b"DICM":
                        return True
            except OSError:
                continue
    return False


def _case_image_in(folder: Path) -> Optional[Path]:
    """The image of a case folder: ``image.*`` or ``ct.*`` (as written by ``headseg phantom``/OpenKBP)."""
    for child in sorted(folder.iterdir()):
        if is_image(child) and case_name(child).lower() in ("image", "ct"):
            return child
    return None


def discover_cases(inputs: Sequence[str]) -> List[Tuple[str, Path]]:
    """(case name, image path or DICOM folder) for files, DICOM folders and folders of cases."""
    cases: List[Tuple[str, Path]] = []
    for raw in inputs:
        path = Path(raw).expanduser()
        if not path.exists():
            raise InputError(f"Input {path} does not exist.")
        if path.is_file():
            cases.append((case_name(path), path))
        elif _is_dicom_dir(path):
            cases.append((path.name, path))
        elif _case_image_in(path) is not None:
            cases.append((path.name, _case_image_in(path)))
        else:
            for child in sorted(path.iterdir()):
                if is_image(child) and not any(h in child.name.lower() for h in LABEL_HINTS):
                    cases.append((case_name(child), child))
                elif child.is_dir():
                    image = _case_image_in(child)
                    if image is not None:
                        cases.append((child.name, image))
                    elif _is_dicom_dir(child):
                        cases.append((child.name, child))
    if not cases:
        raise InputError(f"No CT images found in {', '.join(inputs)} (looked for {', '.join(IMAGE_SUFFIXES)} "
                         "files, DICOM folders and case folders with an image.* file).")
    names = [c[0] for c in cases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"Several inputs would write the same output name: {', '.join(dupes)}. Rename them.")
    return cases
