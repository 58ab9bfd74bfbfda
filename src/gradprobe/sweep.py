"""Sweep-level bookkeeping, torch-free: Hydra instantiates this at start-up of every command.

``SweepSummary`` runs when a multirun ends: it reads each job's ``summary.json``, prints one
line of counts and writes the sweep report (``sweep.report=false`` skips it). Divergence is a
result, not an error; if any job failed (raised, or was killed and so still says ``running``, or
never wrote a record), it says how many of how many and where their logs are, and the command
exits 1 -- after every other job has run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

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


def threads_per_job(launcher: Any, cpus: int | None = None) -> int | None:
    """Torch threads for one job so parallel jobs do not oversubscribe the cores: the cores
    divided among joblib's ``n_jobs`` (negative counts back from all cores, as joblib does), or
    submitit's ``cpus_per_task``; ``None`` (torch's default) for sequential launchers."""
    cpus = cpus or os.cpu_count() or 1
    n_jobs = launcher.get("n_jobs") if launcher is not None else None
    if n_jobs:
        parallel = n_jobs if n_jobs > 0 else max(1, cpus + 1 + n_jobs)
        return max(1, cpus // min(parallel, cpus))
    return launcher.get("cpus_per_task") if launcher is not None else None


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use, without importing torch: ``CUDA_VISIBLE_DEVICES`` if
    set, else the driver's list in ``/proc``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    return len(list(gpus.iterdir())) if gpus.is_dir() else 0


def parallel_jobs(accelerator: str, jobs_per_gpu: int = 4, cpus: int | None = None) -> int:
    """How many sweep jobs to run at once on this machine: ``jobs_per_gpu`` per GPU when
    training on GPUs (a small model leaves most of a GPU idle), else one per core."""
    cpus = cpus or os.cpu_count() or 1
    gpus = visible_gpus() if accelerator in ("gpu", "cuda", "auto") else 0
    return min(cpus, gpus * jobs_per_gpu) if gpus else cpus


def gpu_for_job(job_number: int, gpus: int) -> list[int]:
    """Round-robin: job k of a sweep trains on GPU k mod N (several jobs share a GPU when there
    are more parallel jobs than GPUs; small models leave most of a GPU idle anyway)."""
    return [job_number % gpus]


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
    attempt = job_dir / "previous_attempts" / time.strftime("%Y%m%d-%H%M%S")
    attempt.mkdir(parents=True)
    for path in job_dir.iterdir():  # its Hydra record and log too: this attempt writes its own
        if path.name != "previous_attempts":
            shutil.move(str(path), attempt / path.name)
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


def report(config: DictConfig, sweep_dir: Path) -> None:
    """The sweep report (``gradprobe.report``), and its figures and table as a sweep-level W&B
    run in the sweep's group when the jobs log to W&B. Never fails the sweep."""
    from gradprobe.report import build_report

    try:
        result = build_report(sweep_dir)
    except Exception:
        log.exception("the sweep report could not be written")
        return
    log.info("sweep report: %s", result["report_md"])
    wandb_cfg = (config.get("logger") or {}).get("wandb")
    if wandb_cfg is not None:
        publish_report(result, sweep_dir, wandb_cfg)


def publish_report(result: dict[str, Any], sweep_dir: Path, wandb_cfg: Any) -> None:
    import wandb

    rows = result["rows"]
    columns = sorted({key for row in rows for key in row})
    run = wandb.init(project=wandb_cfg.project, mode=wandb_cfg.mode, dir=str(sweep_dir),
                     group=str(sweep_dir.resolve()), name="sweep report", job_type="report")
    run.log({f"report/{Path(name).stem}": wandb.Image(str(path))
             for name, path in result["figures"].items()}
            | {"report/runs": wandb.Table(columns=columns, data=[
                [str(row.get(c, "")) for c in columns] for row in rows])})
    run.finish()


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


class SweepSummary(Callback):
    """At the end of a multirun: the summary and the report, and exit 1 if a job failed.
    ``running`` names the sweep under way, for the summary an interrupted command still prints
    (``gradprobe.cli.main``)."""

    running: Path | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SweepSummary.running = Path(config.hydra.sweep.dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        SweepSummary.running = None
        if not sweep_dir.is_dir():
            return
        failed = summarize(sweep_dir)
        if config.get("sweep", {}).get("report", True):
            report(config, sweep_dir)
        if failed:
            sys.exit(1)
