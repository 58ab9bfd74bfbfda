"""Sweep throughput: a 24-job MNIST-1D sweep of short runs with the basic and the joblib launcher.

For each launcher it prints jobs per minute and the per-job fixed overhead: the sweep's wall
time beyond the jobs' own training-and-test time (each job's ``wall_time_s``, from
``summary.json``), per job and per parallel slot -- start-up, Hydra, logger set-up and teardown.

    python scripts/bench_sweep.py                       # csv + wandb loggers (the default)
    python scripts/bench_sweep.py --loggers csv --out sweep_bench.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GRID = ["activation=relu,tanh,sigmoid", "model.depth=2,4", "seed=0,1,2,3"]  # 24 jobs
SHORT = ["trainer.max_steps=20", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
         "gradflow.figures=false", "sweep.report=false"]
LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}


def run_sweep(launcher: str, loggers: str, work: Path) -> dict:
    sweep_dir = work / launcher
    command = [sys.executable, "train.py", "-m", *GRID, *SHORT, *LAUNCHERS[launcher],
               f"logger={loggers}", f"hydra.sweep.dir={sweep_dir}"]
    started = time.perf_counter()
    subprocess.run(command, cwd=REPO, check=True, capture_output=True)
    wall = time.perf_counter() - started
    jobs = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]
    in_job = [j["wall_time_s"] for j in jobs]
    slots = 2 if launcher == "joblib" else 1
    return {"jobs": len(jobs), "wall_s": round(wall, 2),
            "jobs_per_minute": round(60 * len(jobs) / wall, 2),
            "mean_job_s": round(statistics.fmean(in_job), 3),
            "overhead_per_job_s": round((wall * slots - sum(in_job)) / len(jobs), 3),
            "statuses": sorted({j["status"] for j in jobs})}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--loggers", default="[csv,wandb]")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        results = {name: run_sweep(name, args.loggers, Path(work)) for name in LAUNCHERS}
    print(f"24-job sweep, loggers={args.loggers}, 20 steps per job, MNIST-1D")
    print("| launcher | wall s | jobs/min | mean job s | fixed overhead per job s |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['wall_s']} | {r['jobs_per_minute']} | {r['mean_job_s']} | "
              f"{r['overhead_per_job_s']} |")
    if args.out:
        args.out.write_text(json.dumps({"loggers": args.loggers, "results": results},
                                       indent=2) + "\n")


if __name__ == "__main__":
    main()
