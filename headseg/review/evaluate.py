"""``headseg evaluate``, ``headseg-train evaluate`` and the package check of ``headseg-train export``:
the one place that scores segmentations against references and says the result.

* What is scored: the predictions of a results folder (HeadSeg's own side files, such as the uncertainty
  maps, are not predictions; :func:`prediction_files`), each case's reference (:func:`find_reference`),
  and the structures a reference must not be scored on (not contoured, OpenKBP's suspect contours, a
  user's exclude list): :func:`score_folder`.
* How it is written: one row per case and structure (``case``, ``structure``, :data:`METRIC_COLUMNS`, and
  the extra columns a caller names) and ``<stem>_summary.csv`` with each metric's mean and SD per
  structure (:func:`summarise_rows`, :func:`write_evaluation`).
* How a person reads it: :func:`summary_lines`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from headseg.errors import InputError
from headseg.io.cases import IMAGE_SUFFIXES, LABEL_HINTS, case_name, is_image

__all__ = ["METRIC_COLUMNS", "SIDE_FILE_SUFFIXES", "OPENKBP_MANIFEST", "FolderScores", "prediction_files",
           "find_reference", "contoured_in", "suspect_structures", "read_exclude_list", "score_folder",
           "summarise_rows", "write_evaluation", "summary_lines"]

#: The metrics of every row (``headseg.measure.metrics.evaluate_labels``), in the order the CSVs give them.
METRIC_COLUMNS = ("dsc", "iou", "sensitivity", "specificity", "hd95_mm", "assd_mm", "pred_volume_cm3",
                  "ref_volume_cm3")
#: Files ``headseg segment`` writes beside a segmentation that are images but not segmentations.
SIDE_FILE_SUFFIXES = ("_uncertainty",)
#: The OpenKBP data's table of patients, whose ``flag`` column marks suspect contours (``suspect_<Organ>_...``).
OPENKBP_MANIFEST = "manifest.csv"


def prediction_files(folder: Path) -> List[Tuple[str, Path]]:
    """``(case, file)`` of every segmentation in ``folder``: its images less HeadSeg's side files (an
    uncertainty map is no segmentation). When a case has a ``.seg.nrrd`` and a plain label map, the
    ``.seg.nrrd`` is taken."""
    found: Dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not is_image(path):
            continue
        case = case_name(path)
        if case.endswith(SIDE_FILE_SUFFIXES):
            continue
        if case not in found or path.name.endswith(".seg.nrrd"):
            found[case] = path
    return sorted(found.items())


def find_reference(gt_dir: Path, case: str) -> Optional[Path]:
    """The reference label map of ``case``: ``<case>.seg.nrrd``/``<case>.<ext>``, ``<case>_labels.<ext>`` or
    ``<case>/labels.<ext>`` (the layout of ``headseg phantom`` and OpenKBP)."""
    for suffix in IMAGE_SUFFIXES:
        for stem in (case, f"{case}_labels", f"{case}_label", f"{case}_seg"):
            candidate = gt_dir / f"{stem}{suffix}"
            if candidate.is_file():
                return candidate
    folder = gt_dir / case
    if folder.is_dir():
        for child in sorted(folder.iterdir()):
            if is_image(child) and any(h in child.name.lower() for h in LABEL_HINTS):
                return child
    return None


def contoured_in(reference: Path) -> Optional[List[str]]:
    """Structures a ``meta.json`` beside the reference says were contoured (OpenKBP), else None."""
    meta = reference.parent / "meta.json"
    if meta.is_file():
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            return list(data.get("contoured")) if "contoured" in data else None
        except (OSError, ValueError):
            return None
    return None


def _organ_in_flag(flag: str, label_set: Any) -> Optional[str]:
    """The structure key named by an OpenKBP flag such as ``suspect_SpinalCord_PRV`` or
    ``suspect_Parotid_L``: the longest run of words after ``suspect_`` that names a structure."""
    words = flag.split("_")[1:]
    for end in range(len(words), 0, -1):
        structure = label_set.find("_".join(words[:end]))
        if structure is not None:
            return str(structure.key)
    return None


def suspect_structures(reference_dir: Path, label_set: Any) -> Dict[str, Set[str]]:
    """case -> structure keys whose reference contour OpenKBP's manifest flags as suspect. The manifest
    is looked for in the reference folder and the folder above it (OpenKBP keeps one for all splits)."""
    for folder in (reference_dir, reference_dir.parent):
        path = folder / OPENKBP_MANIFEST
        if path.is_file():
            break
    else:
        return {}
    out: Dict[str, Set[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            patient = (row.get("patient") or "").strip()
            for flag in re.split(r"[;, ]+", row.get("flag") or ""):
                key = _organ_in_flag(flag, label_set) if flag.startswith("suspect_") else None
                if patient and key:
                    out.setdefault(patient, set()).add(key)
    return out


def read_exclude_list(path: Path, label_set: Any) -> Dict[str, Set[str]]:
    """case -> structure keys not to score, from a CSV of ``case,structure`` lines (a header is allowed;
    the structure may be a key, display name or TG-263 name; ``*`` or nothing: the whole case)."""
    if not path.is_file():
        raise InputError(f"Exclude list {path} does not exist.")
    everything = set(label_set.keys())
    out: Dict[str, Set[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for number, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not cells or not cells[0] or cells[0].startswith("#") or (number == 1 and cells[0] == "case"):
                continue
            name = cells[1] if len(cells) > 1 else ""
            keys = everything if name in ("", "*") else {label_set.by_name(name).key}
            out.setdefault(cells[0], set()).update(keys)
    return out


@dataclass
class FolderScores:
    """What :func:`score_folder` found: the metric rows, and what was not scored and why."""

    rows: List[Dict[str, Any]]
    cases: int  # predictions in the results folder
    no_reference: List[str] = field(default_factory=list)  # cases without a reference
    excluded: Dict[str, Set[str]] = field(default_factory=dict)  # case -> suspect or excluded structures


def score_folder(pred_dir: Path, gt_dir: Path, label_set: Any, exclude: Optional[Path] = None,
                 warn: Optional[Callable[[str], None]] = None,
                 progress: Optional[Callable[[int, int, str], None]] = None, cancel: Any = None) -> FolderScores:
    """Score every prediction of ``pred_dir`` against its reference in ``gt_dir`` (``headseg evaluate``).

    Never scored: a structure missing from the reference (not contoured is not a zero), one OpenKBP's
    manifest flags as suspect, one on the ``exclude`` list (:func:`read_exclude_list`). ``warn`` gets each
    case's grid warning; ``progress(done, total, case)`` is called with ``done`` 0 before the first case
    and after each; ``cancel`` (a ``CancelToken``) is checked before each case."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d in (pred_dir, gt_dir):
        if not d.is_dir():
            raise InputError(f"{d} is not a folder.")
    preds = prediction_files(pred_dir)  # not HeadSeg's side files (uncertainty maps)
    not_scored = suspect_structures(gt_dir, label_set)  # OpenKBP's suspect contours
    if exclude:
        for case, keys in read_exclude_list(Path(exclude), label_set).items():
            not_scored.setdefault(case, set()).update(keys)
    if not preds:
        raise InputError(f"No predicted segmentations (.seg.nrrd or label maps) in {pred_dir}.")
    scores = FolderScores([], len(preds))
    if progress is not None:
        progress(0, len(preds), "")
    for n, (case, pred_path) in enumerate(preds):
        if cancel is not None:
            cancel.raise_if_cancelled()
        ref_path = find_reference(gt_dir, case)
        if ref_path is None:
            scores.no_reference.append(case)
            continue
        rows, excluded = _score_case(case, pred_path, ref_path, label_set, not_scored.get(case, set()), warn)
        scores.rows.extend(rows)
        if excluded:
            scores.excluded.setdefault(case, set()).update(excluded)
        if progress is not None:
            progress(n + 1, len(preds), case)
    if not scores.rows:
        missing = scores.no_reference
        raise InputError(f"No case had a reference to compare with in {gt_dir} (cases: "
                         f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}).")
    return scores


