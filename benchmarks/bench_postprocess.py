"""Post-processing speed on a CT-sized label map: ours (bounding boxes) vs a whole-array baseline.

The map is 512 x 512 x 300 (i, j, k) with 10 small structures (muscle/nerve-sized boxes with an
internal cavity) plus noise: for every class, blobs scattered over the whole volume (so that each
class's bounding box is nearly the whole array -- the hard case for bounding-box tricks) and single
stray voxels. The baseline does the same per class on the whole array (label the class, keep the
largest, label the background, fill enclosed parts), fill-then-keep as in the paper. Both outputs are
compared voxel by voxel.

Usage: ``python benchmarks/bench_postprocess.py [--quick]``
"""

from __future__ import annotations

import argparse
import time
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

from headseg.segment.postprocess import postprocess_labels

STRUCTURES = 10


def make_label_map(shape: Tuple[int, int, int], blobs_per_class: int, strays_per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, np.uint8)
    k_size, j_size, i_size = shape
    for value in range(1, STRUCTURES + 1):
        # A structure about the size of a rectus muscle at 0.4 mm in-plane: 30 slices x 20 x 12 voxels.
        k0 = int(rng.integers(10, k_size - 40))
        j0 = int(rng.integers(10, j_size - 30))
        i0 = int(rng.integers(10, i_size - 20))
        labels[k0 : k0 + 30, j0 : j0 + 20, i0 : i0 + 12] = value
        labels[k0 + 12 : k0 + 16, j0 + 8 : j0 + 12, i0 + 4 : i0 + 8] = 0  # cavity to fill
    for value in range(1, STRUCTURES + 1):
        for _ in range(blobs_per_class):
            k, j, i = (int(rng.integers(0, n - 3)) for n in shape)
            region = labels[k : k + 3, j : j + 3, i : i + 3]
            region[region == 0] = value
        coordinates = [rng.integers(0, n, strays_per_class) for n in shape]
        stray = labels[tuple(coordinates)] == 0
        labels[tuple(c[stray] for c in coordinates)] = value
    return labels


def baseline(labels: np.ndarray) -> np.ndarray:
    """Per class on the whole array: fill holes, then keep the largest 26-connected component."""
    result = labels.copy()
    structure = ndimage.generate_binary_structure(3, 3)
    for value in range(1, STRUCTURES + 1):
        mask = result == value
        background, count = ndimage.label(~mask)
        border = np.unique(
            np.concatenate([np.take(background, e, axis=a).ravel() for a in range(3) for e in (0, -1)])
        )
        holes = ~np.isin(background, border)
        result[holes & (result == 0)] = value
        mask = result == value
        components, count = ndimage.label(mask, structure)
        if count > 1:
            sizes = np.bincount(components.ravel())
            sizes[0] = 0
            result[mask & (components != sizes.argmax())] = 0
    return result


def best_time(run, repeats: int) -> Tuple[np.ndarray, float]:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - start)
    return result, best


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="256 x 256 x 150 map, one repeat")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 3, quick 1)")
    args = parser.parse_args(argv)
    shape = (150, 256, 256) if args.quick else (300, 512, 512)
    repeats = args.repeats or (1 if args.quick else 3)
    labels = make_label_map(shape, blobs_per_class=20, strays_per_class=200)
    noise_components = int(ndimage.label(labels > 0, ndimage.generate_binary_structure(3, 3))[1]) - STRUCTURES

    ours, t_ours = best_time(lambda: postprocess_labels(labels), repeats)
    reference, t_base = best_time(lambda: baseline(labels), 1)
    print(
        f"label map {shape} (k, j, i) = {labels.size / 1e6:.1f} M voxels, {STRUCTURES} structures, "
        f"~{noise_components} noise components; best of {repeats}"
    )
    print(f"{'method':44s} {'time s':>8s} {'vs ours':>8s}")
    print(f"{'ours: postprocess_labels (bounding boxes)':44s} {t_ours:8.2f} {1.0:8.2f}")
    print(f"{'baseline: per class on the whole array':44s} {t_base:8.2f} {t_base / t_ours:8.2f}")
    print(
        f"identical output: {bool(np.array_equal(ours, reference))}; "
        f"voxels changed by post-processing: {int(np.count_nonzero(ours != labels))}"
    )


if __name__ == "__main__":
    main()
