"""A plain-words verdict on one sampled step, with the remedies an ``advise`` function offers.

Verdicts: ``diverged``, ``vanishing``, ``exploding``, ``collapsed``, ``dead units``,
``saturated``, else ``healthy``; the defaults of ``THRESHOLDS`` are justified in
gradprobe's docs/diagnosis.md.

* Vanishing and exploding are judged on the back-propagated gradient ||dL/dh|| at each block's
  output (the profile theory predicts and the papers plot), first hidden layer over last. The
  weight-gradient ratio ||dL/dW_1|| / ||dL/dW_L|| is reported beside it, never judged: it is
  the product of a backward signal that shrinks toward the input and a forward one that shrinks
  toward the output, so it can stay near 1 while dL/dh vanishes (Glorot & Bengio 2010, eq. 14).
* Collapsed: the examples' pre-activations point the same way (mean pairwise cosine) in the
  last hidden layer though the first still tells them apart: the correlation map's c* = 1.
* Dead units: only for activations with a zero-gradient region (ReLU), measured on at least
  ``stats.DEAD_PROBE`` examples, and only in layers whose input still tells the examples
  apart: after collapse a unit off for one example is off for all, which is collapse.
* ``diverged`` is never inferred from a row: it is the divergence guard's finding
  (:mod:`gradprobe.instruments.guard`), passed in.

A ratio that is not a number (0/0: no gradient reaches even the last hidden layer) gives no
vanishing/exploding verdict. Where dead units stop every gradient below them, the ratio is 0:
vanishing, and the dead-unit share says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

THRESHOLDS = {
    "vanishing_ratio": 1e-2,  # first/last hidden-layer ||dL/dh|| below this: vanishing
    "exploding_ratio": 1e2,  # ... above this: exploding
    "dead_frac": 0.2,  # share of ReLU units off for every example of the probe
    "saturated_frac": 0.2,  # share of hidden units pinned to a bound of sigmoid/tanh/softsign
    "collapsed_cosine": 0.99,  # mean pairwise cosine of the last hidden layer's pre-activations
}
# A layer whose examples' mean pairwise cosine is below this still tells them apart: a ReLU unit
# off for every example of such an input is dead, not an effect of collapse.
DISTINCT_COSINE = 0.9


def _mean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _ratio(values: list[float]) -> float:
    return values[0] / values[-1] if values[-1] else math.nan


def diagnose(row: Any, names: list[str], thresholds: dict[str, float],
             context: dict[str, Any], diverged: dict[str, Any] | None = None,
             advise: Callable[..., list[dict[str, Any]]] | None = None) -> dict[str, Any]:
    """Verdicts for one recorded step (a ``HostRow``), each with the layers it concerns;
    ``diverged`` is the divergence guard's record (``{"step", "layer"}``) when the run diverged.
    ``advise(found, context, thresholds)`` phrases remedies for what was found (an app's
    business: this module knows no config)."""
    hidden = names[:-1] or names
    n = len(hidden)
    backprop = row.layers["backprop_norm"][:n]
    cosine = row.layers["pre_cosine"][:n]
    dead = judged_dead(row.layers["act_dead_frac"][:n], cosine)
    saturated = row.layers["act_saturated_frac"][:n]
    ratio = _ratio(backprop)
    found: dict[str, dict[str, Any]] = {}
    if diverged:
        found["diverged"] = {"step": diverged["step"],
                             "layers": [diverged["layer"]] if diverged.get("layer") else []}
    else:  # NaN compares false: a 0/0 ratio is neither vanishing nor exploding
        judged = profile_problems(ratio, cosine, thresholds)
        if "vanishing" in judged:
            found["vanishing"] = {"layers": [name for name, g in zip(hidden, backprop, strict=True)
                                             if g < thresholds["vanishing_ratio"] * backprop[-1]]}
        if "exploding" in judged:
            found["exploding"] = {"layers": [name for name, g in zip(hidden, backprop, strict=True)
                                             if g > thresholds["exploding_ratio"] * backprop[-1]]}
        if "collapsed" in judged:
            limit = thresholds["collapsed_cosine"]
            found["collapsed"] = {"cosine": cosine[-1], "first_cosine": cosine[0], "layers": [
                name for name, c in zip(hidden, cosine, strict=True) if c >= limit]}
        for verdict, fractions, key in (("dead units", dead, "dead_frac"),
                                        ("saturated", saturated, "saturated_frac")):
            share = _mean(fractions)
            if share > thresholds[key]:
                found[verdict] = {"share": share, "layers": [
                    name for name, f in zip(hidden, fractions, strict=True)
                    if f > thresholds[key]]}
    verdicts = list(found) or ["healthy"]
    offered = advise(found, context | {"trained": row.step > 0}, thresholds) if advise else []
    weight_ratio = row.steps["grad_first_last_ratio"]
    return {"step": row.step, "verdicts": verdicts, "details": found, "first_last_ratio": ratio,
            "backprop_first_last_ratio": ratio, "weight_first_last_ratio": weight_ratio,
            "last_hidden_cosine": cosine[-1], "dead_share": _mean(dead),
            "saturated_share": _mean(saturated), "remedies": offered,
            "text": describe(verdicts, found, ratio, weight_ratio, offered)}


# What to try for each verdict in words any project can act on: the default ``advise`` of a
# GradientFlow used on its own (gradprobe's app passes its own, phrased as its config overrides
# and checked with the mean-field theory: ``gradprobe.remedies``).
GENERAL_REMEDIES: dict[str, list[tuple[str, str]]] = {
    "vanishing": [
        ("use a ReLU-family activation with Kaiming (He) init", "its gradient factor per layer "
         "is 1 where a sigmoid's is at most 1/4"),
        ("normalise before each activation (BatchNorm, LayerNorm)", "keeps every layer's "
         "pre-activations at unit scale"),
        ("add residual connections", "carry signal and gradient past each block")],
    "exploding": [
        ("scale the init to the fan-in (Xavier for tanh/sigmoid, Kaiming for ReLU)",
         "keeps the gradient factor per layer near 1"),
        ("lower the learning rate", "smaller steps"),
        ("clip gradients (Trainer(gradient_clip_val=1.0))", "bounds each step")],
    "collapsed": [
        ("normalise before each activation (BatchNorm, LayerNorm)", "keeps the examples' "
         "pre-activations apart"),
        ("add residual connections", "carry each example's own signal past each block")],
    "dead units": [
        ("use LeakyReLU, ELU or GELU instead of ReLU", "a non-zero gradient below zero lets "
         "dead units recover"),
        ("lower the learning rate", "large steps push units off for good")],
    "saturated": [
        ("use a ReLU-family activation", "no upper bound to saturate at"),
        ("use Xavier (Glorot) init for sigmoid/tanh", "weights scaled to the fan-in keep "
         "pre-activations off the bounds"),
        ("normalise before each activation (BatchNorm, LayerNorm)", "keeps pre-activations "
         "near zero, where the gradient is largest")],
    "diverged": [
        ("lower the learning rate", "smaller steps"),
        ("clip gradients (Trainer(gradient_clip_val=1.0))", "bounds each step")],
}


def general_remedies(found: dict[str, Any], context: dict[str, Any],
                     thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """The rules of thumb of ``GENERAL_REMEDIES`` for the verdicts found, each once, in the
    shape an ``advise`` returns (``overrides`` holds the change, in words)."""
    offered: dict[str, dict[str, Any]] = {}
    for verdict in found:
        for change, why in GENERAL_REMEDIES.get(verdict, []):
            offered.setdefault(change, {"overrides": change, "why": why,
                                        "basis": "rule of thumb"})
    return list(offered.values())


def profile_problems(ratio: float, cosine: list[float], thresholds: dict[str, float]) -> set[str]:
    """The verdicts read off the two depth profiles, measured or predicted alike: the first/last
    hidden-layer dL/dh ratio, and the pre-activation cosine of the first and last hidden layer
    (collapsed: the first still tells the examples apart, the last does not). NaN: no verdict."""
    found = set()
    if ratio < thresholds["vanishing_ratio"]:
        found.add("vanishing")
    if ratio > thresholds["exploding_ratio"]:
        found.add("exploding")
    if cosine[0] < DISTINCT_COSINE and cosine[-1] >= thresholds["collapsed_cosine"]:
        found.add("collapsed")
    return found


def judged_dead(dead: list[float], cosine: list[float]) -> list[float]:
    """The dead fractions of the layers whose input still tells the examples apart (the first
    layer's input is the data); NaN elsewhere, where being off for all examples is collapse."""
    return [f if j == 0 or not cosine[j - 1] >= DISTINCT_COSINE else math.nan
            for j, f in enumerate(dead)]


def describe(verdicts: list[str], found: dict[str, Any], ratio: float, weight_ratio: float,
             offered: list[dict[str, Any]]) -> str:
    ratios = f"first/last hidden-layer dL/dh ratio {ratio:.2e}, dL/dW {weight_ratio:.2e}"
    parts = []
    for verdict in verdicts:
        detail = found.get(verdict, {})
        layers = detail.get("layers", [])
        where = f" in {_span(layers)}" if layers else ""
        if verdict in ("vanishing", "exploding"):
            parts.append(f"{verdict} gradients ({ratios}){where}")
        elif verdict in ("dead units", "saturated"):
            parts.append(f"{verdict}: {detail['share']:.0%} of hidden units{where}")
        elif verdict == "collapsed":
            parts.append(f"collapsed inputs: mean pairwise cosine {detail['first_cosine']:.2f} "
                         f"in the first hidden layer, {detail['cosine']:.2f} in the last"
                         f"{where}")
        elif verdict == "diverged":
            parts.append(f"diverged at step {detail['step']}{where}")
        else:
            parts.append(f"healthy ({ratios})")
    text = "; ".join(parts)
    checked = [f"{r['overrides']} ({r['why']})" for r in offered if r["basis"] == "theory"]
    thumbs = [f"{r['overrides']} ({r['why']})" for r in offered if r["basis"] != "theory"]
    if checked:
        text += f". Try (mean-field theory predicts these fix it): {'; '.join(checked)}"
    if thumbs:
        text += f". Rules of thumb (not checked): {'; '.join(thumbs)}"
    return text


def _span(layers: list[str]) -> str:
    return ", ".join(layers) if len(layers) <= 3 else f"{layers[0]} .. {layers[-1]} " \
        f"({len(layers)} layers)"
