"""Mean-field predictions of signal and gradient propagation at initialisation (numpy only).

For a fully connected net with weights N(0, sigma_w2 / fan_in) and biases N(0, sigma_b2)
(Poole et al. 2016, Schoenholz et al. 2017):

* pre-activation variance map   q_l = sigma_w2 * E[phi(sqrt(q_{l-1}) z)^2] + sigma_b2, z ~ N(0, 1)
* per-layer gradient factor      chi_1(q) = sigma_w2 * E[phi'(sqrt(q) z)^2]
  (the factor by which E||dL/dh||^2 changes from one layer to the one below it)
* depth scale xi = 1 / |ln chi_1|; phase ordered (chi_1 < 1), critical, chaotic (chi_1 > 1)
* predicted first/last back-propagated gradient-norm ratio = sqrt(prod_{l=2..L} chi_1(q_l)).
* correlation map of two inputs with pre-activation variance q and correlation c:
  c' = (sigma_w2 * E[phi(u1) phi(u2)] + sigma_b2) / q_next(q), u1 = sqrt(q) z1,
  u2 = sqrt(q) (c z1 + sqrt(1 - c^2) z2); its stable fixed point c* at q*, its slope there
  chi_c(c*) = sigma_w2 * E[phi'(u1) phi'(u2)] (= chi_1 at c* = 1, the ordered phase), and the
  correlation depth scale xi_c = -1 / ln chi_c(c*): networks deeper than ~6 xi_c do not train
  (Schoenholz et al. 2017).

Gaussian expectations are integrals of smooth-times-Gaussian functions except at 0, where ReLU,
ELU, SELU, softsign ... have a kink; Gauss-Hermite converges slowly there (SELU's E[phi^2] is off
by 2e-5 with 200 nodes). So each expectation is split at 0 and each half integrated with
Gauss-Legendre on [0, 12] (the Gaussian tail beyond is < 1e-31): exact to ~1e-14 for every
activation of the ``activation`` group. The 2-D expectations of the correlation map are taken in
polar coordinates of (z1, z2): along each ray phi(u1) phi(u2) is smooth (both u are multiples of
the radius), and the kinks u1 = 0 and u2 = 0 are four angles, so the angle is split there
(Gauss-Legendre on each of the four arcs) and the radius integrated on [0, 12]: ReLU's arc-cosine
kernel to ~1e-15, erf's arcsin kernel to ~1e-15 for q <= 10 and ~1e-12 at q = 100.

    python -m gradprobe.theory activation=tanh init=meanfield init.sigma_w2=1.5 model.depth=50
    python -m gradprobe.theory activation=tanh --phase-diagram phase.png
    python -m gradprobe.theory activation=tanh init=meanfield init.sigma_w2=4 init.sigma_b2=0.05
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Array = np.ndarray
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(200)
_Z = 6.0 * (_NODES + 1.0)  # [0, 12]
_W = 6.0 * _WEIGHTS * np.exp(-_Z**2 / 2) / math.sqrt(2 * math.pi)
CRITICAL_TOLERANCE = 1e-3
# 2-D: radius on [0, 12] with the weight r exp(-r^2/2); angle on four arcs split at the kinks.
_R_NODES, _R_WEIGHTS = np.polynomial.legendre.leggauss(96)
_R = 6.0 * (_R_NODES + 1.0)
_RW = 6.0 * _R_WEIGHTS * _R * np.exp(-_R**2 / 2)
_T_NODES, _T_WEIGHTS = np.polynomial.legendre.leggauss(64)
LARGE_Q = 1e8  # where q* is infinite, the c-map is taken at this q (its large-q limit)


def gaussian_expectation(f: Callable[[Array], Array]) -> float:
    """E[f(z)] for z ~ N(0, 1): both half-lines by Gauss-Legendre, split at the kink 0."""
    return float(np.sum(_W * (f(_Z) + f(-_Z))))


def gaussian_expectation_2d(f: Callable[[Array], Array], g: Callable[[Array], Array],
                            c: float | Array) -> float | Array:
    """E[f(x1) g(x2)] for standard normal x1, x2 with correlation c (x1 = z1,
    x2 = c z1 + sqrt(1 - c^2) z2), vectorised over c. In polar coordinates z = r (cos t, sin t):
    x1 = r cos t, x2 = r cos(t - t0) with cos t0 = c, so f and g have their kinks (at 0) on the
    angles t = +-pi/2 and t0 +- pi/2 only; the angle is integrated by Gauss-Legendre on the four
    arcs between them and the radius (smooth along each ray) on [0, 12]."""
    scalar = np.ndim(c) == 0
    t0 = np.arccos(np.clip(np.asarray(c, dtype=float), -1.0, 1.0))[..., None]
    h = math.pi / 2
    cuts = np.concatenate(np.broadcast_arrays(-h, t0 - h, h, t0 + h, 3 * h), axis=-1)
    start, length = cuts[..., :-1, None], np.diff(cuts, axis=-1)[..., None]
    angle = start + length * (_T_NODES + 1) / 2  # (..., 4 arcs, nodes)
    weight = length * _T_WEIGHTS / (4 * math.pi)  # d(angle) / (2 pi)
    x1 = np.cos(angle)[..., None] * _R
    x2 = np.cos(angle - t0[..., None])[..., None] * _R
    value = ((f(x1) * g(x2)) @ _RW * weight).sum(axis=(-1, -2))
    return float(value) if scalar else value


def _sigmoid(x: Array) -> Array:
    return 0.5 * (1 + np.tanh(x / 2))


def _softplus(x: Array, beta: float = 1.0) -> Array:
    return np.logaddexp(0.0, beta * x) / beta


def _erf(x: Array) -> Array:
    try:  # scipy comes with scikit-learn; math.erf element by element is ~50x slower
        from scipy.special import erf
    except ImportError:
        return np.vectorize(math.erf)(x)
    return erf(x)


def activation_pair(name: str, **kw: float) -> tuple[Callable[[Array], Array],
                                                     Callable[[Array], Array]]:
    """phi and phi' of an ``activation`` option, with its arguments (slope, alpha, beta...)."""
    a = kw.get("negative_slope", kw.get("init", 0.25 if name == "prelu" else 0.01))
    alpha, beta = kw.get("alpha", 1.0), kw.get("beta", 1.0)
    pos = lambda x: x > 0  # noqa: E731
    neg_exp = lambda x: np.exp(np.minimum(x, 0))  # noqa: E731
    neg_expm1 = lambda x: np.expm1(np.minimum(x, 0))  # noqa: E731
    pairs: dict[str, tuple[Callable, Callable]] = {
        "relu": (lambda x: np.maximum(x, 0), lambda x: pos(x) * 1.0),
        "leaky_relu": (lambda x: np.where(pos(x), x, a * x), lambda x: np.where(pos(x), 1, a)),
        "prelu": (lambda x: np.where(pos(x), x, a * x), lambda x: np.where(pos(x), 1, a)),
        "elu": (lambda x: np.where(pos(x), x, alpha * neg_expm1(x)),
                lambda x: np.where(pos(x), 1, alpha * neg_exp(x))),
        "selu": (lambda x: SELU_SCALE * np.where(pos(x), x, SELU_ALPHA * neg_expm1(x)),
                 lambda x: SELU_SCALE * np.where(pos(x), 1, SELU_ALPHA * neg_exp(x))),
        "gelu": (lambda x: x * 0.5 * (1 + _erf(x / math.sqrt(2))),
                 lambda x: 0.5 * (1 + _erf(x / math.sqrt(2)))
                 + x * np.exp(-x**2 / 2) / math.sqrt(2 * math.pi)),
        "silu": (lambda x: x * _sigmoid(x),
                 lambda x: _sigmoid(x) * (1 + x * (1 - _sigmoid(x)))),
        "mish": (lambda x: x * np.tanh(_softplus(x)),
                 lambda x: np.tanh(_softplus(x))
                 + x * _sigmoid(x) / np.cosh(_softplus(x)) ** 2),
        "tanh": (np.tanh, lambda x: 1 - np.tanh(x) ** 2),
        "sigmoid": (_sigmoid, lambda x: _sigmoid(x) * (1 - _sigmoid(x))),
        "softsign": (lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2),
        "softplus": (lambda x: _softplus(x, beta), lambda x: _sigmoid(beta * x)),
        "identity": (lambda x: x, lambda x: np.ones_like(x)),
    }
    if name not in pairs:
        raise ValueError(f"no mean-field form for activation {name!r}")
    return pairs[name]


