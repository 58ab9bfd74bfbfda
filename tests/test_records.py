"""Nothing a run recorded is lost: last.ckpt is the last epoch, saves are atomic, a resume keeps
the whole history (and falls back past a torn checkpoint), and a live run is never joined."""

from __future__ import annotations

import csv
import datetime
import errno
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import Callback

import gradprobe.instruments.files
import gradprobe.run
from conftest import FAST, REPO, run_job, snapshot
from gradprobe import record
from gradprobe.checkpoints import AtomicCheckpointIO
from gradprobe.instruments.files import new_dated_dir
from gradprobe.record import RunDirError
from gradprobe.sweep.resume import previous_result

COMMON = [*FAST, "data=digits", "model.depth=3", "model.dropout=0.1"]


def rows(path: Path) -> list[dict[str, float | str]]:
    """A CSV's rows with their non-empty cells, numbers as numbers (column order ignored)."""
    def cell(v: str) -> float | str:
        try:
            return float(v)
        except ValueError:
            return v

    with open(path, newline="") as f:
        return [{k: cell(v) for k, v in row.items() if v != ""} for row in csv.DictReader(f)]


def summary_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def ckpt_position(path: Path) -> tuple[int, int]:
    state = torch.load(path, weights_only=True)
    return state["epoch"], state["global_step"]


class KillAt(Callback):
    """Ctrl-C / SIGTERM as Lightning sees it, at the first batch of ``epoch``: that epoch's
    first rows are logged, its checkpoint is not."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def test_last_ckpt_is_the_last_epoch_not_the_best(tmp_path) -> None:
    """An lr far below float32's resolution: val/loss never improves after epoch 0."""
    summary = run_job(tmp_path / "run", [*COMMON, "optimizer=sgd", "optimizer.lr=1e-12",
                                         "trainer.max_epochs=3"])
    folder = tmp_path / "run" / "checkpoints"
    assert ckpt_position(folder / "last.ckpt") == (2, summary["steps"])
    assert Path(summary["best"]["checkpoint"]).name == "best-epoch000.ckpt"


def test_without_validation_last_ckpt_is_still_written(tmp_path) -> None:
    summary = run_job(tmp_path / "run", [*COMMON, "trainer.max_epochs=2",
                                         "trainer.limit_val_batches=0"])
    folder = tmp_path / "run" / "checkpoints"
    assert ckpt_position(folder / "last.ckpt") == (1, summary["steps"])
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    assert summary["best"] == {"val/loss": None, "checkpoint": None}


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch) -> None:
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)

    def full_disk(obj, f, *args, **kwargs) -> None:
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, target)
    assert torch.load(target, weights_only=True)["epoch"] == 1  # the old one, whole
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left


@pytest.fixture(scope="module")
def killed_and_full(tmp_path_factory):
    """A 4-epoch run; the same run killed in its third epoch (W&B on), then resumed."""
    root = tmp_path_factory.mktemp("resume")
    sampled = [*COMMON, "trainer.max_epochs=4", "gradflow.every_n_steps=5"]
    full = run_job(root / "full", sampled)
    killed = root / "killed"
    build = gradprobe.run.build_callbacks
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(gradprobe.run, "build_callbacks",
                   lambda *a, **k: [*build(*a, **k), KillAt(epoch=2)])
        with pytest.raises(SystemExit):  # Lightning's exit after a KeyboardInterrupt
            run_job(killed, [*sampled, "logger=[csv,wandb]"])
    before = {"summary": summary_of(killed), "layers": rows(killed / "gradflow/layers.csv")}
    resumed = run_job(killed, [f"resume={killed}"])
    return full, resumed, before, killed


def test_killed_run_records_interrupted_and_rows_after_its_checkpoint(killed_and_full) -> None:
    _, resumed, before, _ = killed_and_full
    assert before["summary"]["status"] == "interrupted"
    # the killed run had flushed rows past its checkpoint; the resume cut and re-measured them
    assert max(r["step"] for r in before["layers"]) >= resumed["resumed_from"][0]["step"]


