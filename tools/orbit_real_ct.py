"""Plausibility of an orbit model on real CTs, which have no muscle labels: what can be checked without them.

    python tools/orbit_real_ct.py CT [CT ...] [--model PACKAGE] [--json out.json] [--png docs/images/orbit_real_ct.png]

Each CT (a DICOM folder or an image file) goes through ``headseg.pipeline.segment_volume`` (orbit search
included) and is checked against issue 12's bands, from ``../shared/ANATOMY_FACTS.md``: every structure
non-empty on both sides; each rectus 0.2-1.5 cm3, optic nerve 0.1-0.8 cm3, the four recti 1.0-3.5 cm3 per
side; left/right volume ratio 0.7-1.4; the muscle voxels' mean HU 10-100 with at most 15 % below -30 HU
(orbital fat). The picture shows, per CT, an axial slice through both optic nerves and a coronal slice
behind the globes, with the predicted contours (no reference exists).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

RECTI = ("superior_rectus", "lateral_rectus", "medial_rectus", "inferior_rectus")
RECTUS_CM3 = (0.2, 1.5)
NERVE_CM3 = (0.1, 0.8)
RECTI_TOTAL_CM3 = (1.0, 3.5)
RATIO = (0.7, 1.4)
MUSCLE_HU = (10.0, 100.0)
MAX_FAT_SHARE = 0.15


def check_case(ct, labelmap, label_set) -> Dict[str, Any]:
    """Volumes, ratios, muscle HU and the list of failed checks for one segmented CT."""
    voxel_cm3 = float(np.prod(ct.spacing)) / 1000.0
    arr, hu = labelmap.array, ct.array
    volumes: Dict[str, Dict[str, float]] = {}
    failed: List[str] = []
    muscle = np.zeros(arr.shape, bool)
    for s in label_set.structures:
        n = int((arr == s.label).sum())
        volumes.setdefault(s.base_key, {})[s.side] = round(n * voxel_cm3, 3)
        if s.base_key in RECTI:
            muscle |= arr == s.label
    for structure, sides in volumes.items():
        band = NERVE_CM3 if structure == "optic_nerve" else RECTUS_CM3
        for side, v in sides.items():
            if v == 0:
                failed.append(f"{structure} {side} empty")
            elif not band[0] <= v <= band[1]:
                failed.append(f"{structure} {side} {v:.2f} cm3 outside {band[0]}-{band[1]}")
        if min(sides.values()) > 0:
            ratio = sides["left"] / sides["right"]
            if not RATIO[0] <= ratio <= RATIO[1]:
                failed.append(f"{structure} left/right {ratio:.2f} outside {RATIO[0]}-{RATIO[1]}")
    totals = {side: round(sum(volumes[r][side] for r in RECTI), 3) for side in ("right", "left")}
    for side, v in totals.items():
        if not RECTI_TOTAL_CM3[0] <= v <= RECTI_TOTAL_CM3[1]:
            failed.append(f"recti total {side} {v:.2f} cm3 outside {RECTI_TOTAL_CM3[0]}-{RECTI_TOTAL_CM3[1]}")
    mean_hu = float(hu[muscle].mean()) if muscle.any() else float("nan")
    fat_share = float((hu[muscle] < -30).mean()) if muscle.any() else float("nan")
    if not MUSCLE_HU[0] <= mean_hu <= MUSCLE_HU[1]:
        failed.append(f"muscle mean HU {mean_hu:.0f} outside {MUSCLE_HU[0]:.0f}-{MUSCLE_HU[1]:.0f}")
    if not fat_share <= MAX_FAT_SHARE:
        failed.append(f"{100 * fat_share:.0f} % of muscle voxels below -30 HU (at most {100 * MAX_FAT_SHARE:.0f} %)")
    return {"volumes_cm3": volumes, "recti_total_cm3": totals, "muscle_mean_hu": round(mean_hu, 1),
            "muscle_share_below_minus30": round(fat_share, 3), "failed": failed, "plausible": not failed}


def _draw(panels: List[Dict[str, Any]], out_png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(panels), 2, figsize=(10, 4.6 * len(panels)), dpi=100, squeeze=False)
    colours = plt.get_cmap("tab10")
    for row, p in zip(axes, panels):
        ct, arr, label_set = p["ct"], p["labels"], p["label_set"]
        where = np.argwhere(arr > 0)
        lo, hi = where.min(axis=0), where.max(axis=0)
        nerve = np.isin(arr, [s.label for s in label_set.structures if s.base_key == "optic_nerve"])
        k_axial = int(np.median(np.argwhere(nerve)[:, 0])) if nerve.any() else int((lo[0] + hi[0]) // 2)
        j_coronal = int(lo[1] + 0.55 * (hi[1] - lo[1]))  # behind the globes, through the muscle cone
        pad = 12
        jj, ii = slice(max(0, lo[1] - pad), hi[1] + pad), slice(max(0, lo[2] - pad), hi[2] + pad)
        kk = slice(max(0, lo[0] - pad), hi[0] + pad)
        sk, sj, si = ct.spacing_kji
        z_down = ct.index_to_lps((0, 0, 1))[2] < ct.index_to_lps((0, 0, 0))[2]
        views = [("axial", ct.array[k_axial, jj, ii], arr[k_axial, jj, ii], sj / si, "upper"),
                 ("coronal", ct.array[kk, j_coronal, ii], arr[kk, j_coronal, ii], sk / si, "upper" if z_down else "lower")]
        for ax, (view, image, lab, aspect, origin) in zip(row, views):
            ax.imshow(np.clip(image, -200, 200), cmap="gray", aspect=aspect, origin=origin)
            for n, s in enumerate(label_set.structures):
                if (lab == s.label).any():
                    ax.contour((lab == s.label).astype(float), levels=[0.5], colors=[colours(n % 5)], linewidths=1.2)
            ax.set_title(f"{p['name']}: {view} (image left = patient right)", fontsize=10)
            ax.set_axis_off()
    from matplotlib.lines import Line2D

    names = [s.base_key.replace("_", " ") for s in panels[0]["label_set"].structures if s.side == "right"]
    fig.legend(handles=[Line2D([], [], color=colours(n), lw=2, label=name) for n, name in enumerate(names)],
               loc="lower center", ncol=5, fontsize=10, frameon=False)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png)
    plt.close(fig)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("cts", nargs="+", type=Path)
    parser.add_argument("--model", type=Path, default=None, help="orbit model package (default: the default one)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--png", type=Path, default=None)
    args = parser.parse_args(argv)

    import torch

    from headseg.io import read_volume
    from headseg.packages import default_package, load_package
    from headseg.pipeline import segment_volume

    torch.set_num_threads(2)
    package = load_package(args.model) if args.model else default_package("orbit")
    model = package.load_model("cpu")
    results, panels = {}, []
    for path in args.cts:
        ct = read_volume(path)
        result = segment_volume(ct, package, device="cpu", model=model, uncertainty=False)
        name = path.name
        results[name] = {"shape_ijk": list(ct.size_ijk), "spacing_mm": [round(s, 3) for s in ct.spacing],
                         "seconds": round(result.seconds, 1), **check_case(ct, result.labelmap, result.label_set)}
        panels.append({"name": name, "ct": ct, "labels": result.labelmap.array, "label_set": result.label_set})
        print(f"{name}: {'plausible' if results[name]['plausible'] else 'NOT plausible'} "
              f"{results[name]['failed']}", file=sys.stderr)
    out = {"model": package.name, "cases": results}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    if args.png:
        _draw(panels, args.png, f"{package.name} on real CTs (no reference labels: predicted contours only)")
    return 0 if all(r["plausible"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
