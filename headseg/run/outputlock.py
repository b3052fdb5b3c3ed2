"""Runs that share an output folder: a short lock on the folder and a claim on the cases a run writes.

Two ``headseg segment`` runs (or a Slicer batch and a ``--cluster`` run) may be started into one output
folder at the same time. Two things keep them from losing each other's work (``headseg/run/plan.py`` and
``headseg/run/volumes_csv.py`` use both):

* :func:`folder_lock`: held only for the short steps that read and rewrite a shared file (planning,
  ``volumes.csv``), so each run merges its rows into the table as it is on disk, not as it was when it
  planned.
* :class:`CaseClaim`: one hidden file per run in ``OUTDIR/.headseg-running/`` naming the cases it is
  writing, locked by that run for as long as it runs. A run that plans a case another live run claims is
  refused before any work. The operating system drops the lock when a process ends, however it ends, so a
  killed run never blocks the folder: its claim file is found unlocked and removed.

Locks are ``flock`` (``msvcrt.locking`` on Windows): advisory, between HeadSeg processes only. A lock file
is unlinked by its holder before it lets go; a waiter that then gets the lock on the unlinked file sees
that the name now points elsewhere and tries again.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

from headseg.errors import InputError

__all__ = ["LOCK_NAME", "CLAIMS_DIR", "folder_lock", "CaseClaim", "claim_cases"]

LOCK_NAME = ".headseg.lock"
CLAIMS_DIR = ".headseg-running"
#: The folder lock guards steps of milliseconds; a wait this long means a stuck process.
LOCK_TIMEOUT_S = 120.0


def _try_lock(fd: int, shared: bool = False) -> bool:
    """Take the lock on ``fd`` without waiting; False when another open file holds it."""
    try:
        import fcntl
    except ImportError:  # Windows: lock one byte far past the content, so that others can still read it
        import msvcrt

        try:
            os.lseek(fd, 1 << 30, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            return True
        except OSError:
            return False
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _still_named(fd: int, path: Path) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (its holder may have unlinked it)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _open_locked(path: Path, deadline: Optional[float], create_new: bool = False) -> Optional[int]:
    """An fd of ``path`` holding its exclusive lock; None when it is held elsewhere past ``deadline``
    (None: do not wait)."""
    while True:
        flags = os.O_RDWR | os.O_CREAT | (os.O_EXCL if create_new else 0)
        fd = os.open(path, flags, 0o666)
        while not _try_lock(fd):
            if deadline is None or time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.02)
        if _still_named(fd, path):
            return fd
        os.close(fd)


def _unlink_and_close(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)  # while still held, so that no later run locks the same file
    os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold the lock of ``folder`` (which must exist) inside the block; leaves no file behind."""
    path = Path(folder) / LOCK_NAME
    try:
        fd = _open_locked(path, time.monotonic() + timeout)
    except OSError as exc:
        raise InputError(f"Cannot lock the output folder {folder} ({exc.strerror or exc}); check that it is "
                         "writable, or choose another one with -o.") from exc
    if fd is None:
        raise InputError(f"Another HeadSeg run has held the output folder {folder} for over {timeout:.0f} s. "
                         f"Wait for it to finish, or delete {path} if no HeadSeg run is going on.")
    try:
        yield
    finally:
        _unlink_and_close(fd, path)


class CaseClaim:
    """The cases one run is writing into a folder, locked for as long as the run holds this object.

    :meth:`release` (also on garbage collection and at process exit) removes the claim."""

    def __init__(self, folder: Path, path: Path, fd: int, cases: Sequence[str]) -> None:
        self.folder, self.path, self.cases = folder, path, list(cases)
        self._fd: Optional[int] = fd

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        _unlink_and_close(fd, self.path)
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()  # only when no other run's claim is in it

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.release()


def _live_claims(claims_dir: Path) -> List[dict]:
    """What the live runs claim; claim files of runs that ended (unlocked) are removed."""
    live: List[dict] = []
    if not claims_dir.is_dir():
        return live
    for path in sorted(claims_dir.glob("*.json")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue  # removed meanwhile
        try:
            if _try_lock(fd, shared=True):  # nobody holds it: its run ended without releasing it
                with contextlib.suppress(OSError):
                    os.unlink(path)
                continue
            with contextlib.suppress(OSError, ValueError):
                live.append(json.loads(path.read_text(encoding="utf-8")))
        finally:
            os.close(fd)
    return live


def claim_cases(folder: Path, cases: Sequence[str]) -> CaseClaim:
    """Claim ``cases`` in ``folder`` for this run; refuses (InputError) a case a live run is writing.

    Call it holding :func:`folder_lock`, so that two runs cannot claim at the same moment."""
    claims_dir = Path(folder) / CLAIMS_DIR
    wanted = set(cases)
    for other in _live_claims(claims_dir):
        busy = sorted(wanted & set(other.get("cases") or ()))
        if busy:
            where = f"process {other.get('pid')} on {other.get('host')}"
            raise InputError(f"Another HeadSeg run ({where}) is writing case {busy[0]!r} into {folder} now. Wait "
                             "for it to finish, or choose another output folder; two runs never write one case.")
    claims_dir.mkdir(exist_ok=True)
    path = claims_dir / f"{uuid.uuid4().hex}.json"
    fd = _open_locked(path, None, create_new=True)
    if fd is None:  # a fresh random name cannot be locked by anyone else
        raise InputError(f"Cannot claim the cases of this run in {folder}; choose another output folder.")
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "cases": sorted(wanted)}
    os.lseek(fd, 0, os.SEEK_SET)  # the Windows lock moved the position
    os.write(fd, json.dumps(record).encode("utf-8"))
    return CaseClaim(Path(folder), path, fd, cases)
