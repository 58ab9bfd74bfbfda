"""``MemberInstruments``: each member's gradient-flow instruments and divergence guard, as one
Lightning callback on the ensemble's Trainer.

Every member has its own ``GradientFlow`` (built as a solo run's, by
``gradprobe.callbacks.build_gradflow``),
not as a callback of its own: this callback drives its measuring methods on the member's slice of
the stacked tensors, at the hooks where ``GradientFlow`` measures a solo run. On a sampled step
the module runs each member's forward inside :meth:`MemberInstruments.watch_member`, which attaches
the usual activation and dL/dh hooks; gradients are read before the optimizer step, the update after
it. Divergence is the solo run's rule (:class:`gradprobe.instruments.guard.Divergence`), applied to
each member's losses at once: a diverged member stops counting (its logs, metrics, step count and
checkpoints stay where it stopped) while the others train on; when none is left, training stops.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from gradprobe import console, outcome
from gradprobe.ensemble.module import EnsembleModule, member_key
from gradprobe.instruments import guard, record_activations, record_backprop, watch_layers

log = logging.getLogger("gradprobe")


class MemberInstruments(Callback):
    """See the module docstring. ``members`` have ``gradflow`` (a ``GradientFlow`` or None),
    ``run_dir``, and the fields this callback fills when a member stops or training ends:
    ``stopped_at``, ``diverged``, ``metrics``, ``epochs``, ``steps``."""

    def __init__(self, members: list[Any], loss_factor: float = guard.LOSS_FACTOR,
                 check_every_n_steps: int = guard.CHECK_EVERY_N_STEPS) -> None:
        super().__init__()
        self.members, self.every = members, check_every_n_steps
        self.rule = guard.Divergence(loss_factor)
        self.gradflow = next((m.gradflow for m in members if m.gradflow is not None), None)
        self._rows: list[Any] | None = None
        self._step = self._next_check = 0

    # ------------------------------------------------------------------ set-up

    def on_train_start(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        total = trainer.estimated_stepping_batches  # Lightning's count: limits, max_steps
        last = int(total) - 1 if math.isfinite(total) else -1
        self._layers = pl_module.layers
        for member in self.members:
            if member.gradflow is not None:
                member.gradflow.watch(pl_module.layers, member.run_dir / "gradflow", last)
                member.gradflow.numel = member.gradflow.numel.to(pl_module.device)
        self._next_check = trainer.global_step + self.every

    def wants_step(self, step: int) -> bool:
        """Whether step ``step`` is sampled (members share one schedule)."""
        return self.gradflow is not None and self.gradflow.wants_step(step)

    def _live(self) -> Iterator[tuple[int, Any]]:
        return ((i, m) for i, m in enumerate(self.members) if m.stopped_at is None)

    # ------------------------------------------------------------------ a sampled step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: EnsembleModule,
                             batch: Any, batch_idx: int) -> None:
        self._step = step = trainer.global_step
        self._rows = None
        if self.wants_step(step):
            self._rows = [None] * len(self.members)
            for i, member in self._live():
                self._rows[i] = member.gradflow.new_row(step)
            self._backprops = [[None] * len(pl_module.layers) for _ in self.members]
            self._norms: list[Tensor | None] = [None] * len(self.members)
            self._before: list[list[Tensor] | None] = [None] * len(self.members)

    @contextmanager
    def watch_member(self, i: int) -> Iterator[None]:
        """Member ``i``'s forward on a sampled step, watched by its instruments' hooks."""
        row = self._rows[i] if self._rows else None
        if row is None:
            yield
            return
        seen: list = [None] * len(self._layers)
        handles = watch_layers(self._layers, self._backprops[i], seen)
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        record_activations(row, self._layers, seen, self.members[i].gradflow.margin)

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: EnsembleModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        if not self._rows:
            return
        for i, member in self._live():
            if (row := self._rows[i]) is not None:
                weights = pl_module.weights(i)
                record_backprop(row, self._backprops[i])
                self._norms[i] = member.gradflow.measure_gradients(
                    row, weights, pl_module.weights(i, grad=True), pl_module.other_grads(i))
                self._before[i] = torch._foreach_mul(weights, 1.0)

    @torch.no_grad()
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: EnsembleModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        sampled = self._rows is not None
        for i, member in self._live():
            if sampled and self._before[i] is not None:
                member.gradflow.measure_update(self._rows[i], pl_module.weights(i),
                                               self._before[i], self._norms[i])
        self._rows = None
        self.rule.add(self._step, outputs["member_losses"][None])  # a reference: no device work
        if sampled or trainer.global_step >= self._next_check:
            self.check(trainer, pl_module)  # one host copy; a sampled step syncs anyway
        if sampled:
            for _, member in self._live():
                if member.gradflow.flush_due():
                    with console.job(member.job):  # the init verdict, tagged with its job
                        member.gradflow.flush([])

    # ------------------------------------------------------------------ divergence, the end

    def check(self, trainer: pl.Trainer, pl_module: EnsembleModule, final: bool = False) -> None:
        """Each member's first diverged step by the solo rule (at the end also the weights
        the last step left); a member found diverged stops counting."""
        self._next_check = trainer.global_step + self.every
        if final and trainer.global_step > 0:
            finite = torch.stack([torch.isfinite(p.detach()).flatten(1).all(1)
                                  for p in pl_module.stacked]).all(0)
            self.rule.add_weights(trainer.global_step - 1, finite)
        first = self.rule.first_steps() or [None] * len(self.members)
        for i in [i for i, _ in self._live() if first[i] is not None]:
            self._stop(trainer, pl_module, i, {"step": first[i],
                                               "layer": pl_module.first_bad_layer(i)})
        if all(m.stopped_at is not None for m in self.members):
            trainer.should_stop = True

    def _stop(self, trainer: pl.Trainer, pl_module: EnsembleModule, i: int,
              diverged: dict[str, Any]) -> None:
        member = self.members[i]
        self._settle(trainer, i)
        member.stopped_at, member.diverged = trainer.global_step, diverged
        with console.job(member.job):
            log.info("%s diverged at step %d (checked at step %d)", member.run_dir,
                     diverged["step"], trainer.global_step)
            if member.gradflow is not None:
                member.gradflow.diverged = diverged
                member.gradflow.flush([])

    def _settle(self, trainer: pl.Trainer, i: int) -> None:
        """Member ``i``'s metrics, epochs and steps as they stand now."""
        member = self.members[i]
        member.metrics = outcome.metrics_of(trainer.callback_metrics, member_key(i, ""))
        member.epochs, member.steps = trainer.current_epoch, trainer.global_step

    def on_train_end(self, trainer: pl.Trainer, pl_module: EnsembleModule) -> None:
        self.check(trainer, pl_module, final=True)
        for i, member in self._live():
            self._settle(trainer, i)
            if member.gradflow is not None:
                member.gradflow.flush([])

    def on_exception(self, trainer: pl.Trainer, pl_module: EnsembleModule,
                     exception: BaseException) -> None:
        """A crashed or interrupted ensemble keeps the rows its members had measured."""
        for member in self.members:
            if member.gradflow is not None:
                member.gradflow.flush([])
