"""Vectorized sweeps: same-shape jobs of a multirun trained as one ensemble in one process.

Jobs that differ only in what sets their initial weights, data order and step size (``seed``,
the ``init`` group, ``optimizer.lr``) have networks of identical shapes. Their parameters are
stacked along a new leading dimension (``torch.func.stack_module_state``), and one ``vmap``-ed
forward, one backward and one torch optimizer over the stacked tensors train all of them per
step. Each member starts from the weights it would draw alone (same seed, same builder), sees the
batches it would see alone (the same ``DistributedSampler`` order) and gets its own gradients
(the ensemble loss is the sum of the members' losses), so its numbers equal a solo run's up to
float rounding. Members with different learning rates are the optimizer's parameter groups,
each a set of views into the stacked tensors.

On the steps the instruments sample, each member's forward runs on its own, watched by the same
``GradientFlow`` code as a solo run. What a member logs is kept and, when training ends, written
to its own loggers one member at a time: each gets its run directory, ``metrics.csv``, gradflow
records and figures, ``summary.json``, checkpoint (final weights) and W&B run.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import Tensor
from torch.func import functional_call, stack_module_state, vmap
from torch.utils.data import DistributedSampler

from gradprobe import record
from gradprobe.data import StepChunks
from gradprobe.instruments import GradientFlow, guard
from gradprobe.instruments.gradient_flow import (
    last_step_of,
    record_activations,
    record_backprop,
    watch_layers,
)
from gradprobe.instruments.recorder import log_histograms
from gradprobe.run import (
    build_loggers,
    build_monitor,
    build_network,
    close_loggers,
    loss_and_metrics,
    place_job,
    predict_init,
    publish_theory,
)

log = logging.getLogger("gradprobe")


@dataclass
class Member:
    """One job of an ensemble: its composed config and Hydra record, and what it measured."""

    cfg: DictConfig
    run_dir: Path
    choices: dict[str, str]
    overrides: list[str]
    group: str | None = None
    hydra: dict[str, Any] | None = None  # Hydra's record of the job (record.hydra_record)
    info: dict[str, Any] = field(default_factory=dict)
    logs: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    monitor: GradientFlow | None = None
    prediction: dict[str, Any] = field(default_factory=dict)
    best_val_loss: float = math.inf
    stopped_at: int | None = None  # the step after which a diverged member stopped counting
    diverged: dict[str, Any] | None = None  # the divergence guard's record, as a solo run's


def train(members: list[Member]) -> list[dict[str, Any]]:
    """Train and test the members together; returns (and writes) each one's ``summary.json``."""
    started = time.time()
    place_job(members[0].cfg, {"threads": members[0].cfg.get("threads")})  # as a solo job's
    for member in members:
        member.info = record.start(member.cfg, member.run_dir, member.choices, member.overrides,
                                   hydra=member.hydra)
        member.info |= {"threads": torch.get_num_threads(),
                        "ensemble": {"members": len(members),
                                     "run_dirs": [str(m.run_dir) for m in members]}}
    try:
        results = Ensemble(members).fit_and_test()
    except BaseException as err:
        status = "failed" if isinstance(err, Exception) else "interrupted"
        for member in members:
            record.finish(member.run_dir, member.info | {
                "status": status, "error": f"{type(err).__name__}: {err}",
                "wall_time_s": round(time.time() - started, 3)})
        raise
    summaries = []
    for member, result in zip(members, results, strict=True):
        summaries.append(member.info | result | {"wall_time_s": round(time.time() - started, 3)})
        record.finish(member.run_dir, summaries[-1])
    return summaries


def device_for(cfg: DictConfig) -> torch.device:
    gpu = cfg.trainer.accelerator in ("gpu", "cuda", "auto") and torch.cuda.is_available()
    devices = cfg.trainer.get("devices")
    index = devices[0] if OmegaConf.is_list(devices) else 0
    return torch.device(f"cuda:{index}" if gpu else "cpu")


