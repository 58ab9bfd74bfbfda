"""Remedies for a diagnosis: overrides to paste, each checked before it is offered.

Where the mean-field theory applies (a plain MLP without normalisation, ``theory.applies``) every
candidate (another init, another activation with its fitting init, sigma_w2 on the order-to-chaos
line) is evaluated with :func:`gradprobe.theory.predict` at this run's depth, width, input scale
and input similarity. A candidate is offered only if it is predicted to clear at least one of the
run's ``vanishing``, ``exploding`` or ``collapsed`` verdicts and to cause none it does not have;
the ones that clear the most come first, then those whose gradient ratio is closest to 1.
Everything theory cannot evaluate (normalisation, residual connections, learning rate, clipping,
leaky activations against dead units) is offered as a *rule of thumb* and labelled so. Each
remedy is the change (``overrides``) and the run's whole command with it applied (``command``).
"""

from __future__ import annotations

import math
import shlex
from functools import lru_cache
from typing import Any

from gradprobe import theory
from gradprobe.instruments.diagnosis import profile_problems

THEORY_VERDICTS = ("vanishing", "exploding", "collapsed")
CRITICAL_SIGMA_B2 = 0.05  # the bias variance of the critical-line remedies (Schoenholz et al.)
NAMED_INITS = ("kaiming_normal", "xavier_normal", "lecun_normal")
OTHER_ACTIVATIONS = (("relu", "kaiming_normal"), ("selu", "lecun_normal"), ("tanh", None))
SWITCHED_GROUPS = ("init", "activation")  # groups whose keys belong to one option each
MOST_CHECKED = 3  # the best few: a list of every passing candidate reads as noise


def context_of(cfg: Any, choices: dict[str, str], prediction: dict[str, Any]) -> dict[str, Any]:
    """What the remedies need to know of a run besides its choices: the mean-field inputs."""
    reason = theory.applies(choices)
    return {"theory_reason": reason, "depth": int(cfg.model.get("depth") or 0),
            "width": int(cfg.model.get("width") or 0),
            "activation_params": theory.activation_params(dict(cfg.activation)),
            "q_input": prediction.get("q_input", 1.0), "c_input": prediction.get("c_input", 0.0)}


def remedies(found: dict[str, Any], ctx: dict[str, Any],
             thresholds: dict[str, float]) -> list[dict[str, Any]]:
    """The remedies for these verdicts (``found``: verdict -> detail), best first."""
    checked = []
    theory_applies = ctx.get("depth") and ctx.get("theory_reason") is None
    if theory_applies and set(found) & set(THEORY_VERDICTS):
        checked = checked_remedies(set(found), ctx, thresholds)
    offered = {r["overrides"] for r in checked}
    thumbs = [r for verdict in found for r in rules_of_thumb(verdict, ctx)]
    unique = {r["overrides"]: r for r in thumbs if r["overrides"] not in offered}
    return [r | {"command": command(r["overrides"], ctx.get("overrides", []))}
            for r in checked + list(unique.values())]


def command(change: str, run_overrides: list[str]) -> str:
    """The run's command with the change applied, to paste whole. An override of a key the
    change sets is replaced; when the change picks another ``init`` or ``activation`` option,
    the run's keys inside that group go too (``init.sigma_w2=...``: the new option may not
    have them, and Hydra would refuse the command)."""
    changes = shlex.split(change)
    keys = {o.split("=", 1)[0] for o in changes}
    switched = keys & set(SWITCHED_GROUPS)
    kept = [o for o in run_overrides
            if (key := o.split("=", 1)[0].lstrip("+~")) not in keys
            and key.split(".", 1)[0] not in switched]
    return shlex.join(["python", "train.py", *kept, *changes])


# --------------------------------------------------------------------------- checked by theory

