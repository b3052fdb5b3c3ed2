"""DICOM series as scanners write them: gantry-tilted and unevenly spaced series resampled onto a regular
grid (``headseg.io.regularise``), sagittal and coronal series, the gap refusal, ``headseg convert``, and what
DICOM export does with a regularised series.

The real series is dcm_qa_ct's GE head CT (Testing/data/dcm_qa_ct_GE.tar.xz, BSD-2, see the README there):
18.5 degrees of gantry tilt, slices 4.00 mm apart, then 1.08 mm, then 7.00 mm. It is checked slice by slice
against its own files (each placed by its own ImagePositionPatient and ImageOrientationPatient, read with
pydicom, not with HeadSeg's reader) and against dcm2niix's tilt-corrected output. Synthetic series hold a
linear HU ramp, which linear interpolation reproduces exactly: any misplacement shows as a wrong value.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import pytest
from geometry_asserts import centroid_lps
from hardening_factory import run_cli
from scipy import ndimage

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.io import read_segmentation, read_volume, write_dicom_series
from headseg.labels import get_label_set

pydicom = pytest.importorskip("pydicom")

# dcm2niix releases whose tilt-corrected output has the right spatial matrix on this series start here
# (Debian 12's v1.0.20220720 and PyPI's 1.0.20250506 write a wrong one).
DCM2NIIX_MIN_VERSION = 20260416


# ------------------------------------------------------------------------------------------------
# The real tilted series
# ------------------------------------------------------------------------------------------------
def read_with_warnings(path: Path) -> Tuple[Volume, List[str]]:
    """read_volume(path) and the warnings it logged (usable in session fixtures, unlike caplog)."""
    messages: List[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    logger, handler = logging.getLogger("headseg.io"), Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        volume = read_volume(path)
    finally:
        logger.removeHandler(handler)
    return volume, messages


@pytest.fixture(scope="session")
def ge_read(ge_tilted_series) -> Tuple[Volume, List[str]]:
    return read_with_warnings(ge_tilted_series)


def original_slices(folder: Path):
    """(name, HU [rows, columns], ImagePositionPatient, row direction, column direction, row spacing,
    column spacing) of every file, straight from pydicom."""
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1)) + float(ds.get("RescaleIntercept", 0))
        iop = np.array([float(v) for v in ds.ImageOrientationPatient])
        spacing_between_rows, spacing_between_columns = (float(v) for v in ds.PixelSpacing)
        yield (path.name, hu, np.array([float(v) for v in ds.ImagePositionPatient]), iop[:3], iop[3:],
               spacing_between_rows, spacing_between_columns)


def largest_component(mask: np.ndarray) -> np.ndarray:
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    return ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))


def sample(volume: Volume, lps: np.ndarray) -> np.ndarray:
    """Trilinear values of ``volume`` at LPS points [..., 3] (NaN outside its grid)."""
    inverse = np.linalg.inv(volume.ijk_to_lps)
    ijk = lps @ inverse[:3, :3].T + inverse[:3, 3]
    kji = ijk[..., ::-1].reshape(-1, 3).T
    values = ndimage.map_coordinates(volume.array.astype(np.float32), kji, order=1, mode="constant", cval=np.nan)
    return values.reshape(lps.shape[:-1])


def slice_agreement(folder: Path, volume: Volume, ignore_tilt: bool = False, stride: int = 2
                    ) -> Tuple[Dict[str, float], float]:
    """Pearson r between each original slice's HU inside the head and the volume sampled where the slice's
    own position and orientation put its pixels; and r over all slices together. ``ignore_tilt`` puts the
    slices where a reader that ignores the tilt would (straight along the normal from the first slice)."""
    per_slice: Dict[str, float] = {}
    xs, ys = [], []
    first: Optional[np.ndarray] = None
    for name, hu, ipp, row, col, between_rows, between_columns in original_slices(folder):
        normal = np.cross(row, col)
        if first is None:
            first = ipp
        if ignore_tilt:
            ipp = first + ((ipp - first) @ normal) * normal
        b, a = np.mgrid[0:hu.shape[0]:stride, 0:hu.shape[1]:stride]
        lps = ipp + a[..., None] * between_columns * row + b[..., None] * between_rows * col
        original = hu[::stride, ::stride]
        values = sample(volume, lps)
        inside = largest_component(original > -300) & np.isfinite(values)
        if inside.sum() < 100:
            continue
        per_slice[name] = float(np.corrcoef(original[inside], values[inside])[0, 1])
        xs.append(original[inside])
        ys.append(values[inside])
    return per_slice, float(np.corrcoef(np.concatenate(xs), np.concatenate(ys))[0, 1])


def test_ge_series_is_regularised_with_a_warning_that_says_what_was_done(ge_read, ge_tilted_series):
    volume, warnings = ge_read
    text = " ".join(warnings)
    assert "gantry tilt of 18.5 degrees" in text
    assert ("uneven slice spacing (4.00 mm x 13 (files '01.dcm' to '14.dcm'), 1.08 mm (files '14.dcm' to "
            "'15.dcm'), 7.00 mm x 13 (files '15.dcm' to '28.dcm'))") in text
    assert "0.488 x 0.488 mm in plane (unchanged) and 4.00 mm between slices" in text
    assert "linear interpolation between the two nearest slices" in text and "512 x 611 x 37 voxels" in text

    # The grid: orthogonal, axes along the DICOM rows, columns and slice normal, spacing unchanged in plane
    # and the median slice distance (4.00 mm, fitted to the 144.08 mm stack: 36 steps) between slices.
    _, _, ipp, row, col, between_rows, between_columns = next(original_slices(ge_tilted_series))
    normal = np.cross(row, col)
    np.testing.assert_allclose(volume.direction, np.column_stack([row, col, normal]), atol=1e-5)
    np.testing.assert_allclose(volume.direction.T @ volume.direction, np.eye(3), atol=1e-12)
    assert volume.spacing[:2] == pytest.approx((between_columns, between_rows), abs=1e-6)
    assert volume.spacing[2] == pytest.approx(144.08 / 36, abs=0.002)
    assert volume.shape == (37, 611, 512) and volume.array.dtype == np.int16

    # Every pixel centre of every original slice lies inside the grid: nothing was cut.
    inverse = np.linalg.inv(volume.ijk_to_lps)
    for _, hu, ipp, row, col, between_rows, between_columns in original_slices(ge_tilted_series):
        corners = [ipp + a * between_columns * row + b * between_rows * col
                   for a in (0, hu.shape[1] - 1) for b in (0, hu.shape[0] - 1)]
        ijk = np.array([inverse[:3, :3] @ c + inverse[:3, 3] for c in corners])
        assert ijk.min() > -1e-3 and np.all(ijk <= np.array(volume.size_ijk) - 1 + 1e-3)


def test_every_original_ge_slice_agrees_with_the_regularised_volume(ge_read, ge_tilted_series):
    volume, _ = ge_read
    per_slice, overall = slice_agreement(ge_tilted_series, volume)
    values = np.array(list(per_slice.values()))
    print(f"GE tilted series vs its own slices: Pearson r per slice min {values.min():.4f}, median "
          f"{np.median(values):.4f} over {len(values)} slices; overall {overall:.4f}")
    assert len(per_slice) == 28
    assert values.min() >= 0.95 and overall >= 0.95  # measured: min 0.975, median 0.9996, overall 0.994
    assert np.median(values) >= 0.99
    # The check sees a misplacement: slices stacked without their tilt (48 mm off at the top) disagree.
    _, ignoring_tilt = slice_agreement(ge_tilted_series, volume, ignore_tilt=True, stride=4)
    assert ignoring_tilt < overall - 0.1, ignoring_tilt


def dcm2niix_binary() -> Optional[str]:
    """The dcm2niix of the PyPI wheel (test extra), else one on PATH that is recent enough."""
    try:
        import dcm2niix

        if Path(dcm2niix.bin).is_file():
            return str(dcm2niix.bin)
    except ImportError:
        pass
    found = shutil.which("dcm2niix")
    if found is None:
        return None
    version = re.search(r"v1\.0\.(\d{8})", subprocess.run([found, "-v"], capture_output=True, text=True).stdout)
    return found if version and int(version.group(1)) >= DCM2NIIX_MIN_VERSION else None


def test_regularised_ge_volume_agrees_with_dcm2niix(ge_read, ge_tilted_series, tmp_path):
    import SimpleITK as sitk

    binary = dcm2niix_binary()
    if binary is None:
        pytest.skip(f"dcm2niix binary missing: install the PyPI wheel (pip install 'dcm2niix>=1.0.{DCM2NIIX_MIN_VERSION}', "
                    "part of the test extra) to compare with dcm2niix's tilt correction")
    volume, _ = ge_read
    # Compared on every second row and column of HeadSeg's grid (the same planes), to keep the test fast.
    half = Volume(volume.array[:, ::2, ::2], (volume.spacing[0] * 2, volume.spacing[1] * 2, volume.spacing[2]),
                  volume.origin, volume.direction)
    proc = subprocess.run([binary, "-f", "%s", "-z", "n", "-o", str(tmp_path), str(ge_tilted_series)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    corrected = sorted(tmp_path.glob("*_Tilt*.nii"))
    assert corrected, f"dcm2niix wrote no tilt-corrected volume: {sorted(p.name for p in tmp_path.iterdir())}"
    theirs = sitk.ReadImage(str(corrected[0]))
    on_our_grid = sitk.GetArrayFromImage(sitk.Resample(theirs, half.to_sitk(), sitk.Transform(), sitk.sitkLinear,
                                                       -5000.0, sitk.sitkFloat32))
    ours = half.array.astype(np.float32)
    head = largest_component(ours > -300)
    both = head & (on_our_grid > -4000)
    r = float(np.corrcoef(ours[both], on_our_grid[both])[0, 1])
    their_volume = Volume.from_sitk(theirs)
    # Landmarks: the skull's centroid, each on its own grid; the head's, theirs resampled onto ours.
    skull = np.linalg.norm(centroid_lps(half, ours >= 300) - centroid_lps(their_volume, their_volume.array >= 300))
    head_shift = np.linalg.norm(centroid_lps(half, head) - centroid_lps(half, largest_component(on_our_grid > -300)))
    print(f"GE tilted series vs dcm2niix {corrected[0].name}: Pearson r {r:.4f} inside the head "
          f"({both.sum() / head.sum():.1%} of it covered); skull centroids {skull:.2f} mm apart, head centroids "
          f"{head_shift:.2f} mm")
    assert both.sum() >= 0.99 * head.sum()
    assert r >= 0.98  # measured 0.995 (dcm2niix resamples to 2.62 mm slices, HeadSeg to 4.00 mm)
    assert skull < 1.0 and head_shift < 1.0  # measured 0.42 and 0.27 mm
    # Both cover every slice along the column direction: the same extent (611 rows of 0.488 mm).
    their_rows = theirs.GetSize()[1] * theirs.GetSpacing()[1]
    assert volume.shape[1] * volume.spacing[1] == pytest.approx(their_rows, abs=volume.spacing[1])


# ------------------------------------------------------------------------------------------------
# Synthetic series with a known truth
# ------------------------------------------------------------------------------------------------
ORIENTATIONS = {  # (row direction, column direction) of ImageOrientationPatient
    "axial": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "sagittal": ((0.0, 1.0, 0.0), (0.0, 0.0, -1.0)),
    "coronal": ((1.0, 0.0, 0.0), (0.0, 0.0, -1.0)),
}
STACKS = {  # (gantry tilt in degrees, distances between neighbouring slices along the normal in mm)
    "tilted": (20.0, [2.0] * 13),
    "uneven": (0.0, [2.0] * 5 + [3.0] * 4 + [1.0] + [2.0] * 3),
    "tilted-uneven": (-12.0, [2.0] * 4 + [1.0] * 3 + [3.5] * 3 + [2.0] * 3),
}
ROWS, COLUMNS, BETWEEN_COLUMNS, BETWEEN_ROWS = 30, 34, 0.9, 1.1


def ramp(lps: np.ndarray) -> np.ndarray:
    """The truth: a linear HU ramp, which (bi)linear interpolation reproduces exactly."""
    return 200.0 + lps @ np.array([6.0, -4.0, 8.0])


def synthetic_series(folder: Path, orientation: str, tilt: float, steps, value=ramp) -> Tuple[np.ndarray, np.ndarray]:
    """Write a series whose slices step ``steps`` mm along their normal and tan(tilt) times as far along
    their column direction (a gantry tilt); pixel values are ``value`` at each pixel's LPS position.
    Returns the positions and the direction matrix (row, column, normal)."""
    row, col = (np.array(v) for v in ORIENTATIONS[orientation])
    normal = np.cross(row, col)
    along = np.concatenate([[0.0], np.cumsum(steps)])
    first = np.array([-20.0, 10.0, -30.0])
    positions = first + np.outer(along, normal) + np.outer(along * math.tan(math.radians(tilt)), col)
    b, a = np.mgrid[0:ROWS, 0:COLUMNS]
    pixels = a[..., None] * BETWEEN_COLUMNS * row + b[..., None] * BETWEEN_ROWS * col
    array = np.stack([np.rint(value(p + pixels)) for p in positions]).astype(np.int16)
    direction = np.column_stack([row, col, normal])
    write_dicom_series(Volume(array, (BETWEEN_COLUMNS, BETWEEN_ROWS, float(np.median(steps))), first, direction),
                       folder, series_description=f"{orientation} {tilt} deg", positions=positions)
    return positions, direction


def voxel_lps(volume: Volume) -> np.ndarray:
    k, j, i = np.meshgrid(*(np.arange(n) for n in volume.shape), indexing="ij")
    ijk = np.stack([i, j, k], axis=-1).astype(float)
    return ijk @ (volume.direction @ np.diag(volume.spacing)).T + np.asarray(volume.origin)


@pytest.mark.parametrize("stack", sorted(STACKS))
@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_synthetic_series_is_regularised_to_the_known_truth(tmp_path, caplog, orientation, stack):
    tilt, steps = STACKS[stack]
    positions, direction = synthetic_series(tmp_path / "s", orientation, tilt, steps)
    with caplog.at_level(logging.WARNING, logger="headseg.io"):
        volume = read_volume(tmp_path / "s")
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "resampled onto a regular grid" in warning
    assert ("gantry tilt of" in warning) == (tilt != 0.0)
    if tilt:
        assert f"gantry tilt of {abs(tilt):.1f} degrees" in warning
    assert ("uneven slice spacing" in warning) == (len(set(steps)) > 1)

    np.testing.assert_allclose(volume.direction, direction, atol=1e-9)
    span = float(np.sum(steps))
    assert volume.spacing == pytest.approx((BETWEEN_COLUMNS, BETWEEN_ROWS, span / round(span / np.median(steps))))

    lps = voxel_lps(volume)
    # Inside every slice's footprint (seen along the normal) the value is the ramp's, to rounding.
    row, col = direction[:, 0], direction[:, 1]
    inside = np.ones(volume.shape, bool)
    for p in positions:
        u, v = (lps - p) @ row / BETWEEN_COLUMNS, (lps - p) @ col / BETWEEN_ROWS
        inside &= (u >= -1e-6) & (u <= COLUMNS - 1 + 1e-6) & (v >= -1e-6) & (v <= ROWS - 1 + 1e-6)
    assert inside.sum() > 0.3 * inside.size
    error = np.abs(volume.array.astype(float) - ramp(lps))[inside]
    assert error.max() <= 1.01, error.max()  # 0.5 HU rounding in the files, 0.5 in the output
    # Every original pixel centre lies inside the grid (nothing cut), first and last slice on a plane.
    inverse = np.linalg.inv(volume.ijk_to_lps)
    for p in positions:
        for corner in (p, p + (COLUMNS - 1) * BETWEEN_COLUMNS * row + (ROWS - 1) * BETWEEN_ROWS * col):
            ijk = inverse[:3, :3] @ corner + inverse[:3, 3]
            assert ijk.min() > -1e-6 and np.all(ijk <= np.array(volume.size_ijk) - 1 + 1e-6)
    k_first = (inverse[:3, :3] @ positions[0] + inverse[:3, 3])[2]
    k_last = (inverse[:3, :3] @ positions[-1] + inverse[:3, 3])[2]
    assert k_first == pytest.approx(0.0, abs=1e-6) and k_last == pytest.approx(volume.shape[0] - 1, abs=1e-6)


@pytest.mark.parametrize("orientation", ["sagittal", "coronal"])
def test_regular_sagittal_and_coronal_series_are_read_as_they_are(tmp_path, caplog, orientation):
    positions, direction = synthetic_series(tmp_path / "s", orientation, 0.0, [2.0] * 11)
    with caplog.at_level(logging.WARNING, logger="headseg.io"):
        volume = read_volume(tmp_path / "s")
    assert not caplog.records  # a regular stack: nothing resampled, nothing to say
    np.testing.assert_allclose(volume.direction, direction, atol=1e-9)
    np.testing.assert_allclose(volume.origin, positions[0], atol=1e-6)
    assert volume.spacing == pytest.approx((BETWEEN_COLUMNS, BETWEEN_ROWS, 2.0))
    assert volume.shape == (12, ROWS, COLUMNS)
    assert np.abs(volume.array - ramp(voxel_lps(volume))).max() <= 0.5 + 1e-6


def test_sagittal_series_is_segmented_like_an_axial_one(tmp_path, han_package):
    def head(lps: np.ndarray) -> np.ndarray:  # brain, skull and air around them
        radius = np.linalg.norm(lps - [-10.0, 20.0, -40.0], axis=-1)
        return np.select([radius < 11, radius < 14], [40, 900], -1000)

    synthetic_series(tmp_path / "sagittal", "sagittal", 0.0, [2.0] * 11, value=head)
    run = run_cli(["segment", tmp_path / "sagittal", "--task", "han", "--model", han_package.path, "-o",
                   tmp_path / "out", "--device", "cpu", "--progress-format", "none"], "sagittal DICOM series")
    assert run.code == 0 and not run.traceback_shown, run.stderr
    labels = read_segmentation(tmp_path / "out" / "sagittal.seg.nrrd", get_label_set("openkbp"))
    assert labels.same_geometry(read_volume(tmp_path / "sagittal"), tol=1e-4)  # on the series' own grid


def test_gap_of_more_than_twice_the_spacing_is_refused_naming_files_and_positions(tmp_path, han_package):
    synthetic_series(tmp_path / "gap", "axial", 10.0, [2.0] * 6 + [4.5] + [2.0] * 5)
    with pytest.raises(InputError) as info:
        read_volume(tmp_path / "gap")
    message = str(info.value)
    assert ("a gap of 4.50 mm between the slices at -18.00 and -13.50 mm along the slice normal (files "
            "'slice_0006.dcm' and 'slice_0007.dcm'), more than twice its usual slice spacing of 2.00 mm") in message
    run = run_cli(["convert", tmp_path / "gap", "-o", tmp_path / "ct.nrrd", "--progress-format", "none"],
                  "DICOM series with a gap")
    assert run.code == 2 and "gap of 4.50 mm" in run.stderr and not run.traceback_shown
    assert not (tmp_path / "ct.nrrd").exists()


# ------------------------------------------------------------------------------------------------
# headseg convert, and DICOM export of a regularised series
# ------------------------------------------------------------------------------------------------
def json_warnings(stdout: str) -> List[str]:
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return [e["message"] for e in events if e["event"] == "log" and e["level"] == "warning"]


def test_convert_writes_exactly_the_volume_segment_uses(tmp_path, han_package):
    tilt, steps = STACKS["tilted-uneven"]
    synthetic_series(tmp_path / "case3", "axial", tilt, steps)
    ct = tmp_path / "ct.nrrd"
    run = run_cli(["convert", tmp_path / "case3", "-o", ct, "--progress-format", "json"], "convert tilted series")
    assert run.code == 0 and not run.traceback_shown, run.stderr
    converted, direct = read_volume(ct), read_volume(tmp_path / "case3")
    np.testing.assert_array_equal(converted.array, direct.array)
    assert converted.array.dtype == direct.array.dtype and converted.same_geometry(direct, tol=1e-6)
    convert_warnings = json_warnings(run.stdout)
    assert len(convert_warnings) == 1 and convert_warnings[0].startswith("case3: DICOM series")

    seg = run_cli(["segment", tmp_path / "case3", "--task", "han", "--model", han_package.path, "-o", tmp_path / "out",
                   "--device", "cpu", "--progress-format", "json"], "segment tilted series")
    assert seg.code == 0, seg.stderr
    assert convert_warnings[0] in json_warnings(seg.stdout)  # the same sentence
    labels = read_segmentation(tmp_path / "out" / "case3.seg.nrrd", get_label_set("openkbp"))
    assert labels.same_geometry(converted, tol=1e-4)  # segmented on the grid convert wrote

    before = ct.read_bytes()
    again = run_cli(["convert", tmp_path / "case3", "-o", ct, "--progress-format", "none"], "convert, output exists")
    assert again.code == 2 and "already exists" in again.stderr and "--overwrite" in again.stderr
    assert ct.read_bytes() == before
    forced = run_cli(["convert", tmp_path / "case3", "-o", ct, "--overwrite", "--progress-format", "none"],
                     "convert --overwrite")
    assert forced.code == 0, forced.stderr
    wrong = run_cli(["convert", tmp_path / "case3", "-o", tmp_path / "ct.png", "--progress-format", "none"],
                    "convert to .png")
    assert wrong.code == 2 and "extension" in wrong.stderr and not (tmp_path / "ct.png").exists()
    missing = run_cli(["convert", tmp_path / "nothing", "-o", tmp_path / "x.nrrd", "--progress-format", "none"],
                      "convert a missing input")
    assert missing.code == 2 and not missing.traceback_shown


def test_convert_the_real_tilted_series(ge_read, ge_tilted_series, tmp_path):
    run = run_cli(["convert", ge_tilted_series, "-o", tmp_path / "ge.nii.gz", "--progress-format", "json"],
                  "convert the GE tilted series")
    assert run.code == 0, run.stderr
    volume, warnings = ge_read
    back = read_volume(tmp_path / "ge.nii.gz")
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.same_geometry(volume, tol=1e-3)
    assert [w.split(": ", 1)[1] for w in json_warnings(run.stdout)] == warnings


def test_dicom_export_of_a_regularised_series_is_refused_before_segmenting(tmp_path, han_package):
    pytest.importorskip("highdicom")
    synthetic_series(tmp_path / "tilted", "axial", 15.0, [2.0] * 13)
    out = tmp_path / "out"
    run = run_cli(["segment", tmp_path / "tilted", "--task", "han", "--model", han_package.path, "-o", out,
                   "--export", "rtstruct", "--device", "cpu", "--progress-format", "none"], "export of a tilted series")
    assert run.code == 2 and not run.traceback_shown, run.stderr
    assert "cannot be exported as a DICOM SEG or RT Structure Set" in run.stderr
    assert "gantry tilt of 15.0 degrees" in run.stderr and "Run without --export" in run.stderr
    assert not [p for p in out.rglob("*") if p.is_file()] if out.exists() else True  # nothing written
