"""Signals end a run as an interruption that is recorded and told by the exit code.

SIGTERM (``kill``, schedulers), SIGHUP (a closed terminal) and SIGINT (Ctrl-C) raise
``KeyboardInterrupt`` in the main thread. Lightning turns that into a graceful stop (callbacks'
``on_exception``: the instruments write the rows they measured), the run records status
``interrupted`` with the signal's name, and the process exits ``128 + signal number``, as shells
report a process a signal ended (Lightning alone exits 0 after SIGTERM).

A sweep's worker process (joblib, submitit) also ends when the sweep's main process dies, even by
``kill -9``: it would otherwise train on and then hang writing its result to a parent that is
gone. A thread notices the new parent and interrupts the job as SIGTERM would.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SWEEP_PID = "GRADPROBE_SWEEP_PID"  # the sweep's main process, inherited by its workers
received: int | None = None  # the first signal this process got
orphaned = False  # this worker's sweep process died
before_raising: list[Callable[[int], None]] = []  # e.g. pass the signal on to sweep workers
_watching = False


def _handler(signum: int, frame: object) -> None:
    global received
    if received is None:
        received = signum
        for hook in before_raising:
            hook(signum)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def install() -> None:
    """Route SIGINT, SIGTERM and SIGHUP through :func:`_handler` (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        for sig in SIGNALS:
            signal.signal(sig, _handler)


def signal_name() -> str | None:
    return signal.Signals(received).name if received else None


def exit_code() -> int:
    """128 + the signal's number; 130 (as for Ctrl-C) when no signal was recorded."""
    return 128 + (received or signal.SIGINT)


def mark_sweep_process() -> None:
    """Called by the command's main process: its sweep workers watch for its death."""
    os.environ.setdefault(SWEEP_PID, str(os.getpid()))


def end_with_parent(poll_s: float = 0.5, grace_s: float = 60.0) -> None:
    """In a sweep's worker process (a child of the sweep's main process): when that process
    dies, interrupt this job like SIGTERM, and exit outright if it has not ended ``grace_s``
    later. Does nothing in the main process itself or where the parent is someone else (SLURM)."""
    global _watching
    parent = os.getppid()
    if _watching or os.environ.get(SWEEP_PID) != str(parent):
        return
    _watching = True

    def watch() -> None:
        global orphaned
        while os.getppid() == parent:
            time.sleep(poll_s)
        orphaned = True
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="gradprobe-end-with-parent", daemon=True).start()
