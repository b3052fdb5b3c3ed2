"""Image files whose size is not what their first file says: detached headers (.nhdr, .mhd) whose voxels
are in a second file, and a small gzip file that expands to more than the memory there is."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hardening_factory import TALLY, CliRun, head_ct, run_cli

from headseg.errors import InputError, NotEnoughMemoryError
from headseg.io import read_volume

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_detached_headers_are_read_and_segmented(tmp_path, han_package, suffix):
    ct = head_ct(shape=(48, 192, 192), spacing=(1.0, 1.0, 2.5))  # 1.8 M voxels: more than 1100 x the header
    header = tmp_path / f"scan{suffix}"
    sitk.WriteImage(ct.to_sitk(), str(header), False)  # the header and a separate raw data file
    assert len(list(tmp_path.iterdir())) == 2 and header.stat().st_size < 2000
    np.testing.assert_array_equal(read_volume(header).array, ct.array)
    run = run_cli(["segment", header, "--task", "han", "--model", han_package.path, "-o", tmp_path / "out",
                   "--device", "cpu", "--progress-format", "none"], f"detached header {suffix}")
    assert run.code == 0, run.stderr
    assert (tmp_path / "out" / "scan.seg.nrrd").is_file()


@pytest.mark.parametrize("suffix", [".nhdr", ".mhd"])
def test_a_detached_header_without_its_data_file_is_refused_naming_it(tmp_path, suffix):
    header = tmp_path / f"scan{suffix}"
    sitk.WriteImage(head_ct().to_sitk(), str(header), False)
    (data,) = [p for p in tmp_path.iterdir() if p != header]
    data.unlink()
    with pytest.raises(InputError) as info:
        read_volume(header)
    assert data.name in str(info.value)  # the missing data file is named


def gzip_bomb(path: Path, size=(1280, 1280, 1280)) -> Path:
    """An int16 NRRD whose gzip data (about 4 MB, many members) expands to 1280^3 voxels (4.2 GB)."""
    member = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = member.compress(bytes(64 << 20)) + member.flush()
    total = 2 * int(np.prod(size))
    header = ("NRRD0004\ntype: int16\ndimension: 3\nspace: left-posterior-superior\n"
              f"sizes: {size[0]} {size[1]} {size[2]}\nspace directions: (0.5,0,0) (0,0.5,0) (0,0,0.5)\n"
              "encoding: gzip\nendian: little\nspace origin: (0,0,0)\n\n")
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        for _ in range(total // (64 << 20)):
            f.write(block)
        rest = zlib.compressobj(9, zlib.DEFLATED, 31)
        f.write(rest.compress(bytes(total % (64 << 20))) + rest.flush())
    return path


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="limits the address space with setrlimit")
def test_a_gzip_that_expands_beyond_memory_is_refused_before_allocating(tmp_path, han_package):
    bomb = gzip_bomb(tmp_path / "bomb.nrrd")
    assert bomb.stat().st_size < 10 << 20

    def four_gigabytes():  # this process may take 4 GB in all, whatever the machine has
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "headseg", "segment", str(bomb), "--task", "han", "--model",
                           str(han_package.path), "-o", str(tmp_path / "out"), "--device", "cpu",
                           "--progress-format", "none"], capture_output=True, text=True, env=env,
                          preexec_fn=four_gigabytes, timeout=300)
    TALLY.add("gzip bomb under a 4 GB limit", CliRun(proc.returncode, proc.stdout, proc.stderr))
    assert proc.returncode == 4, proc.stderr
    assert "reading it needs about 7.8 GB" in proc.stderr and "Crop it" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out").exists()


def test_the_memory_check_says_exit_4_in_process(tmp_path, monkeypatch):
    import headseg.io.images as images

    monkeypatch.setattr(images, "available_memory_bytes", lambda: 1 << 30)  # a computer with 1 GB free
    with pytest.raises(NotEnoughMemoryError, match="needs about 7.8 GB of memory, and 1.0 GB are free"):
        read_volume(gzip_bomb(tmp_path / "bomb.nrrd"))
