"""The SV-net paper's augmentation: translation, rotation and Gaussian noise, applied to model-grid crops.

Everything random comes from a ``torch.Generator`` passed in, so a sample is a pure function of its seed
(see ``training.data.sample_seed``): runs repeat exactly, and a resumed run draws what the uninterrupted
run would have drawn. Image and labels go through one affine transform (linear interpolation for the
image, nearest neighbour for labels), so they never drift apart.

Left-right mirroring is off by default: left orbits are already mirrored to look like right ones, and a
flip would swap the medial and lateral recti. A recipe whose classes have no side (the head-and-neck
recipe trains one ``parotid`` class and splits it by side after inference) may turn it on with
``mirror_probability``; the engine refuses it for sided classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

__all__ = ["AugmentOptions", "random_affine_kji", "apply_affine", "augment_pair", "thick_slices"]


@dataclass
class AugmentOptions:
    """``translate_vox`` (k, j, i) maximum shift in voxels; ``rotate_deg`` maximum in-plane rotation
    (about the slice axis, where head tilt in the scanner varies most); ``noise_std`` Gaussian noise in
    normalised intensity units; ``probability`` of augmenting a sample at all; ``scale`` maximum relative
    zoom (0.1: 0.9-1.1, patients differ in size); ``intensity_scale`` / ``intensity_shift`` maximum
    contrast factor and offset (normalised units; scanners and reconstructions differ);
    ``slice_thickness`` the thickest slices (in model-grid voxels along k) that a sample may be re-imaged
    with, drawn between 1 and it for a share ``slice_probability`` of the samples (SynthSeg's resolution
    randomisation: a 3 mm scan resampled to the 1 mm model grid is blurred and stepped along k, and the
    labels stay sharp, so the network learns to recover them). The last four default to 0 (off), and
    draw no random numbers then, so older recipes repeat exactly. ``mirror_probability`` flips a share of
    the samples along i (patient left-right); ``gamma`` is the largest |log gamma| of a contrast curve
    applied between the sample's minimum and maximum (nnU-Net's gamma augmentation). Both default to 0
    and then draw nothing either. ``thicken_probability`` thickens one muscle of ``thicken_classes`` (model
    classes) of a share of the samples by 1 to ``thicken_voxels`` voxels in the slice plane, into the
    darker tissue around it (fat), painting the new voxels with the muscle's own intensity and spread and
    labelling them: what thyroid eye disease does, so that a model learns to follow a muscle's edge
    instead of its usual shape. Off (0) by default, drawing nothing."""

    enabled: bool = True
    translate_vox: Tuple[float, float, float] = (2.0, 8.0, 8.0)
    rotate_deg: float = 10.0
    noise_std: float = 0.03
    probability: float = 0.8
    scale: float = 0.0
    intensity_scale: float = 0.0
    intensity_shift: float = 0.0
    slice_thickness: float = 0.0
    slice_probability: float = 0.5
    mirror_probability: float = 0.0
    gamma: float = 0.0
    thicken_probability: float = 0.0
    thicken_voxels: int = 2
    thicken_classes: Tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, spec: Optional[dict]) -> AugmentOptions:
        spec = dict(spec or {})
        known = {"enabled", "translate_vox", "rotate_deg", "noise_std", "probability", "scale", "intensity_scale",
                 "intensity_shift", "slice_thickness", "slice_probability", "mirror_probability", "gamma", "thicken_probability", "thicken_voxels",
                 "thicken_classes"}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ValueError(f"Unknown augmentation option(s) {unknown}; known: {sorted(known)}.")
        if "translate_vox" in spec:
            spec["translate_vox"] = tuple(float(v) for v in spec["translate_vox"])
            if len(spec["translate_vox"]) != 3:
                raise ValueError("augment.translate_vox needs three values (k, j, i).")
        if "thicken_classes" in spec:
            spec["thicken_classes"] = tuple(int(c) for c in spec["thicken_classes"])
        return cls(**spec)


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return float(low + (high - low) * torch.rand((), generator=generator).item())


def random_affine_kji(shape: Sequence[int], options: AugmentOptions, generator: torch.Generator) -> torch.Tensor:
    """A 4x4 matrix mapping output voxel (i, j, k, 1) to input voxel coordinates: a rotation about the
    volume centre in the (i, j) plane followed by a translation."""
    k, j, i = (int(n) for n in shape)
    angle = math.radians(_uniform(generator, -options.rotate_deg, options.rotate_deg))
    tk, tj, ti = (_uniform(generator, -t, t) for t in options.translate_vox)
    centre = torch.tensor([(i - 1) / 2.0, (j - 1) / 2.0, (k - 1) / 2.0], dtype=torch.float64)
    c, s = math.cos(angle), math.sin(angle)
    rotation = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    if options.scale > 0:  # output -> input: a factor > 1 samples a wider region (the anatomy shrinks)
        rotation = rotation * _uniform(generator, 1.0 - options.scale, 1.0 + options.scale)
    matrix = torch.eye(4, dtype=torch.float64)
    matrix[:3, :3] = rotation
    matrix[:3, 3] = centre - rotation @ centre + torch.tensor([ti, tj, tk], dtype=torch.float64)
    return matrix


def apply_affine(volume: torch.Tensor, matrix: torch.Tensor, mode: str, padding_value: float = 0.0) -> torch.Tensor:
    """Resample ``volume`` ``[C, k, j, i]`` with the voxel-space ``matrix`` (output -> input voxel)."""
    channels, k, j, i = volume.shape
    sizes = torch.tensor([i, j, k], dtype=torch.float64)
    # grid_sample's normalised coordinates (align_corners=True): x_n = 2 x / (n - 1) - 1.
    to_norm = torch.eye(4, dtype=torch.float64)
    to_norm[:3, :3] = torch.diag(2.0 / (sizes - 1).clamp(min=1))
    to_norm[:3, 3] = -1.0
    theta = (to_norm @ matrix @ torch.linalg.inv(to_norm))[:3].to(torch.float32)
    grid = F.affine_grid(theta[None], [1, channels, k, j, i], align_corners=True)
    shifted = volume[None].float() - padding_value  # grid_sample pads with zeros
    out = F.grid_sample(shifted, grid, mode=mode, padding_mode="zeros", align_corners=True)
    return out[0] + padding_value


def thick_slices(image: torch.Tensor, thickness_vox: float) -> torch.Tensor:
    """``image`` ``[C, k, j, i]`` as a scan with slices ``thickness_vox`` voxels thick and as far apart
    would look after resampling back to this grid: each slice the mean over its thickness (partial
    volume), then linear interpolation between slice centres."""
    channels, k, j, i = image.shape
    slices = max(2, int(round(k / thickness_vox)))
    if slices >= k:
        return image
    coarse = F.interpolate(image[None].float(), size=(slices, j, i), mode="area")
    return F.interpolate(coarse, size=(k, j, i), mode="trilinear", align_corners=False)[0].to(image.dtype)


def _gamma(image: torch.Tensor, gamma: float) -> torch.Tensor:
    """The intensities raised to ``gamma`` between the image's own minimum and maximum, which stay put."""
    low, high = float(image.min()), float(image.max())
    if high - low < 1e-6:
        return image
    unit = ((image - low) / (high - low)).clamp(0.0, 1.0)
    return unit.pow(gamma) * (high - low) + low


