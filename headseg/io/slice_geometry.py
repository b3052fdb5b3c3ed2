"""Where the slices of a DICOM series lie: sorted along their normal and checked to form one stack.

Pure geometry from ImagePositionPatient / ImageOrientationPatient / PixelSpacing values; the readers
(:mod:`headseg.io.dicom_series`) and the resampling of irregular stacks (:mod:`headseg.io.regularise`)
both build on it, so it imports neither.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from headseg.errors import InputError


@dataclass(frozen=True)
class DicomSliceGeometry:
    """Where the slices of a series lie, from ImagePositionPatient/ImageOrientationPatient of every file.

    A *regular* stack (:attr:`is_regular`) is one voxel grid as it is: the slices step along their normal
    by one spacing. A gantry-tilted stack (positions that step sideways off the normal, :attr:`is_tilted`)
    or an unevenly spaced one (:attr:`is_evenly_spaced` false) is read by resampling it onto a regular grid
    (:mod:`headseg.io.regularise`).
    """

    files: Tuple[str, ...]  # sorted along the slice normal (ascending), never by instance number or name
    order: Tuple[int, ...]  # sorted position n holds input slice order[n]
    positions: np.ndarray  # [n, 3] LPS mm, in the order of ``files``
    direction: np.ndarray  # 3x3, columns: row direction (i), column direction (j), slice normal (k)
    # Regular stack: mean distance between neighbouring slices along the normal (not SliceThickness);
    # otherwise the median distance, the slice spacing of the regular grid the stack is resampled onto.
    slice_spacing: float
    pixel_spacing: Tuple[float, float]  # (i, j) = (between columns, between rows)
    rows: int
    columns: int

    @property
    def along(self) -> np.ndarray:
        """Each slice's position along the slice normal (mm, ascending)."""
        return np.asarray(self.positions, dtype=float) @ self.direction[:, 2]

    @property
    def steps(self) -> np.ndarray:
        """Distances between neighbouring slices along the normal (mm)."""
        return np.diff(self.along)

    @property
    def median_step(self) -> float:
        return float(np.median(self.steps)) if len(self.steps) else 1.0

    @property
    def lateral_offsets(self) -> np.ndarray:
        """[n, 3] LPS mm: how far each slice sits sideways (in its own plane) from the normal through the
        first slice's position. Zero for a regular stack; grows by tan(tilt) per mm for a gantry tilt."""
        offsets = np.asarray(self.positions, dtype=float) - self.positions[0]
        normal = self.direction[:, 2]
        return offsets - np.outer(offsets @ normal, normal)

    @property
    def is_tilted(self) -> bool:
        """The slice positions step off the normal by more than a quarter pixel (IPP rounding is less)."""
        lateral = np.linalg.norm(self.lateral_offsets, axis=1)
        return bool(len(lateral) > 1 and lateral.max() > _MAX_LATERAL_OFFSET_PIXELS * min(self.pixel_spacing))

    @property
    def tilt_degrees(self) -> float:
        """The gantry tilt: the angle between the slice normal and the line the slice positions lie on
        (from the sideways offset of the last slice over the stack's extent; 0 for a regular stack)."""
        span = float(self.along[-1] - self.along[0]) if len(self.positions) > 1 else 0.0
        if span <= 0:
            return 0.0
        return float(np.degrees(np.arctan2(np.linalg.norm(self.lateral_offsets[-1]), span)))

    @property
    def is_evenly_spaced(self) -> bool:
        """Every step within 5 % (or 0.02 mm) of the median step."""
        steps = self.steps
        if len(steps) < 2:
            return True
        median = float(np.median(steps))
        return bool(np.abs(steps - median).max() <= max(_SPACING_ABS_TOL, _SPACING_REL_TOL * median))

    @property
    def is_regular(self) -> bool:
        """One voxel grid as it is: not tilted and evenly spaced."""
        return not self.is_tilted and self.is_evenly_spaced

    def irregularity(self) -> str:
        """What makes the stack irregular, in words ("" for a regular stack)."""
        parts = []
        if self.is_tilted:
            parts.append(f"a gantry tilt of {self.tilt_degrees:.1f} degrees (slice positions drift "
                         f"{np.linalg.norm(self.lateral_offsets, axis=1).max():.1f} mm sideways off the slice normal)")
        if not self.is_evenly_spaced:
            parts.append(f"uneven slice spacing ({self._spacing_runs()})")
        return " and ".join(parts)

    def _spacing_runs(self, most: int = 4) -> str:
        """The slice distances as runs of equal steps, e.g. "4.00 mm x 13 (files '01.dcm' to '14.dcm'),
        1.08 mm (files '14.dcm' to '15.dcm'), ..."; min, max and median when there are more than ``most``."""
        steps = self.steps
        tol = max(_SPACING_ABS_TOL, _SPACING_REL_TOL * float(np.median(steps)))
        runs: List[List[int]] = []
        for n, step in enumerate(steps):
            if runs and abs(step - steps[runs[-1][0]]) <= tol:
                runs[-1][1] = n
            else:
                runs.append([n, n])
        if len(runs) > most:
            worst = int(np.argmax(steps))
            return (f"{steps.min():.2f} to {steps.max():.2f} mm between neighbouring slices, median "
                    f"{np.median(steps):.2f} mm; the largest {steps[worst]:.2f} mm between the slices at "
                    f"{self.along[worst]:.2f} and {self.along[worst + 1]:.2f} mm along the normal"
                    f"{self._between_files(worst)}")
        described = []
        for first, last in runs:
            count = last - first + 1
            where = self._between_files(first, last + 1) or (f" from {self.along[first]:.2f} to "
                                                            f"{self.along[last + 1]:.2f} mm along the normal")
            described.append(f"{float(np.mean(steps[first:last + 1])):.2f} mm"
                             f"{f' x {count}' if count > 1 else ''}{where}")
        return ", ".join(described)

    def _between_files(self, first: int, last: int = -1) -> str:
        last = first + 1 if last < 0 else last
        if len(self.files) > last:
            return f" (files {Path(self.files[first]).name!r} to {Path(self.files[last]).name!r})"
        return ""


