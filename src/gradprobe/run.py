"""One training run, top to bottom: config -> data, network -> module + callbacks -> Trainer ->
fit -> test -> ``summary.json``. Everything a later reader needs is written into the run dir."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from gradprobe import console, engine, outcome, publish, record, resume, tested
from gradprobe.build import build_module, predict_init
from gradprobe.callbacks import (
    build_callbacks,
    build_gradflow,
    build_loggers,
    checkpointing,
    close_loggers,
    trainer_flags,
)
from gradprobe.checkpoints import AtomicCheckpointIO, best_checkpoint, newest_intact
from gradprobe.data import InMemoryDataModule, Splits, check_splits, first_line
from gradprobe.instruments import guard
from gradprobe.instruments.jacobian import JacobianSpectrum
from gradprobe.record import RunDirError
from gradprobe.schema import ConfigError, DataError
from gradprobe.sweep.placement import place_job

log = logging.getLogger("gradprobe")

console.ignore_noise()  # warnings nobody can act on (gradprobe.console.NOISE)


def execute(cfg: DictConfig, run_dir: Path, choices: dict[str, str], overrides: list[str],
            interactive: bool = False, group: str | None = None,
            job: dict[str, Any] | None = None,
            hydra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train and test one configuration; returns (and writes) its summary. ``job`` carries a
    sweep job's number (for its GPU) and torch thread count; ``hydra`` is Hydra's record of the
    command. Everything that can refuse (the checkpoint to resume, the data) comes before the
    first byte is written; a resumed run's tables are cut at its checkpoint and continued."""
    place_job(cfg, job or {})
    started = time.time()
    if cfg.get("resume") and not checkpointing(cfg):
        raise RunDirError(f"resume={run_dir}: that run was made with checkpoints off "
                          "(callbacks.checkpoint.enabled=false); nothing to resume from")
    resumed = newest_intact(run_dir) if cfg.get("resume") else None
    splits = load_splits(cfg)
    info = record.start(cfg, run_dir, choices, overrides, resumed=resumed, hydra=hydra)
    log.info("run directory: %s%s", run_dir,
             f" (resumed at step {resumed['step']})" if resumed else "")
    info["threads"] = torch.get_num_threads()
    try:
        if resumed:
            resume.cut_history(run_dir, resumed["step"], resumed["epoch"])
        result = fit_and_test(cfg, run_dir, splits, info, choices, resumed, interactive, group)
    except BaseException as err:  # signals reach here as SystemExit from Lightning
        record.finish(run_dir, info | outcome.ended(err, started))
        raise
    return outcome.finish(run_dir, info | result, started)


def load_splits(cfg: DictConfig) -> Splits:
    """The seeded data, loaded before the run writes anything (a data problem is a refusal)."""
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    try:
        splits: Splits = instantiate(cfg.data.source)
    except Exception as err:
        cause = err.__cause__ or err  # Hydra wraps what the data source raised
        if isinstance(cause, (ConfigError, DataError)):
            raise cause from None
        raise DataError(f"data error: data.source could not be loaded ({first_line(cause)}); "
                        "check the data group's settings") from err
    check_splits(splits, cfg)  # a split too small for this run: one line, before training
    return splits


def fit_and_test(cfg: DictConfig, run_dir: Path, splits: Splits, info: dict[str, Any],
                 choices: dict[str, str], resumed: dict[str, Any] | None, interactive: bool,
                 group: str | None = None) -> dict[str, Any]:
    overrides = info.get("overrides") or []
    plan = engine.plan(cfg)
    datamodule = InMemoryDataModule(splits, cfg.data.batch_size, cfg.data.eval_batch_size,
                                    cfg.seed, steps_per_call=plan.steps_per_call,
                                    limit=plan.train_limit, max_steps=cfg.trainer.max_steps)
    module = build_module(cfg, splits.input_shape, splits.num_outputs, plan.steps_per_call,
                          cfg.engine.compile)
    prediction = predict_init(cfg, choices, module.net, splits)
    loggers = build_loggers(cfg, run_dir, choices, overrides, group, info.get("wandb_id"))
    gradflow = build_gradflow(cfg, choices, run_dir, prediction, overrides,
                              resuming=resumed is not None)
    examples = cfg.gradflow.get("jacobian_examples", 0) if cfg.gradflow.enabled else 0
    jacobian = JacobianSpectrum(examples, run_dir / "gradflow") if examples else None
    callbacks = build_callbacks(cfg, run_dir, interactive, gradflow, jacobian)
    divergence = guard.Guard(**guard.settings(cfg))  # always on: the one rule for the status
    callbacks.append(divergence)
    trainer: pl.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir),
                                      logger=loggers or False, callbacks=callbacks,
                                      **trainer_flags(callbacks),
                                      plugins=[AtomicCheckpointIO()], **plan.trainer_kwargs)
    best = best_checkpoint(callbacks)

    status, tested_on, last = "failed", None, {}
    try:
        trainer.fit(module, datamodule=datamodule,
                    ckpt_path=resumed["checkpoint"] if resumed else None)
        outcome.measured_ratio(gradflow, prediction)
        publish.results(loggers, run_dir, gradflow.report if gradflow else None, prediction,
                        **publish.switches(cfg.gradflow))
        fit_metrics = outcome.metrics_of(trainer.callback_metrics)
        status = outcome.status_of(divergence.diverged)
        if status == "completed":  # a diverged run is a result; no test on non-finite weights
            # Lightning's table of test metrics only with verbose=true, and never in a sweep:
            # it is printed, not logged, so it could not carry the job's tag
            tested_on, last = tested.solo(trainer, module, datamodule, best, cfg,
                                          verbose=bool(cfg.get("verbose")) and group is None)
    finally:
        close_loggers(loggers, status)
    return outcome.summary(
        status=status, tested_on=tested_on,
        metrics=fit_metrics | outcome.metrics_of(trainer.callback_metrics) | last,
        best=best, epochs=trainer.current_epoch, steps=trainer.global_step,
        num_parameters=sum(p.numel() for p in module.parameters()), prediction=prediction,
        gradflow=gradflow, diverged=divergence.diverged,
        jacobian=jacobian.result if jacobian else None)
