"""An ensemble's run: each member's records opened, one ``pl.Trainer`` fits and tests the
:class:`~gradprobe.ensemble.module.EnsembleModule`, then each member's results are published to
its own loggers and closed into its own ``summary.json`` (:mod:`gradprobe.outcome`, as a solo
run's)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from gradprobe import console, outcome, publish, record, tested
from gradprobe.build import build_network, loss_and_metrics, predict_init
from gradprobe.callbacks import build_gradflow, build_loggers, checkpointing, close_loggers
from gradprobe.checkpoints import weights_of
from gradprobe.data import Splits
from gradprobe.ensemble.callback import MemberInstruments
from gradprobe.ensemble.data import EnsembleDataModule
from gradprobe.ensemble.module import EnsembleModule, member_key
from gradprobe.ensemble.records import (
    LAST,
    MemberCheckpointIO,
    MemberLogs,
    member_checkpoints,
    solo_hparams,
)
from gradprobe.instruments import GradientFlow, guard
from gradprobe.instruments.tensorboard_layout import write_layout
from gradprobe.sweep.placement import place_job

log = logging.getLogger("gradprobe")


@dataclass
class Member:
    """One job of an ensemble: its composed config and Hydra record, and what it measured."""

    cfg: DictConfig
    run_dir: Path
    choices: dict[str, str]
    overrides: list[str]
    group: str | None = None
    hydra: dict[str, Any] | None = None  # Hydra's record of the job (record.hydra_record)
    job: int | None = None  # its number in the sweep: the tag of its console lines
    info: dict[str, Any] = field(default_factory=dict)  # record.start's part of the summary
    logs: list[tuple[int, dict[str, float]]] = field(default_factory=list)  # (step, metrics)
    metrics: dict[str, float] = field(default_factory=dict)
    gradflow: GradientFlow | None = None
    prediction: dict[str, Any] = field(default_factory=dict)
    epochs: int = 0
    steps: int = 0
    stopped_at: int | None = None  # the step at which a diverged member stopped counting
    diverged: dict[str, Any] | None = None  # the divergence guard's record, as a solo run's


def train(members: list[Member]) -> list[dict[str, Any]]:
    """Train and test the members together; returns (and writes) each one's ``summary.json``."""
    started = time.time()
    threads = place_job(members[0].cfg, {})  # as a solo job's (a group shares its threads)
    opened: list[Member] = []
    try:
        for member in members:
            member.cfg.threads = threads  # recorded: `threads=N` alone reproduces the member
            member.info = record.start(member.cfg, member.run_dir, member.choices,
                                       member.overrides, hydra=member.hydra)
            opened.append(member)
            member.info |= {"threads": torch.get_num_threads(),
                            "ensemble": {"members": len(members),
                                         "run_dirs": [str(m.run_dir) for m in members]}}
        results = fit_and_test(members)
    except BaseException as err:
        for member in opened:
            record.finish(member.run_dir, member.info | outcome.ended(err, started))
        raise
    return [outcome.finish(m.run_dir, m.info | result, started)
            for m, result in zip(members, results, strict=True)]


def fit_and_test(members: list[Member]) -> list[dict[str, Any]]:
    """One Trainer, configured as a solo run's (``cfg.trainer``), fits the ensemble and tests
    the members that did not diverge; then each member is published, one at a time."""
    cfg = members[0].cfg
    splits: Splits = instantiate(cfg.data.source)
    module = build_module(members, splits)
    for member in members:
        member.gradflow = build_gradflow(member.cfg, member.choices, member.run_dir,
                                         member.prediction, member.overrides)
    validating = cfg.trainer.limit_val_batches != 0 and checkpointing(cfg)
    checkpoints = member_checkpoints([m.run_dir for m in members]) if validating else []
    hparams = [solo_hparams(m.cfg, splits.input_shape, splits.num_outputs) for m in members]
    trainer: pl.Trainer = instantiate(
        cfg.trainer, default_root_dir=str(members[0].run_dir), logger=MemberLogs(members),
        callbacks=[*checkpoints, MemberInstruments(members, **guard.settings(cfg))],
        plugins=[MemberCheckpointIO(module, members, hparams)], enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=bool(checkpoints))
    datamodule = EnsembleDataModule(splits, cfg.data.batch_size, cfg.data.eval_batch_size,
                                    [m.cfg.seed for m in members])
    trainer.fit(module, datamodule=datamodule)
    if checkpointing(cfg):
        trainer.save_checkpoint(Path(members[0].run_dir) / "checkpoints" / f"{LAST}.ckpt")
    live = [(i, m) for i, m in enumerate(members) if m.stopped_at is None]
    bests = {i: outcome.best_path(c) for c in checkpoints for i, _ in live if c.member == i}
    on_best = tested.test_on(cfg) == "best" and bool(live) and all(bests.values())
    last = {}
    if live:  # no test on non-finite weights, as alone; the best weights as alone
        last = tested.final_then_best(trainer, module, datamodule,
                                      (lambda: load_best(module, bests)) if on_best else None)
    for i, member in live:
        member.metrics |= outcome.metrics_of(trainer.callback_metrics, member_key(i, ""))
        if last:  # the final weights' test, logged after the best's, as alone
            member.metrics |= outcome.metrics_of(last, member_key(i, ""))
            member.logs.append((trainer.global_step, outcome.metrics_of(last, member_key(i, ""))))
        member.epochs, member.steps = trainer.current_epoch, trainer.global_step
    results = []
    for i, member in enumerate(members):
        status = outcome.status_of(member.diverged)
        publish_member(member, status, len(members))
        best = next((c for c in checkpoints if c.member == i and c.monitor), None)
        results.append(outcome.summary(
            status=status, metrics=member.metrics, best=best, epochs=member.epochs,
            tested_on=("best" if on_best else "last") if member.stopped_at is None else None,
            steps=member.steps, num_parameters=module.num_parameters,
            prediction=member.prediction, gradflow=member.gradflow, diverged=member.diverged))
    return results


