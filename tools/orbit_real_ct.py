"""The label-free scorecard of an orbit model on real CTs, which have no muscle labels.

    python tools/orbit_real_ct.py CT [CT ...] [--model PACKAGE] [--json out.json] [--markdown out.md]
                                  [--png docs/images/orbit_real_ct.png] [--name-as LABEL ...]

Each CT (a DICOM folder or an image file) goes through ``headseg.segment.pipeline.segment_volume`` (orbit search
included) and ``headseg.review.scorecard.orbit_scorecard``: plausibility with the bands of ``headseg.measure.bands``,
re-imaging with 2 and 3 mm slices, the mirrored CT, a rectus thickened by 1 mm, and the resolution
check. ``--markdown`` writes the table that ``docs/orbit_real_ct.md`` shows. The picture shows, per
CT, an axial slice through both optic nerves and a coronal slice behind the globes, with the predicted
contours (no reference exists).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))



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
    parser.add_argument("--markdown", type=Path, default=None, help="write the scorecard table here")
    parser.add_argument("--name-as", nargs="*", default=None, help="names for the CTs in the outputs")
    args = parser.parse_args(argv)

    import torch

    from headseg.io import read_volume
    from headseg.review.compare import repeatability_bounds
    from headseg.review.scorecard import orbit_scorecard
    from headseg.segment.packages import default_package, load_package
    from headseg.segment.pipeline import segment_volume

    torch.set_num_threads(2)
    package = load_package(args.model) if args.model else default_package("orbit")
    model = package.load_model("cpu")
    bounds = repeatability_bounds("orbit")
    names = args.name_as or [p.name for p in args.cts]
    results, panels = {}, []
    for path, name in zip(args.cts, names):
        ct = read_volume(path)
        kept: Dict[str, Any] = {}

        def segment(volume, kept=kept):
            result = segment_volume(volume, package, device="cpu", model=model, uncertainty=False)
            kept.setdefault("first", result)
            return result.labelmap

        card = orbit_scorecard(ct, segment, package.label_set, bounds,
                               progress=lambda step, name=name: print(f"{name}: {step}", file=sys.stderr))
        first = kept["first"]
        results[name] = {"shape_ijk": list(ct.size_ijk), "spacing_mm": [round(s, 3) for s in ct.spacing],
                         "seconds": round(first.seconds, 1), **card.as_dict()}
        panels.append({"name": name, "ct": ct, "labels": first.labelmap.array, "label_set": first.label_set})
        print(f"{name}: {'passed' if card.passed else 'FAILED'} "
              f"{[c.name for c in card.checks if not c.passed]}", file=sys.stderr)
    out = {"model": package.name, "cases": results}
    print(json.dumps(out, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(_table(out), encoding="utf-8")
    if args.png:
        _draw(panels, args.png, f"{package.name} on real CTs (no reference labels: predicted contours only)")
    return 0 if all(r["passed"] for r in results.values()) else 1


def _table(out: Dict[str, Any]) -> str:
    """The scorecard as a Markdown table: one row per CT and check."""
    lines = [f"Model `{out['model']}`.", "", "| CT | recti R / L (cm3) | check | passed | what was measured |",
             "|---|---|---|---|---|"]
    for name, case in out["cases"].items():
        v = case["volumes_cm3"]
        totals = f"{v.get('extraocular_muscles_right', 0):.2f} / {v.get('extraocular_muscles_left', 0):.2f}"
        for n, check in enumerate(case["checks"]):
            detail = check["detail"].replace("|", "/")
            lines.append(f"| {name if n == 0 else ''} | {totals if n == 0 else ''} | {check['name']} | "
                         f"{'yes' if check['passed'] else '**no**'} | {detail} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
