"""From probabilities to a clean label map (seed 000, section 2.D): argmax, hole filling, largest component.

Every target (rectus muscle, optic nerve, organ at risk) is one connected region without holes, so each
class is reduced to its largest connected component and its enclosed cavities are filled.

Rules that hold for every function here:

* Classes never steal from each other. A cavity of class A is filled only where the map is background
  (0); voxels of class B inside A's cavity stay B. A removed component becomes background, not the
  neighbouring class.
* Work is restricted to bounding boxes, found for all classes (or components) in a single pass with
  ``scipy.ndimage.find_objects``, so a 512 x 512 x 300 map with ~10 small structures takes about a
  second (benchmarks/bench_postprocess.py).
* Hole filling is equivalent to ``scipy.ndimage.binary_fill_holes`` with its default (6-connected
  background) structure, computed with one labelling pass of the background inside the box instead of
  ``binary_fill_holes``' iterated dilation, which is slow on large boxes (tested to give identical
  results).

Order: :func:`postprocess_labels` keeps the largest component first and then fills its holes; the paper
fills first. The two orders give the same map except when filling would make a smaller component
outgrow the largest one (a small shell around a large cavity), which does not happen for solid muscles
and organs; choosing first makes the hole filling work on the small box of the kept component only.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from headseg.errors import InputError

__all__ = [
    "postprocess_probabilities",
    "fill_holes_per_class",
    "keep_largest_component_per_class",
    "postprocess_labels",
]

Box = Tuple[slice, ...]

_CONNECTIVITY_NAMES = {1: "6 (faces)", 2: "18 (faces and edges)", 3: "26 (faces, edges and corners)"}


def postprocess_probabilities(probabilities: np.ndarray) -> np.ndarray:
    """Label map ``[k, j, i]`` = index of the most probable channel of ``probabilities[C, k, j, i]``.

    Channel 0 is background. Ties go to the lower channel (numpy's argmax). The result is ``uint8``
    (``uint16`` above 255 channels) to keep 512^2 x 300 maps small.
    """
    probabilities = np.asarray(probabilities)
    if probabilities.ndim != 4:
        raise InputError(f"Probabilities must be [C, k, j, i]; got shape {probabilities.shape}.")
    dtype = np.uint8 if probabilities.shape[0] <= 256 else np.uint16
    return np.argmax(probabilities, axis=0).astype(dtype)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise InputError(f"A label map must be 3D [k, j, i]; got shape {labels.shape}.")
    if labels.dtype.kind not in "iub":
        raise InputError(f"A label map must hold integers; got dtype {labels.dtype}.")
    if labels.dtype.kind == "i" and labels.size and labels.min() < 0:
        raise InputError("A label map cannot hold negative values.")
    return labels


def _class_boxes(labels: np.ndarray, classes: Optional[Iterable[int]]) -> Dict[int, Box]:
    """Bounding box of each requested class present in ``labels`` (one pass over the array)."""
    if labels.dtype == bool:
        labels = labels.view(np.uint8)
    boxes = ndimage.find_objects(labels)
    present = {value + 1: box for value, box in enumerate(boxes) if box is not None}
    if classes is None:
        return present
    return {int(c): present[int(c)] for c in classes if int(c) in present and int(c) != 0}


def _grow(box: Box, margin: int, shape: Sequence[int]) -> Box:
    return tuple(slice(max(0, s.start - margin), min(n, s.stop + margin)) for s, n in zip(box, shape))


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in _CONNECTIVITY_NAMES:
        raise InputError(f"connectivity must be 1, 2 or 3 (6-, 18- or 26-neighbourhood); got {connectivity}.")
    return ndimage.generate_binary_structure(3, connectivity)


def _holes(mask: np.ndarray) -> np.ndarray:
    """Background voxels of ``mask`` not 6-connected to the border of the array (= binary_fill_holes)."""
    background, count = ndimage.label(~mask)
    if count == 0:
        return np.zeros_like(mask)
    on_border = np.zeros(count + 1, dtype=bool)
    for axis in range(3):
        for index in (0, -1):
            on_border[np.take(background, index, axis=axis)] = True
    on_border[0] = True  # label 0 is the mask itself
    return ~on_border[background]


def _fill_class_in_box(labels: np.ndarray, value: int, box: Box) -> int:
    """Fill the cavities of ``value`` inside ``box`` (in place); return the number of voxels filled."""
    region = labels[_grow(box, 1, labels.shape)]
    fill = _holes(region == value) & (region == 0)
    filled = int(np.count_nonzero(fill))
    if filled:
        region[fill] = value
    return filled


def fill_holes_per_class(
    labels: np.ndarray, classes: Optional[Iterable[int]] = None, *, inplace: bool = False
) -> np.ndarray:
    """Fill enclosed cavities of each class (all present non-zero values when ``classes`` is None).

    A cavity is a background region that is not 6-connected to the outside of the class (3D, as
    ``binary_fill_holes``). Only background voxels are filled: another class inside the cavity keeps
    its voxels. Works on each class's bounding box plus a 1-voxel margin.
    """
    labels = _check_labels(labels)
    result = labels if inplace else labels.copy()
    for value, box in _class_boxes(result, classes).items():
        _fill_class_in_box(result, value, box)
    return result


def _largest_components(
    labels: np.ndarray, classes: Optional[Iterable[int]], connectivity: int
) -> Dict[int, Box]:
    """Remove (to background, in place) all but the largest component per class; return kept boxes.

    One labelling pass over the foreground of the whole map; a foreground component holding a single
    class *is* a component of that class, one where classes touch is split per class with a local
    labelling inside its box. Removal is vectorised (one lookup over the map for single-class
    components, one mask per touching group and class), so neither time nor memory grows with the
    number of pieces -- a noisy, poorly trained model's output can have hundreds of thousands.
    """
    structure = _structure(connectivity)
    wanted = sorted(_class_boxes(labels, classes))
    if not wanted:
        return {}
    if len(wanted) == int(labels.max()) and set(wanted) == set(range(1, len(wanted) + 1)):
        foreground = labels > 0
    else:
        foreground = np.isin(labels, np.asarray(wanted, dtype=labels.dtype))
    components, n_components = ndimage.label(foreground, structure=structure)
    # Candidates per class: (size, box, where) with where = ("single", component index) or
    # ("split", group key, part number); ties go to the first in raster order (deterministic).
    candidates: Dict[int, List[Tuple[int, Box, tuple]]] = {value: [] for value in wanted}
    split_groups: Dict[Tuple[int, int], Tuple[Box, np.ndarray]] = {}
    for index, box in enumerate(ndimage.find_objects(components), start=1):
        if box is None:
            continue
        member = components[box] == index
        values = labels[box][member]
        first = values[0]
        if np.all(values == first):
            candidates[int(first)].append((int(values.size), box, ("single", index)))
            continue
        region = labels[box]
        for value in np.unique(values):
            parts, count = ndimage.label(member & (region == value), structure=structure)
            split_groups[(index, int(value))] = (box, parts)
            sizes = np.bincount(parts.ravel(), minlength=count + 1)
            for part in range(1, count + 1):
                candidates[int(value)].append((int(sizes[part]), box, ("split", (index, int(value)), part)))
    kept: Dict[int, Box] = {}
    remove_single = np.zeros(n_components + 1, dtype=bool)
    keep_part: Dict[Tuple[int, int], int] = {}
    for value, items in candidates.items():
        if not items:
            continue
        best = max(range(len(items)), key=lambda n: items[n][0])
        kept[value] = items[best][1]
        for number, (_, _, where) in enumerate(items):
            if where[0] == "single" and number != best:
                remove_single[where[1]] = True
            elif where[0] == "split" and number == best:
                keep_part[where[1]] = where[2]
    if remove_single.any():
        labels[remove_single[components]] = 0
    for key, (box, parts) in split_groups.items():
        best_part = keep_part.get(key, 0)
        drop = (parts > 0) & (parts != best_part)
        labels[box][drop] = 0
    return kept


def keep_largest_component_per_class(
    labels: np.ndarray,
    classes: Optional[Iterable[int]] = None,
    connectivity: int = 3,
    *,
    inplace: bool = False,
) -> np.ndarray:
    """Keep only the largest connected component of each class; other components become background.

    ``connectivity`` is scipy's: 1 = 6-, 2 = 18-, 3 = 26-neighbourhood. The default 26 keeps thin
    oblique structures (optic nerve, muscle insertions) whole when they are connected only by edges or
    corners between slices. Ties between equal-sized components go to the first in raster order.
    """
    labels = _check_labels(labels)
    result = labels if inplace else labels.copy()
    _largest_components(result, classes, connectivity)
    return result


def postprocess_labels(
    labels: np.ndarray,
    classes: Optional[Iterable[int]] = None,
    fill_holes: bool = True,
    largest_component: bool = True,
    connectivity: int = 3,
    *,
    inplace: bool = False,
) -> np.ndarray:
    """Seed 000's post-processing of an argmax label map: largest component per class, then hole filling.

    ``classes`` defaults to every non-zero value present. See the module docstring for the order and
    the no-stealing rule. Returns a new array unless ``inplace``.
    """
    labels = _check_labels(labels)
    result = labels if inplace else labels.copy()
    if largest_component:
        boxes = _largest_components(result, classes, connectivity)
    else:
        boxes = _class_boxes(result, classes)
    if fill_holes:
        for value, box in boxes.items():
            _fill_class_in_box(result, value, box)
    return result