@dataclass
class MeanField:
    activation: str
    sigma_w2: float
    sigma_b2: float
    params: dict[str, float]

    def __post_init__(self) -> None:
        self.phi, self.dphi = activation_pair(self.activation, **self.params)

    def q_next(self, q: float) -> float:
        s = math.sqrt(max(q, 0.0))
        return self.sigma_w2 * gaussian_expectation(lambda z: self.phi(s * z) ** 2) + self.sigma_b2

    def chi1(self, q: float) -> float:
        """At q = 0 the limit q -> 0+ (ReLU's derivative at exactly 0 would say 0)."""
        s = math.sqrt(max(q, 1e-300))
        return self.sigma_w2 * gaussian_expectation(lambda z: self.dphi(s * z) ** 2)

    def c_next(self, c: float | Array, q: float) -> float | Array:
        """The correlation map: the correlation of two inputs' pre-activations at the next layer,
        where both have variance q and correlation c here (vectorised over c); c_next(1, q) = 1.
        Its slope in c is q * chi_c(c, q) / q_next(q), i.e. chi_c(c, q*) at the fixed point."""
        s, q_next = math.sqrt(max(q, 0.0)), self.q_next(q)
        if q_next <= 0:  # every pre-activation 0: nothing to correlate, keep c
            return c
        phi = lambda x: self.phi(s * x)  # noqa: E731
        return (self.sigma_w2 * gaussian_expectation_2d(phi, phi, c) + self.sigma_b2) / q_next

    def chi_c(self, c: float | Array, q: float) -> float | Array:
        """sigma_w2 * E[phi'(u1) phi'(u2)] at variance q and correlation c: the slope of the
        correlation map at q = q*; chi_c(1, q) = chi1(q). At q = 0 the limit q -> 0+."""
        s = math.sqrt(max(q, 1e-300))
        dphi = lambda x: self.dphi(s * x)  # noqa: E731
        return self.sigma_w2 * gaussian_expectation_2d(dphi, dphi, c)

    def correlation_fixed_point(self, q: float) -> tuple[float, float]:
        """(c*, the c-map's slope at c*) at variance q (meant for q = q*, where the slope is
        chi_c(c*)). c = 1 is always a fixed point; it is the stable one when the slope there
        (chi_1 at q*) is <= 1 (ordered phase), else (chaotic) the map, convex on [0, 1] (a power
        series in c with non-negative coefficients), has one stable fixed point c* in [0, 1):
        Newton from c = 0, which approaches it monotonically from below."""
        q_next = self.q_next(q)
        if q <= 0 or q_next <= 0:  # the q -> 0+ limit: c* = 1, slope chi_1(0+)
            return 1.0, self.chi1(q)
        slope = lambda c: q * self.chi_c(c, q) / q_next  # noqa: E731
        at_one = slope(1.0)
        if at_one <= 1 + 1e-12:
            return 1.0, at_one
        c = 0.0
        for _ in range(200):
            gap, drop = self.c_next(c, q) - c, 1 - slope(c)
            if gap <= 1e-14 or drop <= 0:
                break
            c = min(c + gap / drop, 1.0)
            if gap / drop < 1e-15:
                break
        return c, slope(c)

    def q_layers(self, q_input: float, depth: int) -> list[float]:
        """q_1 .. q_depth: the first layer sees the input's mean square q_input."""
        q = [self.sigma_w2 * q_input + self.sigma_b2]
        for _ in range(depth - 1):
            q.append(self.q_next(q[-1]))
        return q

    def fixed_point(self, q0: float = 1.0, steps: int = 500, tol: float = 1e-13) -> float:
        """q*: iterate the variance map (inf if it grows without bound); where it converges
        slowly (near the critical line) finish by bisection on q_next(q) - q; 0 when the map
        pulls every q > 0 to 0 (odd activations without bias in the ordered phase)."""
        q = q0
        for _ in range(steps):
            new = self.q_next(q)
            if not math.isfinite(new) or new > 1e12:
                return math.inf
            if abs(new - q) <= tol * max(1.0, q):
                return new
            q = new
        gap = lambda x: self.q_next(x) - x  # noqa: E731
        low, high = 1e-14, max(q, 1e-14)
        while gap(high) > 0 and high < 1e12:
            high *= 2
        if gap(high) > 0:  # still growing: no finite fixed point
            return math.inf
        if gap(low) <= 0:
            return 0.0
        for _ in range(200):
            mid = math.sqrt(low * high)
            low, high = (mid, high) if gap(mid) > 0 else (low, mid)
        return math.sqrt(low * high)


