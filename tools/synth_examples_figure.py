"""Draw docs/images/synth_orbit_examples.png: a few SYNTHETIC anatomical head CTs (headseg.synth),
axial and coronal slices through the orbits with the true label contours.

Usage: ``python tools/synth_examples_figure.py [--seeds 0,1,8,9] [--out docs/images/synth_orbit_examples.png]``
"""

from __future__ import annotations

import argparse

import numpy as np

COLOURS = ["#28c828", "#326eff", "#ffe11e", "#ff82be", "#ffffff"] * 2


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headseg.synth import make_synthetic_head

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,8,9")
    parser.add_argument("--out", default="docs/images/synth_orbit_examples.png")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    fig, axes = plt.subplots(len(seeds), 3, figsize=(13.5, 3.9 * len(seeds)), facecolor="black")
    for row, seed in enumerate(seeds):
        case = make_synthetic_head(seed)
        img, lab = case.image.array.astype(float), case.labels.array
        si, sj, sk = case.image.spacing
        g = np.mean([case.globe_centers_lps[s] for s in ("right", "left")], axis=0)
        apex = np.mean([case.apex_lps[s] for s in ("right", "left")], axis=0)
        i0, j0, k0 = np.round(case.image.lps_to_index(g)).astype(int)
        k_ax = int(np.argmax((lab > 0).sum(axis=(1, 2))))
        j_mid = int(round(case.image.lps_to_index(g + 0.45 * (apex - g))[1]))
        m = case.metadata
        title = (f"seed {seed}: {m['spacing_mm'][0]:.2f} x {m['spacing_mm'][2]:.2f} mm, pose {m['pose_deg']} deg, "
                 f"noise {m['noise_hu']:.0f} HU{', TED' if m['ted'] else ''}")
        views = [
            (img[k_ax], lab[k_ax], si / sj, "axial (orbit level)", (-200, 200)),
            (img[k_ax], None, si / sj, "axial, bone window", (-1000, 1500)),
            (img[:, j_mid, :][::-1], lab[:, j_mid, :][::-1], sk / si, "coronal (mid-orbit)", (-200, 200)),
        ]
        for col, (im, lb, aspect, name, (lo, hi)) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(np.clip(im, lo, hi), cmap="gray", aspect=aspect, interpolation="nearest")
            if lb is not None and lb.any():
                for value in range(1, 11):
                    if (lb == value).any():
                        ax.contour(lb == value, levels=[0.5], colors=[COLOURS[value - 1]], linewidths=0.7)
            ax.set_title(f"{name}" if col else f"{title}\n{name}", color="white", fontsize=8, loc="left")
            ax.axis("off")
        del i0, j0, k0
    fig.suptitle("SYNTHETIC head CTs from headseg.synth (drawn from published anatomy, not patients). "
                 "Contours: true labels (green SR, blue LR, yellow MR, pink IR, white ON)",
                 color="white", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(args.out, dpi=80, facecolor="black")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
