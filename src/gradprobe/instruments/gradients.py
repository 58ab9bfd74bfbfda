"""Gradient and update statistics of a sampled step, as fused ``torch._foreach_norm`` calls on
the device (no host sync, no per-parameter Python loop)."""

from __future__ import annotations

import torch
from torch import Tensor

from gradprobe.instruments.recorder import LAYER_STATS, STEP_STATS, Row

_L = {stat: i for i, stat in enumerate(LAYER_STATS)}
_S = {stat: i for i, stat in enumerate(STEP_STATS)}


def record_gradients(row: Row, weights: list[Tensor], grads: list[Tensor], other_grads:
                     list[Tensor], numel: Tensor) -> tuple[Tensor, Tensor]:
    """Per layer ||g||, ||W||, ratio and mean |g|, and the first/last hidden ratio and global
    norm (every gradient: ``grads`` of the layer weights plus ``other_grads``) into ``row``.
    One fused norm over all gradients. Returns the global norm and the weight norms."""
    all_norms = norms_of(grads + other_grads)
    norms = all_norms[:len(grads)]
    weight_norms = norms_of(weights)
    row.layers[_L["grad_norm"]] = norms
    row.layers[_L["weight_norm"]] = weight_norms
    row.layers[_L["grad_ratio"]] = norms / weight_norms
    row.layers[_L["grad_mean_abs"]] = norms_of(grads, 1) / numel
    row.steps[_S["grad_first_last_ratio"]] = norms[0] / norms[max(len(weights) - 2, 0)]
    global_norm = torch.linalg.vector_norm(all_norms)
    row.steps[_S["grad_global_norm_preclip"]] = global_norm
    return global_norm, weight_norms


def norms_of(tensors: list[Tensor], ord: int = 2) -> Tensor:
    """One fused norm per tensor, accumulated in at least float32: a float16 (``16-true``)
    gradient's norm would overflow to inf at 65504."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32) if tensors else torch.float32
    return torch.stack(torch._foreach_norm(tensors, ord, dtype=dtype))


def record_update(row: Row, weights: list[Tensor], before: list[Tensor],
                  weight_norms: Tensor) -> None:
    """||dW|| / ||W|| of the update just applied, per layer."""
    change = norms_of(torch._foreach_sub(weights, before))
    row.layers[_L["update_ratio"]] = change / weight_norms


def global_norm_of(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(norms_of(grads))
