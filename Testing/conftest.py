"""Shared pytest fixtures.

* ``shared_dir``: the project's shared reference folder (``<repo>/../shared``); skipped when absent.
* ``slicer_share_dir``: Slicer's ColorFiles/terminologies copy in ``shared/slicer-share``.
* ``mrml_scene``: a fresh headless MRML scene with module logics for each test (slicer-core wheel);
  skipped cleanly when ``slicer`` cannot be imported.
* ``vtk_messages``: collects VTK/MRML error and warning messages, which never raise in Python.
* ``ge_tilted_series``: the real gantry-tilted GE head CT of dcm_qa_ct (``Testing/data``, BSD-2), unpacked.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Iterator, List

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
SLICER_SHARE_DIR = SHARED_DIR / "slicer-share"
GE_ARCHIVE = REPO_ROOT / "Testing" / "data" / "dcm_qa_ct_GE.tar.xz"


@pytest.fixture(scope="session")
def ge_tilted_series(tmp_path_factory) -> Path:
    """The 28 files of the GE series, unpacked into a temporary folder (with the licence beside them)."""
    target = tmp_path_factory.mktemp("dcm_qa_ct")
    with tarfile.open(GE_ARCHIVE, "r|xz") as archive:  # one pass through the stream: decompressed once
        for member in archive:
            if not (member.isfile() and member.name.startswith("dcm_qa_ct_GE/") and ".." not in member.name):
                continue
            if hasattr(tarfile, "data_filter"):
                archive.extract(member, target, filter="data")
            else:  # Python < 3.12 without the extraction filters; the member name is checked above
                archive.extract(member, target)
    folder = target / "dcm_qa_ct_GE"
    assert len(list(folder.glob("*.dcm"))) == 28
    return folder


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED_DIR.is_dir():
        pytest.skip(f"shared reference folder {SHARED_DIR} is not present")
    return SHARED_DIR


@pytest.fixture(scope="session")
def slicer_share_dir() -> Path:
    if not (SLICER_SHARE_DIR / "terminologies").is_dir():
        pytest.skip(f"Slicer share files {SLICER_SHARE_DIR} are not present")
    return SLICER_SHARE_DIR


@pytest.fixture
def mrml_scene(tmp_path: Path) -> Iterator[object]:
    """A :class:`headseg.slicer.scene.HeadlessSlicer` (``.scene``, ``.logics``, ``.app_logic``) per test.

    Uses the Slicer share files when present (terminologies and colour tables), otherwise runs without.
    """
    pytest.importorskip("slicer", reason="slicer-core is not installed")
    from headseg.slicer.scene import init_headless_slicer

    share = str(SLICER_SHARE_DIR) if (SLICER_SHARE_DIR / "terminologies").is_dir() else None
    temp_dir = tmp_path / "slicer_temp"
    temp_dir.mkdir()
    headless = init_headless_slicer(share_dir=share, temp_dir=str(temp_dir))
    try:
        yield headless
    finally:
        headless.close()


@pytest.fixture
def vtk_messages() -> Iterator[List[str]]:
    """List that receives every VTK error/warning text emitted during the test (VTK never raises)."""
    vtk = pytest.importorskip("vtkmodules.vtkCommonCore")
    messages: List[str] = []
    window = vtk.vtkOutputWindow.GetInstance()

    def on_message(_caller, _event, text=None) -> None:
        messages.append(str(text))

    on_message.CallDataType = vtk.VTK_STRING
    tags = [window.AddObserver(vtk.vtkCommand.ErrorEvent, on_message),
            window.AddObserver(vtk.vtkCommand.WarningEvent, on_message)]
    try:
        yield messages
    finally:
        for tag in tags:
            window.RemoveObserver(tag)


os.environ.setdefault("OMP_NUM_THREADS", "1")  # the test machine is small and shared
