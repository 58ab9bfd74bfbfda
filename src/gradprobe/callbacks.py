"""A run's callbacks and loggers, from its config: checkpoints, the instruments, the progress
bar, and one Lightning logger per entry of the ``logger`` group."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import Callback, RichProgressBar
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
            extra |= {"id": wandb_id, "resume": "allow",
                      "name": cfg.run_name or record.name_from(overrides),
                      "group": logger_cfg.get("group") or group,
                      "config": record.flat_config(cfg, choices),
                      "tags": [f"{name}:{option}" for name, option in choices.items()]}
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
    if not settings.pop("enabled"):
        return None
    prediction = prediction or {}
    context = dict(choices) | remedies.context_of(cfg, choices, prediction) | {
        "lr": cfg.optimizer.get("lr"), "gradient_clip_val": cfg.trainer.get("gradient_clip_val"),
        "overrides": list(overrides or [])}
    return GradientFlow(**settings, out_dir=run_dir / "gradflow", context=context,
                        advise=remedies.remedies, resume=resuming)


def build_callbacks(run_dir: Path, interactive: bool, gradflow: GradientFlow | None,
                    jacobian: JacobianSpectrum | None = None,
                    validating: bool = True) -> list[Callback]:
    """Checkpoints first (``last``, then ``best`` when validating), then the instruments."""
    extras = [RichProgressBar()] if interactive else []
    instruments = [c for c in (gradflow, jacobian) if c is not None]
    return [*checkpoint_callbacks(run_dir / "checkpoints", validating), *instruments, *extras]
