"""Post-processing on constructed label maps whose correct answer is known voxel by voxel."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from headseg.errors import InputError
from headseg.segment.postprocess import (
    fill_holes_per_class,
    keep_largest_component_per_class,
    postprocess_labels,
    postprocess_probabilities,
)


def hollow_cube(shape=(20, 20, 20), value=1, outer=(4, 14), inner=(7, 10)) -> np.ndarray:
    labels = np.zeros(shape, np.uint8)
    a, b = outer
    c, d = inner
    labels[a:b, a:b, a:b] = value
    labels[c:d, c:d, c:d] = 0
    return labels


def test_argmax_of_probabilities():
    probabilities = np.zeros((3, 2, 2, 2), np.float32)
    probabilities[0] = 0.5
    probabilities[2, 0, 0, 0] = 0.9
    probabilities[1, 1, 1, 1] = 0.6
    labels = postprocess_probabilities(probabilities)
    assert labels.dtype == np.uint8 and labels.shape == (2, 2, 2)
    assert labels[0, 0, 0] == 2 and labels[1, 1, 1] == 1 and labels.sum() == 3
    with pytest.raises(InputError):
        postprocess_probabilities(np.zeros((2, 2, 2)))


def test_hole_inside_a_cube_is_filled():
    labels = hollow_cube()
    filled = fill_holes_per_class(labels)
    expected = np.zeros_like(labels)
    expected[4:14, 4:14, 4:14] = 1
    np.testing.assert_array_equal(filled, expected)
    assert labels.sum() == 10**3 - 3**3  # the input is untouched unless inplace=True


def test_open_cavity_is_not_a_hole():
    labels = hollow_cube()
    labels[8, 8, 10:14] = 0  # a tunnel from the cavity to the outside
    np.testing.assert_array_equal(fill_holes_per_class(labels), labels)


def test_hole_filling_never_takes_another_class():
    labels = hollow_cube(value=1)
    labels[8, 8, 8] = 2  # class 2 sits inside class 1's cavity
    filled = fill_holes_per_class(labels)
    assert filled[8, 8, 8] == 2
    assert np.count_nonzero(filled == 1) == 10**3 - 1
    only_class_2 = fill_holes_per_class(labels, classes=[2])
    np.testing.assert_array_equal(only_class_2, labels)  # class 1 untouched when not asked


@pytest.mark.parametrize("seed", range(8))
def test_hole_filling_matches_scipy_binary_fill_holes(seed):
    mask = np.random.default_rng(seed).random((12, 13, 14)) < 0.55
    ours = fill_holes_per_class(mask.astype(np.uint8)).astype(bool)
    np.testing.assert_array_equal(ours, ndimage.binary_fill_holes(mask))


def test_small_separate_blob_is_removed():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = 3
    labels[15:17, 15:17, 15:17] = 3
    labels[10, 10, 10] = 1  # a lone class-1 voxel: it is the largest (only) component of class 1
    cleaned = keep_largest_component_per_class(labels)
    assert np.count_nonzero(cleaned == 3) == 216 and cleaned[16, 16, 16] == 0
    assert cleaned[10, 10, 10] == 1


def test_connectivity_decides_what_is_connected():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = labels[3, 3, 3] = 1  # a diagonal: corner neighbours only
    labels[5, 5, 0:2] = 1  # a 2-voxel bar, far away
    assert np.count_nonzero(keep_largest_component_per_class(labels, connectivity=3)) == 3
    assert np.count_nonzero(keep_largest_component_per_class(labels, connectivity=1)) == 2
    with pytest.raises(InputError):
        keep_largest_component_per_class(labels, connectivity=4)


def test_touching_classes_keep_their_own_voxels():
    labels = np.zeros((12, 12, 20), np.uint8)
    labels[2:10, 2:10, 2:10] = 1
    labels[2:10, 2:10, 10:18] = 2  # touches class 1 along a face
    labels[0, 0, 0] = 1  # noise of class 1 touching nothing
    labels[11, 11, 19] = 2  # noise of class 2
    labels[5, 5, 5] = 0  # a hole in class 1
    result = postprocess_labels(labels)
    expected = np.zeros_like(labels)
    expected[2:10, 2:10, 2:10] = 1
    expected[2:10, 2:10, 10:18] = 2
    np.testing.assert_array_equal(result, expected)


def test_split_class_inside_a_multi_class_component():
    """Class 2 in two pieces, each touching the same class-1 block: the smaller piece is removed."""
    labels = np.zeros((10, 10, 30), np.uint8)
    labels[2:8, 2:8, 10:20] = 1
    labels[2:8, 2:8, 20:28] = 2  # 288 voxels
    labels[2:4, 2:4, 8:10] = 2  # 8 voxels on the other side of class 1
    result = keep_largest_component_per_class(labels)
    assert np.count_nonzero(result == 2) == 288 and np.count_nonzero(result == 1) == 360
    assert not result[2:4, 2:4, 8:10].any()


def test_options_and_class_selection():
    labels = hollow_cube(value=1)
    labels[0, 0, 0] = 1
    np.testing.assert_array_equal(
        postprocess_labels(labels, fill_holes=False, largest_component=False), labels
    )
    no_fill = postprocess_labels(labels, fill_holes=False)
    assert no_fill[0, 0, 0] == 0 and no_fill[8, 8, 8] == 0
    only_fill = postprocess_labels(labels, largest_component=False)
    assert only_fill[0, 0, 0] == 1 and only_fill[8, 8, 8] == 1
    untouched = postprocess_labels(labels, classes=[5])
    np.testing.assert_array_equal(untouched, labels)
    inplace = labels.copy()
    assert postprocess_labels(inplace, inplace=True) is inplace and inplace[8, 8, 8] == 1


def test_structure_at_the_array_border():
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[0:4, 0:4, 0:4] = 1
    labels[1:3, 1:3, 0] = 0  # a dent open to the array border: not a hole
    labels[1:3, 1:3, 1:3] = 0  # connected to the dent, so not a hole either
    np.testing.assert_array_equal(postprocess_labels(labels), labels)


def test_bad_label_maps_are_refused():
    with pytest.raises(InputError):
        postprocess_labels(np.zeros((4, 4)))
    with pytest.raises(InputError):
        postprocess_labels(np.zeros((4, 4, 4), np.float32))
    with pytest.raises(InputError):
        postprocess_labels(-np.ones((4, 4, 4), np.int16))


def test_empty_map_is_returned_unchanged():
    labels = np.zeros((5, 5, 5), np.uint8)
    np.testing.assert_array_equal(postprocess_labels(labels), labels)


def test_noisy_map_with_countless_touching_pieces_keeps_one_component_per_class():
    """A poorly trained model's output: every voxel random. Each class must end as one component, and
    the work must not grow with the number of pieces (this once kept a mask per piece: 18 GB)."""
    import time

    from scipy import ndimage

    from headseg.segment.postprocess import keep_largest_component_per_class

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, (48, 48, 48)).astype(np.uint8)
    start = time.perf_counter()
    out = keep_largest_component_per_class(labels)
    assert time.perf_counter() - start < 20
    for value in range(1, 6):
        _, count = ndimage.label(out == value, structure=np.ones((3, 3, 3)))
        assert count == 1
        assert np.all(labels[out == value] == value)
