"""Measure the automatic orbit search on a set of CTs and draw what it found (docs/orbit_search.md).
OPENKBP below is the OpenKBP folder (patients under train/, validation/ and test/).

    # all OpenKBP CTs: per-case table + montage of every localised case (+ overview sheets of the refused)
    python tools/orbit_search_report.py openkbp --data /path/to/openkbp \
        --csv docs/orbit_search_openkbp.csv --montage docs/images/orbit_search_openkbp.png \
        --refused-montage /tmp/orbit_refused.png
    # any CTs (files or DICOM folders): table + montage of the localised ones, overviews of the refused
    python tools/orbit_search_report.py images CT.nii.gz dicom_folder/ --csv out.csv --montage out.png
    # synthetic anatomical heads (headseg.synth), all with both orbits in view: table only
    python tools/orbit_search_report.py synth --seeds 0-23 --csv /tmp/synth.csv
    # redraw the pictures from an earlier table without searching again
    python tools/orbit_search_report.py openkbp --data /path/to/openkbp --from-csv docs/orbit_search_openkbp.csv \
        --montage docs/images/orbit_search_openkbp.png
    # a picture readable at page size: 12 localised cases, evenly spread over the table
    python tools/orbit_search_report.py openkbp --data /path/to/openkbp --from-csv docs/orbit_search_openkbp.csv \
        --montage docs/images/orbit_search_openkbp_sample.png --sample 12 --columns 2

The montage shows, per localised case and side, an axial and a coronal slice through the centre of that
side's crop (the grid of the default orbit model's card) with the crop drawn (right orbit red, left
orbit green), 1 mm pixels, window -250..350 HU, the patient's right on the picture's left. Refused cases
get two coronal slices through the face where the globes would lie (30, 42 and 54 mm behind its front), so
one can judge by eye whether both orbits were in view.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from headseg.geometry import Volume  # noqa: E402
from headseg.io import read_volume  # noqa: E402
from headseg.locate import SIDES, orbit_box, orbit_crop_grid, search_orbits  # noqa: E402
from headseg.segment.model_card import InputGrid  # noqa: E402

WINDOW_HU = (-250.0, 350.0)
CHECKS = ("globes", "distance", "symmetry", "depth", "orbit_walls", "cranium", "field_of_view")
COLOURS = {"right": (230, 40, 40), "left": (40, 200, 40)}
TILE_MM = (150, 110)  # width (x) and height (y or z) of a thumbnail, 1 mm pixels


# -- measuring ---------------------------------------------------------------------------------------------
def _case_name(path: Path) -> str:
    """A file's name without its extension; a case folder's name for its ``image.*`` (headseg-train's layout)."""
    name = path.name.replace(".nii.gz", "").replace(".nii", "").replace(".nrrd", "")
    return path.parent.name if name == "image" else name


def measure(cases: Sequence[Tuple[str, Path]]) -> List[Dict[str, object]]:
    rows = []
    for n, (name, path) in enumerate(cases, 1):
        start = time.perf_counter()
        report = search_orbits(read_volume(path))
        row: Dict[str, object] = {"case": name, "path": str(path), "outcome": "localised" if report.found else "refused",
                                  "confidence": round(report.confidence, 3)}  # fmt: skip
        for check in CHECKS:
            row[check] = round(report.checks[check], 3) if check in report.checks else ""
        for side in SIDES:
            g = report.globes.get(side)
            row[f"{side}_globe_lps"] = "" if g is None else " ".join(f"{v:.1f}" for v in g)
        row["distance_mm"] = round(report.details.get("distance_mm", float("nan")), 1) if report.details else ""
        row["missing"] = report.missing
        row["seconds"] = round(time.perf_counter() - start, 2)
        labels = path.parent / "labels.nrrd"  # a headseg-train case folder with orbit labels: were they cropped?
        if report.found and path.name.startswith("image.") and labels.is_file():
            row.update(_labels_in_crops(read_volume(labels, allow_non_ct=True), report.globes))
        rows.append(row)
        print(f"[{n}/{len(cases)}] {name}: {row['outcome']} {report.confidence:.2f} {report.missing}", flush=True)
    return rows


def _labels_in_crops(labels: Volume, globes: Dict[str, np.ndarray]) -> Dict[str, object]:
    """Share of each side's labelled voxels (the orbit label set's structures of that side) inside its crop."""
    from headseg.labels import get_label_set

    orbit = get_label_set("orbit")
    out: Dict[str, object] = {}
    for side in SIDES:
        kji = np.argwhere(np.isin(labels.array, [s.label for s in orbit.structures if s.side == side]))
        if not len(kji):
            continue
        lps = kji[:, ::-1] @ labels.ijk_to_lps[:3, :3].T + labels.ijk_to_lps[:3, 3]
        box = orbit_box(globes[side], side)
        out[f"labels_in_crop_{side}"] = round(float(np.all((lps >= box.min_lps) & (lps <= box.max_lps), axis=1).mean()), 3)
    return out


def write_csv(rows: List[Dict[str, object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        fields = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "path"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path, cases: Dict[str, Path]) -> List[Dict[str, object]]:
    with open(path) as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row["path"] = str(cases[row["case"]])
    return rows


# -- drawing -------------------------------------------------------------------------------------------------
def _slice(volume_sitk, origin: np.ndarray, u: np.ndarray, v: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """A 2D picture (rows along v, columns along u, 1 mm pixels) of the CT starting at LPS ``origin``."""
    import SimpleITK as sitk

    w = np.cross(u, v)
    direction = np.stack([u, v, w], axis=1)
    image = sitk.Resample(volume_sitk, [int(size[0]), int(size[1]), 1], sitk.Transform(), sitk.sitkLinear,
                          tuple(float(c) for c in origin), (1.0, 1.0, 1.0), tuple(direction.ravel()), -1000.0,
                          sitk.sitkFloat32)  # fmt: skip
    hu = sitk.GetArrayFromImage(image)[0]
    grey = np.clip((hu - WINDOW_HU[0]) / (WINDOW_HU[1] - WINDOW_HU[0]) * 255.0, 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=2)


def _crop_extent(box, side: str, card_input: InputGrid) -> Tuple[np.ndarray, np.ndarray]:
    """LPS min and max corners of the crop the default orbit model sees for this box."""
    assert card_input.window_kji is not None  # an orbit model's input
    grid = orbit_crop_grid(box, card_input.spacing_mm, (None,) + tuple(card_input.window_kji[1:]), side)
    half = np.asarray(grid.spacing) * np.asarray(grid.size_ijk) / 2
    return box.center_lps - half, box.center_lps + half


def _default_card_input() -> InputGrid:
    from headseg.segment.packages import default_package

    return default_package("orbit").card.input


def case_tiles(volume: Volume, globes: Dict[str, np.ndarray], card_input) -> List[np.ndarray]:
    """[axial right, coronal right, axial left, coronal left] thumbnails with the crops drawn."""
    from PIL import Image, ImageDraw

    image = volume.to_sitk()
    mid = (globes["right"] + globes["left"]) / 2
    extents = {s: _crop_extent(orbit_box(globes[s], s), s, card_input) for s in SIDES}
    tiles = []
    w, h = TILE_MM
    for side in SIDES:
        lo, hi = extents[side]
        centre = (lo + hi) / 2
        # axial: columns along +x (patient right on the left), rows along +y (anterior at the top)
        ax_origin = np.array([mid[0] - w / 2, mid[1] - 50.0, centre[2]])
        co_origin = np.array([mid[0] - w / 2, centre[1], mid[2] + h / 2])
        views = [
            (_slice(image, ax_origin, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]), (w, h)), ax_origin, (0, 1), 1.0),
            (_slice(image, co_origin, np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), (w, h)), co_origin, (0, 2), -1.0),
        ]
        for pixels, origin, (a, b), sign in views:
            picture = Image.fromarray(pixels)
            draw = ImageDraw.Draw(picture)
            for other in SIDES:
                olo, ohi = extents[other]
                depth_axis = 3 - a - b
                if not (olo[depth_axis] <= origin[depth_axis] <= ohi[depth_axis]):
                    continue
                x0, x1 = olo[a] - origin[a], ohi[a] - origin[a]
                y0, y1 = sorted(((olo[b] - origin[b]) * sign, (ohi[b] - origin[b]) * sign))
                draw.rectangle([x0, y0, x1, y1], outline=COLOURS[other], width=2 if other == side else 1)
            draw.text((3, 2), ("ax " if b == 1 else "cor ") + side[0].upper(), fill=(255, 255, 0))
            tiles.append(np.asarray(picture))
    return tiles


def overview_tiles(volume: Volume, height_px: int = 180, size_mm: float = 180.0) -> List[np.ndarray]:
    """Three coronal slices through the face, 30, 42 and 54 mm behind its most anterior point in the top 150 mm
    of the body (where the globes lie when they are in view), over the top 180 mm of the body: enough to
    see whether both orbits are in the field of view."""
    from PIL import Image

    array = volume.array
    k, j, i = array.shape
    step = np.maximum(1, np.round(4.0 / np.asarray(volume.spacing[::-1])).astype(int))  # ~4 mm, [k, j, i]
    dense = np.argwhere(array[:: step[0], :: step[1], :: step[2]] > -300) * step
    if len(dense):
        lps = dense[:, ::-1] @ volume.ijk_to_lps[:3, :3].T + volume.ijk_to_lps[:3, 3]
        top = lps[:, 2].max()
        upper = lps[lps[:, 2] > top - 150.0]
        middle_x, front = float(np.median(upper[:, 0])), float(np.percentile(upper[:, 1], 0.5))
    else:
        centre = volume.index_to_lps(((i - 1) / 2, (j - 1) / 2, (k - 1) / 2))
        middle_x, front, top = centre[0], centre[1] - size_mm / 2, centre[2] + size_mm / 2
    image = volume.to_sitk()
    tiles = []
    for behind in (30.0, 42.0, 54.0):
        origin = np.array([middle_x - size_mm / 2, front + behind, top + 10.0])
        n = int(size_mm)
        pixels = _slice(image, origin, np.array([1.0, 0, 0]), np.array([0, 0, -1.0]), (n, n))
        tiles.append(np.asarray(Image.fromarray(pixels).resize((height_px, height_px))))
    return tiles


def compose(entries: List[Tuple[str, List[np.ndarray]]], columns: int, path: Path, title: str) -> None:
    """Lay the cases out in a grid, each with its label above its tiles, and save a PNG."""
    from PIL import Image, ImageDraw

    if not entries:
        return
    gap, label_h = 4, 14
    case_w = max(sum(t.shape[1] for t in tiles) + gap * (len(tiles) - 1) for _, tiles in entries)
    case_h = max(max(t.shape[0] for t in tiles) for _, tiles in entries) + label_h
    rows = (len(entries) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * (case_w + 3 * gap) + gap, rows * (case_h + gap) + 24), (30, 30, 30))
    draw = ImageDraw.Draw(sheet)
    draw.text((6, 5), title, fill=(255, 255, 255))
    for n, (label, tiles) in enumerate(entries):
        x0 = gap + (n % columns) * (case_w + 3 * gap)
        y0 = 24 + (n // columns) * (case_h + gap)
        draw.text((x0, y0), label, fill=(255, 255, 255))
        x = x0
        for tile in tiles:
            sheet.paste(Image.fromarray(tile), (x, y0 + label_h))
            x += tile.shape[1] + gap
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path, optimize=True)
    print(f"wrote {path} ({sheet.size[0]} x {sheet.size[1]} px, {len(entries)} cases)")


