"""From loaded cases to training samples: model-grid items, random windows and batches.

An *item* is one model input with its labels: one orbit crop (per side, left mirrored) for ``orbit``
models, one whole resampled volume for ``han`` models. Items are made by the same functions that
inference uses (``headseg.preprocessing``), so a model is trained on what it will see.

A *sample* is a training window cut from an item and augmented. Its randomness is a pure function of
``(run seed, epoch, position in the epoch)`` (:func:`sample_seed`), which makes runs repeatable and a
resumed run draw exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .augment import AugmentOptions, augment_pair

__all__ = ["Item", "make_items", "sample_seed", "epoch_order", "SampleSource", "collate"]

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One model-grid input: normalised image ``[k, j, i]`` float32, model classes ``[k, j, i]`` uint8,
    class mask ``[C]`` (1 = annotated), plus where it came from."""

    case: str
    side: str
    image: np.ndarray
    labels: np.ndarray
    class_mask: np.ndarray
    grid: Any = None  # headseg Volume (geometry of the model grid)
    spacing_kji: Tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def name(self) -> str:
        return f"{self.case}/{self.side}" if self.side else self.case


def make_items(loaded_case, card: Dict[str, Any], crop_source: str = "locate") -> List[Item]:
    """Model-grid items of one :class:`training.datasets.LoadedCase` for the model ``card``.

    Orbit crops are placed by ``crop_source``: ``"locate"`` the automatic localiser (what inference
    does), ``"labels"`` a region around the labelled structures, ``"auto"`` the localiser and, where it
    fails on a training case, the labels (logged), so one hard case does not cost its labels."""
    from headseg.errors import InputError
    from headseg.preprocessing import normalize, orbit_label_crops, whole_volume_labelled

    if crop_source not in ("locate", "labels", "auto"):
        raise ValueError(f"data.crop_source must be 'locate', 'labels' or 'auto', got {crop_source!r}.")
    case = loaded_case
    if card["task"] == "orbit":
        roi = _roi_from_labels(case.labels) if crop_source == "labels" else None
        try:
            crops = orbit_label_crops(case.image, case.labels, card, annotated=case.annotated, roi=roi)
        except InputError as exc:
            if crop_source != "auto":
                raise
            log.warning("%s: %s -- placing the orbit crops from the labels instead.", case.record.case, exc)
            crops = orbit_label_crops(case.image, case.labels, card, annotated=case.annotated,
                                      roi=_roi_from_labels(case.labels))
    else:
        crops = [whole_volume_labelled(case.image, case.labels, card, annotated=case.annotated)]
    items = []
    for crop in crops:
        image = normalize(crop.image.array, card["input"]["normalization"]).astype(np.float32)
        items.append(Item(case.record.case, crop.side, image, np.ascontiguousarray(crop.labels.array, np.uint8),
                          crop.annotated.astype(np.float32), crop.image, crop.image.spacing_kji))
    return items


def _roi_from_labels(labels) -> Tuple[List[float], List[float]]:
    """(centre, size) in LPS mm of the box around all labelled voxels, 10 mm margin."""
    idx = np.argwhere(labels.array > 0)
    if idx.size == 0:
        raise ValueError("The label map is empty; cannot place the orbit crop from the labels.")
    lo, hi = idx.min(axis=0)[::-1], idx.max(axis=0)[::-1]  # (i, j, k)
    corners = np.array([labels.index_to_lps(c) for c in (lo, hi)])
    centre = corners.mean(axis=0)
    size = np.abs(corners[1] - corners[0]) + 20.0
    return centre.tolist(), size.tolist()


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """A 63-bit seed from (run seed, epoch, position); stable across Python versions and platforms."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{position}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def epoch_order(n_items: int, samples: int, seed: int, epoch: int) -> List[int]:
    """Which item each of the epoch's ``samples`` draws from: shuffled passes over all items."""
    generator = torch.Generator().manual_seed(sample_seed(seed, epoch, -1))
    order: List[int] = []
    while len(order) < samples:
        order += torch.randperm(n_items, generator=generator).tolist()
    return order[:samples]


