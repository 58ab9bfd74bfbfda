"""Every statistic GradientFlow records, checked against a brute-force recomputation.

A capture callback keeps each micro-batch and the weights before it; the test then replays every
sampled optimizer step on a copy of the network with plain autograd and Python arithmetic, and
compares with what the instrument wrote to ``layers.csv`` / ``steps.csv`` / ``histograms.npz``
and logged through Lightning's CSV logger.
"""

from __future__ import annotations

import copy
import csv
import itertools
import json
import logging
import math
import statistics
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import CSVLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import gradprobe
from gradprobe.instruments.stats import ACT_BINS, GRAD_BINS
from gradprobe.nets import mlp

MARGIN = 0.05


class Classifier(pl.LightningModule):
    """A LightningModule as a user would write it: any network, SGD with momentum."""

    def __init__(self, net: nn.Module, lr: float = 0.1) -> None:
        super().__init__()
        self.net, self.lr = net, lr

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class Capture(pl.Callback):
    """Keeps every micro-batch with the step it belongs to and the weights before it."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, dict, tuple]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        state = copy.deepcopy(pl_module.net.state_dict())
        self.seen.append((trainer.global_step, state, batch))


def gradprobe_net(activation: type[nn.Module]) -> nn.Module:
    torch.manual_seed(0)
    net = mlp(depth=3, width=6, dropout=0.0, activation=activation, norm=nn.Identity,
              in_shape=(4,), out_features=3)
    with torch.no_grad():
        if activation is nn.Tanh:  # large weights and biases: some tanh units saturate
            net.blocks[1].weight.weight.mul_(6.0)
            net.blocks[1].weight.bias[:2] = 10.0
        else:  # strongly negative biases: some ReLU units are dead
            net.blocks[1].weight.bias[:3] = -20.0
    return net


def foreign_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))


def foreign_sigmoid_net() -> nn.Module:
    """A user's Sequential: sigmoids, a nested block with a LayerNorm before its activation and
    dropout after it; large biases pin some first-layer units near 1 (saturated)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.Sigmoid(),
                        nn.Sequential(nn.Linear(6, 6), nn.LayerNorm(6), nn.Sigmoid(),
                                      nn.Dropout(0.0)),
                        nn.Linear(6, 3))
    with torch.no_grad():
        net[0].bias[:2] = 10.0
    return net


def train(net: nn.Module, tmp_path: Path, accumulate: int, clip: float | None,
          batch: int = 8):
    torch.manual_seed(1)
    x, y = torch.randn(6 * batch, 4) * 2, torch.randint(0, 3, (6 * batch,))
    loader = DataLoader(TensorDataset(x, y), batch_size=batch)
    flow = gradprobe.GradientFlow(every_n_steps=2, histogram_every_n_steps=4,
                                  flush_every_n_samples=2, saturation_margin=MARGIN,
                                  out_dir=tmp_path / "gradflow")
    capture = Capture()
    module = Classifier(net)
    trainer = pl.Trainer(max_steps=6, accumulate_grad_batches=accumulate,
                         gradient_clip_val=clip, logger=CSVLogger(tmp_path, name="", version=""),
                         callbacks=[flow, capture], enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=tmp_path, deterministic=True)
    trainer.fit(module, loader)
    return flow, capture, module


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def norm(t: torch.Tensor) -> float:
    return math.sqrt(sum(v * v for v in t.flatten().tolist()))


def positions(net: nn.Module, layers) -> list[tuple[str, int, int | None, int]]:
    """Each layer as (name, weight, activation, block) positions in ``net.modules()``, so the
    same modules can be found in a copy of the network."""
    modules = list(net.modules())
    find = modules.index
    return [(lay.name, find(lay.weight), None if lay.activation is None else find(lay.activation),
             find(lay.block)) for lay in layers]