def _globes(row: Dict[str, object]) -> Dict[str, np.ndarray]:
    return {s: np.array([float(v) for v in str(row[f"{s}_globe_lps"]).split()]) for s in SIDES}


def draw(rows: List[Dict[str, object]], montage: Optional[Path], refused_montage: Optional[Path],
         label: str, columns: int = 3, sample: Optional[int] = None) -> None:
    """The montages; ``sample``: only that many localised cases, evenly spread over the table (a picture
    readable at page size, beside the full one)."""
    card_input = _default_card_input()
    localised = [r for r in rows if r["outcome"] == "localised"]
    refused = [r for r in rows if r["outcome"] != "localised"]
    if montage is not None:
        shown = localised
        which = f"the {len(localised)} localised cases of {len(rows)}"
        if sample and sample < len(localised):
            shown = [localised[round(n * (len(localised) - 1) / max(sample - 1, 1))] for n in range(sample)]
            which = f"{sample} of the {len(localised)} localised cases of {len(rows)}, evenly spread"
        entries = [(f"{r['case']}  conf {float(r['confidence']):.2f}",
                    case_tiles(read_volume(r["path"]), _globes(r), card_input)) for r in shown]  # fmt: skip
        compose(entries, columns, montage, f"{label}: {which} "
                "(red = right orbit crop, green = left; patient right on the left)")
    if refused_montage is not None:
        entries = [(f"{r['case']}", overview_tiles(read_volume(r["path"]))) for r in refused]
        compose(entries, 6, refused_montage, f"{label}: the {len(refused)} refused cases, coronal slices 30, 42 and 54 mm "
                "behind the front of the face (patient right on the left)")


