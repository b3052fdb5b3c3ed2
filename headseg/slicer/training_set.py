""""Add to training set": the image and the corrected segmentation as files plus a manifest row, the
hand-off from the Slicer modules to ``headseg-train``. The row is written by ``headseg.manifest``, the
writer (and format) that ``training.datasets`` shares, so the two can never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from headseg.errors import InputError
from headseg.manifest import add_case_to_manifest, manifest_cases
from headseg.slicer.scene import PathLike, safe_case_id, volume_from_node
from headseg.slicer.segments import labelmap_from_segmentation

__all__ = ["TrainingCase", "unique_case_id", "add_to_training_set"]


@dataclass
class TrainingCase:
    """What "Add to training set" wrote, so the panel can say where the case went and what to check."""

    case: str
    image: Path
    segmentation: Path
    manifest: Path
    warnings: List[str] = field(default_factory=list)


def unique_case_id(dataset_dir: PathLike, wanted: str) -> str:
    """``wanted`` or ``wanted_2``, ``wanted_3``... so that no existing case or file is ever overwritten."""
    dataset_dir = Path(dataset_dir)
    taken = manifest_cases(dataset_dir)
    base = safe_case_id(wanted)
    candidate, n = base, 1
    while (candidate in taken or (dataset_dir / "images" / f"{candidate}.nrrd").exists()
           or (dataset_dir / "labels" / f"{candidate}.seg.nrrd").exists()):
        n += 1
        candidate = f"{base}_{n}"
    return candidate


def add_to_training_set(volume_node, segmentation_node, dataset_dir: PathLike, task: str, label_set,
                        reviewed: Sequence[str], case_id: Optional[str] = None) -> TrainingCase:
    """Export the image and the (corrected) segmentation as a new training case.

    Writes ``images/<case>.nrrd``, ``labels/<case>.seg.nrrd`` and a row of ``manifest.csv``
    (``case,image,segmentation,task,label_set,reviewed,split,date``; ``reviewed`` = structure keys
    separated by ``;``), the layout ``headseg-train`` reads. Existing cases are never overwritten: the
    case ID gets a ``_2``, ``_3``... suffix instead.
    """
    from headseg.io import write_segmentation, write_volume

    reviewed = [str(k) for k in reviewed]
    if not reviewed:
        raise InputError(
            "Tick the structures you reviewed before adding the case: the training treats unticked "
            "structures as not annotated, and an empty list would mean 'all'."
        )
    unknown = [k for k in reviewed if k not in label_set]
    if unknown:
        raise InputError(f"Unknown structures {unknown} for the {label_set.name} label set.")
    if segmentation_node is None:
        raise InputError("No segmentation is selected; segment the image (or load a segmentation) first.")
    dataset_dir = Path(dataset_dir).expanduser()
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot create the dataset folder {dataset_dir}: {exc.strerror or exc}.") from exc
    image = volume_from_node(volume_node)
    labelmap, warnings = labelmap_from_segmentation(segmentation_node, label_set, volume_node)
    present = set(np.unique(labelmap.array).tolist())
    missing = [label_set.by_key(k).name for k in reviewed if label_set.by_key(k).label not in present]
    if missing:
        warnings.append(f"Reviewed but empty (saved as absent): {', '.join(missing)}.")
    case = unique_case_id(dataset_dir, case_id or volume_node.GetName())
    image_path = dataset_dir / "images" / f"{case}.nrrd"
    segmentation_path = dataset_dir / "labels" / f"{case}.seg.nrrd"
    image_path.parent.mkdir(exist_ok=True)
    segmentation_path.parent.mkdir(exist_ok=True)
    write_volume(image, image_path, overwrite=False)
    try:
        write_segmentation(labelmap, label_set, segmentation_path, overwrite=False)
    except BaseException:
        image_path.unlink()
        raise
    try:
        manifest = add_case_to_manifest(dataset_dir, case, image_path, segmentation_path, task, label_set.name,
                                        reviewed, replace=False)
    except (OSError, ValueError) as exc:
        image_path.unlink()
        segmentation_path.unlink()
        raise InputError(f"Could not add the case to {dataset_dir}: {exc}. Check that the folder is writable.") \
            from exc
    return TrainingCase(case, image_path, segmentation_path, manifest, warnings)