def phase(chi: float) -> str:
    if abs(chi - 1) <= CRITICAL_TOLERANCE:
        return "critical"
    return "ordered" if chi < 1 else "chaotic"


def depth_scale(chi: float) -> float:
    """Layers over which gradient variance changes by a factor e."""
    if chi <= 0:
        return 0.0
    return math.inf if chi == 1 else 1 / abs(math.log(chi))


def correlation_scale(chi_c: float) -> float:
    """xi_c = -1 / ln chi_c(c*): layers over which the correlation's distance to c* shrinks by
    a factor e; infinite on the critical line (chi_c = 1)."""
    if chi_c <= 0:
        return 0.0
    return math.inf if chi_c >= 1 - 1e-12 else -1 / math.log(chi_c)


def correlation_point(mf: MeanField, q_star: float) -> tuple[float, float, float]:
    """(c*, chi_c(c*), xi_c) at the variance fixed point q*; where q* is infinite (unbounded
    activations in the chaotic phase), the c-map's large-q limit. Where q* -> 0 (no bias, ordered
    phase of tanh or ReLU) the map tends to the identity near c = 1 (slope q chi_1 / q_next -> 1):
    correlations are not forgotten exponentially, xi_c is infinite, not 1 / |ln chi_1|."""
    q = q_star if math.isfinite(q_star) else LARGE_Q
    c_star, chi_c = mf.correlation_fixed_point(q)
    return c_star, chi_c, correlation_scale(chi_c)


