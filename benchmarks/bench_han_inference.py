"""Inference time of the shipped head-and-neck model on a whole 128^3 case and on a 512 x 512 x 200 CT, with
and without test-time augmentation (targets: 20 s and 40 s end to end), and of a ``--candidate`` package
in the same run.

The 512 x 512 x 200 CT is an OpenKBP test case resampled onto a typical clinical grid over the same field
of view (about 0.98 x 0.98 x 1.6 mm), so the pipeline has to resample it to the model's 3.906 x 3.906 x 2.5
mm grid and the result back: the time a user waits for ``headseg segment --task han``.
The AnatomyNet paper reports 0.12 s per 178 x 302 x 225 volume on a P40 GPU (network only).

    python benchmarks/bench_han_inference.py --data /path/to/openkbp --case pt_306 --threads 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIR = REPO / "headseg" / "packaged_models" / "han-anatomynet-openkbp"  # the shipped model, or --model


def clinical_grid_like(ct, shape_kji: Sequence[int] = (200, 512, 512)):
    """A grid of ``shape_kji`` voxels over the same physical box as ``ct`` (LPS, axis-aligned)."""
    from headseg.resample import Grid

    box = np.asarray(ct.size_ijk, float) * np.asarray(ct.spacing)
    size_ijk = np.array(shape_kji[::-1], float)
    spacing = box / size_ijk
    first = np.asarray(ct.index_to_lps((-0.5, -0.5, -0.5))) + spacing / 2.0
    return Grid(tuple(int(n) for n in shape_kji), tuple(spacing), tuple(first), ct.direction.copy())


def _time(fn, repeats: int) -> List[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def cli_end_to_end(big, package_dir: Path, device: str, threads: int, tta: bool = False) -> Dict[str, float]:
    """``headseg segment`` on ``big`` written as a file, in a child process, as a user runs it: wall time
    (reading, segmenting, uncertainty map, writing every output) and the child's peak RSS."""
    import os
    import resource
    import subprocess
    import tempfile

    from headseg.io import write_volume

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clinical_ct.nrrd"
        write_volume(big, path)
        env = dict(os.environ, OMP_NUM_THREADS=str(threads)) if threads else None
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "headseg", "segment", str(path), "--task", "han", "--model",
                              str(package_dir), "--device", device, "-o", str(Path(tmp) / "out"), "--progress-format", "none",
                              *(["--tta"] if tta else [])],
                             capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            raise RuntimeError(f"headseg segment failed: {run.stderr[-1000:]}")
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2 ** 20  # kB on Linux
    return {"seconds": seconds, "peak_rss_gib": peak_gib}


def run(data_dir: Path, case: str, threads: int, repeats: int, device: str,
        package_dir: Path = PACKAGE_DIR) -> Dict[str, List[float]]:
    import torch

    from headseg.io import read_volume
    from headseg.resample import resample_to_grid
    from headseg.segment.packages import load_package
    from headseg.segment.pipeline import segment_volume
    from headseg.segment.preprocessing import model_grid_for, normalize
    from headseg.segment.windows import whole_volume_or_patches

    if threads:
        torch.set_num_threads(threads)
    package = load_package(package_dir)
    model = package.load_model(device)
    ct = read_volume(data_dir / "test" / case / "ct.nii.gz")
    big = resample_to_grid(ct, clinical_grid_like(ct), interpolation="linear", default_value=-1000.0,
                           dtype=np.int16)
    card = package.card
    model_grid = model_grid_for(ct, card.input.spacing_mm)
    x = normalize(resample_to_grid(ct, model_grid, "linear", -1000.0).array, card.input.normalization)
    classes = len(card.classes)
    inference = card.inference

    def network_only() -> None:
        whole_volume_or_patches(x[None].astype(np.float32), model, max_voxels=inference.max_voxels,
                                patch=inference.patch_kji, batch_size=1, device=torch.device(device),
                                amp=False, out_channels=classes, activation=card.output_activation)

    print(f"model {package.name} {card.architecture_params}, device {device}, torch threads "
          f"{torch.get_num_threads()}")
    print(f"case {case}: {ct.shape[::-1]} voxels (i, j, k) at {tuple(round(s, 3) for s in ct.spacing)} mm; "
          f"model grid {model_grid.shape[::-1]}")
    print(f"clinical-size CT: {big.shape[::-1]} voxels at {tuple(round(s, 3) for s in big.spacing)} mm")
    results = {
        "network only, whole model grid (no body crop)": _time(network_only, repeats),
        f"segment_volume, {'x'.join(map(str, ct.shape[::-1]))} case": _time(
            lambda: segment_volume(ct, package, device=device, model=model), repeats),
        "segment_volume, 512x512x200 CT": _time(lambda: segment_volume(big, package, device=device, model=model),
                                                repeats),
        "segment_volume, 512x512x200 CT, TTA": _time(
            lambda: segment_volume(big, package, device=device, model=model, tta=True), repeats),
    }
    for name, times in results.items():
        print(f"{name:<40} best {min(times):6.2f} s   all {[round(t, 2) for t in times]}")
    import resource

    print(f"peak RSS of this process (model, 512x512x200 CT and its probabilities): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20:.2f} GiB")
    cli = cli_end_to_end(big, package.path, device, threads)
    print(f"{'headseg segment, 512x512x200 CT file':<40} {cli['seconds']:6.2f} s   (target <= 20 s; read, segment, "
          f"uncertainty map, write), peak RSS {cli['peak_rss_gib']:.2f} GiB")
    cli_tta = cli_end_to_end(big, package.path, device, threads, tta=True)
    print(f"{'headseg segment --tta, same file':<40} {cli_tta['seconds']:6.2f} s   (target <= 40 s); ratio TTA / "
          f"plain {cli_tta['seconds'] / cli['seconds']:.2f}")
    results["cli"] = [cli["seconds"]]
    print("the AnatomyNet paper: 0.12 s per 178 x 302 x 225 volume on a P40 GPU (network only, paper's widths)")
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "openkbp")
    parser.add_argument("--case", default="pt_306")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--candidate", type=Path, default=None,
                        help="another head-and-neck package, timed in the same run (ratios to the shipped one)")
    args = parser.parse_args(argv)
    if not (args.data / "test" / args.case / "ct.nii.gz").is_file():
        print(f"No OpenKBP case {args.case} under {args.data}/test.", file=sys.stderr)
        return 2
    shipped = run(args.data, args.case, args.threads, args.repeats, args.device)
    if args.candidate:
        print(f"\ncandidate {args.candidate}:")
        candidate = run(args.data, args.case, args.threads, args.repeats, args.device, args.candidate)
        for name in shipped:
            print(f"ratio candidate / shipped, {name}: {min(candidate[name]) / min(shipped[name]):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
