"""From loaded cases to training samples: model-grid items, random windows and batches.

An *item* is one model input with its labels: one orbit crop (per side, left mirrored) for ``orbit``
models, one whole resampled volume for ``han`` models. Items are made by the same functions that
inference uses (``headseg.segment.preprocessing``), so a model is trained on what it will see.

A *sample* is a training window cut from an item and augmented. Its randomness is a pure function of
``(run seed, epoch, position in the epoch)`` (:func:`sample_seed`), which makes runs repeatable and a
resumed run draw exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from headseg.segment.model_card import ModelCard

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
    output_labels: Optional[np.ndarray] = None  # side-split cards: labels as output classes (validation)
    output_mask: Optional[np.ndarray] = None

    @property
    def name(self) -> str:
        return f"{self.case}/{self.side}" if self.side else self.case


def make_items(loaded_case, card: ModelCard, crop_source: str = "locate") -> List[Item]:
    """Model-grid items of one :class:`training.datasets.LoadedCase` for the model ``card``.

    Orbit crops are placed by ``crop_source``: ``"locate"`` the automatic localiser (what inference
    does), ``"labels"`` a region around the labelled structures, ``"auto"`` the localiser and, where it
    fails on a training case, the labels (logged), so one hard case does not cost its labels."""
    from headseg.errors import InputError
    from headseg.segment.preprocessing import normalize, orbit_label_crops, whole_volume_labelled

    if crop_source not in ("locate", "labels", "auto"):
        raise ValueError(f"data.crop_source must be 'locate', 'labels' or 'auto', got {crop_source!r}.")
    case = loaded_case
    if card.is_orbit:
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
        image = normalize(crop.image.array, card.input.normalization).astype(np.float32)
        out_labels = None if crop.output_labels is None else np.ascontiguousarray(crop.output_labels.array, np.uint8)
        out_mask = None if crop.output_annotated is None else crop.output_annotated.astype(np.float32)
        items.append(Item(case.record.case, crop.side, image, np.ascontiguousarray(crop.labels.array, np.uint8),
                          crop.annotated.astype(np.float32), crop.image, crop.image.spacing_kji,
                          out_labels, out_mask))
    return items


# -- the on-disk item cache ----------------------------------------------------------------------------
CACHE_VERSION = 1


def cache_key(record, card: ModelCard, crop_source: str) -> str:
    """What an item depends on: the card's preprocessing and classes, the files (path, size, mtime) and
    which structures count. Any change gives a new key, so a stale cache is never read."""
    files = []
    for path in (record.image, record.segmentation):
        stat = Path(path).stat()
        files.append([str(Path(path).resolve()), stat.st_size, int(stat.st_mtime)])
    document = card.to_dict()  # the card's own entries, as written: a key does not change with the code
    spec = {"version": CACHE_VERSION, "input": document["input"], "classes": document["classes"], "task": card.task,
            "label_set": card.label_set, "side_split": document.get("side_split"), "crop_source": crop_source,
            "files": files, "annotated": record.annotated, "excluded": list(record.excluded)}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:20]


def save_items(folder: Path, key: str, items: Sequence[Item]) -> None:
    """Write items as ``.npy`` arrays (image float16, labels uint8) and one JSON; atomic per file set."""
    folder.mkdir(parents=True, exist_ok=True)
    meta = []
    for n, item in enumerate(items):
        arrays = {"image": item.image.astype(np.float16), "labels": item.labels}
        if item.output_labels is not None:
            arrays["output_labels"] = item.output_labels
        for name, array in arrays.items():
            tmp = folder / f"{key}_{n}.{name}.{os.getpid()}.tmp.npy"  # torchrun ranks may write the same key
            np.save(tmp, np.ascontiguousarray(array))
            os.replace(tmp, folder / f"{key}_{n}.{name}.npy")
        grid = item.grid
        meta.append({"case": item.case, "side": item.side, "class_mask": item.class_mask.tolist(),
                     "output_mask": None if item.output_mask is None else item.output_mask.tolist(),
                     "arrays": sorted(arrays), "spacing": list(grid.spacing), "origin": list(grid.origin),
                     "direction": np.asarray(grid.direction).ravel().tolist()})
    tmp = folder / f"{key}.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(meta), encoding="utf-8")
    os.replace(tmp, folder / f"{key}.json")


def load_cached_items(folder: Path, key: str) -> Optional[List[Item]]:
    """Items saved by :func:`save_items`, memory-mapped (None when the key is not cached)."""
    from headseg.geometry import Volume

    path = folder / f"{key}.json"
    if not path.is_file():
        return None
    items = []
    for n, meta in enumerate(json.loads(path.read_text(encoding="utf-8"))):
        arrays = {name: np.load(folder / f"{key}_{n}.{name}.npy", mmap_mode="r") for name in meta["arrays"]}
        grid = Volume(arrays["image"], meta["spacing"], meta["origin"], np.reshape(meta["direction"], (3, 3)))
        out_mask = meta.get("output_mask")
        items.append(Item(meta["case"], meta["side"], arrays["image"], arrays["labels"],
                          np.asarray(meta["class_mask"], np.float32), grid, grid.spacing_kji,
                          arrays.get("output_labels"), None if out_mask is None else np.asarray(out_mask, np.float32)))
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
    """Cuts training windows from items: ``window_kji`` (None = the whole item), then augments them.

    ``sampling`` chooses where windows lie:

    * ``"slices"``: with probability ``foreground_fraction`` the window's slices hold labelled voxels
      (in-plane position random); what the orbit crops need, whose in-plane size is the window's.
    * ``"class_balanced"`` (nnU-Net's foreground oversampling, per class): with probability
      ``foreground_fraction`` a structure is drawn uniformly among those annotated anywhere, then a case
      that has it, then one of its voxels, and the window is centred there (+- a quarter window); so a
      rare organ (oesophagus in 59 of 170 OpenKBP cases) is drawn as often as a common one. Otherwise the
      window lies anywhere in item ``index``.
    """

    def __init__(self, items: Sequence[Item], window_kji: Optional[Sequence[int]], augment: AugmentOptions,
                 foreground_fraction: float = 0.9, max_voxels: Optional[int] = None,
                 fallback_patch_kji: Optional[Sequence[int]] = None, sampling: str = "slices",
                 voxels_per_class: int = 4000) -> None:
        if not items:
            raise ValueError("No training items: every training case failed to load or preprocess.")
        if sampling not in ("slices", "class_balanced"):
            raise ValueError(f"data.sampling must be 'slices' or 'class_balanced', got {sampling!r}.")
        self.items = list(items)
        self.window = None if window_kji is None else tuple(int(w) for w in window_kji)
        self.augment = augment
        self.foreground_fraction = float(foreground_fraction)
        self.max_voxels = max_voxels
        self.fallback_patch = None if fallback_patch_kji is None else tuple(int(w) for w in fallback_patch_kji)
        self.sampling = sampling
        if sampling == "slices":
            self._foreground = [np.flatnonzero(np.asarray(it.labels).reshape(it.labels.shape[0], -1).any(axis=1))
                                for it in self.items]
        else:
            self._by_class = self._class_voxels(voxels_per_class)

    def _class_voxels(self, limit: int) -> Dict[int, List[Tuple[int, np.ndarray]]]:
        """class -> [(item index, flat voxel indices of that class, at most ``limit``, evenly thinned)]."""
        by_class: Dict[int, List[Tuple[int, np.ndarray]]] = {}
        for n, item in enumerate(self.items):
            flat = np.asarray(item.labels).reshape(-1)
            present = np.bincount(flat, minlength=len(item.class_mask))
            for c in range(1, len(item.class_mask)):
                if item.class_mask[c] <= 0 or present[c] == 0:
                    continue
                where = np.flatnonzero(flat == c)
                if where.size > limit:
                    where = where[np.linspace(0, where.size - 1, limit).astype(np.int64)]
                by_class.setdefault(c, []).append((n, where.astype(np.int64)))
        return by_class

    def __len__(self) -> int:
        return len(self.items)

    def _window_start(self, length: int, window: int, centre_choices: np.ndarray, generator) -> int:
        if length <= window:
            return 0
        use_fg = centre_choices.size and torch.rand((), generator=generator).item() < self.foreground_fraction
        if use_fg:
            centre = int(centre_choices[int(torch.randint(centre_choices.size, (), generator=generator))])
            start = centre - window // 2 + int(torch.randint(-(window // 4), window // 4 + 1, (), generator=generator))
        else:
            start = int(torch.randint(0, length - window + 1, (), generator=generator))
        return int(np.clip(start, 0, length - window))

    def _balanced_region(self, index: int, window: Tuple[int, ...], generator) -> Tuple[int, List[int]]:
        """(item index, window start per axis) for ``class_balanced`` sampling."""
        def draw(n: int) -> int:
            return int(torch.randint(n, (), generator=generator).item())

        use_fg = self._by_class and torch.rand((), generator=generator).item() < self.foreground_fraction
        if use_fg:
            classes = sorted(self._by_class)
            entries = self._by_class[classes[draw(len(classes))]]
            index, voxels = entries[draw(len(entries))]
            shape = self.items[index].labels.shape
            centre = np.unravel_index(int(voxels[draw(voxels.size)]), shape)
            starts = []
            for axis, w in enumerate(window):
                jitter = int(torch.randint(-(w // 4), w // 4 + 1, (), generator=generator))
                starts.append(int(np.clip(int(centre[axis]) - w // 2 + jitter, 0, max(0, shape[axis] - w))))
            return index, starts
        shape = self.items[index].labels.shape
        return index, [draw(max(1, shape[a] - w + 1)) for a, w in enumerate(window)]

    def sample(self, index: int, seed: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(image ``[1, k, j, i]`` float32, labels ``[k, j, i]`` int64, class mask ``[C]``) from item ``index``
        (``class_balanced`` sampling may choose another item for a foreground window)."""
        generator = torch.Generator().manual_seed(seed)
        item = self.items[index]
        window = self.window
        if window is None and self.max_voxels and item.image.size > self.max_voxels and self.fallback_patch:
            window = self.fallback_patch  # a whole volume too big for memory: a large random patch
        image, labels = item.image, item.labels
        if window is not None:
            if self.sampling == "class_balanced":
                index, starts = self._balanced_region(index, window, generator)
                item = self.items[index]
                image, labels = item.image, item.labels
            else:
                starts = []
                for axis, w in enumerate(window):
                    choices = self._foreground[index] if axis == 0 else np.empty(0, np.int64)
                    starts.append(self._window_start(image.shape[axis], w, choices, generator))
            region = tuple(slice(s, s + w) for s, w in zip(starts, window))
            image, labels = image[region], labels[region]
            image, labels = _pad_to(np.asarray(image, np.float32), np.asarray(labels), window)
        image_t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None]
        labels_t = torch.from_numpy(np.ascontiguousarray(labels)).to(torch.int64)
        image_t, labels_t = augment_pair(image_t, labels_t, self.augment, generator)
        return image_t.contiguous(), labels_t.contiguous(), torch.from_numpy(np.array(item.class_mask, np.float32))


def _pad_to(image: np.ndarray, labels: np.ndarray, window: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    """Pad an item smaller than the window (image with its minimum = air, labels with background)."""
    pads = [(0, max(0, w - n)) for w, n in zip(window, image.shape)]
    if not any(p[1] for p in pads):
        return image, labels
    return (np.pad(image, pads, constant_values=float(image.min())), np.pad(labels, pads, constant_values=0))


def collate(samples: Sequence[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]
            ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Stack samples into a batch (all windows of a batch have one size)."""
    images, labels, masks = zip(*samples)
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        raise ValueError(f"Samples of one batch differ in size {sorted(shapes)}; use batch_size 1 for whole "
                         "volumes of different sizes, or set data.patch_kji.")
    return torch.stack(images), torch.stack(labels), torch.stack(masks)
