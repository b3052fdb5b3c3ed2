"""Resampling between grids: exact on identical grids, probabilities, slab memory, reorientation."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from headseg.errors import InputError
from headseg.geometry import Volume
from headseg.resample import (
    Grid,
    as_grid,
    is_axis_aligned,
    make_grid,
    orientation_code,
    reorient_to,
    resample_labels_to_grid,
    resample_probabilities_to_grid,
    resample_to_grid,
    resample_to_spacing,
)

OBLIQUE = np.array([[math.cos(0.3), -math.sin(0.3), 0], [math.sin(0.3), math.cos(0.3), 0], [0, 0, 1.0]])
# i -> Superior, j -> Right, k -> Posterior: a permuted and flipped storage order ("SRP").
PERMUTED = np.array([[0, -1.0, 0], [0, 0, 1.0], [1.0, 0, 0]])


def sphere_labels(direction=np.eye(3), shape=(24, 28, 32), spacing=(1.0, 1.0, 1.5)) -> Volume:
    """Three labelled balls defined in physical space around LPS (0, 0, 0)."""
    spacing = np.asarray(spacing)
    size = np.asarray(shape[::-1])
    origin = -np.asarray(direction) @ ((size - 1) * spacing / 2.0)
    grid = Volume(np.zeros(shape, np.uint8), tuple(spacing), tuple(origin), direction)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    lps = (grid.ijk_to_lps @ np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)]))[:3].T
    array = np.zeros(i.size, np.uint8)
    for label, centre, radius in ((1, (-6, 0, 0), 5.0), (2, (6, 2, 3), 6.0), (3, (0, -7, -6), 4.0)):
        array[np.linalg.norm(lps - np.asarray(centre), axis=1) <= radius] = label
    return grid.with_array(array.reshape(shape))


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    return (np.arange(n_classes)[:, None, None, None] == labels[None]).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / max(1, a.sum() + b.sum())


@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE, PERMUTED], ids=["lps", "oblique", "permuted"])
def test_nearest_to_same_grid_is_identity(direction):
    labels = sphere_labels(direction)
    labels = labels.with_array(labels.array.astype(np.uint16) * 300)
    same = resample_to_grid(labels, labels, "nearest")
    assert same.array.dtype == np.uint16
    np.testing.assert_array_equal(same.array, labels.array)
    assert same.same_geometry(labels, tol=1e-12)
    np.testing.assert_array_equal(resample_labels_to_grid(labels, as_grid(labels)).array, labels.array)


def test_linear_to_same_grid_is_identity_and_dtype_rules():
    ct = sphere_labels(OBLIQUE)
    ct = ct.with_array(ct.array.astype(np.int16) * 333 - 1000)
    linear = resample_to_grid(ct, ct, "linear")
    assert linear.array.dtype == np.float32
    np.testing.assert_allclose(linear.array, ct.array, atol=1e-3)
    as_int = resample_to_grid(ct, ct, "bspline", dtype=np.int16)
    assert as_int.array.dtype == np.int16
    np.testing.assert_array_equal(as_int.array, ct.array)


def test_outside_source_gets_default_value():
    ct = Volume(np.full((4, 4, 4), 7, np.int16), (1, 1, 1), (0, 0, 0))
    grid = make_grid((1, 1, 1), None, (-10, 0, 0), (20, 4, 4))
    out = resample_to_grid(ct, grid, "linear", default_value=-1024)
    np.testing.assert_array_equal(out.array[:, :, :5], -1024)  # x = -10 .. -6, far outside
    np.testing.assert_array_equal(out.array[:, :, 10:14], 7)  # x = 0 .. 3, inside


def test_make_grid_size_is_ijk_and_shape_is_kji():
    grid = make_grid((0.5, 0.6, 2.0), OBLIQUE, (1, 2, 3), (4, 5, 6))
    assert grid.shape == (6, 5, 4) and grid.size_ijk == (4, 5, 6)
    np.testing.assert_allclose(grid.index_to_lps((1, 0, 0)), np.array([1, 2, 3]) + 0.5 * OBLIQUE[:, 0])
    assert isinstance(as_grid(grid.empty_volume()), Grid)
    assert as_grid(grid.empty_volume()).same_as(grid)


def test_resample_to_spacing_keeps_physical_box_and_content():
    labels = sphere_labels(OBLIQUE)
    coarse = resample_to_spacing(labels, (2.0, 2.0, 3.0), "nearest")
    assert coarse.spacing == (2.0, 2.0, 3.0)
    np.testing.assert_allclose(coarse.direction, OBLIQUE)
    def box(volume: Volume):  # outer faces: half a voxel before the first and after the last centre
        return volume.index_to_lps((-0.5, -0.5, -0.5)), volume.index_to_lps(np.array(volume.size_ijk) - 0.5)

    np.testing.assert_allclose(box(coarse)[0], box(labels)[0], atol=1e-9)
    np.testing.assert_allclose(box(coarse)[1], box(labels)[1], atol=1.0)  # rounding of the voxel count
    for label in (1, 2):
        fine_centroid = labels.index_to_lps(np.argwhere(labels.array == label).mean(0)[::-1])
        coarse_centroid = coarse.index_to_lps(np.argwhere(coarse.array == label).mean(0)[::-1])
        np.testing.assert_allclose(coarse_centroid, fine_centroid, atol=1.0)


def test_probabilities_on_same_grid_give_argmax():
    rng = np.random.default_rng(0)
    probs = rng.random((4, 5, 6, 7)).astype(np.float32)
    grid = Grid((5, 6, 7), (0.5, 0.7, 1.0), (3, 4, 5), OBLIQUE)
    labels = resample_probabilities_to_grid(probs, grid, grid)
    assert labels.array.dtype == np.uint8
    np.testing.assert_array_equal(labels.array, probs.argmax(0))


@pytest.mark.parametrize("direction", [np.eye(3), OBLIQUE], ids=["lps", "oblique"])
def test_probabilities_then_argmax_agrees_with_nearest_on_labels(direction):
    labels = sphere_labels(np.eye(3))
    probs = one_hot(labels.array, 4)
    target = make_grid((0.7, 0.8, 1.1), direction, (-14, -13, -16), (40, 36, 30))
    via_probs = resample_probabilities_to_grid(probs, labels, target)
    via_nearest = resample_labels_to_grid(labels, target)
    assert via_probs.same_geometry(via_nearest.with_array(via_probs.array))
    for label in (1, 2, 3):
        assert dice(via_probs.array == label, via_nearest.array == label) > 0.9
    assert (via_probs.array != via_nearest.array).mean() < 0.02


def test_probabilities_outside_source_are_background_and_slabs_do_not_matter():
    labels = sphere_labels(np.eye(3), shape=(10, 12, 14))
    probs = one_hot(labels.array, 4) * 0.6 + 0.1  # background stays likely everywhere
    target = make_grid((1.3, 1.3, 1.3), OBLIQUE, (-20, -20, -20), (30, 30, 30))
    whole = resample_probabilities_to_grid(probs, labels, target)
    sliced = resample_probabilities_to_grid(probs, labels, target, max_slab_voxels=1)  # one k slice at a time
    np.testing.assert_array_equal(whole.array, sliced.array)
    assert whole.array[0, 0, 0] == 0 and whole.array[-1, -1, -1] == 0  # corners lie outside the source
    assert set(np.unique(whole.array)) == {0, 1, 2, 3}


def test_probabilities_memory_is_bounded_by_slabs():
    """Peak extra memory of an 11-class resampling to a 256x256x120 grid: the naive way (11 full float32
    volumes) needs 346 MB; slabs of 1 M voxels must stay far below."""
    script = textwrap.dedent(
        """
        import json, resource, numpy as np
        from headseg.resample import Grid, resample_probabilities_to_grid
        probs = np.random.default_rng(0).random((11, 32, 64, 64)).astype(np.float32)
        source = Grid((32, 64, 64), (4.0, 4.0, 4.0), (0, 0, 0))
        target = Grid((120, 256, 256), (1.0, 1.0, 1.07), (0, 0, 0))
        resample_probabilities_to_grid(probs[:, :4, :8, :8], Grid((4, 8, 8)), Grid((4, 8, 8)))  # warm-up
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        labels = resample_probabilities_to_grid(probs, source, target, max_slab_voxels=1 << 20)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(json.dumps({"extra_mb": (after - before) / 1024.0, "labels": int(labels.array.max())}))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            env={"OMP_NUM_THREADS": "1", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "2",
                                 "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["labels"] == 10
    # 7.9 MB of labels + 11 x 4 MB float32 copy of probs + a few 4 MB slab buffers.
    print("extra MB:", measured["extra_mb"])
    assert measured["extra_mb"] < 120, measured


@pytest.mark.parametrize("direction, code", [(np.eye(3), "LPS"), (np.diag([-1.0, -1, 1]), "RAS"),
                                             (PERMUTED, "SRP"), (np.diag([1.0, -1, -1]), "LAI")])
def test_reorient_is_exact_permutation(direction, code):
    volume = sphere_labels(direction, shape=(9, 10, 11))
    volume = volume.with_array(np.arange(volume.array.size, dtype=np.int32).reshape(volume.shape))
    assert orientation_code(direction) == code
    lps = reorient_to(volume, "LPS")
    np.testing.assert_array_equal(lps.direction, np.eye(3))
    assert is_axis_aligned(lps.direction) and lps.array.flags["C_CONTIGUOUS"]
    # Every voxel kept its physical position: nearest resampling onto the new grid gives the same array.
    np.testing.assert_array_equal(resample_to_grid(volume, lps, "nearest").array, lps.array)
    assert sorted(lps.array.ravel().tolist()) == sorted(volume.array.ravel().tolist())
    back = reorient_to(lps, code)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.same_geometry(volume, tol=1e-9)


def test_reorient_oblique_stays_oblique():
    volume = sphere_labels(OBLIQUE @ np.diag([-1.0, 1, 1]), shape=(9, 10, 11))
    lps = reorient_to(volume, "LPS")
    assert not is_axis_aligned(lps.direction)
    assert np.all(np.diag(lps.direction) > 0.9)  # nearest to LPS, still rotated
    np.testing.assert_array_equal(resample_to_grid(volume, lps, "nearest").array, lps.array)


def test_bad_arguments_are_explained():
    volume = sphere_labels(shape=(4, 5, 6))
    with pytest.raises(InputError, match="nearest, linear, bspline"):
        resample_to_grid(volume, volume, "cubic")
    with pytest.raises(InputError, match="L/R, P/A, S/I"):
        reorient_to(volume, "LPR")
    with pytest.raises(InputError, match=r"\[C, 4, 5, 6\]"):
        resample_probabilities_to_grid(np.zeros((3, 4, 5, 7), np.float32), volume, volume)