def candidates(ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """Configs to evaluate: this activation with each fitting init and on the critical line,
    and other activations with their fitting inits; not the run's own config."""
    act, init = ctx.get("activation"), ctx.get("init")
    params = ctx.get("activation_params") or {}
    out = [{"overrides": f"init={name}", "activation": act, "init": name, "params": params}
           for name in NAMED_INITS if name != init]
    out.append(critical(act, params, prefix=""))
    for other, other_init in OTHER_ACTIVATIONS:
        if other == act:
            continue
        if other_init is None:
            out.append(critical(other, {}, prefix=f"activation={other} "))
        else:
            out.append({"overrides": f"activation={other} init={other_init}",
                        "activation": other, "init": other_init, "params": {}})
    return [c for c in out if c is not None]


def critical(activation: str, params: dict[str, float], prefix: str) -> dict[str, Any] | None:
    """The mean-field init on the order-to-chaos line at sigma_b2 = 0.05, if it has one."""
    sigma_w2 = critical_point(activation, tuple(sorted(params.items())))
    if not math.isfinite(sigma_w2):
        return None
    return {"overrides": f"{prefix}init=meanfield init.sigma_w2={sigma_w2:g} "
                         f"init.sigma_b2={CRITICAL_SIGMA_B2:g}",
            "activation": activation, "init": "meanfield", "params": params,
            "sigma_w2": sigma_w2, "sigma_b2": CRITICAL_SIGMA_B2}


@lru_cache(maxsize=32)
def critical_point(activation: str, params: tuple[tuple[str, float], ...]) -> float:
    """The critical sigma_w2 at sigma_b2 = 0.05 to the 3 digits a remedy prints (cached: a
    bisection over fixed points takes a good fraction of a second)."""
    sigma_w2 = theory.critical_sigma_w2(activation, CRITICAL_SIGMA_B2, rel_tol=1e-4,
                                        **dict(params))
    return float(f"{sigma_w2:.3g}") if math.isfinite(sigma_w2) else math.nan


@lru_cache(maxsize=32)
def init_variances(name: str, width: int) -> tuple[float, float]:
    """(sigma_w2, sigma_b2) that an ``init`` option draws for a width x width hidden layer, from
    its own config file and torch function (so the check follows what the option really does)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from gradprobe.config import CONF_DIR

    cfg = OmegaConf.load(CONF_DIR / "init" / f"{name}.yaml")
    weight = torch.empty(width, width)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        instantiate(cfg.weight)(weight)
    bias = float(cfg.bias or 0.0)
    return width * float(weight.pow(2).mean()), bias**2


def predicted_problems(candidate: dict[str, Any], ctx: dict[str, Any],
                       thresholds: dict[str, float]) -> tuple[set[str], float, float]:
    """The verdicts theory predicts for a candidate, its gradient ratio and last-layer cosine."""
    if "sigma_w2" in candidate:
        sigma_w2, sigma_b2 = candidate["sigma_w2"], candidate["sigma_b2"]
    else:
        sigma_w2, sigma_b2 = init_variances(candidate["init"], ctx["width"] or 128)
    p = theory.predict(candidate["activation"], sigma_w2, sigma_b2, ctx["depth"],
                       q_input=ctx.get("q_input", 1.0), c_input=ctx.get("c_input", 0.0),
                       **candidate["params"])
    ratio, cosines = p.first_last_backprop_ratio, p.c_layers
    return profile_problems(ratio, cosines, thresholds), ratio, cosines[-1]


def checked_remedies(verdicts: set[str], ctx: dict[str, Any],
                     thresholds: dict[str, float]) -> list[dict[str, Any]]:
    ranked = []
    for candidate in candidates(ctx):
        problems, ratio, cosine = predicted_problems(candidate, ctx, thresholds)
        fixes = sorted(verdicts & set(THEORY_VERDICTS) - problems)
        if fixes and not problems - verdicts:
            why = (f"fixes {' and '.join(fixes)}: predicted first/last dL/dh ratio "
                   f"{ratio:.2g}, last hidden cosine {cosine:.2f}")
            ranked.append(({"overrides": candidate["overrides"], "why": why, "basis": "theory",
                            "fixes": fixes, "predicted_ratio": ratio,
                            "predicted_cosine": cosine},
                           (-len(fixes), abs(math.log(ratio)) if ratio > 0 else math.inf)))
    return [remedy for remedy, _ in sorted(ranked, key=lambda item: item[1])][:MOST_CHECKED]


# --------------------------------------------------------------------------- rules of thumb

def rules_of_thumb(verdict: str, ctx: dict[str, Any]) -> list[dict[str, Any]]:
    """The standard remedies theory cannot evaluate, leaving out what the run already does."""
    act, init, norm = ctx.get("activation"), ctx.get("init"), ctx.get("norm")
    model, lr = ctx.get("model"), ctx.get("lr")
    out: list[tuple[str, str]] = []
    if verdict in ("vanishing", "exploding", "saturated", "collapsed", "diverged") and \
            norm in ("none", None):
        out.append(("norm=batch", "normalisation keeps every layer's pre-activations at unit "
                                  "scale"))
    if verdict in ("vanishing", "collapsed") and model == "mlp":
        out.append(("model=resmlp", "residual connections carry signal and gradient past each "
                                    "block"))
    if verdict == "saturated" and init in ("normal", "default", None):
        fitting = "kaiming_normal" if act not in ("sigmoid", "tanh", "softsign") \
            else "xavier_normal"
        out.append((f"init={fitting}", "weights scaled to the fan-in keep pre-activations "
                                        "off the bounds"))
    if verdict in ("exploding", "diverged"):
        if lr:
            out.append((f"optimizer.lr={lr / 10:g}", "a smaller learning rate"))
        if not ctx.get("gradient_clip_val"):
            out.append(("trainer.gradient_clip_val=1.0", "gradient clipping bounds each step"))
    if verdict == "dead units":
        out.append(("activation=leaky_relu", "a non-zero gradient below zero lets dead units "
                                             "recover"))
        if lr and ctx.get("trained"):  # units that died during training: too large steps
            out.append((f"optimizer.lr={lr / 10:g}", "units died during training: smaller "
                                                     "steps"))
    return [{"overrides": o, "why": w, "basis": "rule of thumb"} for o, w in out]
