"""Multiruns: failures are recorded, the sweep goes on, and it ends with one line and exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import DATA_DIR, REPO


def sweep(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "train.py", "-m", f"hydra.sweep.dir={tmp_path}", "data=digits",
         "trainer.max_epochs=1", "logger=csv", "monitor.figures=false", *args],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})


def test_diverging_and_crashing_jobs_do_not_stop_the_sweep(tmp_path) -> None:
    """Job 1 and 3 crash (a bad nonlinearity name), job 2 diverges (lr 1e6), job 0 trains; in
    parallel processes (joblib)."""
    out = sweep(tmp_path, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optimizer=sgd",
                "optimizer.lr=0.01,1e6", "init=kaiming_normal",
                "init.weight.nonlinearity=relu,badname")
    statuses = [json.loads((tmp_path / str(i) / "summary.json").read_text())["status"]
                for i in range(4)]
    assert statuses == ["completed", "failed", "diverged", "failed"]
    failed = json.loads((tmp_path / "1" / "summary.json").read_text())
    assert "Unsupported nonlinearity badname" in failed["error"]
    assert "Traceback" in (tmp_path / "1" / "train.log").read_text()
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
