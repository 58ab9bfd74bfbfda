"""One training run, top to bottom: config -> data, network -> module + callbacks -> Trainer ->
fit -> test -> ``summary.json``. Everything a later reader needs is written into the run dir."""

from __future__ import annotations

import logging
import math
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, RichProgressBar
from pytorch_lightning.loggers import WandbLogger
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from torchmetrics.regression import MeanSquaredError, R2Score

from gradprobe import interrupt, record, remedies, resume, theory, trusted
from gradprobe.checkpoints import AtomicCheckpointIO, checkpoint_callbacks, newest_intact
from gradprobe.data import InMemoryDataModule, Splits, check_splits, first_line
from gradprobe.init import implied_variances, initialize
from gradprobe.instruments import GradientFlow, guard
from gradprobe.instruments.jacobian import JacobianSpectrum
from gradprobe.instruments.stats import pairwise_cosine
from gradprobe.module import GradprobeModule
from gradprobe.nets import DepthNet
from gradprobe.schema import ConfigError, DataError
from gradprobe.sweep import gpu_for_job

log = logging.getLogger("gradprobe")

# The run dir holds more than the CSV logger's files, which is intended; and a Lightning-internal
# deprecation notice that users cannot act on.
warnings.filterwarnings("ignore", message=".*exists and is not empty.*")
warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")


def build_network(cfg: DictConfig, input_shape: tuple[int, ...], num_outputs: int) -> DepthNet:
    """The ``model`` group's builder, fed factories from the ``activation`` and ``norm`` groups,
    then initialised by the ``init`` group."""
    net = instantiate(cfg.model, activation=instantiate(cfg.activation),
                      norm=instantiate(cfg.norm), in_shape=input_shape, out_features=num_outputs)
    bias = cfg.init.bias  # null, a constant, or an init function's config
    initialize(net, instantiate(cfg.init.weight),
               instantiate(bias) if OmegaConf.is_config(bias) else bias)
    return net


def loss_and_metrics(task: str, num_outputs: int) -> tuple[nn.Module, MetricCollection]:
    if task == "classification":
        # validate_args=False: the argument checks would sync host and device on every step.
        return nn.CrossEntropyLoss(), MetricCollection(
            {"acc": MulticlassAccuracy(num_outputs, average="micro", validate_args=False)})
    return nn.MSELoss(), MetricCollection({"mse": MeanSquaredError(),
                                           "r2": R2Score(multioutput="uniform_average")})


def build_module(cfg: DictConfig, input_shape: tuple[int, ...], num_outputs: int,
                 steps_per_call: int = 1, compile: str = "none") -> GradprobeModule:
    net = build_network(cfg, input_shape, num_outputs)
    loss, metrics = loss_and_metrics(cfg.task, num_outputs)
    plain = OmegaConf.to_container(cfg, resolve=True)
    return GradprobeModule(net, loss, metrics, optimizer=plain["optimizer"],
                           scheduler=plain["scheduler"] or None, run_config=plain,
                           data_shape={"input_shape": list(input_shape),
                                       "num_outputs": num_outputs},
                           steps_per_call=steps_per_call, compile=compile)


def steps_per_call(cfg: DictConfig) -> int:
    """``engine.steps_per_call``, or 1 where Lightning must drive every optimizer step itself:
    gradient accumulation, gradient clipping, more than one device."""
    trainer, wanted = cfg.trainer, cfg.engine.steps_per_call
    devices = trainer.get("devices", 1)
    one_device = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1) or (
        devices == "auto" and trainer.get("accelerator") == "cpu")
    if wanted > 1 and (trainer.accumulate_grad_batches > 1 or trainer.gradient_clip_val
                       or not one_device or trainer.get("num_nodes", 1) > 1):
        log.info("engine.steps_per_call=%d needs accumulate_grad_batches=1, no gradient "
                 "clipping and one device; training one step per Lightning call", wanted)
        return 1
    return wanted


def load_module(checkpoint: str | Path) -> GradprobeModule:
    """Rebuild network, loss and metrics from the config saved in a checkpoint, then load it.
    The checkpoint is data: it loads with ``weights_only``, and its config may name only the
    components gradprobe's ``conf/`` declares (:mod:`gradprobe.trusted`); anything else, or an
    unreadable file, is refused with one line (``record.RunDirError``)."""
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        hparams = state["hyper_parameters"]
        cfg, shape = OmegaConf.create(hparams["run_config"]), hparams["data_shape"]
    except Exception as err:
        raise record.RunDirError(f"checkpoint {checkpoint} is unreadable or not a gradprobe "
                                 f"checkpoint ({type(err).__name__}: {err})") from None
    trusted.check(hparams, f"checkpoint {checkpoint}")
    net = build_network(cfg, tuple(shape["input_shape"]), shape["num_outputs"])
    loss, metrics = loss_and_metrics(cfg.task, shape["num_outputs"])
    return GradprobeModule.load_from_checkpoint(checkpoint, map_location="cpu", net=net,
                                                loss=loss, metrics=metrics, weights_only=True)


