"""End-to-end runs through the same entry function as the CLI, on small real data."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from conftest import CONF_DIR, DATA_DIR, FAST, REPO, run_job
from fabricate import vision_root
from gradprobe.build import load_module
from gradprobe.module import GradprobeModule
from gradprobe.record import RunDirError
from gradprobe.schema import DataError

SHORT = ["trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
         "trainer.limit_test_batches=1"]
OPTIONS = {g: sorted(p.stem for p in (CONF_DIR / g).glob("*.yaml"))
           for g in ("activation", "norm", "init")}


def metrics_rows(run_dir: Path) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("dataset", ["mnist1d", "digits", "synthetic"])
def test_short_run_per_offline_dataset(run, dataset: str) -> None:
    summary = run(f"data={dataset}", *SHORT)
    assert summary["status"] == "completed" and summary["choices"]["data"] == dataset
    assert summary["steps"] == 3 and summary["epochs"] == 1
    key = "test/acc" if dataset != "synthetic" else "test/mse"
    assert key in summary["metrics"] and "val/loss" in summary["metrics"]


@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist", "cifar10"])
def test_short_run_per_torchvision_dataset(run, dataset: str, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("GRADPROBE_DATA_DIR", str(vision_root(tmp_path / "vision")))
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda path, md5=None: os.path.isfile(path))
    summary = run(f"data={dataset}", "data.batch_size=16", *SHORT)
    assert summary["status"] == "completed" and summary["steps"] == 3


@pytest.mark.parametrize(("group", "option"),
                         [(g, o) for g, opts in OPTIONS.items() for o in opts])
def test_every_activation_norm_and_init_trains_a_step(run, group: str, option: str) -> None:
    summary = run("data=digits", f"{group}={option}", "trainer.max_steps=1", *SHORT)
    assert summary["status"] == "completed" and summary["steps"] == 1
    assert torch.isfinite(torch.tensor(summary["metrics"]["train/loss"]))


@pytest.mark.parametrize(("overrides", "learns"), [
    (["model=mlp"], False),  # PyTorch's default init at depth 50: gradients vanish, loss ~ln 10
    (["model=mlp", "init=kaiming_normal", "norm=batch"], True),
    (["model=resmlp", "norm=layer"], True),
])
def test_depth_50_trains(run, overrides: list[str], learns: bool) -> None:
    summary = run(*overrides, "model.depth=50", "trainer.limit_train_batches=20",
                  "trainer.log_every_n_steps=1")
    losses = torch.tensor([float(r["train/loss_step"])
                           for r in metrics_rows(Path(summary["run_dir"]))
                           if r.get("train/loss_step")])
    assert summary["status"] == "completed" and len(losses) == 20
    assert bool(torch.isfinite(losses).all())
    if learns:
        assert losses[-3:].mean() < losses[:3].mean() - 0.1, losses


def test_cnn1d_on_mnist1d(run) -> None:
    summary = run("model=cnn1d", *SHORT)
    assert summary["status"] == "completed" and summary["num_parameters"] > 0


def test_seed_example_reduces_its_loss(run) -> None:
    summary = run("experiment=seed_example", "trainer.log_every_n_steps=1",
                  "trainer.max_epochs=-1")
    rows = [r for r in metrics_rows(Path(summary["run_dir"])) if r.get("train/loss_step")]
    assert summary["steps"] == 1000 and len(rows) == 1000
    first, last = float(rows[0]["train/loss_step"]), float(rows[-1]["train/loss_step"])
    assert last < 0.5 * first, (first, last)
    assert summary["num_parameters"] == 2 * 4 + 4 + 4 * 1 + 1


def test_same_seed_same_numbers_other_seed_other_numbers(run) -> None:
    a = run("data=digits", "seed=0", *SHORT, name="a")
    b = run("data=digits", "seed=0", *SHORT, name="b")
    c = run("data=digits", "seed=1", *SHORT, name="c")
    assert a["metrics"] == b["metrics"]
    assert a["metrics"] != c["metrics"]


def test_run_records(run) -> None:
    summary = run("data=digits", "activation=tanh", *SHORT)
    run_dir = Path(summary["run_dir"])
    saved = json.loads((run_dir / "summary.json").read_text())
    assert saved == json.loads(json.dumps(summary, default=str))
    assert saved["choices"]["activation"] == "tanh" and "activation=tanh" in saved["overrides"]
    assert {"torch", "pytorch-lightning", "hydra-core", "python"} <= set(saved["versions"])
    assert set(saved["git"]) == {"commit", "dirty"}
    assert (run_dir / "config_resolved.yaml").exists() and (run_dir / "metrics.csv").exists()
    assert (run_dir / "checkpoints" / "last.ckpt").exists() and saved["best"]["checkpoint"]


def test_checkpoints_load_weights_only(run) -> None:
    summary = run("data=digits", "model=resmlp", "norm=batch", *SHORT)
    ckpt = Path(summary["run_dir"]) / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)  # plain hyperparameters only
    assert state["hyper_parameters"]["run_config"]["model"]["depth"] == 8
    module = load_module(ckpt)
    x = torch.randn(5, 64)
    assert module(x).shape == (5, 10)
    assert torch.equal(module.net.head.weight, state["state_dict"]["net.head.weight"])


def test_failure_is_recorded(run, tmp_path, monkeypatch) -> None:
    def crash(*args, **kwargs):
        raise RuntimeError("boom in training")

    monkeypatch.setattr(GradprobeModule, "training_step", crash)
    with pytest.raises(RuntimeError, match="boom in training"):
        run("data=digits", *SHORT)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "failed" and "boom in training" in summary["error"]


def test_data_that_cannot_load_is_refused_before_anything_is_written(run, tmp_path) -> None:
    with pytest.raises(DataError, match="NoSuchDataset"):
        run("data=mnist", "data.source.name=NoSuchDataset")
    assert not (tmp_path / "run").exists()


def test_finished_run_dir_is_never_overwritten(run) -> None:
    run("data=digits", *SHORT)
    with pytest.raises(RunDirError, match="refusing to overwrite"):
        run("data=digits", *SHORT)


def test_wandb_offline_run_holds_metrics_and_choices(run) -> None:
    summary = run("data=digits", "activation=tanh", "model.depth=3", "logger=[csv,wandb]",
                  "trainer.log_every_n_steps=1", "gradflow.figures=true", *SHORT)
    run_dirs = list((Path(summary["run_dir"]) / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    out = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(run_dirs[0])],
                         capture_output=True, text=True, timeout=120, check=True)
    record = json.loads(out.stdout)
    assert record["config"]["activation"] == "tanh" and record["config"]["model.depth"] == 3
    assert record["config"]["data"] == "digits" and record["exit_code"] == 0
    assert "activation:tanh" in record["tags"]
    logged = json.dumps(record)
    for key in ("train/loss_step", "val/loss", "val/acc", "test/acc"):
        assert key in logged
    assert record["summary"]["test/acc"] == pytest.approx(summary["metrics"]["test/acc"])
    # the instruments' metrics, verdicts and figures reach the W&B run too
    assert "grad/norm/layer_01" in logged and "act/pre_cosine/layer_02" in logged
    assert record["summary"]["diagnosis/final"] == ", ".join(
        summary["diagnosis"]["final"]["verdicts"])
    assert "figures/heatmap" in logged and "figures/similarity" in logged
    assert record["summary"]["backprop/first_last_ratio_final"] == pytest.approx(
        summary["diagnosis"]["final"]["backprop_first_last_ratio"])
    assert record["summary"]["theory/phase"] == summary["theory"]["phase"]  # mean-field beside


def test_tensorboard_gets_metrics_and_histograms(run) -> None:
    summary = run("data=digits", "logger=tensorboard", "gradflow.histogram_every_n_steps=10",
                  *SHORT)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events_dir = Path(summary["run_dir"]) / "tensorboard"
    acc = EventAccumulator(str(events_dir), size_guidance={"histograms": 0}).Reload()
    assert "grad/norm/layer_01" in acc.Tags()["scalars"]
    assert "grad_hist/log10_abs/layer_01" in acc.Tags()["histograms"]


def test_resume_continues_to_the_same_numbers(tmp_path) -> None:
    """A 4-epoch run, and a 2-epoch run resumed to 4 epochs through the CLI, end identically."""
    common = [*FAST, "data=digits", "model.dropout=0.1", "trainer.deterministic=true"]
    full = run_job(tmp_path / "full", [*common, "trainer.max_epochs=4"])
    # An interrupted run: 2 epochs done, its record still says it is running toward 4.
    part_dir = tmp_path / "part"
    run_job(part_dir, [*common, "trainer.max_epochs=2"])
    summary = json.loads((part_dir / "summary.json").read_text())
    (part_dir / "summary.json").write_text(json.dumps(summary | {"status": "running"}))
    cfg_path = part_dir / "config_resolved.yaml"
    cfg_path.write_text(cfg_path.read_text().replace("max_epochs: 2", "max_epochs: 4"))

    subprocess.run([sys.executable, "train.py", f"resume={part_dir}"], cwd=REPO, check=True,
                   capture_output=True, timeout=300, env=os.environ | {"GRADPROBE_DATA_DIR":
                                                                       DATA_DIR})
    resumed = json.loads((part_dir / "summary.json").read_text())
    assert resumed["status"] == "completed" and resumed["epochs"] == 4
    assert len(resumed["resumed_at"]) == 1
    for key in ("val/loss", "val/acc", "test/loss", "test/acc"):
        assert resumed["metrics"][key] == full["metrics"][key], key
    assert list(part_dir.glob(".hydra/resumed-*/overrides.yaml"))
    # Continuing a completed run is refused.
    out = subprocess.run([sys.executable, "train.py", f"resume={part_dir}"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "already ended with status completed" in out.stderr


def test_linear_model_runs_with_instruments_and_figures(run) -> None:
    summary = run("model=linear", "gradflow.figures=true", *SHORT)
    figures = Path(summary["run_dir"]) / "gradflow" / "figures"
    assert summary["status"] == "completed" and (figures / "heatmap.png").exists()
    assert summary["num_parameters"] == 40 * 10 + 10
