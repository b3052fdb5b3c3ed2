"""What turns a CT into a model input, written once so that training and inference cannot drift apart:
intensity normalisation, the whole-volume model grid, and the per-orbit crops."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike

from headseg.geometry import Volume, bounding_box

if TYPE_CHECKING:
    from headseg.segment.model_card import ModelCard

AIR_HU = -1000.0


def normalize(array: np.ndarray, spec: Mapping[str, Any]) -> np.ndarray:
    """Map Hounsfield units to network input as the model card says.

    ``{"type": "window", "lower": L, "upper": U}``: clip to [L, U] and scale to [0, 1] (a CT window is
    what a radiologist looks at; fixed HU keep the meaning of intensities across scanners).
    ``{"type": "zscore", "mean": m, "std": s, "lower": L, "upper": U}``: clip, then standardise (nnU-Net's CT
    scheme, with statistics from the training set).
    """
    kind = spec.get("type", "window")
    lower, upper = float(spec.get("lower", -1000.0)), float(spec.get("upper", 1000.0))
    x = np.clip(array.astype(np.float32, copy=False), lower, upper)
    if kind == "window":
        return (x - lower) / (upper - lower)
    if kind == "zscore":
        return (x - float(spec["mean"])) / float(spec["std"])
    raise ValueError(f"Unknown normalisation type {kind!r} in the model card (expected 'window' or 'zscore').")


def empty_grid(shape_kji: Sequence[int], spacing: ArrayLike, origin: ArrayLike,
               direction: Optional[np.ndarray] = None) -> Volume:
    """A geometry-only Volume (a zero-stride array: no memory is allocated for it)."""
    array = np.broadcast_to(np.zeros((), np.uint8), tuple(int(n) for n in shape_kji))
    return Volume(array, tuple(np.asarray(spacing, dtype=float).ravel()), tuple(np.asarray(origin, dtype=float).ravel()),
                  np.eye(3) if direction is None else direction)


def model_grid_for(volume: Volume, spacing: Sequence[float]) -> Volume:
    """An LPS-aligned grid of the given spacing that covers the physical extent of ``volume``.

    Whole-volume models were trained on axis-aligned LPS grids; an input in any orientation (RAS index
    order, oblique) is resampled onto such a grid and the result resampled back, so the model always
    sees the anatomy the way it learned it.
    """
    k, j, i = volume.shape
    corners = np.array([[a, b, c] for a in (-0.5, i - 0.5) for b in (-0.5, j - 0.5) for c in (-0.5, k - 0.5)])
    points = np.array([volume.index_to_lps(c) for c in corners])
    lo, hi = points.min(axis=0), points.max(axis=0)
    step = np.asarray(spacing, dtype=float)
    size = np.maximum(1, np.round((hi - lo) / step)).astype(int)
    origin = lo + step / 2.0
    return empty_grid((size[2], size[1], size[0]), step, origin)


def subgrid_covering(volume: Volume, other: Volume, margin: int = 1) -> Tuple[Volume, Tuple[slice, slice, slice]]:
    """The part of ``volume``'s grid that covers ``other``'s extent, and its slices into ``volume.array``.

    Used to bring a small crop's result back onto the input grid without touching the rest of it.
    """
    k, j, i = other.shape
    corners = np.array([[a, b, c] for a in (-0.5, i - 0.5) for b in (-0.5, j - 0.5) for c in (-0.5, k - 0.5)])
    idx = np.array([volume.lps_to_index(other.index_to_lps(c)) for c in corners])
    lo = np.maximum(np.floor(idx.min(axis=0)).astype(int) - margin, 0)
    size_ijk = np.array(volume.size_ijk)
    hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + margin + 1, size_ijk)
    if np.any(hi <= lo):
        raise ValueError("The region lies outside the image.")
    slices = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    origin = volume.index_to_lps(lo)
    grid = empty_grid((hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]), volume.spacing, origin, volume.direction)
    return grid, slices


def body_crop(image: Volume, threshold_hu: float = -500.0, margin: int = 8) -> Volume:
    """The box of ``image`` (HU) that holds everything denser than air, ``margin`` voxels wider: the network
    need not run over the air around the patient (often more than half of a clinical field of view). The
    whole image when nothing is denser than air."""
    dense = image.array > threshold_hu
    if not dense.any():
        return image
    box = bounding_box(dense, margin)
    origin = image.index_to_lps([s.start for s in box][::-1])
    return Volume(np.ascontiguousarray(image.array[box]), image.spacing, tuple(float(v) for v in origin),
                  image.direction.copy())


@dataclass
class OrbitCrop:
    """One orbit as the model sees it: the CT resampled onto ``grid`` (mirrored for the left side)."""

    side: str
    image: Volume  # float32 HU on the crop grid
    box: Any  # headseg.locate.boxes.RegionBox


def orbit_crops(volume: Volume, card: ModelCard, roi: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
                sides: Sequence[str] = ("right", "left")) -> List[OrbitCrop]:
    """Locate the orbits (or use the user's ROI) and resample each into the model's crop grid."""
    from headseg.locate import boxes_from_roi, locate_orbits, orbit_crop_grid
    from headseg.resample import resample_to_grid

    inp = card.input
    locations = boxes_from_roi(roi[0], roi[1], volume) if roi is not None else locate_orbits(volume)
    boxes = {loc.side: loc.box for loc in locations}
    crops = []
    for side in sides:
        if side not in boxes:
            continue
        # In-plane the crop is exactly the model's window; along k it covers the whole box and the
        # sliding window runs over it (the SV-net paper's 32-slice window).
        window = card.window_kji
        assert window is not None  # an orbit card has one (validate_card)
        size_kji = (None, window[1], window[2])
        grid = orbit_crop_grid(boxes[side], inp.spacing_mm, size_kji, side, mirror_left=inp.mirror_left)
        image = resample_to_grid(volume, grid, interpolation="linear", default_value=AIR_HU)
        crops.append(OrbitCrop(side, image, boxes[side]))
    return crops


# -- training: the same crops and grids, with the label map carried along -------------------------------
# (written for ``training/``: a model is trained on exactly what ``orbit_crops``/``model_grid_for`` give at
# inference time, so there is one place where preprocessing can change.)


@dataclass
class LabelledCrop:
    """A model-grid image with its labels as *model classes* (0 background, 1..C-1 as the card's
    ``classes``) and which of those classes were annotated in the case (1) or are missing (0)."""

    side: str  # "right"/"left" for orbit crops, "" for whole volumes
    image: Volume  # float32 HU on the model grid (left orbits mirrored)
    labels: Volume  # uint8 model classes on the same grid
    annotated: np.ndarray  # [C] float32, background first (1 only when every structure is annotated)
    box: Any = None
    output_labels: Optional[Volume] = None  # side-split cards: labels as output classes (headseg.segment.sides)
    output_annotated: Optional[np.ndarray] = None


def _class_mask(keys: Sequence[Optional[str]], annotated: Optional[Sequence[str]]) -> np.ndarray:
    """[C] mask: class c > 0 counts when its label-set key is annotated; background when all are."""
    mask = np.ones(len(keys), np.float32)
    if annotated is not None:
        wanted = set(annotated)
        for c, key in enumerate(keys):
            if c > 0:
                mask[c] = 1.0 if key in wanted else 0.0
        mask[0] = 1.0 if len(keys) < 2 or mask[1:].min() > 0 else 0.0
    return mask


def orbit_class_lut(side: str, max_label: int) -> np.ndarray:
    """Look-up table from combined orbit label values (1-5 right, 6-10 left) to the per-orbit model
    classes (0 background, 1 SR .. 5 ON) of ``side``; the other orbit's labels become background."""
    from headseg.labels import ORBIT_MODEL_CLASSES, orbit_combined_label

    lut = np.zeros(max(int(max_label), 10) + 1, np.uint8)
    for c in range(1, len(ORBIT_MODEL_CLASSES) + 1):
        lut[orbit_combined_label(side, c)] = c
    return lut


def orbit_label_crops(volume: Volume, labels: Volume, card: ModelCard,
                      annotated: Optional[Sequence[str]] = None,
                      roi: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
                      sides: Sequence[str] = ("right", "left")) -> List[LabelledCrop]:
    """:func:`orbit_crops` plus the label map resampled (nearest neighbour) onto each crop grid and
    mapped to per-orbit model classes. ``annotated`` = label-set keys drawn in this case (None: all)."""
    from headseg.labels import ORBIT_MODEL_CLASSES
    from headseg.resample import resample_to_grid

    if not volume.same_geometry(labels, tol=1e-3):
        raise ValueError("The label map is not on the image's grid; resample or re-export it first.")
    out = []
    for crop in orbit_crops(volume, card, roi=roi, sides=sides):
        on_crop = resample_to_grid(labels, crop.image, interpolation="nearest", default_value=0)
        lut = orbit_class_lut(crop.side, int(on_crop.array.max()) if on_crop.array.size else 0)
        model_labels = lut[on_crop.array.astype(np.int64)]
        keys = [None] + [f"{name}_{crop.side}" for name in ORBIT_MODEL_CLASSES]
        out.append(LabelledCrop(crop.side, crop.image, crop.image.with_array(model_labels),
                                _class_mask(keys, annotated), crop.box))
    return out


def whole_volume_labelled(volume: Volume, labels: Volume, card: ModelCard,
                          annotated: Optional[Sequence[str]] = None) -> LabelledCrop:
    """The whole-volume (``han``) model input: the CT and its label map on :func:`model_grid_for`'s grid
    (linear / nearest), label-set values mapped to the card's class indices.

    With a ``side_split`` card (``headseg.segment.sides``) both sides of a paired organ map to its one network
    class, which counts as annotated only when both sides are; ``output_labels``/``output_annotated``
    keep the per-side classes for validation."""
    from headseg.labels import get_label_set
    from headseg.resample import resample_to_grid
    from headseg.segment.sides import network_class_of

    if not volume.same_geometry(labels, tol=1e-3):
        raise ValueError("The label map is not on the image's grid; resample or re-export it first.")
    grid = model_grid_for(volume, card.input.spacing_mm)
    image = resample_to_grid(volume, grid, interpolation="linear", default_value=AIR_HU)
    on_grid = resample_to_grid(labels, grid, interpolation="nearest", default_value=0)
    label_set = get_label_set(card.label_set)
    size = max(label_set.max_label, int(on_grid.array.max())) + 1
    classes = list(card.classes)
    outputs = list(card.output_classes)
    to_network = network_class_of(card)
    lut = np.zeros(size, np.uint8)
    out_lut = np.zeros(size, np.uint8)
    for c, key in enumerate(outputs[1:], start=1):
        lut[label_set.by_key(key).label] = classes.index(to_network[key])
        out_lut[label_set.by_key(key).label] = c
    values = on_grid.array.astype(np.int64)
    model_labels = lut[values]
    out_mask = _class_mask([None, *outputs[1:]], annotated)
    mask = np.ones(len(classes), np.float32)
    for c, name in enumerate(classes[1:], start=1):
        sides = [k for k, net in to_network.items() if net == name]
        mask[c] = min(out_mask[outputs.index(k)] for k in sides)
    mask[0] = out_mask[0]
    crop = LabelledCrop("", image, image.with_array(model_labels), mask)
    if outputs != classes:
        crop.output_labels = image.with_array(out_lut[values])
        crop.output_annotated = out_mask
    return crop