def load_best(module: EnsembleModule, bests: dict[int, str]) -> None:
    """Each member's best checkpoint (a solo module's state dict) into its slice of the stack."""
    for i, path in bests.items():
        saved, (params, buffers) = weights_of(path), module.state(i)
        with torch.no_grad():
            for name, tensor in (params | buffers).items():
                tensor.copy_(saved[f"net.{name}"])


def build_module(members: list[Member], splits: Splits) -> EnsembleModule:
    """Each member's network drawn as alone (its seed, its builder), then stacked."""
    nets = []
    for member in members:
        pl.seed_everything(member.cfg.seed, workers=True, verbose=False)
        net = build_network(member.cfg, splits.input_shape, splits.num_outputs)
        member.prediction = predict_init(member.cfg, member.choices, net, splits)
        nets.append(net)
    cfg = members[0].cfg
    loss, _ = loss_and_metrics(cfg.task, splits.num_outputs)
    plain = OmegaConf.to_container(cfg, resolve=True)
    return EnsembleModule(nets, loss, plain["optimizer"], plain["scheduler"] or None,
                          [m.cfg.optimizer.lr for m in members])


# ---------------------------------------------------------------------- each member's results


def publish_member(member: Member, status: str, size: int) -> None:
    """What the member logged and measured, in step order, to its own loggers; then its
    diagnosis, figures and theory, as a solo run publishes them after its fit. One member at
    a time, so each has its own W&B run; its verdicts go to its own ``train.log``."""
    loggers = build_loggers(member.cfg, member.run_dir, member.choices, member.overrides,
                            member.group, member.info.get("wandb_id"))
    gradflow = member.gradflow
    with own_log(member.run_dir / "train.log"), console.job(member.job):
        try:  # the init verdict was printed while training: here for train.log only
            log.info("trained in an ensemble of %d jobs (summary.json lists their run dirs)",
                     size, extra=console.LOG_ONLY)
            if gradflow is not None and "init" in gradflow.report:
                log.info("init probe: %s", gradflow.report["init"]["text"],
                         extra=console.LOG_ONLY)
            replay(member, loggers)
            if gradflow is not None:
                gradflow.finish(loggers)
            outcome.measured_ratio(gradflow, member.prediction)
            publish.results(loggers, member.run_dir, gradflow.report if gradflow else None,
                            member.prediction, **publish.switches(member.cfg.gradflow))
        finally:
            close_loggers(loggers, status)


def replay(member: Member, loggers: list) -> None:
    """The member's kept metrics and gradient-flow rows (and histograms), in step order."""
    rows = list(member.logs)
    gradflow = member.gradflow
    if gradflow is not None:  # as GradientFlow.on_fit_start does for a solo run
        write_layout(loggers)
        gradflow.flush([])
        rows += [(r.step, gradflow.recorder.metrics(r)) for r in gradflow.recorder.history]
    for step, metrics in sorted(rows, key=lambda row: row[0]):
        if gradflow is not None:  # through its recorder: its gradflow.wandb options apply
            gradflow.recorder.log_metrics(loggers, metrics, step)
        else:
            for logger in loggers:
                logger.log_metrics(metrics, step=step)
    if gradflow is not None:
        gradflow.recorder.log_histograms(loggers)


@contextmanager
def own_log(path: Path) -> Iterator[None]:
    """gradprobe's log lines also into ``path`` (a member's ``train.log``) meanwhile."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - "
                                           "%(message)s"))
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
