"""One entry for every image a user names: a file of any supported format, a DICOM file or a DICOM folder.

It sits above the two readers (:mod:`headseg.io.images`, :mod:`headseg.io.dicom_series`), so neither
needs the other to dispatch.
"""

from __future__ import annotations

from pathlib import Path

from headseg.geometry import Volume
from headseg.io.dicom_series import read_dicom_folder
from headseg.io.files import READ_EXTENSIONS, InputFileNotFoundError, PathLike, extension, is_dicom_file
from headseg.io.images import read_image_file

__all__ = ["read_volume"]


def read_volume(path: PathLike, allow_non_ct: bool = False) -> Volume:
    """Read a 3D grey-scale image: NRRD (.nrrd/.nhdr), NIfTI (.nii/.nii.gz), MetaImage (.mha/.mhd),
    a folder holding a DICOM series, or one file of a DICOM series (the whole series is read).

    The pixel type of the file is kept. Raises :class:`InputError` (with what to do) for a missing file,
    an unsupported format, a 2D or 4D image, an RGB/vector image, or a file that cannot be decoded. A
    DICOM series is refused when one of its files cannot be decoded (naming it) and, unless
    ``allow_non_ct``, when its Modality is not CT.
    """
    path = Path(path)
    if not path.exists():
        raise InputFileNotFoundError(
            f"Input image {str(path)!r} does not exist. Check the path (and that the drive is mounted)."
        )
    if path.is_dir():
        return read_dicom_folder(path, allow_non_ct=allow_non_ct)
    ext = extension(path)
    if ext == ".dcm" or (ext not in READ_EXTENSIONS and is_dicom_file(path)):
        return read_dicom_folder(path.parent, containing_file=path, allow_non_ct=allow_non_ct)
    return read_image_file(path)
