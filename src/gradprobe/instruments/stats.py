"""Per-layer statistics computed on the device, as tensors: nothing here moves data to the host.

Units are features of a (N, C) output and channels of a (N, C, ...) one. A unit of an activation
with a zero-gradient region (ReLU: ``dies_of``) is *dead* when its output is <= 0 for every
example (and position) of a probe of at least ``DEAD_PROBE`` examples; other activations have no
dead units (NaN). A unit is *saturated* when every output lies within ``margin`` of one of its
activation's bounds. ``pre_cosine`` is the mean pairwise cosine similarity of the examples'
pre-activation vectors: the measured counterpart of the mean-field correlation map's c_l
(``gradprobe.theory``), near 1 when every example is mapped to one direction (input collapse).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

ACTIVATION_STATS = ("act_mean", "act_std", "act_zero_frac", "act_neg_frac", "act_dead_frac",
                    "act_saturated_frac", "pre_mean", "pre_std", "pre_cosine")
# what the diagnosis reads of activations (dead units, saturation, inputs collapsed to one
# direction): dashboards show these first
VERDICT_STATS = ("act_dead_frac", "act_saturated_frac", "pre_cosine")
NAN = float("nan")
# Below this many examples "off for every example" means little: a unit of independent inputs
# is off for all 32 with probability 2^-32.
DEAD_PROBE = 32


def dies_of(activation: nn.Module | None) -> bool:
    """Whether an activation has a region of exactly zero gradient in which units can die
    (ReLU and ReLU6; leaky/PReLU, ELU, SELU, GELU, SiLU, Mish and the smooth ones do not)."""
    return isinstance(activation, (nn.ReLU, nn.ReLU6))


def bounds_of(activation: nn.Module | None) -> tuple[float, float] | None:
    """The output range of a bounded activation (where saturation kills gradients)."""
    if isinstance(activation, (nn.Sigmoid, nn.Hardsigmoid)):
        return 0.0, 1.0
    if isinstance(activation, (nn.Tanh, nn.Softsign)):
        return -1.0, 1.0
    if isinstance(activation, nn.Hardtanh):
        return activation.min_val, activation.max_val
    return None


def mean_std(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-row mean and (unbiased) std of a (rows, n) tensor in two passes; several times
    faster than ``torch.std_mean`` on the CPU."""
    mean = x.mean(dim=1)
    norm = torch.linalg.vector_norm(x - mean[:, None], dim=1)
    return mean, norm / max(x.shape[1] - 1, 1) ** 0.5


def pairwise_cosine(x: Tensor) -> Tensor:
    """Mean cosine similarity over all pairs of examples, per group: x is (groups, examples,
    ...). With unit vectors u_i, sum_{i != j} u_i.u_j = |sum_i u_i|^2 - n, and sum_i u_i is one
    matrix product of the norms' inverses with x: two passes over the data, no n x n Gram
    matrix, no normalised copy. An all-zero example counts as orthogonal to every other."""
    flat = x.detach().float().flatten(2)
    n = flat.shape[1]
    if n < 2:
        return torch.full(flat.shape[:1], NAN, device=x.device)
    norms = torch.linalg.vector_norm(flat, dim=2)
    alive = norms > 0
    inverse = alive / norms.clamp_min(1e-30)
    total = torch.bmm(inverse[:, None, :], flat).squeeze(1).pow(2).sum(dim=1)
    return (total - alive.sum(dim=1)) / (n * (n - 1))


def activation_stats(pre: Tensor, out: Tensor | None, bounds: tuple[float, float] | None,
                     margin: float, dies: bool = False) -> Tensor:
    """The ``ACTIVATION_STATS`` (rows) of a group of layers with the same shapes and bounds,
    stacked along a first dimension (columns; NaN where not applicable). The group's
    reductions are single kernels, so a sampled step costs a few dozen of them whatever the
    depth; sign() gives the zero and negative fractions (mean|s| = P(x != 0),
    mean s = P(x > 0) - P(x < 0)). Units are dimension 2 (features or channels); ``dies``:
    the activation has a zero-gradient region (:func:`dies_of`)."""
    pre_mean, pre_std = mean_std(pre.detach().float().flatten(1))
    cosine = pairwise_cosine(pre)
    nan = torch.full_like(pre_mean, NAN)
    if out is None:
        return torch.stack([nan, nan, nan, nan, nan, nan, pre_mean, pre_std, cosine])
    out = out.detach().float()
    mean, std = mean_std(out.flatten(1))
    sign = torch.sign(out.flatten(1))
    nonzero, balance = sign.abs().mean(dim=1), sign.mean(dim=1)
    dims = [d for d in range(1, out.dim()) if d != 2]  # per unit: all but group and unit dims
    if dies and out.shape[1] >= DEAD_PROBE:
        dead = (out.amax(dim=dims) <= 0).float().flatten(1).mean(dim=1)
    else:
        dead = nan
    if bounds is None:
        saturated = nan
    else:  # all outputs of a unit within margin of a bound <=> its largest distance is
        low, high = bounds
        distance = torch.minimum(out - low, high - out).amax(dim=dims)
        saturated = (distance < margin).float().flatten(1).mean(dim=1)
    return torch.stack([mean, std, 1 - nonzero, (nonzero - balance) / 2, dead, saturated,
                        pre_mean, pre_std, cosine])


class Bins:
    """Fixed, uniform histogram bins; values outside (infinities too) fall into the end bins, so
    nothing finite is lost; NaNs (a diverging run) are not counted. Bin indices come from
    arithmetic (no binary search), for many tensors in one bincount; in float64 with
    power-of-two bin widths, so they agree exactly with the saved edges."""

    def __init__(self, low: float, high: float, count: int) -> None:
        self.edges = torch.linspace(low, high, count + 1)
        self.low, self.high, self.count = low, high, count
        self.width = (high - low) / count

    def index(self, values: Tensor) -> Tensor:
        """Bin of each value; NaN goes to an extra bin ``count``, which counting drops (no
        masking, so no host sync)."""
        scaled = (values.detach().flatten().double() - self.low) / self.width
        return scaled.floor_().clamp_(0, self.count - 1).nan_to_num_(nan=self.count).long()

    def counts(self, values: Tensor) -> Tensor:
        return torch.bincount(self.index(values), minlength=self.count + 1)[:self.count]

    def counts_per_tensor(self, tensors: list[Tensor]) -> Tensor:
        """(len(tensors), count): one pass over all of them, offset per tensor."""
        stride = self.count + 1
        index = torch.cat([self.index(t) + k * stride for k, t in enumerate(tensors)])
        counts = torch.bincount(index, minlength=len(tensors) * stride)
        return counts.view(len(tensors), stride)[:, :self.count]


GRAD_BINS = Bins(-12.0, 2.0, 56)  # log10 |g|: 1e-12 .. 1e2, a quarter decade per bin
ACT_BINS = Bins(-4.0, 4.0, 64)  # activation values, 0.125 wide


def log10_abs(x: Tensor) -> Tensor:
    """log10|x|; exact zeros give -inf and so land in the first bin."""
    return torch.log10(x.detach().float().abs())