def brute_force_step(net: nn.Module, layers: list, micro_batches: list, before: dict,
                     after: dict, accumulate: int, clip: float | None) -> dict:
    """Replay one optimizer step by hand on a copy of ``net`` with the weights ``before`` it."""
    replay = copy.deepcopy(net)
    replay.load_state_dict(before)
    modules = list(replay.modules())
    first: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for k, (x, y) in enumerate(micro_batches):
        seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

        def keep(j, module, inputs, output, seen=seen):
            seen[j] = (inputs[0], output)
        hooks = [m.register_forward_hook(partial(keep, j)) for j, m in enumerate(modules)]
        loss = nn.functional.cross_entropy(replay(x), y) / accumulate
        for h in hooks:
            h.remove()
        if k == 0:
            first = seen
            for _, out in first.values():
                if out.requires_grad:
                    out.retain_grad()
        loss.backward()
    total = math.sqrt(sum(norm(p.grad) ** 2 for p in replay.parameters()))
    clipped = total if clip is None or total <= clip else total * clip / (total + 1e-6)
    names = {m: n for n, m in replay.named_modules()}
    expected = {"global_preclip": total, "global": clipped, "layers": {}}
    for name, w_pos, act_pos, block_pos in layers:
        weight = modules[w_pos]
        g, w0 = weight.weight.grad, before[names[weight] + ".weight"]
        w1 = after[names[weight] + ".weight"]
        expected["layers"][name] = {
            "grad_norm": norm(g), "weight_norm": norm(w0), "grad_ratio": norm(g) / norm(w0),
            "grad_mean_abs": sum(abs(v) for v in g.flatten().tolist()) / g.numel(),
            "update_ratio": norm(w1 - w0) / norm(w0),
            "grad_values": g.flatten().numpy(),
            # the back-propagated gradient at the block output, first micro-batch, unscaled
            "backprop_norm": norm(first[block_pos][1].grad) * accumulate,
            "pre": first[act_pos][0] if act_pos is not None else first[w_pos][1],
            "out": first[act_pos][1] if act_pos is not None else None,
        }
    return expected


def activation_expectations(out: torch.Tensor, bounds: tuple[float, float] | None,
                            dies: bool) -> dict[str, float]:
    """Dead units only for ReLU, on a probe of at least 32 examples (else not reported);
    saturated units only for a bounded activation (its output range ``bounds``)."""
    values = out.detach().flatten().tolist()
    units = out.detach().T.tolist()
    exp = {"act_mean": statistics.fmean(values), "act_std": statistics.stdev(values),
           "act_zero_frac": sum(v == 0 for v in values) / len(values),
           "act_neg_frac": sum(v < 0 for v in values) / len(values)}
    if dies and len(out) >= 32:
        exp["act_dead_frac"] = sum(all(v <= 0 for v in u) for u in units) / len(units)
    if bounds:
        low, high = bounds
        exp["act_saturated_frac"] = sum(
            all(v - low < MARGIN or high - v < MARGIN for v in u) for u in units) / len(units)
    return exp


def mean_pairwise_cosine(pre: torch.Tensor) -> float:
    """Over every pair of examples, the cosine of their (flattened) pre-activation vectors."""
    vectors = [v.flatten() for v in pre.detach().double()]
    pairs = itertools.combinations(vectors, 2)
    return statistics.fmean(float(a @ b / (a.norm() * b.norm())) for a, b in pairs)


SCENARIOS = [
    pytest.param("tanh", 1, None, 8, id="tanh-saturating"),
    pytest.param("relu", 2, 0.05, 32, id="relu-dead-accumulate2-clipped"),
    pytest.param("relu", 1, None, 16, id="relu-probe-too-small-for-dead"),
    pytest.param("foreign", 3, None, 8, id="plain-sequential-accumulate3"),
    pytest.param("foreign-sigmoid", 1, None, 8, id="plain-sequential-sigmoid-nested-norm"),
]
BOUNDS = {"tanh": (-1.0, 1.0), "foreign-sigmoid": (0.0, 1.0)}
ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "foreign": nn.ReLU,
               "foreign-sigmoid": nn.Sigmoid}


