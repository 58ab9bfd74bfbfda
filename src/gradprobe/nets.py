"""Networks built from the config groups, each listing its layers in depth order.

That list is the one contract between architectures and instruments (the instruments define
it, :class:`gradprobe.instruments.layers.Layer`): a layer names a
block (``layer_01`` ... ``output``), its weight-bearing module, its activation module and the
block module whose output is the layer's hidden state ``h`` (so ``dL/dh`` can be hooked there).
A new architecture that lists its layers gets every instrument for free.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from torch import Tensor, nn

from gradprobe.instruments.layers import Layer, layer_name

ModuleFactory = Callable[..., nn.Module]


def dropout_layer(p: float, alpha: bool = False) -> nn.Module:
    """Standard dropout, or alpha dropout (keeps SELU's mean 0 / variance 1 fixed point)."""
    if not p:
        return nn.Identity()
    return nn.AlphaDropout(p) if alpha else nn.Dropout(p)


class Block(nn.Module):
    """Linear (or Conv1d) -> norm -> activation -> dropout."""

    def __init__(self, weight: nn.Module, norm: nn.Module, activation: nn.Module,
                 dropout: float, alpha_dropout: bool = False) -> None:
        super().__init__()
        self.weight, self.norm, self.activation = weight, norm, activation
        self.dropout = dropout_layer(dropout, alpha_dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.activation(self.norm(self.weight(x))))


class ResidualBlock(nn.Module):
    """Pre-norm residual block: ``x + dropout(activation(linear(norm(x))))``."""

    def __init__(self, weight: nn.Module, norm: nn.Module, activation: nn.Module,
                 dropout: float) -> None:
        super().__init__()
        self.norm, self.weight, self.activation = norm, weight, activation
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return x + self.dropout(self.activation(self.weight(self.norm(x))))


class ChannelsLast(nn.Module):
    """Applies a last-dimension norm (LayerNorm, RMSNorm) over the channels of (N, C, L)."""

    def __init__(self, norm: nn.Module) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


class DepthNet(nn.Module):
    """stem -> blocks -> head; ``layers()`` lists the blocks and the head in depth order."""

    def __init__(self, stem: nn.Module, blocks: list[nn.Module], head: nn.Linear,
                 head_input: nn.Module | None = None) -> None:
        super().__init__()
        self.stem, self.blocks = stem, nn.ModuleList(blocks)
        self.head_input = head_input or nn.Identity()
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(self.head_input(x))

    def layers(self) -> list[Layer]:
        hidden = [
            Layer(layer_name(i, len(self.blocks)), b.weight, b.activation, b)
            for i, b in enumerate(self.blocks, start=1)
        ]
        return [*hidden, Layer("output", self.head, None, self.head)]


class ToChannels(nn.Module):
    """(N, L) -> (N, 1, L); (N, C, L) unchanged; anything larger flattened to (N, C, -1)."""

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x.unsqueeze(1)
        return x.flatten(2)


def mlp(depth: int, width: int, dropout: float, activation: ModuleFactory,
        norm: ModuleFactory, in_shape: tuple[int, ...], out_features: int,
        alpha_dropout: bool = False) -> DepthNet:
    """``depth`` hidden blocks Linear -> norm -> activation of ``width`` units, then a Linear."""
    sizes = [math.prod(in_shape)] + [width] * depth
    blocks = [Block(nn.Linear(a, b), norm(b), activation(), dropout, alpha_dropout)
              for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
    return DepthNet(nn.Flatten(), blocks, nn.Linear(width, out_features))


def linear(activation: ModuleFactory, norm: ModuleFactory, in_shape: tuple[int, ...],
           out_features: int, **_: object) -> DepthNet:
    """No hidden layer: logistic (or linear) regression, the baseline of a depth study."""
    return DepthNet(nn.Flatten(), [], nn.Linear(math.prod(in_shape), out_features))


def resmlp(depth: int, width: int, dropout: float, activation: ModuleFactory,
           norm: ModuleFactory, in_shape: tuple[int, ...], out_features: int) -> DepthNet:
    """A plain first block (it changes the width), then ``depth - 1`` pre-norm residual blocks;
    a final norm before the output layer, as in pre-norm transformers."""
    first = Block(nn.Linear(math.prod(in_shape), width), norm(width), activation(), dropout)
    rest = [ResidualBlock(nn.Linear(width, width), norm(width), activation(), dropout)
            for _ in range(depth - 1)]
    return DepthNet(nn.Flatten(), [first, *rest], nn.Linear(width, out_features),
                    head_input=norm(width))


def cnn1d(depth: int, width: int, dropout: float, activation: ModuleFactory,
          norm: ModuleFactory, in_shape: tuple[int, ...], out_features: int,
          kernel_size: int = 5) -> DepthNet:
    """``depth`` same-padded Conv1d blocks of ``width`` channels, then flatten -> Linear.
    Norms are over channels (BatchNorm1d directly, LayerNorm/RMSNorm channels-last)."""
    in_channels = in_shape[0] if len(in_shape) > 1 else 1
    length = math.prod(in_shape) // in_channels

    def channel_norm() -> nn.Module:
        n = norm(width)
        return n if isinstance(n, (nn.BatchNorm1d, nn.Identity)) else ChannelsLast(n)

    channels = [in_channels] + [width] * depth
    blocks = [Block(nn.Conv1d(a, b, kernel_size, padding=kernel_size // 2), channel_norm(),
                    activation(), dropout)
              for a, b in zip(channels[:-1], channels[1:], strict=True)]
    return DepthNet(ToChannels(), blocks, nn.Linear(width * length, out_features),
                    head_input=nn.Flatten())
