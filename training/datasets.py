"""Datasets of labelled CT cases: discovery, manifests, validation before training, and splits.

Layouts understood (``discover_records``):

* **Manifest** -- ``DIR/manifest.csv`` with the columns ``case,image,segmentation,task,label_set,reviewed``
  (and optionally ``split`` and ``date``); paths are relative to ``DIR``. The format is
  ``headseg.manifest``'s: the Slicer modules' "Add to training set" writes it, and
  :func:`add_case_to_manifest` (re-exported from there) writes it from Python. ``reviewed`` lists,
  separated by ``;``, the structure keys that were contoured or reviewed in that case; **every other
  structure is missing, not background**, and its loss is masked. An empty ``reviewed`` means "all
  structures".
* **OpenKBP** -- ``DIR/<split>/<patient>/{ct,labels}.nii.gz`` with ``meta.json`` whose ``contoured`` list
  names the organs that were drawn; ``DIR/manifest.csv`` (``split,patient,...,flag``) may flag organs
  whose contours are suspect (``suspect_<Organ>_...``): they are treated as missing.
* **Case folders** -- ``DIR/<case>/image.<ext>`` (or ``ct.<ext>``) and ``labels.<ext>`` /
  ``segmentation.seg.nrrd`` (what ``headseg phantom`` writes), optionally below split folders
  ``train``/``validation``/``test``.
* **Flat** -- ``DIR/<case>.<ext>`` with ``DIR/<case>.seg.nrrd`` or ``DIR/<case>_labels.<ext>``.

Without a manifest or meta.json, a structure counts as annotated when it is present in the case's
label map (an absent structure cannot be told apart from one nobody drew).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from headseg.manifest import MANIFEST_COLUMNS, MANIFEST_FILE, add_case_to_manifest, read_manifest

__all__ = [
    "MANIFEST_FILE",
    "MANIFEST_COLUMNS",
    "CaseRecord",
    "LoadedCase",
    "DatasetProblem",
    "DatasetReport",
    "discover_records",
    "load_case",
    "validate_dataset",
    "split_cases",
    "kfold_split",
    "add_case_to_manifest",
]

IMAGE_SUFFIXES = (".nii.gz", ".nrrd", ".nhdr", ".nii", ".mha", ".mhd")
LABEL_STEMS = ("labels", "label", "segmentation", "seg", "labelmap")
IMAGE_STEMS = ("image", "ct")
SPLIT_FOLDERS = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                 "valid": "validation", "test": "test", "testing": "test"}


@dataclass
class CaseRecord:
    """Where a case's files are and what is known about its labels (nothing is read yet)."""

    case: str
    image: Path
    segmentation: Optional[Path]
    split: Optional[str] = None  # train / validation / test when the layout says so
    annotated: Optional[Tuple[str, ...]] = None  # structure keys contoured; None = infer from the labels
    excluded: Tuple[str, ...] = ()  # structure keys to treat as missing although drawn (flagged contours)
    task: Optional[str] = None
    label_set: Optional[str] = None
    source: str = ""  # which layout found it
    date: Optional[str] = None  # when the case was added to a manifest (ISO 8601), if it says


@dataclass
class LoadedCase:
    """A case read from disk: image (HU) and label map with the label set's values, on the same grid."""

    record: CaseRecord
    image: Any  # headseg.geometry.Volume
    labels: Any  # headseg.geometry.Volume
    annotated: Tuple[str, ...]  # structure keys whose loss counts


@dataclass
class DatasetProblem:
    case: str
    severity: str  # "error" (case unusable) or "warning"
    message: str

    def __str__(self) -> str:
        return f"[{self.severity}] {self.case}: {self.message}"


