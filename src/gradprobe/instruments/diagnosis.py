"""A plain-words verdict on one sampled step, with the remedies that apply to this run's config.

Verdicts: ``diverged``, ``vanishing``, ``exploding``, ``dead units``, ``saturated``, else
``healthy``. The defaults of ``THRESHOLDS`` are justified in the README ("Diagnosis").
``diverged`` is never inferred from a row: it is the divergence guard's finding
(:mod:`gradprobe.instruments.guard`, the rule that also sets the run's status), passed in. A
first/last ratio that is not a number (0/0: no gradient reaches the hidden layers, as in an
all-dead network) gives no vanishing/exploding verdict; the dead-unit share says what happened.
"""

from __future__ import annotations

import math
from typing import Any

THRESHOLDS = {
    "vanishing_ratio": 1e-2,  # first/last hidden-layer gradient norm below this: vanishing
    "exploding_ratio": 1e2,  # ... above this: exploding
    "dead_frac": 0.2,  # share of hidden units that output <= 0 for the whole batch
    "saturated_frac": 0.2,  # share of hidden units pinned to a bound of sigmoid/tanh/softsign
}
SATURATING = ("sigmoid", "tanh", "softsign")
RELU_FAMILY = ("relu", "leaky_relu", "prelu", "elu", "selu", "gelu", "silu", "mish")


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def diagnose(row: Any, names: list[str], thresholds: dict[str, float],
             context: dict[str, Any], diverged: dict[str, Any] | None = None) -> dict[str, Any]:
    """Verdicts for one recorded step (a ``HostRow``), each with the layers it concerns;
    ``diverged`` is the divergence guard's record (``{"step", "layer"}``) when the run diverged."""
    hidden = names[:-1] or names
    grad = row.layers["grad_norm"][: len(hidden)]
    ratio = row.steps["grad_first_last_ratio"]
    dead = row.layers["act_dead_frac"][: len(hidden)]
    saturated = row.layers["act_saturated_frac"][: len(hidden)]
    last = grad[-1]
    found: dict[str, dict[str, Any]] = {}
    if diverged:
        found["diverged"] = {"step": diverged["step"],
                             "layers": [diverged["layer"]] if diverged.get("layer") else []}
    else:  # NaN compares false: a 0/0 ratio is neither vanishing nor exploding
        if ratio < thresholds["vanishing_ratio"]:
            found["vanishing"] = {"layers": [n for n, g in zip(hidden, grad, strict=True)
                                             if g < thresholds["vanishing_ratio"] * last]}
        if ratio > thresholds["exploding_ratio"]:
            found["exploding"] = {"layers": [n for n, g in zip(hidden, grad, strict=True)
                                             if g > thresholds["exploding_ratio"] * last]}
        for verdict, fractions, key in (("dead units", dead, "dead_frac"),
                                        ("saturated", saturated, "saturated_frac")):
            share = _mean(fractions)
            if share > thresholds[key]:
                found[verdict] = {"share": share, "layers": [
                    n for n, f in zip(hidden, fractions, strict=True) if f > thresholds[key]]}
    verdicts = list(found) or ["healthy"]
    context = context | {"trained": row.step > 0}
    remedies = sorted({r for v in found for r in remedies_for(v, context)})
    backprop = row.layers["backprop_norm"][: len(hidden)]
    return {"step": row.step, "verdicts": verdicts, "details": found, "first_last_ratio": ratio,
            "backprop_first_last_ratio": backprop[0] / backprop[-1] if backprop[-1] else math.nan,
            "dead_share": _mean(dead), "saturated_share": _mean(saturated),
            "remedies": remedies, "text": describe(verdicts, found, ratio, remedies)}


def describe(verdicts: list[str], found: dict[str, Any], ratio: float,
             remedies: list[str]) -> str:
    parts = []
    for verdict in verdicts:
        detail = found.get(verdict, {})
        layers = detail.get("layers", [])
        where = f" in {_span(layers)}" if layers else ""
        if verdict in ("vanishing", "exploding"):
            parts.append(f"{verdict} gradients (first/last hidden-layer ratio {ratio:.2e}){where}")
        elif verdict in ("dead units", "saturated"):
            parts.append(f"{verdict}: {detail['share']:.0%} of hidden units{where}")
        elif verdict == "diverged":
            parts.append(f"diverged at step {detail['step']}{where}")
        else:
            parts.append(f"healthy (first/last hidden-layer gradient ratio {ratio:.2e})")
    text = "; ".join(parts)
    return f"{text}. Try: {'; '.join(remedies)}" if remedies else text


def _span(layers: list[str]) -> str:
    return ", ".join(layers) if len(layers) <= 3 else f"{layers[0]} .. {layers[-1]} " \
        f"({len(layers)} layers)"


def remedies_for(verdict: str, ctx: dict[str, Any]) -> list[str]:
    """The standard remedies for a verdict, leaving out what this run already does."""
    act, init, norm = ctx.get("activation"), ctx.get("init"), ctx.get("norm")
    model, optimizer, lr = ctx.get("model"), ctx.get("optimizer"), ctx.get("lr")
    fitting_init = ("init=kaiming_normal" if act in RELU_FAMILY or act is None
                    else "init=xavier_normal")
    out: list[str] = []
    if verdict in ("vanishing", "saturated", "exploding") and init in ("normal", "default", None):
        out.append(f"{fitting_init} (weights scaled to the fan-in of each layer)")
    if verdict in ("vanishing", "saturated") and act in SATURATING:
        out.append("activation=relu, leaky_relu or elu (no saturating bound)")
    if verdict in ("vanishing", "saturated", "exploding", "diverged") and norm in ("none", None):
        out.append("norm=batch or norm=layer (keeps pre-activations in range)")
    if verdict == "vanishing" and model == "mlp":
        out.append("model=resmlp (residual connections carry the gradient past each block)")
    if verdict == "vanishing" and optimizer == "sgd":
        out.append("optimizer=adam (per-parameter step sizes compensate small gradients)")
    if verdict in ("exploding", "diverged"):
        if lr:
            out.append(f"a smaller learning rate, optimizer.lr={lr / 10:g}")
        if not ctx.get("gradient_clip_val"):
            out.append("gradient clipping, trainer.gradient_clip_val=1.0")
    if verdict == "dead units":
        if act in ("relu", None):
            out.append("activation=leaky_relu, prelu or elu (a gradient below zero)")
        if lr and ctx.get("trained"):  # units that died during training: too large steps
            out.append(f"a smaller learning rate, optimizer.lr={lr / 10:g}")
        if init in ("normal", "default", None):
            out.append("init=kaiming_normal")
    return out
