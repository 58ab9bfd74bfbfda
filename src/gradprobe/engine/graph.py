"""``engine.compile=graph``: an unsampled training step captured once as a CUDA graph.

Forward, loss, backward and optimizer step of a small network are dozens of tiny kernels whose
launch cost dominates on a GPU; replaying them as one graph removes it. The recipe is PyTorch's
whole-network capture: a few warm-up steps (real training steps) on a side stream, capture with
grads set to None (the backward inside the graph then writes the gradients, it does not
accumulate), then each step copies its batch into the static inputs and replays. The optimizer
must be created ``capturable`` (its step counters on the device). Sampled steps stay eager, so
the instruments' hooks see them as usual.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

WARMUP_STEPS = 3


def graph_unavailable(device: torch.device, steps_per_call: int) -> str | None:
    """Why a step cannot be captured here (the run then trains eagerly), or None."""
    if device.type != "cuda":
        return f"CUDA graphs need a CUDA device, this run is on {device.type}"
    if steps_per_call == 1:
        return "needs engine.steps_per_call > 1 (Lightning then drives every step)"
    return None


def capturable_kwargs(optimizer_factory: Callable[..., Any]) -> dict[str, Any]:
    """``capturable=True`` for optimizers that have the flag (Adam, AdamW, RMSprop, ...)."""
    target = getattr(optimizer_factory, "func", optimizer_factory)
    return {"capturable": True} if "capturable" in inspect.signature(target).parameters else {}


class StepGraph:
    """Trains one step per call: eagerly during warm-up, then by replaying the captured graph.
    ``step(x, y)`` returns (output, loss), detached copies."""

    def __init__(self, net: torch.nn.Module, loss: torch.nn.Module,
                 optimizer: torch.optim.Optimizer) -> None:
        self.net, self.loss, self.optimizer = net, loss, optimizer
        self.warmed, self.graph = 0, None
        self.stream = torch.cuda.Stream()

    def step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        if self.graph is None and self.warmed >= WARMUP_STEPS:
            self._capture(x, y)
        if self.graph is None:
            return self._eager(x, y)
        self.static_x.copy_(x)
        self.static_y.copy_(y)
        self.graph.replay()
        # the next replay overwrites the static outputs: the caller keeps several steps' values
        return self.static_out.detach().clone(), self.static_loss.detach().clone()

    def _eager(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            self.optimizer.zero_grad(set_to_none=True)
            out = self.net(x)
            loss = self.loss(out, y)
            loss.backward()
            self.optimizer.step()
        torch.cuda.current_stream().wait_stream(self.stream)
        self.warmed += 1
        return out.detach(), loss.detach()

    def _capture(self, x: Tensor, y: Tensor) -> None:
        self.static_x, self.static_y = x.clone(), y.clone()
        self.optimizer.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self.static_out = self.net(self.static_x)
            self.static_loss = self.loss(self.static_out, self.static_y)
            self.static_loss.backward()
            self.optimizer.step()
        self.graph = graph