def test_resume_keeps_the_whole_history_without_duplicates(killed_and_full) -> None:
    full, resumed, _, killed = killed_and_full
    full_dir = Path(full["run_dir"])
    assert resumed["status"] == "completed" and resumed["epochs"] == full["epochs"]
    assert resumed["resumed_from"][0]["epoch"] == 1
    for table in ("metrics.csv", "gradflow/layers.csv", "gradflow/steps.csv"):
        # the same rows (their order follows when each was flushed, which is not a record)
        assert sorted(map(json.dumps, rows(killed / table))) == \
            sorted(map(json.dumps, rows(full_dir / table))), table
    with np.load(killed / "gradflow/histograms.npz") as a, \
            np.load(full_dir / "gradflow/histograms.npz") as b:
        assert a["steps"].tolist() == b["steps"].tolist()
        assert np.array_equal(a["grad_counts"], b["grad_counts"])
    for key in ("test/acc", "test/loss", "val/loss"):
        assert resumed["metrics"][key] == full["metrics"][key], key
    # the init probe's verdict and the measured theory ratio survive the resume
    assert resumed["diagnosis"]["init"] == full["diagnosis"]["init"]
    assert resumed["diagnosis"]["final"]["verdicts"] == full["diagnosis"]["final"]["verdicts"]
    measured = "measured_first_last_backprop_ratio"
    assert resumed["theory"][measured] == full["theory"][measured]
    assert not math.isnan(resumed["theory"][measured])


def test_resume_continues_the_same_wandb_run(killed_and_full) -> None:
    _, resumed, before, killed = killed_and_full
    offline = sorted((killed / "wandb").glob("offline-run-*"))
    assert len(offline) == 2  # one per process, both the same W&B run id (synced as one run)
    # the id is in each dir's run-<id>.wandb: W&B suffixes the dir name ("-1") when the resume
    # starts in the same second as the killed run
    ids = {log.stem.removeprefix("run-") for d in offline for log in d.glob("run-*.wandb")}
    assert ids == {before["summary"]["wandb_id"]}
    out = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json", str(offline[1])],
                         capture_output=True, text=True, timeout=120, check=True)
    assert json.loads(out.stdout)["summary"]["test/acc"] == pytest.approx(
        resumed["metrics"]["test/acc"])


def interrupted_copy(source: Path, dest: Path) -> Path:
    shutil.copytree(source, dest)
    summary = summary_of(dest)
    (dest / "summary.json").write_text(json.dumps(summary | {"status": "interrupted"}))
    return dest


