"""Mean-field theory: quadrature against closed forms, fixed points, the critical line, and the
prediction against measured gradients of a wide, deep net at initialisation."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gradprobe.instruments.stats import pairwise_cosine
from gradprobe.theory import (
    MeanField,
    correlation_depth_scale,
    critical_sigma_w2,
    gaussian_expectation,
    gaussian_expectation_2d,
    phase,
    predict,
    trainable_depth,
)
from gradprobe.theory.__main__ import main


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


@pytest.mark.parametrize(("args", "expected"), [
    (["activation=swish"], ["activation=swish", "allowed:", "tanh", "sigmoid"]),
    (["experiment=nope"], ["experiment=nope", "he2015_depth30"]),
    (["model.detph=3"], ["model.detph=3", "not a key"]),
    (["foo=bar"], ["foo=bar", "not a key"]),
    (["model.depth=3=4"], ["'model.depth=3=4'", "key=value"]),
    (["activation"], ["'activation'", "key=value"]),
    (["model.depth=abc"], ["model.depth='abc'", "integer >= 1"]),
    (["init=meanfield", "init.sigma_w2=-1"], ["init.sigma_w2=-1", "number > 0"]),
    (["model=resmlp"], ["model=resmlp", "model=mlp"]),
    (["norm=batch"], ["norm=batch", "norm=none"]),
    (["norm=layer"], ["norm=layer", "norm=none"]),
    (["--q-input", "abc"], ["--q-input", "'abc'"]),
    (["--q-input", "nan"], ["--q-input=nan", "number > 0"]),
    (["--q-input", "-1"], ["--q-input=-1", "number > 0"]),
    (["--c-input", "2"], ["--c-input=2", "[-1, 1]"]),
    (["--bogus"], ["--bogus", "--help"]),
    (["--phase-diagram", "/nonexistent/phase.png"], ["--phase-diagram", "writable"]),
])
def test_theory_cli_refuses_in_one_line(capsys, args, expected) -> None:
    """Every value the command cannot use: one line on stderr naming it, exit 2, no output."""
    with pytest.raises(SystemExit) as end:
        main(args)
    out, err = capsys.readouterr()
    assert end.value.code == 2 and out == ""
    assert err.count("\n") == 1 and all(word in err for word in expected), err


def test_theory_cli_refuses_without_importing_torch() -> None:
    """A config the theory does not cover (norm=batch used to build a network first, ~20 s)
    and an unknown option are refused before torch is imported."""
    code = ("import sys\nfrom gradprobe.theory.__main__ import main\n"
            "for args in (['norm=batch'], ['activation=swish'], ['model=cnn1d']):\n"
            "    try:\n        main(args)\n    except SystemExit as end:\n"
            "        assert end.code == 2, end.code\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert len(done.stderr.splitlines()) == 3, done.stderr


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
                  "trainer.limit_test_batches=1", "gradflow.figures=true")
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


# --------------------------------------------------------------------------- the correlation map

CS = np.array([-1.0, -0.7, -0.2, 0.0, 0.3, 0.8, 0.99, 0.9999, 1.0])


@pytest.mark.parametrize(("sigma_w2", "sigma_b2"), [(2.0, 0.0), (1.3, 0.2)])
@pytest.mark.parametrize("q", [0.3, 1.0, 5.0])
def test_relu_correlation_map_is_the_arc_cosine_kernel(sigma_w2, sigma_b2, q) -> None:
    mf = MeanField("relu", sigma_w2, sigma_b2, {})
    kernel = (np.sqrt(1 - CS**2) + (math.pi - np.arccos(CS)) * CS) / (2 * math.pi)
    exact = (sigma_w2 * q * kernel + sigma_b2) / (sigma_w2 * q / 2 + sigma_b2)
    np.testing.assert_allclose(mf.c_next(CS, q), exact, rtol=0, atol=1e-13)
    slope = sigma_w2 * (math.pi - np.arccos(CS)) / (2 * math.pi)
    np.testing.assert_allclose(mf.chi_c(CS, q), slope, rtol=0, atol=1e-13)


@pytest.mark.parametrize("q", [0.1, 1.0, 10.0, 100.0])
def test_2d_quadrature_matches_the_erf_arcsin_kernel(q) -> None:
    """E[erf(a x1) erf(a x2)] = 2/pi arcsin(2 a^2 c / (1 + 2 a^2)): smooth, but steep at large q."""
    from scipy.special import erf

    a = math.sqrt(q)
    value = gaussian_expectation_2d(lambda x: erf(a * x), lambda x: erf(a * x), CS)
    exact = 2 / math.pi * np.arcsin(2 * q * CS / (1 + 2 * q))
    np.testing.assert_allclose(value, exact, rtol=0, atol=1e-13 if q <= 10 else 1e-11)


@pytest.mark.parametrize("activation", ["sigmoid", "gelu"])
def test_smooth_correlation_map_matches_gauss_hermite(activation) -> None:
    """Smooth, non-odd activations: against a 120 x 120 Gauss-Hermite product rule (converged
    for these entire functions)."""
    x, w = np.polynomial.hermite_e.hermegauss(120)
    z1, z2, weight = x[:, None], x[None, :], np.outer(w, w) / w.sum() ** 2
    mf = MeanField(activation, 1.7, 0.1, {})
    for q in (0.3, 1.0, 3.0):
        for c in (-0.9, 0.0, 0.4, 0.95):
            u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
            q12 = 1.7 * np.sum(weight * mf.phi(u1) * mf.phi(u2)) + 0.1
            assert mf.c_next(c, q) == pytest.approx(q12 / mf.q_next(q), abs=1e-12)
            chi_c = 1.7 * np.sum(weight * mf.dphi(u1) * mf.dphi(u2))
            assert mf.chi_c(c, q) == pytest.approx(chi_c, abs=1e-12)


def test_tanh_correlation_map_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    z1, z2 = rng.standard_normal((2, 400_000))
    mf = MeanField("tanh", 1.7, 0.1, {})
    for q in (0.5, 2.0):
        for c in (-0.5, 0.2, 0.9):
            u1, u2 = math.sqrt(q) * z1, math.sqrt(q) * (c * z1 + math.sqrt(1 - c * c) * z2)
            both = mf.phi(u1) * mf.phi(u2)
            sem = 1.7 * both.std() / math.sqrt(len(both)) / mf.q_next(q)
            assert mf.c_next(c, q) == pytest.approx((1.7 * both.mean() + 0.1) / mf.q_next(q),
                                                    abs=4 * sem)
            slopes = 1.7 * mf.dphi(u1) * mf.dphi(u2)
            assert mf.chi_c(c, q) == pytest.approx(slopes.mean(),
                                                   abs=4 * slopes.std() / math.sqrt(len(slopes)))


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "gelu", "selu"])
def test_correlation_map_fixes_one_with_slope_chi1(activation) -> None:
    mf = MeanField(activation, 1.5, 0.1, {})
    q_star = mf.fixed_point()
    assert mf.c_next(1.0, q_star) == pytest.approx(1.0, abs=1e-12)
    for q in (0.2, 1.0, 3.0):
        assert mf.chi_c(1.0, q) == pytest.approx(mf.chi1(q), abs=1e-12)
    c, h = 0.4, 1e-5  # the map's slope at q* is chi_c
    slope = (mf.c_next(c + h, q_star) - mf.c_next(c - h, q_star)) / (2 * h)
    assert slope == pytest.approx(mf.chi_c(c, q_star), abs=1e-7)


def test_correlation_fixed_point_and_depth_scale_across_the_phases() -> None:
    critical = critical_sigma_w2("tanh", 0.05)
    ordered, chaotic = predict("tanh", 1.0, 0.05, 10), predict("tanh", 4.0, 0.05, 10)
    assert ordered.c_star == 1.0 and ordered.chi_c_star == pytest.approx(ordered.chi1_star)
    assert ordered.correlation_depth_scale == pytest.approx(ordered.depth_scale)
    assert 0.1 < chaotic.c_star < 0.3 and chaotic.chi_c_star < 1 < chaotic.chi1_star
    mf = MeanField("tanh", 4.0, 0.05, {})  # c* is a fixed point at q*, with slope chi_c
    assert mf.c_next(chaotic.c_star, chaotic.q_star) == pytest.approx(chaotic.c_star, abs=1e-12)
    assert mf.chi_c(chaotic.c_star, chaotic.q_star) == pytest.approx(chaotic.chi_c_star)
    assert predict("tanh", 1.5, 0.0, 10).c_star == pytest.approx(0.0, abs=1e-12)  # odd, no bias
    # xi_c grows toward the critical line from both sides, and diverges on it
    below = [correlation_depth_scale("tanh", critical * f, 0.05) for f in (0.5, 0.9, 0.99)]
    above = [correlation_depth_scale("tanh", critical * f, 0.05) for f in (2.0, 1.1, 1.01)]
    assert below == sorted(below) and above == sorted(above) and min(below[-1], above[-1]) > 50
    assert correlation_depth_scale("relu", 2.0, 0.0) == math.inf
    assert trainable_depth("tanh", 4.0, 0.05) == pytest.approx(6 * chaotic.correlation_depth_scale)


def test_predicted_cosines_start_from_the_input_cosine() -> None:
    p = predict("tanh", 4.0, 0.05, 30, q_input=2.0, c_input=0.9)
    assert p.c_layers[0] == pytest.approx((4.0 * 2.0 * 0.9 + 0.05) / (4.0 * 2.0 + 0.05))
    assert len(p.c_layers) == 30 and p.c_layers[-1] == pytest.approx(p.c_star, abs=0.05)
    assert predict("tanh", 1.0, 0.05, 30, c_input=0.0).c_layers[-1] > 0.99  # ordered: c -> 1


def mlp_pre_cosines(activation: str, sigma_w2: float, sigma_b2: float, depth: int, width: int,
                    n: int, c_input: float, seed: int) -> tuple[list[float], float, float]:
    """Per-layer mean pairwise cosine of a plain MLP's pre-activations (weights
    N(0, sigma_w2 / fan_in), biases N(0, sigma_b2)) on n Gaussian inputs of mean pairwise cosine
    ~c_input; and the inputs' measured mean square and cosine."""
    g = torch.Generator().manual_seed(seed)
    common = torch.randn(width, generator=g, dtype=torch.float64)
    x = (math.sqrt(c_input) * common
         + math.sqrt(1 - c_input) * torch.randn(n, width, generator=g, dtype=torch.float64))
    phi = {"tanh": torch.tanh, "relu": torch.relu}[activation]
    h, cosines = x, []
    for layer in range(depth):
        w = torch.randn(width, width, generator=g, dtype=torch.float64)
        b = torch.randn(width, generator=g, dtype=torch.float64)
        h = (phi(h) if layer else h) @ w.T * math.sqrt(sigma_w2 / width) + b * math.sqrt(sigma_b2)
        cosines.append(float(pairwise_cosine(h[None])))
    return cosines, float(x.pow(2).mean()), float(pairwise_cosine(x[None]))