def correlation_depth_scale(activation: str, sigma_w2: float, sigma_b2: float,
                            **params: float) -> float:
    """xi_c = -1 / ln chi_c(c*) at q* (= 1 / |ln chi_1| in the ordered phase, where c* = 1)."""
    mf = MeanField(activation, sigma_w2, sigma_b2, params)
    return correlation_point(mf, mf.fixed_point())[2]


def trainable_depth(activation: str, sigma_w2: float, sigma_b2: float,
                    **params: float) -> float:
    """6 xi_c: about the deepest such net that still trains (Schoenholz et al. 2017)."""
    return 6 * correlation_depth_scale(activation, sigma_w2, sigma_b2, **params)


@dataclass
class Prediction:
    activation: str
    sigma_w2: float
    sigma_b2: float
    depth: int
    q_star: float
    chi1_star: float
    phase: str
    depth_scale: float
    q_layers: list[float]
    chi1_layers: list[float]
    first_last_backprop_ratio: float
    # the correlation map: predicted mean pairwise cosine of the pre-activations at layers
    # 1..depth, its fixed point c*, the slope there chi_c(c*), and xi_c = -1 / ln chi_c(c*)
    c_layers: list[float] = field(default_factory=list)
    c_star: float = math.nan
    chi_c_star: float = math.nan
    correlation_depth_scale: float = math.nan

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def predict(activation: str, sigma_w2: float, sigma_b2: float, depth: int,
            q_input: float = 1.0, c_input: float = 0.0, **params: float) -> Prediction:
    """``q_input``: the inputs' mean square; ``c_input``: their mean pairwise cosine."""
    mf = MeanField(activation, sigma_w2, sigma_b2, params)
    q_layers = mf.q_layers(q_input, depth)
    chi_layers = [mf.chi1(q) for q in q_layers]
    q_star = mf.fixed_point(q_layers[-1])
    chi_star = mf.chi1(q_star) if math.isfinite(q_star) else chi_layers[-1]
    log_ratio = 0.5 * sum(math.log(c) if c > 0 else -math.inf for c in chi_layers[1:])
    c_layers = [(sigma_w2 * q_input * c_input + sigma_b2) / q_layers[0] if q_layers[0] > 0
                else c_input]
    for q in q_layers[:-1]:
        c_layers.append(float(mf.c_next(c_layers[-1], q)))
    c_star, chi_c_star, xi_c = correlation_point(mf, q_star)
    return Prediction(activation, sigma_w2, sigma_b2, depth, q_star, chi_star, phase(chi_star),
                      depth_scale(chi_star), q_layers, chi_layers, math.exp(log_ratio),
                      c_layers, c_star, chi_c_star, xi_c)