def openkbp_cases(root: Path) -> List[Tuple[str, Path]]:
    cases = []
    for split in ("train", "validation", "test"):
        for ct in sorted((root / split).glob("*/ct.nii.gz"), key=lambda p: int(p.parent.name.split("_")[-1])):
            cases.append((f"{split}/{ct.parent.name}", ct))
    return cases


def measure_synth(seeds: Sequence[int], max_voxels: float = 2.5e6) -> List[Dict[str, object]]:
    """The search on SYNTHETIC anatomical heads (headseg.synth) with their drawn voxel size, pose, field
    of view, headrest, noise and streaks; all have both orbits in view, so all must be localised."""
    from headseg.synth import make_synthetic_head

    rows = []
    for seed in seeds:
        case = make_synthetic_head(int(seed), max_voxels=max_voxels)
        start = time.perf_counter()
        report = search_orbits(case.image)
        meta = case.metadata
        error = [float(np.linalg.norm(report.globes[s] - case.globe_centers_lps[s])) for s in SIDES] if report.found else []
        rows.append({"case": f"synth_{seed}", "outcome": "localised" if report.found else "refused",
                     "confidence": round(report.confidence, 3),
                     "max_error_mm": round(max(error), 2) if error else "",
                     "spacing_mm": " ".join(f"{v:.2f}" for v in case.image.spacing),
                     "pose_deg": " ".join(f"{v:.1f}" for v in meta.get("pose_deg", ())),
                     "headrest": meta.get("headrest"), "metal_fillings": meta.get("metal_fillings"),
                     "noise_hu": meta.get("noise_hu"), "ted": meta.get("ted"), "missing": report.missing,
                     "seconds": round(time.perf_counter() - start, 2)})  # fmt: skip
        print(f"synth {seed}: {rows[-1]['outcome']} {report.confidence:.2f} error {rows[-1]['max_error_mm']} "
              f"{report.missing}", flush=True)
    return rows


