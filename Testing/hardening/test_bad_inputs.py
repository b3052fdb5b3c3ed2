"""Bad and hostile input files through ``headseg segment``: each gets a clear message and exit code 2 (or is
processed safely), never a traceback, never an output file for the bad case."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path
from typing import Callable, Dict, Tuple

import numpy as np
import pytest
import SimpleITK as sitk
from hardening_factory import head_ct, run_cli

from headseg.errors import HeadSegError
from headseg.geometry import Volume
from headseg.io import read_volume, write_dicom_series, write_volume
from headseg.validation import check_ct

REPO = Path(__file__).resolve().parents[2]


def _image(path: Path, array: np.ndarray, spacing=(2.0, 2.0, 2.5), vector: bool = False) -> Path:
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing[: image.GetDimension()] + (1.0,) * max(0, image.GetDimension() - len(spacing)))
    sitk.WriteImage(image, str(path), True)
    return path


def _ct_array() -> np.ndarray:
    return head_ct().array


def _nrrd_header(path: Path, sizes: str, encoding: str = "raw", extra: str = "", data: bytes = b"\0" * 100) -> Path:
    path.write_bytes(
        f"NRRD0004\ntype: short\ndimension: 3\nsizes: {sizes}\nspacings: 1 1 1\nencoding: {encoding}\n"
        f"endian: little\n{extra}\n".encode() + data
    )
    return path


def _truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def _garbage(path: Path, head: bytes = b"") -> Path:
    path.write_bytes(head + np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    return path


# name -> (builder(tmp) -> input path, expected exit code, words the message must contain)
Builder = Callable[[Path], Path]
CASES: Dict[str, Tuple[Builder, int, str]] = {
    "2d image": (lambda t: _image(t / "slice.nrrd", _ct_array()[5]), 2, "single 2D slice"),
    "4d image": (lambda t: _image(t / "four_d.nii.gz", np.stack([_ct_array()] * 3)), 2, "is 4D"),
    "rgb image": (lambda t: _image(t / "rgb.mha", np.stack([_ct_array()] * 3, -1).astype(np.uint8), vector=True),
                  2, "RGB"),
    "MR intensities": (lambda t: _image(t / "mr.nrrd", np.clip(_ct_array() + 1000, 0, 900).astype(np.int16)), 2,
                       "MR image"),
    "CT without rescale (0..4095)": (lambda t: _image(t / "raw.nrrd", (_ct_array() + 1024).astype(np.uint16)), 2,
                                     "rescale slope"),
    "label map instead of CT": (lambda t: _image(t / "labels.nii.gz", (_ct_array() > 500).astype(np.uint8)), 2,
                                "do not look like CT"),
    "empty (all air)": (lambda t: _image(t / "air.nrrd", np.full((24, 48, 48), -1000, np.int16)), 2, "constant"),
    "constant zero": (lambda t: _image(t / "zero.nrrd", np.zeros((24, 48, 48), np.int16)), 2, "constant"),
    "NaN voxels": (lambda t: _image(t / "nan.nrrd", np.where(_ct_array() > 1000, np.nan, _ct_array()).astype(
        np.float32)), 2, "NaN or infinite"),
    "infinite voxels": (lambda t: _image(t / "inf.mha", np.where(_ct_array() > 1000, np.inf, _ct_array()).astype(
        np.float32)), 2, "NaN or infinite"),
    "one voxel thick": (lambda t: _image(t / "thin.nrrd", _ct_array()[:1]), 2, "single 2D slice"),
    "two slices": (lambda t: _image(t / "two.nrrd", _ct_array()[:2]), 2, "too small"),
    "tiny extent": (lambda t: _image(t / "small.nrrd", _ct_array()[:6, :20, :20], spacing=(0.5, 0.5, 0.5)), 2,
                    "covers only"),
    "absurd spacing 1e-4 mm": (lambda t: _image(t / "fine.nrrd", _ct_array(), spacing=(1e-4, 1.0, 1.0)), 2,
                               "not plausible"),
    "absurd spacing 1e4 mm": (lambda t: _image(t / "coarse.mha", _ct_array(), spacing=(1e4, 1e4, 1e4)), 2,
                              "not plausible"),
    "zero spacing header": (lambda t: _nrrd_header(t / "zero_sp.nrrd", "20 20 20", extra="",
                                                   data=b"\0" * 16000).with_name("zero_sp.nrrd")
                            if False else _zero_spacing(t), 2, "spacing"),
    "huge dimensions header": (lambda t: _nrrd_header(t / "huge.nrrd", "100000 100000 100000"), 2,
                               "far more than any head CT"),
    "big claim, tiny gzip data": (lambda t: _nrrd_header(t / "bomb.nrrd", "1024 1024 1500", "gzip"), 2,
                                  "truncated or its header is damaged"),
    "zero size axis": (lambda t: _nrrd_header(t / "zero.nrrd", "0 20 20", data=b""), 2, "damaged"),
    "detached header without data": (lambda t: _nrrd_header(t / "lost.nhdr", "20 20 20", extra="data file: gone.raw\n",
                                                            data=b""), 2, "damaged"),
    "truncated nrrd (raw)": (lambda t: _truncate(_raw_nrrd(t / "cut_raw.nrrd")), 2, "damaged"),
    "truncated nrrd (gzip)": (lambda t: _truncate(_image(t / "cut_gz.nrrd", _ct_array())), 2, "damaged"),
    "truncated nii.gz": (lambda t: _truncate(_image(t / "cut.nii.gz", _ct_array())), 2, "truncated"),
    "truncated nii": (lambda t: _truncate(_image(t / "cut.nii", _ct_array())), 2, "truncated"),
    "truncated mha": (lambda t: _truncate(_image(t / "cut.mha", _ct_array())), 2, "damaged"),
    "corrupt nrrd": (lambda t: _garbage(t / "junk.nrrd", b"NRRD0004\n"), 2, "damaged"),
    "corrupt nii.gz": (lambda t: _garbage(t / "junk.nii.gz", gzip.compress(b"\x5c\x01")), 2, "damaged"),
    "corrupt mha": (lambda t: _garbage(t / "junk.mha", b"ObjectType = Image\nNDims = 3\n"), 2, "damaged"),
    "zero-byte file": (lambda t: _touch(t / "nothing.nii.gz"), 2, ""),
    "corrupt DICOM file": (lambda t: _garbage(t / "junk.dcm", b"\0" * 128 + b"DICM"), 2, "DICOM"),
    "truncated DICOM single file": (lambda t: _truncated_dicom(t), 2, ""),
    "unsupported extension": (lambda t: _garbage(t / "photo.png"), 2, "not supported"),
    "folder without images": (lambda t: _folder_of_text(t), 2, "No CT images"),
    "missing path": (lambda t: t / "does_not_exist.nrrd", 2, "does not exist"),
    "extreme but finite values": (lambda t: _image(t / "extreme.nrrd", np.where(_ct_array() > 1000, 3e38,
                                                                               _ct_array()).astype(np.float32)),
                                  0, "Unusual intensity range"),
    "unicode and spaces in the name": (lambda t: _image(t / "Patient Ä 01 (kopie).nrrd", _ct_array()), 0, ""),
}


def _zero_spacing(t: Path) -> Path:
    path = t / "zero_sp.nrrd"
    path.write_bytes(b"NRRD0004\ntype: short\ndimension: 3\nsizes: 20 20 20\nspacings: 0 1 1\nencoding: raw\n"
                     b"endian: little\n\n" + b"\0" * 16000)
    return path


def _raw_nrrd(path: Path) -> Path:
    image = sitk.GetImageFromArray(_ct_array())
    sitk.WriteImage(image, str(path), False)
    return path


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def _truncated_dicom(t: Path) -> Path:
    paths = write_dicom_series(head_ct(), t / "series")
    return _truncate(paths[0], 0.5)


def _folder_of_text(t: Path) -> Path:
    folder = t / "notes"
    folder.mkdir()
    (folder / "readme.txt").write_text("no images here")
    return folder


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_a_clear_message_and_no_output(name, tmp_path, han_package):
    build, expected_code, words = CASES[name]
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = build(inputs)
    out = tmp_path / "out"
    run = run_cli(["segment", path, "--task", "han", "--model", han_package.path, "-o", out, "--device", "cpu",
                   "--progress-format", "json"], name)
    assert not run.traceback_shown, run.stderr
    assert run.code == expected_code, f"{name}: exit {run.code}: {run.stderr}"
    if expected_code == 2:
        message = run.stderr.strip()
        assert message.startswith("headseg: ") and len(message.splitlines()) == 1, message
        assert words in message, message
        assert not out.exists() or not [p for p in out.iterdir() if p.name.endswith((".seg.nrrd", ".csv", ".dcm"))]
    else:
        assert len(list(out.glob("*.seg.nrrd"))) == 1
        assert words in run.stdout
    assert not [p for p in tmp_path.rglob("*") if ".partial" in p.name or p.name.startswith(".tmp_")]


def test_bad_volumes_in_memory_raise_headseg_errors():
    """The same checks without files, for code that builds Volumes itself (the Slicer modules)."""
    ct = head_ct()
    bad = {
        "constant": ct.with_array(np.zeros(ct.shape, np.int16)),
        "nan": ct.with_array(np.where(ct.array > 1000, np.nan, ct.array)),
        "one slice": Volume(ct.array[:1], ct.spacing),
        "mr": ct.with_array(np.clip(ct.array + 1000, 0, 900)),
        "complex": ct.with_array(ct.array.astype(np.complex64)),
        "bool": ct.with_array(ct.array > 0),
    }
    for name, volume in bad.items():
        with pytest.raises(HeadSegError):
            check_ct(volume)
        assert name


def test_huge_header_is_refused_before_allocating(tmp_path):
    """A 100000^3 header with 100 bytes of data: refused from the header, peak memory stays that of the
    interpreter with headseg and SimpleITK loaded (measured in a fresh process)."""
    path = _nrrd_header(tmp_path / "huge.nrrd", "100000 100000 100000")
    write_volume(head_ct(), tmp_path / "normal.nrrd")
    script = (
        "import resource, sys\n"
        "from headseg.io import read_volume\n"
        "from headseg.errors import InputError\n"
        "read_volume(sys.argv[2])\n"  # a normal small CT: the baseline with everything imported and used
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    read_volume(sys.argv[1])\nexcept InputError as e:\n    print('refused:', e)\n"
        "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script, str(path), str(tmp_path / "normal.nrrd")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "far more than any head CT" in proc.stdout
    base_kb, peak_kb = (int(v) for v in proc.stdout.split()[-2:])
    growth_mb = (peak_kb - base_kb) / 1024
    print(f"huge header: peak RSS {peak_kb / 1024:.0f} MB, growth {growth_mb:.1f} MB over the baseline")
    assert growth_mb < 20


def test_read_volume_errors_are_headseg_errors(tmp_path):
    """Every refused file is a HeadSegError (what the Slicer modules catch to show a message box)."""
    for name in ("huge dimensions header", "truncated nii.gz", "corrupt mha", "rgb image", "4d image"):
        folder = tmp_path / name.replace(" ", "_")
        folder.mkdir()
        with pytest.raises(HeadSegError):
            read_volume(CASES[name][0](folder))
