"""Mean-field theory: quadrature against closed forms, fixed points, the critical line, and the
prediction against measured gradients of a wide, deep net at initialisation."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest

from gradprobe.theory import (
    MeanField,
    critical_sigma_w2,
    gaussian_expectation,
    main,
    phase,
    predict,
)


def test_quadrature_matches_closed_forms() -> None:
    assert gaussian_expectation(lambda z: z**2) == pytest.approx(1, abs=1e-13)
    assert gaussian_expectation(lambda z: z**4) == pytest.approx(3, abs=1e-12)
    assert gaussian_expectation(lambda z: np.maximum(z, 0) ** 2) == pytest.approx(0.5, abs=1e-13)
    assert gaussian_expectation(np.abs) == pytest.approx(math.sqrt(2 / math.pi), abs=1e-13)
    assert gaussian_expectation(lambda z: np.cos(z)) == pytest.approx(math.exp(-0.5), abs=1e-13)


@pytest.mark.parametrize("q", [0.1, 1.0, 7.3])
def test_relu_chi1_is_half_sigma_w2(q: float) -> None:
    for sigma_w2 in (1.0, 2.0, 3.0):
        assert MeanField("relu", sigma_w2, 0.0, {}).chi1(q) == pytest.approx(sigma_w2 / 2,
                                                                           abs=1e-13)


def test_leaky_relu_uses_its_slope() -> None:
    mf = MeanField("leaky_relu", 2.0, 0.0, {"negative_slope": 0.2})
    assert mf.chi1(1.0) == pytest.approx(2.0 * (1 + 0.2**2) / 2, abs=1e-13)


def test_selu_fixed_point_is_zero_mean_unit_variance() -> None:
    mf = MeanField("selu", 1.0, 0.0, {})
    assert gaussian_expectation(mf.phi) == pytest.approx(0.0, abs=1e-13)  # mean 0 at q = 1
    assert mf.q_next(1.0) == pytest.approx(1.0, abs=1e-13)
    assert mf.fixed_point(3.0) == pytest.approx(1.0, abs=1e-9)


def test_tanh_critical_line_at_zero_bias_is_one() -> None:
    assert critical_sigma_w2("tanh", 0.0) == pytest.approx(1.0, abs=1e-4)
    assert critical_sigma_w2("tanh", 0.05) > 1.5  # rises steeply with the bias variance
    assert phase(predict("tanh", 0.8, 0.0, 10).chi1_star) == "ordered"
    assert phase(predict("tanh", 1.5, 0.0, 10).chi1_star) == "chaotic"


def test_theory_cli_prints_the_prediction(capsys, tmp_path) -> None:
    main(["activation=tanh", "init=meanfield", "init.sigma_w2=1.5", "model.depth=50",
          "--phase-diagram", str(tmp_path / "phase.png")])
    out = capsys.readouterr().out
    assert "phase: chaotic" in out and "chi_1(q*) = 1.04" in out
    assert (tmp_path / "phase.png").read_bytes()[:4] == b"\x89PNG"


def backprop_norms(run_dir: Path) -> list[float]:
    with open(run_dir / "gradflow" / "layers.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["step"] == "0" and r["layer"] != "output"]
    return [float(r["backprop_norm"]) for r in rows]


WIDE_DEEP = ["data=synthetic", "data.source.in_features=512", "data.source.n_train=512",
             "data.batch_size=512", "model.width=512", "model.depth=40", "init=meanfield",
             "trainer.max_steps=1", "trainer.limit_val_batches=1",
             "trainer.limit_test_batches=1"]


@pytest.mark.parametrize(("activation", "sigma_w2", "sigma_b2"), [
    ("tanh", 0.8, 0.05), ("tanh", 1.5, 0.05), ("tanh", 2.5, 0.05), ("relu", 2.0, 0.0)])
def test_measured_gradient_factor_matches_chi1(run, activation, sigma_w2, sigma_b2) -> None:
    """The per-layer factor ||dL/dh_l||^2 / ||dL/dh_{l+1}||^2 of a 512-wide, 40-layer net at
    init (geometric mean over layers 5..35) is within 5 % of the predicted chi_1."""
    summary = run(*WIDE_DEEP, f"activation={activation}", f"init.sigma_w2={sigma_w2}",
                  f"init.sigma_b2={sigma_b2}")
    norms = backprop_norms(Path(summary["run_dir"]))
    chi = summary["theory"]["chi1_layers"]
    layers = range(5, 35)
    measured = math.exp(np.mean([2 * math.log(norms[k] / norms[k + 1]) for k in layers]))
    predicted = math.exp(np.mean([math.log(chi[k + 1]) for k in layers]))
    print(f"{activation} sigma_w2={sigma_w2}: measured {measured:.4f}, chi_1 {predicted:.4f}")
    assert measured == pytest.approx(predicted, rel=0.05), (measured, predicted)


def test_every_mlp_run_records_the_prediction_beside_the_measurement(run) -> None:
    summary = run("data=digits", "activation=sigmoid", "init=meanfield", "init.sigma_w2=1.0",
                  "model.depth=6", "trainer.max_steps=1", "trainer.limit_val_batches=1",
                  "trainer.limit_test_batches=1", "monitor.figures=true")
    theory = summary["theory"]
    assert theory["applies"] and theory["phase"] == "ordered"
    assert theory["implied_sigma_w2"] == pytest.approx(1.0, rel=0.05)  # what the init drew
    assert len(theory["relative_weight_gradients"]) == 6
    predicted, measured = (theory["first_last_backprop_ratio"],
                           theory["measured_first_last_backprop_ratio"])
    assert measured == pytest.approx(predicted, rel=0.5)  # width 256: finite-size scatter
    assert (Path(summary["run_dir"]) / "gradflow" / "figures" / "profile.png").exists()
    other = run("data=digits", "model=resmlp", "trainer.max_steps=1", name="resmlp")
    assert not other["theory"]["applies"] and "model=mlp" in other["theory"]["reason"]
