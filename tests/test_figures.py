"""Figures drawn from a fabricated ``gradflow/`` folder: parsing, and every figure's edge cases."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from gradprobe.figures import draw_all, heatmap, load_gradflow, profile

COLUMNS = ["step", "layer", "depth", "grad_norm", "weight_norm", "grad_ratio", "grad_mean_abs",
           "backprop_norm", "update_ratio", "act_mean", "act_std", "act_zero_frac",
           "act_neg_frac", "act_dead_frac", "act_saturated_frac", "pre_mean", "pre_std",
           "pre_cosine"]
FIGURES = ["heatmap.png", "profile.png", "similarity.png", "activations.png",
           "dead_saturated.png"]


def grad_norm(step: int, depth: int, n_layers: int) -> float:
    """Ten times smaller per layer towards the input, growing a little during training."""
    return 10.0 ** (depth - n_layers) * (1 + step / 100)


def fabricate(run_dir: Path, steps: tuple[int, ...] = tuple(range(0, 120, 10)), n_hidden: int = 5,
              bounded: bool = True, histograms: bool = True) -> Path:
    """A run dir as the recorder leaves it: rows shuffled, empty cells, nan/inf, a zero norm."""
    rng = np.random.default_rng(0)
    width = 3 if n_hidden >= 100 else 2
    layers = [f"layer_{i:0{width}d}" for i in range(1, n_hidden + 1)] + ["output"]
    n = len(layers)
    folder = run_dir / "gradflow"
    folder.mkdir(parents=True)
    rows = []
    for s in steps:
        for d, name in enumerate(layers, start=1):
            hidden, t = name != "output", s / max(steps[-1], 1)
            act = {"act_mean": 0.01 * d, "act_std": 0.8 / d, "act_zero_frac": 0.0,
                   "act_neg_frac": 0.5, "act_dead_frac": 0.02 * d * t,
                   "act_saturated_frac": 0.1 * d * t if bounded else ""}
            rows.append({"step": s, "layer": name, "depth": d, "grad_norm": grad_norm(s, d, n),
                         "weight_norm": 3.0, "grad_ratio": grad_norm(s, d, n) / 3.0,
                         "grad_mean_abs": 1e-3, "backprop_norm": 0.5 ** (n - d),
                         "update_ratio": "" if s == 0 else 1e-3, "pre_mean": 0.0,
                         "pre_std": 1.0, "pre_cosine": 1 - 0.8**d,
                         **{k: v if hidden else "" for k, v in act.items()}})
    rows[1]["grad_ratio"], rows[2]["grad_ratio"] = "inf", "nan"
    if len(steps) > 1:
        rows[-n]["grad_norm"] = 0.0  # layer_01 at the last step: masked, never log10(0)
    rng.shuffle(rows)
    with open(folder / "layers.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    with open(folder / "steps.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "grad_global_norm_preclip", "grad_global_norm",
                         "grad_first_last_ratio"])
        writer.writerows([s, 2.0 + s, 1.0 + s, 10.0 ** (1 - n)] for s in steps)
    if histograms:
        grad_edges, act_edges = np.linspace(-12, 1, 27), np.linspace(-1, 1, 41)
        grad_counts = np.zeros((len(steps), n, 26), dtype=np.int64)
        act_counts = np.zeros((len(steps), n, 40), dtype=np.int64)
        for i, s in enumerate(steps):
            for j in range(n):
                g = rng.normal(math.log10(grad_norm(s, j + 1, n)) - 2, 0.5, 500)
                grad_counts[i, j] = np.histogram(g, grad_edges)[0]
                if j < n - 1:  # tanh of a pre-activation that shrinks with depth, widens later
                    a = np.tanh(rng.normal(0, (1 + 2 * s / 100) / (j + 1), 500))
                    act_counts[i, j] = np.histogram(a, act_edges)[0]
        np.savez(folder / "histograms.npz", steps=np.array(steps), layers=np.array(layers),
                 grad_edges=grad_edges, grad_counts=grad_counts, act_edges=act_edges,
                 act_counts=act_counts)
    return run_dir


def assert_pngs(paths: list[Path], names: list[str]) -> None:
    assert [p.name for p in paths] == names
    for p in paths:
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 10_000, p


def test_load_parses_shapes_order_and_missing_cells(tmp_path: Path) -> None:
    record = load_gradflow(fabricate(tmp_path))
    assert record.layers == ["layer_01", "layer_02", "layer_03", "layer_04", "layer_05", "output"]
    assert record.steps.tolist() == list(range(0, 120, 10))
    assert set(record.stats) == set(COLUMNS[3:])
    grad = record.stats["grad_norm"]
    assert grad.shape == (12, 6)
    assert grad[3, 1] == pytest.approx(grad_norm(30, 2, 6))
    assert grad[0, 5] == pytest.approx(1.0) and grad[-1, 0] == 0.0
    assert np.isnan(record.stats["act_mean"][:, 5]).all()  # output: empty cells
    assert np.isfinite(record.stats["act_mean"][:, :5]).all()
    assert np.isnan(record.stats["update_ratio"][0]).all()
    assert np.isfinite(record.stats["update_ratio"][1:]).all()
    ratio = record.stats["grad_ratio"]
    assert np.isinf(ratio).sum() == 1 and np.isnan(ratio).sum() == 1
    assert record.hidden() == [0, 1, 2, 3, 4]
    assert record.step_stats["grad_global_norm"][2] == 21.0
    assert record.hist is not None and record.hist.act_counts.shape == (12, 6, 40)
    assert record.hist.layers == record.layers


def test_draw_all_writes_every_figure(tmp_path: Path) -> None:
    paths = draw_all(fabricate(tmp_path))
    assert_pngs(paths, FIGURES)
    assert all(p.parent == tmp_path / "gradflow" / "figures" for p in paths)


def test_one_sampled_step_still_draws(tmp_path: Path) -> None:
    assert_pngs(draw_all(fabricate(tmp_path, steps=(0,))), FIGURES)


def test_missing_histograms_skip_only_activations(tmp_path: Path) -> None:
    paths = draw_all(fabricate(tmp_path, histograms=False, bounded=False))
    assert_pngs(paths, ["heatmap.png", "profile.png", "similarity.png", "dead_saturated.png"])


def test_a_run_recorded_before_pre_cosine_still_draws(tmp_path: Path) -> None:
    run_dir = fabricate(tmp_path)
    table = run_dir / "gradflow" / "layers.csv"
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, COLUMNS[:-1], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    assert_pngs(draw_all(run_dir), FIGURES)


def test_profile_with_prediction(tmp_path: Path) -> None:
    record = load_gradflow(fabricate(tmp_path))
    norms = {name: 10.0 ** (d - 6) for d, name in enumerate(record.layers, start=1)}
    predicted = {"grad_norm": norms, "backprop_norm": norms}
    out = profile(record, tmp_path / "p.png", " (tanh, depth 5)", predicted=predicted)
    assert_pngs([out], ["p.png"])


def test_deep_network_thins_layer_labels(tmp_path: Path) -> None:
    record = load_gradflow(fabricate(tmp_path, steps=(0, 50), n_hidden=120, histograms=False))
    assert record.layers[0] == "layer_001" and record.layers[-2] == "layer_120"
    assert_pngs([heatmap(record, tmp_path / "h.png"), profile(record, tmp_path / "p.png")],
                ["h.png", "p.png"])
