"""Bad inputs are refused with a sentence that names the problem."""

from __future__ import annotations

import numpy as np
import pytest

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.validation import check_ct


def ct_like(shape=(20, 64, 64), spacing=(1.0, 1.0, 2.0)) -> Volume:
    rng = np.random.default_rng(0)
    array = np.full(shape, -1000, np.int16)
    k, j, i = shape
    inner = (slice(None), slice(j // 4, 3 * j // 4), slice(i // 4, 3 * i // 4))
    array[inner] = 40 + rng.normal(0, 10, array[inner].shape).astype(np.int16)
    array[:, j // 2, i // 2] = 1200
    return Volume(array, spacing)


def test_plausible_ct_passes():
    assert check_ct(ct_like()) == []


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: ct_like(shape=(1, 64, 64)), "too small"),
        (lambda: ct_like(shape=(20, 8, 64)), "too small"),
        (lambda: Volume(np.zeros((20, 64, 64), np.int16), (1, 1, 2)), "constant"),
        (lambda: Volume(np.random.default_rng(0).uniform(0, 800, (20, 64, 64)), (1, 1, 2)), "MR"),
        (lambda: ct_like(spacing=(0.01, 1.0, 2.0)), "spacing"),
        (lambda: ct_like(spacing=(1.0, 1.0, 50.0)), "spacing"),
        (lambda: ct_like(shape=(20, 16, 16), spacing=(0.5, 0.5, 2.0)), "covers only"),
    ],
)
def test_bad_inputs_are_named(make, words):
    with pytest.raises(InputError, match=words):
        check_ct(make())


def test_nan_voxels_are_refused():
    volume = ct_like()
    array = volume.array.astype(np.float32)
    array[3, 3, 3] = np.nan
    array[4, 4, 4] = np.inf
    with pytest.raises(InputError, match="2 NaN or infinite"):
        check_ct(volume.with_array(array))


def test_huge_volume_refused_before_allocating():
    # A broadcast view: 4096 x 4096 x 2048 voxels would be 64 GiB as float32, but costs nothing here.
    array = np.broadcast_to(np.int16(0), (2048, 4096, 4096))
    with pytest.raises(InputError, match="far larger"):
        check_ct(Volume(array))
