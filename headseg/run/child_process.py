"""Run ``headseg segment`` in a child process and follow it without blocking the caller.

Why a child process: inference takes seconds to minutes and may exhaust memory. Running it inside
Slicer's process would freeze the GUI and could take Slicer down with it; a child process streams
progress, can be cancelled at any moment, and its failure is just an exit code.

The protocol is the CLI's ``--progress-format json`` mode: one JSON object per stdout line
(``progress``, ``log``, ``result``, ``error`` events) and the exit codes of :class:`headseg.errors.ExitCode`,
whose sentences (:data:`headseg.errors.EXIT_MESSAGES`) the user reads when the child said nothing better.

Nothing here imports Qt: the Slicer widget calls :meth:`SegmentationProcess.poll` from a ``QTimer``,
the batch script and the tests call :meth:`SegmentationProcess.wait`. Reader threads only move lines
into a queue; every state change happens on the thread that calls ``poll`` (Qt widgets must only be
touched from the GUI thread).
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from headseg.errors import EXIT_MESSAGES, ExitCode

__all__ = [
    "EXIT_MESSAGES",
    "RunState",
    "SegmentationProcess",
    "headseg_search_path",
    "python_executable",
    "segment_command",
    "windows_tree_kill_command",
]

EXIT_CANCELLED = ExitCode.CANCELLED
STDERR_LINES_KEPT = 40


class RunState(str, Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    CANCELLING = "cancelling"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def python_executable() -> str:
    """The Python interpreter that can run ``-m headseg``.

    Inside the Slicer application ``sys.executable`` is the Slicer binary, not Python; its Python
    is started through the ``PythonSlicer`` launcher, which sets the library paths.
    """
    executable = sys.executable or ""
    if "python" in os.path.basename(executable).lower():
        return executable
    launcher = "PythonSlicer" + (".exe" if os.name == "nt" else "")
    here = os.path.dirname(executable)
    candidates = [shutil.which(launcher), os.path.join(here, launcher),
                  os.path.join(here, "..", "bin", launcher)]  # macOS: Contents/MacOS/Slicer, Contents/bin
    found = next((c for c in candidates if c and os.path.isfile(c)), "")
    if not found:
        raise RuntimeError(
            f"Cannot find the Python interpreter to run the segmentation ({launcher} next to {executable}). "
            "Reinstall 3D Slicer or run 'headseg segment' from a Python environment."
        )
    return found


def headseg_search_path() -> str:
    """The folder that contains the ``headseg`` package, so a child Python can import it.

    Inside Slicer the package is installed next to the scripted modules, a folder that is on Slicer's
    ``sys.path`` but not on the ``PYTHONPATH`` a child process inherits.
    """
    return str(Path(__file__).resolve().parents[2])


def segment_command(inputs: Sequence[Union[str, Path]], task: str, output_dir: Union[str, Path],
                    model: Optional[str] = None, device: str = "auto",
                    roi: Optional[Tuple[Sequence[float], Sequence[float]]] = None,
                    structures: Optional[Sequence[str]] = None,
                    python: Optional[str] = None, tta: bool = False) -> List[str]:
    """Argument list of ``python -m headseg segment ... --progress-format json``.

    ``roi`` is ``(center_lps, size_mm)``; ``structures`` are label-set keys to keep; ``tta`` adds
    ``--tta`` (test-time augmentation).
    """
    if not inputs:
        raise ValueError("segment_command needs at least one input image.")
    command = [python or python_executable(), "-m", "headseg", "segment"]
    command += [str(p) for p in inputs]
    command += ["--task", task, "-o", str(output_dir), "--device", device, "--progress-format", "json"]
    if model:
        command += ["--model", str(model)]
    if roi is not None:
        center, size = roi
        values = list(center) + list(size)
        if len(values) != 6:
            raise ValueError(f"roi must be (center_lps[3], size_mm[3]), got {roi!r}.")
        # one "--roi=..." word: argparse takes a separate value that starts with "-" (a negative LPS x) for
        # an option; repr() gives the shortest text that reads back as the same float
        command.append("--roi=" + ",".join(repr(float(v)) for v in values))
    if structures:
        command += ["--structures", ",".join(structures)]
    if tta:
        command.append("--tta")
    return command


EventCallback = Callable[[Dict[str, object]], None]


class SegmentationProcess:
    """One ``headseg segment`` child process: start, poll for events, cancel, read the outcome.

    Args:
        command: full argument list (see :func:`segment_command`).
        work_dir: a temporary folder owned by this run (input copy, raw output). It is removed when the
            run fails or is cancelled, and by :meth:`cleanup` after the caller has read the results.
        env: extra environment variables for the child.
        base_env: the environment the child starts from; None = this process's. Inside Slicer the
            modules pass Slicer's startup environment (``slicer.util.startupEnvironment()``), as
            ``slicer.util.launchConsoleProcess`` does, so the child gets none of Slicer's own settings.
        on_event: called from :meth:`poll` (the caller's thread) with every event dict.
        kill_timeout_s: how long a cancelled child may take to clean up before it is killed.
    """

    def __init__(self, command: Sequence[str], work_dir: Optional[Union[str, Path]] = None,
                 env: Optional[Dict[str, str]] = None, on_event: Optional[EventCallback] = None,
                 kill_timeout_s: float = 5.0, base_env: Optional[Dict[str, str]] = None) -> None:
        self.command = [str(c) for c in command]
        self.base_env = dict(base_env) if base_env is not None else None
        self.work_dir = Path(work_dir) if work_dir else None
        self.extra_env = dict(env or {})
        self.on_event = on_event
        self.kill_timeout_s = kill_timeout_s
        self.state = RunState.NOT_STARTED
        self.fraction = 0.0
        self.message = ""
        self.log: List[str] = []
        self.results: List[Dict[str, object]] = []
        self.error_message = ""
        self.error_code: Optional[int] = None
        self.returncode: Optional[int] = None
        self._stderr_tail: List[str] = []
        self._proc: Optional[subprocess.Popen] = None
        self._lines: queue.Queue = queue.Queue()
        self._open_streams = 0
        self._kill_deadline: Optional[float] = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self.state is not RunState.NOT_STARTED:
            raise RuntimeError("This segmentation process was already started; create a new one.")
        env = dict(os.environ if self.base_env is None else self.base_env)
        env.update(self.extra_env)
        env["PYTHONUNBUFFERED"] = "1"  # progress lines must arrive while the child works
        env["PYTHONIOENCODING"] = "utf-8"
        paths = [headseg_search_path()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
        kwargs: Dict[str, Any] = {}
        if os.name == "nt":  # (getattr: these flags exist on Windows only)
            no_window = getattr(subprocess, "CREATE_NO_WINDOW", 0)
            kwargs["creationflags"] = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0) | no_window
        else:
            kwargs["start_new_session"] = True  # own process group: cancel reaches launcher and child
        try:
            self._proc = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                env=env, **kwargs,
            )
        except OSError as error:
            self._finish(RunState.FAILED, f"Could not start the segmentation process ({error}).")
            raise RuntimeError(self.error_message) from error
        self.state = RunState.RUNNING
        self.message = "Starting"
        for name, stream in (("stdout", self._proc.stdout), ("stderr", self._proc.stderr)):
            self._open_streams += 1
            threading.Thread(target=self._read_lines, args=(name, stream), daemon=True,
                             name=f"headseg-{name}-reader").start()

    @property
    def running(self) -> bool:
        return self.state in (RunState.RUNNING, RunState.CANCELLING)

    @property
    def finished(self) -> bool:
        return self.state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)

    def poll(self) -> List[Dict[str, object]]:
        """Handle everything the child printed since the last call; return those events.

        Never blocks. Call it periodically (a 100-250 ms timer) until :attr:`finished` is True.
        """
        events: List[Dict[str, object]] = []
        while True:
            try:
                source, line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._open_streams -= 1
                continue
            event = self._parse(source, line)
            if event is not None:
                events.append(event)
                self._apply(event)
                if self.on_event is not None:
                    self.on_event(event)
        if self._proc is not None and self.running:
            if self._kill_deadline is not None and time.monotonic() > self._kill_deadline:
                self._signal(kill=True)
                self._kill_deadline = None
            if self._open_streams == 0 and self._proc.poll() is not None:
                self._on_exit(self._proc.returncode)
        return events

    def wait(self, timeout: Optional[float] = None, interval: float = 0.05) -> RunState:
        """Poll until the run ends (for scripts and tests, never the GUI). Returns the final state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            self.poll()
            if self.finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"The segmentation process did not finish within {timeout} s.")
            time.sleep(interval)
        return self.state

    def cancel(self, wait: bool = False) -> None:
        """Ask the child to stop (SIGTERM to its process group); it is killed if it is still there
        after ``kill_timeout_s``. Without ``wait`` this returns at once and :meth:`poll` finishes the job."""
        if self.state is RunState.NOT_STARTED:
            self._finish(RunState.CANCELLED, EXIT_MESSAGES[EXIT_CANCELLED])
            return
        if not self.running:
            return
        self.state = RunState.CANCELLING
        self.message = "Cancelling"
        self._kill_deadline = time.monotonic() + self.kill_timeout_s
        self._signal(kill=False)
        if wait:
            self.wait(timeout=self.kill_timeout_s + 10.0)

    def cleanup(self) -> None:
        """Remove the run's temporary folder (call after importing the results)."""
        if self.work_dir is not None and self.work_dir.exists():
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # -- outcome ---------------------------------------------------------------------------------
    @property
    def result(self) -> Optional[Dict[str, object]]:
        """The first ``result`` event (one input image gives one result)."""
        return self.results[0] if self.results else None

    # -- internals -------------------------------------------------------------------------------
    def _read_lines(self, source: str, stream) -> None:
        try:
            for raw in iter(stream.readline, b""):
                self._lines.put((source, raw.decode("utf-8", errors="replace").rstrip("\r\n")))
        finally:
            stream.close()
            self._lines.put((source, None))

    def _parse(self, source: str, line: str) -> Optional[Dict[str, object]]:
        if not line.strip():
            return None
        if source == "stdout" and line.lstrip().startswith("{"):
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                event = None
            if isinstance(event, dict) and "event" in event:
                return event
        if source == "stderr":
            self._stderr_tail = (self._stderr_tail + [line])[-STDERR_LINES_KEPT:]
        return {"event": "log", "level": "info" if source == "stdout" else "stderr", "message": line}

    def _apply(self, event: Dict[str, object]) -> None:
        kind = event.get("event")
        if kind == "progress":
            fraction = event.get("fraction", self.fraction)
            if isinstance(fraction, (int, float, str)):
                try:
                    self.fraction = min(1.0, max(0.0, float(fraction)))
                except ValueError:
                    pass
            self.message = str(event.get("message", self.message))
        elif kind == "log":
            level = str(event.get("level", "info"))
            text = str(event.get("message", ""))
            self.log.append(text if level in ("info", "stderr") else f"{level}: {text}")
        elif kind == "result":
            self.results.append(event)
        elif kind == "error":
            self.error_message = str(event.get("message", "")) or self.error_message
            code = event.get("code")
            self.error_code = int(code) if isinstance(code, (int, float)) else self.error_code
            self.log.append(f"error: {self.error_message}")

    def _on_exit(self, returncode: int) -> None:
        self.returncode = returncode
        if self.state is RunState.CANCELLING or returncode == EXIT_CANCELLED:
            self._finish(RunState.CANCELLED, EXIT_MESSAGES[EXIT_CANCELLED])
        elif returncode == 0:  # error events with exit 0 are cases skipped in a multi-case run
            if not self.results:
                self._finish(RunState.FAILED, "The segmentation process ended without producing a result.")
            else:
                self.fraction = 1.0
                self.message = "Done"
                self.state = RunState.SUCCEEDED
        else:
            general = EXIT_MESSAGES.get(returncode, f"The process stopped with code {returncode}.")
            if returncode < 0:
                general = (f"The segmentation process was killed (signal {-returncode}); "
                           "it may have run out of memory.")
            self.error_code = self.error_code if self.error_code is not None else returncode
            if self.error_message and returncode != ExitCode.OUT_OF_MEMORY:
                message = self.error_message  # the CLI's own sentence already says what to do
            else:  # out of memory: add the advice; a crash: show its last words
                detail = self.error_message or (self._stderr_tail[-1] if self._stderr_tail else "")
                message = f"{detail} {general}".strip() if detail else general
            self._finish(RunState.FAILED, message)

    def _finish(self, state: RunState, message: str) -> None:
        self.state = state
        self.error_message = message
        self.message = message
        if self.work_dir is not None:
            self.cleanup()

    def _signal(self, kill: bool) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        if os.name == "nt":
            _kill_tree_windows(proc, kill)
            return
        sig = signal.SIGKILL if kill else signal.SIGTERM
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def windows_tree_kill_command(pid: int) -> List[str]:
    """``taskkill`` of a process and all its descendants, forcibly (Windows has no SIGTERM a console
    child could catch: ``Popen.terminate`` is already TerminateProcess)."""
    return ["taskkill", "/PID", str(int(pid)), "/T", "/F"]


def _kill_tree_windows(proc: subprocess.Popen, kill: bool,
                       run: Callable[..., Any] = subprocess.run) -> None:
    """Stop the child and everything it started. ``PythonSlicer.exe`` is the CTK launcher: the work runs
    in its child ``python-real``, which keeps computing (pipes open, temporary folder locked) when only
    the launcher is stopped. ``taskkill /T`` walks the tree from the launcher, so it runs first, while the
    launcher still links its children; it ships with every Windows, so no extra package is needed.
    ``kill`` is ignored: on Windows a cancel and a kill are the same hard stop."""
    try:
        run(windows_tree_kill_command(proc.pid), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            timeout=30, check=False, creationflags=getattr(subprocess, "CREATE_NO_WINDOW", 0))
    except (OSError, subprocess.SubprocessError):
        pass  # no taskkill (a stripped-down Windows): at least the direct child goes
    try:
        if proc.poll() is None:
            proc.kill()
    except OSError:
        pass
