"""Multiruns: failures are recorded, the sweep goes on, and it ends with one line and exit 1."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

from conftest import DATA_DIR, REPO
from gradprobe.sweep.placement import (
    AUTO_THREADS_CAP,
    gpu_for_job,
    parallel_jobs,
    threads_per_job,
    usable_cpus,
)


def sweep(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", "-m", f"hydra.sweep.dir={tmp_path}", "data=digits",
         "trainer.max_epochs=1", "logger=csv", "gradflow.figures=false", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})


def test_diverging_and_crashing_jobs_do_not_stop_the_sweep(tmp_path) -> None:
    """Job 1 and 3 are refused (a bad nonlinearity name: recorded as failed), job 2 diverges
    (lr 1e6), job 0 trains; in parallel processes (joblib)."""
    out = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer=sgd",
                "optimizer.lr=0.01,1e6", "init=kaiming_normal",
                "init.weight.nonlinearity=relu,badname")
    statuses = [json.loads((tmp_path / str(i) / "summary.json").read_text())["status"]
                for i in range(4)]
    assert statuses == ["completed", "failed", "diverged", "failed"]
    failed = json.loads((tmp_path / "1" / "summary.json").read_text())
    assert "init.weight.nonlinearity='badname' is not allowed" in failed["error"]
    assert failed["error"] in (tmp_path / "1" / "train.log").read_text()
    completed = json.loads((tmp_path / "0" / "summary.json").read_text())
    assert completed["threads"] == min(AUTO_THREADS_CAP, max(1, usable_cpus() // 2))  # 2 jobs share
    assert out.returncode == 1
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("sweep: 2 of 4 jobs failed; logs: ")
    assert str(tmp_path / "1" / "train.log") in last and str(tmp_path / "3" / "train.log") in last


def test_a_sweep_of_completed_and_diverged_jobs_exits_0(tmp_path) -> None:
    out = sweep(tmp_path, "optimizer=sgd", "optimizer.lr=0.01,1e6")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "2 jobs: 1 completed, 1 diverged" in out.stdout + out.stderr


def test_a_bad_value_fails_its_job_only(tmp_path) -> None:
    out = sweep(tmp_path, "model.depth=2,0")
    summary = json.loads((tmp_path / "1" / "summary.json").read_text())
    assert summary["status"] == "failed" and "model.depth=0 is not allowed" in summary["error"]
    assert json.loads((tmp_path / "0" / "summary.json").read_text())["status"] == "completed"
    assert out.returncode == 1


def test_resuming_a_sweep_reruns_only_unfinished_jobs(tmp_path) -> None:
    """Jobs: 0 completed (then marked killed), 1 failed, 2 diverged, 3 failed. Resuming re-runs
    0, 1 and 3 and skips 2; the failed attempts are kept aside."""
    args = ("optimizer=sgd", "optimizer.lr=0.01,1e6", "init=kaiming_normal",
            "init.weight.nonlinearity=relu,badname")
    assert sweep(tmp_path, *args).returncode == 1
    diverged_record = (tmp_path / "2" / "summary.json").read_text()
    killed = json.loads((tmp_path / "0" / "summary.json").read_text())
    (tmp_path / "0" / "summary.json").write_text(json.dumps(killed | {"status": "running"}))

    out = sweep(tmp_path, *args, f"sweep.resume={tmp_path}")
    assert out.returncode == 1  # jobs 1 and 3 fail again
    assert "already diverged, skipped" in out.stdout + out.stderr
    assert (tmp_path / "2" / "summary.json").read_text() == diverged_record
    assert not (tmp_path / "2" / "previous_attempts").exists()
    rerun = json.loads((tmp_path / "0" / "summary.json").read_text())
    assert rerun["status"] == "completed" and rerun["started_at"] >= killed["started_at"]
    for job in ("0", "1", "3"):
        attempts = list((tmp_path / job / "previous_attempts").iterdir())
        assert len(attempts) == 1 and (attempts[0] / "summary.json").exists()
    assert json.loads((tmp_path / "1" / "summary.json").read_text())["status"] == "failed"


def test_parallel_jobs_follow_the_hardware(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert parallel_jobs("gpu", 4, cpus=16) == 8  # 4 per GPU
    assert parallel_jobs("gpu", 4, cpus=6) == 6  # never more than the cores
    assert parallel_jobs("cpu", 4, cpus=16) == 16  # CPU training: one per core
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert parallel_jobs("gpu", 4, cpus=16) == 16  # no GPU visible
    from hydra import compose, initialize_config_dir

    from gradprobe.config import CONF_DIR, register_resolvers

    register_resolvers()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=parallel"], return_hydra_config=True)
    assert cfg.hydra.launcher.n_jobs == parallel_jobs("cpu")  # accelerator=cpu: all cores


def test_threads_and_gpus_per_job() -> None:
    assert threads_per_job({"n_jobs": 2}, cpus=8) == 4
    assert threads_per_job({"n_jobs": -1}, cpus=8) == 1  # joblib: -1 means one job per core
    assert threads_per_job({"n_jobs": -2}, cpus=8) == 1  # 7 jobs on 8 cores
    assert threads_per_job({"n_jobs": 16}, cpus=8) == 1
    assert threads_per_job({"cpus_per_task": 3}) == 3  # submitit
    assert threads_per_job({}) is None and threads_per_job(None) is None  # basic launcher
    assert [gpu_for_job(k, 4) for k in range(6)] == [[0], [1], [2], [3], [0], [1]]


def test_submitit_local_runs_a_sweep(tmp_path) -> None:
    out = sweep(tmp_path, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                "activation=relu,tanh")
    assert out.returncode == 0, out.stderr[-3000:]
    for job in ("0", "1"):
        assert json.loads((tmp_path / job / "summary.json").read_text())["status"] == "completed"


def test_optuna_search_returns_its_best_value_quietly(tmp_path) -> None:
    """Two trials; `import optuna` imports alembic, whose 7 "setup plugin" INFO lines the
    search's config silences (hydra.hydra_logging), so none is printed."""
    out = sweep(tmp_path, "hparams_search=optuna", "hydra.sweeper.n_trials=2")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "alembic" not in out.stdout + out.stderr
    assert "Study name: gradprobe" in out.stdout + out.stderr  # Hydra's own lines still print
    import yaml

    best = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    losses = [json.loads((tmp_path / str(i) / "summary.json").read_text())["metrics"]["val/loss"]
              for i in range(2)]
    assert best["best_value"] == min(losses)
    assert set(best["best_params"]) == {"optimizer.lr", "init.weight.gain"}


