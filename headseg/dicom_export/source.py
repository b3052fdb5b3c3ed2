"""The CT series a DICOM object refers to: its datasets (no pixel data), sorted along the slice normal,
the grid they span, and the checks that a label map lies exactly on that grid.

``pydicom`` and ``highdicom`` are optional dependencies (``pip install headseg[dicom]``): they are
imported only when needed, and their absence is an :class:`InputError` that says how to install them.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io import DicomSliceGeometry, as_label_array, select_dicom_series, slice_stack_geometry
from headseg.labels import LabelSet, Structure
from headseg.paths import PathLike

__all__ = ["DicomSource", "SourceLike", "load_dicom_source", "GRID_TOLERANCE_MM"]


SourceLike = Union[PathLike, Sequence[PathLike], Sequence[object], "DicomSource"]

# Grid agreement between the label map and the source series (mm): IPP values are stored with ~0.01 mm.
GRID_TOLERANCE_MM = 0.05


def _require_pydicom():
    try:
        import pydicom
    except ImportError:
        raise InputError(
            "DICOM export needs pydicom: install it with 'pip install \"headseg[dicom]\"' (or pydicom highdicom)."
        ) from None
    return pydicom


def _require_highdicom():
    try:
        import highdicom
    except ImportError:
        raise InputError(
            "DICOM SEG export needs highdicom: install it with 'pip install \"headseg[dicom]\"' (or highdicom)."
        ) from None
    return highdicom


# ------------------------------------------------------------------------------------------------
# The source series
# ------------------------------------------------------------------------------------------------
class DicomSource:
    """The CT series a label map refers to: its datasets (no pixel data) sorted along the slice normal,
    and the voxel grid they span."""

    def __init__(self, datasets: Sequence[Any], geometry: DicomSliceGeometry, label: str):  # pydicom Datasets
        self.datasets = list(datasets)
        self.geometry = geometry
        self.label = label

    @property
    def first(self):
        return self.datasets[0]

    @property
    def shape(self) -> Tuple[int, int, int]:
        return (len(self.datasets), self.geometry.rows, self.geometry.columns)

    def grid(self) -> Volume:
        """An empty volume on the series' grid (uint8 zeros; only the geometry matters)."""
        g = self.geometry
        spacing = (g.pixel_spacing[0], g.pixel_spacing[1], g.slice_spacing)
        return Volume(np.zeros(self.shape, np.uint8), spacing, tuple(g.positions[0]), g.direction)

    def check_grid(self, labelmap: Volume) -> None:
        """Refuse a label map that is not on this series' voxel grid (contours and frames would be wrong)."""
        grid = self.grid()
        if labelmap.shape != grid.shape:
            raise InputError(
                f"The label map has {labelmap.shape[0]} slices of {labelmap.shape[2]} x {labelmap.shape[1]} "
                f"pixels but {self.label} has {grid.shape[0]} of {grid.shape[2]} x {grid.shape[1]}: it was not "
                "computed on this series. Export it with the series the CT was read from."
            )
        corners = [(0, 0, 0), (grid.shape[2] - 1, grid.shape[1] - 1, grid.shape[0] - 1)]
        error = max(float(np.linalg.norm(labelmap.index_to_lps(c) - grid.index_to_lps(c))) for c in corners)
        if error > GRID_TOLERANCE_MM or not np.allclose(labelmap.direction, grid.direction, atol=1e-4):
            raise InputError(
                f"The label map's voxel grid differs from that of {self.label} (corners {error:.2f} mm apart): "
                "it was not computed on this series (or was resampled). Export it with the series the CT was "
                "read from."
            )


