"""The depth-ordered layer contract, the builders, and the initialisation schemes' numbers."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from conftest import compose_config
from gradprobe.build import build_network
from gradprobe.nets import ChannelsLast, ResidualBlock, cnn1d, mlp, resmlp

ARGS = {"dropout": 0.0, "activation": nn.Tanh, "norm": nn.LayerNorm, "out_features": 3}


@pytest.mark.parametrize(("builder", "in_shape"), [(mlp, (7,)), (resmlp, (7,)),
                                                   (cnn1d, (1, 12))])
def test_layers_are_listed_in_forward_order(builder, in_shape) -> None:
    net = builder(depth=4, width=6, in_shape=in_shape, **ARGS)
    layers = net.layers()
    assert [layer.name for layer in layers] == ["layer_01", "layer_02", "layer_03", "layer_04",
                                                "output"]
    seen: list[nn.Module] = []
    hooks = [layer.weight.register_forward_hook(lambda m, i, o: seen.append(m))
             for layer in layers]
    out = net(torch.randn(2, *in_shape))
    for h in hooks:
        h.remove()
    assert out.shape == (2, 3)
    assert seen == [layer.weight for layer in layers]  # weight modules in the order data meets them
    assert all(isinstance(layer.activation, nn.Tanh) for layer in layers[:-1])
    assert layers[-1].activation is None


def test_layer_names_pad_to_depth() -> None:
    names = [layer.name for layer in mlp(depth=100, width=2, in_shape=(3,), **ARGS).layers()]
    assert names[0] == "layer_001" and names[99] == "layer_100" and names == sorted(names)


def test_residual_block_adds_its_input() -> None:
    block = ResidualBlock(nn.Linear(4, 4), nn.Identity(), nn.Identity(), 0.0)
    nn.init.zeros_(block.weight.weight)
    nn.init.zeros_(block.weight.bias)
    x = torch.randn(3, 4)
    assert torch.equal(block(x), x)


def test_cnn_norms_are_over_channels() -> None:
    net = cnn1d(depth=2, width=5, in_shape=(40,), **ARGS)
    assert isinstance(net.blocks[0].norm, ChannelsLast)
    assert net.blocks[0].norm.norm.normalized_shape == (5,)
    bn = cnn1d(depth=2, width=5, in_shape=(40,), **(ARGS | {"norm": nn.BatchNorm1d}))
    assert isinstance(bn.blocks[0].norm, nn.BatchNorm1d)


def _net(*overrides: str):
    cfg, _ = compose_config(["model.depth=3", "model.width=400", *overrides])
    return build_network(cfg, (300,), 10)


@pytest.mark.parametrize(("init", "expected_std"), [
    ("normal", lambda fan_in, fan_out: 1.0),
    ("xavier_normal", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    ("xavier_uniform", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    ("kaiming_normal", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ("kaiming_uniform", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ("lecun_normal", lambda fan_in, fan_out: math.sqrt(1 / fan_in)),
    ("orthogonal", lambda fan_in, fan_out: math.sqrt(1 / max(fan_in, fan_out))),
    ("meanfield", lambda fan_in, fan_out: math.sqrt(1 / fan_in)),  # sigma_w2 = 1
    ("default", lambda fan_in, fan_out: math.sqrt(1 / (3 * fan_in))),
])
def test_init_schemes_draw_the_documented_variance(init: str, expected_std) -> None:
    torch.manual_seed(0)
    net = _net(f"init={init}")
    for layer in net.layers():
        w = layer.weight.weight.detach()
        fan_out, fan_in = w.shape
        assert float(w.std()) == pytest.approx(expected_std(fan_in, fan_out), rel=0.05), layer.name
        if init != "default":
            assert bool((layer.weight.bias == 0).all())


def test_bias_init_constant_and_function() -> None:
    net = _net("init=normal", "init.bias=0.5")
    assert all(bool((layer.weight.bias == 0.5).all()) for layer in net.layers())
    torch.manual_seed(0)
    net = _net("experiment=seed_example", "model.width=400", "model.depth=3")
    biases = torch.cat([layer.weight.bias.detach() for layer in net.layers()])
    assert float(biases.std()) == pytest.approx(1.0, rel=0.15)
