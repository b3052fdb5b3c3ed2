"""What ``headseg evaluate`` scores, and how it says the result: the predictions of a results folder
(HeadSeg's own side files, such as the uncertainty maps, are not predictions), the structures a reference
must not be scored on (OpenKBP's suspect contours, or a user's exclude list), and a summary a person reads.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from headseg.errors import InputError
from headseg.io.cases import case_name, is_image

__all__ = ["SIDE_FILE_SUFFIXES", "prediction_files", "suspect_structures", "read_exclude_list",
           "summary_lines", "OPENKBP_MANIFEST"]

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
