"""From a run's config to its mean-field prediction: whether theory applies, and with what.

Takes a composed config and the variances its init drew; builds nothing, so the pipeline
(``gradprobe.run``) can import it without an import circle.
"""

from __future__ import annotations

from typing import Any

from gradprobe.theory.meanfield import predict, weight_gradient_profile

ACTIVATION_PARAMS = ("negative_slope", "alpha", "beta", "init")


def activation_params(activation_cfg: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in activation_cfg.items() if k in ACTIVATION_PARAMS}


def applies(choices: dict[str, str]) -> str | None:
    """Why the mean-field prediction does not apply to a run, or None if it does."""
    if choices.get("model") != "mlp":
        return (f"model={choices.get('model')}: mean-field theory here covers plain MLPs "
                f"(model=mlp)")
    if choices.get("norm", "none") != "none":
        return (f"norm={choices.get('norm')}: mean-field theory here assumes no normalisation "
                f"(norm=none)")
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

