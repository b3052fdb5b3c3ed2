"""Reading and writing images, label maps and Slicer segmentations, with errors a user can act on.

Everything goes through :class:`headseg.geometry.Volume` (array[k, j, i], LPS geometry). Images are
read with SimpleITK, which keeps the stored pixel type (an int16 CT stays int16). Slicer ``.seg.nrrd``
files are written and read with pynrrd because their meaning lives in custom header fields
(``SegmentN_Name``, ``SegmentN_LabelValue``, ...).

Writes are atomic: the data goes to a temporary file in the destination folder, which then replaces
the final name with ``os.replace``; a crash or a full disk never leaves a half-written file under the
name the user asked for. Existing files are only replaced with ``overwrite=True``.
"""

from __future__ import annotations

import errno
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from headseg.errors import HeadSegError, InputError
from headseg.geometry import Volume
from headseg.labels import LabelSet, Structure, Terminology

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "InputFileNotFoundError",
    "OutputExistsError",
    "DicomSeries",
    "read_volume",
    "list_dicom_series",
    "select_dicom_series",
    "DicomSliceGeometry",
    "dicom_slice_geometry",
    "slice_stack_geometry",
    "write_volume",
    "write_labelmap",
    "write_dicom_series",
    "write_segmentation",
    "read_segmentation",
    "labelmap_dtype",
]

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

READ_EXTENSIONS = (".seg.nrrd", ".nrrd", ".nhdr", ".nii.gz", ".nii", ".mha", ".mhd", ".dcm")
# Only single-file formats: a two-file format (.nhdr + .raw, .mhd + .raw) cannot be replaced atomically.
WRITE_EXTENSIONS = (".seg.nrrd", ".nrrd", ".nii.gz", ".nii", ".mha")


class InputFileNotFoundError(InputError, FileNotFoundError):
    """An input file or folder does not exist (both an :class:`InputError` and a FileNotFoundError)."""


class OutputExistsError(HeadSegError, FileExistsError):
    """The output file exists and ``overwrite`` was not requested."""


def _extension(path: Path) -> str:
    name = path.name.lower()
    for ext in READ_EXTENSIONS:
        if name.endswith(ext):
            return ext
    return path.suffix.lower()


def _is_dicom_file(path: Path) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble, whatever their name."""
    try:
        with open(path, "rb") as f:
            f.seek(128)
            return f.read(4) == b"DICM"
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------
def read_volume(path: PathLike) -> Volume:
    """Read a 3D grey-scale image: NRRD (.nrrd/.nhdr), NIfTI (.nii/.nii.gz), MetaImage (.mha/.mhd),
    a folder holding a DICOM series, or one file of a DICOM series (the whole series is read).

    The pixel type of the file is kept. Raises :class:`InputError` (with what to do) for a missing file,
    an unsupported format, a 2D or 4D image, an RGB/vector image, or a file that cannot be decoded.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileNotFoundError(
            f"Input image {str(path)!r} does not exist. Check the path (and that the drive is mounted)."
        )
    if path.is_dir():
        return _read_dicom_folder(path)
    ext = _extension(path)
    if ext == ".dcm" or (ext not in READ_EXTENSIONS and _is_dicom_file(path)):
        return _read_dicom_folder(path.parent, containing_file=path)
    if ext not in READ_EXTENSIONS:
        raise InputError(
            f"Cannot read {path.name!r}: the file type {ext or '(no extension)'!r} is not supported. "
            f"Use one of {', '.join(READ_EXTENSIONS)} or a folder with a DICOM series."
        )
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _unreadable(path, exc) from None
    _check_image_shape(path.name, reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents())
    _check_size_before_reading(path.name, reader.GetSize(), path.stat().st_size)
    if ext in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _unreadable(path, exc) from None
    return _volume_from_image(image)


