"""DICOM Segmentation (SEG) out and back, written with ``highdicom``.

Binary segments, one per structure present, with the label set's name as segment label, its colour as
CIELab display colour and its SNOMED CT category/type codes (laterality as type modifier). It is exact:
reading it back gives the label map voxel for voxel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from headseg import __version__
from headseg.dicom_export.source import (
    PathLike,
    SourceLike,
    _present_structures,
    _require_highdicom,
    _rgb255,
    _segment_structure,
    load_dicom_source,
)
from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io import labelmap_dtype, write_atomically
from headseg.labels import Code, LabelSet

__all__ = ["write_dicom_seg", "read_dicom_seg"]


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

    return write_atomically(path, write, overwrite)


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


