"""What monitoring costs: mean time per training step, in one process, on the same model and data.

Variants (each run ``--rounds`` times, interleaved, the median of the per-run means reported):
  plain        a hand-written PyTorch loop (index-slice batches, Adam), the reference;
  off          the framework (Lightning Trainer + GradprobeModule), monitor=off;
  default      the framework with the default GradientFlow (every 10 steps, histograms every 100);
  wandb_watch  the framework, monitor=off, plus ``wandb.watch(model, log="all", log_freq=10)``
               with an offline W&B logger -- the usual alternative.
The mean (not the median) step time is used on purpose: monitoring costs on sampled steps only.
Run-to-run noise on a small shared machine can exceed the effect measured, so the default
monitor's overhead is also measured inside each of its runs (``in_run_overhead``).

    python scripts/bench_monitor.py                 # default MLP (8 x 256) on MNIST-1D, CPU
    python scripts/bench_monitor.py --device cuda --steps 1000 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from gradprobe.cli import CONF_DIR, register_resolvers
from gradprobe.data import InMemoryDataModule
from gradprobe.run import build_module, build_monitor

warnings.filterwarnings("ignore")


class StepTimer(pl.Callback):
    """Wall time between consecutive training-batch starts, after a warm-up."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.last = warmup, device, None
        self.times: list[float] = []
        self.steps: list[int] = []  # the step each time belongs to

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.last is not None and trainer.global_step > self.warmup:
            self.times.append(now - self.last)
            self.steps.append(trainer.global_step - 1)
        self.last = now


def in_run_overhead(timer: StepTimer, every: int) -> float:
    """Monitoring's share of a step, measured inside one run: the extra mean time of sampled
    steps (flushes included) over unsampled ones, spread over ``every`` steps. Immune to the
    run-to-run noise of a small shared machine."""
    sampled = [t for s, t in zip(timer.steps, timer.times, strict=True) if s % every == 0]
    plain = [t for s, t in zip(timer.steps, timer.times, strict=True) if s % every != 0]
    base = statistics.fmean(plain)
    return (statistics.fmean(sampled) - base) / every / base


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra")}
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    del cfg["hydra"]
    return cfg, choices


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


def framework(splits, cfg, choices, variant: str, steps: int, warmup: int,
              device: torch.device, work: Path) -> float:
    run_dir = Path(tempfile.mkdtemp(dir=work))
    pl.seed_everything(0, verbose=False)
    module = build_module(cfg, splits.input_shape, splits.num_outputs)
    monitor = build_monitor(cfg, choices, run_dir) if variant == "default" else None
    timer = StepTimer(warmup, device)
    logger = pl.loggers.CSVLogger(run_dir, name="", version="")
    if variant == "wandb_watch":
        logger = pl.loggers.WandbLogger(save_dir=str(run_dir), mode="offline",
                                        project="bench")
        logger.watch(module, log="all", log_freq=10)
    trainer = pl.Trainer(max_steps=steps, accelerator=device.type, devices=1,
                         logger=logger, callbacks=[timer, *([monitor] if monitor else [])],
                         limit_val_batches=0, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=cfg.trainer.log_every_n_steps,
                         default_root_dir=str(run_dir))
    datamodule = InMemoryDataModule(splits, cfg.data.batch_size, cfg.data.eval_batch_size, 0)
    trainer.fit(module, datamodule=datamodule)
    if variant == "wandb_watch":
        logger.experiment.finish()
    IN_RUN.setdefault(variant, []).append(in_run_overhead(timer, cfg.monitor.every_n_steps))
    return statistics.fmean(timer.times)


IN_RUN: dict[str, list[float]] = {}  # per framework variant; "off" is the estimator's control


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
    cfg, choices = compose(["monitor.figures=false", *args.overrides])
    from hydra.utils import instantiate

    splits = instantiate(cfg.data.source)
    variants = ["plain", "off", "default", "wandb_watch"]
    results: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            for variant in variants:
                if variant == "plain":
                    t = plain_loop(splits, cfg, args.steps, args.warmup, device)
                else:
                    t = framework(splits, cfg, choices, variant, args.steps, args.warmup,
                                  device, Path(work))
                results[variant].append(t)
    medians = {v: statistics.median(ts) for v, ts in results.items()}
    table = {v: {"ms_per_step": round(1000 * medians[v], 4),
                 "vs_plain": round(medians[v] / medians["plain"], 3),
                 "vs_off": round(medians[v] / medians["off"], 3),
                 "runs_ms": [round(1000 * t, 4) for t in results[v]]} for v in variants}
    info = {"device": str(device), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "steps": args.steps, "rounds": args.rounds, "overrides": args.overrides,
            "model": f"{cfg.model._target_.rsplit('.', 1)[-1]} depth {cfg.model.depth} "
                     f"width {cfg.model.width}", "batch_size": cfg.data.batch_size}
    info["in_run_overhead"] = {v: round(statistics.median(o), 4) for v, o in IN_RUN.items()}
    print(json.dumps(info))
    print("| variant | ms/step | x plain | x off |\n|---|---|---|---|")
    for v in variants:
        row = table[v]
        print(f"| {v} | {row['ms_per_step']:.3f} | {row['vs_plain']:.3f} | {row['vs_off']:.3f} |")
    print("in-run overhead (steps divisible by every_n_steps vs the others, same run): "
          + ", ".join(f"{v} {100 * o:.1f} %" for v, o in info["in_run_overhead"].items()))
    if args.out:
        args.out.write_text(json.dumps({"info": info, "results": table}, indent=2) + "\n")


if __name__ == "__main__":
    main()