def _unreadable(path: Path, exc: Exception) -> InputError:
    import re

    # ITK's last line is often a stale errno ("Reason: No such file or directory" for a file that exists);
    # keep the most specific line that says something, without ITK's class/address prefix.
    detail = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    detail = [line for line in detail if not line.startswith("Exception thrown in")
              and not (line.startswith("Reason:") and path.exists())]
    reason = detail[-1] if detail else "unknown error"
    reason = re.sub(r"^(itk::|sitk::|ITK )?ERROR: (\w+\(0x[0-9a-fA-F]+\): )?", "", reason)
    return InputError(
        f"Could not read {path.name!r}: the file is damaged, incomplete or not really a "
        f"{_extension(path) or 'supported'} image. Re-export or re-copy it. (Reader said: {reason.strip()})"
    )


def _nifti_expected_bytes(header: bytes) -> Optional[int]:
    """Bytes a NIfTI-1/2 file must have (voxel offset + voxel data), or None if the header is unknown."""
    import struct

    for order in "<>":
        size = struct.unpack(order + "i", header[:4])[0]
        if size == 348 and len(header) >= 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = int(struct.unpack(order + "f", header[108:112])[0])
            break
        if size == 540 and len(header) >= 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
            break
    else:
        return None
    n_voxels = int(np.prod([max(1, int(d)) for d in dims[1 : 1 + max(0, min(7, int(dims[0])))]]))
    return max(offset, 352 if size == 348 else 544) + n_voxels * int(bitpix) // 8


def _check_nifti_complete(path: Path) -> None:
    """ITK reads a truncated NIfTI file without complaint (the missing voxels come back as garbage),
    so check the data length ourselves: file size for .nii, the gzip stream for .nii.gz."""
    import gzip
    import struct
    import zlib

    truncated = InputError(
        f"{path.name!r} is truncated (incomplete download or copy?): it holds fewer voxels than its header "
        "announces. Copy or export the file again."
    )
    if path.name.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                expected = _nifti_expected_bytes(f.read(544))
        except (OSError, EOFError, zlib.error):
            raise truncated from None
        if expected is None:
            return
        with open(path, "rb") as raw:
            raw.seek(-4, os.SEEK_END)
            stored_size = struct.unpack("<I", raw.read(4))[0]  # gzip trailer: length modulo 2**32
        if stored_size == expected % 2**32:
            return  # single-member gzip with the right length: complete (the usual case, no decompression)
        total = 0  # multi-member gzip or truncated: decompress to find out
        try:
            with gzip.open(path, "rb") as f:
                while True:
                    chunk = f.read(1 << 24)
                    if not chunk:
                        break
                    total += len(chunk)
        except (OSError, EOFError, zlib.error):
            raise truncated from None
        if total < expected:
            raise truncated
    else:
        with open(path, "rb") as f:
            expected = _nifti_expected_bytes(f.read(544))
        if expected is not None and path.stat().st_size < expected:
            raise truncated


def _check_image_shape(label: str, dimension: int, size: Sequence[int], components: int) -> None:
    if components != 1:
        raise InputError(
            f"{label!r} has {components} values per voxel (an RGB/colour or vector image). HeadSeg needs "
            "a grey-scale CT volume; export the original CT instead of a screenshot or colour rendering."
        )
    if dimension == 4 and size[3] == 1:
        return  # a 3D volume stored as 4D with one frame; squeezed when converting
    if dimension == 2 or (dimension == 3 and min(size) == 1):
        raise InputError(
            f"{label!r} is a single 2D slice (size {tuple(size)}). HeadSeg needs a 3D volume: load the whole "
            "series (the DICOM folder) or a 3D file."
        )
    if dimension == 4:
        raise InputError(
            f"{label!r} is 4D (size {tuple(size)}: {size[3]} frames, e.g. a time series or multi-channel "
            "image). Extract the single 3D frame to segment and save it as its own file."
        )
    if dimension != 3:
        raise InputError(f"{label!r} is {dimension}D; HeadSeg needs a 3D volume.")


