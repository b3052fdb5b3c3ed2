"""Synthetic anatomical head CTs (headseg.synth): generation time, label volumes, and whether the
orbit search (headseg.locate.search.locate_orbits) finds both orbits.

What it prints, per case: voxel size, grid, pose, TED, CPU and wall seconds to generate, recti and
optic-nerve volumes per side (cm3), and the search result (globe centre error in mm, or why it failed);
then the means and the search success rate. CPU seconds are the honest cost on a shared machine: wall
time also counts the time other jobs held the cores.

Usage: ``python benchmarks/bench_synth.py [--cases 20] [--seed 0] [--spacing 0.6,0.6,1.0] [--no-search]``
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> None:
    from headseg.locate import OrbitNotFoundError, locate_orbits
    from headseg.synth import make_synthetic_head

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", help="i,j,k mm (default: drawn per case)")
    parser.add_argument("--no-search", action="store_true")
    args = parser.parse_args()
    spacing = tuple(float(v) for v in args.spacing.split(",")) if args.spacing else None
    cpu, wall, found, failures = [], [], 0, []
    for seed in range(args.seed, args.seed + args.cases):
        t_cpu, t_wall = time.process_time(), time.perf_counter()
        case = make_synthetic_head(seed, spacing=spacing)
        cpu.append(time.process_time() - t_cpu)
        wall.append(time.perf_counter() - t_wall)
        counts = np.bincount(case.labels.array.ravel(), minlength=11) * case.labels.voxel_volume_mm3 / 1000.0
        m = case.metadata
        line = (f"seed {seed:4d}  {m['spacing_mm'][0]:.2f}x{m['spacing_mm'][2]:.2f} mm  {tuple(m['shape_kji'])}  "
                f"pose {m['pose_deg']}  {'TED' if m['ted'] else '   '}  cpu {cpu[-1]:.1f} s wall {wall[-1]:.1f} s  "
                f"recti R {counts[1:5].sum():.2f} L {counts[6:10].sum():.2f}  ON {counts[5]:.2f}/{counts[10]:.2f}")
        if not args.no_search:
            try:
                err = [float(np.linalg.norm(loc.globe_center_lps - case.globe_centers_lps[loc.side]))
                       for loc in locate_orbits(case.image)]
                ok = max(err) < 5.0
                found += ok
                line += f"  search {'ok' if ok else 'WRONG'} ({max(err):.1f} mm)"
                if not ok:
                    failures.append(seed)
            except OrbitNotFoundError:
                line += "  search refused"
                failures.append(seed)
        print(line, flush=True)
    print(f"\n{args.cases} cases: CPU {np.mean(cpu):.2f} s per case (median {np.median(cpu):.2f}), "
          f"wall {np.mean(wall):.2f} s")
    if not args.no_search:
        print(f"orbit search: both orbits found in {found} of {args.cases}; failed on seeds {failures}")


if __name__ == "__main__":
    main()