def weight_gradient_profile(prediction: Prediction, in_features: int, width: int,
                            q_input: float, **params: float) -> list[float]:
    """Predicted ||dL/dW_l|| of the hidden layers, relative to the last one (= 1): per example
    ||dL/dW_l||^2 = ||dL/dz_l||^2 ||h_{l-1}||^2, with E||dL/dz_l||^2 = E[phi'(z_l)^2]
    E||dL/dh_l||^2 and E||dL/dh_l||^2 growing by chi_1 per layer toward the output."""
    mf = MeanField(prediction.activation, prediction.sigma_w2, prediction.sigma_b2, params)
    q = prediction.q_layers
    dphi2 = [mf.chi1(ql) / mf.sigma_w2 for ql in q]
    h2 = [in_features * q_input] + [
        width * mf.q_next(ql) / mf.sigma_w2 - width * mf.sigma_b2 / mf.sigma_w2
        for ql in q[:-1]]  # width * E[phi(z_l)^2], read off the variance map
    log_sq = []
    for layer in range(len(q)):
        downstream = sum(math.log(c) for c in prediction.chi1_layers[layer + 1:])
        log_sq.append(downstream + math.log(dphi2[layer]) + math.log(h2[layer]))
    return [math.exp(0.5 * (v - log_sq[-1])) for v in log_sq]


def critical_sigma_w2(activation: str, sigma_b2: float, low: float = 0.05, high: float = 20.0,
                      rel_tol: float = 0.0, **params: float) -> float:
    """The sigma_w2 on the order-to-chaos line (chi_1(q*) = 1) for this sigma_b2, by bisection
    (60 halvings, or until the bracket is within ``rel_tol`` of its top)."""
    def excess(sw2: float) -> float:
        mf = MeanField(activation, sw2, sigma_b2, params)
        q = mf.fixed_point()
        return (mf.chi1(q) if math.isfinite(q) else math.inf) - 1
    if excess(low) > 0 or excess(high) < 0:
        return math.nan
    for _ in range(60):
        if high - low <= rel_tol * high:
            break
        mid = 0.5 * (low + high)
        low, high = (mid, high) if excess(mid) < 0 else (low, mid)
    return 0.5 * (low + high)


# --------------------------------------------------------------------------- runs and the CLI

ACTIVATION_PARAMS = ("negative_slope", "alpha", "beta", "init")


def activation_params(activation_cfg: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in activation_cfg.items() if k in ACTIVATION_PARAMS}


def applies(choices: dict[str, str]) -> str | None:
    """Why the mean-field prediction does not apply to a run, or None if it does."""
    if choices.get("model") != "mlp":
        return "mean-field theory here covers plain MLPs (model=mlp)"
    if choices.get("norm", "none") != "none":
        return "mean-field theory here assumes no normalisation (norm=none)"
    return None


def for_config(cfg: Any, choices: dict[str, str], sigma_w2: float, sigma_b2: float,
               q_input: float, in_features: int, c_input: float = 0.0) -> dict[str, Any]:
    """The prediction for a run's config and the variances its init drew; ``q_input`` and
    ``c_input``: the inputs' mean square and mean pairwise cosine."""
    reason = applies(choices)
    if reason:
        return {"applies": False, "reason": reason}
    params = activation_params(dict(cfg.activation))
    prediction = predict(choices["activation"], sigma_w2, sigma_b2, int(cfg.model.depth),
                         q_input=q_input, c_input=c_input, **params)
    return {"applies": True, **prediction.as_dict(), "relative_weight_gradients":
            weight_gradient_profile(prediction, in_features, int(cfg.model.width), q_input,
                                    **params)}


