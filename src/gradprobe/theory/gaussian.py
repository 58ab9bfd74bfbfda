"""Gaussian expectations by quadrature, and each ``activation`` option's phi and phi' (numpy).

Split from the mean-field maps so the quadrature (the numerically delicate part) can be read and
checked on its own; see ``gradprobe.theory`` for why Gauss-Legendre split at 0 and not
Gauss-Hermite.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

Array = np.ndarray
SELU_ALPHA, SELU_SCALE = 1.6732632423543772, 1.0507009873554805
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(200)
_Z = 6.0 * (_NODES + 1.0)  # [0, 12]
_W = 6.0 * _WEIGHTS * np.exp(-_Z**2 / 2) / math.sqrt(2 * math.pi)
# 2-D: radius on [0, 12] with the weight r exp(-r^2/2); angle on four arcs split at the kinks.
_R_NODES, _R_WEIGHTS = np.polynomial.legendre.leggauss(96)
_R = 6.0 * (_R_NODES + 1.0)
_RW = 6.0 * _R_WEIGHTS * _R * np.exp(-_R**2 / 2)
_T_NODES, _T_WEIGHTS = np.polynomial.legendre.leggauss(64)


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

