"""``hydra/launcher=ensemble``: same-shape sweep jobs train as vectorized ensembles.

(Hydra loads launchers only from the ``hydra_plugins`` package, hence this module's home.)

A launcher on Hydra's public plugin API (``Launcher``, ``hydra.core.utils.run_job``), torch-free
to import. Every job is first set up as Hydra's basic launcher sets it up (its numbered
directory, job config, log file); jobs whose configs agree on everything but their free keys
(``seed``, the ``init`` group, ``optimizer.lr``) then train together, at most ``max_members`` at
a time, by :mod:`gradprobe.ensemble`. A job an ensemble cannot reproduce exactly runs alone, in
turn, through the ordinary task function, as the basic launcher would run it; the log says why.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf, open_dict

from gradprobe import console
from gradprobe.cli import NAN, objective_of
from gradprobe.config import choices_of
from gradprobe.record import hydra_record, record_failure
from gradprobe.schema import ConfigError, validate
from gradprobe.sweep.placement import resolve_threads
from gradprobe.sweep.resume import previous_result, recorded_threads
from gradprobe.wandb_check import online_wandb_loggers

log = logging.getLogger("gradprobe")
# May differ in a group (not threads: a group trains with one count, which each member records).
FREE_KEYS = ("seed", "init", "run_name", "sweep", "resume")


def group_key(cfg: DictConfig) -> str:
    """Jobs with the same key have the same shapes and training and can share an ensemble."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key in FREE_KEYS:
        plain.pop(key, None)
    plain["optimizer"].pop("lr", None)
    return json.dumps(plain, sort_keys=True, default=str)


def solo_reason(cfg: DictConfig) -> str | None:
    """Why this job must run alone (an ensemble would not reproduce it exactly), or None."""
    trainer, model = cfg.trainer, cfg.model
    reasons = {
        "a regression task": cfg.task != "classification",
        "dropout (its masks would differ from a solo run's)": model.get("dropout", 0) > 0,
        "batch norm (running statistics)": "BatchNorm" in str(cfg.norm.get("_target_")),
        "gradient accumulation": trainer.accumulate_grad_batches > 1,
        "gradient clipping": bool(trainer.gradient_clip_val),
        "the Jacobian probe": cfg.gradflow.get("jacobian_examples", 0) > 0,
        "a resumed run": bool(cfg.get("resume")),
        "early stopping (members would stop at different epochs)":
            bool(cfg.get("callbacks", {}).get("early_stopping", {}).get("enabled")),
        "a debug preset": cfg.get("debug") is not None or bool(trainer.get("fast_dev_run"))
            or bool(trainer.get("overfit_batches")) or bool(trainer.get("detect_anomaly"))
            or trainer.get("profiler") is not None,
        "a precision other than 32-true": str(trainer.precision) not in ("32-true", "32"),
        "an accelerator other than cpu or gpu": trainer.accelerator not in ("cpu", "gpu",
                                                                              "cuda", "auto"),
    }
    return next((reason for reason, applies in reasons.items() if applies), None)


