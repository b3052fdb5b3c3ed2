"""One table of normal adult values (headseg.measure.bands): the volume table's flags, the run's warnings and the
orbit plausibility checks agree on every structure, just inside and just outside each band."""

from __future__ import annotations

import numpy as np
import pytest

from headseg.geometry import Volume
from headseg.labels import get_label_set
from headseg.measure.bands import ASYMMETRY_RATIO, RECTI_TOTAL_CM3, VOLUME_BANDS_CM3, volume_band
from headseg.measure.plausibility import orbit_plausibility
from headseg.measure.quality import structure_quality
from headseg.segment.pipeline import plausibility_notes

ORBIT = get_label_set("orbit")
VOXEL_MM = 0.5  # 0.125 mm3 voxels: volumes set to within 0.000125 cm3


def _map_with(volumes_cm3: dict) -> Volume:
    """An orbit label map whose structures have the given volumes (blocks of voxels, apart from each other)."""
    labels = np.zeros((60, 200, 200), np.uint8)
    flat = labels.reshape(-1)
    start = 0
    for key, cm3 in volumes_cm3.items():
        n = int(round(cm3 * 1000 / VOXEL_MM ** 3))
        flat[start:start + n] = ORBIT.by_key(key).label
        start += n + 1000
    spacing = np.diag([VOXEL_MM] * 3)
    return Volume.from_ijk_to_lps(labels, np.block([[spacing, np.zeros((3, 1))], [np.zeros((1, 3)), np.ones((1, 1))]]))


def _normal() -> dict:
    return {s.key: (0.45 if s.base_key == "optic_nerve" else 0.6) for s in ORBIT.structures}


def test_every_band_is_sourced_and_ordered():
    for key, band in VOLUME_BANDS_CM3.items():
        assert 0 < band.low < band.high and band.source, key
    assert ASYMMETRY_RATIO[0] * ASYMMETRY_RATIO[1] == pytest.approx(1.0)  # as strict one way as the other
    assert RECTI_TOTAL_CM3.high < 3.6  # the 3.6-4.3 cm3 per side seen on sharp real CTs is out of band


@pytest.mark.parametrize("key", ["superior_rectus_left", "lateral_rectus_right", "optic_nerve_left"])
@pytest.mark.parametrize("where", ["low", "high"])
def test_flags_warnings_and_plausibility_agree(key, where):
    band = volume_band(ORBIT.by_key(key).base_key)
    volumes = _normal()
    outside = band.low * 0.95 if where == "low" else band.high * 1.05
    volumes[key] = outside
    labelmap = _map_with(volumes)
    ct = labelmap.with_array(np.full(labelmap.shape, 40, np.int16))
    flags = structure_quality(labelmap, ORBIT)[key].flags
    notes = plausibility_notes(labelmap, ORBIT)
    failed = orbit_plausibility(ct, labelmap, ORBIT)["failed"]
    name = ORBIT.by_key(key).name
    assert f"volume_{where}" in flags
    assert any(n.startswith(f"{name}:") for n in notes), notes
    assert any(f.startswith(f"{ORBIT.by_key(key).base_key} {ORBIT.by_key(key).side} ") for f in failed), failed
    volumes[key] = band.low * 1.05 if where == "low" else band.high * 0.95  # just inside: no one complains
    volumes[key.replace("_left", "_right") if key.endswith("left") else key.replace("_right", "_left")] = volumes[key]
    labelmap = _map_with(volumes)
    assert not [f for f in structure_quality(labelmap, ORBIT)[key].flags if f.startswith("volume")]
    assert not [n for n in plausibility_notes(labelmap, ORBIT) if n.startswith(f"{name}:")]
    assert not [f for f in orbit_plausibility(ct, labelmap, ORBIT)["failed"] if ORBIT.by_key(key).base_key in f]