@pytest.mark.parametrize("damage", ["empty", "torn"])
def test_resume_falls_back_past_a_torn_last_ckpt(small_run, tmp_path, damage, caplog) -> None:
    run_dir = interrupted_copy(small_run, tmp_path / "run")
    last = run_dir / "checkpoints" / "last.ckpt"
    data = last.read_bytes()
    last.write_bytes(b"" if damage == "empty" else data[: len(data) // 2])
    summary = run_job(run_dir, [f"resume={run_dir}", "trainer.max_epochs=3"])
    origin = summary["resumed_from"][0]
    assert origin["skipped"][0].startswith("last.ckpt (")
    assert Path(origin["checkpoint"]).name.startswith("best-epoch")
    assert summary["status"] == "completed" and summary["epochs"] == 3
    assert "last.ckpt" in caplog.text and "continuing from best-epoch" in caplog.text


def test_resume_with_no_intact_checkpoint_is_refused_and_writes_nothing(small_run,
                                                                        tmp_path) -> None:
    run_dir = interrupted_copy(small_run, tmp_path / "run")
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(b"")
    before = snapshot(run_dir)
    with pytest.raises(RunDirError, match="no intact checkpoint.*last.ckpt"):
        run_job(run_dir, [f"resume={run_dir}"])
    assert snapshot(run_dir) == before


def test_a_live_run_is_never_joined(small_run, tmp_path) -> None:
    run_dir = interrupted_copy(small_run, tmp_path / "run")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gradprobe.record import acquire_lock; "
         f"acquire_lock({str(run_dir)!r}); print('held', flush=True); time.sleep(120)"],
        cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(run_dir)
        with pytest.raises(RunDirError, match=f"still running \\(pid {holder.pid} on "):
            run_job(run_dir, [f"resume={run_dir}"])
        assert snapshot(run_dir) == before
    finally:
        holder.kill()
        holder.wait()
    # the holder is gone (even killed -9, the OS releases its lock): the resume goes ahead
    assert run_job(run_dir, [f"resume={run_dir}"])["status"] == "completed"


def test_a_moved_run_dir_resumes_where_it_now_is(small_run, tmp_path) -> None:
    first = interrupted_copy(small_run, tmp_path / "first")
    moved = tmp_path / "elsewhere" / "run"
    moved.parent.mkdir()
    first.rename(moved)
    summary = run_job(moved, [f"resume={moved}", "trainer.max_epochs=3"])
    assert summary["status"] == "completed" and summary["run_dir"] == str(moved)
    assert ckpt_position(moved / "checkpoints" / "last.ckpt")[0] == 2
    assert not first.exists()


def test_resume_applies_only_the_overrides_a_resume_may_change(small_run, tmp_path) -> None:
    run_dir = interrupted_copy(small_run, tmp_path / "run")
    before = snapshot(run_dir)
    with pytest.raises(RunDirError, match="optimizer.lr=0.5 would change the run being "
                                          "resumed; a resume may change only trainer.max_"):
        run_job(run_dir, [f"resume={run_dir}", "optimizer.lr=0.5"])
    assert snapshot(run_dir) == before
    summary = run_job(run_dir, [f"resume={run_dir}", "trainer.max_epochs=3"])
    assert summary["epochs"] == 3 and summary["resume_overrides"] == ["trainer.max_epochs=3"]


def test_a_full_disk_leaves_the_last_checkpoint_whole(tmpfs) -> None:
    run_dir = tmpfs("size=2600k") / "run"  # room for one checkpoint of this run, not two
    with pytest.raises(OSError, match="No space left on device"):
        run_job(run_dir, [*FAST, "data=digits", "model.depth=3", "trainer.max_epochs=2"])
    summary = summary_of(run_dir)
    assert summary["status"] == "failed" and "No space left" in summary["error"]
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["last.ckpt"]
    assert ckpt_position(run_dir / "checkpoints" / "last.ckpt")[0] == 0  # loads, whole
    assert not list(run_dir.rglob("*.tmp"))


def test_a_run_saved_with_the_old_monitor_group_resumes_with_gradflow(tmp_path) -> None:
    """The ``gradflow`` group was called ``monitor``: a run directory from then still loads."""
    from gradprobe.resume import load_resolved

    (tmp_path / "config_resolved.yaml").write_text("seed: 0\nmonitor:\n  every_n_steps: 7\n")
    cfg = load_resolved(tmp_path)
    assert cfg.gradflow.every_n_steps == 7 and "monitor" not in cfg


class FrozenClock(datetime.datetime):
    """Every dated folder made at the same microsecond: the worst case of a resume right after
    a kill."""

    @classmethod
    def now(cls, tz=None):  # noqa: ANN206
        return cls(2026, 11, 29, 3, 0, 0, 123456)


def test_dated_dirs_made_at_the_same_moment_never_collide(tmp_path, monkeypatch) -> None:
    real = [new_dated_dir(tmp_path / "real", "resumed-") for _ in range(2)]
    assert sorted(real) == real and real[0] != real[1]
    monkeypatch.setattr(gradprobe.instruments.files, "datetime", FrozenClock)
    made = [new_dated_dir(tmp_path / "frozen") for _ in range(3)]
    assert [p.name for p in made] == ["20261129-030000-123456", "20261129-030000-123456-1",
                                      "20261129-030000-123456-2"]


def test_two_resumes_at_the_same_moment_keep_both_hydra_records(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(gradprobe.instruments.files, "datetime", FrozenClock)
    cfg = OmegaConf.create({"seed": 0, "threads": 1})
    run_dir = tmp_path / "run"
    for attempt in ("first", "second"):
        record.start(cfg, run_dir, {}, [], resumed={"ckpt": attempt},
                     hydra={"overrides.yaml": [f"+attempt={attempt}"]})
        record.release_lock(run_dir)
    kept = sorted(run_dir.glob(".hydra/resumed-*/overrides.yaml"))
    assert [p.read_text() for p in kept] == ["- +attempt=first\n", "- +attempt=second\n"]


def test_a_sweep_job_failed_twice_at_the_same_moment_keeps_both_attempts(tmp_path,
                                                                         monkeypatch) -> None:
    monkeypatch.setattr(gradprobe.instruments.files, "datetime", FrozenClock)
    job = tmp_path / "0"
    for attempt in ("first", "second"):
        job.mkdir(exist_ok=True)
        (job / "summary.json").write_text(json.dumps({"status": "failed", "overrides": ["a=1"],
                                                      "attempt": attempt}))
        assert previous_result(job, ["a=1"]) is None  # moved aside, to run again
        assert not (job / "summary.json").exists()
    kept = sorted((job / "previous_attempts").iterdir())
    assert [json.loads((p / "summary.json").read_text())["attempt"] for p in kept] == [
        "first", "second"]
