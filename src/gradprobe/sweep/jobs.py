"""A multirun's jobs as its directory shows them: which exist, how each ended, passing a signal
on to those still running, and the one-line summary at the end."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from collections import Counter
from pathlib import Path

from gradprobe.record import RunDirError, lock_holder, read_summary

log = logging.getLogger("gradprobe")
OK = ("completed", "diverged")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a multirun (numbered subdirectories), in job order."""
    dirs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(dirs, key=lambda p: int(p.name))


def job_statuses(sweep_dir: Path) -> dict[Path, str]:
    """Each job's status; "killed" for a record still saying running, "unreadable record"
    (logged with the file's name) for a summary.json that cannot be read."""
    statuses = {}
    for job_dir in job_dirs(sweep_dir):
        try:
            summary = read_summary(job_dir)
        except RunDirError as err:
            log.error("%s", err)
            statuses[job_dir] = "unreadable record"
            continue
        status = summary["status"] if summary else "no record"
        statuses[job_dir] = "killed" if status == "running" else status
    return statuses


def stop_jobs(sweep_dir: Path, signum: int, wait_s: float = 60.0) -> None:
    """Pass a signal on to the sweep's jobs running in other processes on this host (their
    locks name them) and wait until they have recorded it; a parallel launcher would otherwise
    kill them outright (joblib sends SIGKILL), leaving records that still say ``running``."""
    me, host = os.getpid(), socket.gethostname()
    running = []
    for job_dir in job_dirs(sweep_dir):
        holder = (lock_holder(job_dir) or "").split()  # "pid N on host, since ..."
        if len(holder) > 3 and holder[1] != str(me) and holder[3].rstrip(",") == host:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(holder[1]), signum)
                running.append(job_dir)
    deadline = time.time() + wait_s
    while any(lock_holder(job_dir) for job_dir in running) and time.time() < deadline:
        time.sleep(0.1)


def summarize(sweep_dir: Path) -> list[Path]:
    """Log one line of job counts; print the failed jobs' logs. Returns the failed jobs."""
    statuses = job_statuses(sweep_dir)
    counts = ", ".join(f"{n} {status}" for status, n in Counter(statuses.values()).items())
    log.info("sweep %s: %d jobs: %s", sweep_dir, len(statuses), counts)
    failed = [d for d, status in statuses.items() if status not in OK]
    if failed:
        logs = " ".join(str(d / "train.log") for d in failed)
        print(f"sweep: {len(failed)} of {len(statuses)} jobs failed; logs: {logs}",
              file=sys.stderr)
    return failed