# zlib (gzip, NRRD/MHA compression) cannot shrink data more than about 1032:1; a header announcing far
# more voxel bytes than that times the file size is lying (hostile or damaged) -- refuse before allocating.
_MAX_COMPRESSION_RATIO = 1100


def _check_size_before_reading(label: str, size: Sequence[int], file_bytes: Optional[int]) -> None:
    """Refuse absurd sizes from the header alone, before any voxel memory is allocated."""
    from headseg.validation import MAX_VOXELS

    n_voxels = int(np.prod([int(s) for s in size[:3]], dtype=object))
    if n_voxels > MAX_VOXELS:
        dims = " x ".join(str(int(s)) for s in size[:3])
        raise InputError(
            f"{label!r} claims {dims} = {n_voxels:,} voxels, far more than any head CT (limit {MAX_VOXELS:,}); "
            "the header is damaged or the file is not a CT. Nothing was loaded."
        )
    if file_bytes is not None and n_voxels > _MAX_COMPRESSION_RATIO * file_bytes + (1 << 20):
        raise InputError(
            f"{label!r} claims {n_voxels:,} voxels but the file has only {file_bytes:,} bytes: it is truncated "
            "or its header is damaged. Copy or export the file again."
        )


def _volume_from_image(image) -> Volume:
    import SimpleITK as sitk

    if image.GetDimension() == 4:  # one frame, checked above
        size = list(image.GetSize())
        image = sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0])
    return Volume.from_sitk(image)


