"""A run's callbacks and loggers, from its config: the ``callbacks`` group (checkpoints, early
stopping, progress bar, model summary; each switched by its ``enabled``), the instruments, and one
Lightning logger per entry of the ``logger`` group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, ModelSummary, ProgressBar
from pytorch_lightning.loggers import WandbLogger

from gradprobe import record, remedies
from gradprobe.checkpoints import checkpoint_callbacks
from gradprobe.instruments import GradientFlow
from gradprobe.instruments.jacobian import JacobianSpectrum


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
            import wandb

            # W&B's process settings, read now: its WANDB_SILENT (gradprobe.console) then
            # also quiets the warning it prints about an argument Lightning always passes
            wandb.setup()
            extra |= {"id": wandb_id, "resume": "allow",
                      "name": cfg.run_name or record.name_from(overrides),
                      "group": logger_cfg.get("group") or group,
                      "config": record.flat_config(cfg, choices),
                      "tags": [f"{name}:{option}" for name, option in choices.items()]
                      + list(cfg.get("tags") or [])}
        loggers.append(instantiate(logger_cfg, _partial_=True)(**extra))
    return loggers


def close_loggers(loggers: list, status: str) -> None:
    """Flush every logger; end the W&B run, so the next run in this process starts its own."""
    for logger in loggers:
        logger.finalize("success" if status == "completed" else status)
        if isinstance(logger, WandbLogger):
            logger.experiment.finish(exit_code=0 if status == "completed" else 1)


def build_gradflow(cfg: DictConfig, choices: dict[str, str], run_dir: Path,
                   prediction: dict[str, Any] | None = None, overrides: list[str] | None = None,
                   resuming: bool = False) -> GradientFlow | None:
    """The ``gradflow`` group's instrument (``GradientFlow``), told the run's choices, overrides
    (to write each remedy as a whole command) and mean-field inputs (to check the remedies)."""
    settings = OmegaConf.to_container(cfg.gradflow, resolve=True)
    settings.pop("jacobian_examples", None)  # its own callback, JacobianSpectrum
    settings.pop("figures", None)  # drawn from the files after the fit (gradprobe.publish)
    settings.get("wandb", {}).pop("profile_charts", None)  # also posted after it (publish)
    if not settings.pop("enabled"):
        return None
    prediction = prediction or {}
    context = dict(choices) | remedies.context_of(cfg, choices, prediction) | {
        "lr": cfg.optimizer.get("lr"), "gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        "overrides": list(overrides or [])}
    return GradientFlow(**settings, out_dir=run_dir / "gradflow", context=context,
                        advise=remedies.remedies, resume=resuming)


# What a run made before the ``callbacks`` group existed (resumed) gets: its defaults then.
BEFORE_GROUP = {"progress_bar": {"_target_": "gradprobe.progress.StepProgressBar"},
                "model_summary": {"_target_": "gradprobe.callbacks.FlopsSummary"}}


def settings_of(cfg: DictConfig, name: str) -> dict[str, Any]:
    """``callbacks.<name>`` as a plain dict (``enabled`` included), ``{}`` when absent."""
    node = (cfg.get("callbacks") or {}).get(name)
    if node is None:
        return dict(BEFORE_GROUP.get(name, {}))
    return OmegaConf.to_container(node, resolve=True)


def switch(cfg: DictConfig, name: str, default: bool) -> bool:
    """``callbacks.<name>.enabled``: true, false, or null (``default``)."""
    enabled = settings_of(cfg, name).get("enabled")
    return default if enabled is None else bool(enabled)


def checkpointing(cfg: DictConfig) -> bool:
    """Whether the run writes checkpoints: ``callbacks.checkpoint.enabled``, unless Lightning's
    own ``trainer.enable_checkpointing`` is set false."""
    return switch(cfg, "checkpoint", True) and cfg.trainer.get("enable_checkpointing") is not False


def build(cfg: DictConfig, name: str) -> Callback:
    """The callback ``callbacks.<name>`` names by its ``_target_``, without its switch."""
    settings = settings_of(cfg, name)
    settings.pop("enabled", None)
    return instantiate(settings)


class FlopsSummary(ModelSummary):
    """Lightning's model summary, with FLOPs: Lightning counts them on ``example_input_array``,
    which is set here (one example of the run's input shape, in the weights' dtype and device)
    just before the summary is drawn, so the run itself never carries it."""

    @staticmethod
    def example_input(pl_module: Any) -> torch.Tensor | None:
        """One zero example of the module's input shape (its saved ``data_shape``)."""
        shape = (pl_module.hparams.get("data_shape") or {}).get("input_shape")
        first = next(pl_module.parameters(), None)
        if not shape or first is None:
            return None
        return torch.zeros(1, *shape, dtype=first.dtype, device=first.device)

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        if pl_module.example_input_array is None:
            pl_module.example_input_array = self.example_input(pl_module)
        super().on_fit_start(trainer, pl_module)


def build_callbacks(cfg: DictConfig, run_dir: Path, interactive: bool,
                    gradflow: GradientFlow | None,
                    jacobian: JacobianSpectrum | None = None) -> list[Callback]:
    """The ``callbacks`` group's: checkpoints (``last``, then ``best`` when validating), early
    stopping; then the instruments; then the progress bar (default: when stdout is a terminal)
    and the model summary (default: with ``verbose``). Lightning's own ``trainer.enable_*``
    flags, when set, switch theirs too (:func:`trainer_flags`)."""
    trainer = cfg.trainer
    found: list[Callback] = []
    if checkpointing(cfg):
        found += checkpoint_callbacks(
            run_dir / "checkpoints", validating=trainer.limit_val_batches != 0,
            best_weights_only=bool(settings_of(cfg, "checkpoint").get("best_weights_only")))
    if switch(cfg, "early_stopping", False):
        found.append(build(cfg, "early_stopping"))
    found += [c for c in (gradflow, jacobian) if c is not None]
    if (switch(cfg, "progress_bar", interactive)
            and trainer.get("enable_progress_bar") is not False):
        found.append(build(cfg, "progress_bar"))
    if (switch(cfg, "model_summary", bool(cfg.get("verbose")))
            and trainer.get("enable_model_summary") is not False):
        found.append(build(cfg, "model_summary"))
    return found


def trainer_flags(callbacks: list[Callback]) -> dict[str, bool]:
    """Lightning's ``enable_*`` Trainer flags that agree with the callbacks chosen (Lightning
    refuses a checkpoint or progress bar callback with its flag off, and adds its own default
    ones with the flag on)."""
    return {"enable_checkpointing": any(isinstance(c, ModelCheckpoint) for c in callbacks),
            "enable_progress_bar": any(isinstance(c, ProgressBar) for c in callbacks),
            "enable_model_summary": any(isinstance(c, ModelSummary) for c in callbacks)}