def _seed_range(text: str) -> List[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    kbp = sub.add_parser("openkbp", help="every CT of the OpenKBP data (train, validation, test)")
    kbp.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "openkbp")
    images = sub.add_parser("images", help="CT files or DICOM folders")
    images.add_argument("paths", nargs="+", type=Path)
    synth = sub.add_parser("synth", help="synthetic anatomical heads of headseg.synth (table only)")
    synth.add_argument("--seeds", default="0-23", help="seed range, e.g. 0-23")
    synth.add_argument("--csv", type=Path)
    for p in (kbp, images):
        p.add_argument("--csv", type=Path, help="write the per-case table here")
        p.add_argument("--from-csv", type=Path, help="take the outcomes from this table instead of searching")
        p.add_argument("--montage", type=Path, help="picture of every localised case's crops")
        p.add_argument("--refused-montage", type=Path, help="overview picture of every refused case")
        p.add_argument("--columns", type=int, default=3)
        p.add_argument("--sample", type=int, help="draw only this many localised cases, evenly spread")
    args = parser.parse_args(argv)
    if args.command == "synth":
        rows = measure_synth(_seed_range(args.seeds))
        if args.csv:
            write_csv(rows, args.csv)
        found = sum(r["outcome"] == "localised" for r in rows)
        print(f"{found} localised, {len(rows) - found} refused of {len(rows)}")
        return 0
    if args.command == "openkbp":
        cases, label = openkbp_cases(args.data), "OpenKBP"
    else:
        cases, label = [(_case_name(p), p) for p in args.paths], "CT"
    rows = read_csv(args.from_csv, dict(cases)) if args.from_csv else measure(cases)
    if args.csv and not args.from_csv:
        write_csv(rows, args.csv)
    found = sum(r["outcome"] == "localised" for r in rows)
    print(f"{found} localised, {len(rows) - found} refused of {len(rows)}")
    draw(rows, args.montage, args.refused_montage, label, args.columns, args.sample)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
