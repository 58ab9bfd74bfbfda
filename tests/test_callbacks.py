"""The ``callbacks`` group (checkpoints, early stopping, progress bar, model summary), which
weights a run is tested on (``test_on``), the ``debug`` presets and W&B user tags: each checked
on a real, tiny run."""

from __future__ import annotations

import csv
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import FAST, compose_config, run_job, snapshot
from gradprobe.record import RunDirError
from gradprobe.schema import ConfigError, validate

TINY = [*FAST, "data=digits", "model.depth=3"]
# adam at 3e-2 on digits: val/loss is best at epoch 2 of 4 and worse at the end (checked below)
OVERSHOOT = [*TINY, "trainer.max_epochs=4", "optimizer.lr=0.03"]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_the_best_weights_are_tested_and_the_final_ones_beside_them(tmp_path) -> None:
    best = run_job(tmp_path / "best", OVERSHOOT)
    last = run_job(tmp_path / "last", [*OVERSHOOT, "test_on=last"])
    assert best["tested_on"] == "best" and last["tested_on"] == "last"
    assert Path(best["best"]["checkpoint"]).name == "best-epoch002.ckpt"
    m, n = best["metrics"], last["metrics"]
    # the final weights are the same run's either way; the best ones tested better here
    assert m["test_last/loss"] == pytest.approx(n["test/loss"], rel=1e-6)
    assert m["test/loss"] < m["test_last/loss"] - 0.1
    assert "test_last/loss" not in n
    logged = rows(tmp_path / "best" / "metrics.csv")
    assert [float(r["test/loss"]) for r in logged if r.get("test/loss")] == \
        pytest.approx([m["test/loss"]])  # Lightning logged the best weights' test only
    assert [float(r["test_last/loss"]) for r in logged if r.get("test_last/loss")] == \
        pytest.approx([m["test_last/loss"]])


@pytest.mark.parametrize("switch", ["callbacks.checkpoint.enabled=false",
                                    "+trainer.enable_checkpointing=false", "callbacks=none"])
def test_checkpoints_off_still_train_and_test_the_final_weights(tmp_path, switch) -> None:
    run_dir = tmp_path / "run"
    summary = run_job(run_dir, [*TINY, "trainer.max_epochs=2", switch])
    assert summary["status"] == "completed" and summary["tested_on"] == "last"
    assert "test/acc" in summary["metrics"] and "test_last/acc" not in summary["metrics"]
    assert not (run_dir / "checkpoints").exists()
    assert summary["best"] == {"val/loss": None, "checkpoint": None}
    if switch.startswith("callbacks.checkpoint"):  # such a run cannot be resumed
        (run_dir / "summary.json").write_text(json.dumps(summary | {"status": "interrupted"}))
        before = snapshot(run_dir)
        with pytest.raises(RunDirError, match="checkpoints off"):
            run_job(run_dir, [f"resume={run_dir}", "trainer.max_epochs=3"])
        assert snapshot(run_dir) == before


def test_best_weights_only_cuts_the_best_checkpoint(tmp_path) -> None:
    full = run_job(tmp_path / "full", [*TINY, "trainer.max_epochs=2"])
    slim = run_job(tmp_path / "slim", [*TINY, "trainer.max_epochs=2",
                                       "callbacks.checkpoint.best_weights_only=true"])
    size = {name: Path(s["best"]["checkpoint"]).stat().st_size
            for name, s in (("full", full), ("slim", slim))}
    assert size["slim"] < 0.6 * size["full"]  # adam keeps two moments per weight
    assert slim["metrics"]["test/acc"] == pytest.approx(full["metrics"]["test/acc"])
    from gradprobe.build import load_module

    assert load_module(slim["best"]["checkpoint"]).net is not None


def test_early_stopping_stops_when_val_loss_stops_improving(tmp_path) -> None:
    """sgd at 1e-12: val/loss never improves after the first validation."""
    common = [*TINY, "optimizer=sgd", "optimizer.lr=1e-12", "trainer.max_epochs=10"]
    stopped = run_job(tmp_path / "es", [*common, "callbacks.early_stopping.enabled=true",
                                        "callbacks.early_stopping.patience=2"])
    assert stopped["status"] == "completed" and stopped["epochs"] == 3
    assert run_job(tmp_path / "plain", common)["epochs"] == 10  # off by default


