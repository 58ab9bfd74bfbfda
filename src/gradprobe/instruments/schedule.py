"""When the instruments measure, and what they need to know about the training engine.

Two declared protocols replace imports of any engine: a callback that samples steps says so
(``SamplesSteps``), and an engine that packs several optimizer steps into one loader batch says
how many per epoch (``MultiStepBatches``), so an instrument can find the run's last step and a
batch's first step. A plain Lightning run needs neither.
"""

from __future__ import annotations

import math
from typing import Any, Protocol, runtime_checkable

import pytorch_lightning as pl


@runtime_checkable
class SamplesSteps(Protocol):
    """A callback whose hooks must fire on the optimizer steps it samples: an engine that skips
    Lightning's optimizer wrapper on other steps (to save its overhead) asks it first."""

    def wants_step(self, step: int) -> bool: ...


@runtime_checkable
class MultiStepBatches(Protocol):
    """A training batch sampler whose every batch holds the batches of several optimizer steps,
    stacked on a new leading dimension; ``steps_per_epoch`` counts optimizer steps."""

    steps_per_epoch: int


def batch_inputs(batch: Any, loader: Any) -> Any:
    """The inputs of a loader batch's first optimizer step."""
    x = batch[0]
    return x[0] if isinstance(getattr(loader, "batch_sampler", None), MultiStepBatches) else x


def last_step(trainer: pl.Trainer) -> int:
    """The run's last optimizer step (-1: unknown), for a histogram at the very end."""
    sampler = getattr(trainer.train_dataloader, "batch_sampler", None)
    if not isinstance(sampler, MultiStepBatches):
        total = trainer.estimated_stepping_batches
        return int(total) - 1 if math.isfinite(total) else -1
    return last_step_of(sampler.steps_per_epoch, trainer.max_epochs, trainer.max_steps)


def last_step_of(batches_per_epoch: int, max_epochs: int, max_steps: int) -> int:
    """The last step of a run of one step per batch (-1 when neither limit is set)."""
    total = batches_per_epoch * max_epochs if max_epochs > 0 else math.inf
    if max_steps >= 0:
        total = min(total, max_steps)
    return int(total) - 1 if math.isfinite(total) else -1


class Schedule:
    """Every ``every_n_steps`` steps a row; every ``histogram_every_n_steps`` and at the last
    step also histograms, so "at the end" is really the end."""

    def __init__(self, every_n_steps: int, histogram_every_n_steps: int) -> None:
        self.every, self.hist_every, self.last = every_n_steps, histogram_every_n_steps, -1

    def wants_step(self, step: int) -> bool:
        return step % self.every == 0 or self.histogram_step(step)

    def histogram_step(self, step: int) -> bool:
        return step % self.hist_every == 0 or step == self.last
