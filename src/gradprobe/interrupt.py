"""Signals end a run as an interruption that is recorded and told by the exit code.

SIGTERM (``kill``, schedulers), SIGHUP (a closed terminal) and SIGINT (Ctrl-C) raise
``KeyboardInterrupt`` in the main thread. Lightning turns that into a graceful stop (callbacks'
``on_exception``: the instruments write the rows they measured), the run records status
``interrupted`` with the signal's name, and the process exits ``128 + signal number``, as shells
report a process a signal ended (Lightning alone exits 0 after SIGTERM). A single run then says
so on stderr, with the command that resumes it (:func:`told`).

A sweep's job in a worker process (joblib, submitit_local) also ends when the sweep's main
process dies, even by ``kill -9``: it would otherwise train on and then hang writing its result
to a parent that is gone. A thread notices and interrupts the job as SIGTERM would (Linux: it
reads ``/proc``).
"""

from __future__ import annotations

import os
import shlex
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

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


def told(run_dir: Path, command: str) -> str:
    """What a single run a signal ended says on stderr: that it was interrupted, where, and the
    command that continues it from its newest checkpoint (``resume=<run dir>``)."""
    said = f"interrupted by {signal_name() or 'SIGINT'}"
    if not (run_dir / "summary.json").is_file():  # before the run wrote its record
        return f"{said} before the run started; nothing was recorded"
    said = f"{said} (recorded in its summary.json): {run_dir}"
    if not any((run_dir / "checkpoints").glob("*.ckpt")):
        return f"{said}\nno checkpoint yet, nothing to resume: run the command again"
    return f"{said}\ncontinue it with: {command} {shlex.quote(f'resume={run_dir}')}"


def mark_sweep_process() -> None:
    """Called by the command's main process: its sweep workers watch for its death."""
    os.environ.setdefault(SWEEP_PID, str(os.getpid()))


def end_with_parent(poll_s: float = 0.5, grace_s: float = 60.0) -> None:
    """In a sweep job running in a descendant of the sweep's main process (a joblib worker, a
    submitit_local job): when that process dies, interrupt this job like SIGTERM, and exit
    outright if it has not ended ``grace_s`` later. Does nothing in the main process itself or
    where the job is not its descendant (SLURM jobs are meant to outlive the submitter)."""
    global _watching
    sweep = int(os.environ.get(SWEEP_PID, "0"))
    if _watching or sweep == os.getpid() or not _descends_from(sweep):
        return
    _watching = True

    def watch() -> None:
        global orphaned
        while _alive(sweep):
            time.sleep(poll_s)
        orphaned = True
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="gradprobe-end-with-parent", daemon=True).start()


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: state, ppid, ...; None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _descends_from(ancestor: int) -> bool:
    pid = os.getppid()
    while pid > 1:
        if pid == ancestor:
            return True
        stat = _stat(pid)
        pid = int(stat[1]) if stat else 0
    return False


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"  # a zombie has ended, only not been reaped
