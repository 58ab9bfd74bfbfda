"""Range and type checks for a composed config, torch-free: a bad value fails in well under 1 s.

Hydra already rejects unknown keys (struct mode) and unknown group options (with its list of
choices). What it cannot know is which *values* make sense: that is this table. Each rule names a
dotted key, what is allowed in words, and a predicate. A rule for a key the composed config does
not have is skipped, so group-specific keys (``activation.negative_slope``, ``model.kernel_size``)
are checked only where they exist.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value outside what is allowed; the message is one line: key, value and rule."""


@dataclass(frozen=True)
class Rule:
    key: str
    allowed: str
    check: Callable[[Any], bool]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def integer(low: int | None = None, *also: int) -> Callable[[Any], bool]:
    """An integer >= low, or one of the special values in ``also`` (e.g. -1 for 'unlimited')."""
    return lambda v: _is_int(v) and (v in also or low is None or v >= low)


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = True) -> Callable[[Any], bool]:
    def check(v: Any) -> bool:
        if not _is_number(v):
            return False
        if low is not None and (v <= low if low_open else v < low):
            return False
        return not (high is not None and (v >= high if high_open else v > high))
    return check


def one_of(*values: Any) -> Callable[[Any], bool]:
    return lambda v: v in values


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


PRECISIONS = ("64-true", "64", "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16")

RULES: tuple[Rule, ...] = (
    Rule("seed", "an integer >= 0", integer(0)),
    Rule("threads", "null or an integer >= 1", optional(integer(1))),
    Rule("task", "'classification' or 'regression'", one_of("classification", "regression")),
    Rule("model.depth", "an integer >= 1 (model=linear: 0)",
         lambda v: _is_int(v) and v >= 0),
    Rule("model.width", "an integer >= 1 (model=linear: 0)", lambda v: _is_int(v) and v >= 0),
    Rule("model.dropout", "a number in [0, 1)", number(0, 1)),
    Rule("model.kernel_size", "an odd integer >= 1", lambda v: _is_int(v) and v >= 1 and v % 2),
    Rule("activation.negative_slope", "a number >= 0", number(0)),
    Rule("activation.alpha", "a number > 0", number(0, low_open=True)),
    Rule("activation.beta", "a number > 0", number(0, low_open=True)),
    Rule("activation.init", "a number >= 0", number(0)),
    Rule("init.weight.std", "a number > 0", number(0, low_open=True)),
    Rule("init.weight.gain", "a number > 0", number(0, low_open=True)),
    Rule("init.weight.mode", "'fan_in' or 'fan_out'", one_of("fan_in", "fan_out")),
    Rule("init.sigma_w2", "a number > 0", number(0, low_open=True)),
    Rule("init.sigma_b2", "a number >= 0", number(0)),
    Rule("init.bias", "null (keep PyTorch's), a number, or an init function",
         lambda v: v is None or _is_number(v) or (isinstance(v, dict) and "_target_" in v)),
    Rule("optimizer.lr", "a number > 0", number(0, low_open=True)),
    Rule("optimizer.momentum", "a number in [0, 1)", number(0, 1)),
    Rule("optimizer.weight_decay", "a number >= 0", number(0)),
    Rule("optimizer.alpha", "a number in (0, 1)", number(0, 1, low_open=True)),
    Rule("data.batch_size", "an integer >= 1", integer(1)),
    Rule("data.eval_batch_size", "an integer >= 1", integer(1)),
    Rule("data.source.val_fraction", "a number in (0, 1)", number(0, 1, low_open=True)),
    Rule("data.source.test_fraction", "a number in (0, 1)", number(0, 1, low_open=True)),
    Rule("data.source.num_samples", "an integer >= 10", integer(10)),
    Rule("data.source.n_train", "an integer >= 1", integer(1)),
    Rule("data.source.n_val", "an integer >= 1", integer(1)),
    Rule("data.source.n_test", "an integer >= 1", integer(1)),
    Rule("data.source.in_features", "an integer >= 1", integer(1)),
    Rule("data.source.out_features", "an integer >= 1", integer(1)),
    Rule("data.source.noise", "a number >= 0", number(0)),
    Rule("data.source.target", "'teacher' or 'random'", one_of("teacher", "random")),
    Rule("data.source.inputs", "'normal' or 'uniform'", one_of("normal", "uniform")),
    Rule("monitor.every_n_steps", "an integer >= 1", integer(1)),
    Rule("monitor.histogram_every_n_steps", "an integer >= 1", integer(1)),
    Rule("monitor.flush_every_n_samples", "an integer >= 1", integer(1)),
    Rule("monitor.jacobian_examples", "an integer >= 0", integer(0)),
    Rule("monitor.saturation_margin", "a number in (0, 0.5)", number(0, 0.5, low_open=True)),
    Rule("monitor.thresholds.vanishing_ratio", "a number in (0, 1)",
         number(0, 1, low_open=True)),
    Rule("monitor.thresholds.exploding_ratio", "a number > 1", number(1, low_open=True)),
    Rule("monitor.thresholds.dead_frac", "a number in [0, 1)", number(0, 1)),
    Rule("monitor.thresholds.saturated_frac", "a number in [0, 1)", number(0, 1)),
    Rule("engine.steps_per_call", "an integer >= 1", integer(1)),
    Rule("engine.compile", "'none' or 'graph'", one_of("none", "graph")),
    Rule("trainer.max_epochs", "an integer >= 1, or -1 for no limit", integer(1, -1)),
    Rule("trainer.max_steps", "an integer >= 1, or -1 for no limit", integer(1, -1)),
    Rule("trainer.accumulate_grad_batches", "an integer >= 1", integer(1)),
    Rule("trainer.gradient_clip_val", "null or a number > 0",
         optional(number(0, low_open=True))),
    Rule("trainer.gradient_clip_algorithm", "'norm' or 'value'", one_of("norm", "value")),
    Rule("trainer.log_every_n_steps", "an integer >= 1", integer(1)),
    Rule("trainer.check_val_every_n_epoch", "an integer >= 1", integer(1)),
    Rule("trainer.deterministic", "true, false or 'warn'", one_of(True, False, "warn")),
    Rule("trainer.precision", f"one of {', '.join(PRECISIONS)}",
         lambda v: str(v) in PRECISIONS),
    Rule("trainer.accelerator", "one of cpu, gpu, cuda, mps, tpu, auto",
         one_of("cpu", "gpu", "cuda", "mps", "tpu", "auto")),
)

_ABSENT = object()


def _lookup(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value outside its rule, or a required value left '???'."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"config error: {missing[0]} has no value; set it, e.g. {missing[0]}=...")
    for rule in RULES:
        value = _lookup(cfg, rule.key)
        if value is _ABSENT:
            continue
        if not rule.check(value):
            raise ConfigError(
                f"config error: {rule.key}={value!r} is not allowed; expected {rule.allowed}"
            )
    model = cfg.get("model", {})
    if str(model.get("_target_", "")).rsplit(".", 1)[-1] != "linear":
        for key in ("depth", "width"):
            if model.get(key) == 0:
                raise ConfigError(f"config error: model.{key}=0 is not allowed; expected an "
                                  "integer >= 1 (only model=linear has no hidden layer)")
    trainer = cfg.get("trainer", {})
    if trainer.get("max_epochs") == -1 and trainer.get("max_steps") == -1:
        raise ConfigError("config error: trainer.max_epochs=-1 and trainer.max_steps=-1 would "
                          "train forever; expected at least one of them >= 1")
