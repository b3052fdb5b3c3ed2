"""RT Structure Set out and back, written with ``pydicom`` by our own code (no rt-utils, which pulls in OpenCV).

One ROI per structure present: name (the AAPM TG-263 name by default, which radiotherapy systems
expect, e.g. ``Parotid_R``; or the display name), colour, RTROIInterpretedType ORGAN, SNOMED CT category and
type/laterality codes, and per-slice contours along the pixel edges (:mod:`.contours`), each referencing
its CT image, so treatment planning systems compute the same volume as HeadSeg's table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from headseg import __version__
from headseg.dicom_export.contours import mask_to_polygons, rasterize_polygons
from headseg.dicom_export.source import (
    PathLike,
    SourceLike,
    _now,
    _present_structures,
    _require_pydicom,
    _rgb255,
    _segment_structure,
    load_dicom_source,
)
from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io import labelmap_dtype, write_atomically
from headseg.labels import Code, LabelSet, Structure

__all__ = ["write_rtstruct", "read_rtstruct", "RT_STRUCTURE_SET_STORAGE", "ROI_NAMINGS"]

#: How ROIs are named: TG-263 (``Parotid_R``, the default) or the display name ("right parotid").
ROI_NAMINGS = ("tg263", "display")

RT_STRUCTURE_SET_STORAGE = "1.2.840.10008.5.1.4.1.1.481.3"
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"  # the study reference class RTSTRUCTs traditionally use


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
    roi_names: str = "tg263",
) -> Path:
    """Write ``labelmap`` as an RT Structure Set on the ``source`` CT series: one ROI per structure present
    (``roi_names``: "tg263" names such as ``Parotid_R``, or "display" names such as "right parotid"; colour,
    RTROIInterpretedType ORGAN, SNOMED CT category and type/laterality codes), contours per slice along the
    pixel edges, each referencing its CT image."""
    pydicom = _require_pydicom()

    if roi_names not in ROI_NAMINGS:
        raise InputError(f"Unknown ROI naming {roi_names!r}; choose from {', '.join(ROI_NAMINGS)}.")
    src = load_dicom_source(source)
    src.check_grid(labelmap)
    array, structures = _present_structures(labelmap, label_set)
    ds = _structure_set_header(src.first, label_set, structure_set_label, series_description, algorithm_name,
                               series_number)
    ds.ReferencedFrameOfReferenceSequence = [_referenced_frame(src)]
    ijk_to_lps = src.grid().ijk_to_lps
    roi_items, contour_items, observation_items = [], [], []
    for number, structure in enumerate(structures, start=1):
        name = structure.tg263 if roi_names == "tg263" and structure.tg263 else structure.name
        roi_items.append(_roi_item(number, structure, name, src.first.FrameOfReferenceUID, algorithm_name))
        contour_items.append(_roi_contour(number, structure, array == structure.label, src, ijk_to_lps))
        observation_items.append(_observation(number, structure))
    ds.StructureSetROISequence = roi_items
    ds.ROIContourSequence = contour_items
    ds.RTROIObservationsSequence = observation_items
    ds.ApprovalStatus = "UNAPPROVED"

    def write(temp: Path) -> None:
        try:
            pydicom.dcmwrite(str(temp), ds, enforce_file_format=True)
        except TypeError:  # pydicom 2.x
            pydicom.dcmwrite(str(temp), ds, write_like_original=False)

    return write_atomically(path, write, overwrite)


def _structure_set_header(first: Any, label_set: LabelSet, structure_set_label: str, series_description: str,
                          algorithm_name: str, series_number: int) -> Any:
    """The file meta, patient, study, series and structure set modules; patient and study are the CT's, so
    the structure set files into the same patient and study."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, UID, ExplicitVRLittleEndian, generate_uid

    date, time = _now()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(RT_STRUCTURE_SET_STORAGE)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = str(first.get("SpecificCharacterSet", "ISO_IR 192")) or "ISO_IR 192"
    ds.SOPClassUID = RT_STRUCTURE_SET_STORAGE
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
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
    return ds


def _referenced_frame(src: Any) -> Any:
    """The Frame of Reference, study and series the contours lie on, with every CT image listed."""
    from pydicom.dataset import Dataset

    first = src.first
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
    return frame_ref


def _roi_item(number: int, structure: Any, name: str, frame_of_reference: str, algorithm_name: str) -> Any:
    from pydicom.dataset import Dataset

    roi = Dataset()
    roi.ROINumber = number
    roi.ReferencedFrameOfReferenceUID = frame_of_reference
    roi.ROIName = name[:64]
    roi.ROIDescription = structure.key[:64]
    roi.ROIGenerationAlgorithm = "AUTOMATIC"
    roi.ROIGenerationDescription = f"{algorithm_name} {__version__}"[:64]
    return roi


def _roi_contour(number: int, structure: Any, mask3d: np.ndarray, src: Any, ijk_to_lps: np.ndarray) -> Any:
    """One closed planar contour per polygon of each slice, in LPS mm, each referencing its CT image."""
    from pydicom.dataset import Dataset

    contours: List[Any] = []  # pydicom Datasets
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
    return roi_contour


def _observation(number: int, structure: Any) -> Any:
    """Codes as PS3.3 C.8.8.8 (CP-2343): category, and type with the laterality modifier nested in it."""
    from pydicom.dataset import Dataset

    observation = Dataset()
    observation.ObservationNumber = number
    observation.ReferencedROINumber = number
    observation.RTROIInterpretedType = "ORGAN"
    observation.ROIInterpreter = ""
    observation.SegmentedPropertyCategoryCodeSequence = [_code_item(structure.terminology.category)]
    observation.RTROIIdentificationCodeSequence = [
        _code_item(structure.terminology.type, structure.terminology.type_modifier)
    ]
    return observation


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


