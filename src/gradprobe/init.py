"""Weight initialisation over a network's depth-ordered layers.

A scheme is two optional callables from the ``init`` config group: one for weights (any
``torch.nn.init`` function, partially applied) and one for biases (a number means a constant).
``None`` keeps PyTorch's default, so ``init=default`` changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from gradprobe.nets import DepthNet

TensorInit = Callable[[torch.Tensor], object]


@torch.no_grad()
def initialize(net: DepthNet, weight: TensorInit | None = None,
               bias: TensorInit | float | None = None) -> None:
    """Draw every listed layer's weight with ``weight`` and its bias with ``bias``."""
    for layer in net.layers():
        if weight is not None:
            weight(layer.weight.weight)
        if bias is not None and layer.weight.bias is not None:
            if callable(bias):
                bias(layer.weight.bias)
            else:
                nn.init.constant_(layer.weight.bias, float(bias))


def scaled_normal_(tensor: torch.Tensor, variance: float) -> torch.Tensor:
    """N(0, variance / fan_in): the mean-field ensemble's weights (``init=meanfield``)."""
    fan_in = tensor[0].numel()
    return nn.init.normal_(tensor, 0.0, (variance / fan_in) ** 0.5)


def normal_variance_(tensor: torch.Tensor, variance: float) -> torch.Tensor:
    """N(0, variance) (a zero variance gives zeros): the mean-field ensemble's biases."""
    return nn.init.normal_(tensor, 0.0, variance**0.5) if variance > 0 else nn.init.zeros_(tensor)


@torch.no_grad()
def implied_variances(net: DepthNet) -> dict[str, float]:
    """The sigma_w2 (fan_in * mean W^2) and sigma_b2 (mean b^2) an init actually drew, averaged
    over the hidden layers after the first: how any init maps onto the mean-field picture."""
    layers = net.layers()[1:-1] or net.layers()[:1]
    w2 = [layer.weight.weight[0].numel() * float(layer.weight.weight.pow(2).mean())
          for layer in layers]
    b2 = [float(layer.weight.bias.pow(2).mean()) for layer in layers
          if layer.weight.bias is not None]
    return {"sigma_w2": sum(w2) / len(w2), "sigma_b2": sum(b2) / len(b2) if b2 else 0.0}
