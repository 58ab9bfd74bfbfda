"""Which layers an instrument watches: the model's own depth-ordered list, or a discovered one."""

from __future__ import annotations

from torch import nn

from gradprobe.nets import Layer, layer_name

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