#: A voxel may become muscle only where it is darker than the muscle by at least this much (normalised
#: units; 0.15 of a 400 HU window is 60 HU, orbital fat lying some 140 HU below muscle) and brighter
#: than this (air and the padding outside the field stay what they are).
THICKEN_DARKER_BY = 0.15
THICKEN_FLOOR = 0.05


def thicken(image: torch.Tensor, labels: torch.Tensor, value: int, voxels: int,
            generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Class ``value`` grown by ``voxels`` in the slice plane (k untouched) into darker, unlabelled
    tissue, the new voxels drawn from the muscle's own intensity distribution (median and spread)."""
    muscle = labels == value
    if not bool(muscle.any()) or voxels < 1:
        return image, labels
    grown = muscle[None, None].float()
    for _ in range(voxels):
        grown = F.max_pool3d(grown, kernel_size=(1, 3, 3), stride=1, padding=(0, 1, 1))
    inside = image[0][muscle]
    level, spread = float(inside.median()), float(inside.std()) if inside.numel() > 1 else 0.0
    new = (grown[0, 0] > 0) & ~muscle & (labels == 0) & (image[0] < level - THICKEN_DARKER_BY) \
        & (image[0] > THICKEN_FLOOR)
    if not bool(new.any()):
        return image, labels
    image, labels = image.clone(), labels.clone()
    noise = torch.randn(int(new.sum()), generator=generator) * spread
    image[0][new] = (level + noise).to(image.dtype)
    labels[new] = value
    return image, labels


def augment_pair(image: torch.Tensor, labels: torch.Tensor, options: AugmentOptions,
                 generator: torch.Generator) -> Tuple[torch.Tensor, torch.Tensor]:
    """Augment a normalised image ``[C, k, j, i]`` and its integer labels ``[k, j, i]`` together.

    Outside the original field of view the image takes its minimum (air after normalisation) and the
    labels background."""
    if not options.enabled or torch.rand((), generator=generator).item() >= options.probability:
        return image, labels
    if options.mirror_probability > 0 and torch.rand((), generator=generator).item() < options.mirror_probability:
        image, labels = image.flip(-1), labels.flip(-1)
    if options.thicken_probability > 0 and options.thicken_classes \
            and torch.rand((), generator=generator).item() < options.thicken_probability:
        pick = int(torch.randint(len(options.thicken_classes), (), generator=generator))
        amount = int(torch.randint(1, max(1, options.thicken_voxels) + 1, (), generator=generator))
        image, labels = thicken(image, labels, options.thicken_classes[pick], amount, generator)
    matrix = random_affine_kji(image.shape[1:], options, generator)
    floor = float(image.min())
    image = apply_affine(image, matrix, "bilinear", padding_value=floor)
    labels = apply_affine(labels[None].to(torch.float32), matrix, "nearest")[0].round().to(labels.dtype)
    if options.slice_thickness > 1.0 and torch.rand((), generator=generator).item() < options.slice_probability:
        image = thick_slices(image, _uniform(generator, 1.0, options.slice_thickness))
    if options.intensity_scale > 0 or options.intensity_shift > 0:
        factor = _uniform(generator, 1.0 - options.intensity_scale, 1.0 + options.intensity_scale)
        shift = _uniform(generator, -options.intensity_shift, options.intensity_shift)
        image = (image - floor) * factor + floor + shift
    if options.gamma > 0:
        image = _gamma(image, math.exp(_uniform(generator, -options.gamma, options.gamma)))
    if options.noise_std > 0:
        image = image + options.noise_std * torch.randn(image.shape, generator=generator)
    return image, labels