@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series found in a folder."""

    series_uid: str
    modality: str
    description: str
    files: Tuple[str, ...]  # sorted by GDCM along the slice normal

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
        modality, description = "", ""
        reader = sitk.ImageFileReader()
        reader.SetFileName(files[0])
        try:
            reader.ReadImageInformation()
            if reader.HasMetaDataKey("0008|0060"):
                modality = reader.GetMetaData("0008|0060").strip()
            if reader.HasMetaDataKey("0008|103e"):
                description = reader.GetMetaData("0008|103e").strip()
        except RuntimeError:
            pass  # unreadable header: keep the series, the actual read will report the problem
        series.append(DicomSeries(uid, modality, description, files))
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
            raise InputError(f"{Path(containing_file).name!r} is not part of a readable DICOM series.")
        return matches[0]
    ct = [s for s in all_series if s.modality.upper() == "CT"]
    chosen = (ct or all_series)[0]
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


@dataclass(frozen=True)
class DicomSliceGeometry:
    """Where the slices of a series lie, from ImagePositionPatient/ImageOrientationPatient of every file."""

    files: Tuple[str, ...]  # sorted along the slice normal (ascending), never by instance number or name
    order: Tuple[int, ...]  # sorted position n holds input slice order[n]
    positions: np.ndarray  # [n, 3] LPS mm, in the order of ``files``
    direction: np.ndarray  # 3x3, columns: row direction (i), column direction (j), slice normal (k)
    slice_spacing: float  # mean distance between neighbouring slices along the normal (not SliceThickness)
    pixel_spacing: Tuple[float, float]  # (i, j) = (between columns, between rows)
    rows: int
    columns: int


# A slice may sit this fraction of the in-plane pixel size off the line of the first slice's normal (IPP
# rounding in the files is ~0.001-0.01 mm); further off means a gantry tilt or slices of several stacks.
_MAX_LATERAL_OFFSET_PIXELS = 0.25
# Neighbouring slice distances may differ from the median by this much (5 % or 0.02 mm): more is a
# missing slice or a variable-spacing reconstruction that one spacing value cannot describe.
_SPACING_REL_TOL, _SPACING_ABS_TOL = 0.05, 0.02


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
    reader = sitk.ImageFileReader()
    for name in series.files:
        reader.SetFileName(name)
        try:
            reader.ReadImageInformation()
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
    return slice_stack_geometry(label, positions, orientations, pixel_spacings, sizes, series.files)


def slice_stack_geometry(
    label: str,
    positions: Sequence[Sequence[float]],
    orientations: Sequence[Sequence[float]],
    pixel_spacings: Sequence[Sequence[float]],
    sizes: Sequence[Tuple[int, int]],
    names: Sequence[str] = (),
) -> DicomSliceGeometry:
    """Sort slices by their position along the slice normal (ImagePositionPatient projected on the cross
    product of the ImageOrientationPatient vectors) and check that they form one regular 3D grid.

    Raises :class:`InputError` for slices with different orientations or sizes, two slices at the same
    position, a gantry tilt (positions that step off the slice normal: the voxel grid would be sheared)
    and uneven slice spacing (missing slices). ``names`` (file names) are returned sorted in ``files``.
    """
    if any(len(p) != 3 for p in positions) or any(len(o) != 6 for o in orientations):
        raise InputError(f"{label} has malformed ImagePositionPatient/ImageOrientationPatient values.")
    orientation = np.asarray(orientations, dtype=float)
    if np.abs(orientation - orientation[0]).max() > 1e-3:
        raise InputError(
            f"{label} mixes slices with different orientations (e.g. a localizer or several stacks in one "
            "series). Export the axial CT series alone."
        )
    if len(set(sizes)) > 1:
        raise InputError(f"{label} mixes slices of different sizes {sorted(set(sizes))}; export one CT series alone.")
    row, col = orientation[0, :3], orientation[0, 3:]
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    normal = np.cross(row, col)
    points = np.asarray(positions, dtype=float)
    along = points @ normal
    order = np.argsort(along, kind="stable")
    points, along = points[order], along[order]
    steps = np.diff(along)
    if len(steps) and steps.min() < 1e-3:
        n = int(np.argmin(steps))
        raise InputError(
            f"{label} has two slices at the same position ({along[n]:.2f} mm along the slice normal): several "
            "acquisitions, phases or copies of a file in one series. Export one reconstruction alone."
        )
    first_spacing = list(pixel_spacings[0]) if len(pixel_spacings) else []
    pixel = (float(first_spacing[1]), float(first_spacing[0])) if len(first_spacing) == 2 else (1.0, 1.0)
    offsets = points - points[0]
    lateral = offsets - np.outer(offsets @ normal, normal)
    lateral_mm = np.linalg.norm(lateral, axis=1)
    if len(points) > 1 and lateral_mm.max() > _MAX_LATERAL_OFFSET_PIXELS * min(pixel):
        tilt = float(np.degrees(np.arctan2(lateral_mm[-1], along[-1] - along[0])))
        raise InputError(
            f"{label} is not a stack of parallel slices along their normal: the slice positions drift "
            f"{lateral_mm.max():.1f} mm sideways over {along[-1] - along[0]:.0f} mm, i.e. a gantry tilt of "
            f"about {tilt:.1f} degrees (or slices of several stacks). HeadSeg cannot resample tilted "
            "acquisitions correctly. Resample the series to a regular grid first, e.g. in 3D Slicer with "
            "Application settings > DICOM > ScalarVolume > 'Acquisition geometry regularization', then save "
            "it as .nrrd, or ask for a reconstruction without tilt."
        )
    if len(steps) > 1:
        median = float(np.median(steps))
        worst = int(np.argmax(np.abs(steps - median)))
        if abs(steps[worst] - median) > max(_SPACING_ABS_TOL, _SPACING_REL_TOL * median):
            raise InputError(
                f"{label} has uneven slice spacing: {steps[worst]:.2f} mm between slices at {along[worst]:.2f} "
                f"and {along[worst + 1]:.2f} mm, {median:.2f} mm elsewhere (a missing slice, or a variable "
                "spacing reconstruction). Export the complete series, or resample it to a regular grid first."
            )
    spacing = float((along[-1] - along[0]) / (len(along) - 1)) if len(along) > 1 else 1.0
    return DicomSliceGeometry(
        files=tuple(names[n] for n in order) if len(names) else (),
        order=tuple(int(n) for n in order),
        positions=points,
        direction=np.column_stack([row, col, normal]),
        slice_spacing=spacing,
        pixel_spacing=pixel,
        rows=int(sizes[0][0]) if len(sizes) else 0,
        columns=int(sizes[0][1]) if len(sizes) else 0,
    )


def _read_dicom_folder(folder: Path, containing_file: Optional[Path] = None) -> Volume:
    import SimpleITK as sitk

    chosen = select_dicom_series(folder, containing_file)
    label = f"DICOM series {chosen.series_uid} in {folder.name}"
    if chosen.n_slices < 2:
        raise InputError(
            f"{label} has a single slice. HeadSeg needs a 3D volume: export the whole CT series, "
            "not one image."
        )
    geometry = dicom_slice_geometry(chosen)
    if geometry is not None:
        _check_size_before_reading(label, (geometry.columns, geometry.rows, chosen.n_slices), None)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(geometry.files if geometry is not None else chosen.files))
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise _unreadable(folder, exc) from None
    _check_image_shape(label, image.GetDimension(), image.GetSize(), image.GetNumberOfComponentsPerPixel())
    volume = _volume_from_image(image)
    if geometry is not None:  # positions, not SliceThickness or ITK's first-two-slices estimate
        volume = Volume(volume.array, (volume.spacing[0], volume.spacing[1], geometry.slice_spacing),
                        tuple(geometry.positions[0]), geometry.direction)
    return volume


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------
def _write_atomically(path: PathLike, write: Callable[[Path], None], overwrite: bool) -> Path:
    """Run ``write(temp_path)`` and move the result to ``path`` in one step."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(
            f"Output file {str(path)!r} already exists. Choose another name or pass overwrite=True."
        )
    if not path.parent.is_dir():
        raise InputFileNotFoundError(f"Output folder {str(path.parent)!r} does not exist; create it first.")
    ext = _extension(path)
    # Keep the real extension at the end: SimpleITK chooses the writer by it.
    temp = path.parent / f".{path.name[: len(path.name) - len(ext)]}.{uuid.uuid4().hex[:8]}.partial{ext}"
    try:
        write(temp)
        if path.exists() and not overwrite:  # appeared while we were writing
            raise OutputExistsError(
                f"Output file {str(path)!r} was created by someone else while writing; nothing was replaced."
            )
        os.replace(temp, path)
    finally:
        if temp.exists():
            temp.unlink()
    return path