def build_loggers(cfg: DictConfig, run_dir: Path, choices: dict[str, str],
                  overrides: list[str], group: str | None = None,
                  wandb_id: str | None = None) -> list:
    """One Lightning logger per entry of the ``logger`` group, all writing into the run dir.
    A sweep's W&B runs share its directory as their group and are named by their overrides.
    The W&B run id is the run directory's own, so a resumed run continues its W&B run."""
    loggers = []
    for name, logger_cfg in (cfg.get("logger") or {}).items():
        extra: dict[str, Any] = {"save_dir": str(run_dir)}
        if name == "wandb":
            extra |= {"id": wandb_id, "resume": "allow",
                      "name": cfg.run_name or record.name_from(overrides),
                      "group": logger_cfg.get("group") or group,
                      "config": record.flat_config(cfg, choices),
                      "tags": [f"{name}:{option}" for name, option in choices.items()]}
        loggers.append(instantiate(logger_cfg, _partial_=True)(**extra))
    return loggers


def publish_theory(loggers: list, prediction: dict[str, Any]) -> None:
    """The mean-field prediction, and the init probe's measurement, into the W&B summary."""
    if not prediction.get("applies"):
        return
    keys = ("phase", "chi1_star", "q_star", "depth_scale", "first_last_backprop_ratio",
            "measured_first_last_backprop_ratio", "sigma_w2", "sigma_b2", "c_star",
            "correlation_depth_scale")
    for logger in loggers:
        if isinstance(logger, WandbLogger):
            logger.experiment.summary.update({f"theory/{k}": prediction[k] for k in keys
                                              if k in prediction})


def close_loggers(loggers: list, status: str) -> None:
    """Flush every logger; end the W&B run, so the next run in this process starts its own."""
    for logger in loggers:
        logger.finalize("success" if status == "completed" else status)
        if isinstance(logger, WandbLogger):
            logger.experiment.finish(exit_code=0 if status == "completed" else 1)