@pytest.mark.parametrize(("kind", "accumulate", "clip", "batch"), SCENARIOS)
def test_every_statistic_matches_brute_force(tmp_path, kind, accumulate, clip, batch) -> None:
    net = {"tanh": lambda: gradprobe_net(nn.Tanh), "relu": lambda: gradprobe_net(nn.ReLU),
           "foreign": foreign_net, "foreign-sigmoid": foreign_sigmoid_net}[kind]()
    initial = copy.deepcopy(net)
    flow, capture, module = train(net, tmp_path, accumulate, clip, batch)
    layers = flow.layers
    assert [lay.name for lay in layers][-1] == "output"
    # every hidden layer has its activation: a user's Sequential as well as gradprobe's nets
    assert all(isinstance(lay.activation, ACTIVATIONS[kind]) for lay in layers[:-1])
    layer_positions = positions(net, layers)
    rows = read_csv(tmp_path / "gradflow" / "layers.csv")
    step_rows = {int(r["step"]): r for r in read_csv(tmp_path / "gradflow" / "steps.csv")}
    assert sorted(step_rows) == [0, 2, 4, 5]  # every 2nd step, and the last one (histograms)
    logged = read_csv(tmp_path / "metrics.csv")
    hist = np.load(tmp_path / "gradflow" / "histograms.npz")
    assert hist["steps"].tolist() == [0, 4, 5]
    n_checked = 0
    for step in sorted(step_rows):
        micro = [b for s, _, b in capture.seen if s == step]
        assert len(micro) == accumulate
        before = next(st for s, st, _ in capture.seen if s == step)
        later = [st for s, st, _ in capture.seen if s == step + 1]
        after = later[0] if later else module.net.state_dict()
        expected = brute_force_step(initial, layer_positions, micro, before, after,
                                    accumulate, clip)
        srow = step_rows[step]
        assert float(srow["grad_global_norm_preclip"]) == pytest.approx(
            expected["global_preclip"], rel=1e-5)
        assert float(srow["grad_global_norm"]) == pytest.approx(expected["global"], rel=1e-4)
        hidden = [lay.name for lay in layers][:-1]
        assert float(srow["grad_first_last_ratio"]) == pytest.approx(
            expected["layers"][hidden[0]]["grad_norm"]
            / expected["layers"][hidden[-1]]["grad_norm"], rel=1e-5)
        log_row = next(r for r in logged if r["step"] == str(step) and r.get("grad/norm/output"))
        for j, lay in enumerate(layers):
            row = next(r for r in rows if r["step"] == str(step) and r["layer"] == lay.name)
            assert int(row["depth"]) == j + 1
            exp = expected["layers"][lay.name]
            for stat in ("grad_norm", "weight_norm", "grad_ratio", "grad_mean_abs",
                         "update_ratio", "backprop_norm"):
                assert float(row[stat]) == pytest.approx(exp[stat], rel=1e-4), (step, lay, stat)
            assert float(log_row["grad/norm/" + lay.name]) == pytest.approx(exp["grad_norm"],
                                                                             rel=1e-5)
            if exp["out"] is not None:
                expect = activation_expectations(exp["out"], BOUNDS.get(kind),
                                                 dies=ACTIVATIONS[kind] is nn.ReLU)
                for stat, value in expect.items():
                    assert float(row[stat]) == pytest.approx(value, rel=1e-4, abs=1e-7), stat
                if kind not in BOUNDS:
                    assert row["act_saturated_frac"] == ""  # unbounded: not applicable
                if "act_dead_frac" not in expect:  # not ReLU, or too few examples
                    assert row["act_dead_frac"] == ""
            else:
                assert row["act_mean"] == "" and row["act_dead_frac"] == ""
            values = exp["pre"].detach().flatten().tolist()
            assert float(row["pre_mean"]) == pytest.approx(statistics.fmean(values), rel=1e-4,
                                                           abs=1e-7)
            assert float(row["pre_std"]) == pytest.approx(statistics.stdev(values), rel=1e-4)
            assert float(row["pre_cosine"]) == pytest.approx(mean_pairwise_cosine(exp["pre"]),
                                                             abs=1e-5)
            if step in hist["steps"].tolist():
                k = hist["steps"].tolist().index(step)
                with np.errstate(divide="ignore"):  # exact zeros: log10 -> -inf, first bin
                    logs = np.log10(np.abs(exp["grad_values"]))
                want, _ = np.histogram(np.clip(logs, GRAD_BINS.low, GRAD_BINS.high),
                                       bins=hist["grad_edges"])
                assert hist["grad_counts"][k, j].tolist() == want.tolist()
                if exp["out"] is not None:
                    acts = exp["out"].detach().numpy().flatten()
                    want, _ = np.histogram(np.clip(acts, ACT_BINS.low, ACT_BINS.high),
                                           bins=hist["act_edges"])
                    assert hist["act_counts"][k, j].tolist() == want.tolist()
            n_checked += 1
    assert n_checked == 4 * len(layers)
    if kind in BOUNDS:
        assert any(float(r["act_saturated_frac"] or 0) > 0 for r in rows)
    if kind == "relu" and batch >= 32:
        assert any(float(r["act_dead_frac"] or 0) > 0 for r in rows)


def test_jacobian_singular_values_match_the_analytic_jacobian() -> None:
    from gradprobe.instruments.jacobian import block_inputs, mean_singular_values

    net = gradprobe_net(nn.Tanh)
    x = torch.randn(5, 4)
    layers = net.layers()
    inputs = block_inputs(layers, net, x)
    measured = mean_singular_values(layers, inputs)
    assert set(measured) == {"layer_02", "layer_03"}
    for j, name in ((1, "layer_02"), (2, "layer_03")):
        w = layers[j].weight.weight.detach().numpy().astype(np.float64)
        b = layers[j].weight.bias.detach().numpy().astype(np.float64)
        svs = []
        for h in inputs[j].detach().numpy().astype(np.float64):
            z = w @ h + b
            svs += list(np.linalg.svd(np.diag(1 - np.tanh(z) ** 2) @ w, compute_uv=False))
        assert measured[name] == pytest.approx(float(np.mean(svs)), rel=1e-4)


