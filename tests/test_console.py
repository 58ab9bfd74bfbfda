"""What a command prints (gradprobe.console): a run prints where it writes, its verdicts and its
final line, and everything else only with ``verbose=true`` (train.log keeps it all); every line a
sweep job prints carries its job number; a failed run's traceback is in its train.log; a run a
signal ended says how to continue it. Four CLI runs (each a few seconds), the rest in process."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys

import pytest

from conftest import DATA_DIR, REPO, compose_config
from gradprobe import console, interrupt
from gradprobe.schema import ConfigError, validate

SMALL = ["trainer.max_epochs=1", "trainer.limit_train_batches=2"]  # size only: the default run
SWEEP = ["data=digits", "logger=csv", "gradflow.figures=false", "sweep.report=false",
         "seed=0,1", *SMALL]
HYDRA_LINE = re.compile(r"^\[[^\]]+\]\[HYDRA\] ")  # the sweep process's own lines
JOB_LINE = re.compile(r"^\[job (\d+)\] ")


def train_py(*args: str, **env: str) -> subprocess.CompletedProcess:
    """``python train.py <args>`` with stdout not a terminal and W&B's env left to the app."""
    environ = {k: v for k, v in os.environ.items() if k != "WANDB_SILENT"}
    return subprocess.run([sys.executable, "train.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600,
                          env=environ | {"GRADPROBE_DATA_DIR": DATA_DIR} | env)


def lines_of(out: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]


def test_a_default_run_prints_where_it_writes_its_verdicts_and_its_final_line(tmp_path):
    run_dir = tmp_path / "run"
    out = train_py(*SMALL, f"hydra.run.dir={run_dir}")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = lines_of(out)
    messages = [line.split(" - ", 1)[-1] for line in lines]
    assert len(lines) <= 8, "\n".join(lines)
    assert all(line.startswith("[") and "][gradprobe][" in line for line in lines), lines
    assert messages[0] == f"run directory: {run_dir}"
    assert [m.split(":")[0] for m in messages[1:3]] == ["init probe", "diagnosis"]
    assert len(messages) == 4 and messages[-1].startswith("completed in ")
    assert messages[-1].endswith(f"-> {run_dir}")
    log = (run_dir / "train.log").read_text()
    assert "GPU available" in log and "init probe" in log  # the file keeps every line
    assert "Trainer(limit_" not in log  # Lightning's defaults, so no line saying so
    wandb_files = list((run_dir / "wandb").glob("offline-run-*/*.wandb"))  # W&B quiet, not off
    assert len(wandb_files) == 1 and wandb_files[0].stat().st_size > 0


def test_a_failed_run_says_so_in_one_line_and_keeps_the_traceback_in_its_log(tmp_path):
    """A value Adam rejects only once training starts (after validation) fails the run;
    ``print_config=true`` prints the resolved config first."""
    run_dir = tmp_path / "run"
    out = train_py("data=digits", "logger=csv", "print_config=true", "+optimizer.bogus=1",
                   *SMALL, f"hydra.run.dir={run_dir}")
    assert out.returncode == 1, out.stderr[-3000:]
    assert "print_config: true" in out.stdout and "task: classification" in out.stdout
    assert "${" not in out.stdout  # resolved
    assert out.stderr.strip().splitlines() == [
        "failed: TypeError: Adam.__init__() got an unexpected keyword argument 'bogus' "
        f"(traceback in {run_dir / 'train.log'})"]
    assert "Traceback" not in out.stdout + out.stderr
    log = (run_dir / "train.log").read_text()
    assert "Traceback (most recent call last)" in log and "'bogus'" in log
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed" and "bogus" in summary["error"]


def test_every_line_of_a_parallel_sweep_job_carries_its_number(tmp_path):
    """joblib, two jobs at once, ``verbose=true``: Lightning's lines are back, and tagged."""
    out = train_py("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "verbose=true",
                   *SWEEP, f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    job_lines = [line for line in lines_of(out) if not HYDRA_LINE.match(line)]
    untagged = [line for line in job_lines if not JOB_LINE.match(line)]
    assert not untagged, "\n".join(untagged)
    for job in ("0", "1"):
        mine = [line for line in job_lines if JOB_LINE.match(line).group(1) == job]
        assert any("GPU available" in line for line in mine)  # verbose: Lightning's lines
        assert sum("init probe:" in line for line in mine) == 1
        assert sum(f"-> {tmp_path / job}" in line for line in mine) == 1  # its final line


def test_an_ensemble_prints_each_init_verdict_once_and_a_final_line_per_job(tmp_path):
    out = train_py("-m", "hydra/launcher=ensemble", *SWEEP, f"hydra.sweep.dir={tmp_path}")
    assert out.returncode == 0, out.stderr[-3000:]
    lines = lines_of(out)
    assert not any("GPU available" in line for line in lines)  # not verbose
    for job in ("0", "1"):
        assert sum(line.startswith(f"[job {job}] ") and "init probe:" in line
                   for line in lines) == 1, "\n".join(lines)
        final = [line for line in lines if line.startswith(f"[job {job}] ")
                 and line.endswith(f"-> {tmp_path / job}")]
        assert len(final) == 1 and "completed in " in final[0]
        assert "init probe:" in (tmp_path / job / "train.log").read_text()  # its own log


# ------------------------------------------------------------------------------ in process


def emit(handler: logging.Handler, name: str, level: int, **extra: object) -> str:
    record = logging.LogRecord(name, level, __file__, 1, "line one\nline two", None, None)
    record.__dict__.update(extra)
    return handler.format(record) if handler.filter(record) else ""


def test_the_console_keeps_gradprobe_lines_and_warnings_unless_verbose():
    handler = logging.StreamHandler(io.StringIO())
    handler.addFilter(console.Quiet(verbose=False))
    handler.setFormatter(console.Tagged(logging.Formatter("%(name)s: %(message)s")))
    assert emit(handler, "gradprobe", logging.INFO) == "gradprobe: line one\nline two"
    assert emit(handler, "pytorch_lightning.utilities.rank_zero", logging.INFO) == ""
    assert emit(handler, "py.warnings", logging.WARNING) != ""
    assert emit(handler, "gradprobe", logging.ERROR, **console.LOG_ONLY) == ""  # train.log only
    with console.job(3):
        assert emit(handler, "gradprobe", logging.INFO) == ("[job 3] gradprobe: line one\n"
                                                            "[job 3] line two")
    assert console.JOB.get() is None
    handler.filters = [console.Quiet(verbose=True)]
    assert emit(handler, "pytorch_lightning", logging.INFO) != ""


def test_an_interrupted_run_says_how_to_continue_it(tmp_path, monkeypatch):
    monkeypatch.setattr(interrupt, "received", 2)  # SIGINT
    run_dir = tmp_path / "run dir"
    run_dir.mkdir()
    assert interrupt.told(run_dir, "python train.py") == (
        "interrupted by SIGINT before the run started; nothing was recorded")
    (run_dir / "summary.json").write_text("{}")
    assert interrupt.told(run_dir, "python train.py").endswith(
        "no checkpoint yet, nothing to resume: run the command again")
    (run_dir / "checkpoints").mkdir()
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    assert interrupt.told(run_dir, "python train.py").splitlines() == [
        f"interrupted by SIGINT (recorded in its summary.json): {run_dir}",
        f"continue it with: python train.py 'resume={run_dir}'"]


def test_verbose_and_print_config_are_true_or_false():
    for key in ("verbose", "print_config"):
        cfg, _ = compose_config([f"{key}=3"])
        with pytest.raises(ConfigError, match=f"{key}=3 is not allowed; expected true or false"):
            validate(cfg)