def test_grid_sweep_with_joblib_writes_its_report(tmp_path) -> None:
    out = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                "activation=relu,sigmoid", "model.depth=2,4", "seed=0,1", "logger=[csv,wandb]",
                "trainer.limit_train_batches=5")
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    grid = sorted((r["activation"], r["model.depth"], r["seed"]) for r in rows)
    assert grid == sorted((a, d, s) for a in ("relu", "sigmoid") for d in ("2", "4")
                          for s in ("0", "1"))
    assert all(r["status"] == "completed" and r["init_first_last_ratio"] for r in rows)
    with open(tmp_path / "aggregate.csv") as f:
        assert {r["n_runs"] for r in csv.DictReader(f)} == {"2"}
    report = (tmp_path / "report.md").read_text()
    assert "8 runs: 8 completed" in report and "heatmap_val_acc.png" in report
    assert "Axes: model.depth (x) and activation (y), the keys these runs vary." in report
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
    # each job and the report are W&B runs of one group: the sweep directory
    groups = set()
    for run_dir in [*tmp_path.glob("*/wandb/offline-run-*"), *tmp_path.glob("wandb/offline-run-*")]:
        records = subprocess.run(["wandb", "leet", "inspect", "--json", str(run_dir)],
                                 capture_output=True, text=True, check=True, timeout=120).stdout
        run = next(r["run"] for r in map(json.loads, records.splitlines()) if r["type"] == "run")
        groups.add(run["run_group"])
    assert groups == {str(tmp_path.resolve())}
    assert len(list(tmp_path.glob("wandb/offline-run-*"))) == 1  # the sweep-level report run