@pytest.mark.parametrize(("activation", "sigma_w2", "sigma_b2"), [
    ("tanh", 1.0, 0.05), ("tanh", 1.76, 0.05), ("tanh", 4.0, 0.05), ("relu", 2.0, 0.0)])
def test_measured_pre_activation_cosine_follows_the_correlation_map(
        activation, sigma_w2, sigma_b2) -> None:
    """Width 512, depth 25, 256 inputs of cosine 0.3: the measured per-layer cosine is within
    0.1 of c_l at every layer for seeds 0-2 (over seeds 0-19 the worst layer was off by <= 0.064,
    the finite-width scatter, which shrinks as 1/sqrt(width); rms over layers <= 0.035)."""
    for seed in range(3):
        measured, q_input, c_input = mlp_pre_cosines(activation, sigma_w2, sigma_b2, 25, 512,
                                                     256, 0.3, seed)
        predicted = predict(activation, sigma_w2, sigma_b2, 25, q_input=q_input,
                            c_input=c_input).c_layers
        error = np.abs(np.array(measured) - predicted)
        print(f"{activation} {sigma_w2} seed {seed}: max |error| {error.max():.4f}")
        assert error.max() < 0.1, (seed, measured, predicted)
        assert np.sqrt(np.mean(error**2)) < 0.05


