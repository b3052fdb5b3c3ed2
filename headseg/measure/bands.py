"""What a normal adult measures: the one table of plausible values that the flags in the volume table
(``headseg.measure.quality``), the run's warnings (``headseg.segment.pipeline``) and the orbit plausibility checks
(``headseg.measure.plausibility``) all read, so that they never contradict each other.

A value outside its band asks for a look; it never changes a result. For the orbit muscles the band is
the *normal adult* range: a muscle enlarged by thyroid eye disease (up to about 2.5 times the normal
mean) is flagged ``volume_high`` on purpose, because that is what the clinician follows.

**The superior rectus is the superior muscle group.** On CT the superior rectus and the levator
palpebrae superioris above it touch with no fat between them over most of their length, and CT
volumetry measures them together as the "superior muscle group". HeadSeg's ``superior_rectus`` is
that group, and its band includes the levator.

Sources, per entry: the published values listed in ``docs/orbit_real_ct.md`` ("Bands").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional, Tuple

__all__ = ["Band", "VOLUME_BANDS_CM3", "RECTI_TOTAL_CM3", "ASYMMETRY_RATIO", "TOTAL_ASYMMETRY_RATIO", "MUSCLE_HU",
           "MAX_FAT_SHARE", "FAT_HU", "volume_band"]


@dataclass(frozen=True)
class Band:
    """Plausible volume (cm3) of one structure per side, and where the numbers come from."""

    low: float
    high: float
    source: str

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def __str__(self) -> str:
        return f"{self.low:g}-{self.high:g} cm3"


#: Plausible volume per structure base key (one side).
VOLUME_BANDS_CM3: Dict[str, Band] = {
    # Recti of normal adults: MRI about 0.5-0.75 cm3 each (medial 0.69 +- 0.09, lateral 0.73 +- 0.08);
    # suggested QC band 0.3-1.2 cm3 per rectus.
    "medial_rectus": Band(0.3, 1.2, "normal adult rectus 0.3-1.2 (MRI 0.69 +- 0.09)"),
    "lateral_rectus": Band(0.3, 1.2, "normal adult rectus 0.3-1.2 (MRI 0.73 +- 0.08)"),
    "inferior_rectus": Band(0.3, 1.2, "normal adult rectus 0.3-1.2 (MRI about 0.57)"),
    # The superior group: superior rectus (MRI about 0.51) and levator together.
    "superior_rectus": Band(0.3, 1.4, "superior rectus with the levator (MRI about 0.51 + levator)"),
    # Intraorbital optic nerve 0.36-0.41 +- 0.08 cm3 (CT), 0.57 +- 0.18 (MRI).
    "optic_nerve": Band(0.15, 0.9, "intraorbital nerve 0.36-0.41 +- 0.08 (CT), 0.57 +- 0.18 (MRI)"),
    # Head and neck organs at risk (+-3 SD of published means; wide lower ends for partial RT contours).
    "parotid": Band(2.0, 55.0, "27.6 +- 8.2 M / 21.0 +- 6.5 F, +-3 SD"),
    "submandibular": Band(0.5, 16.0, "8.1 +- 2.6 (CT), +-3 SD"),
    "larynx": Band(3.0, 65.0, "34.4 +- 9.9, +-3 SD, lower end for partial contours"),
    "brainstem": Band(8.0, 50.0, "about 25-30 as RT contours (unverified)"),
    "optic_chiasm": Band(0.05, 1.5, "about 0.3-0.5 (unverified)"),
}

#: The four recti of one orbit together: CT volumetry of normal adults gives 1.6-1.9 +- 0.3 cm3, summed
#: MRI rectus volumes about 2.5-3 cm3.
RECTI_TOTAL_CM3 = Band(1.2, 3.2, "normal adults: CT 1.6-1.9 +- 0.3, summed MRI recti 2.5-3")
#: Left/right volume ratio of one structure (single muscles carry more partial-volume noise than totals).
ASYMMETRY_RATIO: Tuple[float, float] = (0.7, 1 / 0.7)
#: Left/right ratio of a side's total (the four recti): the same band.
TOTAL_ASYMMETRY_RATIO: Tuple[float, float] = ASYMMETRY_RATIO
#: Mean HU of what is called muscle, and the largest share of it that may read as fat (below FAT_HU).
MUSCLE_HU: Tuple[float, float] = (10.0, 100.0)
MAX_FAT_SHARE = 0.15
FAT_HU = -30.0


def volume_band(base_key: str) -> Optional[Band]:
    """The band of a structure's base key (``superior_rectus``, ``parotid``), or None when there is none."""
    return VOLUME_BANDS_CM3.get(base_key)
