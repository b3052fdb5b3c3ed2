"""DICOM series in (and a synthetic series out, for tests and phantoms).

Which series of a folder is read, in which slice order and on which grid is decided here from the
files' own position and orientation tags, never from instance numbers, file names or SliceThickness.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io.files import InputFileNotFoundError, PathLike, is_dicom_file
from headseg.io.images import _check_image_shape, _check_size_before_reading, _unreadable, _volume_from_image
from headseg.io.slice_geometry import DicomSliceGeometry, slice_stack_geometry

__all__ = [
    "DicomSeries",
    "DicomSliceGeometry",
    "list_dicom_series",
    "select_dicom_series",
    "dicom_slice_geometry",
    "slice_stack_geometry",
    "read_dicom_folder",
    "check_modality",
    "dicom_patient_id",
    "hash_patient_id",
    "write_dicom_series",
]

log = logging.getLogger("headseg.io")

@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found in a folder."""

    series_uid: str
    modality: str
    description: str
    files: Tuple[str, ...]  # sorted by GDCM along the slice normal
    patient_id: str = ""  # PatientID of its first file (compared, never logged: patient data)

    @property
    def n_slices(self) -> int:
        return len(self.files)


def list_dicom_series(folder: PathLike) -> List[DicomSeries]:
    """All DICOM series in ``folder`` (not recursive), largest first."""
    import SimpleITK as sitk

    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileNotFoundError(f"DICOM folder {str(folder)!r} does not exist or is not a folder.")
    series = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)):
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        if not files:
            continue
        modality, description, patient = "", "", ""
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        try:
            reader.ReadImageInformation()
            if reader.HasMetaDataKey("0008|0060"):
                modality = reader.GetMetaData("0008|0060").strip()
            if reader.HasMetaDataKey("0008|103e"):
                description = reader.GetMetaData("0008|103e").strip()
            if reader.HasMetaDataKey("0010|0020"):
                patient = reader.GetMetaData("0010|0020").strip()
        except RuntimeError:
            pass  # unreadable header: keep the series, the actual read will report the problem
        series.append(DicomSeries(uid, modality, description, files, patient))
    series.sort(key=lambda s: (-s.n_slices, s.series_uid))
    return series


def select_dicom_series(folder: PathLike, containing_file: Optional[PathLike] = None) -> DicomSeries:
    """The series :func:`read_volume` reads from ``folder``: the one holding ``containing_file`` if given,
    else the largest CT series (else the largest series), with a warning naming the others."""
    folder = Path(folder)
    all_series = list_dicom_series(folder)
    if not all_series:
        raise InputError(
            f"No DICOM series found in folder {str(folder)!r}. Select the folder that directly contains "
            "the .dcm files of the CT (sub-folders are not searched), or a .nrrd/.nii.gz file."
        )
    if containing_file is not None:
        target = os.path.realpath(containing_file)
        matches = [s for s in all_series if target in {os.path.realpath(f) for f in s.files}]
        if not matches:
            if Path(containing_file) in _undecodable_files(folder, all_series):
                raise InputError(f"{Path(containing_file).name!r} cannot be decoded as DICOM (damaged or incompletely "
                                 "copied?). Copy the series again, or give another file of it or its folder.")
            raise InputError(f"{Path(containing_file).name!r} is not part of a readable DICOM series.")
        _refuse_undecodable_members(folder, all_series, matches[0])
        return matches[0]
    if len({s.patient_id for s in all_series if s.patient_id}) > 1:
        raise InputError(
            f"Folder {str(folder)!r} holds DICOM series of {len({s.patient_id for s in all_series if s.patient_id})} "
            "different patients (their PatientIDs differ), and HeadSeg will not guess which one to segment. Put each "
            "patient's series in a folder of its own, or give one file of the series to segment."
        )
    ct = [s for s in all_series if s.modality.upper() == "CT"]
    chosen = (ct or all_series)[0]
    _refuse_undecodable_members(folder, all_series, chosen)
    if len(all_series) > 1:
        others = "; ".join(
            f"{s.modality or '?'} '{s.description}' ({s.n_slices} files, UID {s.series_uid})"
            for s in all_series
            if s is not chosen
        )
        log.warning(
            "Folder %s holds %d DICOM series; using %s '%s' (%d slices, UID %s). Others: %s. To use another "
            "one, give one of its files or put its files in a folder of their own.",
            folder, len(all_series), chosen.modality or "?", chosen.description, chosen.n_slices,
            chosen.series_uid, others,
        )
    if not ct:
        log.warning("No CT series in %s; using the largest one (modality %r).", folder, chosen.modality)
    return chosen


