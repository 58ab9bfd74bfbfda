"""Sweep-level bookkeeping, torch-free: Hydra instantiates this at start-up of every command.

``SweepSummary`` runs when a multirun ends: it reads each job's ``summary.json`` and prints one
line of counts. Divergence is a result, not an error; if any job failed (raised, or was killed and
so still says ``running``, or never wrote a record), it says how many of how many and where their
logs are, and the command exits 1 -- after every other job has run.
"""

from __future__ import annotations

import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gradprobe.record import read_summary

log = logging.getLogger("gradprobe")
OK = ("completed", "diverged")


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a multirun (numbered subdirectories), in job order."""
    dirs = [p for p in Path(sweep_dir).iterdir() if p.is_dir() and p.name.isdigit()]
    return sorted(dirs, key=lambda p: int(p.name))


def job_statuses(sweep_dir: Path) -> dict[Path, str]:
    statuses = {}
    for job_dir in job_dirs(sweep_dir):
        summary = read_summary(job_dir)
        status = summary["status"] if summary else "no record"
        statuses[job_dir] = "killed" if status == "running" else status
    return statuses


class SweepSummary(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if not sweep_dir.is_dir():
            return
        statuses = job_statuses(sweep_dir)
        counts = ", ".join(f"{n} {status}" for status, n in Counter(statuses.values()).items())
        log.info("sweep %s: %d jobs: %s", sweep_dir, len(statuses), counts)
        failed = [d for d, status in statuses.items() if status not in OK]
        if failed:
            logs = " ".join(str(d / "train.log") for d in failed)
            print(f"sweep: {len(failed)} of {len(statuses)} jobs failed; logs: {logs}",
                  file=sys.stderr)
            sys.exit(1)
