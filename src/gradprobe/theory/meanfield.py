"""The mean-field maps of a fully connected net at initialisation, and predictions from them.

Numpy only (no torch, no config, no pipeline), so the theory can be used, tested and plotted
without building anything; the formulas are in ``gradprobe.theory``'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from gradprobe.theory.gaussian import (
    Array,
    activation_pair,
    gaussian_expectation,
    gaussian_expectation_2d,
)

CRITICAL_TOLERANCE = 1e-3
LARGE_Q = 1e8  # where q* is infinite, the c-map is taken at this q (its large-q limit)


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

