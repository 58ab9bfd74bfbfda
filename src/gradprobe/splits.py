"""Split sizes: planned from the config where it alone decides them, and checked against the
batch size and limits a run will use (torch-free, so a bad size is refused before torch loads)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

from gradprobe.errors import ConfigError


def target_name(node: Any) -> str:
    """The class or function a ``_target_`` names, without its module."""
    return str(node.get("_target_", "") if isinstance(node, dict) or OmegaConf.is_dict(node)
               else "").rsplit(".", 1)[-1]


def batch_norm(cfg: dict[str, Any]) -> bool:
    """Whether training batches must hold 2 or more examples: batch norm over (N, C) features
    fails on one (cnn1d normalises (N, C, L): its positions count too)."""
    norm, model = target_name(cfg.get("norm", {})), target_name(cfg.get("model", {}))
    return norm == "BatchNorm1d" and model in ("mlp", "resmlp")


DIGITS_EXAMPLES = 1797  # scikit-learn's bundled 8x8 digits
SPLIT_NAMES = {"train": "training", "val": "validation", "test": "test"}


def held_out(n: int, fraction: float) -> int:
    """How many of ``n`` examples ``gradprobe.data.split_off`` takes for ``fraction``."""
    return min(n, max(1, round(fraction * n)))


def planned_splits(source: dict[str, Any]) -> tuple[dict[str, int], dict[str, list[str]]] | None:
    """The train/val/test sizes a data source will produce where the config alone decides them
    (mnist1d, digits, synthetic), and for each split the keys that decide it; else None."""
    name, src = target_name(source), source
    try:
        if name == "mnist1d":
            n = src["num_samples"] // 10 * 10  # mnist1d makes num_samples // 10 per class
            rest = int(n * src["train_split"])
            val = held_out(rest, src["val_fraction"])
            keys = ["num_samples", "train_split", "val_fraction"]
            sizes = {"train": rest - val, "val": val, "test": n - rest}
            keyed = {"train": keys, "val": keys, "test": keys[:2]}
        elif name == "digits":
            test = held_out(DIGITS_EXAMPLES, src["test_fraction"])
            val = held_out(DIGITS_EXAMPLES - test, src["val_fraction"])
            sizes = {"train": DIGITS_EXAMPLES - test - val, "val": val, "test": test}
            keys = ["test_fraction", "val_fraction"]
            keyed = {"train": keys, "val": keys, "test": keys[:1]}
        elif name == "synthetic":
            sizes = {split: src[f"n_{split}"] for split in SPLIT_NAMES}
            keyed = {split: [f"n_{split}"] for split in SPLIT_NAMES}
        else:
            return None
    except KeyError:  # a key removed (~data.source.x): check_splits checks the loaded data
        return None
    return sizes, {split: [f"data.source.{k}" for k in keys] for split, keys in keyed.items()}


def _kept(n: int, batch: int, limit: int | float, drop_last: bool) -> int:
    """Examples a loader of ``n`` examples in batches of ``batch`` yields under Lightning's
    ``limit_*_batches`` ``limit`` (a fraction, or a count of batches)."""
    batches = n // batch if drop_last else -(-n // batch)
    kept = int(batches * limit) if isinstance(limit, float) else min(batches, limit)
    return n if kept == batches else kept * batch


def check_split_sizes(cfg: Any, sizes: dict[str, int], keys: dict[str, list[str]]) -> None:
    """Raise ConfigError where a split, or the part of it that a ``limit_*_batches`` keeps, is
    too small: no training batch, fewer than 2 examples for batch norm or for R2 (regression),
    an empty validation or test set. ``keys``: per split, the config keys that decide its size.
    Counts are for one device (under DDP each rank sees a shard)."""
    def value(key: str) -> Any:
        node: Any = cfg
        for part in key.split("."):
            node = node.get(part) if hasattr(node, "get") else None
        return node

    def fail(split: str, kept: int, because: list[str], needed: int, reason: str) -> None:
        shown = ", ".join(f"{k}={value(k)!r}" for k in because)
        counts = ", ".join(f"{s} {sizes[s]}" for s in SPLIT_NAMES)
        raise ConfigError(f"config error: {shown} leave{'s' if len(because) == 1 else ''} "
                          f"{kept} {SPLIT_NAMES[split]} example{'' if kept == 1 else 's'} "
                          f"({counts}); expected at least {needed}{reason}")

    regression = value("task") == "regression"
    for split in SPLIT_NAMES:
        needed, reason = 1, ""
        if split == "train" and batch_norm(cfg):
            needed, reason = 2, " (norm=batch needs 2 examples per batch)"
        elif split != "train" and regression:
            needed, reason = 2, " (task=regression: R2 needs 2)"
        if sizes[split] < needed:
            fail(split, sizes[split], keys[split], needed, reason)
    trainer, data = value("trainer") or {}, value("data") or {}
    batch = min(data.get("batch_size", 1), sizes["train"])
    limits = {"train": (batch, True), "val": (data.get("eval_batch_size", 1), False),
              "test": (data.get("eval_batch_size", 1), False)}
    for split, (size, drop_last) in limits.items():
        key = f"limit_{split}_batches"
        limit = trainer.get(key)
        limit = 1.0 if limit is None else limit  # null: Lightning's default, every batch
        if limit == 0:  # validation or test switched off
            continue
        kept = _kept(sizes[split], size, limit, drop_last)
        needed = 2 if split != "train" and regression else 1
        if kept < needed:
            batch_key = "data.batch_size" if split == "train" else "data.eval_batch_size"
            fail(split, kept, [f"trainer.{key}", batch_key], needed,
                 " (task=regression: R2 needs 2)" if needed == 2 else "")
