"""Paired organs predicted as one class and split into right and left in patient space.

A network that sees a patch of the neck cannot always tell which parotid it looks at: the two glands look
alike and a patch need not hold the midline. Trained with one ``parotid`` class, the network only has to
find parotid tissue; which side a voxel belongs to is then decided here, from its LPS position relative
to the patient's midline, the way the orbit pipeline decides sides from the orbit search.

A card opts in with ``"side_split": {"parotid": {"right": "parotid_right", "left": "parotid_left"}}``;
its ``classes`` then hold ``parotid`` (the network's class) and :func:`output_classes` gives the classes
after the split, which map onto the label set.

The midline is the LPS x of the centroid of the other (midline) foreground classes predicted in the same
volume (brainstem, spinal cord, mandible, larynx, oesophagus all straddle it), else the centroid of the
body (voxels above -300 HU), else the volume's centre. LPS +x is the patient's left, so voxels with
x greater than the midline are left.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from headseg.geometry import Volume

__all__ = ["side_split_spec", "output_classes", "split_classes_by_side", "midline_x", "network_class_of"]

BODY_HU = -300.0


def side_split_spec(card: Mapping[str, Any]) -> Dict[str, Dict[str, str]]:
    """The card's ``side_split`` (merged class -> {"right": key, "left": key}); empty when absent."""
    spec = card.get("side_split") or {}
    out: Dict[str, Dict[str, str]] = {}
    for merged, sides in spec.items():
        if not isinstance(sides, Mapping) or set(sides) != {"right", "left"}:
            raise ValueError(f"side_split[{merged!r}] must name exactly a 'right' and a 'left' class, got {sides!r}.")
        out[str(merged)] = {"right": str(sides["right"]), "left": str(sides["left"])}
    return out


def output_classes(card: Mapping[str, Any]) -> List[str]:
    """The card's classes with every side-split class replaced by its right and left class, in place."""
    spec = side_split_spec(card)
    out: List[str] = []
    for name in card["classes"]:
        out += [spec[name]["right"], spec[name]["left"]] if name in spec else [name]
    return out


def network_class_of(card: Mapping[str, Any]) -> Dict[str, str]:
    """Output class -> the network class that predicts it (itself, or its merged class)."""
    spec = side_split_spec(card)
    mapping = {name: name for name in card["classes"]}
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


def split_classes_by_side(labels: np.ndarray, grid: Volume, card: Mapping[str, Any],
                          image: Optional[np.ndarray] = None) -> np.ndarray:
    """Network-class labels ``[k, j, i]`` on ``grid`` -> output-class labels (:func:`output_classes`).

    Returns the array unchanged (same values) when the card has no side split."""
    spec = side_split_spec(card)
    classes = list(card["classes"])
    if not spec:
        return labels
    outputs = output_classes(card)
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
