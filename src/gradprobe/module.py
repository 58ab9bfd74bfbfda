"""The one LightningModule: a built network, a loss and torchmetrics, with nothing dataset-specific.

The training step is kept lean: the training loss is summed on the device and logged once per
epoch (plus every ``log_every_n_steps``-th step's value, written at the epoch's end), because
``self.log`` on every step costs more than the arithmetic of a small network. With
``steps_per_call > 1`` one Lightning call trains a chunk of batches under manual optimization;
how is the engine's business (:mod:`gradprobe.engine.chunked`).

Only plain hyperparameters (optimizer and scheduler configs as dicts, the run's resolved config)
are saved, so checkpoints load with ``torch.load(weights_only=True)``. The network, loss and
metrics are passed back in to ``load_from_checkpoint`` (or use :func:`gradprobe.build.load_module`,
which rebuilds them from the saved config).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import MetricCollection

from gradprobe.engine import ChunkedSteps, capturable_kwargs, graph_unavailable


class GradprobeModule(pl.LightningModule):
    def __init__(self, net: nn.Module, loss: nn.Module, metrics: MetricCollection,
                 optimizer: dict[str, Any], scheduler: dict[str, Any] | None = None,
                 run_config: dict[str, Any] | None = None,
                 data_shape: dict[str, Any] | None = None, steps_per_call: int = 1,
                 compile: str = "none") -> None:
        super().__init__()
        self.automatic_optimization = steps_per_call == 1
        # run_config and data_shape are kept so a checkpoint can rebuild its own network; the
        # config reaches the loggers from the run (flat, with the Hydra choices), not from here.
        self.save_hyperparameters(ignore=["net", "loss", "metrics"], logger=False)
        self.net, self.loss = net, loss
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self._loss_sum: Tensor | float = 0.0  # this epoch's training losses, on the device
        self._loss_count = 0
        self._step_losses: list[tuple[int, Tensor]] = []  # (step, loss) every log_every_n_steps
        self.engine = ChunkedSteps(self, steps_per_call, compile)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch
        out = self.net(x)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(out, y)
        # averaged over DDP ranks at epoch end (validation and test are not the hot path)
        self.log(f"{stage}/loss", self.loss(out, y), on_epoch=True, prog_bar=True,
                 batch_size=len(x), sync_dist=True)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)

    def _account(self, out: Tensor, losses: Tensor, y: Tensor, first_step: int) -> None:
        """The losses of consecutive steps from ``first_step`` (and their outputs, targets),
        accumulated on the device: one metrics update and one sum per Lightning call."""
        self.train_metrics.update(out, y)
        self._loss_sum = self._loss_sum + losses.sum()
        self._loss_count += len(losses)
        every = self.trainer.log_every_n_steps
        logged = self._step_losses and self._step_losses[-1][0] == first_step  # accumulation
        for k in range(-first_step % every, len(losses), every):
            if not (k == 0 and logged):
                self._step_losses.append((first_step + k, losses[k]))

    def training_step(self, batch: tuple[Tensor, Tensor],
                      batch_idx: int) -> Tensor | dict[str, Tensor] | None:
        x, y = batch
        first = self.trainer.global_step
        if self.automatic_optimization:
            out = self.net(x)
            loss = self.loss(out, y)
            self._account(out.detach(), loss.detach()[None], y, first)
            return loss
        outs, losses, steps = self.engine.train(x, y)
        if not steps:
            return None
        self._account(outs, losses, y[:steps].flatten(0, 1), first)
        # each step's loss, for the divergence guard (instruments.guard): the first bad step
        return {"loss": losses.sum(), "step_losses": losses}

    def on_train_start(self) -> None:
        self.engine.start()

    def on_train_epoch_end(self) -> None:
        if self._loss_count:
            self.log("train/loss", self._loss_sum / self._loss_count, prog_bar=True)
            self.log_dict(self.train_metrics.compute(), prog_bar=True)
            self.train_metrics.reset()
        self._loss_sum, self._loss_count = 0.0, 0
        self._flush_step_losses()
        if not self.automatic_optimization:
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()

    def _flush_step_losses(self) -> None:
        """The sampled steps' losses to every logger, in one host copy."""
        if not self._step_losses:
            return
        steps, values = zip(*self._step_losses, strict=True)
        self._step_losses = []
        for step, value in zip(steps, torch.stack(values).tolist(), strict=True):
            for logger in self.loggers:
                logger.log_metrics({"train/loss_step": value}, step=step)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> Any:
        factory = instantiate(self.hparams.optimizer)
        capture = self.hparams.compile == "graph" and not graph_unavailable(
            self.device, self.hparams.steps_per_call)
        optimizer = factory(self.parameters(), **(capturable_kwargs(factory) if capture else {}))
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}

    # A resumed run continues the same random stream (dropout masks) as an uninterrupted one.
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
