"""Hydra entry point: validate the config, run it, and turn the outcome into a recorded status.

Nothing heavy is imported at module level: a bad config value is reported (one line, exit 2)
before torch or Lightning are loaded. A refusal (a bad value, a run directory that cannot be
used, data that cannot be loaded) writes nothing: Hydra's own record (``hydra.output_subdir``
is null) and the log file (opened on its first line) are written by the run once it starts.
Exit codes: 0 done (completed or diverged), 1 failed, 2 refused, 128 + N ended by signal N.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from gradprobe import console, interrupt
from gradprobe.config import CONF_DIR, choices_of, register_resolvers
from gradprobe.record import RunDirError, hydra_record, is_rank_zero, record_failure
from gradprobe.resume import config_to_resume
from gradprobe.schema import ConfigError, DataError, validate
from gradprobe.sweep.callback import SweepSummary
from gradprobe.sweep.jobs import stop_jobs, summarize
from gradprobe.sweep.placement import threads_per_job
from gradprobe.sweep.resume import previous_result, recorded_threads
from gradprobe.wandb_check import check_wandb_login, online_wandb_loggers

NAN = float("nan")
REFUSALS = (ConfigError, DataError, RunDirError)
log = logging.getLogger("gradprobe")


def interactive() -> bool:
    return sys.stdout.isatty() and not os.environ.get("CI")


def train(cfg: DictConfig, run_dir: Path, choices: dict[str, str], overrides: list[str],
          group: str | None = None, job: dict[str, Any] | None = None,
          hydra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate and run one composed config (or continue ``cfg.resume``, with the overrides a
    resume may change); returns its summary. The CLI calls this with Hydra's runtime values;
    tests call it with a composed config."""
    if cfg.get("resume"):
        resume = cfg.resume
        cfg = config_to_resume(Path(resume), overrides)
        cfg.resume = resume
    validate(cfg)
    check_wandb_login(cfg)  # online W&B without a key: refused now, not after set-up
    if cfg.get("print_config"):
        console.echo(OmegaConf.to_yaml(cfg, resolve=True).rstrip())
    from gradprobe.run import execute  # heavy imports (torch, Lightning) only after validation

    return execute(cfg, Path(run_dir), choices, overrides, interactive=interactive(),
                   group=group, job=job, hydra=hydra)


def stop_interrupted(run_dir: Path, sweeping: bool) -> None:
    """A job a signal ended (its record says so): a single run says where and exits 128 + N;
    a sweep job re-raises to stop the sweep, or, orphaned, exits outright."""
    if interrupt.orphaned:  # the sweep's process is gone: nobody to return to
        os._exit(interrupt.exit_code())
    if sweeping:
        raise KeyboardInterrupt(interrupt.signal_name())
    print(interrupt.told(run_dir, command()), file=sys.stderr, flush=True)
    # The record is written and the loggers are closed. Exit without the interpreter's
    # finalization: a native thread that outlives it can abort the process (seen once in CI
    # after SIGINT: "terminate called ... write to closed file", exit -6, not 130).
    logging.shutdown()
    os._exit(interrupt.exit_code())


def command() -> str:
    """How this command was started: ``python train.py`` or the installed script's name."""
    script = sys.argv[0]
    return f"python {script}" if script.endswith(".py") else Path(script).name


def fail(err: Exception, run_dir: Path) -> None:
    """A single run that failed: the traceback into its ``train.log``, one line naming the
    error and the log on stderr, exit 1. Without a log file (job logging off) the traceback
    goes to stderr."""
    log.error("run failed", exc_info=err, extra=console.LOG_ONLY)
    where = console.log_file()
    if where is None:
        raise err
    text = str(err).strip()
    print(f"failed: {type(err).__name__}{': ' + text.splitlines()[0] if text else ''} "
          f"(traceback in {where})", file=sys.stderr)
    sys.exit(1)


def refuse(err: Exception, run_dir: Path, resuming: bool) -> None:
    """One line on stderr, exit 2; the empty directory Hydra made for a new run goes again."""
    print(err, file=sys.stderr)
    cwd, folder = Path.cwd(), run_dir.absolute()
    while (not resuming and folder.is_relative_to(cwd) and folder != cwd and folder.is_dir()
           and not any(folder.iterdir())):
        folder.rmdir()  # e.g. outputs/<date>/<time>, made by Hydra for this command
        folder = folder.parent
    sys.exit(2)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    """One job. In a sweep a failing job is recorded (status, error, traceback in its log) and
    the sweep goes on; ``gradprobe.sweep.callback.SweepSummary`` reports the failures at the end."""
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir, choices = Path(hydra_cfg.runtime.output_dir), choices_of(hydra_cfg)
    overrides = list(hydra_cfg.overrides.task)
    console.setup(bool(cfg.get("verbose")), hydra_cfg.job.num if sweeping else None,
                  online=bool(online_wandb_loggers(cfg)))
    interrupt.install()
    if sweeping:
        interrupt.end_with_parent()
    if sweeping and cfg.sweep.resume:
        try:
            done = previous_result(run_dir, overrides)
        except ValueError as err:
            console.echo(str(err), sys.stderr)
            return NAN
        if done is not None:  # printed, not logged: a finished job's log stays as it was
            console.echo(f"already {done['status']}, skipped: {run_dir}")
            return objective_of(done, cfg)
    try:
        job = {"number": hydra_cfg.job.num if sweeping else None,  # threads: placement.py
               "share": threads_per_job(hydra_cfg.get("launcher")),
               "recorded": recorded_threads(run_dir) if sweeping and cfg.sweep.resume else None}
        summary = train(cfg, run_dir, choices, overrides,
                        group=str(Path(hydra_cfg.sweep.dir).resolve()) if sweeping else None,
                        job=job, hydra=hydra_record(hydra_cfg, cfg))
    except BaseException as err:
        if interrupt.received:  # whatever the signal broke off (even a save) ends as interrupted
            stop_interrupted(run_dir, sweeping)
        if isinstance(err, REFUSALS):
            if not sweeping:
                refuse(err, run_dir, resuming=bool(cfg.get("resume")))
            log.error("%s", err)
            record_failure(cfg, run_dir, choices, overrides, str(err))
            return NAN
        if not isinstance(err, Exception):
            raise
        if not sweeping:
            fail(err, run_dir)
        log.exception("job failed (recorded in its summary.json); the sweep goes on")
        return NAN
    if not is_rank_zero():
        return NAN
    console.finished(summary)
    return objective_of(summary, cfg)


def objective_of(summary: dict[str, Any], cfg: DictConfig) -> float:
    """The number a sweeper (Optuna) minimises; NaN for a job without it (failed, diverged),
    which Optuna records as a failed trial without stopping the search."""
    return float(summary.get("metrics", {}).get(cfg.get("objective", "val/loss"), NAN))


def stop_sweep_jobs(signum: int) -> None:
    """The sweep under way (if any) passes a signal on to its jobs in worker processes."""
    if SweepSummary.running is not None and SweepSummary.running.is_dir():
        stop_jobs(SweepSummary.running, signum)


def main() -> None:
    """The command: a signal ends it with 128 + N, after the record and, in a sweep, the
    summary line of its jobs so far."""
    register_resolvers()
    interrupt.mark_sweep_process()
    interrupt.install()
    interrupt.before_raising.append(stop_sweep_jobs)
    try:
        _hydra_main()
    except BaseException:
        if interrupt.received is None:
            raise
        if SweepSummary.running is not None and SweepSummary.running.is_dir():
            summarize(SweepSummary.running)
        sys.exit(interrupt.exit_code())


if __name__ == "__main__":
    main()
