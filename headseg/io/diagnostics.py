"""What readers say besides their result: warnings logged while reading (collected, to be shown as the
case's warnings and kept in its run record) and what ITK, MetaIO and GDCM print straight to the process's
stderr (captured, and logged for ``-v``). Used wherever a case is read for the user: ``headseg segment``
(:mod:`headseg.run.segment_case`) and ``headseg convert`` (:mod:`headseg.io.convert`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Iterator, List

__all__ = ["collect_warnings", "native_stderr_captured"]

log = logging.getLogger("headseg")


@contextlib.contextmanager
def collect_warnings(logger_name: str) -> Iterator[List[str]]:
    """Warnings logged by ``logger_name`` inside the block, as strings (not also printed by logging)."""
    messages: List[str] = []

    class _Collector(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    target = logging.getLogger(logger_name)
    handler, propagate = _Collector(logging.WARNING), target.propagate
    target.addHandler(handler)
    target.propagate = False
    try:
        yield messages
    finally:
        target.removeHandler(handler)
        target.propagate = propagate


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """ITK, MetaIO and GDCM print diagnostics straight to file descriptor 2 ("MetaImage: Read: Cannot parse
    file") before our own clear message; capture them while reading and log them (shown with -v).

    Only in the main thread: file descriptor 2 belongs to the whole process (a worker thread would
    capture what the others print)."""
    import tempfile

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace").strip()
            if text:
                log.info("Reader diagnostics: %s", text)
