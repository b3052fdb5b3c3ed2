"""Redraw a training curve from a run's metrics.csv (or its copy under docs/), marking the epoch whose
weights were shipped, for the docs:

    python tools/plot_training_curve.py docs/orbit_training_metrics.csv --title orbit-svnet-synth \
        --mark 48 --mark-label "shipped: epoch 48" --output docs/images/orbit_training_curve.png
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.run_log import plot_curve  # noqa: E402


def _number(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def read_history(path: Path) -> List[Dict[str, Any]]:
    """Epoch, training loss and validation mean DSC (NaN where the epoch was not validated) per row."""
    with open(path, newline="", encoding="utf-8") as f:
        return [{"epoch": int(r["epoch"]), "train_loss": _number(r["train_loss"]),
                 "val_mean_dsc": _number(r["val_mean_dsc"])} for r in csv.DictReader(f)]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("metrics", type=Path, help="a run's metrics.csv")
    parser.add_argument("--output", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--title", default="", help="the picture's title (the model's name)")
    parser.add_argument("--mark", type=int, help="the epoch whose weights were shipped")
    parser.add_argument("--mark-label", default="", help="the mark's text (default: 'epoch N')")
    args = parser.parse_args(argv)
    plot_curve(args.output, read_history(args.metrics), args.title, args.mark, args.mark_label)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
