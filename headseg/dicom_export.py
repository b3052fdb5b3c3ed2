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

Only regular stacks of parallel slices are supported: a gantry-tilted or unevenly spaced source series is
refused with a message (see :func:`headseg.io.slice_stack_geometry`). Oblique but orthogonal grids are fine.

``pydicom`` and ``highdicom`` are optional dependencies (``pip install headseg[dicom]``).
"""

from __future__ import annotations

import datetime
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import __version__
from .errors import InputError
from .geometry import Volume
from .io import (
    DicomSliceGeometry,
    _as_label_array,
    _write_atomically,
    labelmap_dtype,
    select_dicom_series,
    slice_stack_geometry,
)
from .labels import Code, LabelSet, Structure

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
    "EXPORT_FORMATS",
]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
SourceLike = Union[PathLike, Sequence[PathLike], Sequence[object], "DicomSource"]

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # the study reference class RTSTRUCTs traditionally use
EXPORT_FORMATS = ("dicom-seg", "rtstruct")
# Grid agreement between the label map and the source series (mm): IPP values are stored with ~0.01 mm.
GRID_TOLERANCE_MM = 0.05
SADDLE_CUT = 0.1  # pixels cut off the corner where two pixels of a mask touch diagonally only


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

    def __init__(self, datasets: Sequence[object], geometry: DicomSliceGeometry, label: str):
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
    return DicomSource([datasets[n] for n in geometry.order], geometry, label)


def _present_structures(labelmap: Volume, label_set: LabelSet) -> Tuple[np.ndarray, List[Structure]]:
    array = _as_label_array(labelmap.array, "The label map")
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


# ------------------------------------------------------------------------------------------------
# DICOM SEG
# ------------------------------------------------------------------------------------------------
def _coded(code: Code):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=code.value, scheme_designator=code.scheme, meaning=code.meaning)


def write_dicom_seg(
    labelmap: Volume,
    label_set: LabelSet,
    source: SourceLike,
    path: PathLike,
    overwrite: bool = False,
    series_description: str = "HeadSeg segmentation",
    algorithm_name: str = "HeadSeg",
    series_number: int = 901,
) -> Path:
    """Write ``labelmap`` as a binary DICOM Segmentation referencing the ``source`` CT series.

    One segment per structure present, with the label set's name as segment label, its colour as
    CIELab display colour, and its SNOMED CT category/type codes (laterality as type modifier).
    """
    hd = _require_highdicom()
    from pydicom.sr.codedict import codes

    src = load_dicom_source(source)
    src.check_grid(labelmap)
    array, structures = _present_structures(labelmap, label_set)
    segment_of_label = np.zeros(label_set.max_label + 1, dtype=np.uint16)
    descriptions = []
    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name, family=codes.cid7162.ArtificialIntelligence, version=__version__
    )
    for number, structure in enumerate(structures, start=1):
        segment_of_label[structure.label] = number
        r, g, b = _rgb255(structure)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=structure.name,
            segmented_property_category=_coded(structure.terminology.category),
            segmented_property_type=_coded(structure.terminology.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=hd.UID(),
            tracking_id=structure.key,
            display_color=hd.color.CIELabColor.from_rgb(r, g, b),
        )
        if structure.terminology.type_modifier is not None:  # nested in the type item, as dcmqi/Slicer read it
            description.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
                _coded(structure.terminology.type_modifier)
            ]
        descriptions.append(description)
    pixels = segment_of_label[array].astype(np.uint8 if len(structures) < 256 else np.uint16)
    try:
        seg = hd.seg.Segmentation(
            source_images=src.datasets,
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=hd.UID(),
            series_number=series_number,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="HeadSeg",
            manufacturer_model_name=algorithm_name,
            software_versions=__version__,
            device_serial_number="0",
            series_description=series_description,
            content_label="HEADSEG",
            content_description=f"{label_set.name} structures"[:64],
        )
    except (ValueError, AttributeError, TypeError) as exc:  # highdicom's checks of the source datasets
        raise InputError(f"Cannot build a DICOM SEG for {src.label}: {exc}") from None

    def write(temp: Path) -> None:
        seg.save_as(str(temp))

    return _write_atomically(path, write, overwrite)


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


def read_dicom_seg(path: PathLike, label_set: LabelSet, source: SourceLike) -> Volume:
    """Read a DICOM SEG back as a label map on the ``source`` series' grid, matching segments to the label
    set by their codes (else their label). Unknown segments are an error that lists them."""
    hd = _require_highdicom()
    src = load_dicom_source(source)
    try:
        seg = hd.seg.segread(str(path))
    except Exception as exc:
        raise InputError(f"Cannot read DICOM SEG {str(path)!r}: {exc}") from None
    out = np.zeros(src.shape, dtype=labelmap_dtype(label_set.max_label))
    uids = [str(ds.SOPInstanceUID) for ds in src.datasets]
    unknown = []
    for item in seg.SegmentSequence:
        structure = _segment_structure(item, label_set)
        if structure is None:
            unknown.append(str(item.SegmentLabel))
            continue
        mask = seg.get_pixels_by_source_instance(uids, segment_numbers=[int(item.SegmentNumber)],
                                                 combine_segments=True, relabel=True)
        out[(mask > 0) & (out == 0)] = structure.label
    if unknown:
        raise InputError(f"Segments {unknown} of {Path(path).name!r} match no structure of {label_set.name!r}.")
    return src.grid().with_array(out)


# ------------------------------------------------------------------------------------------------
# Contours: pixel-edge tracing and even-odd rasterisation
# ------------------------------------------------------------------------------------------------
# Directions in the (column x, row y) plane with y pointing down, numbered clockwise: E, S, W, N.
_DX = np.array([1, 0, -1, 0])
_DY = np.array([0, 1, 0, -1])


def mask_to_polygons(mask: np.ndarray) -> List[np.ndarray]:
    """Closed polygons along the pixel edges of a 2D mask ``[row j, column i]``.

    Each polygon is an ``[n, 2]`` array of continuous ``(i, j)`` pixel indices (pixel centres at integers,
    so vertices sit at half-integers), not repeating the first vertex. Outer boundaries run clockwise
    on screen (y down), holes the other way; pixels are 4-connected, and diagonal-only contacts are cut
    by :data:`SADDLE_CUT` so that no polygon touches itself or another.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask_to_polygons needs a 2D mask, got shape {mask.shape}.")
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    # Boundary edges of each pixel (r, c) whose neighbour in that direction is background; start corners.
    starts = []
    for direction, (neighbour, dx0, dy0) in enumerate([
        (padded[:-2, 1:-1], 0, 0),  # top edge, heading E from the top-left corner
        (padded[1:-1, 2:], 1, 0),  # right edge, heading S from the top-right corner
        (padded[2:, 1:-1], 1, 1),  # bottom edge, heading W from the bottom-right corner
        (padded[1:-1, :-2], 0, 1),  # left edge, heading N from the bottom-left corner
    ]):
        rows, cols = np.nonzero(inner & ~neighbour)
        starts.append(np.column_stack([cols + dx0, rows + dy0, np.full(len(rows), direction)]))
    edges = np.concatenate(starts) if starts else np.zeros((0, 3), int)
    if not len(edges):
        return []
    width = mask.shape[1] + 1
    keys = edges[:, 1] * width + edges[:, 0]
    outgoing: Dict[int, List[int]] = {}
    for index, key in enumerate(keys.tolist()):
        outgoing.setdefault(key, []).append(index)
    xs, ys, dirs = edges[:, 0].tolist(), edges[:, 1].tolist(), edges[:, 2].tolist()
    visited = np.zeros(len(edges), dtype=bool)
    polygons = []
    for first in range(len(edges)):
        if visited[first]:
            continue
        points: List[Tuple[float, float]] = []
        edge = first
        while True:
            visited[edge] = True
            d = dirs[edge]
            end_x, end_y = xs[edge] + _DX[d], ys[edge] + _DY[d]
            candidates = outgoing[end_y * width + end_x]
            if len(candidates) == 1:
                following = candidates[0]
                if dirs[following] != d:
                    points.append((float(end_x), float(end_y)))
            else:  # saddle: turn right, staying with the same pixel; cut the corner a little
                following = next(c for c in candidates if dirs[c] == (d + 1) % 4)
                nd = dirs[following]
                points.append((end_x - SADDLE_CUT * _DX[d], end_y - SADDLE_CUT * _DY[d]))
                points.append((end_x + SADDLE_CUT * _DX[nd], end_y + SADDLE_CUT * _DY[nd]))
            edge = following
            if edge == first:
                break
        polygons.append(np.asarray(points, dtype=float) - 0.5)  # corner (x, y) -> continuous index (i, j)
    return polygons


