"""Draw the extension and module icons (128 x 128 PNG, transparent background).

Icons are drawn from code so they can be regenerated at any size and reviewed as text:
``python tools/draw_icons.py`` rewrites the three PNG files in place.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import patches  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SIZE_PX = 128
DPI = 100

# Colours of the orbit label set (rectus muscles reddish, optic nerve yellow).
MUSCLE = (0.80, 0.33, 0.30)
NERVE = (0.95, 0.80, 0.25)
BONE = (0.93, 0.90, 0.82)
BONE_EDGE = (0.55, 0.50, 0.42)
SKIN = (0.45, 0.60, 0.80)


def new_canvas():
    fig = plt.figure(figsize=(SIZE_PX / DPI, SIZE_PX / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, 128)
    ax.set_ylim(0, 128)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, transparent=True)
    plt.close(fig)


def draw_orbit(ax) -> None:
    """Coronal view of one orbit: bony rim, four rectus muscles around the optic nerve."""
    ax.add_patch(patches.Ellipse((64, 64), 116, 104, facecolor=BONE, edgecolor=BONE_EDGE, linewidth=3))
    ax.add_patch(patches.Ellipse((64, 64), 92, 80, facecolor=(0.20, 0.22, 0.28), edgecolor="none"))
    muscles = [((64, 94), 34, 13, 0), ((64, 34), 34, 13, 0), ((34, 64), 13, 34, 0), ((94, 64), 13, 34, 0)]
    for center, width, height, angle in muscles:
        ax.add_patch(patches.Ellipse(center, width, height, angle=angle, facecolor=MUSCLE,
                                     edgecolor=(0.45, 0.12, 0.10), linewidth=1.5))
    ax.add_patch(patches.Circle((64, 64), 12, facecolor=NERVE, edgecolor=(0.55, 0.42, 0.05), linewidth=1.5))


def draw_head(ax) -> None:
    """Axial head-and-neck slice: skin outline, mandible arch, parotids, brainstem, spinal cord."""
    tissue = (0.85, 0.88, 0.92)
    ax.add_patch(patches.Ellipse((64, 62), 112, 118, facecolor=tissue, edgecolor=SKIN, linewidth=4))
    ax.add_patch(patches.Arc((64, 70), 84, 96, theta1=20, theta2=160, color=BONE, linewidth=9))
    ax.add_patch(patches.Arc((64, 70), 84, 96, theta1=20, theta2=160, color=BONE_EDGE, linewidth=1))
    for x in (26, 102):
        parotid = patches.Ellipse((x, 56), 22, 32, facecolor=(0.30, 0.70, 0.45), edgecolor=(0.10, 0.35, 0.2))
        ax.add_patch(parotid)
    ax.add_patch(patches.Circle((64, 38), 13, facecolor=(0.55, 0.45, 0.80), edgecolor=(0.28, 0.2, 0.45)))
    ax.add_patch(patches.Circle((64, 16), 6, facecolor=NERVE, edgecolor=(0.55, 0.42, 0.05)))


def draw_extension(ax) -> None:
    """Both ideas on one icon: a head outline with an orbit cross-section."""
    draw_head(ax)
    ax.add_patch(patches.Circle((64, 92), 22, facecolor=(0.20, 0.22, 0.28), edgecolor=BONE, linewidth=3))
    for dx, dy, w, h in ((0, 13, 16, 7), (0, -13, 16, 7), (-13, 0, 7, 16), (13, 0, 7, 16)):
        ax.add_patch(patches.Ellipse((64 + dx, 92 + dy), w, h, facecolor=MUSCLE, edgecolor="none"))
    ax.add_patch(patches.Circle((64, 92), 5, facecolor=NERVE, edgecolor="none"))


ICONS = {
    "OrbitSegmentation/Resources/Icons/OrbitSegmentation.png": draw_orbit,
    "AnatomyNetHaN/Resources/Icons/AnatomyNetHaN.png": draw_head,
    "HeadSeg.png": draw_extension,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root to write into")
    args = parser.parse_args()
    for relative, draw in ICONS.items():
        fig, ax = new_canvas()
        draw(ax)
        save(fig, args.root / relative)
        print(args.root / relative)


if __name__ == "__main__":
    main()
