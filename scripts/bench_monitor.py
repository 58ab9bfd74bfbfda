"""What monitoring costs: mean time per optimizer step, in one process, on the same model and data.

Variants (each run ``--rounds`` times, interleaved, the median of the per-run means reported):
  plain        a hand-written PyTorch loop (index-slice batches, Adam), the reference;
  off          the framework as a run with gradflow=off trains (``engine.steps_per_call`` steps per
               Lightning call, the divergence guard on);
  default      the same with the default GradientFlow (every 20 steps, histograms every 100);
  wandb_watch  the framework, gradflow=off, plus ``wandb.watch(model, log="all", log_freq=10)``
               with an offline W&B logger -- the usual alternative.
The framework variants are composed (``gradprobe.config.compose``) and built
(``gradprobe.build.build_module``, ``gradprobe.callbacks.build_gradflow``,
``gradprobe.engine.plan``) as ``python train.py`` builds them, so what is timed is what a run
does. The mean (not the median) step time is used on purpose: monitoring costs on sampled steps
only. Run-to-run noise on a small shared machine can exceed the effect measured, so the default
GradientFlow's overhead is also measured inside each of its runs (``in_run_overhead``).

    python scripts/bench_monitor.py                 # default MLP (8 x 256) on MNIST-1D, CPU
    python scripts/bench_monitor.py --device cuda --steps 1000 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig

from gradprobe.build import build_module
from gradprobe.callbacks import build_gradflow
from gradprobe.config import compose
from gradprobe.data import InMemoryDataModule, Splits
from gradprobe.engine import plan, steps_per_call
from gradprobe.instruments import guard

warnings.filterwarnings("ignore")


class StepClock(pl.Callback):
    """(optimizer step, time) at every training call and at the end of training: with
    ``engine.steps_per_call > 1`` one call trains several steps, so time is per step, not call."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.marks = device, []

    def _mark(self, trainer: pl.Trainer) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        self.marks.append((trainer.global_step, time.perf_counter()))

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._mark(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        self._mark(trainer)

    def intervals(self, warmup: int) -> list[tuple[int, int, float]]:
        """(first step, steps, seconds) of each call that starts after the warm-up."""
        pairs = zip(self.marks, self.marks[1:], strict=False)
        return [(s0, s1 - s0, t1 - t0) for (s0, t0), (s1, t1) in pairs if s0 >= warmup and s1 > s0]

    def per_step(self, warmup: int) -> float:
        """Mean seconds per optimizer step after the warm-up."""
        calls = self.intervals(warmup)
        return sum(t for _, _, t in calls) / sum(n for _, n, _ in calls)


def in_run_overhead(clock: StepClock, warmup: int, every: int) -> float:
    """Monitoring's share of a step, measured inside one run: each call's time fitted as
    (base per step) x steps + (extra per sample) x sampled steps, the extra spread over ``every``
    steps. Immune to the run-to-run noise of a small shared machine; NaN where the calls do not
    tell the two apart (every call holding as many samples per step)."""
    rows = [(n, sum((s + i) % every == 0 for i in range(n)), t)
            for s, n, t in clock.intervals(warmup)]
    snn = sum(n * n for n, _, _ in rows)
    snm = sum(n * m for n, m, _ in rows)
    smm = sum(m * m for _, m, _ in rows)
    snt = sum(n * t for n, _, t in rows)
    smt = sum(m * t for _, m, t in rows)
    det = snn * smm - snm * snm
    if abs(det) < 1e-9 * max(snn * smm, 1):
        return math.nan
    base, extra = (smm * snt - snm * smt) / det, (snn * smt - snm * snt) / det
    return extra / every / base


def plain_loop(splits, cfg, steps: int, warmup: int, device: torch.device) -> float:
    torch.manual_seed(0)
    net = build_module(cfg, splits.input_shape, splits.num_outputs).net.to(device)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.optimizer.lr)
    x, y = (t.to(device) for t in splits.train)
    bs, times, last, step = cfg.data.batch_size, [], None, 0
    while step < steps:
        for idx in torch.randperm(len(x)).split(bs):
            if len(idx) < bs or step >= steps:
                break
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if last is not None and step > warmup:
                times.append(now - last)
            last = now
            idx = idx.to(device)
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return statistics.fmean(times)


