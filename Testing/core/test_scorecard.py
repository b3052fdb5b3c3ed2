"""The label-free scorecard's transformed copies of a CT (headseg.review.scorecard): thick-slice re-imaging keeps
what the scanner would keep, mirroring swaps the patient's sides whatever the direction matrix, and an
inserted thickening adds fat-replacing muscle of the stated volume. The scorecard itself runs through
the real orbit model in Testing/orbit_model/test_orbit_scorecard.py."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_asserts import centroid_lps

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.labels import get_label_set
from headseg.review.scorecard import insert_growth, mirror_left_right, reimage_thick_slices
from headseg.synth.phantoms import make_head_phantom
from headseg.validation import orbit_resolution_note

ORBIT = get_label_set("orbit")


@pytest.fixture(scope="module")
def phantom():
    """The asymmetric geometric phantom (left orbit 1.25 times the right) on 0.5 x 0.5 x 1 mm."""
    return make_head_phantom(seed=3, spacing=(0.5, 0.5, 1.0))


def test_thick_slices_keep_the_mean_along_k_and_where_things_are(phantom):
    ct = phantom.image
    thick = reimage_thick_slices(ct, 3.0)
    assert thick.spacing == (0.5, 0.5, 3.0) and thick.shape[1:] == ct.shape[1:]
    assert thick.shape[0] == ct.shape[0] // 3
    # Each new slice is the mean of three old ones: the column sums agree over the slices both cover.
    covered = thick.shape[0] * 3
    assert np.allclose(thick.array.astype(float).sum(axis=0) * 3, ct.array[:covered].astype(float).sum(axis=0),
                       atol=1.5 * thick.shape[0] * 3)
    # A structure stays where it was in the patient (LPS), to within half a new slice.
    globe = phantom.labels.array == ORBIT.by_key("optic_nerve_right").label
    thick_mask = reimage_thick_slices(phantom.labels.with_array(globe.astype(np.int16) * 1000), 3.0).array > 500
    assert np.allclose(centroid_lps(ct, globe), centroid_lps(thick, thick_mask), atol=1.6)
    with pytest.raises(InputError, match="thicker than the scan's own"):
        reimage_thick_slices(ct, 1.0)


def test_non_integer_thickness_weights_partial_slices():
    ramp = Volume(np.arange(10, dtype=np.float32)[:, None, None] * np.ones((10, 2, 2), np.float32) * 10,
                  spacing=(1.0, 1.0, 1.0))
    thick = reimage_thick_slices(ramp, 2.5)
    # Slice 0 covers old slices 0, 1 and half of 2: (0 + 10 + 0.5 * 20) / 2.5 = 8.
    assert thick.shape[0] == 4 and thick.array[0, 0, 0] == pytest.approx(8.0)
    assert thick.origin[2] == pytest.approx(0.75)  # centre of 0..2.5 mm, the old first slice centred at 0


@pytest.mark.parametrize("flip_i", [False, True])
def test_mirror_swaps_the_patients_sides(phantom, flip_i):
    ct, labels = phantom.image, phantom.labels
    if flip_i:  # the same head stored with i running to the patient's right
        direction = np.diag([-1.0, 1.0, 1.0])
        origin = ct.index_to_lps((ct.size_ijk[0] - 1, 0, 0))
        ct = Volume(ct.array[:, :, ::-1].copy(), ct.spacing, origin, direction)
        labels = Volume(labels.array[:, :, ::-1].copy(), ct.spacing, origin, direction)
    mirrored = mirror_left_right(ct)
    mirrored_labels = mirror_left_right(labels)
    right = labels.array == ORBIT.by_key("medial_rectus_right").label
    moved = mirrored_labels.array == ORBIT.by_key("medial_rectus_right").label
    x_before, x_after = centroid_lps(labels, right)[0], centroid_lps(mirrored_labels, moved)[0]
    centre_x = ct.index_to_lps(np.array(ct.size_ijk) / 2.0 - 0.5)[0]
    assert x_before < centre_x < x_after  # LPS +x is the patient's left: the right muscle went left
    assert x_after - centre_x == pytest.approx(centre_x - x_before, abs=0.01)
    assert np.array_equal(np.sort(mirrored.array, axis=None), np.sort(ct.array, axis=None))


def test_insertion_adds_muscle_where_there_was_fat(phantom):
    ct, labels = phantom.image, phantom.labels
    value = ORBIT.by_key("inferior_rectus_left").label
    grown, added = insert_growth(ct, labels, value, thickness_mm=1.0)
    changed = grown.array != ct.array
    muscle = labels.array == value
    assert added > 0 and changed.sum() * ct.voxel_volume_mm3 / 1000 == pytest.approx(added, rel=0.05)
    assert not (changed & (labels.array > 0)).any()  # never inside any structure
    assert ct.array[changed].max() < -30  # it was fat
    assert abs(np.median(grown.array[changed]) - np.median(ct.array[muscle])) < 5  # now it reads as the muscle
    # 1 mm around the muscle's outline in the slice plane: its volume is about perimeter x 1 mm x height.
    assert 0.2 < added / (muscle.sum() * ct.voxel_volume_mm3 / 1000) < 1.5
    with pytest.raises(InputError, match="empty"):
        insert_growth(ct, labels.with_array(np.zeros_like(labels.array)), value)


def test_resolution_note_names_coarse_scans():
    fine = Volume(np.zeros((4, 4, 4), np.int16), spacing=(0.5, 0.5, 1.0))
    assert orbit_resolution_note(fine) is None
    assert orbit_resolution_note(fine.with_array(fine.array)) is None
    coarse_pixels = Volume(fine.array, spacing=(3.2, 3.2, 1.0))
    thick_slices = Volume(fine.array, spacing=(0.5, 0.5, 5.0))
    for scan in (coarse_pixels, thick_slices):
        note = orbit_resolution_note(scan)
        assert note is not None and "cannot be trusted" in note and "too coarse" in note
