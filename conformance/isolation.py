"""Keeping one implementation from taking the run down: a time limit per call, and crashes as verdicts.

Processes come from pytest-xdist: the suite runs its tests in worker processes
(one worker unless ``-n`` says otherwise; ``-n 0`` runs in-process, without
this protection, for debuggers), and xdist replaces a worker that dies. What
this module adds is the verdict: the controller learns which test a worker was
running and how it died, and that test gets a FAIL ("crashed: signal 11
(SIGSEGV)" / "timed out after 120 s") while every other row goes on.

- :class:`deadline` limits one implementation call. A SIGALRM raises
  :class:`backends.base.TimedOut` in the call at the limit (the call was in
  Python code, or returned to it); if the call does not come back to Python
  (C code holding the interpreter), faulthandler ends the process a grace
  period later, and the crash path below reports the time-out.
- Each worker writes, before every test, which result the test is for
  (:func:`note_current`), and sends fatal errors and time-outs to a log
  (faulthandler); :func:`crash_result` on the controller turns those two files
  (and the worker's exit status) into the crashed test's result.
- An implementation that raises KeyboardInterrupt or SystemExit inside a call
  has failed, like one that raises anything else; only a real SIGINT (Ctrl-C)
  ends the run. :func:`watch_interrupts` tells the two apart
  (:func:`user_interrupted`).
"""

from __future__ import annotations

import faulthandler
import json
import signal
import sys
import sysconfig
import threading
from pathlib import Path

from contract.errors import TimedOut

#: Seconds an implementation call may take by default (--call-timeout): the default cases take well under
#: a second per call; a first call may include tracing or compilation (seconds); T=512 with --seeds adds little.
DEFAULT_CALL_TIMEOUT = 120.0


def hard_stop_grace(seconds: float) -> float:
    """After the limit, how long a call that does not return to Python gets before its process is ended:
    as long as the limit itself, between 5 and 30 s."""
    return min(30.0, max(5.0, seconds))


_FATAL_ERRORS = {
    "Segmentation fault": signal.SIGSEGV,
    "Floating point exception": signal.SIGFPE,
    "Aborted": signal.SIGABRT,
    "Bus error": signal.SIGBUS,
    "Illegal instruction": signal.SIGILL,
}


class deadline:
    """``with deadline(seconds, what):`` -- raise TimedOut in the block after ``seconds`` (0 or None: no limit)."""

    _log = None  # where faulthandler writes when it ends the process (a worker's log; stderr otherwise)

    def __init__(self, seconds: float | None, what: str = "the call"):
        self.seconds = seconds or 0.0
        self.what = what
        self._previous = None

    def _expired(self, signum, frame):
        raise TimedOut(f"timed out after {self.seconds:g} s ({self.what} did not return; --call-timeout sets the limit)")

    def __enter__(self):
        if not self.seconds:
            return self
        faulthandler.dump_traceback_later(self.seconds + hard_stop_grace(self.seconds), exit=True, file=deadline._log or sys.stderr)
        if hasattr(signal, "SIGALRM") and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGALRM, self._expired)
            signal.setitimer(signal.ITIMER_REAL, self.seconds)
        return self

    def __exit__(self, *exc):
        if not self.seconds:
            return False
        if self._previous is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
        faulthandler.cancel_dump_traceback_later()
        return False


# ---------------------------------------------------------------------------
# Ctrl-C, told apart from a KeyboardInterrupt raised by an implementation
# ---------------------------------------------------------------------------

_interrupted = False


def _on_sigint(signum, frame):
    global _interrupted
    _interrupted = True
    signal.default_int_handler(signum, frame)  # raises KeyboardInterrupt, as Python's own handler does


