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
