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

What it writes is files (``layers.csv``, ``steps.csv``, ``histograms.npz``, ``diagnosis.json``)
and logger metrics; figures are drawn from those files after the fit
(:func:`gradprobe.figures.draw_all`), and verdicts reach W&B through the app's publishing. The
verdict lines (init probe, final diagnosis) go to the ``gradprobe`` log where an app has set up
logging (Hydra does), else through Lightning's own channel (``rank_zero_info``), which Lightning
prints by default: used in any project, the callback says what it found.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_info
from torch import Tensor

from gradprobe.instruments import diagnosis
from gradprobe.instruments.files import write_json
from gradprobe.instruments.gradients import global_norm_of, record_gradients, record_update
from gradprobe.instruments.guard import Guard
from gradprobe.instruments.hooks import record_activations, record_backprop, watch_layers
from gradprobe.instruments.layers import Layer, find_layers
from gradprobe.instruments.recorder import STEP_STATS, WANDB, Recorder, Row
from gradprobe.instruments.schedule import Schedule, last_step
from gradprobe.instruments.stats import ACT_BINS, GRAD_BINS, log10_abs
from gradprobe.instruments.tensorboard_layout import write_layout

log = logging.getLogger("gradprobe")
_S = {stat: i for i, stat in enumerate(STEP_STATS)}
EVERY_N_STEPS = 20  # the app's too (conf/gradflow/default.yaml; tests/test_instruments.py)


def say(message: str) -> None:
    """A verdict line: to the ``gradprobe`` log where an app has set it up to show INFO
    (Hydra's job logging), else through Lightning's channel, shown by default (rank zero)."""
    if log.isEnabledFor(logging.INFO) and log.hasHandlers():
        log.info(message)
    else:
        rank_zero_info(message)


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
        context: what the run is (its config choices, ...), passed to ``advise``.
        advise: ``advise(found, context, thresholds)`` returns remedies for the verdicts
            found, each a dict with ``overrides``, ``why`` and ``basis`` (``"theory"`` when
            checked); by default :func:`~gradprobe.instruments.diagnosis.general_remedies`,
            in words any project can act on; the app passes its
            :func:`gradprobe.remedies.remedies`, phrased as its overrides. None: verdicts only.
        resume: continue the records in ``out_dir`` (a resumed run): their rows stay the
            history, and the init probe's verdict is read back from its row.
        wandb: what W&B loggers receive (see ``recorder.WANDB``): ``per_layer_scalars=False``
            keeps the ``<namespace>/<stat>/<layer>`` keys from them, ``histograms=False`` the
            per-layer histograms; the files and other loggers keep everything.
    """

    def __init__(self, every_n_steps: int = EVERY_N_STEPS, histogram_every_n_steps: int = 100,
                 flush_every_n_samples: int = 10, saturation_margin: float = 0.05,
                 thresholds: dict[str, float] | None = None, layers: list[Layer] | None = None,
                 out_dir: str | Path | None = None, context: dict[str, Any] | None = None,
                 advise: Callable[..., list[dict[str, Any]]] | None =
                 diagnosis.general_remedies,
                 resume: bool = False, wandb: dict[str, bool] | None = None) -> None:
        super().__init__()
        self.resume = resume
        unknown = set(wandb or {}) - set(WANDB)
        if unknown:
            raise ValueError(f"GradientFlow(wandb=...): unknown {sorted(unknown)}; expected "
                             f"keys of {sorted(WANDB)}")
        self.wandb = WANDB | dict(wandb or {})
        self.schedule = Schedule(every_n_steps, histogram_every_n_steps)
        self.flush_every, self.margin = flush_every_n_samples, saturation_margin
        self.thresholds = diagnosis.THRESHOLDS | dict(thresholds or {})
        self.layers, self.out_dir, self.context = layers, out_dir, dict(context or {})
        self.advise = advise
        self.report: dict[str, Any] = {}
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
        self.recorder = Recorder(out_dir, self.names, wandb=dict(self.wandb))
        if self.resume:
            self.recorder.load()
            history = self.recorder.history
            if history and history[0].step == 0:
                self.report["init"] = self._diagnose(history[0])
        self.schedule.last = last_step

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """TensorBoard loggers get a layout that draws each statistic's layers in one chart."""
        if trainer.is_global_zero:
            write_layout(trainer.loggers)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.numel = self.numel.to(pl_module.device)
        self._trainer = trainer
        self.schedule.last = last_step(trainer)
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
        """Whether optimizer step ``step`` is sampled (the ``SamplesSteps`` protocol)."""
        return self.schedule.wants_step(step)

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
        if self.schedule.histogram_step(step):
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
        if self.schedule.histogram_step(row.step):
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
            self.report["init"] = self._diagnose(host[0], at_init)
            if write:
                say(f"init probe: {self.report['init']['text']}")

    def finish(self, loggers: list[Any], write: bool = True) -> None:
        """The final diagnosis and ``diagnosis.json``."""
        history = self.recorder.history
        if history:
            self.report["final"] = self._diagnose(history[-1], self.diverged)
        if not write or not history:
            return
        write_json(self.recorder.out_dir / "diagnosis.json", self.report)
        say(f"diagnosis: {self.report['final']['text']}")

    def _diagnose(self, row: Any, diverged: dict[str, Any] | None = None) -> dict[str, Any]:
        return diagnosis.diagnose(row, self.names, self.thresholds, self.context, diverged,
                                  self.advise)