def test_the_progress_bar_counts_optimizer_steps(tmp_path, capfd) -> None:
    """Two Lightning calls per epoch train 22 optimizer steps; the bar says 22/22."""
    summary = run_job(tmp_path / "run", [*TINY, "trainer.max_epochs=2", "data.batch_size=64",
                                         "callbacks.progress_bar.enabled=true"])
    per_epoch = summary["steps"] // 2
    assert per_epoch > 2
    shown = re.findall(r"Epoch 1: 100%\|[^|]*\| (\d+)/(\d+) \[[^]]*step/s", capfd.readouterr().out)
    assert shown and shown[-1] == (str(per_epoch), str(per_epoch))


def test_the_model_summary_counts_flops() -> None:
    from pytorch_lightning.utilities.model_summary import summarize

    from gradprobe.build import build_module
    from gradprobe.callbacks import FlopsSummary

    cfg, _ = compose_config(["model.depth=2", "model.width=16"])
    module = build_module(cfg, (40,), 10)
    assert summarize(module).total_flops == 0  # Lightning's own: no example input
    for dtype in ("float", "double"):
        getattr(module, dtype)()
        module.example_input_array = FlopsSummary.example_input(module)
        # 2 * (40*16 + 16*16 + 16*10) multiply-adds for one example
        assert summarize(module).total_flops == 2 * (40 * 16 + 16 * 16 + 16 * 10)


@pytest.mark.parametrize(("overrides", "interactive", "shown"), [
    ([], False, set()), ([], True, {"StepProgressBar"}),
    (["verbose=true"], False, {"FlopsSummary"}),
    (["callbacks.model_summary.enabled=true", "callbacks.progress_bar.enabled=false"], True,
     {"FlopsSummary"}),
])
def test_progress_bar_and_summary_switches(tmp_path, overrides, interactive, shown) -> None:
    from gradprobe.callbacks import build_callbacks, trainer_flags

    cfg, _ = compose_config(overrides)
    callbacks = build_callbacks(cfg, tmp_path, interactive, None)
    assert {type(c).__name__ for c in callbacks} - {"ModelCheckpoint"} == shown
    flags = trainer_flags(callbacks)
    assert flags["enable_progress_bar"] == ("StepProgressBar" in shown)
    assert flags["enable_model_summary"] == ("FlopsSummary" in shown)


@pytest.mark.parametrize("preset", ["fast", "overfit", "profile", "anomaly"])
def test_debug_presets_run(tmp_path, preset) -> None:
    run_dir = tmp_path / "run"
    summary = run_job(run_dir, [*TINY, f"debug={preset}", "trainer.max_epochs=1"])
    assert summary["status"] == "completed" and "test/acc" in summary["metrics"]
    if preset == "fast":
        assert summary["steps"] == 1 and not (run_dir / "checkpoints").exists()
    if preset == "overfit":
        assert summary["steps"] == 3
    if preset == "profile":
        assert "run_training_epoch" in (run_dir / "fit-profile.txt").read_text()


@pytest.mark.parametrize(("override", "key"), [
    ("test_on=worst", "test_on"), ("tags=baseline", "tags"),
    ("callbacks.early_stopping.patience=-1", "callbacks.early_stopping.patience"),
    ("callbacks.early_stopping.monitor=val/los", "callbacks.early_stopping.monitor"),
    ("+trainer.fast_dev_run=-1", "trainer.fast_dev_run"),
    ("+trainer.profiler=fancy", "trainer.profiler"),
])
def test_bad_values_are_refused(override, key) -> None:
    cfg, _ = compose_config([override])
    with pytest.raises(ConfigError, match=f"config error: {re.escape(key)}="):
        validate(cfg)


def test_early_stopping_needs_what_it_monitors() -> None:
    cfg, _ = compose_config(["callbacks.early_stopping.enabled=true",
                             "trainer.limit_val_batches=0"])
    with pytest.raises(ConfigError, match="limit_val_batches=0"):
        validate(cfg)


def test_user_tags_reach_the_wandb_run(tmp_path) -> None:
    """A real offline W&B run, read back from its files."""
    run_dir = tmp_path / "run"
    run_job(run_dir, [*TINY, "logger=[csv,wandb]", "tags=[baseline,v2]"])
    out = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json",
                          str(run_dir / "wandb")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    tags = json.loads(out.stdout)["tags"]
    assert {"baseline", "v2", "model:mlp", "data:digits"} <= set(tags)
