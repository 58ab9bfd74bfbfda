"""``EnsembleModule``: same-shape networks stacked into one LightningModule.

The members' parameters are stacked along a new leading dimension
(``torch.func.stack_module_state``) and registered as this module's parameters; one ``vmap``-ed
forward serves all members, and the loss Lightning back-propagates is the sum of the members'
losses, so each member gets exactly its own gradients. A step an instrument samples runs each
member's forward on its own instead, inside the instrument's ``watch_member(i)``, so the usual
hooks see one member's activations. Lightning drives everything else: epochs, ``max_steps``,
``limit_*_batches``, validation cadence, the scheduler, checkpoints.

Each member's losses and accuracy are summed on the device and logged per epoch under
``members/<i>/<key>`` (:func:`member_key`); :class:`gradprobe.ensemble.records.MemberLogs`
hands each member its own keys.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from gradprobe.instruments.guard import first_nonfinite
from gradprobe.instruments.schedule import SamplesSteps

Watch = Callable[[int], AbstractContextManager]


def member_key(i: int, key: str) -> str:
    """A member's own metric key, e.g. ``members/3/val/loss``."""
    return f"members/{i}/{key}"


class Totals:
    """One stage's per-member loss and accuracy sums over an epoch, on the device (a vector
    over members instead of a torchmetrics object per member)."""

    def __init__(self) -> None:
        self.loss: Tensor | float = 0.0
        self.correct: Tensor | int = 0
        self.weight = self.seen = 0

    def add(self, losses: Tensor, logits: Tensor, y: Tensor, weight: int) -> None:
        """``weight``: 1 per training step (Lightning's mean of step losses), the batch size
        in evaluation (its batch-size-weighted mean)."""
        self.loss = self.loss + losses * weight
        self.correct = self.correct + (logits.argmax(-1) == y).sum(-1)
        self.weight += weight
        self.seen += y.shape[-1]

    def means(self) -> dict[str, list[float]]:
        """``loss`` and ``acc`` per member (one host copy)."""
        if not self.weight:
            return {}
        means = torch.stack([self.loss / self.weight, self.correct / self.seen])
        return dict(zip(("loss", "acc"), means.tolist(), strict=True))


