"""The flags of a volume table in words, for the end of a run: ``left parotid: asymmetric (0.55 of the
right)``. The flags themselves are computed by :mod:`headseg.measure.quality` and :mod:`headseg.measure.volumes` against the
bands of :mod:`headseg.measure.bands`; this module only says them, so a user sees every flag without opening the
CSV or ``<case>_run.json``.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

from headseg.measure.bands import RECTI_TOTAL_CM3, Band, volume_band
from headseg.measure.quality import FRAGMENT_SHARE
from headseg.measure.volumes import VolumeRow

__all__ = ["flag_sentences", "FLAG_INTRO"]

#: The line before the flags of a run: what a flag means for the user.
FLAG_INTRO = "Flags (each asks for a look at that structure; none changes the result):"


def _band(row: VolumeRow) -> Optional[Band]:
    return RECTI_TOTAL_CM3 if row.derived else volume_band(row.structure)


def _words(row: VolumeRow, flag: str, pairs: Dict[Tuple[str, bool], Dict[str, VolumeRow]]) -> str:
    """One flag of one row as a short phrase."""
    volume = f"{row.volume_cm3:.2f} cm3"
    band = _band(row)
    if flag == "empty":
        return "empty (nothing was segmented)"
    if flag in ("volume_low", "volume_high"):
        where = "below" if flag == "volume_low" else "above"
        return f"volume {where} the plausible range ({volume}; plausible {band})" if band else f"volume {where} " \
            f"the plausible range ({volume})"
    if flag == "asymmetric":
        other_side = "left" if row.side == "right" else "right"
        other = pairs.get((row.structure, row.derived), {}).get(other_side)
        if other is not None and other.volume_cm3 > 0:
            return f"asymmetric ({row.volume_cm3 / other.volume_cm3:.2f} of the {other_side})"
        return "asymmetric"
    if flag == "wrong_side":
        return "on the other side of the patient's midline"
    if flag == "fragmented":
        return f"fragmented (over {FRAGMENT_SHARE:.0%} of what the model found lay outside its largest piece)"
    return flag


def flag_sentences(rows: Sequence[VolumeRow]) -> List[str]:
    """One sentence per flagged row of a case's volume table: ``left parotid: asymmetric (0.55 of the
    right)``, ``larynx: volume below the plausible range (1.20 cm3; plausible 3-65 cm3)``."""
    pairs: Dict[Tuple[str, bool], Dict[str, VolumeRow]] = {}
    for r in rows:
        if r.side:
            pairs.setdefault((r.structure, r.derived), {})[r.side] = r
    out = []
    for r in rows:
        flags = [f for f in r.flags.split(";") if f]
        if flags:
            name = r.name or (f"{r.side} {r.structure}".strip().replace("_", " "))
            out.append(f"{name}: {', '.join(_words(r, f, pairs) for f in flags)}")
    return out