def pre_cosines(run_dir: Path) -> list[float]:
    with open(run_dir / "gradflow" / "layers.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["step"] == "0" and r["layer"] != "output"]
    return [float(r["pre_cosine"]) for r in rows]


@pytest.mark.parametrize(("sigma_w2", "inputs"), [(1.0, "normal"), (4.0, "uniform")])
def test_run_records_pre_cosines_that_follow_the_correlation_map(run, sigma_w2, inputs) -> None:
    """Through gradprobe: the step-0 ``pre_cosine`` of a 512-wide, 20-layer tanh net against
    ``theory.c_layers`` (N(0, 1) inputs: cosine ~0; U[0, 1) inputs: ~0.75, decaying to c*)."""
    summary = run("data=synthetic", "data.source.in_features=512", "data.source.n_train=256",
                  f"data.source.inputs={inputs}", "data.batch_size=256", "model.width=512",
                  "model.depth=20", "activation=tanh", "init=meanfield",
                  f"init.sigma_w2={sigma_w2}", "init.sigma_b2=0.05", "trainer.max_steps=1",
                  "trainer.limit_val_batches=1", "trainer.limit_test_batches=1")
    if "c_layers" not in summary["theory"]:
        pytest.xfail("c_input wiring pending in run.py")
    measured = pre_cosines(Path(summary["run_dir"]))
    predicted = summary["theory"]["c_layers"]
    error = np.abs(np.array(measured) - predicted)
    print(f"tanh {sigma_w2} {inputs}: max |error| {error.max():.4f}")
    assert len(measured) == 20 and error.max() < 0.1, (measured, predicted)
