"""The one contract between networks and instruments: a depth-ordered list of :class:`Layer`.

A network that lists its layers (``layers()``) gets every instrument; any other model is
searched for its Linear/Conv modules, each paired with the activation module that follows it in
an ``nn.Sequential`` (so a plain ``nn.Sequential(Linear, Sigmoid, ...)`` gets activation
statistics and saturation verdicts too).
"""

from __future__ import annotations

from collections import Counter
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


# Every name a layer gets (layer_name's, and the network head's "output"): what tells a logged
# key <stat>/<layer> that it is per-layer, for dashboards built from logged keys alone.
LAYER_NAME_PATTERN = r"layer_\d+|output"


WEIGHT_BEARING = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


# torch.nn's activation modules that are not elementwise (or not activations at all)
NOT_ELEMENTWISE = (nn.MultiheadAttention, nn.Softmax, nn.Softmin, nn.LogSoftmax, nn.Softmax2d,
                   nn.GLU)
# what may stand between a weight-bearing module and its activation: it shapes the
# pre-activation (norms) or acts on it elementwise at train time only (dropout)
BETWEEN = ("torch.nn.modules.batchnorm", "torch.nn.modules.instancenorm",
           "torch.nn.modules.normalization", "torch.nn.modules.dropout")


def _defined_in(module: nn.Module, *homes: str) -> bool:
    return any(cls.__module__ in homes for cls in type(module).__mro__)


def is_activation(module: nn.Module) -> bool:
    """An elementwise activation: any class of ``torch.nn.modules.activation`` (nn.Sigmoid,
    nn.Tanh, nn.ReLU, nn.GELU, nn.SiLU, nn.PReLU, nn.Hardtanh, ..., or a subclass of one),
    softmax-like modules and attention left out."""
    return _defined_in(module, "torch.nn.modules.activation") and \
        not isinstance(module, NOT_ELEMENTWISE)


def run_order(sequential: nn.Sequential) -> list[nn.Module]:
    """The modules a Sequential runs, in order, nested Sequentials inlined (a module used twice
    appears twice)."""
    order: list[nn.Module] = []
    for module in sequential:
        order += run_order(module) if isinstance(module, nn.Sequential) else [module]
    return order


def paired_activations(model: nn.Module) -> dict[int, nn.Module]:
    """id(weight-bearing module) -> the activation module run right after it in an
    ``nn.Sequential``, only norms, dropout and identities between them (a norm there is part of
    the pre-activation, as in gradprobe's own blocks). Only Sequentials are read: elsewhere the
    registration order need not be the order of the forward pass. An activation module used at
    several places is left unpaired: its hooks could not tell the places apart."""
    pairs: dict[int, nn.Module] = {}
    for sequential in (m for m in model.modules() if isinstance(m, nn.Sequential)):
        order = run_order(sequential)
        uses = Counter(id(m) for m in order)
        weight = None
        for module in order:
            if isinstance(module, WEIGHT_BEARING):
                weight = module
            elif weight is not None and is_activation(module):
                if uses[id(module)] == 1:
                    pairs[id(weight)] = module
                weight = None
            elif not (_defined_in(module, *BETWEEN) or isinstance(module, nn.Identity)):
                weight = None  # anything else in between: not this weight's activation
    shared = Counter(id(a) for a in pairs.values())
    return {w: a for w, a in pairs.items() if shared[id(a)] == 1}


def find_layers(model: nn.Module) -> list[Layer]:
    """``model.layers()`` (or ``model.net.layers()``) when the model lists its layers; otherwise
    its Linear/Conv modules in registration order, the last one named ``output``, each with the
    activation that follows it in a Sequential (:func:`paired_activations`), whose output is
    then the layer's hidden state h. A layer without one (an activation called as a function,
    in a custom ``forward``) gets only pre-activation statistics, and h is its module's
    output."""
    for candidate in (model, getattr(model, "net", None)):
        if candidate is not None and callable(getattr(candidate, "layers", None)):
            return list(candidate.layers())
    found = [m for m in model.modules() if isinstance(m, WEIGHT_BEARING)]
    if not found:
        raise ValueError("no Linear or Conv layers found; pass layers=[...] explicitly")
    names = [layer_name(i, len(found) - 1) for i in range(1, len(found))] + ["output"]
    pairs = paired_activations(model)
    return [Layer(name, module, pairs.get(id(module)), pairs.get(id(module), module))
            for name, module in zip(names, found, strict=True)]
