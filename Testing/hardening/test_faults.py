"""Faults around a correct input: broken model packages, unwritable output, a full disk, cancellation
(token and SIGTERM) and GPU out-of-memory -- each a clear error or a safe fallback, nothing half-written."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hardening_factory import TALLY, CliRun, ThresholdNet, head_ct, run_cli, write_slow_han_package

from headseg.errors import Cancelled, ModelPackageError
from headseg.io import read_segmentation, write_segmentation, write_volume
from headseg.labels import get_label_set
from headseg.segment.pipeline import segment_volume
from headseg.segment.runtime import InferenceOutOfMemoryError, run_with_fallback
from headseg.segment.windows import CancelToken, whole_volume_or_patches

REPO = Path(__file__).resolve().parents[2]
OPENKBP = get_label_set("openkbp")


@pytest.fixture
def ct_file(tmp_path):
    return write_volume(head_ct(), tmp_path / "case1.nrrd")


def leftovers(folder: Path):
    """Files a failed run must not leave: temporaries and anything under a final output name."""
    if not folder.exists():
        return []
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


def segment_args(ct_file, package_path, out):
    return ["segment", ct_file, "--task", "han", "--model", package_path, "-o", out, "--device", "cpu",
            "--progress-format", "none"]


# ------------------------------------------------------------------------------------------------
# Model packages
# ------------------------------------------------------------------------------------------------
def copy_package(han_package, tmp_path) -> Path:
    folder = tmp_path / "pkg"
    shutil.copytree(han_package.path, folder)
    return folder


def edit_card(folder: Path, **changes) -> None:
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    card.update(changes)
    (folder / "model.json").write_text(json.dumps(card))


def corrupt_weights(folder: Path) -> None:
    with open(folder / "model.pt", "ab") as f:
        f.write(b"\0garbage")


def weights_not_torch(folder: Path) -> None:
    from headseg.segment.packages import sha256_of

    (folder / "model.pt").write_bytes(b"not a torch file at all")
    card = json.loads((folder / "model.json").read_text(encoding="utf-8"))
    card["weights"]["sha256"] = sha256_of(folder / "model.pt")  # a consistent card, unreadable weights
    (folder / "model.json").write_text(json.dumps(card))


PACKAGE_FAULTS = {
    "wrong checksum": (corrupt_weights, "checksum"),
    "weights missing": (lambda f: (f / "model.pt").unlink(), "no weights file"),
    "weights not a torch file": (weights_not_torch, "Could not read the weights"),
    "label set without the classes": (lambda f: edit_card(f, label_set="orbit"), "does not have"),
    "more classes than the weights": (lambda f: edit_card(f, classes=["background", "mandible", "brainstem"]),
                                      "do not fit"),
    "class unknown to the label set": (lambda f: edit_card(f, classes=["background", "kidney"]), "kidney"),
    "card not JSON": (lambda f: (f / "model.json").write_text("{ not json"), "cannot be read"),
    "card format version 99": (lambda f: edit_card(f, format_version=99), "format_version 99"),
    "card without classes": (lambda f: edit_card(f, classes=[]), "classes"),
    "model of another task": (lambda f: edit_card(f, task="orbit", input={"spacing_mm": [1, 1, 2],
                                                                         "window_kji": [16, 64, 64],
                                                                         "normalization": {"type": "window"}},
                                                  classes=["background", "optic_nerve"], label_set="orbit"),
                              "not 'han'"),
    "folder without a card": (lambda f: (f / "model.json").unlink(), "model.json"),
}


@pytest.mark.parametrize("fault", list(PACKAGE_FAULTS))
def test_broken_model_package_exit_3(fault, han_package, ct_file, tmp_path):
    folder = copy_package(han_package, tmp_path)
    breaker, words = PACKAGE_FAULTS[fault]
    breaker(folder)
    run = run_cli(segment_args(ct_file, folder, tmp_path / "out"), f"model package: {fault}")
    assert run.code == 3 and not run.traceback_shown, run.stderr
    assert words in run.stderr, run.stderr
    assert leftovers(tmp_path / "out") == []


def test_unknown_label_set_in_card_is_refused(han_package, ct_file, tmp_path):
    """Refused with the list of label sets. Known gap: exit 2 (packages.validate_card lets the label-set
    lookup's InputError through) where 3, 'model package problem', would be more precise."""
    folder = copy_package(han_package, tmp_path)
    edit_card(folder, label_set="kidneys")
    run = run_cli(segment_args(ct_file, folder, tmp_path / "out"), "model package: unknown label set")
    assert run.code == 3 and "kidneys" in run.stderr and not run.traceback_shown


# ------------------------------------------------------------------------------------------------
# Output that cannot be written
# ------------------------------------------------------------------------------------------------
def test_output_folder_under_a_regular_file(han_package, ct_file, tmp_path):
    blocker = tmp_path / "results.txt"
    blocker.write_text("a file, not a folder")
    run = run_cli(segment_args(ct_file, han_package.path, blocker / "out"), "output folder under a file")
    assert run.code == 2 and "Cannot create the output folder" in run.stderr and not run.traceback_shown
    assert blocker.read_text(encoding="utf-8") == "a file, not a folder"


def test_read_only_output_folder(han_package, ct_file, tmp_path):
    out = tmp_path / "locked"
    out.mkdir()
    out.chmod(0o555)
    try:
        if os.access(out, os.W_OK):
            pytest.skip("running as root: permissions do not stop writes (covered by the folder-under-a-file and "
                        "full-disk tests)")
        run = run_cli(segment_args(ct_file, han_package.path, out), "read-only output folder")
        assert run.code == 2 and "not writable" in run.stderr and not run.traceback_shown
        assert leftovers(out) == []
    finally:
        out.chmod(0o755)


def test_existing_outputs_are_not_replaced_without_overwrite(han_package, ct_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "case1.seg.nrrd").write_text("precious")
    run = run_cli(segment_args(ct_file, han_package.path, out), "existing output")
    assert run.code == 2 and "--overwrite" in run.stderr
    assert (out / "case1.seg.nrrd").read_text(encoding="utf-8") == "precious"


# ------------------------------------------------------------------------------------------------
# A full disk
# ------------------------------------------------------------------------------------------------
def fill(folder: Path, leave_bytes: int) -> None:
    stat = os.statvfs(folder)
    free = stat.f_bavail * stat.f_frsize
    (folder / "filler.bin").write_bytes(b"\0" * max(0, free - leave_bytes))


def test_full_disk_through_the_cli(han_package, ct_file, tmpfs_dir):
    fill(tmpfs_dir, leave_bytes=4096)
    out = tmpfs_dir / "out"
    run = run_cli(segment_args(ct_file, han_package.path, out), "full disk (tmpfs)")
    assert run.code == 2 and not run.traceback_shown, run.stderr
    assert "No space left on device" in run.stderr or "disk" in run.stderr
    assert leftovers(out) == []  # neither a final name nor a temporary


def test_full_disk_keeps_the_previous_file(tmpfs_dir):
    labels = np.random.default_rng(0).integers(0, 8, (40, 96, 96)).astype(np.uint8)  # compresses badly
    labelmap = head_ct(shape=(40, 96, 96)).with_array(labels)
    small = labelmap.with_array(np.zeros_like(labels))
    target = tmpfs_dir / "case.seg.nrrd"
    write_segmentation(small, OPENKBP, target)
    before = target.read_bytes()
    fill(tmpfs_dir, leave_bytes=8192)
    with pytest.raises(OSError) as info:
        write_segmentation(labelmap, OPENKBP, target, overwrite=True)
    assert info.value.errno == errno.ENOSPC
    assert target.read_bytes() == before  # the old result is intact
    assert sorted(p.name for p in tmpfs_dir.iterdir()) == ["case.seg.nrrd", "filler.bin"]


def test_failure_at_rename_leaves_no_partial_file(tmp_path, monkeypatch):
    """Simulated ENOSPC at the last step (where a network drive may report it): nothing under the name."""
    labelmap = head_ct().with_array(np.ones(head_ct().shape, np.uint8))

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(OSError):
        write_segmentation(labelmap, OPENKBP, tmp_path / "a.seg.nrrd")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


def test_failure_mid_write_leaves_no_partial_file(tmp_path, monkeypatch):
    import nrrd

    real_write = nrrd.write

    def half_then_fail(filename, data, header=None, **kwargs):
        real_write(filename, data, header, **kwargs)
        with open(filename, "r+b") as f:
            f.truncate(os.path.getsize(filename) // 2)
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    labelmap = head_ct().with_array(np.ones(head_ct().shape, np.uint8))
    monkeypatch.setattr(nrrd, "write", half_then_fail)
    with pytest.raises(OSError):
        write_segmentation(labelmap, OPENKBP, tmp_path / "b.seg.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_full_disk_during_dicom_export(tmp_path, tmpfs_dir):
    pytest.importorskip("highdicom")
    from headseg.dicom_export import write_dicom_seg, write_rtstruct
    from headseg.io import read_volume, write_dicom_series

    write_dicom_series(head_ct(), tmp_path / "ct")
    grid = read_volume(tmp_path / "ct")
    labelmap = grid.with_array((grid.array > 500).astype(np.uint8) * 7)
    fill(tmpfs_dir, leave_bytes=2048)
    for writer in (write_rtstruct, write_dicom_seg):
        with pytest.raises(OSError):
            writer(labelmap, OPENKBP, tmp_path / "ct", tmpfs_dir / "x.dcm")
    assert sorted(p.name for p in tmpfs_dir.iterdir()) == ["filler.bin"]


# ------------------------------------------------------------------------------------------------
# Cancellation
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_package(tmp_path_factory):
    """A wider AnatomyNet run in many small patches: ~10 s on one CPU thread for a 40 x 96 x 96 CT, long
    enough to be cancelled in the middle."""
    return write_slow_han_package(tmp_path_factory.mktemp("models"))


def big_ct():
    return head_ct(shape=(40, 96, 96), spacing=(1.5, 1.5, 2.0))


def test_cancel_token_from_another_thread_stops_inference(slow_package):
    token = CancelToken()
    cancelled_at = []

    def progress(fraction, message):
        if fraction > 0.15 and not cancelled_at:  # in the middle of inference: cancel from another thread
            cancelled_at.append(time.perf_counter())
            threading.Thread(target=token.cancel).start()

    start = time.perf_counter()
    with pytest.raises(Cancelled):
        segment_volume(big_ct(), slow_package, device="cpu", progress=progress, cancel=token)
    stopped = time.perf_counter()
    assert cancelled_at, "inference finished before the cancel point"
    print(f"cancel -> stop: {stopped - cancelled_at[0]:.2f} s (run had lasted {cancelled_at[0] - start:.1f} s)")
    assert stopped - cancelled_at[0] < 3.0


def test_sigterm_cancels_the_cli_with_exit_5_and_no_output(slow_package, tmp_path):
    ct_path = write_volume(big_ct(), tmp_path / "big.nrrd")
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "headseg", "segment", str(ct_path), "--task", "han", "--model",
                             str(slow_package.path), "-o", str(out), "--device", "cpu", "--progress-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        for line in proc.stdout:  # wait until inference is under way
            event = json.loads(line)
            if event.get("event") == "progress" and event.get("fraction", 0) > 0.15:
                break
        sent = time.perf_counter()
        proc.send_signal(signal.SIGTERM)
        rest, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    waited = time.perf_counter() - sent
    TALLY.add("SIGTERM during inference (subprocess)", CliRun(proc.returncode, rest, stderr))
    assert proc.returncode == 5, stderr
    assert "Cancelled" in stderr and "Traceback" not in stderr
    assert leftovers(out) == []
    print(f"SIGTERM -> exit 5 in {waited:.2f} s")


# ------------------------------------------------------------------------------------------------
# Out of memory
# ------------------------------------------------------------------------------------------------
class OomOnDevice(torch.nn.Module):
    """Wraps a model; raises CUDA's out-of-memory error when asked to run on a given device type or with a
    batch larger than ``max_batch`` -- what a too-small GPU does."""

    def __init__(self, inner, fail_device: str = "", max_batch: int = 10 ** 6):
        super().__init__()
        self.inner, self.fail_device, self.max_batch = inner, fail_device, max_batch
        self.attempts = []

    def forward(self, x):
        self.attempts.append((x.device.type, x.shape[0]))
        if x.device.type == self.fail_device or x.shape[0] > self.max_batch:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.inner(x)


def test_cuda_oom_falls_back_to_cpu_with_a_note():
    """The fallback chain with a GPU that always runs out of memory: the result is computed on the CPU,
    identical to a plain CPU run, and the note says so. The 'GPU' is simulated (meta device would not run
    the model): the predictor fails whenever run_with_fallback offers it the cuda device."""
    image = (head_ct().array.astype(np.float32) + 1000) / 2000
    net = ThresholdNet()
    expected = whole_volume_or_patches(image[None], net, max_voxels=64 ** 3, device="cpu", out_channels=2,
                                       activation="softmax")
    offered = []

    def run(device, batch_size):
        offered.append((device.type, batch_size))
        if device.type == "cuda":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return whole_volume_or_patches(image[None], net, max_voxels=64 ** 3, device=device, batch_size=batch_size,
                                       out_channels=2, activation="softmax")

    result = run_with_fallback(run, "cuda", batch_size=4)
    assert offered == [("cuda", 4), ("cuda", 2), ("cuda", 1), ("cpu", 4)]
    assert result.device.type == "cpu"
    np.testing.assert_array_equal(result.output, expected)
    assert any("retrying on cpu" in n and "much slower" in n for n in result.notes), result.notes


def test_oom_with_large_batches_retries_smaller_inside_segment_volume(threshold_package):
    ct = head_ct(shape=(60, 128, 128), spacing=(1.5, 1.5, 2.0))  # larger than max_voxels: batches of patches
    plain = segment_volume(ct, threshold_package, device="cpu", model=ThresholdNet(), batch_size=4)
    flaky = OomOnDevice(ThresholdNet(), max_batch=1)
    result = segment_volume(ct, threshold_package, device="cpu", model=flaky, batch_size=4)
    np.testing.assert_array_equal(result.labelmap.array, plain.labelmap.array)
    assert any("Out of memory" in n and "batch size 1" in n for n in result.notes), result.notes
    assert max(b for _, b in flaky.attempts) > 1 and flaky.attempts[-1][1] == 1


def test_oom_everywhere_gives_exit_4_without_traceback(han_package, ct_file, tmp_path, monkeypatch):
    from headseg.segment.packages import ModelPackage

    real_load = ModelPackage.load_model

    def load_always_oom(self, device="cpu", verify=True):
        return OomOnDevice(real_load(self, device, verify), fail_device="cpu")

    monkeypatch.setattr(ModelPackage, "load_model", load_always_oom)
    run = run_cli(segment_args(ct_file, han_package.path, tmp_path / "out"), "out of memory everywhere")
    assert run.code == 4 and "Out of memory" in run.stderr and not run.traceback_shown, run.stderr
    assert leftovers(tmp_path / "out") == []
    with pytest.raises(InferenceOutOfMemoryError):
        segment_volume(head_ct(), han_package, device="cpu")


def test_unreadable_weights_are_a_model_package_error(han_package, tmp_path):
    folder = copy_package(han_package, tmp_path)
    weights_not_torch(folder)
    from headseg.segment.packages import load_package

    with pytest.raises(ModelPackageError, match="Could not read the weights"):
        load_package(folder).load_model()


def test_result_after_faults_is_still_right(han_package, ct_file, tmp_path):
    """After all the failures above in this process, a normal run still works (no poisoned state)."""
    run = run_cli(segment_args(ct_file, han_package.path, tmp_path / "out"), "normal run after faults")
    assert run.code == 0, run.stderr
    seg = read_segmentation(tmp_path / "out" / "case1.seg.nrrd", OPENKBP)
    assert seg.shape == head_ct().shape
