"""The one contract between networks and instruments: a depth-ordered list of :class:`Layer`.

A network that lists its layers (``layers()``) gets every instrument; any other model is
searched for its Linear/Conv modules.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Layer:
    name: str
    weight: nn.Module  # Linear or Conv1d: the parameters whose gradients are measured
    activation: nn.Module | None
    block: nn.Module  # its output is the layer's hidden state h


def layer_name(index: int, depth: int) -> str:
    """``layer_01`` ... zero-padded to the depth, so names sort in depth order."""
    return f"layer_{index:0{max(2, len(str(depth)))}d}"


WEIGHT_BEARING = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def find_layers(model: nn.Module) -> list[Layer]:
    """``model.layers()`` (or ``model.net.layers()``) when the model lists its layers; otherwise
    its Linear/Conv modules in registration order, the last one named ``output``. Discovered
    layers have no known activation, so only pre-activation statistics are taken for them."""
    for candidate in (model, getattr(model, "net", None)):
        if candidate is not None and callable(getattr(candidate, "layers", None)):
            return list(candidate.layers())
    found = [m for m in model.modules() if isinstance(m, WEIGHT_BEARING)]
    if not found:
        raise ValueError("no Linear or Conv layers found; pass layers=[...] explicitly")
    names = [layer_name(i, len(found) - 1) for i in range(1, len(found))] + ["output"]
    return [Layer(name, module, None, module) for name, module in zip(names, found, strict=True)]
