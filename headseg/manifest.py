"""The training-set manifest (``<dataset>/manifest.csv``): the one format in which reviewed cases reach
``headseg-train``.

The Slicer modules ("Add to training set", ``headseg.slicer.training_set``) and the training package
(``training.datasets``, which reads it and re-exports :func:`add_case_to_manifest`) both use this module.
It lives in the core so that imports stay one-way: training and the Slicer package each import the core,
never each other, and the Slicer extension does not have to ship the training package.

Columns (:data:`MANIFEST_COLUMNS`): ``case`` (unique name), ``image`` and ``segmentation`` (paths,
relative to the dataset folder when inside it), ``task``, ``label_set``, ``reviewed`` (structure keys
separated by ``;``; every other structure counts as *not annotated*, an empty list as "all"), ``split``
(train / validation / test or empty) and ``date`` (when the case was added, ISO 8601). Columns a user
added by hand are kept when a row is added.
"""

from __future__ import annotations

import csv
import datetime
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

from headseg.paths import PathLike

__all__ = ["MANIFEST_FILE", "MANIFEST_COLUMNS", "read_manifest", "manifest_cases", "add_case_to_manifest"]

MANIFEST_FILE = "manifest.csv"
MANIFEST_COLUMNS = ("case", "image", "segmentation", "task", "label_set", "reviewed", "split", "date")



def read_manifest(root: PathLike) -> Tuple[List[str], List[Dict[str, str]]]:
    """``(columns, rows)`` of ``root/manifest.csv``; the standard columns and no rows when there is none.

    ``columns`` is the file's header followed by any standard column it lacks, so that rewriting the file
    keeps what a user added.
    """
    path = Path(root) / MANIFEST_FILE
    if not path.is_file():
        return list(MANIFEST_COLUMNS), []
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [dict(row) for row in reader]
        columns = list(reader.fieldnames or [])
    return columns + [c for c in MANIFEST_COLUMNS if c not in columns], rows


def manifest_cases(root: PathLike) -> Set[str]:
    """The case names already in ``root/manifest.csv``."""
    return {row.get("case", "") for row in read_manifest(root)[1]}


def add_case_to_manifest(root: PathLike, case: str, image: PathLike, segmentation: PathLike, task: str,
                         label_set: str, reviewed: Sequence[str] = (), split: str = "",
                         date: Optional[str] = None, replace: bool = True) -> Path:
    """Add one case to ``root/manifest.csv`` (created if missing) and return the manifest's path.

    Args:
        root: the dataset folder; ``image`` and ``segmentation`` are stored relative to it when inside it.
        case: the case name; with ``replace`` an existing row of that name is replaced, without it an
            existing row is an error (the Slicer modules never overwrite a case).
        reviewed: structure keys that were drawn or checked in this case.
        split: "train", "validation", "test" or "" (the recipe's split decides).
        date: when the case was added; default now (local time, ISO 8601 to the second).

    The file is written to a temporary name and then renamed, so a reader never sees half a manifest.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    columns, rows = read_manifest(root)
    if any(row.get("case") == case for row in rows):
        if not replace:
            raise ValueError(f"Case {case!r} is already in {root / MANIFEST_FILE}; choose another case name.")
        rows = [row for row in rows if row.get("case") != case]

    def relative(path: PathLike) -> str:
        resolved = Path(path).resolve()
        try:
            return resolved.relative_to(root.resolve()).as_posix()
        except ValueError:
            return str(resolved)

    rows.append({
        "case": case, "image": relative(image), "segmentation": relative(segmentation), "task": task,
        "label_set": label_set, "reviewed": ";".join(str(k) for k in reviewed), "split": split,
        "date": date if date is not None else datetime.datetime.now().isoformat(timespec="seconds"),
    })
    path = root / MANIFEST_FILE
    temp = path.with_name(f".{MANIFEST_FILE}.tmp")
    with open(temp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temp, path)
    return path
