"""Images and label maps in NRRD, NIfTI and MetaImage files, read and written with SimpleITK.

Everything goes through :class:`headseg.geometry.Volume` (array[k, j, i], LPS geometry). The stored pixel
type is kept (an int16 CT stays int16). Damaged, truncated or absurd files are refused with a sentence
that says what to do, before any voxel memory is allocated where the header allows it.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io.files import (
    READ_EXTENSIONS,
    PathLike,
    check_write_extension,
    extension,
    write_atomically,
)

__all__ = ["read_image_file", "write_volume", "write_labelmap", "labelmap_dtype", "as_label_array"]


def read_image_file(path: Path) -> Volume:
    """Read a 3D grey-scale NRRD (.nrrd/.nhdr), NIfTI (.nii/.nii.gz) or MetaImage (.mha/.mhd) file that
    exists, keeping its pixel type (:func:`headseg.io.read.read_volume` sends DICOM elsewhere).

    Raises :class:`InputError` (with what to do) for an unsupported format, a 2D or 4D image, an
    RGB/vector image, or a file that cannot be decoded.
    """
    ext = extension(path)
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
    pixel_bytes = sitk.Image([1, 1, 1], reader.GetPixelID()).GetSizeOfPixelComponent()
    _check_size_before_reading(path.name, reader.GetSize(), _stored_bytes(path, ext), pixel_bytes)
    if ext in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        if "allocate" in str(exc).lower():
            raise _not_enough_memory(path.name, reader.GetSize(), pixel_bytes, None) from None
        raise _unreadable(path, exc) from None
    return _volume_from_image(image)


def _stored_bytes(path: Path, ext: str) -> Optional[int]:
    """The bytes that hold the image: the file, plus the data file a detached header (.nhdr, .mhd) names
    (None when it names several files or a pattern: the size check is then left to the reader)."""
    size = path.stat().st_size
    if ext not in (".nhdr", ".mhd"):
        return size
    try:
        with open(path, "rb") as f:
            header = f.read(1 << 16).decode("latin-1")
    except OSError:
        return size
    keys, separator = (("data file", "datafile"), ":") if ext == ".nhdr" else (("elementdatafile",), "=")
    names = []
    for line in header.splitlines():
        key, found, value = line.partition(separator)
        if found and key.strip().lower() in keys:
            names.append(value.strip())
    if not names or names[0].upper() == "LOCAL":
        return size
    name = names[0]
    if name.upper().startswith("LIST") or "%" in name or " " in name.strip():
        return None
    data = path.parent / name
    if not data.is_file():
        raise InputError(f"{path.name!r} is a header whose data file {name!r} is not beside it. Copy the data "
                         "file into the same folder, or give a single-file image (.nrrd, .nii.gz, .mha).")
    return size + data.stat().st_size


def available_memory_bytes() -> Optional[int]:
    """Memory this process can still take: the least of the system's available memory, the cgroup's
    limit (containers) and the address-space limit; None where none of them can be read."""
    limits = []
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            info = {line.split(":")[0]: line.split()[1] for line in f if ":" in line}
        limits.append(int(info["MemAvailable"]) * 1024)
    except (OSError, KeyError, ValueError, IndexError):
        pass
    try:
        cg = Path("/sys/fs/cgroup")
        limit = (cg / "memory.max").read_text().strip()
        if limit != "max":
            limits.append(int(limit) - int((cg / "memory.current").read_text()))
    except (OSError, ValueError):
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm", encoding="ascii") as f:
                used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            limits.append(soft - used)
    except (ImportError, OSError, ValueError):
        pass
    return max(0, min(limits)) if limits else None


def _not_enough_memory(label: str, size: Sequence[int], pixel_bytes: int, free: Optional[int]) -> MemoryError:
    from headseg.errors import NotEnoughMemoryError

    dims = " x ".join(str(int(s)) for s in size[:3])
    need = 2 * pixel_bytes * int(np.prod([int(s) for s in size[:3]], dtype=object))
    has = f", and {free / 2**30:.1f} GB are free" if free is not None else ""
    return NotEnoughMemoryError(
        f"{label!r} is {dims} voxels: reading it needs about {need / 2**30:.1f} GB of memory{has}. Crop it to the "
        "head or resample it to coarser voxels (e.g. in 3D Slicer: Crop Volume), close other programs, or use a "
        "computer with more memory. Nothing was loaded.")


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
        f"{extension(path) or 'supported'} image. Re-export or re-copy it. (Reader said: {reason.strip()})"
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


def _check_size_before_reading(label: str, size: Sequence[int], file_bytes: Optional[int], pixel_bytes: int = 2) -> None:
    """Refuse absurd sizes from the header alone, before any voxel memory is allocated; and sizes this
    computer has not the memory for (the image and its array: twice the decompressed bytes)."""
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
    free = available_memory_bytes()
    if free is not None and 2 * pixel_bytes * n_voxels > free:
        raise _not_enough_memory(label, size, pixel_bytes, free)


def _volume_from_image(image) -> Volume:
    import SimpleITK as sitk

    if image.GetDimension() == 4:  # one frame, checked above
        size = list(image.GetSize())
        image = sitk.Extract(image, size[:3] + [0], [0, 0, 0, 0])
    return Volume.from_sitk(image)


def write_volume(volume: Volume, path: PathLike, overwrite: bool = False, compress: bool = True) -> Path:
    """Write an image (.nrrd, .nii.gz, .nii or .mha), keeping its pixel type and geometry."""
    import SimpleITK as sitk

    path = Path(path)
    check_write_extension(path, (".nrrd", ".nii.gz", ".nii", ".mha"))
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

    return write_atomically(path, write, overwrite)


def labelmap_dtype(max_label: int) -> np.dtype:
    """Smallest unsigned type for a label map (uint8 up to 255, else uint16)."""
    if max_label > 65535:
        raise InputError(f"Label value {max_label} is too large for a label map (maximum 65535).")
    return np.dtype(np.uint8 if max_label <= 255 else np.uint16)


def as_label_array(array: np.ndarray, what: str) -> np.ndarray:
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
    array = as_label_array(volume.array, "The label map")
    return write_volume(volume.with_array(array), path, overwrite=overwrite, compress=True)