def test_histogram_bins_keep_infinities_and_drop_nans() -> None:
    """A diverging run reaches a histogram step with NaN and Inf values: ends bins take the
    infinities (and everything out of range), NaNs are not counted, nothing raises."""
    import numpy as np

    from gradprobe.instruments.stats import Bins

    bins = Bins(-4.0, 4.0, 64)
    values = torch.tensor([float("nan"), float("inf"), float("-inf"), -9.0, 0.01, 3.99, 9.0])
    counts = bins.counts(values)
    finite = values[torch.isfinite(values)].clamp(-4.0, 3.999).numpy()
    expected, _ = np.histogram(finite, bins=bins.edges.numpy())
    expected[0] += 1  # -inf
    expected[-1] += 1  # +inf
    assert counts.tolist() == expected.tolist() and int(counts.sum()) == 6
    both = bins.counts_per_tensor([values, values[4:]])
    assert both.shape == (2, 64) and both[0].tolist() == counts.tolist()
    assert both[1].tolist() == bins.counts(values[4:]).tolist()


def test_pairwise_cosine_matches_every_pair_by_brute_force() -> None:
    """(groups, examples, channels, length) like a conv layer; an all-zero example counts as
    orthogonal to every other; one example has no pairs (NaN)."""
    from gradprobe.instruments.stats import pairwise_cosine

    torch.manual_seed(0)
    x = torch.randn(3, 7, 4, 5) + torch.tensor([0.0, 1.0, 5.0])[:, None, None, None]
    x[1, 2] = 0.0
    measured = pairwise_cosine(x)
    for g in range(3):
        vectors = [v.flatten().double() for v in x[g]]
        pairs = [float(a @ b / (a.norm() * b.norm())) if a.norm() * b.norm() > 0 else 0.0
                 for a, b in itertools.combinations(vectors, 2)]
        assert float(measured[g]) == pytest.approx(statistics.fmean(pairs), abs=1e-6)
    assert float(measured[2]) > 0.9  # a large common offset: the examples alike
    assert math.isnan(float(pairwise_cosine(x[:, :1])[0]))


def test_on_a_foreign_model_it_writes_files_the_figures_are_drawn_from(tmp_path) -> None:
    """The callback alone (no app): records and a verdict, with remedies in general words at
    most (the app's are its overrides, passed in as ``advise``); the figures come from the
    files afterwards, activation distributions included (the ReLUs are found)."""
    from gradprobe.figures import draw_all

    flow, _, _ = train(foreign_net(), tmp_path, accumulate=1, clip=None)
    report = json.loads((tmp_path / "gradflow" / "diagnosis.json").read_text())
    assert report["final"]["verdicts"]
    assert all("=" not in r["overrides"].split("(")[0] for r in report["final"]["remedies"])
    assert not (tmp_path / "gradflow" / "figures").exists()
    paths = draw_all(tmp_path)
    assert paths and all(p.stat().st_size > 0 for p in paths)
    assert "activations.png" in {p.name for p in paths}


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_a_plain_sigmoid_sequential_gets_its_saturation_verdict_said_through_lightning(
        tmp_path, caplog) -> None:
    """The documented use: ``GradientFlow()`` with its defaults on a LightningModule around a
    plain ``nn.Sequential`` of sigmoids whose N(0, 100) biases pin most units to a bound
    (N(0, 1) weights): the activations are found, the
    saturated units measured, the verdict given with general remedies and said where
    Lightning's own messages go (no logging set up for ``gradprobe``), and the activation
    figure drawn."""
    from gradprobe.figures import draw_all
    from gradprobe.instruments.gradient_flow import GradientFlow

    caplog.set_level(logging.WARNING, logger="gradprobe")  # as in a script: nobody shows INFO
    caplog.set_level(logging.INFO, logger="pytorch_lightning")  # Lightning's own default
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(16, 32), nn.Sigmoid(), nn.Linear(32, 32), nn.Sigmoid(),
                        nn.Linear(32, 32), nn.Sigmoid(), nn.Linear(32, 3))
    for module in net:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=1.0)
            nn.init.normal_(module.bias, std=10.0)
    x, y = torch.randn(64, 16), torch.randint(0, 3, (64,))
    flow = GradientFlow()
    said = Collect()
    lightning = logging.getLogger("pytorch_lightning")
    lightning.addHandler(said)
    try:
        trainer = pl.Trainer(max_steps=3, logger=False, callbacks=[flow],
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, default_root_dir=tmp_path)
        trainer.fit(Classifier(net), DataLoader(TensorDataset(x, y), batch_size=32))
    finally:
        lightning.removeHandler(said)
    assert [type(lay.activation) for lay in flow.layers] == [nn.Sigmoid] * 3 + [type(None)]
    rows = read_csv(tmp_path / "gradflow" / "layers.csv")
    hidden = [r for r in rows if r["step"] == "0" and r["layer"] != "output"]
    assert all(r["act_mean"] and r["act_saturated_frac"] for r in hidden)
    init = flow.report["init"]
    assert "saturated" in init["verdicts"], init["text"]
    assert any("ReLU" in r["overrides"] for r in init["remedies"]), init["remedies"]
    assert f"init probe: {init['text']}" in said.lines, said.lines
    assert f"diagnosis: {flow.report['final']['text']}" in said.lines
    assert "activations.png" in {p.name for p in draw_all(tmp_path)}


