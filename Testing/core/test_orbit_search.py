"""The automatic orbit search finds both orbits or refuses, with a sentence that says what is missing.

Phantoms with what real scans have (headrest, table, thin and thick slices, noise, metal streaks, head
tilt and rotation) must be localised; fields of view that stop above or below the orbits, a head with
one orbit cut off and volumes that are not heads must be refused, through the API and through
``headseg segment --task orbit`` (exit 2); ``--roi`` still overrides the search. A few real OpenKBP CTs,
chosen from the measurement of docs/orbit_search.md, pin the behaviour on real scans.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from headseg.geometry import Volume
from headseg.locate import (
    MIN_CONFIDENCE,
    NOT_FOUND_ADVICE,
    OrbitNotFoundError,
    OrbitSearchReport,
    locate_orbits,
    search_orbits,
)
from headseg.synth.phantoms import Tissue, make_head_phantom

REPO = Path(__file__).resolve().parents[2]
OPENKBP = REPO.parent / "shared" / "data" / "openkbp"
PREFIX = "Could not find both orbits in this CT: "


# -- scanner effects painted onto make_head_phantom ------------------------------------------------------
# Small, explicit array edits on the fast geometric phantom. The anatomical generator (headseg.synth)
# draws these effects itself (test_synthetic_anatomical_head_is_localised below, and the measurement in
# docs/orbit_search.md); it takes ~10-60 s per case, so the many variants here stay on the fast phantom.
def _lps_of_voxels(volume: Volume) -> np.ndarray:
    """LPS coordinates (mm) of every voxel centre, [k, j, i, 3]."""
    k, j, i = volume.shape
    m = volume.ijk_to_lps.astype(np.float32)
    ii, jj, kk = np.meshgrid(np.arange(i, dtype=np.float32), np.arange(j, dtype=np.float32),
                             np.arange(k, dtype=np.float32), indexing="ij")  # fmt: skip
    lps = np.stack([ii, jj, kk], axis=-1) @ m[:3, :3].T + m[:3, 3]
    return np.transpose(lps, (2, 1, 0, 3))


def _int16(hu: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(hu), -1024, 3071).astype(np.int16)


def add_headrest(phantom, table: bool = False) -> Volume:
    """A curved headrest moulded to the back of the head (4 mm gel pad touching the skin, 5 mm plastic
    shell), optionally with a flat table 12 mm below it. Axis-aligned phantoms only."""
    hu = phantom.image.array.astype(np.float32)
    body = phantom.tissues.array != Tissue.AIR
    lps = _lps_of_voxels(phantom.image)
    sx, sy = phantom.image.spacing[:2]
    outside = np.stack([ndimage.distance_transform_edt(~b, sampling=(sy, sx)) for b in body])
    behind = lps[..., 1] > 20.0
    hu[behind & (outside > 0) & (outside <= 4)] = 20.0
    hu[behind & (outside > 4) & (outside <= 9)] = 250.0
    if table:
        back = lps[..., 1][body].max()
        hu[(lps[..., 1] > back + 12) & (lps[..., 1] < back + 22)] = 150.0
    return phantom.image.with_array(_int16(hu))


def add_metal_streaks(volume: Volume, point_lps, amplitude: float = 800.0, half_height_mm: float = 5.0,
                      streaks: int = 12, seed: int = 0) -> Volume:
    """Metal (3000 HU) at ``point_lps`` and the thin bright and dark streaks it throws across the axial
    slices within ``half_height_mm`` of it, fading with distance (a filling, a clip)."""
    rng = np.random.default_rng(seed)
    hu = volume.array.astype(np.float32)
    d = _lps_of_voxels(volume) - np.asarray(point_lps, np.float32)
    r = np.hypot(d[..., 0], d[..., 1])
    add = np.zeros(hu.shape, np.float32)
    for n in range(streaks):
        angle = rng.uniform(0.0, np.pi)
        across = np.abs(d[..., 0] * np.sin(angle) - d[..., 1] * np.cos(angle))
        sign = 1.0 if n % 2 else -1.0
        add += sign * amplitude * rng.uniform(0.5, 1.0) * np.exp(-0.5 * (across / 1.5) ** 2) / (1.0 + r / 40.0)
    hu += np.where(np.abs(d[..., 2]) <= half_height_mm, add, 0.0)
    hu[np.linalg.norm(d, axis=-1) <= 2.5] = 3000.0
    return volume.with_array(_int16(hu))


FAST = dict(spacing=(1.0, 1.0, 2.0))
WHOLE_HEAD = dict(spacing=(1.0, 1.0, 2.0), extent_mm=(200.0, 250.0, 150.0), field_center_lps=(0.0, 10.0, 20.0))


def _headrest():
    ph = make_head_phantom(seed=11, **WHOLE_HEAD)
    return ph, add_headrest(ph)


def _headrest_and_table():
    ph = make_head_phantom(seed=12, **WHOLE_HEAD)
    return ph, add_headrest(ph, table=True)


def _vertex_in_view():
    ph = make_head_phantom(seed=13, spacing=(1.2, 1.2, 2.5), extent_mm=(180.0, 220.0, 200.0),
                           field_center_lps=(0.0, 0.0, 40.0))  # fmt: skip
    return ph, ph.image


def _dental_streaks():
    ph = make_head_phantom(seed=15, spacing=(1.0, 1.0, 2.0), extent_mm=(160.0, 160.0, 110.0),
                           field_center_lps=(0.0, -30.0, -15.0))  # fmt: skip
    return ph, add_metal_streaks(ph.image, (12.0, -75.0, -50.0))


def _streaks_at_the_orbits():
    ph = make_head_phantom(seed=16, **FAST)
    return ph, add_metal_streaks(ph.image, (45.0, -40.0, 2.0), amplitude=600.0, seed=1)


def _plain(**kwargs):
    def make():
        ph = make_head_phantom(**kwargs)
        return ph, ph.image

    return make


LOCALISED = {
    "curved-headrest": _headrest,
    "headrest-and-table": _headrest_and_table,
    "vertex-in-view": _vertex_in_view,
    "thin-0.5mm-slices": _plain(seed=21, spacing=(0.5, 0.5, 0.5), extent_mm=(130.0, 110.0, 70.0),
                                field_center_lps=(0.0, -45.0, 0.0)),
    "thick-5mm-slices": _plain(seed=22, spacing=(0.8, 0.8, 5.0)),
    "noise-60HU": _plain(seed=23, noise_hu=60.0, **FAST),
    "thin-noisy-80HU": _plain(seed=24, spacing=(0.5, 0.5, 0.6), noise_hu=80.0, extent_mm=(140.0, 120.0, 70.0),
                              field_center_lps=(0.0, -45.0, 0.0)),
    "dental-metal-streaks": _dental_streaks,
    "metal-streaks-at-the-orbits": _streaks_at_the_orbits,
    "pitch-15deg": _plain(seed=25, head_rotation_deg=(15.0, 0.0, 0.0), **FAST),
    "pitch-minus-15deg": _plain(seed=26, head_rotation_deg=(-15.0, 0.0, 0.0), **FAST),
    "roll-20deg": _plain(seed=27, head_rotation_deg=(0.0, 20.0, 0.0), extent_mm=(170.0, 170.0, 100.0), **FAST),
    "yaw-20deg": _plain(seed=28, head_rotation_deg=(0.0, 0.0, 20.0), extent_mm=(170.0, 170.0, 100.0), **FAST),
    "tilt-10-10-15deg-noisy": _plain(seed=29, head_rotation_deg=(10.0, 10.0, 15.0), noise_hu=30.0,
                                     extent_mm=(170.0, 170.0, 100.0), **FAST),
}


# Streaks of +-200 HU crossing both globes split their soft tissue into wedges: the candidates come out
# small (radius ~7 mm) and the left centre lands ~9 mm in front of the truth (measured). Pinned loosely:
# the true globe and the point 25 mm behind it (the cone) must still lie inside the crop's box.
TOLERANCE_MM = {"metal-streaks-at-the-orbits": 10.0}


@pytest.mark.parametrize("name", list(LOCALISED))
def test_phantom_with_both_orbits_in_view_is_localised(name):
    phantom, image = LOCALISED[name]()
    locations = locate_orbits(image)
    assert [loc.side for loc in locations] == ["right", "left"]
    for loc in locations:
        error = np.linalg.norm(loc.globe_center_lps - phantom.globe_centers_lps[loc.side])
        assert error < TOLERANCE_MM.get(name, 3.0), (loc.side, error)
        truth = phantom.globe_centers_lps[loc.side]
        assert loc.box.contains(truth) and loc.box.contains(truth + np.array([0.0, 25.0, 0.0])), loc.side
        assert loc.score >= MIN_CONFIDENCE


def test_synthetic_anatomical_head_is_localised():
    """A headseg.synth head as drawn for seed 7: turned and tilted by ~5 degrees, in a headrest, four
    metal fillings throwing streaks, noise, bias, partial volume; coarsened to 1 x 1 x 2 mm for speed."""
    from headseg.synth import make_synthetic_head

    case = make_synthetic_head(7, spacing=(1.0, 1.0, 2.0))
    assert case.metadata["headrest"] and case.metadata["metal_fillings"] > 0
    for loc in locate_orbits(case.image):
        assert np.linalg.norm(loc.globe_center_lps - case.globe_centers_lps[loc.side]) < 3.0
        assert loc.score >= MIN_CONFIDENCE


@pytest.mark.parametrize("seed, what", [
    (5009, "the field of view cuts the back of the head: the skull ring meets the image edge"),
    (5036, "a reconstruction circle written as air (-1024) cuts the back of the head"),
])  # fmt: skip
def test_synthetic_head_cut_by_the_field_of_view_is_localised(seed, what):
    """Both were refused as 'no cranium above the eyes' before the ring around the brain was allowed to
    close through what lies outside the field of view (the cause in 24 of the 43 refused training heads,
    docs/orbit_search.md)."""
    from headseg.synth import make_synthetic_head

    case = make_synthetic_head(seed, spacing=(1.0, 1.0, 2.0))
    report = search_orbits(case.image)
    assert report.found, f"{what}: {report.missing}"
    for side, centre in report.globes.items():
        assert np.linalg.norm(centre - case.globe_centers_lps[side]) < 3.0, side


def test_reconstruction_circle_is_told_from_the_image_edge():
    """A head wider than a square field: cut by the image's own edges it keeps every voxel in the field;
    cut by a reconstruction circle written as air, what lies beyond the circle is outside the field (and
    the search still finds both orbits). Seed 6 of the generator, cut at the image's side only, was
    refused for a while because that cut was taken for a circle."""
    from headseg.locate.work_grid import _WorkGrid
    from headseg.synth import make_synthetic_head

    case = make_synthetic_head(7, spacing=(1.0, 1.0, 2.0), extent_mm=(150.0, 150.0, 80.0),
                               center_lps=(0.0, -30.0, 0.0), acquisition={"recon_circle": False})
    square = case.image
    assert _WorkGrid(square).in_fov.all()  # the image edge cuts the head: nothing is taken away
    k, j, i = np.meshgrid(*(np.arange(n) for n in square.array.shape), indexing="ij")
    centre = (np.array(square.array.shape[1:]) - 1) / 2.0
    rho = np.hypot((j - centre[0]) * square.spacing[1], (i - centre[1]) * square.spacing[0])
    circled = square.with_array(np.where(rho > 75.0, -1024, square.array).astype(square.array.dtype))
    grid = _WorkGrid(circled)
    corner = grid.to_zyx(circled.index_to_lps((2.0, 2.0, 20.0)))  # a corner of the image, beyond the circle
    assert not grid.in_fov[tuple(np.clip(np.round(corner).astype(int), 0, np.array(grid.hu.shape) - 1))]
    report = search_orbits(circled)
    assert report.found, report.missing
    for side, centre_lps in report.globes.items():
        assert np.linalg.norm(centre_lps - case.globe_centers_lps[side]) < 3.0, side


def test_sinus_behind_a_nose_is_not_an_eye():
    """Seed 5100 on 1 x 1 x 2 mm: cupping darkens the right globe until the search cannot see it, and two
    blobs of soft tissue behind the maxillary sinuses, whose air reaches the outside through the nose,
    looked like a pair of eyes 30 mm behind the real ones. Refusing is right; a wrong place is not."""
    from headseg.synth import make_synthetic_head

    case = make_synthetic_head(5100, spacing=(1.0, 1.0, 2.0))
    report = search_orbits(case.image)
    if report.found:
        for side, centre in report.globes.items():
            assert np.linalg.norm(centre - case.globe_centers_lps[side]) < 5.0, side


def _refusal(image: Volume) -> str:
    with pytest.raises(OrbitNotFoundError) as info:
        locate_orbits(image)
    message = str(info.value)
    assert message.startswith(PREFIX) and message.endswith(NOT_FOUND_ADVICE), message
    assert "--roi CENTRE,SIZE" in message and "Search box" in message
    assert ". " not in message, "one sentence"
    assert isinstance(info.value.report, OrbitSearchReport) and not info.value.report.found
    return message[len(PREFIX):]


# Fields of view of the standard phantom (150 x 150 x 80 mm; the globes lie near z = 0, the orbit
# regions 22 mm above and below them), moved so that they miss or cut the orbits.
REFUSED_FIELDS = {
    "field-above-the-orbits": ((0.0, -33.0, 65.0), "below it"),
    "field-below-the-orbits": ((0.0, -33.0, -65.0), "above it"),
    "field-stops-through-the-orbits": ((0.0, -33.0, -32.0), "cuts through the"),
    "field-starts-through-the-orbits": ((0.0, -33.0, 32.0), "cuts through the"),
    "right-orbit-cut-off": ((62.0, -33.0, 0.0), "outside the field of view"),
}


@pytest.mark.parametrize("center, words", list(REFUSED_FIELDS.values()), ids=list(REFUSED_FIELDS))
def test_field_of_view_without_both_orbits_is_refused(center, words):
    phantom = make_head_phantom(seed=31, field_center_lps=center, **FAST)
    assert words in _refusal(phantom.image)


def test_non_head_volumes_are_refused():
    rng = np.random.default_rng(0)
    # A trunk: skin, fat, soft tissue, a spine, and two fluid-filled balls 63 mm apart in fat (look-alikes).
    k, j, i = np.mgrid[0:60, 0:200, 0:300].astype(np.float32)
    x, y, z = i * 1.2 - 180.0, j * 1.2 - 120.0, k * 2.5
    outer = (x / 160.0) ** 2 + (y / 110.0) ** 2
    hu = np.where(outer < 1.0, -100.0, -1000.0)
    hu[outer < 0.85] = 40.0
    hu[(x / 20.0) ** 2 + ((y - 70.0) / 20.0) ** 2 < 1.0] = 700.0
    for cx in (-31.5, 31.5):
        r2 = (x - cx) ** 2 + (y + 60.0) ** 2 + (z - 75.0) ** 2
        hu[(r2 < 22.0**2) & (outer < 0.85)] = -100.0
        hu[r2 < 11.5**2] = 10.0
    hu += rng.normal(0.0, 10.0, hu.shape)
    trunk = Volume(_int16(hu), (1.2, 1.2, 2.5), (-180.0, -120.0, 0.0))
    _refusal(trunk)
    # A water cylinder.
    water = np.where((i[:40, :160, :160] - 80) ** 2 + (j[:40, :160, :160] - 80) ** 2 < 70**2, 0.0, -1000.0)
    _refusal(Volume(_int16(water + rng.normal(0.0, 10.0, water.shape)), (1.0, 1.0, 2.0)))
    # Air only.
    assert "no body" in _refusal(Volume(np.full((20, 50, 50), -1000, np.int16), (2.0, 2.0, 2.0)))


def test_report_of_a_found_search():
    report = search_orbits(make_head_phantom(seed=32, **FAST).image)
    assert report.found and report.message == "" and report.missing == ""
    assert set(report.checks) == {"globes", "distance", "symmetry", "depth", "orbit_walls", "cranium", "field_of_view"}
    assert all(0.0 <= v <= 1.0 for v in report.checks.values())
    assert report.confidence >= report.threshold == MIN_CONFIDENCE
    assert 55.0 < report.details["distance_mm"] < 72.0
    assert "found" in report.summary()


# -- the CLI: exit 2 with the sentence, and --roi still overrides ----------------------------------------
def _headseg(*args):
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "headseg", *map(str, args)], capture_output=True, text=True,
                          encoding="utf-8", errors="replace", env=env, timeout=600)


def test_cli_refuses_a_field_below_the_orbits_and_roi_overrides(tmp_path, tiny_orbit_package):
    from headseg.io import write_volume

    phantom = make_head_phantom(seed=33, field_center_lps=(0.0, -33.0, -65.0), **FAST)
    ct = tmp_path / "skull_base.nrrd"
    write_volume(phantom.image, ct)
    out = tmp_path / "out"
    proc = _headseg("segment", ct, "--task", "orbit", "--model", tiny_orbit_package.path, "-o", out,
                    "--device", "cpu")  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert PREFIX in proc.stderr and "--roi CENTRE,SIZE" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(out.glob("*.seg.nrrd"))
    # a box drawn by the user skips the search and its refusal
    proc = _headseg("segment", ct, "--task", "orbit", "--model", tiny_orbit_package.path, "-o", out,
                    "--device", "cpu", "--roi", "0,-50,-40,120,80,40")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (out / "skull_base.seg.nrrd").exists()


# -- real CTs: OpenKBP cases chosen from the measurement in docs/orbit_search.md ---------------------------
OPENKBP_LOCALISED = ["train/pt_100", "validation/pt_201", "test/pt_256"]
OPENKBP_REFUSED = {
    "train/pt_1": "no two eyes",
    "test/pt_249": "no two eyes",
    "train/pt_104": "",
}


def _openkbp(case: str) -> Volume:
    path = OPENKBP / case / "ct.nii.gz"
    if not path.exists():
        pytest.skip(f"OpenKBP data not found at {path} (shared/data/openkbp)")
    from headseg.io import read_volume

    return read_volume(path)


@pytest.mark.parametrize("case", OPENKBP_LOCALISED)
def test_real_openkbp_ct_with_both_orbits_is_localised(case):
    locations = locate_orbits(_openkbp(case))
    right, left = (loc.globe_center_lps for loc in locations)
    assert 50.0 < np.linalg.norm(left - right) < 75.0 and right[0] < left[0]


@pytest.mark.parametrize("case, words", list(OPENKBP_REFUSED.items()), ids=list(OPENKBP_REFUSED))
def test_real_openkbp_ct_without_both_orbits_is_refused(case, words):
    assert words in _refusal(_openkbp(case))
