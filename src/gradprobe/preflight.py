"""Checks Hydra runs before it creates or writes anything (a Hydra callback, torch-free).

Hydra makes the run directory (or the sweep directory) before the task function starts, so a
command that is going to be refused must be refused here, in ``on_run_start`` or
``on_multirun_start``: one line on stderr, exit 2, not one byte written.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gradprobe.record import RunDirError, is_rank_zero, read_summary, refuse_finished
from gradprobe.resume import config_to_resume
from gradprobe.sweep.resume import check_sweep_resume


def check_writable(folder: Path, key: str) -> None:
    """``folder`` can be made and written: its nearest existing ancestor is writable."""
    existing = Path(folder).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise RunDirError(f"{key}={folder}: {existing} is not a writable folder (read-only file "
                          f"system or permissions); choose another with {key}=<folder>")


def check_run(config: DictConfig) -> None:
    run_dir = Path(config.hydra.run.dir)
    if config.get("resume"):
        config_to_resume(Path(config.resume), list(config.hydra.overrides.task))
    else:
        refuse_finished(run_dir, read_summary(run_dir) if run_dir.is_dir() else None)
    check_writable(run_dir, "hydra.run.dir")


def check_sweep(config: DictConfig) -> None:
    resume = config.get("sweep", {}).get("resume")
    if resume:
        check_sweep_resume(Path(resume), list(config.hydra.overrides.task))
    check_writable(Path(config.hydra.sweep.dir), "hydra.sweep.dir")


class Preflight(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_on_error(check_run, config)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        refuse_on_error(check_sweep, config)


def refuse_on_error(check: Any, config: DictConfig) -> None:
    """Run ``check``; a refusal is one line and exit 2. DDP's extra processes (which rerun this
    command inside the run rank 0 started) are not checked."""
    if not is_rank_zero():
        return
    try:
        check(config)
    except RunDirError as err:
        print(err, file=sys.stderr)
        sys.exit(2)