def watch_interrupts() -> None:
    """Note every real SIGINT this process receives (it still raises KeyboardInterrupt as usual). Installed only
    over Python's default handler (a process that ignores SIGINT, or handles it itself, is left as it is)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


def user_interrupted() -> bool:
    """Whether a real SIGINT arrived since :func:`watch_interrupts` (a KeyboardInterrupt without one was raised
    by code: an implementation's, which has then failed)."""
    return _interrupted


# ---------------------------------------------------------------------------
# Workers: what a test is for, and how a worker died
# ---------------------------------------------------------------------------


def worker_files(directory: str | Path, worker: str) -> tuple[Path, Path]:
    """(the note of the current test, the fatal-error log) of one worker."""
    directory = Path(directory)
    return directory / f"{worker}.current.json", directory / f"{worker}.log"


def start_worker(directory: str | Path, worker: str) -> None:
    """In a worker: open the log that fatal errors and hard time-outs go to."""
    _, log = worker_files(directory, worker)
    deadline._log = open(log, "w")  # kept open: faulthandler writes to its descriptor when the process dies


def note_current(directory: str | Path, worker: str, nodeid: str, result: dict, call_timeout: float | None) -> None:
    """In a worker, before a test: the result it will produce, in case the worker dies during it; and fatal
    errors to the worker's log (again before every test: pytest's own faulthandler plugin points it at
    stderr when it is configured, after this suite)."""
    current, _ = worker_files(directory, worker)
    current.write_text(json.dumps({"nodeid": nodeid, "result": result, "call_timeout": call_timeout}))
    faulthandler.enable(file=deadline._log)


def crash_result(directory: str | Path, worker: str, nodeid: str, exit_status: int | None = None) -> tuple[dict | None, str]:
    """On the controller, after ``worker`` died running ``nodeid``: (that test's result, or None if it is
    not a conformance test; what happened). ``exit_status`` is the worker process's, where known (negative:
    the signal that ended it)."""
    current, log = worker_files(directory, worker)
    try:
        note = json.loads(current.read_text())
    except (OSError, ValueError):
        note = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    if note.get("nodeid") != nodeid:
        return None, describe_death(lines, None, exit_status)
    return note["result"], describe_death(lines, note.get("call_timeout"), exit_status)


def describe_death(log_lines: list[str], call_timeout: float | None, exit_status: int | None = None) -> str:
    """What a worker's faulthandler log says about its death, in the words of a verdict."""
    first = next((line for line in log_lines if line.strip()), "")
    frame = _culprit_frame(log_lines)
    place = f"; in {frame}" if frame else ""
    if first.startswith("Timeout ("):
        # faulthandler's own header, "Timeout (0:02:30)!": the hard stop of a deadline.
        limit = f" after {call_timeout:g} s" if call_timeout else ""
        later = f" {hard_stop_grace(call_timeout):g} s later" if call_timeout else ""
        return f"timed out{limit}: the call did not return to Python, and its process was ended{later}{place}"
    if first.startswith("Fatal Python error: "):
        name = first.removeprefix("Fatal Python error: ").strip()
        number = _FATAL_ERRORS.get(name)
        how = f"signal {int(number)} ({number.name}, {name})" if number else name
        return f"crashed: {how}{place}"
    if exit_status is not None and exit_status < 0:
        number = -exit_status
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        return f"crashed: killed by signal {number} ({name})"
    if exit_status is not None:
        return f"crashed: the worker process exited with status {exit_status} during the test (os._exit or exit() in C)"
    return "crashed: the worker process ended during the test without a fatal signal (an exit, or killed)"


def worker_exit_status(node, wait: float = 5.0) -> int | None:
    """The exit status of a pytest-xdist worker that has gone down, from the process execnet started (a popen
    gateway's); None where that is not known (another gateway type, another execnet)."""
    popen = getattr(getattr(getattr(node, "gateway", None), "_io", None), "popen", None)
    if popen is None:
        return None
    try:
        return popen.wait(timeout=wait)
    except Exception:  # still running, or not a subprocess.Popen: unknown
        return None


def _culprit_frame(log_lines: list[str]) -> str:
    """The innermost frame outside Python's own library of the thread that died (faulthandler's "Current
    thread"), or of the main thread for a time-out (listed last): where to look first."""
    blocks: list[list[str]] = []
    current = None
    for line in log_lines:
        if line.startswith(("Current thread", "Thread ")):
            blocks.append([])
            if line.startswith("Current thread"):
                current = blocks[-1]
        elif blocks and line.strip().startswith("File "):
            blocks[-1].append(line.strip())
    frames = current if current is not None else (blocks[-1] if blocks else [])
    library = (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])
    ours = [f for f in frames if not any(f'File "{path}' in f for path in library)]
    return (ours or frames or [""])[0]
