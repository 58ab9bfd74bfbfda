"""The training progress bar, counted in optimizer steps.

One Lightning ``training_step`` call may train up to ``engine.steps_per_call`` optimizer steps
(:mod:`gradprobe.engine`), so Lightning's bar, which counts calls, showed "2/2" for an epoch of
28 steps. This bar's total is the epoch's optimizer steps (the loader's ``steps_per_epoch``, the
instruments' ``MultiStepBatches`` protocol) and its position ``trainer.global_step``; a run of
one step per call counts the same as Lightning's own bar.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from gradprobe.instruments.schedule import MultiStepBatches


class StepProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar whose unit is one optimizer step (see the module docstring)."""

    def __init__(self, refresh_rate: int = 1, leave: bool = False) -> None:
        super().__init__(refresh_rate=refresh_rate, leave=leave)
        self._epoch_start = 0  # trainer.global_step when this epoch began

    @property
    def total_train_batches(self) -> int | float:
        """Optimizer steps in an epoch (Lightning's count of calls when one call is one step)."""
        sampler = getattr(self.trainer.train_dataloader, "batch_sampler", None)
        if isinstance(sampler, MultiStepBatches):
            return sampler.steps_per_epoch
        return super().total_train_batches

    def init_train_tqdm(self) -> Any:
        bar = super().init_train_tqdm()
        bar.unit = "step"
        return bar

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self._epoch_start = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        bar = self.train_progress_bar
        if bar is None or bar.disable:
            return
        done = trainer.global_step - self._epoch_start
        # a call may jump past a multiple of refresh_rate: update once one is crossed
        if done == bar.total or done - bar.n >= self.refresh_rate:
            bar.n = done
            bar.refresh()
            bar.set_postfix(self.get_metrics(trainer, pl_module))