def _undecodable_files(folder: Path, all_series: Sequence[DicomSeries]) -> List[Path]:
    """DICOM files of ``folder`` that GDCM left out of every series: it could not parse them (a truncated
    copy, a damaged header). DICOMDIR indexes are not images and are left alone."""
    listed = {os.path.realpath(f) for series in all_series for f in series.files}
    found = []
    for path in sorted(folder.iterdir()):
        if (path.is_file() and path.name.upper() != "DICOMDIR" and os.path.realpath(path) not in listed
                and (path.suffix.lower() == ".dcm" or is_dicom_file(path)) and not _is_dicomdir(path)):
            found.append(path)
    return found


def _refuse_undecodable_members(folder: Path, all_series: Sequence[DicomSeries], chosen: DicomSeries) -> None:
    """GDCM silently drops a file it cannot parse from its series, so a damaged slice would vanish (the top
    slice) or become a gap (any other): refuse the series, naming the file, instead. A damaged file of
    another series (its SeriesInstanceUID says so) is only logged."""
    suspects = []
    for path in _undecodable_files(folder, all_series):
        uid = _series_uid_in(path)
        if uid is None or uid == chosen.series_uid:
            suspects.append(path.name)
        else:
            log.info("Skipping %s: it cannot be decoded and belongs to another series (UID %s).", path.name, uid)
    if suspects:
        listed = ", ".join(repr(n) for n in suspects[:3]) + (f" and {len(suspects) - 3} more" if len(suspects) > 3 else "")
        raise InputError(
            f"{listed} in {str(folder)!r} cannot be decoded (damaged or incompletely copied DICOM) and may belong "
            f"to the series being read ({chosen.description or chosen.series_uid}), which would then miss "
            f"{'a slice' if len(suspects) == 1 else 'slices'}. Copy the series again, or move "
            f"{'the file' if len(suspects) == 1 else 'the files'} out of the folder if it is not part of it."
        )


_UID_TAG = b"\x20\x00\x0e\x00"  # (0020,000E) SeriesInstanceUID, little endian
_HEAD_BYTES = 1 << 20


def _series_uid_in(path: Path) -> Optional[str]:
    """The first SeriesInstanceUID in the raw bytes of a DICOM file that no parser accepts (explicit or
    implicit VR little endian, as nearly every file is), or None. Enough to tell which series a truncated
    slice belonged to; its header comes before the pixel data that truncation cuts."""
    try:
        with open(path, "rb") as f:
            data = f.read(_HEAD_BYTES)
    except OSError:
        return None
    start = data.find(_UID_TAG)
    while start >= 0:
        if data[start + 4:start + 6] == b"UI":  # explicit VR: 2-byte length
            length, value_at = int.from_bytes(data[start + 6:start + 8], "little"), start + 8
        else:  # implicit VR: 4-byte length
            length, value_at = int.from_bytes(data[start + 4:start + 8], "little"), start + 8
        value = data[value_at:value_at + length].rstrip(b"\0 ").decode("ascii", "replace")
        if 0 < length <= 64 and value and all(c.isdigit() or c == "." for c in value):
            return value
        start = data.find(_UID_TAG, start + 1)
    return None


def _is_dicomdir(path: Path) -> bool:
    """A DICOMDIR under another name (its Media Storage SOP Class in the file meta header)."""
    try:
        with open(path, "rb") as f:
            return b"1.2.840.10008.1.3.10" in f.read(1024)
    except OSError:
        return False


def _float_list(text: str) -> List[float]:
    return [float(v) for v in text.replace(",", "\\").split("\\") if v.strip()]


def dicom_slice_geometry(series: DicomSeries) -> Optional[DicomSliceGeometry]:
    """Check and sort the slices of ``series`` (see :func:`slice_stack_geometry`) from their file headers.

    Returns None (after a warning) when the files lack positions or orientations, e.g. secondary
    captures; then GDCM's order is used.
    """
    import SimpleITK as sitk

    label = f"DICOM series '{series.description}' (UID {series.series_uid})"
    positions, orientations, pixel_spacings, sizes = [], [], [], []
    patients: Set[str] = set()
    reader = sitk.ImageFileReader()
    for name in series.files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
            if reader.HasMetaDataKey("0010|0020"):
                patients.add(reader.GetMetaData("0010|0020").strip())
            tags = {key: reader.GetMetaData(key) for key in ("0020|0032", "0020|0037", "0028|0030", "0028|0010",
                                                            "0028|0011") if reader.HasMetaDataKey(key)}
            positions.append(_float_list(tags["0020|0032"]))
            orientations.append(_float_list(tags["0020|0037"]))
            pixel_spacings.append(_float_list(tags.get("0028|0030", "1\\1")))
            sizes.append((int(tags.get("0028|0010", 0)), int(tags.get("0028|0011", 0))))
        except (RuntimeError, KeyError, ValueError):
            log.warning("%s: %s has no usable slice position/orientation; slices are taken in GDCM's order "
                        "and the slice spacing from ITK.", label, Path(name).name)
            return None
    if len(patients) > 1:
        raise InputError(f"{label} holds slices of {len(patients)} different patients (the PatientID differs between "
                         "its files): a series must be one patient's scan. Export the series again from the archive.")
    return slice_stack_geometry(label, positions, orientations, pixel_spacings, sizes, series.files)