def rasterize_polygons(polygons: Sequence[np.ndarray], shape: Tuple[int, int]) -> np.ndarray:
    """Pixels ``[row j, column i]`` whose centres lie inside the polygons (even-odd rule across all of
    them, so inner contours make holes). Polygons are ``[n, 2]`` arrays of continuous ``(i, j)``."""
    rows, cols = shape
    toggles = np.zeros((rows, cols + 1), dtype=np.int32)
    for polygon in polygons:
        polygon = np.asarray(polygon, dtype=float)
        if len(polygon) < 3:
            continue
        x0, y0 = polygon[:, 0], polygon[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        j_lo = max(0, int(np.ceil(y0.min())))
        j_hi = min(rows - 1, int(np.floor(y0.max())))
        if j_hi < j_lo:
            continue
        js = np.arange(j_lo, j_hi + 1, dtype=float)[:, None]
        # Half-open rule: an edge counts for rows with min(y) <= j < max(y), so shared vertices count once.
        crosses = ((y0 <= js) & (js < y1)) | ((y1 <= js) & (js < y0))
        row_index, edge_index = np.nonzero(crosses)
        if not len(row_index):
            continue
        j = js[row_index, 0]
        e0x, e0y, e1x, e1y = x0[edge_index], y0[edge_index], x1[edge_index], y1[edge_index]
        x = e0x + (j - e0y) * (e1x - e0x) / (e1y - e0y)
        # Column i is inside when an odd number of crossings lie at x <= i: toggle from ceil(x) on.
        start = np.clip(np.ceil(x), 0, cols).astype(np.int64)
        np.add.at(toggles, (j.astype(np.int64), start), 1)
    return (np.cumsum(toggles, axis=1)[:, :cols] % 2).astype(bool)


# ------------------------------------------------------------------------------------------------
# RT Structure Set
# ------------------------------------------------------------------------------------------------
def _ds_text(values: np.ndarray) -> List[str]:
    """Decimal strings for ContourData (DS allows 16 characters; 0.0001 mm is plenty)."""
    out = []
    for v in np.asarray(values, dtype=float).ravel():
        text = f"{v:.4f}".rstrip("0").rstrip(".")
        out.append("0" if text in ("-0", "") else text)
    return out


def _code_item(code: Code, modifier: Optional[Code] = None):
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme
    item.CodeMeaning = code.meaning
    if modifier is not None:
        item.SegmentedPropertyTypeModifierCodeSequence = [_code_item(modifier)]
    return item


def _copy_if_present(target, source, keywords: Sequence[str]) -> None:
    for keyword in keywords:
        if keyword in source:
            setattr(target, keyword, source.data_element(keyword).value)


def write_rtstruct(
    labelmap: Volume,
    label_set: LabelSet,
    source: SourceLike,
    path: PathLike,
    overwrite: bool = False,
    structure_set_label: str = "HeadSeg",
    series_description: str = "HeadSeg structures",
    algorithm_name: str = "HeadSeg",
    series_number: int = 902,
) -> Path:
    """Write ``labelmap`` as an RT Structure Set on the ``source`` CT series: one ROI per structure present
    (name, colour, RTROIInterpretedType ORGAN, SNOMED CT category and type/laterality codes), contours
    per slice along the pixel edges, each referencing its CT image."""
    pydicom = _require_pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    src = load_dicom_source(source)
    src.check_grid(labelmap)
    array, structures = _present_structures(labelmap, label_set)
    first = src.first
    grid = src.grid()
    ijk_to_lps = grid.ijk_to_lps
    date, time = _now()

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RT_STRUCTURE_SET_STORAGE
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = str(first.get("SpecificCharacterSet", "ISO_IR 192")) or "ISO_IR 192"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    # Patient and study: the CT's, so the structure set files into the same patient and study.
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex"):
        setattr(ds, keyword, first.get(keyword, ""))
    _copy_if_present(ds, first, ("IssuerOfPatientID", "PatientAge", "PatientIdentityRemoved"))
    ds.StudyInstanceUID = first.StudyInstanceUID
    for keyword in ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"):
        setattr(ds, keyword, first.get(keyword, ""))
    _copy_if_present(ds, first, ("StudyDescription",))
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.OperatorsName = ""
    ds.Manufacturer = "HeadSeg"
    ds.ManufacturerModelName = algorithm_name
    ds.SoftwareVersions = __version__
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = first.get("PositionReferenceIndicator", "")
    ds.InstanceNumber = 1
    ds.StructureSetLabel = structure_set_label[:16]
    ds.StructureSetName = f"{label_set.name} structures"[:64]
    ds.StructureSetDate, ds.StructureSetTime = date, time

    contour_images = []
    for image in src.datasets:
        item = Dataset()
        item.ReferencedSOPClassUID = image.SOPClassUID
        item.ReferencedSOPInstanceUID = image.SOPInstanceUID
        contour_images.append(item)
    series_ref = Dataset()
    series_ref.SeriesInstanceUID = first.SeriesInstanceUID
    series_ref.ContourImageSequence = contour_images
    study_ref = Dataset()
    study_ref.ReferencedSOPClassUID = DETACHED_STUDY_MANAGEMENT
    study_ref.ReferencedSOPInstanceUID = first.StudyInstanceUID
    study_ref.RTReferencedSeriesSequence = [series_ref]
    frame_ref = Dataset()
    frame_ref.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame_ref.RTReferencedStudySequence = [study_ref]
    ds.ReferencedFrameOfReferenceSequence = [frame_ref]

    roi_items, contour_items, observation_items = [], [], []
    for number, structure in enumerate(structures, start=1):
        roi = Dataset()
        roi.ROINumber = number
        roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
        roi.ROIName = structure.name[:64]
        roi.ROIDescription = structure.key[:64]
        roi.ROIGenerationAlgorithm = "AUTOMATIC"
        roi.ROIGenerationDescription = f"{algorithm_name} {__version__}"[:64]
        roi_items.append(roi)

        contours = []
        mask3d = array == structure.label
        for k in np.nonzero(mask3d.any(axis=(1, 2)))[0]:
            for polygon in mask_to_polygons(mask3d[k]):
                ijk = np.column_stack([polygon, np.full(len(polygon), float(k)), np.ones(len(polygon))])
                lps = (ijk_to_lps @ ijk.T).T[:, :3]
                image_ref = Dataset()
                image_ref.ReferencedSOPClassUID = src.datasets[k].SOPClassUID
                image_ref.ReferencedSOPInstanceUID = src.datasets[k].SOPInstanceUID
                contour = Dataset()
                contour.ContourImageSequence = [image_ref]
                contour.ContourGeometricType = "CLOSED_PLANAR"
                contour.NumberOfContourPoints = len(lps)
                contour.ContourNumber = len(contours) + 1
                contour.ContourData = _ds_text(lps)
                contours.append(contour)
        roi_contour = Dataset()
        roi_contour.ROIDisplayColor = _rgb255(structure)
        roi_contour.ReferencedROINumber = number
        roi_contour.ContourSequence = contours
        contour_items.append(roi_contour)

        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.RTROIInterpretedType = "ORGAN"
        observation.ROIInterpreter = ""
        # Codes as PS3.3 C.8.8.8 (CP-2343): category, and type with the laterality modifier nested in it.
        observation.SegmentedPropertyCategoryCodeSequence = [_code_item(structure.terminology.category)]
        observation.RTROIIdentificationCodeSequence = [
            _code_item(structure.terminology.type, structure.terminology.type_modifier)
        ]
        observation_items.append(observation)
    ds.StructureSetROISequence = roi_items
    ds.ROIContourSequence = contour_items
    ds.RTROIObservationsSequence = observation_items
    ds.ApprovalStatus = "UNAPPROVED"

    def write(temp: Path) -> None:
        try:
            pydicom.dcmwrite(str(temp), ds, enforce_file_format=True)
        except TypeError:  # pydicom 2.x
            pydicom.dcmwrite(str(temp), ds, write_like_original=False)

    return _write_atomically(path, write, overwrite)


def read_rtstruct(path: PathLike, label_set: LabelSet, reference: Union[Volume, SourceLike]) -> Volume:
    """Rasterise an RT Structure Set onto ``reference`` (a Volume, or the CT series) as a label map of
    ``label_set``: ROIs are matched by their codes, else by name; contours go to the nearest slice and
    are filled by the even-odd rule at pixel centres. Unknown ROIs are an error that lists them."""
    pydicom = _require_pydicom()
    grid = reference if isinstance(reference, Volume) else load_dicom_source(reference).grid()
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as exc:
        raise InputError(f"Cannot read RT Structure Set {str(path)!r}: {exc}") from None
    if str(ds.get("Modality", "")) != "RTSTRUCT" or "StructureSetROISequence" not in ds:
        raise InputError(f"{Path(path).name!r} is not an RT Structure Set (modality {ds.get('Modality', '?')}).")
    observations = {int(o.ReferencedROINumber): o for o in ds.get("RTROIObservationsSequence", [])}
    structure_of_roi: Dict[int, Structure] = {}
    unknown = []
    for roi in ds.StructureSetROISequence:
        number = int(roi.ROINumber)
        structure = None
        if number in observations:
            structure = _segment_structure(observations[number], label_set)
        structure = structure or label_set.find(str(roi.ROIName))
        if structure is None:
            unknown.append(str(roi.ROIName))
        else:
            structure_of_roi[number] = structure
    if unknown:
        raise InputError(
            f"ROIs {unknown} of {Path(path).name!r} match no structure of the {label_set.name!r} label set "
            f"(known: {', '.join(s.name for s in label_set)})."
        )
    lps_to_ijk = np.linalg.inv(grid.ijk_to_lps)
    n_k, n_j, n_i = grid.shape
    out = np.zeros(grid.shape, dtype=labelmap_dtype(label_set.max_label))
    for roi_contour in ds.get("ROIContourSequence", []):
        structure = structure_of_roi.get(int(roi_contour.ReferencedROINumber))
        if structure is None:
            continue
        per_slice: Dict[int, List[np.ndarray]] = {}
        for contour in roi_contour.get("ContourSequence", []):
            points = np.asarray([float(v) for v in contour.ContourData], dtype=float).reshape(-1, 3)
            ijk = (lps_to_ijk @ np.column_stack([points, np.ones(len(points))]).T).T[:, :3]
            k = int(np.round(np.mean(ijk[:, 2])))
            if 0 <= k < n_k and np.abs(ijk[:, 2] - k).max() < 0.5:
                per_slice.setdefault(k, []).append(ijk[:, :2])
        for k, polygons in per_slice.items():
            mask = rasterize_polygons(polygons, (n_j, n_i))
            out[k][mask & (out[k] == 0)] = structure.label
    return grid.with_array(out)


# ------------------------------------------------------------------------------------------------
# One call for the command line
# ------------------------------------------------------------------------------------------------
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


def export_paths(out_dir: Path, case: str, formats: Sequence[str]) -> Dict[str, Path]:
    names = {"dicom-seg": f"{case}_seg.dcm", "rtstruct": f"{case}_rtstruct.dcm"}
    return {fmt: Path(out_dir) / names[fmt] for fmt in formats}


def export_dicom(
    labelmap: Volume,
    label_set: LabelSet,
    source: SourceLike,
    paths: Dict[str, Path],
    overwrite: bool = False,
    algorithm_name: str = "HeadSeg",
) -> List[Path]:
    """Write the requested DICOM objects (``paths``: format -> file) for one case; returns the files."""
    src = load_dicom_source(source)
    written = []
    for fmt, path in paths.items():
        if fmt == "dicom-seg":
            written.append(write_dicom_seg(labelmap, label_set, src, path, overwrite=overwrite,
                                           algorithm_name=algorithm_name))
        elif fmt == "rtstruct":
            written.append(write_rtstruct(labelmap, label_set, src, path, overwrite=overwrite,
                                          algorithm_name=algorithm_name))
        else:
            raise InputError(f"Unknown DICOM export format {fmt!r}; choose from {', '.join(EXPORT_FORMATS)}.")
    return written
