"""Hydra entry point: validate the config, run it, and turn the outcome into a recorded status.

Nothing heavy is imported at module level: a bad config value is reported (one line, exit 2)
before torch or Lightning are loaded.
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

from gradprobe.record import RunDirError, config_to_resume, is_rank_zero, record_failure
from gradprobe.schema import ConfigError, validate
from gradprobe.sweep import parallel_jobs, previous_result, threads_per_job

NAN = float("nan")
CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
log = logging.getLogger("gradprobe")


def register_resolvers() -> None:
    """``${if_set:x,a,b}`` picks ``a`` when ``x`` is set: a resumed run reuses its own dir.
    ``${parallel_jobs:accelerator,per_gpu}``: jobs to run at once on this machine."""
    OmegaConf.register_new_resolver("if_set", lambda value, a, b: a if value else b,
                                    replace=True)
    OmegaConf.register_new_resolver("parallel_jobs", parallel_jobs, replace=True)


def interactive() -> bool:
    return sys.stdout.isatty() and not os.environ.get("CI")


def choices_of(hydra_cfg: Any) -> dict[str, str]:
    """The chosen option of every gradprobe config group (Hydra's own groups left out)."""
    return {group: str(choice) for group, choice in hydra_cfg.runtime.choices.items()
            if not group.startswith("hydra") and choice is not None}


def train(cfg: DictConfig, run_dir: Path, choices: dict[str, str], overrides: list[str],
          group: str | None = None, job: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate and run one composed config (or continue ``cfg.resume``); returns its summary.
    The CLI calls this with Hydra's runtime values; tests call it with a composed config."""
    if cfg.get("resume"):
        resume = cfg.resume
        cfg = config_to_resume(Path(resume))
        cfg.resume = resume
    validate(cfg)
    from gradprobe.run import execute  # heavy imports (torch, Lightning) only after validation

    return execute(cfg, Path(run_dir), choices, overrides, interactive=interactive(),
                   group=group, job=job)


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def _hydra_main(cfg: DictConfig) -> float:
    """One job. In a sweep a failing job is recorded (status, error, traceback in its log) and
    the sweep goes on; ``gradprobe.sweep.SweepSummary`` reports the failures at the end."""
    hydra_cfg = HydraConfig.get()
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    run_dir, choices = Path(hydra_cfg.runtime.output_dir), choices_of(hydra_cfg)
    overrides = list(hydra_cfg.overrides.task)
    if sweeping and cfg.sweep.resume:
        try:
            done = previous_result(run_dir, overrides)
        except ValueError as err:
            log.error("%s", err)
            return NAN
        if done is not None:
            log.info("already %s, skipped: %s", done["status"], run_dir)
            return objective_of(done, cfg)
    try:
        job = {"number": hydra_cfg.job.num if sweeping else None,
               "threads": cfg.get("threads") or threads_per_job(hydra_cfg.get("launcher"))}
        summary = train(cfg, run_dir, choices, overrides,
                        group=str(Path(hydra_cfg.sweep.dir).resolve()) if sweeping else None,
                        job=job)
    except (ConfigError, RunDirError) as err:
        if not sweeping:
            print(err, file=sys.stderr)
            sys.exit(2)
        log.error("%s", err)
        record_failure(cfg, run_dir, choices, overrides, str(err))
        return NAN
    except Exception:
        if not sweeping:
            raise
        log.exception("job failed (recorded in its summary.json); the sweep goes on")
        return NAN
    if not is_rank_zero():
        return NAN
    shown = {k: round(v, 4) for k, v in summary["metrics"].items() if k.startswith("test/")}
    log.info("%s in %.1f s: %s -> %s", summary["status"], summary["wall_time_s"], shown,
             summary["run_dir"])
    return objective_of(summary, cfg)


def objective_of(summary: dict[str, Any], cfg: DictConfig) -> float:
    """The number a sweeper (Optuna) minimises; NaN for a job without it (failed, diverged),
    which Optuna records as a failed trial without stopping the search."""
    return float(summary.get("metrics", {}).get(cfg.get("objective", "val/loss"), NAN))


def main() -> None:
    register_resolvers()
    _hydra_main()


if __name__ == "__main__":
    main()
