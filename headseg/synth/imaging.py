"""From the painted anatomy to a CT image: scanner geometry, partial volume and randomised appearance.

In the spirit of SynthSeg (Billot et al., Medical Image Analysis 2023): the label map is fixed by the
anatomy, and everything a scanner or a protocol changes is drawn at random per case, so a network trained
on these images has to learn shape rather than one look:

* per tissue a mean HU drawn around its published range (sources beside :data:`HU_RANGES`), plus a
  smooth texture inside each tissue;
* voxel size (in-plane 0.3-1.0 mm; slices 0.5-3 mm: 2.5-3 mm suffice for most orbit CT, Aviv & Casselman,
  Clin Radiol 2005, and thyroid eye disease protocols take 1 mm), head pose (a few to ~15 deg), field of
  view cutting the body anywhere (both orbits kept in view for training);
* partial volume: the anatomy is painted on a grid finer than the image (exact integer subdivision of
  each voxel; finest around the orbits) and averaged down, so thin bone and thick slices look as they do;
* scanner point-spread (Gaussian blur), correlated noise, a low-frequency bias / beam-hardening cupping
  field, streaks from metal fillings in the slices that hold them, and a headrest, cushion and table.

Labels on the image grid are the majority over each voxel's sub-voxels (background included), which
keeps volumes unbiased for thin structures and thick slices.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from headseg.synth.head import to_anat
from headseg.synth.phantoms import rotation_matrix_deg
from headseg.synth.scene import paint_scene
from headseg.synth.shapes import Canvas, Tissue, upsample

__all__ = ["HU_RANGES", "draw_acquisition", "render_case"]

# (mean, per-case SD, lowest, highest, texture SD range) per tissue code.
HU_RANGES: Dict[int, Tuple[float, float, float, float, Tuple[float, float]]] = {
    Tissue.AIR: (-1000.0, 2.0, -1005.0, -995.0, (0.0, 1.0)),
    Tissue.SKIN: (45.0, 8.0, 25.0, 65.0, (2.0, 6.0)),
    Tissue.FAT: (-100.0, 8.0, -120.0, -80.0, (4.0, 12.0)),  # -50 to -120 (after Buzug 2008, Prokop 2003)
    Tissue.SOFT: (42.0, 7.0, 25.0, 60.0, (3.0, 8.0)),  # soft tissue +25 to +60 (University of Vermont CT tutorial)
    Tissue.MUSCLE: (48.0, 6.0, 35.0, 62.0, (2.0, 6.0)),
    Tissue.EOM: (45.0, 7.0, 28.0, 63.0, (2.0, 6.0)),  # normal EOM ~28-63 (Ozgen, quantitative CT of 200 normal orbits)
    Tissue.BONE: (1250.0, 300.0, 700.0, 1800.0, (40.0, 120.0)),  # cortical 700-1900 (radiology teaching pages)
    Tissue.BONE_THIN: (480.0, 120.0, 250.0, 750.0, (20.0, 60.0)),  # sub-voxel plates, partial volume
    Tissue.BONE_CANCELLOUS: (420.0, 100.0, 250.0, 650.0, (60.0, 150.0)),  # medullary ~ +300
    Tissue.TEETH: (2300.0, 250.0, 1800.0, 2900.0, (50.0, 150.0)),
    Tissue.METAL: (3071.0, 0.0, 3071.0, 3071.0, (0.0, 0.0)),
    Tissue.BRAIN: (33.0, 3.5, 24.0, 42.0, (1.5, 4.0)),  # grey 37-45 / white 20-30 (radclass.mudr.org)
    Tissue.CSF: (8.0, 4.0, 0.0, 18.0, (1.0, 3.0)),
    Tissue.SINUS_AIR: (-985.0, 12.0, -1000.0, -940.0, (2.0, 10.0)),
    Tissue.MUCOSA: (30.0, 10.0, 10.0, 50.0, (2.0, 6.0)),
    Tissue.ORBITAL_FAT: (-95.0, 10.0, -120.0, -65.0, (4.0, 12.0)),  # orbital fat -100 (higher in GO)
    Tissue.SCLERA: (55.0, 8.0, 35.0, 75.0, (1.0, 3.0)),
    Tissue.VITREOUS: (10.0, 5.0, 0.0, 22.0, (0.5, 2.0)),  # ~+10 (assumed: no human source found)
    Tissue.AQUEOUS: (11.0, 5.0, 0.0, 22.0, (0.5, 2.0)),
    Tissue.LENS: (105.0, 12.0, 80.0, 130.0, (1.0, 4.0)),  # +80..+130 (assumed: no human value read)
    Tissue.OPTIC_NERVE: (32.0, 5.0, 20.0, 45.0, (1.0, 3.0)),  # +20..+45 (assumed, like white matter or muscle)
    Tissue.NERVE_SHEATH: (22.0, 6.0, 8.0, 40.0, (1.0, 3.0)),
    Tissue.GLAND: (42.0, 8.0, 25.0, 60.0, (2.0, 5.0)),
    Tissue.VESSEL: (45.0, 6.0, 35.0, 60.0, (1.0, 3.0)),
    Tissue.HEADREST: (300.0, 150.0, 80.0, 600.0, (5.0, 30.0)),
    Tissue.CUSHION: (-780.0, 80.0, -920.0, -600.0, (5.0, 20.0)),
    Tissue.TABLE: (250.0, 100.0, 100.0, 500.0, (5.0, 30.0)),
    Tissue.MARKER: (2800.0, 150.0, 2500.0, 3071.0, (0.0, 10.0)),
}

COARSE_MM = 1.0  # sub-voxel size away from the orbits (in-plane voxels <= 1 mm are painted as they are)
FINE_MM = (0.45, 0.6)  # in-plane and slice sub-voxel size inside the orbit boxes


def draw_acquisition(rng: np.random.Generator, anatomy: Dict[str, Any], geom: Dict[str, Any]) -> Dict[str, Any]:
    """Scanner, protocol and positioning numbers of one case (always drawn in the same order)."""
    u = rng.uniform
    in_plane = float(u(0.35, 0.7) if rng.random() < 0.5 else u(0.3, 1.0))
    slice_mm = float(u(0.5, 1.5) if rng.random() < 0.5 else u(0.5, 3.0))
    pose = (float(np.clip(rng.normal(0, 6.0), -15, 15)), float(np.clip(rng.normal(0, 4.0), -12, 12)),
            float(np.clip(rng.normal(0, 5.0), -15, 15)))  # about x (pitch), y (roll), z (yaw), degrees
    head = anatomy["head"]
    g = geom["globe_mean"]
    fov = {
        "x_half": float(u(82.0, 105.0) if rng.random() < 0.8 else u(64.0, 82.0)),
        "x_shift": float(rng.normal(0.0, 4.0)),
        "y_min": float(-u(118.0, 135.0) if rng.random() < 0.85 else -u(102.0, 112.0)),
        "y_max": float(u(head["b"] + 15.0, head["b"] + 45.0) if rng.random() < 0.3 else u(g[1] + 50.0, 95.0)),
        "z_below": float(u(30.0, 70.0)),
        "z_above": float(u(30.0, 60.0)),
    }
    back = head["b"]
    radius = head["a"] + float(u(8.0, 25.0))
    headrest = None
    if rng.random() < 0.7:
        cushion = float(u(2.0, 12.0))
        center_y = back + cushion - radius
        thickness = float(u(3.0, 8.0))
        headrest = {"center_y": center_y, "radius": radius, "thickness": thickness, "cushion": bool(rng.random() < 0.6),
                    "z_range": (g[2] - 150.0, g[2] + 160.0),
                    "table_y": center_y + radius + thickness + float(u(5.0, 40.0)),
                    "table_thickness": float(u(8.0, 20.0))}
    hu = {}
    texture = {}
    for code, (mean, sd, lo, hi, (t_lo, t_hi)) in HU_RANGES.items():
        hu[code] = float(np.clip(rng.normal(mean, sd), lo, hi))
        texture[code] = float(u(t_lo, t_hi)) if t_hi > t_lo else float(t_lo)
    if anatomy["ted"]:
        hu[Tissue.ORBITAL_FAT] = min(HU_RANGES[Tissue.ORBITAL_FAT][3], hu[Tissue.ORBITAL_FAT] + float(u(0.0, 15.0)))
    return {
        "spacing": (in_plane, in_plane, slice_mm),
        "pose_deg": pose,
        "fov": fov,
        "headrest": headrest,
        "hu": hu,
        "texture": texture,
        "blur_mm": (float(u(0.3, 0.9)), float(u(0.2, 0.6))),
        "noise_hu": float(u(5.0, 35.0)),
        "noise_corr_vox": float(u(0.4, 1.0)),
        "bias_hu": float(u(0.0, 15.0)),
        "cupping_hu": float(u(0.0, 25.0)),
        "streak_hu": float(u(150.0, 600.0)),
        "recon_circle": bool(rng.random() < 0.3),
    }


def _lut(values: Dict[int, float]) -> np.ndarray:
    lut = np.zeros(256, np.float32)
    for code, v in values.items():
        lut[code] = v
    return lut


def _block_mean(a: np.ndarray, f: Sequence[int]) -> np.ndarray:
    fk, fj, fi = f
    if fk == fj == fi == 1:
        return a
    nk, nj, ni = a.shape[0] // fk, a.shape[1] // fj, a.shape[2] // fi
    return a.reshape(nk, fk, nj, fj, ni, fi).mean(axis=(1, 3, 5), dtype=np.float32)


def _block_labels(labels: np.ndarray, f: Sequence[int]) -> np.ndarray:
    """Per block the label covering the largest share of it (background included)."""
    fk, fj, fi = f
    nk, nj, ni = labels.shape[0] // fk, labels.shape[1] // fj, labels.shape[2] // fi
    out = np.zeros((nk, nj, ni), np.uint8)
    nz = np.flatnonzero(labels)
    if not len(nz):
        return out
    kk, jj, ii = np.unravel_index(nz, labels.shape)
    block = ((kk // fk) * nj + jj // fj) * ni + ii // fi
    values = labels.ravel()[nz].astype(np.int64)
    key, counts = np.unique(block * 256 + values, return_counts=True)
    blk, lab = key // 256, key % 256
    order = np.lexsort((-counts, blk))
    blk, lab, counts = blk[order], lab[order], counts[order]
    first = np.ones(len(blk), bool)
    first[1:] = blk[1:] != blk[:-1]
    totals = np.add.reduceat(counts, np.flatnonzero(first))
    best_blk, best_lab, best_cnt = blk[first], lab[first], counts[first]
    background = fk * fj * fi - totals
    # ties (exactly half of the block) alternate between label and background: no volume bias
    win = (best_cnt > background) | ((best_cnt == background) & ((best_blk % 2) == 0))
    out.ravel()[best_blk[win]] = best_lab[win]
    return out


def _factors(spacing: Sequence[float], in_plane_mm: float, slice_mm: float) -> Tuple[int, int, int]:
    """Sub-voxel counts (k, j, i) so that each sub-voxel is at most the given size."""
    si, sj, sk = spacing
    return (max(1, math.ceil(sk / slice_mm - 1e-6)), max(1, math.ceil(sj / in_plane_mm - 1e-6)),
            max(1, math.ceil(si / in_plane_mm - 1e-6)))


def _sub_canvas(grid: Dict[str, Any], lo_idx: np.ndarray, hi_idx: np.ndarray, f: Sequence[int], rotation, labels: bool
                ) -> Canvas:
    """Canvas covering output voxels lo_idx..hi_idx-1 (i, j, k), each split into f (k, j, i) sub-voxels."""
    spacing = np.asarray(grid["spacing"], float)
    direction = grid["direction"]
    f_ijk = np.array([f[2], f[1], f[0]], float)
    sub_spacing = spacing / f_ijk
    start = lo_idx - 0.5 + 0.5 / f_ijk
    origin = np.asarray(grid["origin"], float) + direction @ (spacing * start)
    n = (hi_idx - lo_idx) * f_ijk.astype(int)
    return Canvas((n[2], n[1], n[0]), sub_spacing, origin, direction, rotation, np.zeros(3), labels)


def _orbit_index_boxes(grid: Dict[str, Any], geom: Dict[str, Any], rotation: np.ndarray, which: str = "label_box"):
    """Output-index ranges (i, j, k) holding each orbit's labelled structures (for the fine pass)."""
    spacing = np.asarray(grid["spacing"], float)
    to_idx = np.linalg.inv(grid["direction"] @ np.diag(spacing))
    size = np.array(grid["shape"][::-1])
    boxes = []
    for sg in geom["sides"].values():
        lo, hi = getattr(sg, which)
        corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
        lps = (rotation @ to_anat(sg.sign, corners).T).T
        ijk = (to_idx @ (lps - np.asarray(grid["origin"])).T).T
        first = np.clip(np.floor(ijk.min(axis=0)).astype(int), 0, size)
        last = np.clip(np.ceil(ijk.max(axis=0)).astype(int) + 1, 0, size)
        if np.all(last > first):
            boxes.append((first, last))
    return boxes


