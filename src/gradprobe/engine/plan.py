"""How many optimizer steps one Lightning call trains, and what the loader and Trainer need for
it: the one decision behind ``engine.steps_per_call``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("gradprobe")


@dataclass(frozen=True)
class Plan:
    """``steps_per_call`` for the module and loader; ``train_limit`` is
    ``limit_train_batches`` counted in batches (the loader applies it when chunking);
    ``trainer_kwargs`` replace the Trainer arguments that chunks would misread."""

    steps_per_call: int
    train_limit: int | float = 1.0
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)


def plan(cfg: DictConfig) -> Plan:
    chunk = steps_per_call(cfg)
    if chunk == 1:
        return Plan(1)
    # Lightning would count chunks, not batches: the loader applies the limit instead, and
    # Lightning is given its default (None: every batch, without a line saying so).
    limit = cfg.trainer.limit_train_batches
    return Plan(chunk, 1.0 if limit is None else limit, {"limit_train_batches": None})


def steps_per_call(cfg: DictConfig) -> int:
    """``engine.steps_per_call``, or 1 where Lightning must drive every optimizer step itself:
    gradient accumulation, gradient clipping, more than one device."""
    trainer, wanted = cfg.trainer, cfg.engine.steps_per_call
    devices = trainer.get("devices", 1)
    one_device = devices in (1, "1") or (OmegaConf.is_list(devices) and len(devices) == 1) or (
        devices == "auto" and trainer.get("accelerator") == "cpu")
    if wanted > 1 and (trainer.accumulate_grad_batches > 1 or trainer.gradient_clip_val
                       or not one_device or trainer.get("num_nodes", 1) > 1):
        log.info("engine.steps_per_call=%d needs accumulate_grad_batches=1, no gradient "
                 "clipping and one device; training one step per Lightning call", wanted)
        return 1
    return wanted
