"""One image type for the whole package: a voxel array that never travels without its geometry.

Conventions (used everywhere in ``headseg``; nothing else is allowed):

* ``Volume.array`` is indexed ``array[k, j, i]`` -- slices, rows, columns. This is the order of
  SimpleITK's ``GetArrayFromImage`` and Slicer's ``arrayFromVolume``, so arrays move between them
  without transposes.
* ``spacing``, ``origin`` and the columns of ``direction`` follow ITK: they are given in (i, j, k)
  index order and in the **LPS** patient coordinate system (x grows to the patient's Left, y to
  Posterior, z to Superior). Files (NRRD, NIfTI through ITK, DICOM) and SimpleITK use LPS; Slicer's
  MRML uses RAS, and the conversion lives here, once (:meth:`Volume.ijk_to_ras`).
* ``direction[:, n]`` is the unit vector of index axis n (n = 0 for i) in LPS.

Why a dataclass and not ``SimpleITK.Image``: torch and numpy code wants a plain array, and an explicit
4x4 matrix makes geometry mistakes visible in tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Volume:
    """A 3D image: ``array[k, j, i]`` plus spacing/origin/direction (i, j, k order, LPS, mm)."""

    array: np.ndarray
    spacing: Sequence[float] = (1.0, 1.0, 1.0)  # any three numbers; stored as a tuple of floats
    origin: Sequence[float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim != 3:
            raise ValueError(f"A Volume must be 3D, got an array of shape {self.array.shape}.")
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        if len(self.spacing) != 3 or len(self.origin) != 3:
            raise ValueError("spacing and origin must have three values (i, j, k order).")
        if min(self.spacing) <= 0:
            raise ValueError(f"Voxel spacing must be positive, got {self.spacing}.")

    # -- shape helpers -------------------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int, int, int]:
        """Array shape (k, j, i)."""
        return tuple(int(n) for n in self.array.shape)  # type: ignore[return-value]

    @property
    def size_ijk(self) -> Tuple[int, int, int]:
        """Number of voxels along i, j, k (ITK's ``GetSize`` order)."""
        k, j, i = self.shape
        return (i, j, k)

    @property
    def spacing_kji(self) -> Tuple[float, float, float]:
        """Spacing in array axis order, for scipy/numpy code working on ``array``."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.direction @ np.diag(self.spacing))))

    # -- matrices ------------------------------------------------------------------------------
    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix taking homogeneous (i, j, k, 1) to LPS millimetres."""
        m = np.eye(4)
        m[:3, :3] = self.direction @ np.diag(self.spacing)
        m[:3, 3] = self.origin
        return m

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 matrix taking (i, j, k, 1) to RAS millimetres (Slicer's IJKToRAS)."""
        m = self.ijk_to_lps.copy()
        m[:3, :] = LPS_TO_RAS @ m[:3, :]
        return m

    def index_to_lps(self, ijk: ArrayLike) -> np.ndarray:
        """Physical LPS point of a continuous index given in (i, j, k) order."""
        return (self.ijk_to_lps @ np.append(np.asarray(ijk, dtype=float), 1.0))[:3]

    def lps_to_index(self, lps: ArrayLike) -> np.ndarray:
        """Continuous (i, j, k) index of an LPS point."""
        return (np.linalg.inv(self.ijk_to_lps) @ np.append(np.asarray(lps, dtype=float), 1.0))[:3]

    # -- constructors --------------------------------------------------------------------------
    @classmethod
    def from_ijk_to_lps(cls, array: np.ndarray, matrix: np.ndarray) -> Volume:
        matrix = np.asarray(matrix, dtype=float)
        columns = matrix[:3, :3]
        spacing = np.linalg.norm(columns, axis=0)
        return cls(array, tuple(spacing), tuple(matrix[:3, 3]), columns / spacing)

    @classmethod
    def from_ijk_to_ras(cls, array: np.ndarray, matrix: np.ndarray) -> Volume:
        matrix = np.asarray(matrix, dtype=float).copy()
        matrix[:3, :] = LPS_TO_RAS @ matrix[:3, :]
        return cls.from_ijk_to_lps(array, matrix)

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry, other voxels (e.g. a label map for this image)."""
        array = np.asarray(array)
        if array.shape != self.array.shape:
            raise ValueError(f"Array shape {array.shape} does not match the volume's {self.array.shape}.")
        return Volume(array, self.spacing, self.origin, self.direction.copy())

    def same_geometry(self, other: Volume, tol: float = 1e-4) -> bool:
        """True when both volumes share one voxel grid (shape and ijk-to-LPS within ``tol`` mm)."""
        return self.shape == other.shape and bool(np.allclose(self.ijk_to_lps, other.ijk_to_lps, atol=tol))

    # -- SimpleITK bridge ----------------------------------------------------------------------
    def to_sitk(self):
        import SimpleITK as sitk

        array = self.array.astype(np.uint8) if self.array.dtype == bool else self.array  # sitk has no bool
        image = sitk.GetImageFromArray(np.ascontiguousarray(array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.ravel()))
        return image

    @classmethod
    def from_sitk(cls, image) -> Volume:
        import SimpleITK as sitk

        if image.GetDimension() != 3:
            raise ValueError(f"Expected a 3D image, got {image.GetDimension()}D.")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"Expected a single-channel (grey-scale) image, got {image.GetNumberOfComponentsPerPixel()} "
                "components per voxel (RGB or vector image?)."
            )
        return cls(
            sitk.GetArrayFromImage(image),
            image.GetSpacing(),
            image.GetOrigin(),
            np.array(image.GetDirection()).reshape(3, 3),
        )

    def __repr__(self) -> str:  # short, arrays are big
        return (
            f"Volume(shape(k,j,i)={self.shape}, dtype={self.array.dtype}, spacing={self.spacing}, "
            f"origin={tuple(round(o, 3) for o in self.origin)})"
        )


def bounding_box(mask: np.ndarray, margin: int = 0) -> Tuple[slice, ...]:
    """Slices of the smallest box holding every True voxel of ``mask``, ``margin`` voxels wider on each side
    (clipped to the array). ``mask`` must hold at least one True voxel."""
    where = [np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis))) for axis in range(mask.ndim)]
    return tuple(slice(max(0, int(w[0]) - margin), min(n, int(w[-1]) + margin + 1)) for w, n in zip(where, mask.shape))


def patient_axes(volume: Volume) -> Tuple[np.ndarray, Tuple[float, float, float]]:
    """``volume``'s array turned so that axis 0 runs to the head, axis 1 to the back and axis 2 to the
    patient's left (LPS order), with the spacing of each new axis: a file stored feet-first or
    right-to-left (as NIfTI often is) then looks like the same patient read from DICOM. Oblique grids take
    the nearest patient axis."""
    columns = np.abs(volume.direction)  # column c: where array index (i, j, k)[c] points, in LPS
    nearest = [int(np.argmax(columns[:, c])) for c in range(3)]  # LPS axis of each of i, j, k
    if sorted(nearest) != [0, 1, 2]:  # 45 degrees: no one nearest axis each; keep the array as it is
        return volume.array, volume.spacing_kji
    array_axis = [2 - nearest.index(lps) for lps in (2, 1, 0)]  # array axis (k=0, j=1, i=2) of S, P, L
    turned = np.transpose(volume.array, array_axis)
    for target, axis in enumerate(array_axis):
        if volume.direction[nearest[2 - axis], 2 - axis] < 0:
            turned = np.flip(turned, axis=target)
    spacing = volume.spacing_kji
    return turned, (spacing[array_axis[0]], spacing[array_axis[1]], spacing[array_axis[2]])