@dataclass
class DatasetReport:
    cases: List[CaseRecord]
    problems: List[DatasetProblem] = field(default_factory=list)
    annotations: Dict[str, int] = field(default_factory=dict)  # structure key -> cases annotated
    usable: List[str] = field(default_factory=list)

    @property
    def errors(self) -> List[DatasetProblem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> List[DatasetProblem]:
        return [p for p in self.problems if p.severity == "warning"]

    def summary(self) -> str:
        lines = [f"{len(self.cases)} case(s) found, {len(self.usable)} usable, {len(self.errors)} error(s), "
                 f"{len(self.warnings)} warning(s)."]
        if self.annotations:
            lines.append("Annotated cases per structure: "
                         + ", ".join(f"{k} {n}" for k, n in self.annotations.items()))
        lines += [f"  {p}" for p in self.problems]
        return "\n".join(lines)

    def to_dict(self) -> Dict[str, Any]:
        return {"cases": len(self.cases), "usable": list(self.usable), "annotations": dict(self.annotations),
                "problems": [{"case": p.case, "severity": p.severity, "message": p.message} for p in self.problems]}


# -- discovery ---------------------------------------------------------------------------------------
def _strip_suffix(name: str) -> Optional[str]:
    lower = name.lower()
    if lower.endswith(".seg.nrrd"):
        return None
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _find_file(folder: Path, stems: Sequence[str], allow_seg: bool) -> Optional[Path]:
    if not folder.is_dir():
        return None
    for child in sorted(folder.iterdir()):
        if not child.is_file() or child.name.startswith("."):
            continue
        lower = child.name.lower()
        if allow_seg and lower.endswith(".seg.nrrd") and lower[: -len(".seg.nrrd")] in stems:
            return child
        stem = _strip_suffix(child.name)
        if stem is not None and stem.lower() in stems:
            return child
    return None


def _split_list(text: Optional[str]) -> Optional[Tuple[str, ...]]:
    if text is None:
        return None
    items = tuple(t.strip() for t in str(text).replace(",", ";").split(";") if t.strip())
    return items or None


def _read_manifest(root: Path) -> List[CaseRecord]:
    path = root / MANIFEST_FILE
    _, rows = read_manifest(root)
    records = []
    for n, row in enumerate(rows, start=2):
        if not row.get("case") or not row.get("image"):
            raise ValueError(f"{path}, line {n}: every row needs 'case' and 'image'.")
        segmentation = (row.get("segmentation") or "").strip()
        records.append(CaseRecord(
            case=row["case"].strip(), image=(root / row["image"].strip()),
            segmentation=(root / segmentation) if segmentation else None,
            split=SPLIT_FOLDERS.get((row.get("split") or "").strip().lower()),
            annotated=_split_list(row.get("reviewed")), task=(row.get("task") or "").strip() or None,
            label_set=(row.get("label_set") or "").strip() or None, source="manifest",
            date=(row.get("date") or "").strip() or None))
    return records


def _openkbp_flags(root: Path) -> Dict[str, Tuple[str, ...]]:
    """patient -> organ names flagged as suspect in an OpenKBP-style manifest (``suspect_<Organ>_...``)."""
    path = root / MANIFEST_FILE
    if not path.is_file():
        return {}
    flags: Dict[str, Tuple[str, ...]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            flag = (row.get("flag") or "").strip()
            if flag.startswith("suspect_") and row.get("patient"):
                flags[row["patient"]] = (flag.split("_")[1],)
    return flags


def _case_folder_record(folder: Path, split: Optional[str], flags: Dict[str, Tuple[str, ...]]) -> Optional[CaseRecord]:
    image = _find_file(folder, IMAGE_STEMS, allow_seg=False)
    if image is None:
        return None
    segmentation = _find_file(folder, LABEL_STEMS, allow_seg=True)
    annotated = None
    source = "case-folder"
    meta = folder / "meta.json"
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{meta} is not valid JSON: {exc}") from exc
        if "contoured" in data:
            annotated = tuple(str(c) for c in data["contoured"])
            source = "openkbp"
    return CaseRecord(folder.name, image, segmentation, split, annotated, flags.get(folder.name, ()), source=source)


def discover_records(root: Union[str, Path]) -> List[CaseRecord]:
    """Every case under ``root`` in one of the layouts of the module docstring."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"Dataset folder {root} does not exist.")
    manifest = root / MANIFEST_FILE
    if manifest.is_file():
        with open(manifest, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
        if "case" in header:
            return _read_manifest(root)
    flags = _openkbp_flags(root)
    records: List[CaseRecord] = []
    own = _case_folder_record(root, None, flags)
    if own is not None:
        return [own]
    for child in sorted(root.iterdir()):
        if child.is_dir() and child.name.lower() in SPLIT_FOLDERS:
            split = SPLIT_FOLDERS[child.name.lower()]
            for case_dir in sorted(child.iterdir()):
                if case_dir.is_dir():
                    record = _case_folder_record(case_dir, split, flags)
                    if record is not None:
                        records.append(record)
        elif child.is_dir():
            record = _case_folder_record(child, None, flags)
            if record is not None:
                records.append(record)
    records += _flat_records(root)
    if not records:
        raise FileNotFoundError(
            f"No cases found in {root}. Expected a manifest.csv, case folders with image.* and labels.* "
            "(as written by 'headseg phantom'), OpenKBP's <split>/<patient>/ct.nii.gz, or <case>.nrrd with "
            "<case>.seg.nrrd beside it."
        )
    names = [r.case for r in records]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"Several cases in {root} have the same name: {', '.join(dupes)}. Rename them.")
    return records


def _flat_records(root: Path) -> List[CaseRecord]:
    files = {c.name.lower(): c for c in root.iterdir() if c.is_file()}
    records = []
    for child in sorted(root.iterdir()):
        stem = _strip_suffix(child.name) if child.is_file() else None
        if stem is None or any(h in stem.lower() for h in ("label", "seg", "mask")):
            continue
        seg = None
        for candidate in (f"{stem}.seg.nrrd", *(f"{stem}_{s}{x}" for s in LABEL_STEMS for x in IMAGE_SUFFIXES)):
            if candidate.lower() in files:
                seg = files[candidate.lower()]
                break
        records.append(CaseRecord(stem, child, seg, source="flat"))
    return records


# -- loading -----------------------------------------------------------------------------------------
def _resolve_structure_keys(names: Sequence[str], label_set) -> Tuple[List[str], List[str]]:
    keys, unknown = [], []
    for name in names:
        if name in label_set:
            keys.append(name)
            continue
        found = label_set.find(name)
        if found is None:
            unknown.append(name)
        else:
            keys.append(found.key)
    return keys, unknown


def load_case(record: CaseRecord, label_set) -> LoadedCase:
    """Read image and labels (``.seg.nrrd`` segments matched by terminology/name) and decide which
    structures count as annotated. Raises ``InputError``/``FileNotFoundError`` with the reason."""
    from headseg.errors import InputError
    from headseg.io import read_segmentation, read_volume

    if record.segmentation is None:
        raise InputError(f"Case {record.case} has no segmentation (labels) file.")
    for path in (record.image, record.segmentation):
        if not Path(path).exists():
            raise FileNotFoundError(f"Case {record.case}: {path} does not exist.")
    image = read_volume(record.image)
    labels = read_segmentation(record.segmentation, label_set)
    if record.annotated is not None:
        keys, unknown = _resolve_structure_keys(record.annotated, label_set)
        if unknown:
            raise InputError(
                f"Case {record.case}: reviewed/contoured structures {unknown} are not in the "
                f"{label_set.name!r} label set (known: {', '.join(label_set.keys())})."
            )
    else:
        present = set(np.unique(labels.array).tolist())
        keys = [s.key for s in label_set.structures if s.label in present]
    excluded, _ = _resolve_structure_keys(record.excluded, label_set)
    annotated = tuple(k for k in label_set.keys() if k in keys and k not in excluded)
    return LoadedCase(record, image, labels, annotated)


# -- validation --------------------------------------------------------------------------------------
def validate_dataset(records: Sequence[CaseRecord], label_set, task: Optional[str] = None,
                     geometry_tol_mm: float = 1e-3) -> DatasetReport:
    """Read every case and report what would make training wrong or fail:

    geometry mismatch between image and labels, unknown segment names, unreadable files, empty labels,
    annotated structures that are empty, intensities that are not CT, a task or label set other than
    the recipe's. Errors make a case unusable; warnings are worth reading."""
    from headseg.errors import HeadSegError
    from headseg.validation import check_ct

    report = DatasetReport(list(records))
    counts = {k: 0 for k in label_set.keys()}
    for record in records:
        def problem(severity: str, message: str, case: str = record.case) -> None:
            report.problems.append(DatasetProblem(case, severity, message))

        if task and record.task and record.task != task:
            problem("error", f"the manifest says task {record.task!r}; this recipe trains {task!r}.")
            continue
        if record.label_set and record.label_set.lower() != label_set.name:
            problem("error", f"the manifest says label set {record.label_set!r}; this recipe uses "
                             f"{label_set.name!r}.")
            continue
        try:
            case = load_case(record, label_set)
        except (HeadSegError, ValueError, OSError, RuntimeError) as exc:
            problem("error", str(exc))
            continue
        image, labels = case.image, case.labels
        if image.shape != labels.shape:
            problem("error", f"image and labels differ in size: image {image.size_ijk} voxels, labels "
                             f"{labels.size_ijk} (i, j, k). Export the segmentation on the image's grid.")
            continue
        if not image.same_geometry(labels, tol=geometry_tol_mm):
            delta = float(np.abs(image.ijk_to_lps - labels.ijk_to_lps).max())
            problem("error", f"image and labels have different geometry (spacing/origin/direction differ by up "
                             f"to {delta:.3g} mm). Export the segmentation with the image as reference "
                             "geometry.")
            continue
        try:
            for note in check_ct(image):
                problem("warning", note)
        except HeadSegError as exc:
            problem("error", f"image: {exc}")
            continue
        if not np.any(labels.array):
            problem("error", "the label map is empty (no structure is drawn).")
            continue
        present = set(np.unique(labels.array).tolist())
        empty = [k for k in case.annotated if label_set.by_key(k).label not in present]
        if empty:
            problem("warning", f"structures marked as contoured are empty: {', '.join(empty)} "
                               "(they will be trained as absent).")
        drawn_missing = [s.key for s in label_set.structures
                         if s.label in present and s.key not in case.annotated]
        if drawn_missing and record.annotated is not None:
            problem("warning", "structures drawn but not marked as reviewed/contoured (or flagged as suspect) are "
                               f"ignored: {', '.join(drawn_missing)}.")
        if not case.annotated:
            problem("error", "no structure is marked as annotated: nothing to learn from this case.")
            continue
        for k in case.annotated:
            counts[k] += 1
        report.usable.append(record.case)
    report.annotations = counts
    if not report.usable:
        report.problems.append(DatasetProblem("(dataset)", "error", "no usable case."))
    return report


# -- splits ------------------------------------------------------------------------------------------
def kfold_split(cases: Sequence[str], folds: int, fold: int, seed: int = 0) -> Tuple[List[str], List[str]]:
    """The SV-net paper's k-fold cross-validation: shuffle once with ``seed``, cut into ``folds`` parts, hold out
    part ``fold``. Returns (train, validation) case names."""
    if folds < 2:
        raise ValueError(f"k-fold needs at least 2 folds, got {folds}.")
    if not 0 <= fold < folds:
        raise ValueError(f"fold must be in 0..{folds - 1}, got {fold}.")
    if len(cases) < folds:
        raise ValueError(f"{len(cases)} case(s) cannot be split into {folds} folds; use fewer folds.")
    order = sorted(cases)
    random.Random(seed).shuffle(order)
    held = set(order[fold::folds])
    return [c for c in order if c not in held], [c for c in order if c in held]


def split_cases(records: Sequence[CaseRecord], spec: Dict[str, Any],
                usable: Optional[Sequence[str]] = None) -> Dict[str, List[str]]:
    """Train / validation / test case names.

    ``spec["type"]``: ``"layout"`` (the manifest's split column or split folders), ``"kfold"``
    (``folds``, ``fold``, ``seed``), ``"fraction"`` (``validation_fraction`` of the cases, shuffled with
    ``seed``), ``"auto"`` (layout when every case has a split, else fraction), or ``"lists"`` (``train``,
    ``validation``, ``test``: explicit case names). Test cases never enter training."""
    names = [r.case for r in records if usable is None or r.case in set(usable)]
    kind = spec.get("type", "auto")
    by_split = {r.case: r.split for r in records}
    if kind == "auto":
        has_layout = any(by_split[n] in ("train", "validation") for n in names)
        kind = "layout" if has_layout and all(by_split[n] for n in names) else "fraction"
    if kind == "lists":
        split = {key: [n for n in spec.get(key, []) if n in names] for key in ("train", "validation", "test")}
    elif kind == "layout":
        split = {key: [n for n in names if by_split[n] == key] for key in ("train", "validation", "test")}
        if not split["validation"]:
            raise ValueError("The dataset's split has no validation cases; use --set split.type=fraction.")
    elif kind in ("kfold", "fraction"):
        pool = [n for n in names if by_split[n] != "test"]
        test = [n for n in names if by_split[n] == "test"]
        if kind == "kfold":
            train, validation = kfold_split(pool, int(spec.get("folds", 10)), int(spec.get("fold", 0)),
                                            int(spec.get("seed", 0)))
        else:
            order = sorted(pool)
            random.Random(int(spec.get("seed", 0))).shuffle(order)
            n_val = max(1, int(round(float(spec.get("validation_fraction", 0.2)) * len(order))))
            if len(order) < 2:
                raise ValueError("At least two usable cases are needed (one to train, one to validate).")
            validation, train = sorted(order[:n_val]), sorted(order[n_val:])
        split = {"train": sorted(train), "validation": sorted(validation), "test": sorted(test)}
    else:
        raise ValueError(f"Unknown split type {kind!r}; use auto, layout, kfold, fraction or lists.")
    if not split["train"]:
        raise ValueError("The split leaves no training case.")
    split["type"] = kind
    return split
