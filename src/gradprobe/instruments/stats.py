"""Per-layer statistics computed on the device, as tensors: nothing here moves data to the host.

Units are features of a (N, C) output and channels of a (N, C, ...) one; a unit is *dead* when
its output is <= 0 for every example (and position) of the batch, *saturated* when every output
lies within ``margin`` of one of its activation's bounds.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATION_STATS = ("act_mean", "act_std", "act_zero_frac", "act_neg_frac", "act_dead_frac",
                    "act_saturated_frac", "pre_mean", "pre_std")
NAN = float("nan")


def bounds_of(activation: nn.Module | None) -> tuple[float, float] | None:
    """The output range of a bounded activation (where saturation kills gradients)."""
    if isinstance(activation, nn.Sigmoid):
        return 0.0, 1.0
    if isinstance(activation, (nn.Tanh, nn.Softsign)):
        return -1.0, 1.0
    if isinstance(activation, nn.Hardtanh):
        return activation.min_val, activation.max_val
    return None


def per_unit(x: Tensor) -> Tensor:
    """(N, C, ...) -> (C, N * ...): one row per unit."""
    return x.transpose(0, 1).reshape(x.shape[1], -1) if x.dim() > 1 else x.reshape(1, -1)


def activation_stats(pre: Tensor, out: Tensor | None, bounds: tuple[float, float] | None,
                     margin: float) -> Tensor:
    """The ``ACTIVATION_STATS`` of one layer as a vector (NaN where not applicable)."""
    pre = pre.detach().float()
    pre_stats = torch.stack([pre.mean(), pre.std()])
    if out is None:
        return torch.cat([torch.full((6,), NAN, device=pre.device), pre_stats])
    out = out.detach().float()
    units = per_unit(out)
    if bounds is None:
        saturated = torch.tensor(NAN, device=out.device)
    else:
        low, high = bounds
        saturated = ((units - low < margin) | (high - units < margin)).all(dim=1).float().mean()
    return torch.cat([torch.stack([
        out.mean(), out.std(), (out == 0).float().mean(), (out < 0).float().mean(),
        (units <= 0).all(dim=1).float().mean(), saturated]), pre_stats])


class Bins:
    """Fixed histogram bins; values outside fall into the end bins, so nothing disappears."""

    def __init__(self, low: float, high: float, count: int) -> None:
        self.edges = torch.linspace(low, high, count + 1)
        self.low, self.high, self.count = low, high, count

    def counts(self, values: Tensor) -> Tensor:
        inner = self.edges[1:-1].to(values.device)
        index = torch.bucketize(values.detach().float().flatten().clamp(self.low, self.high),
                                inner, right=True)
        return torch.bincount(index, minlength=self.count)


GRAD_BINS = Bins(-12.0, 2.0, 56)  # log10 |g|: 1e-12 .. 1e2, a quarter decade per bin
ACT_BINS = Bins(-3.0, 3.0, 60)


def log10_abs(x: Tensor) -> Tensor:
    """log10|x|; exact zeros give -inf and so land in the first bin."""
    return torch.log10(x.detach().float().abs())
