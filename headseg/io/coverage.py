"""Inputs that surprise: a DICOM folder that also holds other images or files, and a series that is only
a fragment of a head. HeadSeg reads the DICOM series of a folder; it says what else it left aside, says
when the series is short, and refuses a series too short to hold the task's anatomy at all, instead of
segmenting a few slices and exiting 0.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io.cases import IMAGE_SUFFIXES, is_dicom_input

__all__ = ["FRAGMENT_SLICES", "FRAGMENT_MM", "TASK_MIN_EXTENT_MM", "head_foot_extent_mm", "coverage_notes",
           "dicom_folder_extras"]

#: A series with fewer slices, or a shorter head-foot extent, is called a fragment (a note, not a refusal).
FRAGMENT_SLICES = 30
FRAGMENT_MM = 60.0
#: The shortest head-foot extent that can hold each task's anatomy, shorter series are refused: an
#: eyeball's diameter (about 24 mm) for the orbit, whose muscles run longer still; the same for the head
#: and neck, whose organs at risk are taller (submandibular gland about 30 mm, parotid about 40, brainstem
#: about 50) except the optic chiasm and nerves. Below 20 mm ``headseg.validation`` refuses any image.
TASK_MIN_EXTENT_MM = {"orbit": 24.0, "han": 24.0}
_VALIDATION_FLOOR_MM = 20.0  # headseg.validation.check_ct's own minimum extent: its message comes first


def head_foot_extent_mm(volume: Volume) -> float:
    """The image's extent along the patient's head-foot axis (voxel count x spacing along the array axis
    nearest to it), in mm."""
    from headseg.geometry import patient_axes

    turned, spacing = patient_axes(volume)
    return float(turned.shape[0] * spacing[0])


def coverage_notes(volume: Volume, task: str) -> List[str]:
    """A note when the image is a fragment (under :data:`FRAGMENT_SLICES` slices or :data:`FRAGMENT_MM`
    head to foot); an :class:`InputError` when it is too short for the task's anatomy."""
    from headseg.geometry import patient_axes

    turned, _ = patient_axes(volume)
    slices, extent = int(turned.shape[0]), head_foot_extent_mm(volume)
    least = TASK_MIN_EXTENT_MM.get(task, 0.0)
    if extent < _VALIDATION_FLOOR_MM:
        return []  # not a CT at all: the pipeline's validation refuses it with its own sentence
    if extent < least:
        raise InputError(f"This image covers only {extent:.0f} mm from head to foot ({slices} slices); the {task} "
                         f"task needs at least {least:.0f} mm to hold its anatomy. Is it a fragment of a series? "
                         "Give the folder of the complete series, or the image file that holds the whole head.")
    if slices < FRAGMENT_SLICES or extent < FRAGMENT_MM:
        return [f"the image is short: {slices} slices, {extent:.0f} mm from head to foot; check that the whole "
                "region was given (a fragment of a series is segmented only where it has slices)."]
    return []


def dicom_folder_extras(folder: Path) -> List[str]:
    """What a DICOM folder holds besides its DICOM files, which reading the series leaves aside: a note
    naming the images among them (each could be a case of its own), or nothing."""
    if not folder.is_dir():
        return []
    images, others = [], 0
    for child in sorted(folder.iterdir()):
        if not child.is_file() or child.name.startswith("."):
            continue
        if child.name.lower().endswith(IMAGE_SUFFIXES):
            images.append(child.name)
        elif not is_dicom_input(child):
            others += 1
    if not images and not others:
        return []
    parts = []
    if images:
        parts.append(f"{len(images)} image file(s) ({', '.join(images[:3])}{', ...' if len(images) > 3 else ''})")
    if others:
        parts.append(f"{others} other file(s) that are not DICOM")
    hint = (f" To segment {images[0]}, give that file as input." if images else "")
    return [f"only the DICOM series of {folder.name} was read; the folder also holds {' and '.join(parts)}, which "
            f"were left aside.{hint}"]