# A slice may sit this fraction of the in-plane pixel size off the line of the first slice's normal (IPP
# rounding in the files is ~0.001-0.01 mm); further off means a gantry tilt.
_MAX_LATERAL_OFFSET_PIXELS = 0.25
# Neighbouring slice distances may differ from the median by this much (5 % or 0.02 mm) in a regular
# stack; more is a variable-spacing reconstruction (or a missing slice), resampled onto a regular grid.
_SPACING_REL_TOL, _SPACING_ABS_TOL = 0.05, 0.02
# A step larger than this many median steps (plus the tolerance above) is a gap: slices are missing, and
# interpolating across it would invent anatomy. Refused.
_MAX_GAP_STEPS = 2.0


def slice_stack_geometry(
    label: str,
    positions: Sequence[Sequence[float]],
    orientations: Sequence[Sequence[float]],
    pixel_spacings: Sequence[Sequence[float]],
    sizes: Sequence[Tuple[int, int]],
    names: Sequence[str] = (),
) -> DicomSliceGeometry:
    """Sort slices by their position along the slice normal (ImagePositionPatient projected on the cross
    product of the ImageOrientationPatient vectors) and check that they form one stack of parallel slices.

    Raises :class:`InputError` for slices with different orientations or sizes, two slices at the same
    position, and a gap of more than twice the median slice distance (missing slices; the message names
    the slice positions, and the files when ``names`` are given). A gantry tilt or uneven spacing is not
    refused here: see :attr:`DicomSliceGeometry.is_regular`. ``names`` (file names) are returned sorted
    in ``files``.
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
    sorted_names = tuple(names[n] for n in order) if len(names) else ()

    def files(n: int) -> str:
        return (f" (files {Path(sorted_names[n]).name!r} and {Path(sorted_names[n + 1]).name!r})"
                if sorted_names else "")

    steps = np.diff(along)
    if len(steps) and steps.min() < 1e-3:
        n = int(np.argmin(steps))
        raise InputError(
            f"{label} has two slices at the same position ({along[n]:.2f} mm along the slice normal{files(n)}): "
            "several acquisitions, phases or copies of a file in one series. Export one reconstruction alone."
        )
    if len(steps) > 1:
        median = float(np.median(steps))
        worst = int(np.argmax(steps))
        if steps[worst] > _MAX_GAP_STEPS * median + max(_SPACING_ABS_TOL, _SPACING_REL_TOL * median):
            raise InputError(
                f"{label} has a gap of {steps[worst]:.2f} mm between the slices at {along[worst]:.2f} and "
                f"{along[worst + 1]:.2f} mm along the slice normal{files(worst)}, more than twice its usual slice "
                f"spacing of {median:.2f} mm (the median): slices are missing, and HeadSeg does not invent "
                "anatomy across a gap. Export the complete series (all its files)."
            )
    first_spacing = list(pixel_spacings[0]) if len(pixel_spacings) else []
    pixel = (float(first_spacing[1]), float(first_spacing[0])) if len(first_spacing) == 2 else (1.0, 1.0)
    geometry = DicomSliceGeometry(
        files=sorted_names,
        order=tuple(int(n) for n in order),
        positions=points,
        direction=np.column_stack([row, col, normal]),
        slice_spacing=1.0,
        pixel_spacing=pixel,
        rows=int(sizes[0][0]) if len(sizes) else 0,
        columns=int(sizes[0][1]) if len(sizes) else 0,
    )
    if len(along) < 2:
        return geometry
    if geometry.is_regular:
        spacing = float((along[-1] - along[0]) / (len(along) - 1))
    else:
        spacing = geometry.median_step
    return dataclasses.replace(geometry, slice_spacing=spacing)
