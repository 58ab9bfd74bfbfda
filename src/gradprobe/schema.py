"""Range and type checks for a composed config, torch-free: a bad value fails in well under 1 s.

Hydra already rejects unknown keys (struct mode) and unknown group options (with its list of
choices). What it cannot know is which *values* make sense: that is this table. Each rule names a
dotted key, what is allowed in words, and a predicate. A rule for a key the composed config does
not have is skipped, so group-specific keys (``activation.negative_slope``, ``model.kernel_size``)
are checked only where they exist.

Then, on the whole config: no NaN or infinity anywhere (any leaf, ruled or not); values allowed
alone but not together (``_check_combinations``); and, where the config alone decides the split
sizes (mnist1d, digits, synthetic), splits that can serve the run (``check_split_sizes``, which
``gradprobe.data.check_splits`` applies to the loaded data of every source).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.util import find_spec
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from gradprobe.errors import ConfigError, DataError  # noqa: F401  (raised for the CLI)
from gradprobe.splits import batch_norm, check_split_sizes, planned_splits, target_name


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
        if not _is_number(v) or (isinstance(v, float) and not math.isfinite(v)):
            return False
        if low is not None and (v <= low if low_open else v < low):
            return False
        return not (high is not None and (v >= high if high_open else v > high))
    return check


def one_of(*values: Any) -> Callable[[Any], bool]:
    return lambda v: v in values


def optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


def boolean(v: Any) -> bool:
    return isinstance(v, bool)


SEED_MAX = 2**32 - 1  # numpy's seed range, which Lightning's seed_everything enforces
SEEDS = f"an integer >= 0 and <= {SEED_MAX} (numpy's seed range)"


def seed(v: Any) -> bool:
    return _is_int(v) and 0 <= v <= SEED_MAX


def batch_limit(low: int) -> Callable[[Any], bool]:
    """Lightning's ``limit_*_batches``: a fraction (a float in [0, 1]) or a count of batches (an
    int). A float above 1 is refused: Lightning reads 5.0 as 5 batches, ``StepChunks`` would not.
    ``low`` 1: zero (nothing at all) refused."""
    def check(v: Any) -> bool:
        if isinstance(v, float):
            return math.isfinite(v) and (0 < v <= 1 or (low == 0 and v == 0))
        return _is_int(v) and v >= low
    return check


def devices(v: Any) -> bool:
    """Lightning's ``devices``: a count >= 1, -1 (all), 'auto', or device indices (a list or a
    comma-separated string)."""
    if _is_int(v):
        return v >= 1 or v == -1
    if isinstance(v, str):
        return v in ("auto", "-1") or bool(re.fullmatch(r"[1-9]\d*|\d+(,\d+)*,|\d+(,\d+)+", v))
    return isinstance(v, list) and bool(v) and len(set(v)) == len(v) and all(
        _is_int(i) and i >= 0 for i in v)


def two_betas(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(number(0, 1)(b) for b in v)


# torch.nn.init.calculate_gain's nonlinearities
GAINS = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
         "conv_transpose3d", "sigmoid", "tanh", "relu", "leaky_relu", "selu")


MONITORED = tuple(f"{stage}/{name}" for stage in ("val", "train")
                  for name in ("loss", "acc", "mse", "r2"))  # what a run logs per epoch

PRECISIONS = ("64-true", "64", "32-true", "32", "16-mixed", "bf16-mixed", "16-true", "bf16-true",
              "transformer-engine", "transformer-engine-float16")

RULES: tuple[Rule, ...] = (
    Rule("seed", SEEDS, seed),
    Rule("threads", "'auto' or an integer >= 1", lambda v: v == "auto" or integer(1)(v)),
    Rule("task", "'classification' or 'regression'", one_of("classification", "regression")),
    Rule("model.depth", "an integer >= 1 (model=linear: 0)",
         lambda v: _is_int(v) and v >= 0),
    Rule("model.width", "an integer >= 1 (model=linear: 0)", lambda v: _is_int(v) and v >= 0),
    Rule("model.dropout", "a number in [0, 1)", number(0, 1)),
    Rule("model.kernel_size", "an odd integer >= 1", lambda v: _is_int(v) and v >= 1 and v % 2),
    Rule("model.alpha_dropout", "true or false", boolean),
    Rule("activation.negative_slope", "a number >= 0", number(0)),
    Rule("activation.alpha", "a number > 0", number(0, low_open=True)),
    Rule("activation.beta", "a number > 0", number(0, low_open=True)),
    Rule("activation.init", "a number >= 0", number(0)),
    Rule("init.weight.std", "a number > 0", number(0, low_open=True)),
    Rule("init.weight.gain", "a number > 0", number(0, low_open=True)),
    Rule("init.weight.mode", "'fan_in' or 'fan_out'", one_of("fan_in", "fan_out")),
    Rule("init.weight.nonlinearity", f"one of {', '.join(GAINS)}", one_of(*GAINS)),
    Rule("init.weight.a", "a number", number()),
    Rule("init.weight.mean", "a number", number()),
    Rule("init.bias.mean", "a number", number()),
    Rule("init.bias.std", "a number >= 0", number(0)),
    Rule("init.sigma_w2", "a number > 0", number(0, low_open=True)),
    Rule("init.sigma_b2", "a number >= 0", number(0)),
    Rule("init.bias", "null (keep PyTorch's), a number, or an init function",
         lambda v: v is None or _is_number(v) or (isinstance(v, dict) and "_target_" in v)),
    Rule("optimizer.lr", "a number > 0", number(0, low_open=True)),
    Rule("optimizer.momentum", "a number in [0, 1)", number(0, 1)),
    Rule("optimizer.weight_decay", "a number >= 0", number(0)),
    Rule("optimizer.alpha", "a number in (0, 1)", number(0, 1, low_open=True)),
    Rule("optimizer.betas", "a list of two numbers in [0, 1), e.g. [0.9,0.999]", two_betas),
    Rule("optimizer.eps", "a number >= 0", number(0)),
    Rule("optimizer.nesterov", "true or false", boolean),
    Rule("scheduler.T_max", "an integer >= 1 (scheduler=cosine anneals over "
         "trainer.max_epochs; with max_epochs=-1 set scheduler.T_max)", integer(1)),
    Rule("scheduler.eta_min", "a number >= 0", number(0)),
    Rule("scheduler.step_size", "an integer >= 1", integer(1)),
    Rule("scheduler.gamma", "a number > 0", number(0, low_open=True)),
    Rule("data.batch_size", "an integer >= 1", integer(1)),
    Rule("data.eval_batch_size", "an integer >= 1", integer(1)),
    Rule("data.source.val_fraction", "a number in (0, 1)", number(0, 1, low_open=True)),
    Rule("data.source.test_fraction", "a number in (0, 1)", number(0, 1, low_open=True)),
    Rule("data.source.num_samples", "an integer >= 10", integer(10)),
    Rule("data.source.train_split", "a number in (0, 1)", number(0, 1, low_open=True)),
    Rule("data.source.seed", SEEDS, seed),
    Rule("data.source.split_seed", SEEDS, seed),
    Rule("data.source.teacher_width", "an integer >= 1", integer(1)),
    Rule("data.source.download", "true or false", boolean),
    Rule("data.source.n_train", "an integer >= 1", integer(1)),
    Rule("data.source.n_val", "an integer >= 1", integer(1)),
    Rule("data.source.n_test", "an integer >= 1", integer(1)),
    Rule("data.source.in_features", "an integer >= 1", integer(1)),
    Rule("data.source.out_features", "an integer >= 1", integer(1)),
    Rule("data.source.noise", "a number >= 0", number(0)),
    Rule("data.source.target", "'teacher' or 'random'", one_of("teacher", "random")),
    Rule("data.source.inputs", "'normal' or 'uniform'", one_of("normal", "uniform")),
    Rule("gradflow.enabled", "true or false", boolean),
    Rule("gradflow.figures", "true or false", boolean),
    *(Rule(f"gradflow.wandb.{name}", "true or false", boolean)
      for name in ("per_layer_scalars", "histograms", "profile_charts")),
    Rule("gradflow.every_n_steps", "an integer >= 1", integer(1)),
    Rule("gradflow.histogram_every_n_steps", "an integer >= 1", integer(1)),
    Rule("gradflow.flush_every_n_samples", "an integer >= 1", integer(1)),
    Rule("gradflow.jacobian_examples", "an integer >= 0", integer(0)),
    Rule("gradflow.saturation_margin", "a number in (0, 0.5)", number(0, 0.5, low_open=True)),
    Rule("gradflow.thresholds.vanishing_ratio", "a number in (0, 1)",
         number(0, 1, low_open=True)),
    Rule("gradflow.thresholds.exploding_ratio", "a number > 1", number(1, low_open=True)),
    Rule("gradflow.thresholds.dead_frac", "a number in [0, 1)", number(0, 1)),
    Rule("gradflow.thresholds.saturated_frac", "a number in [0, 1)", number(0, 1)),
    Rule("gradflow.thresholds.collapsed_cosine", "a number in (0, 1)",
         number(0, 1, low_open=True)),
    Rule("engine.steps_per_call", "an integer >= 1", integer(1)),
    Rule("engine.compile", "'none' or 'graph'", one_of("none", "graph")),
    Rule("divergence.loss_factor", "a number > 1", number(1, low_open=True)),
    Rule("divergence.check_every_n_steps", "an integer >= 1", integer(1)),
    Rule("trainer.max_epochs", "an integer >= 1, or -1 for no limit", integer(1, -1)),
    Rule("trainer.max_steps", "an integer >= 1, or -1 for no limit", integer(1, -1)),
    Rule("trainer.accumulate_grad_batches", "an integer >= 1", integer(1)),
    Rule("trainer.gradient_clip_val", "null or a number > 0",
         optional(number(0, low_open=True))),
    Rule("trainer.gradient_clip_algorithm", "'norm' or 'value'", one_of("norm", "value")),
    Rule("trainer.log_every_n_steps", "an integer >= 1", integer(1)),
    Rule("trainer.check_val_every_n_epoch", "an integer >= 1", integer(1)),
    Rule("trainer.num_sanity_val_steps", "an integer >= 0, or -1 for all validation batches",
         integer(0, -1)),
    Rule("trainer.limit_train_batches",
         "null (all), a fraction in (0.0, 1.0] or a number of batches >= 1 (an integer)",
         optional(batch_limit(1))),
    Rule("trainer.limit_val_batches", "null (all), a fraction in [0.0, 1.0] or a number of "
         "batches >= 0 (an integer; 0: no validation)", optional(batch_limit(0))),
    Rule("trainer.limit_test_batches", "null (all), a fraction in [0.0, 1.0] or a number of "
         "batches >= 0 (an integer; 0: no test)", optional(batch_limit(0))),
    Rule("trainer.devices", "an integer >= 1, -1 (all), 'auto', or a list of device indices",
         devices),
    Rule("trainer.num_nodes", "an integer >= 1", integer(1)),
    Rule("trainer.deterministic", "true, false or 'warn'", one_of(True, False, "warn")),
    Rule("trainer.precision", f"one of {', '.join(PRECISIONS)}",
         lambda v: str(v) in PRECISIONS),
    Rule("trainer.accelerator", "one of cpu, gpu, cuda, mps, tpu, auto",
         one_of("cpu", "gpu", "cuda", "mps", "tpu", "auto")),
    Rule("sweep.report", "true or false", boolean),
    Rule("verbose", "true or false", boolean),
    Rule("print_config", "true or false", boolean),
    Rule("sweep.spread_gpus", "true or false", boolean),
    Rule("test_on", "'best' or 'last'", one_of("best", "last")),
    Rule("tags", "a list of W&B tags (strings of 1 to 64 characters), e.g. tags=[baseline,v2]",
         lambda v: isinstance(v, list) and all(isinstance(t, str) and 0 < len(t) <= 64
                                               for t in v)),
    *(Rule(f"callbacks.{name}.enabled", "true or false", boolean)
      for name in ("checkpoint", "early_stopping")),
    *(Rule(f"callbacks.{name}.enabled", "true, false or null (automatic)", optional(boolean))
      for name in ("progress_bar", "model_summary")),
    Rule("callbacks.checkpoint.best_weights_only", "true or false", boolean),
    Rule("callbacks.early_stopping.monitor", f"one of {', '.join(MONITORED)}",
         one_of(*MONITORED)),
    Rule("callbacks.early_stopping.mode", "'min' or 'max'", one_of("min", "max")),
    Rule("callbacks.early_stopping.patience", "an integer >= 0", integer(0)),
    Rule("callbacks.early_stopping.min_delta", "a number >= 0", number(0)),
    Rule("callbacks.progress_bar.refresh_rate", "an integer >= 1", integer(1)),
    Rule("callbacks.model_summary.max_depth", "an integer >= 0, or -1 for all layers",
         integer(0, -1)),
    Rule("trainer.fast_dev_run", "true, false or a number of batches >= 0",
         lambda v: isinstance(v, bool) or integer(0)(v)),
    Rule("trainer.overfit_batches", "a fraction in [0.0, 1.0] or a number of batches >= 0",
         batch_limit(0)),
    Rule("trainer.detect_anomaly", "true or false", boolean),
    Rule("trainer.profiler", "null, 'simple', 'advanced', 'pytorch' or a profiler config with "
         "_target_", lambda v: v in (None, "simple", "advanced", "pytorch") or (
             isinstance(v, dict) and "_target_" in v)),
)

_ABSENT = object()


def _lookup(cfg: DictConfig, key: str) -> Any:
    node = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=False)
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _nonfinite(node: Any, key: str = "") -> tuple[str, float] | None:
    """The first leaf (dotted key, value) of a plain config that is a NaN or an infinity."""
    if isinstance(node, dict):
        items = ((f"{key}.{k}" if key else str(k), v) for k, v in node.items())
    elif isinstance(node, list):
        items = ((f"{key}[{i}]", v) for i, v in enumerate(node))
    else:
        return (key, node) if isinstance(node, float) and not math.isfinite(node) else None
    for child_key, child in items:
        found = _nonfinite(child, child_key)
        if found:
            return found
    return None


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
    try:
        plain = OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException:  # an interpolation that only Hydra's runtime resolves
        plain = OmegaConf.to_container(cfg, resolve=False)
    found = _nonfinite(plain)
    if found:
        raise ConfigError(f"config error: {found[0]}={found[1]!r} is not allowed; expected a "
                          "finite number (no nan or inf)")
    _check_combinations(plain)
    sizes = planned_splits((plain.get("data") or {}).get("source") or {})
    if sizes:
        check_split_sizes(plain, *sizes)


ADAPTIVE = ("Adam", "AdamW", "RMSprop", "NAdam", "RAdam", "Adamax", "Adagrad", "Adadelta")
HALF_EPS = 1e-4  # the smallest optimizer eps checked to keep pure float16 Adam finite


def _check_combinations(cfg: dict[str, Any]) -> None:
    """Values allowed alone but not together (on a plain, resolved config)."""
    trainer, optimizer = cfg.get("trainer", {}), cfg.get("optimizer", {})
    precision, accelerator = str(trainer.get("precision")), trainer.get("accelerator")
    if precision.startswith("transformer-engine"):
        if accelerator in ("cpu", "mps", "tpu"):
            raise ConfigError(f"config error: trainer.precision={precision!r} is not allowed with "
                              f"trainer.accelerator={accelerator!r}; expected accelerator=gpu "
                              "(Transformer Engine runs on NVIDIA GPUs only)")
        if find_spec("transformer_engine") is None:
            raise ConfigError(f"config error: trainer.precision={precision!r} needs the "
                              "transformer_engine package, which is not installed; expected "
                              "another precision, e.g. bf16-mixed, or pip install "
                              "transformer-engine")
    count = trainer.get("devices", "auto")
    if accelerator == "cpu" and count != "auto" and not (
            _is_int(count) and count >= 1 or isinstance(count, str) and count.isdigit()
            and int(count) >= 1):
        raise ConfigError(f"config error: trainer.devices={count!r} is not allowed with "
                          "trainer.accelerator='cpu'; expected a number of processes >= 1, "
                          "or 'auto'")
    if precision in ("64", "64-true") and accelerator == "mps":
        raise ConfigError(f"config error: trainer.precision={precision!r} is not allowed with "
                          "trainer.accelerator='mps' (no float64 on MPS); expected 32-true, "
                          "16-mixed or bf16-mixed")
    name = target_name(optimizer)
    eps = optimizer.get("eps", 1e-8 if name != "Adagrad" else 1e-10)
    if precision == "16-true" and name in ADAPTIVE and eps < HALF_EPS:
        raise ConfigError(f"config error: trainer.precision='16-true' is not allowed with "
                          f"optimizer {name} and eps={eps!r}: in float16 its squared gradients "
                          "underflow and the first update is NaN; expected "
                          f"+optimizer.eps={HALF_EPS} (or larger), optimizer=sgd, or "
                          "trainer.precision=bf16-true or 16-mixed")
    if optimizer.get("nesterov") and not optimizer.get("momentum"):
        raise ConfigError("config error: optimizer.nesterov=True is not allowed with "
                          f"optimizer.momentum={optimizer.get('momentum')!r}; expected a "
                          "momentum > 0 (e.g. optimizer.momentum=0.9)")
    stopping = (cfg.get("callbacks") or {}).get("early_stopping") or {}
    if (stopping.get("enabled") and str(stopping.get("monitor")).startswith("val/")
            and trainer.get("limit_val_batches") == 0):
        raise ConfigError("config error: callbacks.early_stopping.enabled=true is not allowed "
                          "with trainer.limit_val_batches=0 (it monitors "
                          f"{stopping.get('monitor')}); expected validation, or a train/ "
                          "monitor")
    if batch_norm(cfg) and cfg.get("data", {}).get("batch_size", 2) < 2:
        raise ConfigError(f"config error: data.batch_size={cfg['data']['batch_size']!r} is not "
                          "allowed with norm=batch; expected an integer >= 2 (batch norm needs "
                          "more than one example per batch)")
