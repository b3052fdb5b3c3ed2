"""Inputs for the hardening tests: small synthetic CTs, DICOM series edited with pydicom, model packages,
and a CLI runner that counts what users would see (exit codes, tracebacks)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
from model_factory import ThresholdNet, threshold_han_card, write_random_package, write_threshold_han_package

from headseg.geometry import Volume

__all__ = ["ThresholdNet", "write_threshold_han_package", "head_ct", "write_random_han_package", "CliRun",
           "run_cli", "TALLY", "edit_series", "write_series"]


def head_ct(shape=(24, 48, 48), spacing=(2.0, 2.0, 2.5), seed: int = 0, origin=(-48.0, -48.0, -30.0),
            direction=None) -> Volume:
    """A small int16 'head': air, a soft-tissue ellipsoid and a bony shell (>400 HU, what the threshold
    model calls mandible), with noise. Big enough for check_ct, small enough for many runs."""
    k, j, i = shape
    z, y, x = np.meshgrid(np.linspace(-1, 1, k), np.linspace(-1, 1, j), np.linspace(-1, 1, i), indexing="ij")
    r = np.sqrt((x / 0.8) ** 2 + (y / 0.85) ** 2 + (z / 0.9) ** 2)
    array = np.full(shape, -1000.0)
    array[r < 1.0] = 40.0
    array[(r > 0.8) & (r < 1.0)] = 1100.0
    array += np.random.default_rng(seed).normal(0, 10, shape)
    return Volume(array.astype(np.int16), spacing, origin, np.eye(3) if direction is None else direction)


def write_random_han_package(folder: Path, name: str = "random-han-test"):
    """The threshold card's tiny AnatomyNet with real (random) weights: loadable through the CLI."""
    return write_random_package(folder, threshold_han_card(name))


def write_slow_han_package(folder: Path):
    """A wider AnatomyNet run in many small patches: seconds of inference on a 40 x 96 x 96 CT, long
    enough to cancel or pause a run in the middle."""
    import torch

    from headseg.models import build_model
    from headseg.segment.packages import write_package

    card = threshold_han_card("slow-han-test")
    card["architecture_params"] = {"widths": [16, 16, 16, 16], "blocks_per_stage": 2, "output_block_channels": 16}
    card["inference"] = {"max_voxels": 16 ** 3, "patch_kji": [16, 32, 32], "batch_size": 1}
    torch.manual_seed(0)
    model = build_model(card["architecture"], 1, 2, **card["architecture_params"])
    return write_package(folder / "slow-han-test", card, model.state_dict())


# ----------------------------------------------------------------------------------------------------
# DICOM series
# ----------------------------------------------------------------------------------------------------
def write_series(volume: Volume, folder: Path, **kwargs) -> List[Path]:
    from headseg.io import write_dicom_series

    return write_dicom_series(volume, folder, **kwargs)


def edit_series(paths: Sequence[Path], edit: Callable[[int, object], None]) -> None:
    """Apply ``edit(slice_index, dataset)`` to every file (in slice order) and save it in place."""
    import pydicom

    for n, path in enumerate(paths):
        ds = pydicom.dcmread(str(path))
        edit(n, ds)
        ds.save_as(str(path))


def tilt_series(paths: Sequence[Path], degrees: float, step_mm: float) -> None:
    """Shift slice positions sideways (along y) by step * tan(angle) per slice, keeping axial orientations:
    what a CT acquired with a tilted gantry stores."""
    shift = step_mm * math.tan(math.radians(degrees))

    def edit(n, ds):
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [f"{x:.4f}", f"{y + n * shift:.4f}", f"{z:.4f}"]

    edit_series(paths, edit)


# ----------------------------------------------------------------------------------------------------
# The command line, in process, counted
# ----------------------------------------------------------------------------------------------------
@dataclass
class CliRun:
    code: int
    stdout: str
    stderr: str

    @property
    def traceback_shown(self) -> bool:
        return "Traceback" in self.stderr or "Traceback" in self.stdout


@dataclass
class Tally:
    """What users saw over all hardening runs: reported at the end of the session (conftest)."""

    runs: List[Dict[str, object]] = field(default_factory=list)

    def add(self, label: str, run: CliRun) -> None:
        self.runs.append({"input": label, "code": run.code, "traceback": run.traceback_shown})

    def summary(self) -> Dict[str, int]:
        return {
            "inputs_tried": len(self.runs),
            "crashes": sum(1 for r in self.runs if r["code"] not in (0, 2, 3, 4, 5)),
            "tracebacks_shown": sum(1 for r in self.runs if r["traceback"]),
        }

    def write(self, path: Path) -> None:
        path.write_text(json.dumps({"summary": self.summary(), "runs": self.runs}, indent=1))


TALLY = Tally()


def run_cli(args: Sequence[object], label: Optional[str] = None) -> CliRun:
    """``headseg ARGS`` in this process (fast: torch is imported once); signal handlers are restored."""
    from headseg.cli import main

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main([str(a) for a in args])
            except SystemExit as exc:  # argparse usage errors
                code = int(exc.code or 0)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    run = CliRun(code, out.getvalue(), err.getvalue())
    TALLY.add(label or " ".join(str(a) for a in args[:2]), run)
    return run


def rss_mb() -> float:
    import psutil

    return psutil.Process(os.getpid()).memory_info().rss / 2**20
