"""Reading and writing images, label maps and Slicer segmentations, with errors a user can act on.

One module per job; import from ``headseg.io`` (this package), which keeps every public name:

* :mod:`headseg.io.files`: extensions, the error types of missing inputs and existing outputs, atomic writes;
* :mod:`headseg.io.read`: :func:`read_volume`, the one reader of whatever a user names;
* :mod:`headseg.io.images`: NRRD / NIfTI / MetaImage images and label maps (SimpleITK);
* :mod:`headseg.io.dicom_series`: DICOM series in (series choice, Modality, reading);
* :mod:`headseg.io.slice_geometry`: where a series' slices lie (slice order, gaps, tilt);
* :mod:`headseg.io.regularise`: gantry-tilted and unevenly spaced DICOM stacks resampled onto a regular grid;
* :mod:`headseg.io.segmentation`: Slicer ``.seg.nrrd`` files (pynrrd).

Everything goes through :class:`headseg.geometry.Volume` (array[k, j, i], LPS geometry). Writes are
atomic and replace existing files only with ``overwrite=True``.
"""

from __future__ import annotations

from headseg.io.dicom_series import (
    DicomSeries,
    DicomSliceGeometry,
    dicom_slice_geometry,
    list_dicom_series,
    read_dicom_folder,
    select_dicom_series,
    slice_stack_geometry,
    write_dicom_series,
)
from headseg.io.files import (
    READ_EXTENSIONS,
    WRITE_EXTENSIONS,
    InputFileNotFoundError,
    OutputExistsError,
    PathLike,
    extension,
    is_dicom_file,
    write_atomically,
)
from headseg.io.images import as_label_array, labelmap_dtype, write_labelmap, write_volume
from headseg.io.read import read_volume
from headseg.io.regularise import RegularGrid, describe_regularisation, regular_grid, regularise_stack
from headseg.io.segmentation import read_segmentation, write_segmentation

__all__ = [
    "READ_EXTENSIONS",
    "WRITE_EXTENSIONS",
    "PathLike",
    "InputFileNotFoundError",
    "OutputExistsError",
    "DicomSeries",
    "read_volume",
    "list_dicom_series",
    "select_dicom_series",
    "DicomSliceGeometry",
    "dicom_slice_geometry",
    "slice_stack_geometry",
    "read_dicom_folder",
    "write_volume",
    "write_labelmap",
    "write_dicom_series",
    "RegularGrid",
    "regular_grid",
    "regularise_stack",
    "describe_regularisation",
    "write_segmentation",
    "read_segmentation",
    "labelmap_dtype",
    "as_label_array",
    "extension",
    "is_dicom_file",
    "write_atomically",
]
