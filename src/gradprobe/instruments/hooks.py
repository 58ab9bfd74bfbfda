"""The hooks of a sampled forward pass: what each layer's activation saw, and ||dL/dh||.

Attached only for the first micro-batch of a sampled step and removed after its backward, so
unsampled steps pay nothing.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from gradprobe.instruments.layers import Layer
from gradprobe.instruments.recorder import LAYER_STATS, Row
from gradprobe.instruments.stats import (
    ACT_BINS,
    ACTIVATION_STATS,
    activation_stats,
    bounds_of,
    dies_of,
)

_L = {stat: i for i, stat in enumerate(LAYER_STATS)}


def watch_layers(layers: list[Layer], backprop: list[Tensor | None],
                 seen: list[tuple[Tensor, Tensor | None] | None], grad_scale: float = 1.0,
                 scaler: Any = None) -> list[Any]:
    """Forward hooks for one sampled forward pass: each layer's pre-activation and activation
    into ``seen[j]`` (for :func:`record_activations`), and each block output's ||dL/dh|| into
    ``backprop[j]`` when the backward reaches it, times ``grad_scale`` (gradient accumulation)
    and divided by an AMP ``scaler``'s loss scale. Returns the handles."""
    def on_block(j: int):
        def hook(module: Any, inputs: Any, output: Tensor) -> None:
            if isinstance(output, Tensor) and output.requires_grad:
                def on_grad(grad: Tensor) -> None:
                    norm = torch.linalg.vector_norm(grad.detach().float()) * grad_scale
                    backprop[j] = norm / scaler._scale if scaler else norm
                output.register_hook(on_grad)
        return hook

    def on_activation(j: int, layer: Layer):
        def hook(module: Any, inputs: Any, output: Tensor) -> None:
            if layer.activation is None:
                seen[j] = (output.detach(), None)
            else:
                seen[j] = (inputs[0].detach(), output.detach())
        return hook

    handles = []
    for j, layer in enumerate(layers):
        watched = layer.activation if layer.activation is not None else layer.weight
        handles += [layer.block.register_forward_hook(on_block(j)),
                    watched.register_forward_hook(on_activation(j, layer))]
    return handles


def record_activations(row: Row, layers: list[Layer],
                       seen: list[tuple[Tensor, Tensor | None] | None], margin: float) -> None:
    """The activation statistics of the layers seen, computed for each group of layers with
    the same shapes and bounds at once (and the histograms, on histogram steps)."""
    groups: dict[tuple, list[int]] = {}
    for j, item in enumerate(seen):
        if item is not None:
            pre, out = item
            activation = layers[j].activation
            key = (pre.shape, None if out is None else out.shape, bounds_of(activation),
                   dies_of(activation))
            groups.setdefault(key, []).append(j)
    first, last = _L[ACTIVATION_STATS[0]], _L[ACTIVATION_STATS[-1]]
    for (_, has_out, bounds, dies), index in groups.items():
        pre = torch.stack([seen[j][0] for j in index])
        out = torch.stack([seen[j][1] for j in index]) if has_out is not None else None
        row.layers[first:last + 1, index] = activation_stats(pre, out, bounds, margin, dies)
    if row.act_hist is not None:
        index = [j for j, item in enumerate(seen) if item is not None and item[1] is not None]
        if index:
            row.act_hist[index] = ACT_BINS.counts_per_tensor([seen[j][1] for j in index])


def record_backprop(row: Row, backprop: list[Tensor | None]) -> None:
    nan = torch.tensor(math.nan, device=row.layers.device)
    row.layers[_L["backprop_norm"]] = torch.stack([nan if n is None else n for n in backprop])