def test_under_an_app_that_shows_info_the_verdict_goes_to_the_gradprobe_log(tmp_path,
                                                                             caplog) -> None:
    caplog.set_level(logging.INFO, logger="gradprobe")
    flow, _, _ = train(foreign_net(), tmp_path, accumulate=1, clip=None)
    said = [r.getMessage() for r in caplog.records if r.name == "gradprobe"]
    assert f"diagnosis: {flow.report['final']['text']}" in said


def test_the_callbacks_defaults_are_the_apps() -> None:
    """One value each: ``GradientFlow()`` samples like ``python train.py`` does."""
    import inspect

    from omegaconf import OmegaConf

    from gradprobe.config import CONF_DIR
    from gradprobe.instruments.diagnosis import THRESHOLDS
    from gradprobe.instruments.gradient_flow import GradientFlow

    app = OmegaConf.load(CONF_DIR / "gradflow" / "default.yaml")
    defaults = {k: v.default for k, v in inspect.signature(GradientFlow).parameters.items()}
    for key in ("every_n_steps", "histogram_every_n_steps", "flush_every_n_samples",
                "saturation_margin"):
        assert defaults[key] == app[key], key
    assert dict(app.thresholds) == THRESHOLDS
    # what W&B receives; profile_charts is the app's (posted after the fit, gradprobe.publish)
    assert {k: v for k, v in app.wandb.items() if k != "profile_charts"} == GradientFlow().wandb


def test_discovery_pairs_each_weight_with_the_activation_after_it() -> None:
    """Norms and dropout between a weight and its activation are passed over; nested
    Sequentials are read in order; an activation module used twice, one called in a custom
    forward, and softmax are not paired."""
    from gradprobe.instruments.layers import find_layers, is_activation

    shared = nn.Tanh()

    class Custom(nn.Module):  # its activation is a function call: nothing to pair
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.relu(self.fc(x))

    net = nn.Sequential(
        nn.Conv1d(1, 4, 3), nn.BatchNorm1d(4), nn.Dropout(0.1), nn.GELU(), nn.Flatten(),
        nn.Sequential(nn.Linear(8, 4), nn.Sequential(nn.LayerNorm(4), nn.LeakyReLU())),
        nn.Linear(4, 4), shared, nn.Linear(4, 4), shared, Custom(),
        nn.Linear(4, 4), nn.Hardtanh(), nn.Linear(4, 3), nn.Softmax(dim=1))
    layers = find_layers(net)
    kinds = [None if lay.activation is None else type(lay.activation) for lay in layers]
    assert kinds == [nn.GELU, nn.LeakyReLU, None, None, None, nn.Hardtanh, None]
    assert all(lay.block is (lay.activation or lay.weight) for lay in layers)
    assert all(is_activation(m()) for m in (nn.Sigmoid, nn.Tanh, nn.ReLU, nn.SiLU, nn.ELU,
                                            nn.SELU, nn.Softplus, nn.Softsign, nn.Mish,
                                            nn.PReLU, nn.Hardtanh, nn.ReLU6, nn.CELU))
    assert not any(is_activation(m) for m in (nn.Softmax(dim=1), nn.LayerNorm(3), nn.Linear(2, 2),
                                              nn.MultiheadAttention(4, 1)))
