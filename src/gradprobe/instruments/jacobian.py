"""Singular values of the layer-to-layer Jacobians dh_l/dh_{l-1} at initialisation.

Glorot & Bengio (2010) judge an initialisation by them: mean singular values near 1 keep both the
forward signal and the back-propagated gradient from shrinking or growing with depth. Measured once
per run, at the start of training, on the first examples of the first batch, with the network in
eval mode (no dropout masks drawn, so the training's random stream is untouched).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torch.func import jacrev, vmap

from gradprobe.instruments.layers import Layer, find_layers
from gradprobe.instruments.schedule import batch_inputs

log = logging.getLogger("gradprobe")


@torch.no_grad()
def block_inputs(layers: list[Layer], model: torch.nn.Module, x: Tensor) -> list[Tensor]:
    """The input of every listed block for the examples ``x`` (one forward pass, hooks)."""
    seen: list[Tensor] = []
    hooks = [layer.block.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
             for layer in layers]
    try:
        model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


def mean_singular_values(layers: list[Layer], inputs: list[Tensor]) -> dict[str, float]:
    """Per hidden layer after the first (square Jacobians), the mean singular value of
    dh_l/dh_{l-1}, averaged over the examples."""
    out: dict[str, float] = {}
    for layer, h in zip(layers[1:-1], inputs[1:-1], strict=True):
        def single(v: Tensor, block: torch.nn.Module = layer.block) -> Tensor:
            return block(v.unsqueeze(0)).squeeze(0)
        jacobians = vmap(jacrev(single))(h.detach().flatten(1))
        out[layer.name] = float(torch.linalg.svdvals(jacobians).mean())
    return out


class JacobianSpectrum(Callback):
    """At the start of training: the mean singular value of each layer-to-layer Jacobian, on
    ``examples`` examples of the first training batch; logged as ``jac/mean_sv/<layer>``, and
    written to ``<out_dir>/jacobian.json``. Works for models whose forward takes the batch's
    inputs ``batch[0]``."""

    def __init__(self, examples: int = 8, out_dir: str | Path | None = None) -> None:
        super().__init__()
        self.examples, self.out_dir = examples, out_dir
        self.result: dict[str, Any] = {}

    @torch.no_grad()
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loader = trainer.train_dataloader
        x = batch_inputs(trainer.strategy.batch_to_device(next(iter(loader))), loader)
        x = x[: self.examples]
        layers = find_layers(pl_module)
        was_training = pl_module.training
        pl_module.eval()
        try:
            with torch.enable_grad():
                values = mean_singular_values(layers, block_inputs(layers, pl_module, x))
        finally:
            pl_module.train(was_training)
        mean = sum(values.values()) / len(values) if values else float("nan")
        self.result = {"mean_singular_value": mean, "per_layer": values}
        if trainer.is_global_zero:
            metrics = {f"jac/mean_sv/{k}": v for k, v in values.items()} | {"jac/mean_sv": mean}
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=0)
            out_dir = Path(self.out_dir or Path(trainer.default_root_dir) / "gradflow")
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "jacobian.json").write_text(json.dumps(self.result, indent=2) + "\n")
            log.info("layer-to-layer Jacobians at init: mean singular value %.3f", mean)