class SampleSource:
    """Cuts training windows from items: ``window_kji`` (None = the whole item), preferring windows that
    contain labelled voxels with probability ``foreground_fraction``, then augments them."""

    def __init__(self, items: Sequence[Item], window_kji: Optional[Sequence[int]], augment: AugmentOptions,
                 foreground_fraction: float = 0.9, max_voxels: Optional[int] = None,
                 fallback_patch_kji: Optional[Sequence[int]] = None) -> None:
        if not items:
            raise ValueError("No training items: every training case failed to load or preprocess.")
        self.items = list(items)
        self.window = None if window_kji is None else tuple(int(w) for w in window_kji)
        self.augment = augment
        self.foreground_fraction = float(foreground_fraction)
        self.max_voxels = max_voxels
        self.fallback_patch = None if fallback_patch_kji is None else tuple(int(w) for w in fallback_patch_kji)
        self._foreground = [np.flatnonzero(it.labels.reshape(it.labels.shape[0], -1).any(axis=1)) for it in items]

    def __len__(self) -> int:
        return len(self.items)

    def _window_start(self, length: int, window: int, centre_choices: np.ndarray, generator) -> int:
        if length <= window:
            return 0
        use_fg = centre_choices.size and torch.rand((), generator=generator).item() < self.foreground_fraction
        if use_fg:
            centre = int(centre_choices[torch.randint(centre_choices.size, (), generator=generator).item()])
            start = centre - window // 2 + int(torch.randint(-(window // 4), window // 4 + 1, (), generator=generator))
        else:
            start = int(torch.randint(0, length - window + 1, (), generator=generator))
        return int(np.clip(start, 0, length - window))

    def sample(self, index: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image ``[1, k, j, i]``, labels ``[k, j, i]`` int64, class mask ``[C]``) of item ``index``."""
        generator = torch.Generator().manual_seed(seed)
        item = self.items[index]
        image, labels = item.image, item.labels
        window = self.window
        if window is None and self.max_voxels and image.size > self.max_voxels and self.fallback_patch:
            window = self.fallback_patch  # a whole volume too big for memory: a large random patch
        if window is not None:
            starts = []
            for axis, w in enumerate(window):
                choices = self._foreground[index] if axis == 0 else np.empty(0, np.int64)
                starts.append(self._window_start(image.shape[axis], w, choices, generator))
            region = tuple(slice(s, s + w) for s, w in zip(starts, window))
            image, labels = image[region], labels[region]
            image, labels = _pad_to(image, labels, window)
        image_t = torch.from_numpy(np.ascontiguousarray(image))[None]
        labels_t = torch.from_numpy(np.ascontiguousarray(labels)).to(torch.int64)
        image_t, labels_t = augment_pair(image_t, labels_t, self.augment, generator)
        return image_t.contiguous(), labels_t.contiguous(), torch.from_numpy(item.class_mask.copy())


def _pad_to(image: np.ndarray, labels: np.ndarray, window: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Pad an item smaller than the window (image with its minimum = air, labels with background)."""
    pads = [(0, max(0, w - n)) for w, n in zip(window, image.shape)]
    if not any(p[1] for p in pads):
        return image, labels
    return (np.pad(image, pads, constant_values=float(image.min())), np.pad(labels, pads, constant_values=0))


def collate(samples: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]):
    """Stack samples into a batch (all windows of a batch have one size)."""
    images, labels, masks = zip(*samples)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise ValueError(f"Samples of one batch differ in size {sorted(shapes)}; use batch_size 1 for whole "
                         "volumes of different sizes, or set data.patch_kji.")
    return torch.stack(images), torch.stack(labels), torch.stack(masks)