class EnsembleLauncher(Launcher):
    """Hydra launcher; ``max_members`` caps one ensemble (memory grows with it)."""

    def __init__(self, max_members: int = 64) -> None:
        super().__init__()
        self.max_members = max_members
        self.config: DictConfig | None = None
        self.task_function: TaskFunction | None = None
        self.hydra_context: HydraContext | None = None
        self._jobs: list[tuple[JobReturn, Any]] = []  # (its Hydra return, the member)
        self._member: Any = None  # the member the job being set up became, if any

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]],
               initial_job_idx: int) -> Sequence[JobReturn]:
        """Set every job up in turn (solo ones run then), then train the ensembles."""
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info("Setting up %d jobs; same-shape ones train as ensembles", len(job_overrides))
        returns = [self._launch_job(idx, overrides)
                   for idx, overrides in enumerate(job_overrides, initial_job_idx)]
        self._train_groups()
        return returns

    def _launch_job(self, idx: int, overrides: Sequence[str]) -> JobReturn:
        """One job through Hydra's ``run_job`` (its directory, job config and log file), as
        the basic launcher runs it, with :meth:`_set_up` as its task function."""
        log.info("\t#%d : %s", idx, " ".join(filter_overrides(overrides)))
        sweep_config = self.hydra_context.config_loader.load_sweep_config(
            self.config, list(overrides))
        with open_dict(sweep_config):
            sweep_config.hydra.job.id = sweep_config.hydra.job.num = idx
        job = run_job(hydra_context=self.hydra_context, task_function=self._set_up,
                      config=sweep_config, job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir")
        if self._member is not None:
            self._jobs.append((job, self._member))
            self._member = None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return job

    def _set_up(self, cfg: DictConfig) -> Any:
        """The task function of the set-up pass: a job to vectorize is kept for later;
        any other job runs now, through the ordinary task function."""
        from gradprobe.ensemble import Member

        hydra_cfg = HydraConfig.get()
        console.setup(bool(cfg.get("verbose")), hydra_cfg.job.num,  # its lines carry its number
                      online=bool(online_wandb_loggers(cfg)))
        reason = solo_reason(cfg)
        if reason:
            log.info("runs alone (%s)", reason)
            return self.task_function(cfg)
        run_dir, overrides = Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
        choices = choices_of(hydra_cfg)
        if cfg.sweep.resume and (done := previous_result(run_dir, overrides)) is not None:
            console.echo(f"already {done['status']}, skipped: {run_dir}")  # log left as it was
            return objective_of(done, cfg)
        try:
            validate(cfg)
        except ConfigError as err:
            log.error("%s", err)
            record_failure(cfg, run_dir, choices, overrides, str(err))
            return NAN
        if cfg.get("print_config"):
            console.echo(OmegaConf.to_yaml(cfg, resolve=True).rstrip())
        # the count it trains with, in its Hydra record too; a re-run job keeps its earlier one
        cfg.threads = resolve_threads(cfg.threads, recorded=recorded_threads(run_dir)
                                      if cfg.sweep.resume else None)
        resolved = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
        group = str(Path(hydra_cfg.sweep.dir).resolve())
        self._member = Member(resolved, run_dir, choices, overrides, group,
                              hydra=hydra_record(hydra_cfg, cfg), job=hydra_cfg.job.num)
        return NAN  # replaced by the objective once the ensemble has trained

    def _train_groups(self) -> None:
        """Same-key jobs in ensembles of at most ``max_members``; a failed ensemble is
        recorded in its members' summaries and the sweep goes on. Meanwhile the console is a
        job's (gradprobe's lines, each member's tagged with its job number), then Hydra's
        again."""
        console.setup(bool(self.config.get("verbose")), None, console.FORMAT,
                      online=bool(online_wandb_loggers(self.config)))
        try:
            self._train_each_group()
        finally:
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)

    def _train_each_group(self) -> None:
        from gradprobe.ensemble import train

        groups: dict[str, list[tuple[JobReturn, Any]]] = {}
        for job, member in self._jobs:
            groups.setdefault(group_key(member.cfg), []).append((job, member))
        self._jobs = []
        for jobs in groups.values():
            for start in range(0, len(jobs), self.max_members):
                chunk = jobs[start:start + self.max_members]
                log.info("ensemble of %d jobs: %s", len(chunk),
                         ", ".join(str(m.run_dir) for _, m in chunk))
                try:
                    summaries = train([member for _, member in chunk])
                except Exception:
                    log.exception("ensemble failed (recorded in each job's summary.json); "
                                  "the sweep goes on")
                    continue
                for (job, member), summary in zip(chunk, summaries, strict=True):
                    job.return_value = objective_of(summary, member.cfg)
                    with console.job(member.job):
                        console.finished(summary)
