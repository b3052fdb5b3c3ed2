"""DICOM out: a label map as a DICOM Segmentation (SEG) and as an RT Structure Set (RTSTRUCT).

Radiotherapy departments import RT Structure Sets, research archives want DICOM SEG; both must point at
the CT series the label map was computed on (study, series, frame of reference and per-slice SOP
instance UIDs), so the label map has to lie exactly on that series' grid -- which it does when it comes
from :func:`headseg.io.read_volume` on the same series. Structure names, colours and SNOMED CT codes
come from the label set (``labels.Terminology``: category, type and laterality modifier).

* DICOM SEG is written with ``highdicom`` (binary segments, one per structure present). It is exact:
  reading it back gives the label map voxel for voxel.
* The RT Structure Set is written with ``pydicom`` by our own code (no rt-utils, which pulls in OpenCV).
  Contours follow the pixel edges of the mask on every slice ("crack following"): every polygon vertex
  is a pixel corner, so a pixel lies inside the polygon exactly when it belongs to the mask, and the
  contour area equals the voxel area (treatment planning systems compute the same volume as HeadSeg's
  table). Holes are inner contours (even-odd rule, as treatment planning systems read them). Where two
  pixels of a structure touch only at a corner the contour is cut by 0.1 pixel there, so every polygon is
  simple (no self-touching vertices, which some readers reject). Rasterising the contours back (pixel
  centres, even-odd) reproduces the label map exactly on the source grid; see "DICOM in and out" in README.md.

The package keeps one job per module: :mod:`.source` (the referenced series and grid checks),
:mod:`.dicom_seg`, :mod:`.contours` and :mod:`.rtstruct`; this module adds the calls the command line
uses (:func:`parse_export_formats`, :func:`check_export_inputs`, :func:`check_export_source`,
:func:`export_dicom`).

Only regular stacks of parallel slices are supported. A gantry-tilted or unevenly spaced source series is
refused with a message, before any segmentation (:func:`check_export_source`): HeadSeg reads such a series
by resampling it onto a regular grid (:mod:`headseg.io.regularise`), and a label map on that grid has no
slices of the series to lie on. Oblique but orthogonal grids are fine.

``pydicom`` and ``highdicom`` are optional dependencies (``pip install headseg[dicom]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from headseg.dicom_export.contours import SADDLE_CUT, mask_to_polygons, rasterize_polygons
from headseg.dicom_export.dicom_seg import read_dicom_seg, write_dicom_seg
from headseg.dicom_export.rtstruct import ROI_NAMINGS, RT_STRUCTURE_SET_STORAGE, read_rtstruct, write_rtstruct
from headseg.dicom_export.source import (
    GRID_TOLERANCE_MM,
    DicomSource,
    SourceLike,
    _require_highdicom,
    _require_pydicom,
    load_dicom_source,
)
from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.labels import LabelSet

__all__ = [
    "DicomSource",
    "load_dicom_source",
    "write_dicom_seg",
    "write_rtstruct",
    "read_dicom_seg",
    "read_rtstruct",
    "mask_to_polygons",
    "rasterize_polygons",
    "export_dicom",
    "export_paths",
    "check_export_source",
    "EXPORT_FILE_NAMES",
    "parse_export_formats",
    "check_export_inputs",
    "EXPORT_FORMATS",
    "GRID_TOLERANCE_MM",
    "SADDLE_CUT",
    "RT_STRUCTURE_SET_STORAGE",
    "ROI_NAMINGS",
]

EXPORT_FORMATS = ("dicom-seg", "rtstruct")
EXPORT_FILE_NAMES = {"dicom-seg": "{case}_seg.dcm", "rtstruct": "{case}_rtstruct.dcm"}


def parse_export_formats(text: Optional[str]) -> Tuple[str, ...]:
    """``"dicom-seg,rtstruct"`` -> ("dicom-seg", "rtstruct"), refusing unknown names with the valid ones."""
    if not text:
        return ()
    formats = tuple(dict.fromkeys(f.strip().lower() for f in text.split(",") if f.strip()))
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown:
        raise InputError(f"Unknown --export format(s) {unknown}; choose from {', '.join(EXPORT_FORMATS)}.")
    for fmt in formats:
        (_require_highdicom if fmt == "dicom-seg" else _require_pydicom)()
    return formats



def check_export_inputs(cases: Sequence[Any], formats: Sequence[str]) -> None:
    """Refuse DICOM exports for a batch without DICOM input (each case has ``is_dicom``,
    :class:`headseg.io.cases.Case`): the objects must reference the CT's DICOM series."""
    if formats and not any(case.is_dicom for case in cases):
        raise InputError("--export writes DICOM SEG/RT Structure Sets, which must reference the CT's DICOM series: "
                         "give the DICOM folder (or one of its files) as input. For other files, load the result "
                         "in 3D Slicer and use its DICOM export (see 'DICOM in and out' in README.md).")


def export_paths(out_dir: Path, case: str, formats: Sequence[str]) -> Dict[str, Path]:
    """Where case ``case`` writes each requested DICOM object: ``<case>_seg.dcm``, ``<case>_rtstruct.dcm``."""
    return {fmt: Path(out_dir) / EXPORT_FILE_NAMES[fmt].format(case=case) for fmt in formats}


def check_export_source(source: SourceLike, volume: Optional[Volume] = None) -> DicomSource:
    """Everything a DICOM export of ``source`` needs that can be known before segmenting, so a refusal
    costs no segmentation and leaves no output: the series can be referenced (positions, orientations,
    FrameOfReferenceUID, SOP and study UIDs, one regular stack of slices) and ``volume``, the CT read from
    it, lies on its grid. Raises :class:`InputError` naming what is missing."""
    src = load_dicom_source(source)
    if volume is not None:
        src.check_grid(volume)
    return src


def export_dicom(
    labelmap: Volume,
    label_set: LabelSet,
    source: SourceLike,
    paths: Dict[str, Path],
    overwrite: bool = False,
    algorithm_name: str = "HeadSeg",
    roi_names: str = "tg263",
) -> List[Path]:
    """Write the requested DICOM objects (``paths``: format -> file) for one case; returns the files.
    ``roi_names`` names the RT Structure Set's ROIs ("tg263" or "display"); DICOM SEG keeps the display
    names as segment labels and is matched by its SNOMED CT codes."""
    src = load_dicom_source(source)
    written = []
    for fmt, path in paths.items():
        if fmt == "dicom-seg":
            written.append(write_dicom_seg(labelmap, label_set, src, path, overwrite=overwrite,
                                           algorithm_name=algorithm_name))
        elif fmt == "rtstruct":
            written.append(write_rtstruct(labelmap, label_set, src, path, overwrite=overwrite,
                                          algorithm_name=algorithm_name, roi_names=roi_names))
        else:
            raise InputError(f"Unknown DICOM export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}.")
    return written

