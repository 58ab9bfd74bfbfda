"""Under DDP (2 CPU processes, gloo) the instruments see the all-reduced gradients: the same
per-layer norms as one process training on the same global batch."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest

from conftest import DATA_DIR, REPO

# Full-batch training on 256 points: one process takes all 256, or two take 128 each; the
# averaged gradient is the same, so the weights stay the same step after step.
COMMON = ["data=synthetic", "data.source.n_train=256", "trainer.max_steps=12",
          "trainer.max_epochs=-1", "gradflow.every_n_steps=4", "gradflow.figures=false",
          "logger=csv", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1",
          "optimizer=sgd", "optimizer.lr=0.1"]


def grad_norms(run_dir) -> dict[tuple[str, str], float]:
    with open(run_dir / "gradflow" / "layers.csv") as f:
        return {(r["step"], r["layer"]): float(r["grad_norm"]) for r in csv.DictReader(f)}


def run(run_dir, *args: str) -> None:
    out = subprocess.run([sys.executable, "train.py", *COMMON, *args,
                          f"hydra.run.dir={run_dir}"], cwd=REPO, capture_output=True,
                         text=True, timeout=600,
                         env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    assert out.returncode == 0, out.stderr[-3000:]


def test_ddp_gradient_norms_equal_single_process(tmp_path) -> None:
    run(tmp_path / "single", "data.batch_size=256")
    run(tmp_path / "ddp", "data.batch_size=128", "trainer.devices=2", "trainer.strategy=ddp")
    single, ddp = grad_norms(tmp_path / "single"), grad_norms(tmp_path / "ddp")
    assert set(single) == set(ddp) and {s for s, _ in single} == {"0", "4", "8", "11"}
    for key, value in single.items():
        assert ddp[key] == pytest.approx(value, rel=1e-4), key
    assert not (tmp_path / "ddp" / "gradflow" / "layers.csv.1").exists()
    with open(tmp_path / "ddp" / "gradflow" / "steps.csv") as f:
        assert len(f.readlines()) == 1 + 4  # rank 0 alone wrote the rows
