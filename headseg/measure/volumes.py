"""Per-structure volumes (the numbers clinicians follow over time), from a label map on any grid.

A volume is ``voxel count x voxel volume``, the voxel volume being ``|det(direction @ diag(spacing))|``,
so the number is exact for the label map that was given and the same as Slicer's for the same segment.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

from headseg.geometry import Volume
from headseg.measure.bands import TOTAL_ASYMMETRY_RATIO

CSV_COLUMNS = ("structure", "side", "voxels", "volume_cm3")
#: Review columns after the first four, so readers of the older files keep working (headseg.measure.quality).
QUALITY_COLUMNS = ("doubt", "flags")
#: The structure's one key (``parotid_right``, a group such as ``extraocular_muscles_right``), last: the key
#: ``--structures``, ``evaluate`` and the report use, so a table joins with them without gluing columns.
KEY_COLUMN = "key"
REVIEW_COLUMNS = CSV_COLUMNS + QUALITY_COLUMNS + (KEY_COLUMN,)


@dataclass(frozen=True)
class VolumeRow:
    structure: str  # label-set key without side (e.g. "superior_rectus") or a group (e.g. "extraocular_muscles")
    side: str  # "right", "left" or ""
    voxels: int
    volume_cm3: float
    name: str = ""  # human-readable name, e.g. "right superior rectus"
    derived: bool = False  # True for totals computed from other rows
    key: str = ""  # label-set key with side (e.g. "superior_rectus_right") or group name
    doubt: float = float("nan")  # headseg.measure.quality: mean uncertainty across the surface, [0, 1]
    flags: str = ""  # headseg.measure.quality.FLAG_CODES, ';'-separated

    def as_dict(self, quality: bool = True) -> Dict[str, object]:
        out: Dict[str, object] = {"structure": self.structure, "side": self.side, "voxels": self.voxels,
                                  "volume_cm3": round(self.volume_cm3, 4)}
        if quality:
            out["doubt"] = "" if self.doubt != self.doubt else round(self.doubt, 4)  # NaN -> empty
            out["flags"] = self.flags
            out[KEY_COLUMN] = self.key or (f"{self.structure}_{self.side}" if self.side else self.structure)
        return out


def with_quality(rows: Sequence[VolumeRow], quality: Mapping[str, Any]) -> List[VolumeRow]:
    """``rows`` with each structure's doubt and flags from ``quality`` (label-set key -> object with
    ``doubt`` and ``flags``); totals get ``asymmetric`` when the two sides' totals differ beyond
    :data:`TOTAL_ASYMMETRY_RATIO`."""
    out = []
    for r in rows:
        q = quality.get(r.key)
        out.append(replace(r, doubt=float(q.doubt), flags=";".join(q.flags)) if q is not None else r)
    totals: Dict[str, Dict[str, VolumeRow]] = {}
    for r in out:
        if r.derived and r.side in ("right", "left"):
            totals.setdefault(r.structure, {})[r.side] = r
    lo, hi = TOTAL_ASYMMETRY_RATIO
    for pair in totals.values():
        if set(pair) == {"right", "left"} and pair["right"].volume_cm3 > 0 and pair["left"].volume_cm3 > 0:
            if not lo <= pair["left"].volume_cm3 / pair["right"].volume_cm3 <= hi:
                for r in pair.values():
                    out[out.index(r)] = replace(r, flags="asymmetric")
    return out


def count_labels(labels: np.ndarray, max_label: int) -> np.ndarray:
    """Voxel count per label value 0..max_label, one pass over the array."""
    flat = labels.ravel()
    if flat.size and (flat.min() < 0):
        raise ValueError("Label maps must not contain negative values.")
    return np.bincount(flat.astype(np.int64, copy=False), minlength=max_label + 1)[: max_label + 1]


def volume_table(labelmap: Volume, label_set, include_empty: bool = True,
                 structures: Optional[Sequence[str]] = None) -> List[VolumeRow]:
    """One row per structure of ``label_set`` (optionally only ``structures`` keys), then derived totals
    (for the orbit: all four rectus muscles of each side)."""
    voxel_mm3 = labelmap.voxel_volume_mm3
    max_label = max(s.label for s in label_set.structures)
    counts = count_labels(labelmap.array, max(max_label, int(labelmap.array.max(initial=0))))
    rows: List[VolumeRow] = []
    for s in label_set.structures:
        if structures is not None and s.key not in structures:
            continue
        n = int(counts[s.label])
        if n == 0 and not include_empty:
            continue
        rows.append(VolumeRow(_base(s), s.side, n, n * voxel_mm3 / 1000.0, s.name, key=s.key))
    rows.extend(derived_rows(rows, label_set))
    return rows


def derived_rows(rows: Sequence[VolumeRow], label_set) -> List[VolumeRow]:
    """Group totals, e.g. all four rectus muscles of one side (thyroid eye disease follow-up).

    A group (``label_set.groups``: name -> structure keys) is reported only when all its members are
    in ``rows``, so a partial table never shows a misleading total."""
    out: List[VolumeRow] = []
    by_key = {r.key: r for r in rows if not r.derived}
    for group, members in (getattr(label_set, "groups", {}) or {}).items():
        parts = [by_key[k] for k in members if k in by_key]
        if len(parts) != len(members):
            continue
        sides = {p.side for p in parts}
        side = sides.pop() if len(sides) == 1 else ""
        structure = group[: -len(side) - 1] if side and group.endswith("_" + side) else group
        name = f"{side} {structure.replace('_', ' ')} (total)".strip()
        out.append(VolumeRow(structure, side, sum(r.voxels for r in parts), sum(r.volume_cm3 for r in parts),
                             name, derived=True, key=group))
    return out


def _base(structure) -> str:
    return getattr(structure, "base_key", None) or structure.key


def write_volume_csv(rows: Iterable[VolumeRow], path: Union[str, Path], case: Optional[str] = None,
                     append: bool = False, quality: bool = True) -> Path:
    """Write ``structure,side,voxels,volume_cm3,doubt,flags,key`` (``case`` first when given; without the
    last three when not ``quality``), atomically, with the permissions every other output gets (the umask's)."""
    path = Path(path)
    columns = (("case",) if case is not None else ()) + (REVIEW_COLUMNS if quality else CSV_COLUMNS)
    records = [dict(({"case": case} if case is not None else {}), **r.as_dict(quality)) for r in rows]
    if append and path.exists():
        with open(path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, fieldnames=columns).writerows(records)
        return path
    from headseg.io.files import write_atomically  # here: headseg.io pulls in more than a volume table needs

    def write(temp: Path) -> None:
        with open(temp, "w", newline="", encoding="utf-8") as f:  # a plain open follows the umask
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(records)

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, write, overwrite=True)
