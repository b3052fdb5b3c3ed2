"""What a training run writes as it goes: its log (echoed or not), ``metrics.csv`` and the training curve."""

from __future__ import annotations

import csv
import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

log = logging.getLogger("training")


class RunLog:
    def __init__(self, path: Path, echo: bool):
        self.path, self.echo = path, echo

    def __call__(self, message: str) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(message + "\n")
        if self.echo:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stderr)
        log.info(message)


def write_metrics(path: Path, history: List[Dict[str, Any]], classes: Sequence[str]) -> None:
    columns = ["epoch", "phase", "optimizer", "lr", "train_loss", "val_mean_dsc",
               *[f"val_dsc_{c}" for c in classes[1:]], "epoch_seconds", "samples_per_second", "elapsed_hours",
               "best"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in history:
            writer.writerow({k: (round(v, 6) if isinstance(v, float) else v) for k, v in row.items()})


def plot_curve(path: Path, history: List[Dict[str, Any]], title: str = "", marked_epoch: Optional[int] = None,
               mark_label: str = "") -> None:
    """Training loss and validation mean DSC per epoch (matplotlib, Agg: works without a display);
    ``marked_epoch``: a vertical line at the epoch whose weights were shipped, labelled ``mark_label``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, ax_loss = plt.subplots(figsize=(7, 4), dpi=100)
    ax_loss.plot(epochs, [h["train_loss"] for h in history], color="tab:blue", label="training loss")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("training loss", color="tab:blue")
    ax_dsc = ax_loss.twinx()
    ax_dsc.plot(epochs, [h["val_mean_dsc"] for h in history], color="tab:orange", marker=".",
                label="validation mean DSC")
    ax_dsc.set_ylabel("validation mean DSC", color="tab:orange")
    ax_dsc.set_ylim(0, 1)
    if marked_epoch is not None:
        ax_loss.axvline(marked_epoch, color="tab:green", linestyle="--", linewidth=1.2)
        ax_dsc.annotate(mark_label or f"epoch {marked_epoch}", (marked_epoch, 0.45), xytext=(4, 0),
                        textcoords="offset points", color="tab:green", fontsize=9)
    ax_loss.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
