"""Make the extension's images without Slicer: the two Sample Data thumbnails and the orbit screenshot.

    python tools/make_slicer_images.py            # writes the files listed below (about 15 s on a CPU)

* ``OrbitSegmentation/Resources/SampleData/OrbitSegmentationSample.png``: an axial slice of the synthetic
  orbit sample (the phantom ``headseg.slicer.sample_data`` makes);
* ``AnatomyNetHaN/Resources/SampleData/AnatomyNetHaNSample.png``: an axial slice of the OpenKBP sample CT;
* ``docs/screenshot-orbit.png``: the shipped orbit model's real result on the orbit sample -- the output of
  ``headseg segment`` drawn over the CT with matplotlib, with its volume table. It is NOT a screenshot of
  Slicer (no Slicer application runs here), and says so in its caption.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ORBIT_THUMBNAIL = REPO / "OrbitSegmentation" / "Resources" / "SampleData" / "OrbitSegmentationSample.png"
HAN_THUMBNAIL = REPO / "AnatomyNetHaN" / "Resources" / "SampleData" / "AnatomyNetHaNSample.png"
HAN_CT = REPO / "AnatomyNetHaN" / "Resources" / "SampleData" / "OpenKBP_pt_286_CT.nii.gz"
SCREENSHOT = REPO / "docs" / "screenshot-orbit.png"


def window(array: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.clip((array.astype(np.float32) - (center - width / 2)) / width, 0.0, 1.0)


def body_crop(slice_2d: np.ndarray, margin: int = 4) -> np.ndarray:
    """The square around the body (HU > -400) of an axial slice: OpenKBP's field is much wider than the neck."""
    rows, cols = np.nonzero(slice_2d > -400)
    center = ((rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2)
    half = max(rows.max() - rows.min(), cols.max() - cols.min()) // 2 + margin
    padded = np.pad(slice_2d, half, constant_values=-1000)
    return padded[center[0]:center[0] + 2 * half, center[1]:center[1] + 2 * half]


def thumbnail(slice_2d: np.ndarray, aspect: float, path: Path) -> None:
    """A 128 x 128 pixel grey image (what the Sample Data module shows on the sample's button)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure = plt.figure(figsize=(1.28, 1.28), dpi=100)
    axes = figure.add_axes([0, 0, 1, 1])
    axes.imshow(slice_2d, cmap="gray", aspect=aspect, interpolation="bilinear")
    axes.set_axis_off()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, facecolor="black")
    plt.close(figure)


def overlay(axes, background: np.ndarray, labels: np.ndarray, label_set, aspect: float, origin: str) -> None:
    rgba = np.zeros(labels.shape + (4,), np.float32)
    for structure in label_set:
        inside = labels == structure.label
        rgba[inside, :3] = structure.color
        rgba[inside, 3] = 0.55
    axes.imshow(background, cmap="gray", aspect=aspect, origin=origin, interpolation="bilinear")
    axes.imshow(rgba, aspect=aspect, origin=origin, interpolation="nearest")
    axes.set_xticks([])
    axes.set_yticks([])


def screenshot(phantom_path: Path, work: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from headseg.io import read_segmentation, read_volume
    from headseg.labels import get_label_set
    from headseg.measure.metrics import dice

    orbit = get_label_set("orbit")
    out = work / "result"
    subprocess.run([sys.executable, "-m", "headseg", "segment", str(phantom_path), "--task", "orbit", "-o", str(out),
                    "--device", "cpu", "--progress-format", "none"], check=True, cwd=REPO)
    ct = read_volume(phantom_path)
    result = read_segmentation(out / "HeadSegOrbitPhantom.seg.nrrd", orbit)
    from headseg.slicer.sample_data import PHANTOM_SEED, PHANTOM_SPACING
    from headseg.synth.phantoms import make_head_phantom

    truth = make_head_phantom(seed=PHANTOM_SEED, spacing=PHANTOM_SPACING).labels.array
    with open(out / "HeadSegOrbitPhantom_volumes.csv", newline="") as f:  # columns may grow: read them by name
        rows = [(r["structure"], r["side"], r["voxels"], r["volume_cm3"]) for r in csv.DictReader(f)]
    mean_dsc = float(np.mean([dice(result.array == s.label, truth == s.label) for s in orbit]))

    labels = result.array
    k = int(np.argmax((labels > 0).sum(axis=(1, 2))))
    j = int(np.argmax(np.isin(labels, [s.label for s in orbit if s.base_key != "optic_nerve"]).sum(axis=(0, 2))))
    si, sj, sk = ct.spacing
    grey = window(ct.array, 40, 400)
    figure = plt.figure(figsize=(12, 5.2), dpi=100)
    axial = figure.add_axes([0.01, 0.12, 0.36, 0.80])
    overlay(axial, grey[k], labels[k], orbit, sj / si, "upper")
    axial.set_title(f"axial slice {k}")
    coronal = figure.add_axes([0.38, 0.12, 0.36, 0.80])
    overlay(coronal, grey[:, j, :], labels[:, j, :], orbit, sk / si, "lower")
    coronal.set_title(f"coronal slice {j} (behind the globes)")
    for axes in (axial, coronal):
        axes.text(0.02, 0.5, "R", color="yellow", transform=axes.transAxes, fontsize=14, va="center")
        axes.text(0.96, 0.5, "L", color="yellow", transform=axes.transAxes, fontsize=14, va="center")
    table = figure.add_axes([0.755, 0.12, 0.24, 0.80])
    table.set_axis_off()
    table.set_title("volume table (cm3)")
    cells = [[f"{name.replace('_', ' ')}", side, f"{float(cm3):.2f}"] for name, side, _voxels, cm3 in rows]
    drawn = table.table(cellText=cells, colLabels=["structure", "side", "cm3"], loc="upper center",
                        colWidths=[0.62, 0.2, 0.18])
    drawn.auto_set_font_size(False)
    drawn.set_fontsize(8)
    drawn.scale(1.0, 1.25)
    figure.text(0.01, 0.02,
                "HeadSeg's default orbit model (orbit-svnet-synth, trained on synthetic heads) on the Orbit Segmentation "
                f"sample, a SYNTHETIC phantom (mean Dice vs. its truth {mean_dsc:.2f}).\nDrawn with matplotlib from the "
                "'headseg segment' output (.seg.nrrd and volumes CSV), not a screenshot of Slicer. Not for clinical use.",
                fontsize=8.5)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(SCREENSHOT, dpi=100)
    plt.close(figure)


def main() -> int:
    from headseg.io import read_volume
    from headseg.slicer.sample_data import PHANTOM_SEED, PHANTOM_SPACING, sample_file
    from headseg.synth.phantoms import make_head_phantom

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        phantom_path = sample_file("orbit", work, work / "in")
        phantom = read_volume(phantom_path)
        truth = make_head_phantom(seed=PHANTOM_SEED, spacing=PHANTOM_SPACING).labels.array
        k = int(np.argmax((truth > 0).sum(axis=(1, 2))))  # the slice through both orbits
        si, sj, _ = phantom.spacing
        thumbnail(window(phantom.array[k], 40, 400), sj / si, ORBIT_THUMBNAIL)
        han = read_volume(HAN_CT)
        hi, hj, _ = han.spacing
        thumbnail(window(body_crop(han.array[han.shape[0] // 2]), 40, 400), hj / hi, HAN_THUMBNAIL)
        screenshot(phantom_path, work)
    for path in (ORBIT_THUMBNAIL, HAN_THUMBNAIL, SCREENSHOT):
        print(f"wrote {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