def build_monitor(cfg: DictConfig, choices: dict[str, str], run_dir: Path,
                  prediction: dict[str, Any] | None = None, overrides: list[str] | None = None,
                  resuming: bool = False) -> GradientFlow | None:
    """The ``monitor`` group's instruments, told the run's choices, overrides (to write each
    remedy as a whole command) and mean-field inputs (to check the remedies), and the
    predicted profile to draw beside the measured one."""
    settings = OmegaConf.to_container(cfg.monitor, resolve=True)
    settings.pop("jacobian_examples", None)  # its own callback, JacobianSpectrum
    if not settings.pop("enabled"):
        return None
    prediction = prediction or {}
    context = dict(choices) | remedies.context_of(cfg, choices, prediction) | {
        "lr": cfg.optimizer.get("lr"), "gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        "overrides": list(overrides or [])}
    monitor = GradientFlow(**settings, out_dir=run_dir / "gradflow", context=context,
                           resume=resuming)
    monitor.prediction = prediction
    return monitor


def build_callbacks(run_dir: Path, interactive: bool, monitor: GradientFlow | None,
                    jacobian: JacobianSpectrum | None = None,
                    validating: bool = True) -> list[Callback]:
    """Checkpoints first (``last``, then ``best`` when validating), then the instruments."""
    extras = [RichProgressBar()] if interactive else []
    instruments = [c for c in (monitor, jacobian) if c is not None]
    return [*checkpoint_callbacks(run_dir / "checkpoints", validating), *instruments, *extras]


INPUT_PROBE = 1024  # examples whose mean square and pairwise cosine feed the prediction


def predict_init(cfg: DictConfig, choices: dict[str, str], net: DepthNet,
                 splits: Splits) -> dict[str, Any]:
    """The mean-field prediction for this run: from the variances its init actually drew, the
    training inputs' mean square and mean pairwise cosine (on the first ``INPUT_PROBE``
    examples), next to which the init probe's measurement is put."""
    implied = implied_variances(net)
    inputs = splits.train[0][:INPUT_PROBE].float()
    q_input = float(inputs.pow(2).mean())
    c_input = float(pairwise_cosine(inputs[None]))
    in_features = math.prod(splits.input_shape)
    prediction = theory.for_config(cfg, choices, implied["sigma_w2"], implied["sigma_b2"],
                                   q_input, in_features, c_input=c_input)
    return prediction | {"implied_sigma_w2": implied["sigma_w2"],
                         "implied_sigma_b2": implied["sigma_b2"], "q_input": q_input,
                         "c_input": c_input}


def place_job(cfg: DictConfig, job: dict[str, Any]) -> None:
    """A sweep job's share of the machine: its torch threads, and its GPU among several."""
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    gpus = torch.cuda.device_count()
    spread = job.get("number") is not None and cfg.get("sweep", {}).get("spread_gpus")
    if spread and cfg.trainer.accelerator in ("gpu", "cuda") and gpus > 1:
        cfg.trainer.devices = gpu_for_job(job["number"], gpus)


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
    resumed = newest_intact(run_dir) if cfg.get("resume") else None
    splits = load_splits(cfg)
    info = record.start(cfg, run_dir, choices, overrides, resumed=resumed, hydra=hydra)
    info["threads"] = torch.get_num_threads()
    try:
        if resumed:
            resume.cut_history(run_dir, resumed["step"], resumed["epoch"])
        summary = info | fit_and_test(cfg, run_dir, splits, info, choices, resumed, interactive,
                                      group)
    except BaseException as err:  # signals reach here as SystemExit from Lightning
        # a signal can surface as another error (one raised inside a save it broke off)
        interrupted = interrupt.received or not isinstance(err, Exception)
        status = "interrupted" if interrupted else "failed"
        error = (f"interrupted by {interrupt.signal_name()}" if interrupt.received
                 else f"{type(err).__name__}: {err}")
        record.finish(run_dir, info | {"status": status, "error": error,
                                       "wall_time_s": round(time.time() - started, 3)})
        raise
    summary["wall_time_s"] = round(time.time() - started, 3)
    record.finish(run_dir, summary)
    return summary


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
    chunk = steps_per_call(cfg)
    # With chunks the datamodule applies limit_train_batches (in batches, not chunks).
    limit = cfg.trainer.limit_train_batches if chunk > 1 else 1.0
    datamodule = InMemoryDataModule(splits, cfg.data.batch_size, cfg.data.eval_batch_size,
                                    cfg.seed, steps_per_call=chunk, limit=limit,
                                    max_steps=cfg.trainer.max_steps)
    module = build_module(cfg, splits.input_shape, splits.num_outputs, chunk, cfg.engine.compile)
    prediction = predict_init(cfg, choices, module.net, splits)
    loggers = build_loggers(cfg, run_dir, choices, overrides, group, info.get("wandb_id"))
    monitor = build_monitor(cfg, choices, run_dir, prediction, overrides,
                            resuming=resumed is not None)
    examples = cfg.monitor.get("jacobian_examples", 0) if cfg.monitor.enabled else 0
    jacobian = JacobianSpectrum(examples, run_dir / "gradflow") if examples else None
    callbacks = build_callbacks(run_dir, interactive, monitor, jacobian,
                                validating=cfg.trainer.limit_val_batches != 0)
    divergence = guard.Guard(**guard.settings(cfg))  # always on: the one rule for the status
    callbacks.append(divergence)
    trainer: pl.Trainer = instantiate(cfg.trainer, default_root_dir=str(run_dir),
                                      logger=loggers or False, callbacks=callbacks,
                                      enable_progress_bar=interactive,
                                      enable_model_summary=interactive,
                                      plugins=[AtomicCheckpointIO()],
                                      **({"limit_train_batches": 1.0} if chunk > 1 else {}))

    status = "failed"
    try:
        trainer.fit(module, datamodule=datamodule,
                    ckpt_path=resumed["checkpoint"] if resumed else None)
        if monitor and prediction.get("applies") and "init" in monitor.report:
            prediction["measured_first_last_backprop_ratio"] = \
                monitor.report["init"]["backprop_first_last_ratio"]
        publish_theory(loggers, prediction)
        fit_metrics = record.numbers(trainer.callback_metrics)
        if divergence.diverged:  # a result, not an error: no test on non-finite weights
            status = "diverged"
        else:
            trainer.test(module, datamodule=datamodule, verbose=interactive)
            status = "completed"
    finally:
        close_loggers(loggers, status)
    best = next((c for c in callbacks if getattr(c, "monitor", None) == "val/loss"), None)

    summary = {
        "status": status,
        "metrics": fit_metrics | record.numbers(trainer.callback_metrics),
        "best": {"val/loss": record.number(best.best_model_score) if best else None,
                 "checkpoint": best.best_model_path if best else None},
        "epochs": trainer.current_epoch, "steps": trainer.global_step,
        "num_parameters": sum(p.numel() for p in module.parameters()),
    }
    summary["theory"] = prediction
    if jacobian:
        summary["jacobian"] = jacobian.result
    if monitor:
        summary["diagnosis"] = {k: monitor.report[k] for k in ("init", "final")
                                if k in monitor.report}
    summary["diverged"] = divergence.diverged  # the same record the final verdict names
    return summary
