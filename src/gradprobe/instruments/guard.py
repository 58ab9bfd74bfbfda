"""The divergence guard: one definition of a diverged run, for every run.

**The rule.** A run diverges at the first optimizer step ``s`` whose training loss

* is not finite (NaN or +-inf), or
* exceeds ``loss_factor`` (default ``1e4``, config ``divergence.loss_factor``) times the training
  loss of step 0 -- the untrained network on its first batch;

or, for the last step only, whose update left non-finite weights (no later loss can show it).
Nothing else is divergence: zero or vanishing gradients, dead or saturated units, a first/last
gradient ratio of 0/0 are diagnoses of a run that still trains, however badly.

**Why the loss.** It is the one quantity every run has at every step, monitored or not, without
extra device work. A non-finite gradient at step ``s`` makes that update, hence the weights and
the loss of step ``s + 1``, non-finite: the rule sees it one step later, but the same way whether
or not an instrument samples gradients -- so a solo run, the same run with ``gradflow=off`` and an
ensemble member (which applies this same :class:`Divergence` to each member's losses) get the same
status and the same step.

**Why 1e4 x the loss at step 0.** A finite blow-up (SGD at too large a learning rate: the loss
reaches 1e5 to 1e17 and stays there, or overflows a few steps later) is divergence by any reading,
yet nothing in it is non-finite. A fixed limit would depend on the loss's scale (cross-entropy over
10 classes starts at 2.3, an MSE wherever its targets are); relative to the untrained network it
does not. At 1e4 x, a classifier's loss of ~2e4 means logit margins of ~2e4 against the right
class. Measured on ``data=digits`` with SGD: runs that go on training (a too-large learning rate
that only kills units, early spikes) stay within ~100 x of step 0; those that pass 1e4 x are at
1e5 to 1e17 a step later and never come back below their initial loss (``lr=1000`` on a tanh net
sits at ~1e5 for good; a 2-layer ReLU net at ``lr=50`` spikes to 6e7 and settles at ~8 x). The
step recorded is the one that crosses the limit. A loss at step 0 that is not positive (perfect,
or a loss that can be negative) switches the factor off; the non-finite rule remains.

**Cost.** Per Lightning call, a reference to the call's per-step losses is kept (no device work;
the chunked engine returns them as ``step_losses``). Every ``check_every_n_steps`` optimizer steps
(default 32: once per call of the default chunked engine; once per 32 calls at
``engine.steps_per_call=1``), at each GradientFlow flush (which syncs anyway) and at the end of
training, they are reduced on the device (``torch.where`` and a running minimum) to the first
diverged step, and that one integer is copied to the host: the only synchronisation. The end of
training also checks the weights for non-finite values (once). A diverged run stops at that check
(``trainer.should_stop``); the step recorded is the first diverged one, not the check's.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from gradprobe.instruments.layers import find_layers

log = logging.getLogger("gradprobe")

LOSS_FACTOR = 1e4
CHECK_EVERY_N_STEPS = 32
NO_STEP = torch.iinfo(torch.int64).max  # "no diverged step" in the device-side minimum


class Divergence:
    """The rule, evaluated on the device, for one run or for each member of an ensemble (the
    losses' trailing dimension). Feed losses with :meth:`add`, read with :meth:`first_steps`."""

    def __init__(self, loss_factor: float = LOSS_FACTOR) -> None:
        self.loss_factor = loss_factor
        self.reference: Tensor | None = None  # the loss of step 0 (per member)
        self.first: Tensor | None = None  # the first diverged step (per member), or NO_STEP
        self._pending: list[tuple[int, Tensor]] = []

    def add(self, first_step: int, losses: Tensor) -> None:
        """The losses of consecutive steps from ``first_step`` along the leading dimension:
        kept by reference, no device work."""
        self._pending.append((first_step, losses.detach()))

    def reduce(self) -> None:
        """Fold the pending losses into the running first diverged step, on the device."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        losses = torch.cat([v for _, v in pending]).float()
        if self.reference is None:  # the first loss this rule sees: step 0's, unless resumed
            self.reference = losses[0].clone()
        self.reference = self.reference.to(losses.device)  # a no-op but after a resume
        if self.first is not None:
            self.first = self.first.to(losses.device)
        steps = torch.tensor([s + i for s, v in pending for i in range(len(v))],
                             device=losses.device).view(-1, *([1] * (losses.dim() - 1)))
        limit = torch.where(self.reference > 0, self.reference * self.loss_factor, torch.inf)
        bad = ~torch.isfinite(losses) | (losses > limit)
        self._fold(torch.where(bad, steps, NO_STEP).amin(0))

    def add_weights(self, step: int, finite: Tensor) -> None:
        """Whether the weights after ``step`` (the last) are all finite (per member)."""
        self._fold(torch.where(finite, NO_STEP, step))

    def _fold(self, first: Tensor) -> None:
        self.first = first if self.first is None else torch.minimum(self.first, first)

    def first_steps(self) -> list[int | None]:
        """Each member's first diverged step (``None``: none): one host copy."""
        self.reduce()
        if self.first is None:
            return []
        return [None if s == NO_STEP else s for s in self.first.reshape(-1).tolist()]

    def state_dict(self) -> dict[str, Any]:
        """The reference loss and the first diverged step so far, for a checkpoint (a resumed
        run keeps measuring against step 0 of the original run)."""
        self.reduce()
        return {key: None if value is None else value.tolist()
                for key, value in (("reference", self.reference), ("first", self.first))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("reference", "first"):
            if state.get(key) is not None:
                setattr(self, key, torch.tensor(state[key]))


def settings(cfg: Any) -> dict[str, Any]:
    """The ``divergence`` block of a run's config as :class:`Guard` arguments (defaults where
    a config predates it)."""
    block = cfg.get("divergence") or {}
    return {"loss_factor": float(block.get("loss_factor", LOSS_FACTOR)),
            "check_every_n_steps": int(block.get("check_every_n_steps", CHECK_EVERY_N_STEPS))}


def step_losses(outputs: Any) -> Tensor | None:
    """The per-step losses of one Lightning call: ``step_losses`` (the chunked engine),
    else the returned loss (one optimizer step, or one micro-batch of it)."""
    if isinstance(outputs, Mapping):
        outputs = outputs.get("step_losses", outputs.get("loss"))
    return outputs.detach().reshape(-1) if isinstance(outputs, Tensor) else None


def all_finite(tensors: Iterable[Tensor]) -> Tensor:
    """One device boolean: every tensor finite (a per-tensor loop, run once at the end)."""
    checks = [torch.isfinite(t.detach()).all() for t in tensors]
    return torch.stack(checks).all() if checks else torch.tensor(True)


def first_nonfinite(names: list[str], weights: list[Tensor],
                    grads: list[Tensor | None]) -> str | None:
    """The first layer, in depth order, whose weights (else, whose gradients) are not finite;
    a per-layer loop with host syncs, run once, when a run has diverged."""
    for tensors in (weights, grads):
        for name, t in zip(names, tensors, strict=True):
            if t is not None and not bool(torch.isfinite(t).all()):
                return name
    return None


def first_nonfinite_layer(pl_module: pl.LightningModule) -> str | None:
    """The first layer of the module, in depth order, whose weights or gradients are not
    finite."""
    try:
        layers = find_layers(pl_module)
    except ValueError:  # no layers to name
        return None
    weights = [layer.weight.weight for layer in layers]
    return first_nonfinite([layer.name for layer in layers], weights, [w.grad for w in weights])


class Guard(Callback):
    """Applies :class:`Divergence` to a Lightning run (see the module docstring). ``diverged``
    is ``None`` or ``{"step": first diverged step, "layer": first non-finite layer}``; the run
    stops at the check that finds it.

    Args:
        loss_factor: a finite loss above this many times the loss of step 0 is divergence.
        check_every_n_steps: read the device-side result at most this often (optimizer steps).
    """

    def __init__(self, loss_factor: float = LOSS_FACTOR,
                 check_every_n_steps: int = CHECK_EVERY_N_STEPS) -> None:
        super().__init__()
        self.rule = Divergence(loss_factor)
        self.every = check_every_n_steps
        self.diverged: dict[str, Any] | None = None
        self._step, self._next_check, self._finished = 0, check_every_n_steps, False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._next_check = trainer.global_step + self.every
        self._finished = False

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self._step = trainer.global_step

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        losses = step_losses(outputs)
        if losses is not None and self.diverged is None:
            self.rule.add(self._step, losses)
        if trainer.global_step >= self._next_check:
            self.check(trainer, pl_module)

    def check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any] | None:
        """Read the first diverged step (one host copy; with several processes, their
        minimum); a diverged run is told to stop."""
        self._next_check = trainer.global_step + self.every
        if self.diverged is not None:
            return self.diverged
        self.rule.reduce()
        first = self.rule.first if self.rule.first is not None else torch.tensor(NO_STEP)
        if trainer.world_size > 1:
            first = trainer.strategy.reduce(first.to(pl_module.device), reduce_op="min")
        step = int(first)
        if step != NO_STEP:
            self.diverged = {"step": step, "layer": first_nonfinite_layer(pl_module)}
            trainer.should_stop = True
            log.info("diverged at step %d (checked at step %d)", step, trainer.global_step)
        return self.diverged

    def finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any] | None:
        """The last check, once: the pending losses and the weights the last step left."""
        if not self._finished:
            self._finished = True
            if self.diverged is None and trainer.global_step > 0:
                self.rule.add_weights(trainer.global_step - 1, all_finite(pl_module.parameters()))
            self.check(trainer, pl_module)
        return self.diverged

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.finish(trainer, pl_module)

    def state_dict(self) -> dict[str, Any]:
        return self.rule.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rule.load_state_dict(state_dict)