def phase_diagram(activation: str, point: tuple[float, float] | None, path: Path,
                  **params: float) -> Path:
    """The order-to-chaos line sigma_w2(sigma_b2) of an activation, with a config's point
    (Poole et al. 2016 / Schoenholz et al. 2017 style)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    b2 = np.concatenate([np.linspace(0.0, 0.05, 11), np.linspace(0.06, 0.5, 23)])
    w2 = np.array([critical_sigma_w2(activation, b, **params) for b in b2])
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(b2, w2, color="black", label=r"critical line $\chi_1(q^*) = 1$")
    top = max(float(np.nanmax(w2)) if np.isfinite(w2).any() else 2.0, point[0] if point else 0)
    ax.fill_between(b2, 0, w2, color="tab:blue", alpha=0.15, label="ordered: gradients vanish")
    ax.fill_between(b2, w2, top * 1.3, color="tab:red", alpha=0.15,
                    label="chaotic: gradients explode")
    if point:
        ax.plot([point[1]], [point[0]], "o", color="tab:orange", markersize=9,
                label=rf"this config ($\sigma_w^2$={point[0]:.3g}, $\sigma_b^2$={point[1]:.3g})")
    ax.set_xlabel(r"bias variance $\sigma_b^2$")
    ax.set_ylabel(r"weight variance $\sigma_w^2$ (times 1/fan_in)")
    ax.set_title(f"Mean-field phase diagram: {activation}")
    ax.set_ylim(0, top * 1.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)


def main(argv: list[str] | None = None) -> None:
    """Print the prediction for a config given as Hydra overrides, without training."""
    parser = argparse.ArgumentParser(description="mean-field prediction for a gradprobe config")
    parser.add_argument("overrides", nargs="*", help="e.g. activation=tanh init=meanfield")
    parser.add_argument("--phase-diagram", type=Path, help="also draw the phase diagram here")
    parser.add_argument("--q-input", type=float, default=1.0,
                        help="mean square of the input features (1 for standardised data)")
    parser.add_argument("--c-input", type=float, default=0.0,
                        help="mean pairwise cosine of the input vectors (0: unrelated inputs)")
    args = parser.parse_args(argv)
    from hydra import compose, initialize_config_dir
    from omegaconf import open_dict

    from gradprobe.cli import CONF_DIR, choices_of, register_resolvers
    from gradprobe.schema import validate

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=args.overrides, return_hydra_config=True)
    choices = choices_of(cfg.hydra)
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    if choices.get("init") == "meanfield":
        sw2, sb2 = float(cfg.init.sigma_w2), float(cfg.init.sigma_b2)
    else:  # what the chosen init draws, measured on the network it builds
        from gradprobe.init import implied_variances
        from gradprobe.run import build_network

        implied = implied_variances(build_network(cfg, (int(cfg.model.width),), 10))
        sw2, sb2 = implied["sigma_w2"], implied["sigma_b2"]
    result = for_config(cfg, choices, sw2, sb2, args.q_input, int(cfg.model.width),
                        c_input=args.c_input)
    if not result["applies"]:
        print(result["reason"])
        return
    print(f"{result['activation']}  sigma_w2={sw2:.4g} sigma_b2={sb2:.4g}  depth {result['depth']}")
    print(f"  q* = {result['q_star']:.4g}   chi_1(q*) = {result['chi1_star']:.4f}   "
          f"phase: {result['phase']}   depth scale xi = {result['depth_scale']:.3g} layers")
    print(f"  predicted first/last back-propagated gradient norm ratio: "
          f"{result['first_last_backprop_ratio']:.3e}")
    xi_c = result["correlation_depth_scale"]
    print(f"  correlation map: c* = {result['c_star']:.4g}   chi_c(c*) = "
          f"{result['chi_c_star']:.4f}   xi_c = {xi_c:.3g} layers   trainable depth "
          f"6 xi_c = {6 * xi_c:.3g}   (cosine at layer {result['depth']}: "
          f"{result['c_layers'][-1]:.4f} from {args.c_input:g})")
    print(json.dumps({k: result[k] for k in ("q_star", "chi1_star", "phase", "depth_scale",
                                             "first_last_backprop_ratio", "c_star",
                                             "chi_c_star", "correlation_depth_scale")}
                     | {"trainable_depth": 6 * xi_c}))
    if args.phase_diagram:
        params = activation_params(dict(cfg.activation))
        path = phase_diagram(result["activation"], (sw2, sb2), args.phase_diagram, **params)
        print(f"phase diagram: {path}")


if __name__ == "__main__":
    main()
