"""Mean-field predictions of signal and gradient propagation at initialisation.

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

Modules: ``gaussian`` (quadrature, each activation's phi and phi') and ``meanfield`` (the maps,
``predict``), numpy only; ``runs`` (a run's config to its prediction), which builds nothing;
``diagram`` (the phase diagram); ``__main__`` (the command, the only part that composes a config
or builds a network):

    python -m gradprobe.theory activation=tanh init=meanfield init.sigma_w2=1.5 model.depth=50
    python -m gradprobe.theory activation=tanh --phase-diagram phase.png
    python -m gradprobe.theory activation=tanh init=meanfield init.sigma_w2=4 init.sigma_b2=0.05
"""

from gradprobe.theory.diagram import phase_diagram
from gradprobe.theory.gaussian import (
    SELU_ALPHA,
    SELU_SCALE,
    activation_pair,
    gaussian_expectation,
    gaussian_expectation_2d,
)
from gradprobe.theory.meanfield import (
    CRITICAL_TOLERANCE,
    LARGE_Q,
    MeanField,
    Prediction,
    correlation_depth_scale,
    correlation_point,
    correlation_scale,
    critical_sigma_w2,
    depth_scale,
    phase,
    predict,
    trainable_depth,
    weight_gradient_profile,
)
from gradprobe.theory.runs import ACTIVATION_PARAMS, activation_params, applies, for_config

__all__ = [
    "ACTIVATION_PARAMS", "CRITICAL_TOLERANCE", "LARGE_Q", "SELU_ALPHA", "SELU_SCALE", "MeanField",
    "Prediction", "activation_pair", "activation_params", "applies", "correlation_depth_scale",
    "correlation_point", "correlation_scale", "critical_sigma_w2", "depth_scale", "for_config",
    "gaussian_expectation", "gaussian_expectation_2d", "phase", "phase_diagram", "predict",
    "trainable_depth", "weight_gradient_profile",
]
