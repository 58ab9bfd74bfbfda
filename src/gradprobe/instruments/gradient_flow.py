"""``GradientFlow``: per-layer gradient, update and activation statistics as a Lightning callback.

Every ``every_n_steps`` optimizer steps (counted in optimizer steps, so gradient accumulation is
handled) one row is sampled:

* gradients, in ``on_before_optimizer_step`` -- after AMP unscaling and the DDP all-reduce,
  before clipping: per layer ||dL/dW||, ||W||, their ratio, mean |g|; the global norm;
  the first/last hidden layer ratio. Fused ``torch._foreach_norm`` calls, no host sync;
* the global norm after clipping and ||dW|| / ||W|| of the update, in optimizer step hooks;
* activations and the back-propagated gradient dL/dh at each block's output, from hooks that
  are attached only for the first micro-batch of a sampled step and removed after its backward
  (a forward pre-hook on the first layer decides, so this works however many optimizer steps
  one Lightning call takes; ``wants_step`` tells a module which steps need Lightning's hooks).

Step 0 is always sampled: it is the *init probe*, measured on the first batch before any update.
Rows stay on the device and are flushed (one host copy) every ``flush_every_n_samples`` samples,
right after the init probe, and at the end of training. Divergence is the divergence guard's
(:mod:`gradprobe.instruments.guard`, one rule for every run): the trainer's ``Guard`` if it has
one, else a private one this callback drives; it is also read at each flush (which syncs anyway),
so the rows and the verdict of a diverged run say where it diverged.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor

from gradprobe.data import StepChunks
from gradprobe.instruments import diagnosis
from gradprobe.instruments.guard import Guard
from gradprobe.instruments.layers import find_layers
from gradprobe.instruments.recorder import LAYER_STATS, STEP_STATS, Recorder, Row
from gradprobe.instruments.stats import (
    ACT_BINS,
    ACTIVATION_STATS,
    GRAD_BINS,
    activation_stats,
    bounds_of,
    dies_of,
    log10_abs,
)
from gradprobe.nets import Layer
from gradprobe.record import write_json

log = logging.getLogger("gradprobe")
_L = {stat: i for i, stat in enumerate(LAYER_STATS)}
_S = {stat: i for i, stat in enumerate(STEP_STATS)}


class GradientFlow(Callback):
    """Records gradient flow of any LightningModule (see the module docstring).

    Args:
        every_n_steps: sample one optimizer step in this many.
        histogram_every_n_steps: also take histograms on these steps (a multiple of the above).
        flush_every_n_samples: rows kept on the device between host copies.
        saturation_margin: an output this close to a bound of sigmoid/tanh/softsign saturates.
        thresholds: diagnosis thresholds (see ``diagnosis.THRESHOLDS``).
        layers: the layers to watch; by default ``find_layers(pl_module)``.
        out_dir: where ``layers.csv``, ``steps.csv``, ``histograms.npz`` and ``diagnosis.json``
            go; by default ``<trainer.default_root_dir>/gradflow``.
        context: the run's choices (activation, init, norm, model, optimizer, lr, ...), to
            phrase the remedies of the diagnosis for this run.
        figures: draw the PNG figures at the end of training.
        resume: continue the records in ``out_dir`` (a resumed run): their rows stay the
            history, and the init probe's verdict is read back from its row.
    """

    def __init__(self, every_n_steps: int = 10, histogram_every_n_steps: int = 100,
                 flush_every_n_samples: int = 10, saturation_margin: float = 0.05,
                 thresholds: dict[str, float] | None = None, layers: list[Layer] | None = None,
                 out_dir: str | Path | None = None, context: dict[str, Any] | None = None,
                 figures: bool = True, resume: bool = False) -> None:
        super().__init__()
        self.resume = resume
        self.every, self.hist_every = every_n_steps, histogram_every_n_steps
        self.flush_every, self.margin = flush_every_n_samples, saturation_margin
        self.thresholds = diagnosis.THRESHOLDS | dict(thresholds or {})
        self.layers, self.out_dir, self.context = layers, out_dir, dict(context or {})
        self.figures = figures
        self.report: dict[str, Any] = {}
        # this run's mean-field prediction (gradprobe.theory.for_config), drawn beside the
        # measured profiles
        self.prediction: dict[str, Any] | None = None
        self.diverged: dict[str, Any] | None = None
        self._row: Row | None = None
        self._weights_before: list[Tensor] | None = None
        self._hooks: list[Any] = []
        self._run_hooks: list[Any] = []

    # ------------------------------------------------------------------ set-up and tear-down

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self.watch(self.layers or find_layers(pl_module),
                   Path(self.out_dir or Path(trainer.default_root_dir) / "gradflow"))

    def watch(self, layers: list[Layer], out_dir: Path, last_step: int = -1) -> None:
        """The layers to measure and where their records go (``setup`` does this for a
        Trainer; the ensemble trainer calls it for each member)."""
        self.layers, self.names = layers, [layer.name for layer in layers]
        self.weights = [layer.weight.weight for layer in layers]
        self.numel = torch.tensor([float(w.numel()) for w in self.weights])
        self.recorder = Recorder(out_dir, self.names)
        if self.resume:
            self.recorder.load()
            history = self.recorder.history
            if history and history[0].step == 0:
                self.report["init"] = diagnosis.diagnose(history[0], self.names,
                                                         self.thresholds, self.context)
        self._last_step = last_step

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.numel = self.numel.to(pl_module.device)
        self._trainer = trainer
        self._last_step = last_step(trainer)
        for optimizer in trainer.optimizers:
            self._run_hooks.append(optimizer.register_step_post_hook(self._after_update))
        self._run_hooks.append(self.layers[0].block.register_forward_pre_hook(self._on_forward))
        self._completed = False
        self._guard = next((c for c in trainer.callbacks if isinstance(c, Guard)), None)
        self._own_guard = self._guard is None
        if self._own_guard:  # used on its own: run the divergence rule itself
            self._guard = Guard()
            self._guard.on_train_start(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for hook in self._run_hooks:
            hook.remove()
        self._run_hooks = []
        self._remove_hooks()
        self.diverged = self._guard.finish(trainer, pl_module)
        self._flush(trainer)
        self._finish(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                     exception: BaseException) -> None:
        """A crashed or interrupted run keeps the rows it had measured."""
        self._remove_hooks()
        self._flush(trainer)

    # ------------------------------------------------------------------ the sampling schedule

    def wants_step(self, step: int) -> bool:
        """Whether optimizer step ``step`` is sampled (and so needs Lightning's hooks)."""
        return step % self.every == 0 or self._histogram_step(step)

    def _histogram_step(self, step: int) -> bool:
        """Every ``hist_every`` steps, and the last step, so "at the end" is really the end."""
        return step % self.hist_every == 0 or step == self._last_step

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        if self._own_guard:
            self._guard.on_train_batch_start(trainer, pl_module, batch, batch_idx)

    def _on_forward(self, module: torch.nn.Module, args: Any) -> None:
        """Forward pre-hook of the first layer: the first training forward of a sampled step
        (its first micro-batch) starts the step's row and attaches the activation hooks."""
        step = self._trainer.global_step
        if not module.training or self._row is not None or not self.wants_step(step):
            return
        self._row = self.new_row(step)
        self._attach_hooks(self._trainer)

    def new_row(self, step: int) -> Row:
        """An empty row for ``step`` on the device (with an activation histogram if due)."""
        row = self.recorder.new_row(step, self.numel.device)
        if self._histogram_step(step):
            row.act_hist = torch.zeros(len(self.layers), ACT_BINS.count, dtype=torch.long,
                                       device=self.numel.device)
        return row

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._hooks:
            self._remove_hooks()
            row = self._row
            record_backprop(row, self._backprop)
            record_activations(row, self.layers, self._seen, self.margin)
            self._seen = []

    # ------------------------------------------------------------------ gradients and updates

    @torch.no_grad()
    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: torch.optim.Optimizer) -> None:
        row = self._row
        if row is None or row.step != trainer.global_step:
            return
        weight_ids = {id(w) for w in self.weights}
        others = [p.grad for p in pl_module.parameters()
                  if p.grad is not None and id(p) not in weight_ids]
        grads = [w.grad if w.grad is not None else torch.zeros_like(w) for w in self.weights]
        self._weight_norms = self.measure_gradients(row, self.weights, grads, others,
                                                    clipping=bool(trainer.gradient_clip_val))
        # Clipping (next, inside Lightning) changes gradients, not weights: the snapshot for the
        # update ratio can be taken now.
        self._weights_before = torch._foreach_mul(self.weights, 1.0)
        self._clipping = bool(trainer.gradient_clip_val)

    @torch.no_grad()
    def _after_update(self, optimizer: torch.optim.Optimizer, *_: Any) -> None:
        """Optimizer step post-hook. Lightning runs forward, backward, the hook above and
        clipping inside ``optimizer.step(closure)``, so only after the step are the clipped
        gradients (optimizers do not modify ``.grad``) and the new weights both in view."""
        before = self._weights_before
        if before is None:
            return
        self._weights_before = None
        if self._clipping:
            self._row.steps[_S["grad_global_norm"]] = global_norm_of(
                [p for group in optimizer.param_groups for p in group["params"]])
        self.measure_update(self._row, self.weights, before, self._weight_norms)
        self._row = None

    def measure_gradients(self, row: Row, weights: list[Tensor], grads: list[Tensor],
                          other_grads: list[Tensor], clipping: bool = False) -> Tensor:
        """The gradient statistics of a sampled step into ``row`` (and its histogram if due).
        Returns the weight norms."""
        global_norm, weight_norms = record_gradients(row, weights, grads, other_grads,
                                                     self.numel)
        if not clipping:  # nothing will clip: the norm after is the same
            row.steps[_S["grad_global_norm"]] = global_norm
        if self._histogram_step(row.step):
            row.grad_hist = GRAD_BINS.counts_per_tensor([log10_abs(g) for g in grads])
        return weight_norms

    def measure_update(self, row: Row, weights: list[Tensor], before: list[Tensor],
                       weight_norms: Tensor) -> None:
        """The update ratio of a sampled step, which completes its row."""
        record_update(row, weights, before, weight_norms)
        self.recorder.pending.append(row)
        self._completed = True

    # ------------------------------------------------------------------ activations, dL/dh

    def _attach_hooks(self, trainer: pl.Trainer) -> None:
        self._backprop: list[Tensor | None] = [None] * len(self.layers)
        self._seen: list[tuple[Tensor, Tensor | None] | None] = [None] * len(self.layers)
        self._hooks = watch_layers(self.layers, self._backprop, self._seen,
                                   float(trainer.accumulate_grad_batches),
                                   getattr(trainer.precision_plugin, "scaler", None))

    def _remove_hooks(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    # ------------------------------------------------------------------ guard and flushing

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._own_guard:
            self._guard.on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        self.diverged = self._guard.diverged
        if self._completed:  # a sampled step finished in this batch
            self._completed = False
            if self.flush_due():  # a flush syncs anyway: read the guard first
                self.diverged = self._guard.check(trainer, pl_module)
                self._flush(trainer)

    def flush_due(self) -> bool:
        """Flush right after the init probe (its verdict is printed at once), every
        ``flush_every_n_samples`` samples, and as soon as the run diverged."""
        pending = self.recorder.pending
        init = any(row.step == 0 for row in pending)
        return init or len(pending) >= self.flush_every or self.diverged is not None

    def _flush(self, trainer: pl.Trainer) -> None:
        self.flush(trainer.loggers, trainer.is_global_zero)

    def _finish(self, trainer: pl.Trainer) -> None:
        self.finish(trainer.loggers, trainer.is_global_zero)

    def flush(self, loggers: list[Any], write: bool = True) -> None:
        """Pending rows to the host, the files and ``loggers``; the init verdict once known."""
        host = self.recorder.flush(loggers, write=write)
        if host and host[0].step == 0 and "init" not in self.report:
            at_init = self.diverged if self.diverged and self.diverged["step"] == 0 else None
            self.report["init"] = diagnosis.diagnose(host[0], self.names, self.thresholds,
                                                     self.context, diverged=at_init)
            if write:
                log.info("init probe: %s", self.report["init"]["text"])

    def finish(self, loggers: list[Any], write: bool = True) -> None:
        """The final diagnosis, ``diagnosis.json``, the figures, and the verdicts to W&B."""
        history = self.recorder.history
        if history:
            self.report["final"] = diagnosis.diagnose(history[-1], self.names, self.thresholds,
                                                      self.context, diverged=self.diverged)
        if not write or not history:
            return
        out_dir = self.recorder.out_dir
        write_json(out_dir / "diagnosis.json", self.report)
        log.info("diagnosis: %s", self.report["final"]["text"])
        if self.figures:
            from gradprobe.figures import draw_all

            try:  # a figure that cannot be drawn must not fail the run that measured it
                self.report["figures"] = [str(p) for p in draw_all(out_dir.parent,
                                                                   self._predicted())]
            except Exception:
                log.exception("the gradient-flow figures could not be drawn")
        for logger in loggers:
            publish(logger, self.report)


    def _predicted(self) -> dict[str, dict[str, float]] | None:
        """The mean-field profiles per layer: the gradient norms anchored at the last hidden
        layer's measured value at init, the pre-activation cosines as predicted."""
        init = self.recorder.history[0] if self.recorder.history else None
        p = self.prediction
        if not p or not p.get("applies") or init is None or init.step != 0:
            return None
        last = len(p["chi1_layers"]) - 1
        downstream = [math.prod(p["chi1_layers"][k + 1:]) ** 0.5 for k in range(last + 1)]
        out = {"grad_norm": (init.layers["grad_norm"][last], p["relative_weight_gradients"]),
               "backprop_norm": (init.layers["backprop_norm"][last], downstream),
               "pre_cosine": (1.0, p.get("c_layers") or [])}
        return {stat: {name: anchor * r for name, r in zip(self.names, profile, strict=False)}
                for stat, (anchor, profile) in out.items()}


def watch_layers(layers: list[Layer], backprop: list[Tensor | None],
                 seen: list[tuple[Tensor, Tensor | None] | None], grad_scale: float = 1.0,
                 scaler: Any = None) -> list[Any]:
    """Forward hooks for one sampled forward pass: each layer's pre-activation and activation
    into ``seen[j]`` (for :func:`record_activations`), and each block output's ||dL/dh|| into
    ``backprop[j]`` when the backward reaches it, times ``grad_scale`` (gradient accumulation)
    and divided by an AMP ``scaler``'s loss scale. Returns the handles."""
    def on_block(j: int):
        def hook(module: Any, inputs: Any, output: Tensor) -> None:
            if isinstance(output, Tensor) and output.requires_grad:
                def on_grad(grad: Tensor) -> None:
                    norm = torch.linalg.vector_norm(grad.detach().float()) * grad_scale
                    backprop[j] = norm / scaler._scale if scaler else norm
                output.register_hook(on_grad)
        return hook

    def on_activation(j: int, layer: Layer):
        def hook(module: Any, inputs: Any, output: Tensor) -> None:
            if layer.activation is None:
                seen[j] = (output.detach(), None)
            else:
                seen[j] = (inputs[0].detach(), output.detach())
        return hook

    handles = []
    for j, layer in enumerate(layers):
        watched = layer.activation if layer.activation is not None else layer.weight
        handles += [layer.block.register_forward_hook(on_block(j)),
                    watched.register_forward_hook(on_activation(j, layer))]
    return handles


def record_activations(row: Row, layers: list[Layer],
                       seen: list[tuple[Tensor, Tensor | None] | None], margin: float) -> None:
    """The activation statistics of the layers seen, computed for each group of layers with
    the same shapes and bounds at once (and the histograms, on histogram steps)."""
    groups: dict[tuple, list[int]] = {}
    for j, item in enumerate(seen):
        if item is not None:
            pre, out = item
            activation = layers[j].activation
            key = (pre.shape, None if out is None else out.shape, bounds_of(activation),
                   dies_of(activation))
            groups.setdefault(key, []).append(j)
    first, last = _L[ACTIVATION_STATS[0]], _L[ACTIVATION_STATS[-1]]
    for (_, has_out, bounds, dies), index in groups.items():
        pre = torch.stack([seen[j][0] for j in index])
        out = torch.stack([seen[j][1] for j in index]) if has_out is not None else None
        row.layers[first:last + 1, index] = activation_stats(pre, out, bounds, margin, dies)
    if row.act_hist is not None:
        index = [j for j, item in enumerate(seen) if item is not None and item[1] is not None]
        if index:
            row.act_hist[index] = ACT_BINS.counts_per_tensor([seen[j][1] for j in index])


def record_backprop(row: Row, backprop: list[Tensor | None]) -> None:
    nan = torch.tensor(math.nan, device=row.layers.device)
    row.layers[_L["backprop_norm"]] = torch.stack([nan if n is None else n for n in backprop])


def record_gradients(row: Row, weights: list[Tensor], grads: list[Tensor], other_grads:
                     list[Tensor], numel: Tensor) -> tuple[Tensor, Tensor]:
    """Per layer ||g||, ||W||, ratio and mean |g|, and the first/last hidden ratio and global
    norm (every gradient: ``grads`` of the layer weights plus ``other_grads``) into ``row``.
    One fused norm over all gradients. Returns the global norm and the weight norms."""
    all_norms = norms_of(grads + other_grads)
    norms = all_norms[:len(grads)]
    weight_norms = norms_of(weights)
    row.layers[_L["grad_norm"]] = norms
    row.layers[_L["weight_norm"]] = weight_norms
    row.layers[_L["grad_ratio"]] = norms / weight_norms
    row.layers[_L["grad_mean_abs"]] = norms_of(grads, 1) / numel
    row.steps[_S["grad_first_last_ratio"]] = norms[0] / norms[max(len(weights) - 2, 0)]
    global_norm = torch.linalg.vector_norm(all_norms)
    row.steps[_S["grad_global_norm_preclip"]] = global_norm
    return global_norm, weight_norms


def norms_of(tensors: list[Tensor], ord: int = 2) -> Tensor:
    """One fused norm per tensor, accumulated in at least float32: a float16 (``16-true``)
    gradient's norm would overflow to inf at 65504."""
    dtype = torch.promote_types(tensors[0].dtype, torch.float32) if tensors else torch.float32
    return torch.stack(torch._foreach_norm(tensors, ord, dtype=dtype))


def record_update(row: Row, weights: list[Tensor], before: list[Tensor],
                  weight_norms: Tensor) -> None:
    """||dW|| / ||W|| of the update just applied, per layer."""
    change = norms_of(torch._foreach_sub(weights, before))
    row.layers[_L["update_ratio"]] = change / weight_norms


def last_step(trainer: pl.Trainer) -> int:
    """The run's last optimizer step (-1: unknown), for a histogram at the very end. A loader
    whose batches are chunks of several steps (``data.StepChunks``) says how many per epoch."""
    chunks = getattr(trainer.train_dataloader, "batch_sampler", None)
    if not isinstance(chunks, StepChunks):
        total = trainer.estimated_stepping_batches
        return int(total) - 1 if math.isfinite(total) else -1
    return last_step_of(chunks.batches, trainer.max_epochs, trainer.max_steps)


def last_step_of(batches_per_epoch: int, max_epochs: int, max_steps: int) -> int:
    """The last step of a run of one step per batch (-1 when neither limit is set)."""
    total = batches_per_epoch * max_epochs if max_epochs > 0 else math.inf
    if max_steps >= 0:
        total = min(total, max_steps)
    return int(total) - 1 if math.isfinite(total) else -1


def global_norm_of(params: list[Tensor]) -> Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    return torch.linalg.vector_norm(norms_of(grads))


def first_nonfinite_layer(layers: list[Layer]) -> str | None:
    """The first layer, in depth order, whose weights or gradients are not finite."""
    for tensors in ([lay.weight.weight for lay in layers],
                    [lay.weight.weight.grad for lay in layers]):
        for layer, t in zip(layers, tensors, strict=True):
            if t is not None and not bool(torch.isfinite(t).all()):
                return layer.name
    return None


def publish(logger: Any, report: dict[str, Any]) -> None:
    """The verdicts into the W&B run summary and the figures as W&B images."""
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(logger, WandbLogger):
        return
    summary = logger.experiment.summary
    for moment in ("init", "final"):
        if moment in report:
            summary[f"diagnosis/{moment}"] = ", ".join(report[moment]["verdicts"])
            summary[f"diagnosis/{moment}_text"] = report[moment]["text"]
            summary[f"backprop/first_last_ratio_{moment}"] = report[moment]["first_last_ratio"]
            summary[f"grad/first_last_ratio_{moment}"] = report[moment]["weight_first_last_ratio"]
    for path in report.get("figures", []):
        logger.log_image(key=f"figures/{Path(path).stem}", images=[path])
