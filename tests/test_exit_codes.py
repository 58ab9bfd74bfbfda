"""Exit codes and statuses tell the truth: a signal ends a run (or a sweep) as ``interrupted``
with exit 128 + N after its record and summary line; a sweep's workers end with it; a broken
job record fails the sweep summary by name, not by crashing."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from conftest import DATA_DIR, FAST, REPO, run_job
from gradprobe import interrupt
from gradprobe.record import lock_holder
from gradprobe.sweep.callback import SweepSummary

LONG = ["data=digits", "logger=csv", "model.depth=3", "gradflow.figures=false",
        "trainer.max_epochs=500"]


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})


def wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie has ended; only its parent's bookkeeping is left


def training(run_dir: Path) -> bool:
    return (run_dir / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_a_signal_ends_a_run_as_interrupted_with_128_plus_n(tmp_path, sig) -> None:
    run_dir = tmp_path / "run"
    proc = start(*LONG, f"hydra.run.dir={run_dir}")
    wait_for(lambda: training(run_dir))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["error"] == f"interrupted by {sig.name}"
    assert err.strip().splitlines()[-2:] == [
        f"interrupted by {sig.name} (recorded in its summary.json): {run_dir}",
        f"continue it with: python train.py resume={run_dir}"]
    assert lock_holder(run_dir) is None  # the run is no longer live: it can be resumed


@pytest.mark.parametrize("launcher", ["basic", "joblib"])
def test_sigterm_stops_a_sweep_with_its_summary_and_128_plus_n(tmp_path, launcher) -> None:
    """Basic launcher: the job in the sweep's own process records it and no further job starts.
    joblib: the signal is passed on to the workers, which record it before joblib kills them."""
    parallel = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"] if launcher == "joblib" \
        else []
    proc = start("-m", f"hydra.sweep.dir={tmp_path}", *LONG, "seed=0,1,2", *parallel)
    running = [tmp_path / "0", tmp_path / "1"] if parallel else [tmp_path / "0"]
    wait_for(lambda: all(training(job) for job in running))
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    for job in running:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["error"] == \
            "interrupted by SIGTERM"
    assert not (tmp_path / "2").exists()  # the sweep stopped: no further job started
    n = len(running)
    assert f"sweep {tmp_path}: {n} jobs: {n} interrupted" in out + err
    assert err.strip().splitlines()[-1].startswith(f"sweep: {n} of {n} jobs failed; logs: ")


@pytest.mark.parametrize("launcher", [["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local"]],
                         ids=["joblib", "submitit_local"])
def test_workers_end_with_a_killed_sweep_process(tmp_path, launcher) -> None:
    """``kill -9`` of a parallel sweep's main process: its jobs in other processes record
    ``interrupted`` and exit, instead of training on and then hanging."""
    proc = start("-m", f"hydra.sweep.dir={tmp_path}", *LONG, "seed=0,1", *launcher)
    jobs = [tmp_path / "0", tmp_path / "1"]
    wait_for(lambda: all(training(job) and lock_holder(job) for job in jobs))
    workers = [int(lock_holder(job).split()[1]) for job in jobs]  # "pid N on host, since .."
    assert proc.pid not in workers
    proc.kill()
    proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in workers), timeout=120)
    for job in jobs:
        summary = json.loads((job / "summary.json").read_text())
        assert summary["status"] == "interrupted" and summary["error"] == \
            "interrupted by SIGTERM"
        assert lock_holder(job) is None


def test_a_corrupt_job_record_fails_the_sweep_summary_by_name(tmp_path, capsys,
                                                              caplog) -> None:
    caplog.set_level(logging.INFO, logger="gradprobe")
    for job, text in (("0", json.dumps({"status": "completed"})), ("1", '{"status": "comp')):
        (tmp_path / job).mkdir()
        (tmp_path / job / "summary.json").write_text(text)
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}},
                               "sweep": {"report": False}})
    with pytest.raises(SystemExit) as ended:
        SweepSummary().on_multirun_end(config)
    assert ended.value.code == 1
    assert f"{tmp_path / '1' / 'summary.json'} is unreadable" in caplog.text
    assert "1 completed, 1 unreadable record" in caplog.text
    assert "sweep: 1 of 2 jobs failed" in capsys.readouterr().err


def test_a_signal_that_breaks_off_a_checkpoint_save_still_ends_interrupted(tmp_path,
                                                                           monkeypatch) -> None:
    """Seen under load: SIGTERM inside ``torch.save`` surfaced as the zip writer's RuntimeError.
    The run is still ``interrupted``, and the atomic save left no torn file."""
    def save_broken_off(obj, f, *args, **kwargs) -> None:
        f.write(b"part of a checkpoint")
        monkeypatch.setattr(interrupt, "received", signal.SIGTERM)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos")

    monkeypatch.setattr(torch, "save", save_broken_off)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        run_job(tmp_path / "run", [*FAST, "data=digits", "model.depth=2"])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["error"] == "interrupted by SIGTERM"
    assert list((tmp_path / "run" / "checkpoints").iterdir()) == []