def _check_write_extension(path: Path, allowed: Iterable[str]) -> str:
    ext = _extension(path)
    allowed = tuple(allowed)
    if ext not in allowed:
        raise InputError(
            f"Cannot write {path.name!r}: use one of the extensions {', '.join(allowed)} "
            "(single-file formats only)."
        )
    return ext


def write_volume(volume: Volume, path: PathLike, overwrite: bool = False, compress: bool = True) -> Path:
    """Write an image (.nrrd, .nii.gz, .nii or .mha), keeping its pixel type and geometry."""
    import SimpleITK as sitk

    path = Path(path)
    _check_write_extension(path, (".nrrd", ".nii.gz", ".nii", ".mha"))
    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    image = Volume(array, volume.spacing, volume.origin, volume.direction).to_sitk()

    def write(temp: Path) -> None:
        try:
            sitk.WriteImage(image, str(temp), compress)
        except RuntimeError as exc:  # ITK reports a full disk or an I/O error as RuntimeError: make it an OSError
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            reason = lines[-1] if lines else "write failed"
            raise OSError(errno.EIO, f"writing failed (disk full or not writable?): {reason}", str(path)) from None

    return _write_atomically(path, write, overwrite)


def labelmap_dtype(max_label: int) -> np.dtype:
    """Smallest unsigned type for a label map (uint8 up to 255, else uint16)."""
    if max_label > 65535:
        raise InputError(f"Label value {max_label} is too large for a label map (maximum 65535).")
    return np.dtype(np.uint8 if max_label <= 255 else np.uint16)


