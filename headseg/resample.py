"""Moving images between voxel grids: to a model's grid and back, exactly in physical (LPS) space.

A *grid* is shape + spacing + origin + direction without voxels (:class:`Grid`); any function that takes
a grid also accepts a :class:`~headseg.geometry.Volume` and uses its grid. All resampling is done by
SimpleITK with an identity transform, so a voxel lands where its physical point says, whatever the axis
order, flips or obliquity of either grid.

Rules used across HeadSeg:

* label maps: ``nearest`` (never invent values between labels);
* CT intensities: ``linear`` (or ``bspline``);
* network outputs: resample the class *probabilities* linearly, then take the argmax on the target grid
  (:func:`resample_probabilities_to_grid`); this gives smoother, more faithful boundaries than
  resampling the argmax with nearest neighbour.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Optional, Sequence, Tuple, Union

import numpy as np
from numpy.typing import ArrayLike

from headseg.errors import InputError
from headseg.geometry import Volume

__all__ = [
    "Grid",
    "union_grid",
    "labels_on_common_grid",
    "GridLike",
    "as_grid",
    "make_grid",
    "resample_to_grid",
    "resample_to_spacing",
    "resample_labels_to_grid",
    "resample_probabilities_to_grid",
    "reorient_to",
    "orientation_code",
    "is_axis_aligned",
]

_INTERPOLATORS = ("nearest", "linear", "bspline")


@dataclass(frozen=True, eq=False)
class Grid:
    """A voxel grid: ``shape`` (k, j, i) plus spacing/origin/direction in (i, j, k) order, LPS mm."""

    shape: Sequence[int]  # stored as a tuple of three ints
    spacing: Sequence[float] = (1.0, 1.0, 1.0)  # stored as tuples of floats
    origin: Sequence[float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        shape = tuple(int(n) for n in self.shape)
        if len(shape) != 3 or min(shape) < 1:
            raise InputError(f"A grid needs three positive sizes (k, j, i), got {self.shape}.")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        direction = np.array(self.direction, dtype=float).reshape(3, 3)
        direction.setflags(write=False)
        object.__setattr__(self, "direction", direction)
        if min(self.spacing) <= 0:
            raise InputError(f"Grid spacing must be positive, got {self.spacing}.")

    @classmethod
    def from_volume(cls, volume: Volume) -> Grid:
        return cls(volume.shape, volume.spacing, volume.origin, volume.direction.copy())

    @property
    def size_ijk(self) -> Tuple[int, int, int]:
        k, j, i = self.shape
        return (i, j, k)

    @property
    def ijk_to_lps(self) -> np.ndarray:
        return self.empty_volume().ijk_to_lps

    def index_to_lps(self, ijk: Sequence[float]) -> np.ndarray:
        return (self.ijk_to_lps @ np.append(np.asarray(ijk, dtype=float), 1.0))[:3]

    def empty_volume(self, dtype=np.uint8) -> Volume:
        """A zero-filled Volume on this grid (memory: one value per voxel)."""
        return Volume(np.zeros(self.shape, dtype=dtype), self.spacing, self.origin, self.direction.copy())

    def with_shape(self, shape: Sequence[int], first_index_ijk: Sequence[int] = (0, 0, 0)) -> Grid:
        """Grid with the same spacing and direction whose first voxel is ``first_index_ijk`` of this one."""
        return Grid(tuple(shape), self.spacing, tuple(self.index_to_lps(first_index_ijk)), self.direction)

    def same_as(self, other: GridLike, tol: float = 1e-4) -> bool:
        other = as_grid(other)
        return self.shape == other.shape and bool(np.allclose(self.ijk_to_lps, other.ijk_to_lps, atol=tol))

    def _resample(self, image, interpolator, default_value: float, pixel_id):
        """SimpleITK resampling onto this grid without allocating a reference image of its size."""
        import SimpleITK as sitk

        f = sitk.ResampleImageFilter()
        f.SetSize([int(n) for n in self.size_ijk])
        f.SetOutputSpacing(self.spacing)
        f.SetOutputOrigin(self.origin)
        f.SetOutputDirection(tuple(float(v) for v in self.direction.ravel()))
        f.SetTransform(sitk.Transform())
        f.SetInterpolator(interpolator)
        f.SetDefaultPixelValue(float(default_value))
        f.SetOutputPixelType(pixel_id)
        return f.Execute(image)


GridLike = Union[Grid, Volume]


def as_grid(obj: GridLike) -> Grid:
    """The grid of a Volume, or the Grid itself."""
    if isinstance(obj, Grid):
        return obj
    if isinstance(obj, Volume):
        return Grid.from_volume(obj)
    raise TypeError(f"Expected a Grid or Volume, got {type(obj).__name__}.")


def make_grid(
    spacing: ArrayLike,
    direction: Optional[np.ndarray] = None,
    origin: ArrayLike = (0.0, 0.0, 0.0),
    size: ArrayLike = (1, 1, 1),
) -> Grid:
    """A grid from ITK-style parameters. ``size`` is in (i, j, k) order like ``spacing`` (ITK's GetSize);
    the resulting :attr:`Grid.shape` is (k, j, i)."""
    i, j, k = (int(n) for n in np.asarray(size).ravel())
    return Grid((k, j, i), tuple(np.asarray(spacing, dtype=float).ravel()), tuple(np.asarray(origin, dtype=float).ravel()),
                np.eye(3) if direction is None else direction)


def _interpolator(name: str):
    import SimpleITK as sitk

    table = {"nearest": sitk.sitkNearestNeighbor, "linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}
    if name not in table:
        raise InputError(f"Unknown interpolation {name!r}; use one of {', '.join(_INTERPOLATORS)}.")
    return table[name]


def _sitk_pixel_id(dtype: np.dtype):
    import SimpleITK as sitk

    return sitk.GetImageFromArray(np.zeros((1, 1, 1), dtype=dtype)).GetPixelID()


def resample_to_grid(
    volume: Volume,
    reference_grid: GridLike,
    interpolation: str = "linear",
    default_value: float = 0.0,
    dtype: Optional[np.dtype] = None,
) -> Volume:
    """Resample ``volume`` onto ``reference_grid`` (physical points match; outside -> ``default_value``).

    Output type: ``nearest`` keeps the input dtype; ``linear``/``bspline`` give float32 unless ``dtype``
    is given (then values are rounded and clipped to that type's range, e.g. int16 for CT).
    """
    import SimpleITK as sitk

    grid = as_grid(reference_grid)
    interpolator = _interpolator(interpolation)
    array = volume.array
    if array.dtype == bool:
        array = array.astype(np.uint8)
    source = Volume(array, volume.spacing, volume.origin, volume.direction)
    if interpolation == "nearest":
        work_dtype = array.dtype
    else:
        work_dtype = np.dtype(np.float64 if array.dtype == np.float64 else np.float32)
        if array.dtype != work_dtype:
            source = source.with_array(array.astype(work_dtype))
    result = grid._resample(source.to_sitk(), interpolator, default_value, _sitk_pixel_id(work_dtype))
    out = sitk.GetArrayFromImage(result)
    if dtype is not None and np.dtype(dtype) != out.dtype:
        out = _cast(out, np.dtype(dtype))
    return Volume(out, grid.spacing, grid.origin, grid.direction.copy())


def _cast(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(array), info.min, info.max).astype(dtype)
    return array.astype(dtype)


def union_grid(reference: GridLike, other: GridLike) -> Tuple[Grid, bool, bool]:
    """The grid with ``reference``'s spacing and direction that covers both grids' extents, whether the
    two extents overlap at all, and whether ``reference`` already covers ``other``."""
    ref, oth = as_grid(reference), as_grid(other)
    ni, nj, nk = oth.size_ijk
    corners = np.array([(*c, 1.0) for c in itertools.product((-0.5, ni - 0.5), (-0.5, nj - 0.5), (-0.5, nk - 0.5))])
    in_ref = (np.linalg.inv(ref.ijk_to_lps) @ oth.ijk_to_lps @ corners.T)[:3].T  # (i, j, k) of ref, per corner
    low, high = in_ref.min(axis=0), in_ref.max(axis=0)
    size = np.array(ref.size_ijk, dtype=float)
    tol = 1e-3
    overlap = bool(np.all(low < size - 0.5 - tol) and np.all(high > -0.5 + tol))
    covers = bool(np.all(low >= -0.5 - tol) and np.all(high <= size - 0.5 + tol))
    first = np.minimum(0, np.floor(low + 0.5 + tol)).astype(int)
    last = np.maximum(size - 1, np.ceil(high - 0.5 - tol)).astype(int)
    shape_ijk = last - first + 1
    return ref.with_shape(tuple(int(n) for n in shape_ijk[::-1]), tuple(int(n) for n in first)), overlap, covers


def labels_on_common_grid(prediction: Volume, reference: Volume) -> Tuple[Volume, Volume, Optional[str]]:
    """``prediction`` and ``reference`` on one grid for scoring: the reference's grid when it covers the
    prediction, else the union of both extents (a prediction outside the reference counts as wrong there,
    instead of being cut away and the score inflated). The third value is a warning, or None."""
    if prediction.same_geometry(reference, tol=1e-3):
        return prediction, reference, None
    grid, overlap, covers = union_grid(reference, prediction)
    if not overlap:
        return (resample_to_grid(prediction, reference, "nearest", 0), reference,
                "the prediction's grid and the reference's grid do not overlap in space (different origins or "
                "orientations?): nothing can agree, every score is 0. Check that both are of this case and scan.")
    if covers:
        return resample_to_grid(prediction, reference, "nearest", 0), reference, None
    return (resample_to_grid(prediction, grid, "nearest", 0), resample_to_grid(reference, grid, "nearest", 0),
            "the reference covers only part of the prediction's grid; scored on both grids together (what the "
            "prediction holds outside the reference counts as false positive).")


def resample_labels_to_grid(labels: Volume, reference_grid: GridLike) -> Volume:
    """Nearest-neighbour resampling of a label map (background 0 outside)."""
    return resample_to_grid(labels, reference_grid, "nearest", 0)


def resample_to_spacing(volume: Volume, spacing: Sequence[float], interpolation: str = "linear") -> Volume:
    """Resample to a new voxel spacing (i, j, k order) with the same direction, covering the same physical
    box: the outer voxel faces stay where they were, up to rounding of the voxel count."""
    new_spacing = np.asarray(spacing, dtype=float)
    old_spacing = np.asarray(volume.spacing)
    size = np.maximum(1, np.round(np.asarray(volume.size_ijk) * old_spacing / new_spacing)).astype(int)
    # First voxel centre moves by half the difference of the voxel sizes, so the faces line up.
    origin = np.asarray(volume.origin) + volume.direction @ ((new_spacing - old_spacing) / 2.0)
    grid = make_grid(new_spacing, volume.direction, origin, size)
    return resample_to_grid(volume, grid, interpolation)


def resample_probabilities_to_grid(
    probs: np.ndarray,
    from_grid: GridLike,
    to_grid: GridLike,
    max_slab_voxels: int = 8 * 1024 * 1024,
) -> Volume:
    """Class probabilities ``probs[C, k, j, i]`` on ``from_grid`` -> label map (argmax) on ``to_grid``.

    Each class channel is interpolated linearly, then the argmax is taken, slab by slab along k of the
    target so the extra memory stays bounded: a few float32 buffers of ``max_slab_voxels`` (32 MB each by
    default) plus one float32 copy of ``probs``, whatever the target size. Target voxels outside
    ``from_grid`` get class 0 (background). Ties go to the lower class, as in ``numpy.argmax``.
    """
    import SimpleITK as sitk

    probs = np.asarray(probs)
    source = as_grid(from_grid)
    target = as_grid(to_grid)
    if probs.ndim != 4 or tuple(probs.shape[1:]) != source.shape:
        raise InputError(
            f"Probabilities must be shaped [classes, k, j, i] = [C, {', '.join(map(str, source.shape))}], "
            f"got {probs.shape}."
        )
    n_classes = probs.shape[0]
    channels = []
    for c in range(n_classes):
        channel = Volume(probs[c].astype(np.float32, copy=False), source.spacing, source.origin,
                         source.direction)
        channels.append(channel.to_sitk())
    out_dtype = np.uint8 if n_classes <= 256 else np.uint16
    labels = np.zeros(target.shape, dtype=out_dtype)
    k_total, j_total, i_total = target.shape
    slab = max(1, min(k_total, max_slab_voxels // (j_total * i_total)))
    for k0 in range(0, k_total, slab):
        k1 = min(k_total, k0 + slab)
        slab_grid = target.with_shape((k1 - k0, j_total, i_total), (0, 0, k0))
        best = None
        arg = labels[k0:k1]  # view: argmax written straight into the output
        for c, channel in enumerate(channels):
            default = 1.0 if c == 0 else 0.0  # outside the source: certain background
            resampled = slab_grid._resample(channel, sitk.sitkLinear, default, sitk.sitkFloat32)
            values = sitk.GetArrayViewFromImage(resampled)
            if best is None:
                best = np.array(values, dtype=np.float32)
                continue
            better = values > best
            np.copyto(best, values, where=better)
            arg[better] = c
            del resampled, values, better
    return Volume(labels, target.spacing, target.origin, target.direction.copy())


# ------------------------------------------------------------------------------------------------
# Exact re-orientation (axis permutation and flips only)
# ------------------------------------------------------------------------------------------------
# Unit vector in LPS of each orientation letter (the direction the index axis points to).
_LETTER_VECTORS = {
    "L": (0, 1.0), "R": (0, -1.0),
    "P": (1, 1.0), "A": (1, -1.0),
    "S": (2, 1.0), "I": (2, -1.0),
}


def _parse_code(code: str) -> Tuple[Tuple[int, float], ...]:
    code = code.upper()
    axes = tuple(_LETTER_VECTORS.get(ch, (-1, 0.0)) for ch in code)
    if len(code) != 3 or any(a < 0 for a, _ in axes) or len({a for a, _ in axes}) != 3:
        raise InputError(
            f"Orientation {code!r} is not valid: give three letters, one from each pair L/R, P/A, S/I "
            "(e.g. 'LPS' or 'RAS'), naming where the i, j and k axes point."
        )
    return axes


def orientation_code(direction: np.ndarray) -> str:
    """Three letters naming the patient direction closest to each index axis, e.g. "LPS" for identity."""
    direction = np.asarray(direction, dtype=float)
    letters = []
    names = {(0, 1): "L", (0, -1): "R", (1, 1): "P", (1, -1): "A", (2, 1): "S", (2, -1): "I"}
    for perm in _best_permutation(direction):
        axis, sign = perm
        letters.append(names[(axis, sign)])
    return "".join(letters)


def _best_permutation(direction: np.ndarray) -> Tuple[Tuple[int, int], ...]:
    """For each index axis n: (physical axis, sign) it is closest to, one physical axis per index axis."""
    best, best_score = None, -1.0
    for perm in itertools.permutations(range(3)):
        score = sum(abs(direction[perm[n], n]) for n in range(3))
        if score > best_score + 1e-12:
            best, best_score = perm, score
    assert best is not None
    return tuple((best[n], 1 if direction[best[n], n] >= 0 else -1) for n in range(3))


def is_axis_aligned(direction: np.ndarray, tol: float = 1e-6) -> bool:
    """True when every index axis is parallel to a patient axis (a signed permutation matrix)."""
    direction = np.asarray(direction, dtype=float)
    return bool(np.all((np.abs(direction) < tol) | (np.abs(np.abs(direction) - 1.0) < tol)))


def reorient_to(volume: Volume, code: str = "LPS") -> Volume:
    """Permute and flip array axes so index axes i, j, k point as close as possible to ``code``.

    Exact: voxels are only moved, never interpolated, and every voxel keeps its physical position
    (the geometry is rewritten to match). For an axis-aligned input the result's direction is exactly
    the one of ``code`` (identity for "LPS"); an oblique input stays oblique (only the nearest axes are
    matched) and must be resampled with :func:`resample_to_grid` if an axis-aligned grid is required.
    """
    target_axes = _parse_code(code)
    source = volume.direction
    source_axes = _best_permutation(source)  # index axis n -> (physical axis, sign)
    physical_to_index = {phys: (n, sign) for n, (phys, sign) in enumerate(source_axes)}

    size = volume.size_ijk
    new_direction = np.zeros((3, 3))
    new_spacing = []
    start_index = [0, 0, 0]  # source index of the new (0, 0, 0) voxel
    perm = []  # new index axis t -> source index axis
    flips = []
    for t, (phys, want_sign) in enumerate(target_axes):
        n, sign = physical_to_index[phys]
        flip = sign != want_sign
        perm.append(n)
        flips.append(flip)
        new_direction[:, t] = source[:, n] * (-1.0 if flip else 1.0) + 0.0  # + 0.0: no -0.0 entries
        new_spacing.append(volume.spacing[n])
        if flip:
            start_index[n] = size[n] - 1
    # Array axes are (k, j, i): array axis a holds index axis 2 - a.
    array = np.transpose(volume.array, [2 - perm[2], 2 - perm[1], 2 - perm[0]])
    flip_axes = tuple(2 - t for t in range(3) if flips[t])
    if flip_axes:
        array = np.flip(array, axis=flip_axes)
    origin = volume.index_to_lps(start_index)
    return Volume(np.ascontiguousarray(array), tuple(new_spacing), tuple(origin), new_direction)