def _score_case(case: str, pred_path: Path, ref_path: Path, label_set: Any, not_scored: Set[str],
                warn: Optional[Callable[[str], None]]) -> Tuple[List[Dict[str, Any]], Set[str]]:
    """The metric rows of one case, and the structures of ``not_scored`` it left out."""
    import numpy as np

    from headseg.io import read_segmentation
    from headseg.measure.metrics import evaluate_labels
    from headseg.resample import labels_on_common_grid

    pred = read_segmentation(pred_path, label_set)
    ref = read_segmentation(ref_path, label_set)
    pred, ref, grid_warning = labels_on_common_grid(pred, ref)  # never crop the prediction to the reference
    if grid_warning and warn is not None:
        warn(f"{case}: {grid_warning}")
    contoured = contoured_in(ref_path)
    present = set(np.unique(ref.array).tolist())
    contoured_keys = None
    if contoured is not None:
        contoured_keys = {getattr(label_set.find(c), "key", None) for c in contoured}
    skip: Set[str] = set()
    excluded: Set[str] = set()
    for s in label_set.structures:
        if contoured_keys is not None and s.key not in contoured_keys:
            skip.add(s.key)  # not contoured in this case (meta.json): missing, not background
        elif contoured_keys is None and s.label not in present:
            skip.add(s.key)  # missing from the reference: not contoured, never scored as zero
        elif s.key in not_scored:
            skip.add(s.key)  # a suspect contour (OpenKBP's manifest) or on the exclude list
            excluded.add(s.key)
    rows = evaluate_labels(pred.array, ref.array, {s.key: s.label for s in label_set.structures},
                           spacing_kji=ref.spacing_kji, skip=skip)
    return [{"case": case, **row} for row in rows], excluded