def load_dicom_source(source: SourceLike) -> DicomSource:
    """The CT series to reference: a folder (the series :func:`headseg.io.read_volume` would read), one
    file of the series, a list of files, or a list of pydicom datasets."""
    pydicom = _require_pydicom()
    if isinstance(source, DicomSource):
        return source
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            series = select_dicom_series(path)
        elif path.is_file():
            series = select_dicom_series(path.parent, containing_file=path)
        else:
            raise InputError(f"DICOM source {str(path)!r} does not exist.")
        files: List[object] = list(series.files)
        label = f"DICOM series '{series.description}' (UID {series.series_uid})"
    else:
        files = list(source)
        label = "the DICOM source series"
        if not files:
            raise InputError("No DICOM source files or datasets were given.")
    datasets = []
    for item in files:
        if isinstance(item, pydicom.Dataset):
            datasets.append(item)
            continue
        try:
            datasets.append(pydicom.dcmread(str(item), stop_before_pixels=True))
        except Exception as exc:  # pydicom raises InvalidDicomError, OSError, struct errors...
            raise InputError(f"Cannot read DICOM file {str(item)!r}: {exc}") from None
    uids = {str(ds.get("SeriesInstanceUID", "")) for ds in datasets}
    if len(uids) > 1:
        raise InputError(f"The DICOM source mixes {len(uids)} series; give the files of one CT series only.")
    missing = [k for k in ("ImagePositionPatient", "ImageOrientationPatient", "FrameOfReferenceUID",
                           "SOPInstanceUID", "StudyInstanceUID") if k not in datasets[0]]
    if missing:
        raise InputError(
            f"{label} lacks {', '.join(missing)}: it is not an image series that a segmentation can refer to "
            "(a secondary capture or an anonymised copy that dropped them?)."
        )
    geometry = slice_stack_geometry(
        label,
        [[float(v) for v in ds.ImagePositionPatient] for ds in datasets],
        [[float(v) for v in ds.ImageOrientationPatient] for ds in datasets],
        [[float(v) for v in ds.get("PixelSpacing", [1.0, 1.0])] for ds in datasets],
        [(int(ds.Rows), int(ds.Columns)) for ds in datasets],
    )
    if not geometry.is_regular:
        raise InputError(
            f"{label} cannot be exported as a DICOM SEG or RT Structure Set: its slices do not form one regular grid "
            f"({geometry.irregularity()}). "
            "HeadSeg segments such a series on a regular grid resampled from its slices, and a DICOM segmentation "
            "must lie on the slices of the series it refers to. Run without --export: the .seg.nrrd and the "
            "volumes refer to the resampled CT, which 'headseg convert' writes as a file."
        )
    return DicomSource([datasets[n] for n in geometry.order], geometry, label)


def _present_structures(labelmap: Volume, label_set: LabelSet) -> Tuple[np.ndarray, List[Structure]]:
    array = as_label_array(labelmap.array, "The label map")
    found = sorted(int(v) for v in np.unique(array) if v != 0)
    unknown = [v for v in found if v not in label_set.labels]
    if unknown:
        raise InputError(
            f"The label map holds values {unknown} that are not in the {label_set.name!r} label set "
            f"(valid: {list(label_set.labels)})."
        )
    if not found:
        raise InputError("The label map is empty (nothing was segmented): there is nothing to export to DICOM.")
    return array, [label_set.by_label(v) for v in found]


def _rgb255(structure: Structure) -> List[int]:
    return [int(round(255 * min(1.0, max(0.0, c)))) for c in structure.color]


def _now() -> Tuple[str, str]:
    now = datetime.datetime.now()
    return now.strftime("%Y%m%d"), now.strftime("%H%M%S")


def _segment_structure(item, label_set: LabelSet) -> Optional[Structure]:
    """The label-set structure a SEG segment or RT ROI means: codes first, then the name."""
    type_item = None
    for keyword in ("SegmentedPropertyTypeCodeSequence", "RTROIIdentificationCodeSequence"):
        if keyword in item and len(item[keyword].value):
            type_item = item[keyword].value[0]
            break
    if type_item is not None:
        modifier = None
        if "SegmentedPropertyTypeModifierCodeSequence" in type_item and len(
            type_item.SegmentedPropertyTypeModifierCodeSequence
        ):
            m = type_item.SegmentedPropertyTypeModifierCodeSequence[0]
            modifier = (str(m.CodingSchemeDesignator), str(m.CodeValue))
        key = (str(type_item.CodingSchemeDesignator), str(type_item.CodeValue))
        hits = [
            s for s in label_set
            if (s.terminology.type.scheme, s.terminology.type.value) == key
            and (None if s.terminology.type_modifier is None
                 else (s.terminology.type_modifier.scheme, s.terminology.type_modifier.value)) == modifier
        ]
        if len(hits) == 1:
            return hits[0]
    name = str(item.get("SegmentLabel", "") or item.get("ROIName", ""))
    return label_set.find(name) if name else None

