"""Which weights a finished run is tested on: ``test_on: best`` (the default) tests the best
checkpoint by ``val/loss`` under ``test/*`` and the final weights beside it under
``test_last/*``; ``test_on: last``, or a run with no best checkpoint (checkpoints off, no
validation, none saved yet), tests the final weights once, under ``test/*``. The same for a solo
run (:mod:`gradprobe.run`) and each ensemble member (:mod:`gradprobe.ensemble.members`).

The final weights' test runs first with the loggers muted, so Lightning logs ``test/*`` only
for the best weights; ``test_last/*`` is logged by the caller under its own name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl

from gradprobe import outcome, record
from gradprobe.checkpoints import weights_of

LAST = "test_last/"


def test_on(cfg: Any) -> str:
    """``best`` or ``last``; a run made before the key existed tested its final weights."""
    return cfg.get("test_on") or "last"


def final_then_best(trainer: pl.Trainer, module: pl.LightningModule, datamodule: Any,
                    load_best: Callable[[], None] | None,
                    verbose: bool = False) -> dict[str, float]:
    """Test ``module``; with ``load_best`` (which puts the best weights into it), the final
    weights first, logged nowhere, then the best ones, logged. Returns the final weights'
    metrics renamed ``test_last/*`` (keys as in ``callback_metrics``; empty without
    ``load_best``)."""
    if load_best is None:
        trainer.test(module, datamodule=datamodule, verbose=verbose)
        return {}
    loggers = trainer.loggers
    trainer.loggers = []
    try:
        trainer.test(module, datamodule=datamodule, verbose=False)
    finally:
        trainer.loggers = loggers
    final = {key.replace("test/", LAST, 1): value
             for key, value in trainer.callback_metrics.items() if "test/" in key}
    load_best()
    trainer.test(module, datamodule=datamodule, verbose=verbose)
    return record.numbers(final)


def log(loggers: list, metrics: dict[str, float], step: int) -> None:
    """``test_last/*`` to every logger, after the best weights' ``test/*``."""
    if metrics:
        for logger in loggers:
            logger.log_metrics(metrics, step=step)


def solo(trainer: pl.Trainer, module: pl.LightningModule, datamodule: Any, best: Any | None,
         cfg: Any, verbose: bool = False) -> tuple[str, dict[str, float]]:
    """A solo run's test: which weights ``test/*`` measured, and ``test_last/*`` (logged)."""
    path = outcome.best_path(best)
    on = "best" if test_on(cfg) == "best" and path else "last"
    load = (lambda: module.load_state_dict(weights_of(path))) if on == "best" else None
    last = final_then_best(trainer, module, datamodule, load, verbose)
    log(trainer.loggers, last, trainer.global_step)
    return on, last
