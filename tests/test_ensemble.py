"""Vectorized sweeps: a member of an ensemble trains, measures and records exactly what the same
job records alone (so the brute-force checks of the instruments in test_instruments.py hold for
members too), with its own run directory, summary and W&B run."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA_DIR, FAST, REPO, compose_config, run_job
from gradprobe import ensemble
from hydra_plugins.gradprobe_ensemble.ensemble_launcher import group_key, solo_reason

COMMON = ["data=digits", "trainer.max_epochs=2", "gradflow.figures=false",
          "trainer.deterministic=true", "gradflow.every_n_steps=3"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def assert_same_run(member: Path, solo: Path) -> None:
    """Same summary metrics, step count and every gradient-flow statistic (to float rounding;
    on this CPU they are bitwise equal)."""
    a, b = (json.loads((d / "summary.json").read_text()) for d in (member, solo))
    assert a["status"] == b["status"] == "completed" and a["steps"] == b["steps"]
    assert set(a["metrics"]) == set(b["metrics"])
    for key, value in b["metrics"].items():
        assert a["metrics"][key] == pytest.approx(value, rel=1e-5), key
    assert a["diagnosis"]["final"]["verdicts"] == b["diagnosis"]["final"]["verdicts"]
    def logged(run_dir: Path) -> list[tuple[str, str, str]]:
        keys = ("train/loss_step", "train/loss", "train/acc", "val/loss", "val/acc", "test/acc")
        return sorted((r["step"], r.get("epoch", ""), k) for r in rows(run_dir / "metrics.csv")
                      for k in keys if r.get(k))
    assert logged(member) == logged(solo)
    la, lb = (rows(d / "gradflow" / "layers.csv") for d in (member, solo))
    assert len(la) == len(lb) > 0
    for ra, rb in zip(la, lb, strict=True):
        for key, value in rb.items():
            assert (ra[key] == "") == (value == ""), key
            if value and key != "layer":
                assert float(ra[key]) == pytest.approx(float(value), rel=1e-4, abs=1e-10), key


def test_an_ensemble_member_equals_the_job_run_alone(tmp_path) -> None:
    """Four jobs (2 seeds x 2 learning rates) as one ensemble, through the CLI; then job 3
    (seed 1, lr 3e-3) alone, in process. 30 steps: the second epoch (20 batches) is cut short,
    so it is not validated, in either."""
    out = subprocess.run(
        [sys.executable, "train.py", "-m", "hydra/launcher=ensemble", "seed=0,1",
         "optimizer.lr=1e-3,3e-3", "logger=[csv,wandb]", "trainer.max_steps=30", *COMMON,
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ensemble of 4 jobs" in out.stdout + out.stderr
    assert "4 jobs: 4 completed" in out.stdout + out.stderr
    members = [tmp_path / "sweep" / str(i) for i in range(4)]
    for member in members:  # each its own records and its own offline W&B run
        summary = json.loads((member / "summary.json").read_text())
        assert summary["ensemble"]["members"] == 4
        assert (member / ".hydra" / "overrides.yaml").exists()
        assert len(list((member / "wandb").glob("offline-run-*/*.wandb"))) == 1
        assert (member / "checkpoints" / "last.ckpt").exists()
        assert "diagnosis:" in (member / "train.log").read_text()  # its own verdicts
    solo = run_job(tmp_path / "solo", ["logger=csv", "seed=1", "optimizer.lr=3e-3",
                                       "trainer.max_steps=30", *COMMON])
    assert_same_run(members[3], Path(solo["run_dir"]))
    from gradprobe.build import load_module  # a member's checkpoint loads like a solo one

    assert load_module(members[3] / "checkpoints" / "last.ckpt").net is not None


def test_a_diverging_member_does_not_stop_the_others(tmp_path) -> None:
    """... and the ensemble trains on the ``threads`` it is given (not every core)."""
    members = []
    for i, lr in enumerate([0.01, 1e6]):
        cfg, choices = compose_config([*FAST, *COMMON, "optimizer=sgd", f"optimizer.lr={lr}",
                                       "threads=1"])
        members.append(ensemble.Member(cfg, tmp_path / str(i), choices, [f"optimizer.lr={lr}"]))
    fine, diverged = ensemble.train(members)
    assert fine["threads"] == diverged["threads"] == 1
    assert fine["status"] == "completed" and "test/acc" in fine["metrics"]
    assert diverged["status"] == "diverged" and "test/acc" not in diverged["metrics"]
    assert diverged["diverged"]["step"] < fine["steps"] and diverged["steps"] < fine["steps"]
    on_disk = json.loads((tmp_path / "1" / "summary.json").read_text())
    assert on_disk["status"] == "diverged"


def test_members_see_the_batches_of_their_solo_runs() -> None:
    """Each member's step k of each epoch is batch k of its solo run's sampler order (the
    epoch set by Lightning through ``set_epoch``, as for the solo sampler)."""
    from torch.utils.data import DistributedSampler

    from gradprobe.ensemble.data import MemberBatches, MemberOrders

    def solo(seed: int) -> DistributedSampler:
        return DistributedSampler(range(50), num_replicas=1, rank=0, shuffle=True, seed=seed)

    batches = MemberBatches(MemberOrders([solo(0), solo(7)]), 8)
    assert len(batches) == 6  # the last partial batch dropped, as drop_last
    for epoch in (0, 1):
        batches.sampler.set_epoch(epoch)
        steps = list(batches)
        for i, seed in enumerate((0, 7)):
            alone = solo(seed)
            alone.set_epoch(epoch)
            assert [s[i].tolist() for s in steps] == [list(alone)[k:k + 8]
                                                     for k in range(0, 48, 8)]


def test_lightning_drives_the_ensemble(tmp_path, monkeypatch) -> None:
    """A ``pl.Trainer`` fits the ``EnsembleModule``: its limits, validation cadence and
    scheduler act on a member as on the job alone."""
    import pytorch_lightning as pl
    import torch

    fitted = []
    fit = pl.Trainer.fit
    monkeypatch.setattr(pl.Trainer, "fit", lambda trainer, module, **kw: (
        fitted.append(type(module)), fit(trainer, module, **kw))[1])
    settings = ["data=digits", "trainer.max_epochs=3", "trainer.limit_train_batches=3",
                "trainer.check_val_every_n_epoch=2", "scheduler=step",
                "scheduler.step_size=1", "gradflow.every_n_steps=2"]
    members = []
    for seed in (0, 1):
        cfg, choices = compose_config([*FAST, *settings, f"seed={seed}"])
        members.append(ensemble.Member(cfg, tmp_path / str(seed), choices, [f"seed={seed}"]))
    summaries = ensemble.train(members)
    assert fitted == [ensemble.EnsembleModule]
    assert [s["steps"] for s in summaries] == [9, 9] and summaries[1]["epochs"] == 3
    assert summaries[1]["best"]["checkpoint"].startswith(str(tmp_path / "1" / "checkpoints"))
    solo = run_job(tmp_path / "solo", [*FAST, *settings, "seed=1"])
    assert_same_run(tmp_path / "1", Path(solo["run_dir"]))
    # a member is never resumed (no optimizer state of its own): last.ckpt is its final weights
    saved = torch.load(tmp_path / "1" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == summaries[1]["steps"] == 9
    assert [r["step"] for r in rows(tmp_path / "1" / "metrics.csv") if r.get("val/loss")] == \
        ["5"]  # validated after epoch 1 only


def test_grouping_and_the_jobs_that_run_alone() -> None:
    def cfg(*overrides: str):
        return compose_config(["logger=csv", *overrides])[0]
    assert group_key(cfg("seed=1", "optimizer.lr=0.1", "init=kaiming_normal")) == \
        group_key(cfg("seed=2"))
    assert group_key(cfg("model.depth=3")) != group_key(cfg())
    assert solo_reason(cfg()) is None
    assert "dropout" in solo_reason(cfg("model.dropout=0.1"))
    assert "batch norm" in solo_reason(cfg("norm=batch"))
    assert "regression" in solo_reason(cfg("data=synthetic"))
    assert "clipping" in solo_reason(cfg("trainer.gradient_clip_val=1.0"))