class Ensemble:
    """The stacked members, their optimizer, data and the training loop."""

    def __init__(self, members: list[Member]) -> None:
        self.members, self.cfg = members, members[0].cfg
        self.device = device = device_for(self.cfg)
        splits = instantiate(self.cfg.data.source)
        nets = []
        for member in members:
            pl.seed_everything(member.cfg.seed, workers=True, verbose=False)  # as run alone
            net = build_network(member.cfg, splits.input_shape, splits.num_outputs)
            member.prediction = predict_init(member.cfg, member.choices, net, splits)
            nets.append(net.to(device))
        self.num_parameters = sum(p.numel() for p in nets[0].parameters())
        self.params, self.buffers = stack_module_state(nets)
        self.base = copy.deepcopy(nets[0]).to("meta")  # the structure; weights come from params
        self.layers = list(self.base.layers())
        names = {id(p): n for n, p in self.base.named_parameters()}
        self.weight_names = [names[id(layer.weight.weight)] for layer in self.layers]
        self.other_names = [n for n in self.params if n not in self.weight_names]
        self.loss, metrics = loss_and_metrics(self.cfg.task, splits.num_outputs)
        self.metrics = [metrics.clone().to(device) for _ in members]
        self.train_x, self.train_y = (t.to(device) for t in splits.train)
        self.splits = splits
        self.optimizer, self.views = self._optimizer()
        self._grads: list[Tensor] | None = None  # the stacked gradients, kept (views path)
        scheduler = OmegaConf.to_container(self.cfg.scheduler, resolve=True)
        self.scheduler = instantiate(self.cfg.scheduler)(self.optimizer) if scheduler else None
        self.step, self.epoch = 0, 0
        self._batches = self._batches_per_epoch()
        divergence = guard.settings(self.cfg)  # the rule of a solo run, for each member
        self.divergence = guard.Divergence(divergence["loss_factor"])
        self._check_every = self._next_check = divergence["check_every_n_steps"]
        self._reset_epoch_sums()
        for member in members:
            self._set_up_monitor(member)

    # ------------------------------------------------------------------ set-up

    def _optimizer(self) -> tuple[torch.optim.Optimizer, list[list[Tensor]] | None]:
        """One torch optimizer. With one learning rate it steps the stacked tensors; with
        several, each member is its own parameter group of views into them (their gradients:
        views into the stacked gradients, attached after the first backward), so each member's
        update is computed exactly as alone -- Adam turns rounding-level differences into
        lr-sized ones, so "nearly the same update" would not do."""
        params = list(self.params.values())
        lrs = [m.cfg.optimizer.lr for m in self.members]
        if len(set(lrs)) == 1:
            return instantiate(self.cfg.optimizer)(params), None
        views = [[p.detach()[i] for p in params] for i in range(len(self.members))]
        groups = [{"params": v, "lr": lr} for v, lr in zip(views, lrs, strict=True)]
        return instantiate(self.cfg.optimizer)(groups), views

    def _batches_per_epoch(self) -> int:
        size = min(self.cfg.data.batch_size, len(self.train_x))
        return StepChunks(self._sampler(self.members[0]), size, 1,
                          self.cfg.trainer.limit_train_batches).batches

    def _sampler(self, member: Member) -> DistributedSampler:
        return DistributedSampler(range(len(self.train_x)), num_replicas=1, rank=0,
                                  shuffle=True, seed=member.cfg.seed)

    def _set_up_monitor(self, member: Member) -> None:
        member.monitor = build_monitor(member.cfg, member.choices, member.run_dir,
                                       member.prediction, member.overrides)
        if member.monitor is None:
            return
        trainer = self.cfg.trainer
        member.monitor.watch(self.layers, member.run_dir / "gradflow",
                             last_step_of(self._batches, trainer.max_epochs, trainer.max_steps))
        member.monitor.numel = member.monitor.numel.to(self.device)

    # ------------------------------------------------------------------ the training loop

    def fit_and_test(self) -> list[dict[str, Any]]:
        trainer = self.cfg.trainer
        while trainer.max_epochs < 0 or self.epoch < trainer.max_epochs:
            order = self._epoch_order()
            for batch in range(order.shape[1]):
                if self._done():
                    break
                self._train_step(order[:, batch])
            # as Lightning: an epoch cut short by max_steps is not validated
            self._end_epoch(validate=not self._stopped_early())
            if self._done():
                break
        self._check_divergence(final=True)
        tests = self._evaluate("test") or [{} for _ in self.members]
        return [self._finish(member, test) for member, test in zip(self.members, tests,
                                                                   strict=True)]

    def _stopped_early(self) -> bool:
        max_steps = self.cfg.trainer.max_steps
        return max_steps >= 0 and self.step >= max_steps and self.step % self._batches != 0

    def _done(self) -> bool:
        max_steps = self.cfg.trainer.max_steps
        diverged = all(m.stopped_at is not None for m in self.members)
        return diverged or (max_steps >= 0 and self.step >= max_steps)

    def _epoch_order(self) -> Tensor:
        """(members, batches, batch_size) indices: each member's order for this epoch."""
        orders = []
        for member in self.members:
            sampler = self._sampler(member)
            sampler.set_epoch(self.epoch)
            orders.append(torch.as_tensor(list(sampler)))
        size = min(self.cfg.data.batch_size, len(self.train_x))
        used = self._batches * size
        return torch.stack(orders)[:, :used].view(len(self.members), -1, size).to(self.device)

    def _forward(self, x: Tensor, shared_input: bool = False) -> Tensor:
        def one(params: dict[str, Tensor], buffers: dict[str, Tensor], xb: Tensor) -> Tensor:
            return functional_call(self.base, (params, buffers), (xb,))
        return vmap(one, in_dims=(0, 0, None if shared_input else 0))(self.params, self.buffers,
                                                                         x)

    def _forward_watched(self, x: Tensor, rows: list, backprops: list) -> Tensor:
        """Each member's forward on its own, with the instruments' hooks attached."""
        outputs = []
        for i, member in enumerate(self.members):
            seen: list = [None] * len(self.layers)
            handles = [] if rows[i] is None else watch_layers(self.layers, backprops[i], seen)
            try:
                outputs.append(functional_call(
                    self.base, ({k: v[i] for k, v in self.params.items()},
                                {k: v[i] for k, v in self.buffers.items()}), (x[i],)))
            finally:
                for handle in handles:
                    handle.remove()
            if rows[i] is not None:
                record_activations(rows[i], self.layers, seen, member.monitor.margin)
        return torch.stack(outputs)

    def _train_step(self, index: Tensor) -> None:
        x, y = self.train_x[index], self.train_y[index]
        monitor = self.members[0].monitor
        sampled = monitor is not None and monitor.wants_step(self.step)
        if sampled:
            rows = [m.monitor.new_row(self.step) if m.stopped_at is None else None
                    for m in self.members]
            backprops = [[None] * len(self.layers) for _ in self.members]
            logits = self._forward_watched(x, rows, backprops)
        else:
            logits = self._forward(x)
        losses = vmap(self.loss)(logits, y)
        self._zero_grad()
        losses.sum().backward()
        self._accumulate(losses.detach(), logits.detach(), y)
        if sampled:
            norms, before = self._measure_gradients(rows, backprops)
        self._optimizer_step()
        if sampled:
            self._measure_updates(rows, norms, before)
        self.step += 1
        if sampled or self.step >= self._next_check:
            self._check_divergence()  # one host copy, as a solo run's guard reads it
        if sampled:
            self._flush_monitors()

    def _zero_grad(self) -> None:
        if self._grads is None:
            self.optimizer.zero_grad()
        else:  # in place: the members' views must keep pointing at them
            torch._foreach_zero_(self._grads)

    def _optimizer_step(self) -> None:
        if self.views is not None and self._grads is None:
            self._grads = [p.grad for p in self.params.values()]
            for i, member_views in enumerate(self.views):
                for view, grad in zip(member_views, self._grads, strict=True):
                    view.grad = grad[i]
        self.optimizer.step()

    # ------------------------------------------------------------------ measurements

    def _accumulate(self, losses: Tensor, logits: Tensor, y: Tensor) -> None:
        """The epoch's training loss and accuracy on the device; every
        ``log_every_n_steps``-th step's losses kept for the loggers."""
        self._loss_sum += losses
        self._correct += (logits.argmax(-1) == y).sum(-1)
        self._seen += y.shape[1]
        self._batches_seen += 1
        self.divergence.add(self.step, losses[None])  # a reference: no device work
        if self.step % self.cfg.trainer.log_every_n_steps == 0:
            self._step_losses.append((self.step, losses))

    def _reset_epoch_sums(self) -> None:
        zeros = torch.zeros(len(self.members), device=self.device)
        self._loss_sum, self._correct = zeros.clone(), zeros.clone()
        self._seen, self._batches_seen = 0, 0
        self._step_losses: list[tuple[int, Tensor]] = []

    @torch.no_grad()
    def _measure_gradients(self, rows: list, backprops: list) -> tuple[list, list]:
        norms, before = [None] * len(rows), [None] * len(rows)
        for i, member in enumerate(self.members):
            if rows[i] is None:
                continue
            weights = [self.params[n][i] for n in self.weight_names]
            grads = [self.params[n].grad[i] for n in self.weight_names]
            others = [self.params[n].grad[i] for n in self.other_names]
            record_backprop(rows[i], backprops[i])
            norms[i] = member.monitor.measure_gradients(rows[i], weights, grads, others)
            before[i] = torch._foreach_mul(weights, 1.0)
        return norms, before

    @torch.no_grad()
    def _measure_updates(self, rows: list, norms: list, before: list) -> None:
        for i, member in enumerate(self.members):
            if rows[i] is not None:
                weights = [self.params[n][i] for n in self.weight_names]
                member.monitor.measure_update(rows[i], weights, before[i], norms[i])

    def _flush_monitors(self) -> None:
        for member in self.members:
            if member.monitor.flush_due():
                member.monitor.flush([])

    def _check_divergence(self, final: bool = False) -> None:
        """Each member's first diverged step by the rule of a solo run
        (:class:`gradprobe.instruments.guard.Divergence` on its losses; at the end also the
        weights its last step left): one host copy. A diverged member stops counting steps."""
        self._next_check = self.step + self._check_every
        if final and self.step > 0:
            finite = torch.stack([torch.isfinite(p.detach()).flatten(1).all(1)
                                  for p in self.params.values()]).all(0)
            self.divergence.add_weights(self.step - 1, finite)
        first = self.divergence.first_steps() or [None] * len(self.members)
        for i, (member, step) in enumerate(zip(self.members, first, strict=True)):
            if member.stopped_at is None and step is not None:
                member.diverged = {"step": step, "layer": self._first_bad_layer(i)}
                member.stopped_at = self.step
                if member.monitor:
                    member.monitor.diverged = member.diverged
                    member.monitor.flush([])

    def _first_bad_layer(self, i: int) -> str | None:
        for tensors in ([self.params[n][i] for n in self.weight_names],
                        [self.params[n].grad[i] for n in self.weight_names]):
            for layer, t in zip(self.layers, tensors, strict=True):
                if not bool(torch.isfinite(t).all()):
                    return layer.name
        return None

    # ------------------------------------------------------------------ epochs, evaluation

    def _end_epoch(self, validate: bool) -> None:
        if self._batches_seen:
            losses = (self._loss_sum / self._batches_seen).tolist()
            accs = (self._correct / self._seen).tolist()
            steps, values = zip(*self._step_losses, strict=True) if self._step_losses else ((),
                                                                                          ())
            rows = torch.stack(values).tolist() if values else []
            for i, member in enumerate(self.members):
                if member.stopped_at is not None:
                    continue
                for step, row in zip(steps, rows, strict=True):
                    member.logs.append((step, {"train/loss_step": row[i]}))
                member.metrics |= {"train/loss": losses[i], "train/acc": accs[i]}
                member.logs.append((self.step - 1, {"epoch": self.epoch, "train/loss": losses[i],
                                                    "train/acc": accs[i]}))
        self._reset_epoch_sums()
        self.epoch += 1
        if validate and self.epoch % self.cfg.trainer.check_val_every_n_epoch == 0:
            for member, values in zip(self.members, self._evaluate("val"), strict=True):
                if member.stopped_at is None:
                    member.metrics |= values
                    member.best_val_loss = min(member.best_val_loss, values["val/loss"])
                    member.logs.append((self.step - 1, {"epoch": self.epoch - 1} | values))
        if self.scheduler is not None:
            self.scheduler.step()

    @torch.no_grad()
    def _evaluate(self, stage: str) -> list[dict[str, float]]:
        """Loss (batch-size-weighted mean, as Lightning's epoch mean) and the task's
        torchmetrics of every member on a split (``trainer.limit_<stage>_batches`` of it);
        an empty list when that limit is 0."""
        x, y = (t.to(self.device) for t in getattr(self.splits, stage))
        batches = list(zip(x.split(self.cfg.data.eval_batch_size),
                           y.split(self.cfg.data.eval_batch_size), strict=True))
        limit = self.cfg.trainer.get(f"limit_{stage}_batches", 1.0)
        batches = batches[:limit if isinstance(limit, int) else int(len(batches) * limit)]
        if not batches:
            return []
        total, size = torch.zeros(len(self.members), device=self.device), 0
        for xb, yb in batches:
            logits = self._forward(xb, shared_input=True)
            losses = vmap(self.loss, in_dims=(0, None))(logits, yb)
            total += losses * len(xb)
            size += len(xb)
            for metric, out in zip(self.metrics, logits, strict=True):
                metric.update(out, yb)
        results = []
        for loss, metric in zip((total / size).tolist(), self.metrics, strict=True):
            values = {f"{stage}/{k}": float(v) for k, v in metric.compute().items()}
            metric.reset()
            results.append({f"{stage}/loss": loss} | values)
        return results

    # ------------------------------------------------------------------ each member's records

    def _finish(self, member: Member, test: dict[str, float]) -> dict[str, Any]:
        """A diverged member is not tested (as a solo run is not)."""
        diverged = member.stopped_at is not None
        if not diverged:
            member.metrics |= test
            member.logs.append((self.step, {"epoch": self.epoch} | test))
        status = "diverged" if diverged else "completed"
        steps = member.stopped_at if diverged else self.step
        checkpoint = self._save_weights(self.members.index(member), member, steps)
        self._publish(member, status)
        summary = {"status": status, "metrics": dict(member.metrics),
                   "best": {"val/loss": record.number(member.best_val_loss),
                            "checkpoint": str(checkpoint)},
                   "epochs": self.epoch, "steps": steps,
                   "num_parameters": self.num_parameters, "theory": member.prediction}
        if member.monitor:
            report = member.monitor.report
            summary["diagnosis"] = {k: report[k] for k in ("init", "final") if k in report}
        summary["diverged"] = member.diverged
        return summary

    def _save_weights(self, i: int, member: Member, steps: int) -> Path:
        """The member's final weights as a Lightning-style checkpoint that
        ``gradprobe.run.load_module`` reads (not resumable: no optimizer state)."""
        state = {f"net.{k}": v[i].detach().cpu() for k, v in
                 (self.params | self.buffers).items()}
        plain = OmegaConf.to_container(member.cfg, resolve=True)
        hparams = {"optimizer": plain["optimizer"], "scheduler": plain["scheduler"] or None,
                   "run_config": plain,
                   "data_shape": {"input_shape": list(self.splits.input_shape),
                                  "num_outputs": self.splits.num_outputs}}
        path = member.run_dir / "checkpoints" / "last.ckpt"
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": state, "hyper_parameters": hparams, "epoch": self.epoch,
                    "global_step": steps, "pytorch-lightning_version": pl.__version__}, path)
        return path

    def _publish(self, member: Member, status: str) -> None:
        """Everything the member measured, in step order, to its own loggers; then its
        diagnosis, figures and theory, as a solo run publishes them. One member at a time,
        so each has its own W&B run."""
        loggers = build_loggers(member.cfg, member.run_dir, member.choices, member.overrides,
                                member.group)
        monitor = member.monitor
        own_log = logging.FileHandler(member.run_dir / "train.log")  # its verdicts, in its log
        own_log.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - "
                                               "%(message)s"))
        log.addHandler(own_log)
        try:
            log.info("trained in an ensemble of %d jobs (summary.json lists their run dirs)",
                     len(self.members))
            if monitor and "init" in monitor.report:
                log.info("init probe: %s", monitor.report["init"]["text"])
            rows = list(member.logs)
            if monitor:
                monitor.flush([])
                rows += [(r.step, monitor.recorder.metrics(r)) for r in monitor.recorder.history]
            for step, metrics in sorted(rows, key=lambda row: row[0]):
                for logger in loggers:
                    logger.log_metrics(metrics, step=step)
            if monitor:
                recorder = monitor.recorder
                for k, step in enumerate(recorder.hist_steps):
                    for logger in loggers:
                        log_histograms(logger, step, recorder.layer_names,
                                       recorder.grad_hists[k], recorder.act_hists[k])
                monitor.finish(loggers)
                if "init" in monitor.report and member.prediction.get("applies"):
                    member.prediction["measured_first_last_backprop_ratio"] = \
                        monitor.report["init"]["backprop_first_last_ratio"]
            publish_theory(loggers, member.prediction)
        finally:
            close_loggers(loggers, status)
            log.removeHandler(own_log)
            own_log.close()
