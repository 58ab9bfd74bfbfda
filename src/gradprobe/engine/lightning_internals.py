"""The only place gradprobe touches Lightning's private state.

A chunked Lightning call trains several optimizer steps; Lightning's counters must still count
optimizer steps, as they would with one step per call. Two private pieces do that, and a
Lightning upgrade that moves them breaks this file alone (``tests/test_engine.py`` checks the
counters against one step per call).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl


def count_optimizer_step(optimizer: Any) -> None:
    """Advance ``trainer.global_step`` for a step taken on the raw torch optimizer, exactly as
    ``LightningOptimizer.step`` counts its own."""
    optimizer._on_before_step()
    optimizer._on_after_step()


def log_at_step(trainer: pl.Trainer, last_step: int) -> None:
    """Make ``self.log`` record the call at its last optimizer step: Lightning logs at a step
    that counts calls (``_batches_that_stepped``), +1 after this call."""
    trainer.fit_loop.epoch_loop._batches_that_stepped = last_step