def train_steps(cfg: DictConfig, choices: dict[str, str], splits: Splits, steps: int,
                device: torch.device, run_dir: Path, monitored: bool = True,
                wandb_watch: bool = False) -> StepClock:
    """Train ``steps`` optimizer steps as ``python train.py`` would (its module, chunking,
    GradientFlow and divergence guard), without validation or checkpoints (per-epoch costs)."""
    pl.seed_everything(0, verbose=False)
    chunks = plan(cfg)  # steps per Lightning call, as a run plans them
    module = build_module(cfg, splits.input_shape, splits.num_outputs, chunks.steps_per_call,
                          cfg.engine.compile)
    gradflow = build_gradflow(cfg, choices, run_dir) if monitored else None
    clock = StepClock(device)
    logger = pl.loggers.CSVLogger(run_dir, name="", version="")
    if wandb_watch:
        logger = pl.loggers.WandbLogger(save_dir=str(run_dir), mode="offline", project="bench")
        logger.watch(module, log="all", log_freq=10)
    callbacks = [clock, *([gradflow] if gradflow else []), guard.Guard(**guard.settings(cfg))]
    trainer = pl.Trainer(max_steps=steps, accelerator=device.type, devices=1, logger=logger,
                         callbacks=callbacks, limit_val_batches=0, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=cfg.trainer.log_every_n_steps,
                         default_root_dir=str(run_dir), **chunks.trainer_kwargs)
    datamodule = InMemoryDataModule(splits, cfg.data.batch_size, cfg.data.eval_batch_size, 0,
                                    steps_per_call=chunks.steps_per_call,
                                    limit=chunks.train_limit, max_steps=steps)
    trainer.fit(module, datamodule=datamodule)
    if wandb_watch:
        logger.experiment.finish()
    return clock


def framework(splits: Splits, cfg: DictConfig, choices: dict[str, str], variant: str,
              steps: int, warmup: int, device: torch.device, work: Path) -> tuple[float, float]:
    """(seconds per step, in-run overhead) of one framework variant's run."""
    clock = train_steps(cfg, choices, splits, steps, device, Path(tempfile.mkdtemp(dir=work)),
                        monitored=variant == "default", wandb_watch=variant == "wandb_watch")
    every = int(cfg.gradflow.every_n_steps)
    return clock.per_step(warmup), in_run_overhead(clock, warmup, every)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None, help="also write the table as JSON")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.depth=20")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    device = torch.device(args.device)
    cfg, choices = compose(["gradflow.figures=false", *args.overrides])
    from hydra.utils import instantiate

    splits = instantiate(cfg.data.source)
    variants = ["plain", "off", "default", "wandb_watch"]
    results: dict[str, list[float]] = {v: [] for v in variants}
    in_run: dict[str, list[float]] = {v: [] for v in variants[1:]}  # "off": the control
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for variant in variants:
                if variant == "plain":
                    t = plain_loop(splits, cfg, args.steps, args.warmup, device)
                else:
                    t, overhead = framework(splits, cfg, choices, variant, args.steps,
                                            args.warmup, device, Path(work))
                    in_run[variant].append(overhead)
                results[variant].append(t)
    medians = {v: statistics.median(ts) for v, ts in results.items()}
    table = {v: {"ms_per_step": round(1000 * medians[v], 4),
                 "vs_plain": round(medians[v] / medians["plain"], 3),
                 "vs_off": round(medians[v] / medians["off"], 3),
                 "runs_ms": [round(1000 * t, 4) for t in results[v]]} for v in variants}
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "steps": args.steps, "rounds": args.rounds, "overrides": args.overrides,
            "model": f"{cfg.model._target_.rsplit('.', 1)[-1]} depth {cfg.model.depth} "
                     f"width {cfg.model.width}", "batch_size": cfg.data.batch_size,
            "steps_per_call": steps_per_call(cfg)}
    info["in_run_overhead"] = {v: round(statistics.median(o), 4) for v, o in in_run.items()}
    print(json.dumps(info))
    print("| variant | ms/step | x plain | x off |\n|---|---|---|---|")
    for v in variants:
        row = table[v]
        print(f"| {v} | {row['ms_per_step']:.3f} | {row['vs_plain']:.3f} | {row['vs_off']:.3f} |")
    print("in-run overhead (sampled steps vs the others, fitted over each run's calls): "
          + ", ".join(f"{v} {100 * o:.1f} %" for v, o in info["in_run_overhead"].items()))
    if args.out:
        args.out.write_text(json.dumps({"info": info, "results": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