def _as_label_array(array: np.ndarray, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        return array.astype(np.uint8)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.issubdtype(array.dtype, np.floating) or not np.all(np.isfinite(array)):
            raise InputError(f"{what} must hold integer label values, got dtype {array.dtype}.")
        if not np.array_equal(array, np.round(array)):
            raise InputError(
                f"{what} holds non-integer values (probabilities?). Convert to labels (argmax) first."
            )
    if array.size and array.min() < 0:
        raise InputError(f"{what} holds negative values ({array.min()}); label values must be 0 or more.")
    max_label = int(array.max()) if array.size else 0
    return array.astype(labelmap_dtype(max_label), copy=False)


def write_labelmap(volume: Volume, path: PathLike, overwrite: bool = False) -> Path:
    """Write a label map as compressed uint8 (or uint16 when labels exceed 255)."""
    array = _as_label_array(volume.array, "The label map")
    return write_volume(volume.with_array(array), path, overwrite=overwrite, compress=True)


def write_dicom_series(
    volume: Volume,
    folder: PathLike,
    modality: str = "CT",
    series_description: str = "HeadSeg synthetic series",
    series_uid: Optional[str] = None,
) -> List[Path]:
    """Write an integer volume as a DICOM series, one file per k slice (for tests and synthetic
    phantoms: the files carry only the geometry and identification tags, no patient data)."""
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
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    paths = []
    for k in range(volume.shape[0]):
        slice_image = image[:, :, k]
        position = volume.index_to_lps((0, 0, k))
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


# ------------------------------------------------------------------------------------------------
# Slicer segmentation files (.seg.nrrd)
# ------------------------------------------------------------------------------------------------
_BINARY_LABELMAP = "Binary labelmap"


def _format_numbers(values: Iterable[float]) -> str:
    return " ".join(f"{float(v):.10g}" for v in values)


def write_segmentation(
    labelmap: Volume,
    label_set: LabelSet,
    path: PathLike,
    present_labels: Optional[Iterable[int]] = None,
    overwrite: bool = False,
) -> Path:
    """Write a label map as a Slicer segmentation (.seg.nrrd): one 3D layer, one segment per structure
    with its label value, name, colour, DICOM terminology and the structure key as segment ID.

    Segments are listed for every structure of ``label_set`` -- also those with no voxels -- so a user
    who opens the file in Slicer can draw a structure the model missed without creating (and naming,
    colouring, coding) the segment by hand. ``present_labels`` restricts the list, e.g. to the organs a
    model predicts; voxels with a value outside the listed segments are an error, never silently lost.
    """
    import nrrd

    path = Path(path)
    if not path.name.lower().endswith(".seg.nrrd"):
        raise InputError(f"A Slicer segmentation file name must end with .seg.nrrd, got {path.name!r}.")
    array = _as_label_array(labelmap.array, "The label map")
    if present_labels is None:
        structures = list(label_set.structures)
    else:
        structures = [label_set.by_label(v) for v in sorted({int(v) for v in present_labels})]
    listed = {s.label for s in structures}
    found = {int(v) for v in np.unique(array)} - {0}
    unlisted = sorted(found - listed)
    if unlisted:
        raise InputError(
            f"The label map holds values {unlisted} that are not segments of the {label_set.name!r} label "
            f"set{' (present_labels)' if present_labels is not None else ''}; valid: {sorted(listed)}."
        )
    data_dtype = labelmap_dtype(max(listed | {0}))
    array = array.astype(data_dtype, copy=False)

    k, j, i = array.shape
    # Every segment gets the full image extent: Slicer allocates a shared layer from the extent of the
    # first segment in it, so a per-segment bounding box (or an empty one) would crop the other segments.
    extent = f"0 {i - 1} 0 {j - 1} 0 {k - 1}"
    header: Dict[str, object] = {
        "type": "unsigned char" if data_dtype == np.uint8 else "unsigned short",
        "dimension": 3,
        "space": "left-posterior-superior",
        "space directions": (labelmap.direction @ np.diag(labelmap.spacing)).T,  # row n = axis n (i, j, k)
        "space origin": np.asarray(labelmap.origin, dtype=float),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }
    ijk_to_ras = labelmap.ijk_to_ras
    geometry = ";".join(f"{v:.10g}" for v in ijk_to_ras.ravel()) + f";0;{i - 1};0;{j - 1};0;{k - 1};"
    header["Segmentation_ConversionParameters"] = (
        f"Reference image geometry|{geometry}|Image geometry description string determining the geometry "
        "of the labelmap that is created in course of conversion.&"
    )
    header["Segmentation_ContainedRepresentationNames"] = _BINARY_LABELMAP + "|"
    header["Segmentation_MasterRepresentation"] = _BINARY_LABELMAP
    header["Segmentation_ReferenceImageExtentOffset"] = "0 0 0"
    for n, structure in enumerate(structures):
        prefix = f"Segment{n}_"
        header[prefix + "ID"] = structure.key
        header[prefix + "Name"] = structure.name
        header[prefix + "NameAutoGenerated"] = "0"
        header[prefix + "Color"] = _format_numbers(structure.color)
        header[prefix + "ColorAutoGenerated"] = "0"
        header[prefix + "LabelValue"] = str(structure.label)
        header[prefix + "Layer"] = "0"
        header[prefix + "Extent"] = extent
        header[prefix + "Tags"] = structure.terminology.to_tag_string()

    def write(temp: Path) -> None:
        nrrd.write(str(temp), np.ascontiguousarray(array), header, index_order="C")

    return _write_atomically(path, write, overwrite)


@dataclass
class _SegmentInfo:
    index: int
    segment_id: str
    name: str
    label_value: int
    layer: int
    terminology: Optional[Terminology]


def _parse_tags(text: str) -> Dict[str, str]:
    tags = {}
    for item in text.split("|"):
        if ":" in item:
            key, value = item.split(":", 1)
            tags[key] = value
    return tags


def _segments_from_header(header: Dict[str, object]) -> List[_SegmentInfo]:
    segments = []
    n = 0
    while f"Segment{n}_ID" in header or f"Segment{n}_Name" in header:
        def field(key: str, default: str = "", n: int = n) -> str:
            return str(header.get(f"Segment{n}_{key}", default))

        terminology = None
        tag_text = _parse_tags(field("Tags")).get("TerminologyEntry")
        if tag_text:
            try:
                terminology = Terminology.from_slicer_string(tag_text)
            except InputError:
                log.warning("Ignoring malformed terminology of segment %d: %r", n, tag_text)
        segments.append(
            _SegmentInfo(
                index=n,
                segment_id=field("ID"),
                name=field("Name") or field("ID"),
                label_value=int(float(field("LabelValue", "1"))),
                layer=int(float(field("Layer", str(n)))),
                terminology=terminology,
            )
        )
        n += 1
    return segments


def _match_segment(segment: _SegmentInfo, label_set: LabelSet) -> Optional[Structure]:
    """Terminology first (meaning beats spelling), then the name, then the ID."""
    if segment.terminology is not None:
        hits = [s for s in label_set if s.terminology.same_concept(segment.terminology)]
        if len(hits) == 1:
            return hits[0]
    return label_set.find(segment.name) or label_set.find(segment.segment_id)


def _geometry_from_nrrd_header(header: Dict[str, object]) -> Tuple[np.ndarray, np.ndarray]:
    """(3x3 matrix with axis vectors as columns in LPS, origin in LPS) of a NRRD header."""
    directions = np.asarray(header.get("space directions"), dtype=float)
    directions = directions[~np.isnan(directions).any(axis=1)] if directions.ndim == 2 else directions
    if directions.shape != (3, 3):
        raise InputError("The segmentation file has no usable 'space directions'; re-save it from Slicer.")
    origin = np.asarray(header.get("space origin", np.zeros(3)), dtype=float)
    space = str(header.get("space", "left-posterior-superior")).lower()
    flip = {
        "left-posterior-superior": np.diag([1.0, 1.0, 1.0]),
        "right-anterior-superior": np.diag([-1.0, -1.0, 1.0]),
    }
    if space not in flip:
        raise InputError(f"Unsupported NRRD space {space!r}; expected left-posterior-superior or RAS.")
    matrix = flip[space] @ directions.T
    return matrix, flip[space] @ origin


def read_segmentation(path: PathLike, label_set: LabelSet) -> Volume:
    """Read a Slicer .seg.nrrd (or a plain label map file) as a label map with ``label_set``'s values.

    Segments are matched to structures by their DICOM terminology, else by name or ID (common spellings
    such as "Parotid_L" are understood) -- never by position, so segments may be reordered, renamed to
    another known spelling or hold other label values in the file. Segments that match no structure are
    an error listing them. A plain label map must already use the label set's values.
    """
    import nrrd

    path = Path(path)
    if not path.exists():
        raise InputFileNotFoundError(f"Segmentation file {str(path)!r} does not exist.")
    header: Dict[str, object] = {}
    if _extension(path) in (".seg.nrrd", ".nrrd", ".nhdr"):
        try:
            header = nrrd.read_header(str(path))
        except Exception as exc:  # pynrrd raises its own NRRDError and others for junk
            raise _unreadable(path, exc) from None
    segments = _segments_from_header(header)
    if not segments:
        return _read_plain_labelmap(path, label_set)

    matches = {seg.index: _match_segment(seg, label_set) for seg in segments}
    unknown = [seg.name for seg in segments if matches[seg.index] is None]
    if unknown:
        raise InputError(
            f"Segments {unknown} in {path.name!r} do not match any structure of the {label_set.name!r} label "
            f"set (known: {', '.join(s.name for s in label_set)}). Rename them in Slicer's Segment Editor "
            "or use the right label set."
        )
    claimed: Dict[str, str] = {}
    for seg in segments:
        structure = matches[seg.index]
        assert structure is not None
        if structure.key in claimed:
            raise InputError(
                f"Segments {claimed[structure.key]!r} and {seg.name!r} in {path.name!r} both mean "
                f"{structure.name!r}; keep only one of them."
            )
        claimed[structure.key] = seg.name

    try:
        data, header = nrrd.read(str(path), index_order="C")
    except Exception as exc:
        raise _unreadable(path, exc) from None
    if data.ndim == 3:
        layers = data[np.newaxis]
    elif data.ndim == 4:
        # 4D: the fastest NRRD axis is the layer ("list") axis -> last in C order.
        layers = np.moveaxis(data, -1, 0)
    else:
        raise InputError(f"{path.name!r} has {data.ndim} dimensions; a segmentation has 3 (4 with layers).")
    matrix, origin = _geometry_from_nrrd_header(header)
    out = np.zeros(layers.shape[1:], dtype=labelmap_dtype(label_set.max_label))
    for seg in segments:
        if not 0 <= seg.layer < layers.shape[0]:
            raise InputError(f"Segment {seg.name!r} refers to layer {seg.layer}, which is not in the file.")
        structure = matches[seg.index]
        assert structure is not None
        out[layers[seg.layer] == seg.label_value] = structure.label
    spacing = np.linalg.norm(matrix, axis=0)
    return Volume(out, tuple(spacing), tuple(origin), matrix / spacing)


def _read_plain_labelmap(path: Path, label_set: LabelSet) -> Volume:
    volume = read_volume(path)
    array = _as_label_array(volume.array, f"Label map {path.name!r}")
    unexpected = sorted(set(int(v) for v in np.unique(array)) - set(label_set.labels) - {0})
    if unexpected:
        raise InputError(
            f"Label map {path.name!r} holds values {unexpected} that are not in the {label_set.name!r} label "
            f"set (valid: {list(label_set.labels)}). Is it a label map of another label set?"
        )
    return volume.with_array(array.astype(labelmap_dtype(label_set.max_label), copy=False))
