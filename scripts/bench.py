"""Training speed on whatever device is here: one step, a 16-job sweep, and start-up.

Steps (one process; same network, data, optimizer and batches; mean time per optimizer step
after a warm-up, in ``--rounds`` interleaved rounds; reported: the fastest round and its ratio
to the fastest plain round, and the medians for the spread):
  plain        a hand-written PyTorch loop (index-slice batches, forward, loss, backward, step)
  default      the framework as ``python train.py`` trains: GradientFlow on, engine.steps_per_call
  gradflow_off  the same, gradflow=off
  per_step     the default with engine.steps_per_call=1 (Lightning drives every step)
  compiled     the default with engine.compile=graph (CUDA graph; elsewhere the eager fallback)
The framework variants log to CSV and skip validation and checkpoints (per-epoch costs, not
per-step ones; the start-up section runs whole jobs).

Sweep (``--jobs`` jobs differing only in seed, ``--sweep-steps`` steps each, GradientFlow on, CSV
logger, validation and test included; each a whole ``python train.py -m`` command):
  sequential   the basic launcher, one job after another
  parallel     the joblib launcher, ``--parallel`` processes sharing the device
  vectorized   hydra/launcher=ensemble: all jobs as one vmapped ensemble
Throughput is model-steps per second over the command's wall time (start-up included).

Start-up: wall time of a one-step run, of a config error, and of ``--help``.

Sample: what one sampled step's activation statistics cost on this model's hidden layers (the
pre-activations and activations of one batch, grouped as GradientFlow groups them), with and
without the input-similarity statistic ``pre_cosine``, against the plain loop's step.

    python scripts/bench.py                                   # CPU, the default experiment
    python scripts/bench.py --device cuda model.depth=20 data.batch_size=256 --out bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from bench_monitor import plain_loop, train_steps
from hydra.utils import instantiate

from gradprobe.config import compose

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parents[1]
VARIANTS = {"default": [], "gradflow_off": ["gradflow=off"],
            "per_step": ["engine.steps_per_call=1"], "compiled": ["engine.compile=graph"]}


def framework(overrides: list[str], splits, steps: int, warmup: int, device: torch.device,
              work: Path) -> float:
    """Seconds per optimizer step of a run composed from ``overrides``, built and chunked as
    ``python train.py`` builds it (``bench_monitor.train_steps``)."""
    cfg, choices = compose(overrides)
    if cfg.gradflow.get("figures") is not None:
        cfg.gradflow.figures = False
    run_dir = Path(tempfile.mkdtemp(dir=work))
    return train_steps(cfg, choices, splits, steps, device, run_dir).per_step(warmup)


def bench_steps(args, overrides: list[str], device: torch.device) -> dict:
    cfg, _ = compose(overrides)
    splits = instantiate(cfg.data.source)
    times: dict[str, list[float]] = {v: [] for v in ["plain", *VARIANTS]}
    with tempfile.TemporaryDirectory() as work:
        for _ in range(args.rounds):
            times["plain"].append(plain_loop(splits, cfg, args.steps, args.warmup, device))
            for name, extra in VARIANTS.items():
                times[name].append(framework([*overrides, *extra], splits, args.steps,
                                             args.warmup, device, Path(work)))
    # Interference from other processes only ever adds time, so the fastest round is the best
    # estimate of a variant's own cost (as timeit's docs advise); the median and the median of
    # the per-round ratios (rounds are interleaved) show the spread.
    plain = times["plain"]
    return {name: {"ms_per_step": round(1000 * min(ts), 4),
                   "vs_plain": round(min(ts) / min(plain), 3),
                   "median_ms_per_step": round(1000 * statistics.median(ts), 4),
                   "median_round_ratio": round(statistics.median(
                       t / p for t, p in zip(ts, plain, strict=True)), 3),
                   "runs_ms": [round(1000 * t, 4) for t in ts]} for name, ts in times.items()}


def bench_sample(overrides: list[str], device: torch.device, plain_ms: float | None,
                 repeats: int = 200) -> dict:
    """ms per sampled step of ``activation_stats`` over the hidden layers, and of the
    ``pairwise_cosine`` inside it; the best of ``repeats`` calls (interference only adds)."""
    from gradprobe.instruments.stats import activation_stats, pairwise_cosine

    cfg, _ = compose(overrides)
    n, width, depth = cfg.data.batch_size, cfg.model.width, cfg.model.depth
    pre = torch.randn(depth, n, width, device=device)
    out = torch.relu(pre)

    def best(fn) -> float:
        times = []
        for _ in range(repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        return 1000 * min(times)

    stats_ms = best(lambda: activation_stats(pre, out, None, 0.05, dies=True))
    cosine_ms = best(lambda: pairwise_cosine(pre))
    every = int(cfg.gradflow.every_n_steps)
    result = {"layers": depth, "batch": n, "width": width, "every_n_steps": every,
              "activation_stats_ms": round(stats_ms, 4), "pre_cosine_ms": round(cosine_ms, 4)}
    if plain_ms:
        result["pre_cosine_share_of_training"] = round(cosine_ms / (every * plain_ms), 5)
    return result


def train_py(args: list[str]) -> tuple[float, subprocess.CompletedProcess]:
    env = os.environ | {"WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True,
                         text=True, env=env)
    return time.perf_counter() - started, out


def bench_sweep(args, overrides: list[str], work: Path) -> dict:
    common = ["-m", f"seed=range(0,{args.jobs})", f"trainer.max_steps={args.sweep_steps}",
              "trainer.max_epochs=-1", "logger=csv", "gradflow.figures=false",
              "sweep.report=false", *overrides]
    launchers = {"sequential": [],
                 "parallel": ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={args.parallel}"],
                 "vectorized": ["hydra/launcher=ensemble"]}
    results = {}
    for name, extra in launchers.items():
        sweep_dir = work / name
        wall, out = train_py([*common, *extra, f"hydra.sweep.dir={sweep_dir}"])
        statuses = [json.loads(p.read_text())["status"]
                    for p in sorted(sweep_dir.glob("*/summary.json"))]
        if out.returncode or statuses.count("completed") != args.jobs:
            raise RuntimeError(f"{name} sweep failed: {statuses}\n{out.stderr[-2000:]}")
        model_steps = args.jobs * args.sweep_steps
        results[name] = {"wall_s": round(wall, 2),
                         "ms_per_model_step": round(1000 * wall / model_steps, 4),
                         "model_steps_per_s": round(model_steps / wall, 1)}
    for r in results.values():
        r["vs_sequential"] = round(r["model_steps_per_s"]
                                   / results["sequential"]["model_steps_per_s"], 2)
    return results


def bench_start(overrides: list[str]) -> dict:
    one_step = ["trainer.max_steps=1", "trainer.limit_val_batches=0",
                "trainer.limit_test_batches=1", "gradflow.figures=false", *overrides]
    with tempfile.TemporaryDirectory() as work:
        results = {}
        for name, extra in {"one_step_run_csv": ["logger=csv"],
                            "one_step_run_csv_wandb": []}.items():
            wall, out = train_py([*one_step, *extra, f"hydra.run.dir={work}/{name}"])
            results[name] = round(wall, 2) if out.returncode == 0 else None
    results["config_error"] = round(train_py(["model.depth=-1"])[0], 2)
    results["help"] = round(train_py(["--help"])[0], 2)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=16)
    parser.add_argument("--sweep-steps", type=int, default=200)
    parser.add_argument("--parallel", type=int, default=None,
                        help="joblib processes (default: 4 on a GPU, else the cores)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["steps", "sweep", "start", "sample"])
    parser.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. model.depth=20")
    args = parser.parse_args()
    os.environ.setdefault("WANDB_SILENT", "true")
    device = torch.device(args.device)
    overrides = [*args.overrides, *(["accelerator=gpu"] if device.type == "cuda" else [])]
    args.parallel = args.parallel or (4 if device.type == "cuda" else os.cpu_count() or 1)
    cfg, _ = compose(overrides)
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cores": os.cpu_count(), "overrides": args.overrides,
            "model": f"{cfg.model._target_.rsplit('.', 1)[-1]} depth {cfg.model.depth} "
                     f"width {cfg.model.width}", "batch_size": cfg.data.batch_size,
            "steps": args.steps, "rounds": args.rounds, "jobs": args.jobs,
            "sweep_steps": args.sweep_steps, "parallel": args.parallel}
    result: dict = {"info": info}
    if "steps" not in args.skip:
        result["steps"] = bench_steps(args, overrides, device)
    if "sweep" not in args.skip:
        with tempfile.TemporaryDirectory() as work:
            result["sweep"] = bench_sweep(args, overrides, Path(work))
    if "start" not in args.skip:
        result["start_s"] = bench_start(overrides)
    if "sample" not in args.skip:
        plain = result.get("steps", {}).get("plain", {}).get("ms_per_step")
        result["sample"] = bench_sample(overrides, device, plain)
    print_tables(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")


def print_tables(result: dict) -> None:
    print(json.dumps(result["info"]))
    if "steps" in result:
        print("\n| step | ms/step (fastest round) | x plain | median ms/step | median of "
              "per-round x plain |\n|---|---|---|---|---|")
        for name, row in result["steps"].items():
            print(f"| {name} | {row['ms_per_step']:.3f} | {row['vs_plain']:.3f} | "
                  f"{row['median_ms_per_step']:.3f} | {row['median_round_ratio']:.3f} |")
    if "sweep" in result:
        jobs = result["info"]["jobs"]
        print(f"\n| {jobs}-job sweep | wall s | ms per model-step | x sequential |\n"
              "|---|---|---|---|")
        for name, row in result["sweep"].items():
            print(f"| {name} | {row['wall_s']} | {row['ms_per_model_step']:.3f} | "
                  f"{row['vs_sequential']} |")
    if "start_s" in result:
        print("\nstart-up (wall s): " + ", ".join(f"{k} {v}" for k, v in
                                                  result["start_s"].items()))
    if "sample" in result:
        print("\nsampled step, activation statistics: " + json.dumps(result["sample"]))


if __name__ == "__main__":
    main()