def dicom_patient_id(path: PathLike) -> Optional[str]:
    """The PatientID of a DICOM file, or of the first image file of a DICOM folder (read_volume refuses a
    folder or series that mixes patients); None for other inputs or when there is none."""
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        candidates = sorted(p for p in path.iterdir() if p.is_file() and is_dicom_file(p))
    else:
        candidates = [path] if is_dicom_file(path) else []
    reader = sitk.ImageFileReader()
    for candidate in candidates[:50]:
        reader.SetFileName(str(candidate))
        try:
            reader.ReadImageInformation()
        except RuntimeError:
            continue  # not an image (a structure set, a report): try the next file
        if reader.HasMetaDataKey("0010|0020") and reader.GetMetaData("0010|0020").strip():
            return reader.GetMetaData("0010|0020").strip()
    return None


def hash_patient_id(patient_id: Optional[str]) -> Optional[str]:
    """What HeadSeg keeps of a PatientID (in ``<case>_run.json``): a salted SHA-256 prefix that tells two
    patients apart without naming either."""
    import hashlib

    if not patient_id or not patient_id.strip():
        return None
    return hashlib.sha256(f"headseg-patient:{patient_id.strip()}".encode()).hexdigest()[:24]


def read_dicom_folder(folder: Path, containing_file: Optional[Path] = None, allow_non_ct: bool = False) -> Volume:
    """The series :func:`select_dicom_series` chooses, as a volume on the grid its slice positions span.

    A gantry-tilted or unevenly spaced series is resampled onto a regular grid (:mod:`headseg.io.regularise`)
    with a warning that says what was done; a gap of more than twice the median slice distance is refused.
    A series whose Modality is not CT is refused unless ``allow_non_ct`` (HeadSeg's models know CT only;
    an MR whose values happen to look like Hounsfield units would be segmented into nonsense)."""
    import SimpleITK as sitk

    chosen = select_dicom_series(folder, containing_file)
    label = f"DICOM series {chosen.series_uid} in {folder.name}"
    check_modality(chosen, allow_non_ct)
    if chosen.n_slices < 2:
        raise InputError(
            f"{label} has a single slice. HeadSeg needs a 3D volume: export the whole CT series, "
            "not one image."
        )
    geometry = dicom_slice_geometry(chosen)
    if geometry is not None:
        _check_size_before_reading(label, (geometry.columns, geometry.rows, chosen.n_slices), None)
        if not geometry.is_regular:
            from headseg.io.regularise import regular_grid

            _check_size_before_reading(label, regular_grid(geometry).shape[::-1], None)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(geometry.files if geometry is not None else chosen.files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _unreadable(_first_unreadable(reader.GetFileNames()) or folder, exc) from None
    _check_image_shape(label, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    volume = _volume_from_image(image)
    if geometry is not None and not geometry.is_regular:
        from headseg.io.regularise import describe_regularisation, regularise_stack

        volume = regularise_stack(volume.array, geometry)
        name = f"DICOM series '{chosen.description}'" if chosen.description else "DICOM series"
        log.warning("%s (UID %s) in %s has %s", name, chosen.series_uid, folder.name,
                    describe_regularisation(geometry, volume))
    elif geometry is not None:  # positions, not SliceThickness or ITK's first-two-slices estimate
        volume = Volume(volume.array, (volume.spacing[0], volume.spacing[1], geometry.slice_spacing),
                        tuple(geometry.positions[0]), geometry.direction)
    _warn_if_lossy(chosen, folder.name)
    return volume


#: Transfer syntaxes that lose information: JPEG baseline/extended, JPEG-LS near-lossless, JPEG 2000 lossy.
LOSSY_TRANSFER_SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.81",
                           "1.2.840.10008.1.2.4.91")


def _warn_if_lossy(series: DicomSeries, folder_name: str) -> None:
    """Warn (it goes into the run's notes) when the series says it was compressed with loss: its Hounsfield
    units are not the scanner's, and volumes may differ by a few percent from the original's."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(series.files[0])
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return

    def tag(key: str) -> str:
        return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""

    lossy_tag = tag("0028|2110") == "01"
    syntax = tag("0002|0010").rstrip("\x00 ")
    if lossy_tag or syntax in LOSSY_TRANSFER_SYNTAXES:
        ratio = tag("0028|2112")
        method = tag("0028|2114")
        details = ", ".join(d for d in (f"method {method}" if method else "", f"ratio {ratio}" if ratio else "") if d)
        log.warning("DICOM series '%s' (UID %s) in %s was compressed with loss%s: its values are not the scanner's "
                    "and volumes may differ by a few percent from the original's. Use the original (uncompressed or "
                    "lossless) series for measurements when you can.", series.description, series.series_uid,
                    folder_name, f" ({details})" if details else "")


def check_modality(series: DicomSeries, allow_non_ct: bool = False) -> None:
    """Refuse a series whose Modality tag says it is not CT, unless ``allow_non_ct``."""
    modality = series.modality.strip().upper()
    name = f"DICOM series '{series.description}' (UID {series.series_uid})"
    if not modality:
        log.warning("%s has no Modality tag; it is read as a CT.", name)
    elif modality != "CT" and not allow_non_ct:
        raise InputError(
            f"{name} has Modality {series.modality!r}, not CT, and HeadSeg's models are made for CT only. "
            "Choose the CT series, or pass --allow-non-ct to headseg segment if it really holds CT Hounsfield "
            "units under another modality (for example a CT stored as 'OT')."
        )


def _first_unreadable(files: Sequence[str]) -> Optional[Path]:
    """The first file of a series that SimpleITK cannot decode on its own (to name it in the error)."""
    import SimpleITK as sitk

    for name in files:
        try:
            sitk.ReadImage(name)
        except RuntimeError:
            return Path(name)
    return None


def write_dicom_series(
    volume: Volume,
    folder: PathLike,
    modality: str = "CT",
    series_description: str = "HeadSeg synthetic series",
    series_uid: Optional[str] = None,
    positions: Optional[Sequence[Sequence[float]]] = None,
) -> List[Path]:
    """Write an integer volume as a DICOM series, one file per k slice (for tests and synthetic
    phantoms: the files carry only the geometry and identification tags, no patient data).

    ``positions`` (LPS mm, one per k slice) replace the ImagePositionPatient of the volume's grid, for
    series as scanners write them: gantry-tilted (positions stepping off the slice normal) or unevenly
    spaced. The orientation is always the volume's i and j directions."""
    import SimpleITK as sitk

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if not np.issubdtype(volume.array.dtype, np.integer):
        raise InputError("write_dicom_series needs an integer volume (e.g. int16 Hounsfield units).")
    image = volume.to_sitk()
    direction = volume.direction
    uid = series_uid or f"2.25.{uuid.uuid4().int}"
    # Own UIDs for study and frame of reference: "<series>.1" would equal the first slice's SOP UID.
    study_uid, frame_uid = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    orientation = "\\".join(f"{x:.10g}" for x in list(direction[:, 0]) + list(direction[:, 1]))
    if positions is not None and np.shape(positions) != (volume.shape[0], 3):
        raise InputError(f"write_dicom_series needs one position (x, y, z) per slice, {volume.shape[0]} in all.")
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(volume.shape[0]):
        slice_image = image[:, :, k]
        position = volume.index_to_lps((0, 0, k)) if positions is None else np.asarray(positions[k], dtype=float)
        tags = {
            "0008|0060": modality,
            "0008|103e": series_description,
            "0008|0008": "DERIVED\\SECONDARY\\AXIAL",
            "0020|000d": study_uid,
            "0020|000e": uid,
            "0020|0052": frame_uid,
            "0010|0020": "HEADSEG-SYNTHETIC",
            "0020|0011": "1",
            "0008|0018": f"{uid}.{k + 1}",
            "0020|0013": str(k + 1),
            "0020|0037": orientation,
            "0020|0032": "\\".join(f"{x:.10g}" for x in position),
            "0018|0050": f"{volume.spacing[2]:.10g}",
        }
        for key, value in tags.items():
            slice_image.SetMetaData(key, value)
        path = folder / f"slice_{k:04d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(slice_image)
        paths.append(path)
    return paths