def summarise_rows(rows: Sequence[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Per structure, in the rows' order: the number of cases and each metric's mean and SD (NaNs left
    out; None where no value, or for the SD of one value)."""
    import numpy as np

    by_structure: Dict[str, List[Mapping[str, Any]]] = {}
    for r in rows:
        by_structure.setdefault(str(r["structure"]), []).append(r)
    out: Dict[str, Dict[str, Any]] = {}
    for name, items in by_structure.items():
        entry: Dict[str, Any] = {"cases": len(items)}
        for key in METRIC_COLUMNS:
            values = np.array([float(r[key]) for r in items if r.get(key) is not None], float)
            values = values[np.isfinite(values)]
            entry[f"{key}_mean"] = round(float(values.mean()), 4) if values.size else None
            entry[f"{key}_std"] = round(float(values.std(ddof=1)), 4) if values.size > 1 else None
        out[name] = entry
    return out


def write_evaluation(path: Path, rows: Sequence[Mapping[str, Any]],
                     summary: Optional[Mapping[str, Mapping[str, Any]]] = None,
                     extra_columns: Sequence[str] = ()) -> Optional[Path]:
    """``path``: one row per case and structure (``case``, ``structure``, :data:`METRIC_COLUMNS`, then
    ``extra_columns``; floats to 4 decimals), and ``<path stem>_summary.csv``: one row per structure
    (``structure``, ``cases``, each metric's ``_mean`` and ``_std``; empty where None), which is returned
    (None when there are no rows to summarise). ``summary`` defaults to :func:`summarise_rows`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["case", "structure", *METRIC_COLUMNS, *extra_columns],
                                extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()})
    summary = summary if summary is not None else summarise_rows(rows)
    if not summary:
        return None
    summary_path = path.with_name(path.stem + "_summary.csv")
    first = next(iter(summary.values()))
    with open(summary_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["structure", *first.keys()])
        writer.writeheader()
        for name, entry in summary.items():
            writer.writerow({"structure": name, **entry})
    return summary_path


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _spread(values: Sequence[float], digits: int) -> str:
    """``mean ± SD`` over several values, the value alone for one, ``-`` for none."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    mean = sum(finite) / len(finite)
    if len(finite) == 1:
        return f"{mean:.{digits}f}"
    sd = math.sqrt(sum((v - mean) ** 2 for v in finite) / (len(finite) - 1))
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def summary_lines(rows: Sequence[Mapping[str, Any]], cases: int, no_reference: Sequence[str] = (),
                  excluded: Optional[Mapping[str, Set[str]]] = None) -> List[str]:
    """The evaluation as a person reads it: per structure, the number of cases, DSC and HD95 (mean ± SD
    when several cases were scored, the value alone for one), then what was not scored and why."""
    by_structure: Dict[str, List[Mapping[str, Any]]] = {}
    for r in rows:
        by_structure.setdefault(str(r["structure"]), []).append(r)
    width = max([len(s) for s in by_structure] + [9])
    lines = [f"Scored {len({r['case'] for r in rows})} of {cases} case(s):",
             f"  {'structure':<{width}}  {'n':>3}  {'DSC':<15}  HD95 (mm)"]
    for structure, items in by_structure.items():
        dsc = _spread([_number(i.get("dsc")) for i in items], 3)
        hd95 = _spread([_number(i.get("hd95_mm")) for i in items], 1)
        lines.append(f"  {structure:<{width}}  {len(items):>3}  {dsc:<15}  {hd95}")
    if no_reference:
        lines.append(f"No reference, not scored: {', '.join(no_reference)}.")
    for case, keys in sorted((excluded or {}).items()):
        if keys:
            lines.append(f"Not scored in {case} (suspect or excluded contour): {', '.join(sorted(keys))}.")
    return lines
