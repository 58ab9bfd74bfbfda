"""The one LightningModule: a built network, a loss and torchmetrics, with nothing dataset-specific.

Only plain hyperparameters (optimizer and scheduler configs as dicts, the run's resolved config)
are saved, so checkpoints load with ``torch.load(weights_only=True)``. The network, loss and
metrics are passed back in to ``load_from_checkpoint`` (or use :func:`gradprobe.run.load_module`,
which rebuilds them from the saved config).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torchmetrics import MetricCollection


class GradprobeModule(pl.LightningModule):
    def __init__(self, net: nn.Module, loss: nn.Module, metrics: MetricCollection,
                 optimizer: dict[str, Any], scheduler: dict[str, Any] | None = None,
                 run_config: dict[str, Any] | None = None,
                 data_shape: dict[str, Any] | None = None) -> None:
        super().__init__()
        # run_config and data_shape are kept so a checkpoint can rebuild its own network; the
        # config reaches the loggers from the run (flat, with the Hydra choices), not from here.
        self.save_hyperparameters(ignore=["net", "loss", "metrics"], logger=False)
        self.net, self.loss = net, loss
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _step(self, batch: tuple[Tensor, Tensor], stage: str) -> Tensor:
        x, y = batch
        out = self.net(x)
        loss = self.loss(out, y)
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(out.detach(), y)
        training = stage == "train"
        # val/test losses are averaged over DDP ranks at epoch end; syncing the training loss
        # would cost an all-reduce on every step.
        self.log(f"{stage}/loss", loss, on_step=training, on_epoch=True, prog_bar=True,
                 batch_size=len(x), sync_dist=not training)
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=True)
        return loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._step(batch, "test")

    def configure_optimizers(self) -> Any:
        optimizer = instantiate(self.hparams.optimizer)(self.parameters())
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
