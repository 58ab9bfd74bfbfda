"""One Lightning call, several optimizer steps: the chunked step behind ``engine.steps_per_call``.

A loader batch holds a chunk of batches (:class:`gradprobe.engine.chunks.StepChunks`), and the
module trains them one by one under manual optimization. A step some callback samples (one that
declares ``wants_step(step)``, the instruments' ``SamplesSteps`` protocol) goes through
Lightning's optimizer wrapper, so every hook fires as with one step per call; the others call the
torch optimizer directly (or replay a captured CUDA graph, :mod:`gradprobe.engine.graph`) and
only advance Lightning's step counter. Same batches, same updates, same ``global_step``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from gradprobe.engine.graph import StepGraph, graph_unavailable
from gradprobe.engine.lightning_internals import count_optimizer_step, log_at_step
from gradprobe.instruments.schedule import SamplesSteps

log = logging.getLogger("gradprobe")


class ChunkedSteps:
    """Trains a module's chunks; ``start`` at the start of fitting, ``train`` per call. The
    module has ``net`` and ``loss``; with ``steps_per_call`` 1 Lightning drives every step and
    this only says why ``compile=graph`` cannot apply."""

    def __init__(self, module: pl.LightningModule, steps_per_call: int = 1,
                 compile: str = "none") -> None:
        self.module, self.steps_per_call, self.compile = module, steps_per_call, compile
        self.sampled: list[Callable[[int], bool]] = []
        self.graph: StepGraph | None = None

    def start(self) -> None:
        """Learn which steps the callbacks sample; capture a graph where asked and possible."""
        module = self.module
        self.sampled = [cb.wants_step for cb in module.trainer.callbacks
                        if isinstance(cb, SamplesSteps)]
        if self.compile != "graph":
            return
        reason = graph_unavailable(module.device, self.steps_per_call)
        if reason is None:
            self.graph = StepGraph(module.net, module.loss, module.optimizers().optimizer)
        elif module.trainer.is_global_zero:
            log.warning("engine.compile=graph: %s; training eagerly", reason)

    def train(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int]:
        """The chunk ``(steps, batch, ...)`` trained up to ``max_steps``: the detached outputs
        (concatenated), each step's loss, and the number of steps taken (0: nothing left)."""
        trainer = self.module.trainer
        first, max_steps = trainer.global_step, trainer.max_steps
        steps = len(x) if max_steps < 0 else max(0, min(len(x), max_steps - first))
        if not steps:
            return x.new_empty(0), x.new_empty(0), 0
        optimizer = self.module.optimizers()
        outs, losses = zip(*(self._step(optimizer, first + k, x[k], y[k])
                             for k in range(steps)), strict=True)
        log_at_step(trainer, first + steps - 1)
        return torch.cat(outs), torch.stack(losses), steps

    def _step(self, optimizer: Any, step: int, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        module = self.module
        if any(wants(step) for wants in self.sampled):  # every Lightning hook fires
            out = module.net(x)
            loss = module.loss(out, y)
            optimizer.zero_grad()
            module.manual_backward(loss)
            optimizer.step()
            return out.detach(), loss.detach()
        if self.graph is not None:
            out, loss = self.graph.step(x, y)
        else:
            out = module.net(x)
            loss = module.loss(out, y)
            optimizer.optimizer.zero_grad()
            loss.backward()
            optimizer.optimizer.step()
        count_optimizer_step(optimizer)
        return out.detach(), loss.detach()