class EnsembleModule(pl.LightningModule):
    """The members of an ensemble as one module (see the module docstring).

    Args:
        nets: the members' networks, built and initialised as each would be alone.
        loss: the task's loss (classification: each member's accuracy is logged too).
        optimizer: the optimizer's config (a partial), as a solo run's.
        scheduler: the scheduler's config, or None.
        lrs: each member's learning rate.
    """

    def __init__(self, nets: list[nn.Module], loss: nn.Module, optimizer: dict[str, Any],
                 scheduler: dict[str, Any] | None, lrs: list[float]) -> None:
        super().__init__()
        params, buffers = stack_module_state(nets)
        self.names, self.buffer_names = list(params), list(buffers)
        self.stacked = nn.ParameterList([nn.Parameter(p.detach()) for p in params.values()])
        for k, buffer in enumerate(buffers.values()):
            self.register_buffer(f"stacked_buffer_{k}", buffer)
        base = copy.deepcopy(nets[0]).to("meta")  # the structure; weights come from `stacked`
        object.__setattr__(self, "base", base)  # not a submodule: no parameters of its own
        self.layers = list(base.layers())
        ids = {id(p): n for n, p in base.named_parameters()}
        self.weight_index = [self.names.index(ids[id(layer.weight.weight)])
                             for layer in self.layers]
        self.other_index = [k for k in range(len(self.names)) if k not in self.weight_index]
        self.loss, self.optimizer_cfg, self.scheduler_cfg = loss, optimizer, scheduler
        self.lrs, self.members = list(lrs), len(nets)
        self.num_parameters = sum(p.numel() for p in nets[0].parameters())
        self.totals = {stage: Totals() for stage in ("train", "val", "test")}
        self._step_losses: list[tuple[int, Tensor]] = []
        self._views: list[list[Tensor]] | None = None
        self._linked: list[Tensor | None] = []

    # ------------------------------------------------------------------ members' tensors

    def state(self, i: int | None = None) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        """Parameters and buffers by the network's names: stacked, or member ``i``'s slices."""
        buffers = [getattr(self, f"stacked_buffer_{k}") for k in range(len(self.buffer_names))]
        pick = (lambda t: t) if i is None else (lambda t: t[i])
        return ({n: pick(p) for n, p in zip(self.names, self.stacked, strict=True)},
                {n: pick(b) for n, b in zip(self.buffer_names, buffers, strict=True)})

    def weights(self, i: int, grad: bool = False) -> list[Tensor]:
        """Member ``i``'s layer weights (or their gradients), in depth order."""
        return [self._of(self.stacked[k], i, grad) for k in self.weight_index]

    def other_grads(self, i: int) -> list[Tensor]:
        """Member ``i``'s gradients of everything but the layer weights (biases, ...)."""
        return [self._of(self.stacked[k], i, True) for k in self.other_index]

    @staticmethod
    def _of(p: Tensor, i: int, grad: bool) -> Tensor:
        if not grad:
            return p[i]
        return p.grad[i] if p.grad is not None else torch.zeros_like(p[i])

    def member_state_dict(self, i: int) -> dict[str, Tensor]:
        """Member ``i`` as a solo ``GradprobeModule``'s state dict (``net.<name>``), on the CPU."""
        params, buffers = self.state(i)
        return {f"net.{k}": v.detach().cpu().clone() for k, v in (params | buffers).items()}

    def first_bad_layer(self, i: int) -> str | None:
        """Member ``i``'s first layer, in depth order, with non-finite weights or gradients."""
        return first_nonfinite([layer.name for layer in self.layers], self.weights(i),
                               self.weights(i, grad=True))

    # ------------------------------------------------------------------ forward

    def forward(self, x: Tensor, shared: bool = False) -> Tensor:
        """All members at once: ``x`` is ``(members, batch, ...)``, or one batch for all."""
        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], xb: Tensor) -> Tensor:
            return functional_call(self.base, (params, buffers), (xb,))
        return vmap(one, in_dims=(0, 0, None if shared else 0))(*self.state(), x)

    def forward_each(self, x: Tensor, watch: Watch) -> Tensor:
        """Member by member, each inside ``watch(i)`` (an instrument's hooks)."""
        outputs = []
        for i in range(self.members):
            with watch(i):
                outputs.append(functional_call(self.base, self.state(i), (x[i],)))
        return torch.stack(outputs)

    def _watch(self, step: int) -> Watch | None:
        """The ``watch_member`` of a callback that samples this step (the instruments'
        ``SamplesSteps`` protocol), if any."""
        for callback in self.trainer.callbacks:
            if (isinstance(callback, SamplesSteps) and hasattr(callback, "watch_member")
                    and callback.wants_step(step)):
                return callback.watch_member
        return None

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Tensor]:
        x, y = batch  # (members, batch, ...)
        step = self.trainer.global_step
        watch = self._watch(step)
        logits = self(x) if watch is None else self.forward_each(x, watch)
        losses = vmap(self.loss)(logits, y)
        detached = losses.detach()
        self.totals["train"].add(detached, logits.detach(), y, 1)
        if step % self.trainer.log_every_n_steps == 0:
            self._step_losses.append((step, detached))
        # member_losses: each member's loss, for its divergence guard
        return {"loss": losses.sum(), "member_losses": detached}

    def _evaluate(self, batch: tuple[Tensor, Tensor], stage: str) -> None:
        x, y = batch  # shared by all members
        logits = self(x, shared=True)
        losses = vmap(self.loss, in_dims=(0, None))(logits, y)
        self.totals[stage].add(losses, logits, y, len(x))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    # ------------------------------------------------------------------ epoch ends: logging

    def _log_totals(self, stage: str) -> None:
        """The epoch's per-member means under each member's keys, as a solo run logs them."""
        for name, values in self.totals[stage].means().items():
            for i, value in enumerate(values):
                self.log(member_key(i, f"{stage}/{name}"), value)
        self.totals[stage] = Totals()

    def on_train_epoch_end(self) -> None:
        self._log_totals("train")
        if self._step_losses:  # every log_every_n_steps-th step's losses, one host copy
            steps, values = zip(*self._step_losses, strict=True)
            self._step_losses = []
            for step, row in zip(steps, torch.stack(values).tolist(), strict=True):
                metrics = {member_key(i, "train/loss_step"): v for i, v in enumerate(row)}
                for logger in self.loggers:
                    logger.log_metrics(metrics, step=step)

    def on_validation_epoch_start(self) -> None:
        self.totals["val"] = Totals()

    def on_validation_epoch_end(self) -> None:
        self._log_totals("val")

    def on_test_epoch_end(self) -> None:
        self._log_totals("test")

    # ------------------------------------------------------------------ the optimizer

    def configure_optimizers(self) -> Any:
        """One torch optimizer. With one learning rate it steps the stacked tensors; with
        several, each member is its own parameter group of views into them (their gradients:
        views into the stacked gradients, linked in ``on_before_optimizer_step``), so each
        member's update is computed exactly as alone -- Adam turns rounding-level differences
        into lr-sized ones, so "nearly the same update" would not do."""
        factory = instantiate(self.optimizer_cfg)
        if len(set(self.lrs)) == 1:
            optimizer = factory(list(self.stacked))
        else:
            self._views = [[p.detach()[i] for p in self.stacked] for i in range(self.members)]
            optimizer = factory([{"params": v, "lr": lr}
                                 for v, lr in zip(self._views, self.lrs, strict=True)])
        if not self.scheduler_cfg:
            return optimizer
        scheduler = instantiate(self.scheduler_cfg)(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler,
                                                         "interval": "epoch"}}

    def optimizer_zero_grad(self, epoch: int, batch_idx: int, optimizer: Any) -> None:
        """With views, the stacked gradients are zeroed in place: the views keep pointing
        at them."""
        if self._views is None:
            optimizer.zero_grad()
        elif grads := [p.grad for p in self.stacked if p.grad is not None]:
            torch._foreach_zero_(grads)

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        grads = [p.grad for p in self.stacked]
        linked = len(grads) == len(self._linked) and all(
            a is b for a, b in zip(grads, self._linked, strict=True))
        if self._views is None or linked:
            return
        self._linked = grads
        for i, views in enumerate(self._views):
            for view, grad in zip(views, grads, strict=True):
                view.grad = None if grad is None else grad[i]
