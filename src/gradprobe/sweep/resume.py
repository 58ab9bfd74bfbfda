"""``sweep.resume=<dir>``: run again only the jobs of a sweep that did not finish, after checking
that the directory is that sweep and that none of its old workers is still running."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from gradprobe.instruments.files import new_dated_dir
from gradprobe.record import RunDirError, lock_holder, read_summary
from gradprobe.sweep.jobs import OK, job_dirs


def strip_sweep_keys(overrides: list[str]) -> list[str]:
    return [o for o in overrides if not o.lstrip("+~").startswith("sweep.")]


def previous_result(job_dir: Path, overrides: list[str]) -> dict[str, Any] | None:
    """For ``sweep.resume``: the record of this job if it already finished (completed or
    diverged), so it is skipped; ``None`` if it must run. A failed, killed or interrupted
    attempt is moved aside into ``previous_attempts/<time>/`` first, never deleted."""
    summary = read_summary(job_dir)
    if summary is None:
        return None
    if strip_sweep_keys(summary.get("overrides", [])) != strip_sweep_keys(overrides):
        raise ValueError(f"{job_dir} ran {summary.get('overrides')}, not {overrides}: resume "
                         "a sweep with the command that started it")
    if summary["status"] in OK:
        return summary
    attempt = new_dated_dir(job_dir / "previous_attempts")
    for path in job_dir.iterdir():  # its Hydra record and log too: this attempt writes its own
        if path.name != "previous_attempts":
            shutil.move(str(path), attempt / path.name)
    return None


def recorded_threads(job_dir: Path) -> int | None:
    """The torch threads the newest earlier attempt of this job trained with (its
    ``summary.json``, moved aside by :func:`previous_result`), so a re-run matches the jobs that
    already finished even if the launcher would now share the cores out differently; ``None``
    if no attempt got that far."""
    for attempt in sorted(Path(job_dir).glob("previous_attempts/*"), reverse=True):
        try:
            threads = (read_summary(attempt) or {}).get("threads")
        except RunDirError:
            continue
        if isinstance(threads, int) and threads >= 1:
            return threads
    return None


def check_sweep_resume(sweep_dir: Path, overrides: list[str]) -> None:
    """``sweep.resume=<dir>`` must name a sweep this command started, none of whose jobs is
    still running; RunDirError (one line) before anything is written, otherwise."""
    where = f"sweep.resume={sweep_dir}"
    saved = Path(sweep_dir) / "multirun.yaml"
    if not Path(sweep_dir).is_dir():
        raise RunDirError(f"{where}: no such directory")
    if not saved.is_file():
        raise RunDirError(f"{where}: not a sweep directory (no multirun.yaml)")
    from omegaconf import OmegaConf

    try:
        before = list(OmegaConf.load(saved).hydra.overrides.task)
    except Exception as err:
        raise RunDirError(f"{where}: {saved} is unreadable ({type(err).__name__})") from None
    if sorted(strip_sweep_keys(before)) != sorted(strip_sweep_keys(overrides)):
        raise RunDirError(f"{where}: that sweep ran {' '.join(strip_sweep_keys(before))!r}, "
                          f"not {' '.join(strip_sweep_keys(overrides))!r}; resume a sweep with "
                          "the command that started it")
    for job_dir in job_dirs(sweep_dir):
        holder = lock_holder(job_dir)
        if holder:
            raise RunDirError(f"{where}: job {job_dir.name} is still running ({holder}); wait "
                              "for the old sweep's workers to end or stop them first")
