"""The instruments on the physics they exist for: vanishing, healthy and diverging networks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import DATA_DIR, REPO

AT_INIT = ["model.depth=10", "model.width=128", "trainer.max_steps=1",
           "trainer.limit_val_batches=1", "trainer.limit_test_batches=1", "gradflow.figures=false"]


def test_sigmoid_with_pytorch_default_init_vanishes(run) -> None:
    summary = run("activation=sigmoid", "init=default", *AT_INIT)
    init = summary["diagnosis"]["init"]
    assert init["step"] == 0 and "vanishing" in init["verdicts"]
    assert init["first_last_ratio"] < 1e-3
    offered = {r["overrides"]: r for r in init["remedies"]}
    assert offered["activation=relu init=kaiming_normal"]["basis"] == "theory"
    assert offered["model=resmlp"]["basis"] == "rule of thumb"
    assert "init=xavier_normal" not in offered  # theory: a sigmoid net vanishes with it too


def test_sigmoid_with_unit_normal_init_saturates_rather_than_vanishes(run) -> None:
    """N(0, 1) weights at width 128 are large (sigma_w^2 = 128): pre-activations have a std of
    about 7, a fifth of the units pin to 0 or 1, yet the gradient norm per layer is kept
    (mean-field chi_1 ~ 1.06), so the first/last ratio stays of order one. The tool must say
    'saturated', not 'vanishing' (see the README's Diagnosis section)."""
    summary = run("activation=sigmoid", "init=normal", "init.weight.std=1.0", *AT_INIT)
    init = summary["diagnosis"]["init"]
    assert "saturated" in init["verdicts"] and "vanishing" not in init["verdicts"]
    assert 0.1 < init["first_last_ratio"] < 10
    assert init["saturated_share"] > 0.1


def test_relu_with_kaiming_init_is_healthy(run) -> None:
    summary = run("activation=relu", "init=kaiming_normal", *AT_INIT)
    init = summary["diagnosis"]["init"]
    assert init["verdicts"] == ["healthy"]
    assert 0.1 <= init["first_last_ratio"] <= 10


def test_absurd_learning_rate_diverges_cleanly(tmp_path) -> None:
    run_dir = tmp_path / "diverging"
    out = subprocess.run(
        [sys.executable, "train.py", "optimizer=sgd", "optimizer.lr=1e6", "data=digits",
         "logger=csv", "trainer.max_epochs=3", f"hydra.run.dir={run_dir}"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
        env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert summary["diverged"]["step"] >= 0
    assert summary["diverged"]["layer"].startswith(("layer_", "output"))
    assert summary["steps"] < 3 * 20  # stopped early, not after every epoch
    assert "diverged" in summary["diagnosis"]["final"]["verdicts"]


@pytest.mark.parametrize("accumulate", [1, 2])
def test_sampling_counts_optimizer_steps(run, accumulate: int) -> None:
    summary = run("data=digits", f"trainer.accumulate_grad_batches={accumulate}",
                  "trainer.max_epochs=5", "trainer.max_steps=21", "gradflow.every_n_steps=5",
                  "gradflow.figures=false")
    with open(f"{summary['run_dir']}/gradflow/steps.csv") as f:
        steps = [int(line.split(",")[0]) for line in f.readlines()[1:]]
    assert steps == [0, 5, 10, 15, 20]
