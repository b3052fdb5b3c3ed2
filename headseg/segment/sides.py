"""Paired organs predicted as one class and split into right and left in patient space.

A network that sees a patch of the neck cannot always tell which parotid it looks at: the two glands look
alike and a patch need not hold the midline. Trained with one ``parotid`` class, the network only has to
find parotid tissue; which side a voxel belongs to is then decided here, from its LPS position relative
to the patient's midline, the way the orbit pipeline decides sides from the orbit search.

A card opts in with ``"side_split": {"parotid": {"right": "parotid_right", "left": "parotid_left"}}``;
its ``classes`` then hold ``parotid`` (the network's class) and :func:`output_classes` gives the classes
after the split, which map onto the label set.

The functions take a parsed card (``headseg.segment.model_card.ModelCard``, which reads its side split
once) or the card's JSON object (anything with ``classes`` and an optional ``side_split``).

The midline is the LPS x of the centroid of the other (midline) foreground classes predicted in the same
volume (brainstem, spinal cord, mandible, larynx, oesophagus all straddle it), else the centroid of the
body (voxels above -300 HU), else the volume's centre. LPS +x is the patient's left, so voxels with
x greater than the midline are left.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, Union

import numpy as np

from headseg.geometry import Volume

__all__ = ["side_split_spec", "parse_side_split", "split_output_classes", "output_classes", "split_classes_by_side",
           "midline_x", "network_class_of"]

BODY_HU = -300.0

SideSplit = Dict[str, Dict[str, str]]


class SplitCard(Protocol):
    """What the functions here read of a parsed card (``headseg.segment.model_card.ModelCard``)."""

    @property
    def classes(self) -> Sequence[str]: ...

    @property
    def side_split(self) -> Mapping[str, Mapping[str, str]]: ...

    @property
    def output_classes(self) -> Sequence[str]: ...


CardLike = Union[SplitCard, Mapping[str, Any]]


def parse_side_split(spec: Any) -> SideSplit:
    """A card's ``side_split`` value (merged class -> {"right": key, "left": key}) checked and copied;
    empty when absent. Raises ValueError naming the first bad entry."""
    out: SideSplit = {}
    for merged, sides in (spec or {}).items():
        if not isinstance(sides, Mapping) or set(sides) != {"right", "left"}:
            raise ValueError(f"side_split[{merged!r}] must name exactly a 'right' and a 'left' class, got {sides!r}.")
        out[str(merged)] = {"right": str(sides["right"]), "left": str(sides["left"])}
    return out


def split_output_classes(classes: Sequence[str], spec: Mapping[str, Mapping[str, str]]) -> List[str]:
    """``classes`` with every side-split class replaced by its right and left class, in place."""
    out: List[str] = []
    for name in classes:
        out += [spec[name]["right"], spec[name]["left"]] if name in spec else [name]
    return out


def side_split_spec(card: Mapping[str, Any]) -> SideSplit:
    """The ``side_split`` of a card's JSON object (merged class -> {"right": key, "left": key}); empty when absent."""
    return parse_side_split(card.get("side_split"))


def _parts(card: CardLike) -> Tuple[List[str], Mapping[str, Mapping[str, str]], List[str]]:
    """(network classes, side split, output classes) of a parsed card or a card's JSON object."""
    if isinstance(card, Mapping):
        classes, spec = list(card["classes"]), side_split_spec(card)
        return classes, spec, split_output_classes(classes, spec)
    return list(card.classes), card.side_split, list(card.output_classes)


def output_classes(card: CardLike) -> List[str]:
    """The card's classes with every side-split class replaced by its right and left class, in place."""
    return _parts(card)[2]


def network_class_of(card: CardLike) -> Dict[str, str]:
    """Output class -> the network class that predicts it (itself, or its merged class)."""
    classes, spec, _ = _parts(card)
    mapping = {name: name for name in classes}
    for merged, sides in spec.items():
        mapping[sides["right"]] = merged
        mapping[sides["left"]] = merged
        mapping.pop(merged, None)
    return mapping


def _centroid_x(mask: np.ndarray, grid: Volume) -> Optional[float]:
    idx = np.argwhere(mask)
    if idx.shape[0] == 0:
        return None
    centre_kji = idx.mean(axis=0)
    return float(grid.index_to_lps(centre_kji[::-1])[0])


def midline_x(labels: np.ndarray, grid: Volume, midline_classes: Sequence[int],
              image: Optional[np.ndarray] = None) -> float:
    """LPS x of the patient's midline for a label map ``[k, j, i]`` on ``grid`` (see the module docstring)."""
    if midline_classes:
        x = _centroid_x(np.isin(labels, list(midline_classes)), grid)
        if x is not None:
            return x
    if image is not None:
        x = _centroid_x(image > BODY_HU, grid)
        if x is not None:
            return x
    centre = (np.asarray(labels.shape[::-1], float) - 1.0) / 2.0
    return float(grid.index_to_lps(centre)[0])


def split_classes_by_side(labels: np.ndarray, grid: Volume, card: CardLike,
                          image: Optional[np.ndarray] = None) -> np.ndarray:
    """Network-class labels ``[k, j, i]`` on ``grid`` -> output-class labels (:func:`output_classes`).

    Returns the array unchanged (same values) when the card has no side split."""
    classes, spec, outputs = _parts(card)
    if not spec:
        return labels
    lut = np.zeros(len(classes), np.uint8)
    for c, name in enumerate(classes):
        lut[c] = outputs.index(spec[name]["right"]) if name in spec else outputs.index(name)
    out = lut[labels.astype(np.int64)]
    midline_classes = [c for c, name in enumerate(classes) if c > 0 and name not in spec]
    x0 = midline_x(labels, grid, midline_classes, image)
    for c, name in enumerate(classes):
        if name not in spec:
            continue
        idx = np.argwhere(labels == c)
        if idx.shape[0] == 0:
            continue
        lps_x = _lps_x_of(idx, grid)
        left = idx[lps_x > x0]
        out[left[:, 0], left[:, 1], left[:, 2]] = outputs.index(spec[name]["left"])
    return out


def _lps_x_of(idx_kji: np.ndarray, grid: Volume) -> np.ndarray:
    """LPS x of voxel indices ``[n, 3]`` (k, j, i order)."""
    matrix = grid.ijk_to_lps
    return idx_kji[:, ::-1].astype(float) @ matrix[0, :3] + matrix[0, 3]