def render_case(anatomy: Dict[str, Any], geom: Dict[str, Any], acq: Dict[str, Any], grid: Dict[str, Any],
                rng: np.random.Generator, noise: bool = True, artefacts: bool = True,
                fine_mm: Tuple[float, float] = FINE_MM) -> Dict[str, Any]:
    """Image (int16 HU), labels and tissue map on ``grid`` (dict: shape kji, spacing, origin, direction)."""
    rotation = rotation_matrix_deg(acq["pose_deg"])
    shape = tuple(grid["shape"])
    spacing = grid["spacing"]
    hu_lut, tex_lut = _lut(acq["hu"]), _lut(acq["texture"])
    full_lo, full_hi = np.zeros(3, int), np.array(shape[::-1])
    f_c = _factors(spacing, COARSE_MM, COARSE_MM)
    coarse = _sub_canvas(grid, full_lo, full_hi, f_c, rotation, labels=False)
    paint_scene(coarse, anatomy, geom, acq, orbits=True)
    hu = _block_mean(hu_lut[coarse.tissue], f_c)
    amp = _block_mean(tex_lut[coarse.tissue], f_c)
    tissues = coarse.tissue[f_c[0] // 2 :: f_c[0], f_c[1] // 2 :: f_c[1], f_c[2] // 2 :: f_c[2]].copy()
    del coarse
    labels = np.zeros(shape, np.uint8)
    fine_counts = np.zeros(11, np.int64)
    f_f = _factors(spacing, fine_mm[0], fine_mm[1])
    sub_volume = float(np.prod(spacing)) / float(np.prod(f_f))
    for lo, hi in _orbit_index_boxes(grid, geom, rotation):
        fine = _sub_canvas(grid, lo, hi, f_f, rotation, labels=True)
        paint_scene(fine, anatomy, geom, acq, orbits=True)
        sl = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
        hu[sl] = _block_mean(hu_lut[fine.tissue], f_f)
        amp[sl] = _block_mean(tex_lut[fine.tissue], f_f)
        tissues[sl] = fine.tissue[f_f[0] // 2 :: f_f[0], f_f[1] // 2 :: f_f[1], f_f[2] // 2 :: f_f[2]]
        assert fine.labels is not None  # made with labels=True
        labels[sl] = np.maximum(labels[sl], _block_labels(fine.labels, f_f))
        fine_counts += np.bincount(fine.labels.ravel(), minlength=11)[:11]
    image = _appearance(hu, amp, tissues, grid, acq, rotation, anatomy, geom, rng, noise, artefacts)
    return {"image": image, "labels": labels, "tissues": tissues, "factors": {"coarse": f_c, "fine": f_f},
            "fine_volumes_mm3": {v: float(fine_counts[v]) * sub_volume for v in range(1, 11)}}


def _smooth_field(rng: np.random.Generator, shape: Sequence[int], spacing_kji: Sequence[float],
                  cell_mm: float) -> np.ndarray:
    """Unit-SD random field varying over ~cell_mm: random lattice values interpolated to ``shape``."""
    lattice = [max(2, int(math.ceil(n * s / cell_mm)) + 1) for n, s in zip(shape, spacing_kji)]
    field = upsample(rng.standard_normal(lattice).astype(np.float32), shape)
    sd = float(field[::4, ::4, ::4].std())
    return field * np.float32(1.0 / (sd if sd > 0 else 1.0))


def _appearance(hu, amp, tissues, grid, acq, rotation, anatomy, geom, rng, noise: bool, artefacts: bool):
    shape = hu.shape
    si, sj, sk = grid["spacing"]
    spacing_kji = (sk, sj, si)
    image = hu + amp * _smooth_field(rng, shape, spacing_kji, 2.5)
    b_in, b_z = acq["blur_mm"]
    sigma = [b_z / sk, b_in / sj, b_in / si]
    sigma = [s if s >= 0.25 else 0.0 for s in sigma]
    if any(sigma):
        image = ndimage.gaussian_filter(image, sigma, truncate=2.5)
    body = np.clip((image + 800.0) / 600.0, 0.0, 1.0)
    if artefacts:
        bias = np.float32(acq["bias_hu"]) * _smooth_field(rng, shape, spacing_kji, 60.0)
        canvas = Canvas(shape, grid["spacing"], grid["origin"], grid["direction"], np.eye(3), np.zeros(3), False)
        reg = canvas.coords((-1e4, -1e4, -1e4), (1e4, 1e4, 1e4), frame="scanner")
        _, (x, y, _z), _ = reg
        rho2 = (x * x + (y - np.float32(10.0)) ** 2) / np.float32(85.0**2)
        cup = -np.float32(acq["cupping_hu"]) * np.clip(1.0 - rho2, 0.0, 1.0)  # beam-hardening cupping
        image = image + body * (bias + cup)
        image = _add_streaks(image, grid, acq, rotation, anatomy, rng)
    if noise and acq["noise_hu"] > 0:
        white = rng.standard_normal(shape, dtype=np.float32)
        c = acq["noise_corr_vox"]
        white = ndimage.gaussian_filter(white, [0.0, c, c], truncate=2.0)
        white *= np.float32(acq["noise_hu"] / max(float(white.std()), 1e-6))
        image = image + white
    if artefacts and acq["recon_circle"]:
        k, j, i = (np.arange(n, dtype=np.float32) for n in shape)
        cj, ci = (shape[1] - 1) / 2, (shape[2] - 1) / 2
        r = 0.5 * max(shape[1] * sj, shape[2] * si)
        outside = ((j[:, None] - cj) * sj) ** 2 + ((i[None, :] - ci) * si) ** 2 > r * r
        image[:, outside] = -1024.0
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16)


def _add_streaks(image, grid, acq, rotation, anatomy, rng) -> np.ndarray:
    """Bright and dark streaks radiating from each metal filling within the axial slices that hold it."""
    fillings = anatomy["teeth"]["fillings"] if anatomy["teeth"]["present"] else []
    if not fillings:
        return image
    si, sj, sk = grid["spacing"]
    to_idx = np.linalg.inv(grid["direction"] @ np.diag(grid["spacing"]))
    nk, nj, ni = image.shape
    jj = (np.arange(nj, dtype=np.float32) * np.float32(sj))[:, None]
    ii = (np.arange(ni, dtype=np.float32) * np.float32(si))[None, :]
    ay, zt = anatomy["teeth"]["arch_y"], anatomy["teeth"]["z"]
    for fx, fr in fillings:
        lps = rotation @ np.array([fx, ay + 0.045 * fx * fx, zt + 2.0])
        i0, j0, k0 = to_idx @ (lps - np.asarray(grid["origin"]))
        reach = fr + 2.0 * sk
        ks = [k for k in range(int(math.floor(k0 - reach / sk)), int(math.ceil(k0 + reach / sk)) + 1) if 0 <= k < nk]
        if not ks:
            continue
        n_lines = int(rng.integers(6, 16))
        angles = rng.uniform(0.0, math.pi, n_lines).astype(np.float32)
        widths = np.radians(rng.uniform(0.6, 3.0, n_lines)).astype(np.float32)
        signs = rng.choice([-1.0, 1.0], n_lines, p=[0.55, 0.45]).astype(np.float32)
        dj, di = jj - np.float32(j0 * sj), ii - np.float32(i0 * si)
        theta = np.arctan2(dj, di) % np.float32(math.pi)
        dist = np.sqrt(dj * dj + di * di)
        pattern = np.zeros((nj, ni), np.float32)
        for a, w, s in zip(angles, widths, signs):
            d = (theta - a + np.float32(math.pi / 2)) % np.float32(math.pi) - np.float32(math.pi / 2)
            pattern += s * np.exp(-0.5 * (d / w) ** 2)
        pattern *= np.float32(acq["streak_hu"]) * (np.float32(10.0) / (np.float32(10.0) + dist))
        for k in ks:
            weight = math.exp(-0.5 * ((k - k0) * sk / max(fr + 0.5 * sk, 0.5)) ** 2)
            image[k] += np.float32(weight) * pattern
    return image


def choose_grid(acq: Dict[str, Any], anatomy: Dict[str, Any], geom: Dict[str, Any], spacing: Optional[Sequence[float]],
                direction: Optional[np.ndarray], extent_mm: Optional[Sequence[float]], center_lps: Optional[Sequence[float]],
                max_voxels: float) -> Dict[str, Any]:
    """The image grid: drawn field of view (cut anywhere, both orbits in view) unless given."""
    rotation = rotation_matrix_deg(acq["pose_deg"])
    spacing_drawn = spacing is None
    spacing = tuple(float(s) for s in (spacing if spacing is not None else acq["spacing"]))
    direction = np.eye(3) if direction is None else np.asarray(direction, float).reshape(3, 3)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-6):
        raise ValueError("direction must be an orthonormal 3x3 matrix (columns = i, j, k axes in LPS).")
    g = geom["globe_mean"]
    globes = [rotation @ to_anat(sg.sign, sg.g) for sg in geom["sides"].values()]
    gz = float(np.mean([p[2] for p in globes]))
    if extent_mm is None:
        fov = acq["fov"]
        lo = np.array([-fov["x_half"] + fov["x_shift"], fov["y_min"], gz - fov["z_below"]])
        hi = np.array([fov["x_half"] + fov["x_shift"], fov["y_max"], gz + fov["z_above"]])
        # keep both orbit boxes in view
        for sg in geom["sides"].values():
            blo, bhi = sg.box
            corners = np.array([[a, b, c] for a in (blo[0], bhi[0]) for b in (blo[1], bhi[1]) for c in (blo[2], bhi[2])])
            lps = (rotation @ to_anat(sg.sign, corners).T).T
            lo = np.minimum(lo, lps.min(axis=0) - 3.0)
            hi = np.maximum(hi, lps.max(axis=0) + 3.0)
        voxel = float(np.prod(spacing))
        min_y = max(float(np.max([p[1] for p in globes])) + 50.0, lo[1] + 1.0)
        while np.prod(hi - lo) / voxel > max_voxels:
            if hi[1] > min_y + 5:
                hi[1] = max(min_y, hi[1] - 10.0)
            elif hi[2] - lo[2] > 70.0:
                lo[2] += 2.5
                hi[2] -= 2.5
            elif hi[0] - lo[0] > 140.0:
                lo[0] += 2.5
                hi[0] -= 2.5
            else:
                break
        if spacing_drawn and np.prod(hi - lo) / voxel > max_voxels:
            # the finest drawn grids over the smallest field: coarsen in-plane to stay within the cap
            grow = math.sqrt(np.prod(hi - lo) / voxel / max_voxels)
            spacing = (min(1.0, spacing[0] * grow), min(1.0, spacing[1] * grow), spacing[2])
        extent = hi - lo
        center = (lo + hi) / 2
    else:
        extent = np.asarray(extent_mm, float)
        center = np.asarray(center_lps if center_lps is not None else (0.0, g[1] + 35.0, gz), float)
    size_ijk = np.maximum(1, np.round(extent / np.asarray(spacing)).astype(int))
    half = (size_ijk - 1) * np.asarray(spacing) / 2
    origin = center - direction @ half
    return {"shape": (int(size_ijk[2]), int(size_ijk[1]), int(size_ijk[0])), "spacing": spacing,
            "origin": tuple(float(o) for o in origin), "direction": direction}
