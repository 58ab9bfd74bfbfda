"""A run's status and its diagnosis agree, by one definition of divergence
(:mod:`gradprobe.instruments.guard`): a NaN/inf training loss, or a finite one above
``divergence.loss_factor`` x the loss of step 0. The same rule, and the same first diverged step,
for chunked and one-step-per-call engines, with and without monitoring, and for an ensemble
member. Zero gradients (an all-dead net) are not divergence."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch
from torch import nn

import gradprobe.build
from conftest import FAST, compose_config
from gradprobe import ensemble
from gradprobe.instruments.guard import NO_STEP, Divergence

# digits at batch 16: 78 batches an epoch; 64 steps are two chunks of exactly 32 (0-31, 32-63)
CHUNKED = ["data=digits", "data.batch_size=16", "trainer.max_steps=64"]
NAN_STEP = 45  # inside the second chunk, not its first step (32)


class NanFrom(nn.Module):
    """The task's loss, made NaN at training step ``step`` (its backward then makes the weights
    and every later loss NaN too). Counts training-mode calls: one per optimizer step."""

    def __init__(self, loss: nn.Module, step: int) -> None:
        super().__init__()
        self.loss, self.step, self.calls = loss, step, 0

    def forward(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = self.loss(out, y)
        if self.training:
            self.calls += 1
            if self.calls - 1 == self.step:
                value = value * math.nan
        return value


def assert_agree(summary: dict, step: int | None) -> None:
    """Status, the divergence record and (when monitored) the final verdict say the same."""
    assert summary["status"] == ("completed" if step is None else "diverged")
    assert (summary["diverged"] or {}).get("step") == step
    if "diagnosis" in summary:
        final = summary["diagnosis"]["final"]
        assert ("diverged" in final["verdicts"]) == (step is not None), final["text"]
        if step is not None:
            assert final["details"]["diverged"]["step"] == step
            assert f"diverged at step {step}" in final["text"]


def logged_losses(summary: dict) -> list[float]:
    with open(Path(summary["run_dir"]) / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/loss_step")]
    return [float(r["train/loss_step"]) for r in sorted(rows, key=lambda r: int(r["step"]))]


@pytest.mark.parametrize("monitor", ["true", "false"])
@pytest.mark.parametrize("steps_per_call", [32, 1])
def test_nan_loss_diverges_at_its_first_step(run, monkeypatch, monitor, steps_per_call) -> None:
    def with_nan(task, num_outputs):
        loss, metrics = loss_and_metrics(task, num_outputs)
        return NanFrom(loss, NAN_STEP), metrics
    loss_and_metrics = gradprobe.build.loss_and_metrics
    monkeypatch.setattr(gradprobe.build, "loss_and_metrics", with_nan)
    summary = run(*CHUNKED, f"engine.steps_per_call={steps_per_call}",
                  f"gradflow.enabled={monitor}")
    assert_agree(summary, NAN_STEP)
    assert ("diagnosis" in summary) == (monitor == "true")
    assert "test/acc" not in summary["metrics"]  # a diverged run is not tested


def test_a_finite_blow_up_diverges_in_status_and_verdict(run) -> None:
    """SGD at lr 1000 on a tanh net: the loss goes from 2.3 to ~1e5 and stays there, finite."""
    summary = run("data=digits", "trainer.max_epochs=2", "activation=tanh", "optimizer=sgd",
                  "optimizer.lr=1000", "trainer.log_every_n_steps=1")
    losses = logged_losses(summary)
    assert all(math.isfinite(v) for v in losses)
    first = next(i for i, v in enumerate(losses) if v > 1e4 * losses[0])
    assert 0 < first < len(losses) - 1
    assert_agree(summary, first)


def test_an_all_dead_net_is_not_diverged(run) -> None:
    """Biases of -10 kill every ReLU: no gradient passes them, so dL/dh below the last hidden
    layer is exactly 0 (the ratio 0: vanishing), and the dead units say why."""
    summary = run("data=digits", "init.bias=-10", "trainer.max_steps=20")
    assert_agree(summary, None)
    final = summary["diagnosis"]["final"]
    assert final["first_last_ratio"] == 0 and "dead units" in final["verdicts"]
    assert math.isnan(final["weight_first_last_ratio"])  # dL/dW: 0/0


def test_a_healthy_run_completes(run) -> None:
    summary = run("data=digits", "trainer.max_steps=20")
    assert_agree(summary, None)
    assert "test/acc" in summary["metrics"]


ENSEMBLE = ["data=digits", "trainer.max_epochs=2", "optimizer=sgd"]


@pytest.mark.parametrize("monitor", ["true", "false"])
def test_an_ensemble_member_diverges_as_the_job_alone(run, tmp_path, monitor) -> None:
    """lr 50: the loss reaches ~1e17 at step 3 (finite; the factor rule), NaN after."""
    members = []
    for i, lr in enumerate([0.01, 50]):
        overrides = [*ENSEMBLE, f"optimizer.lr={lr}", f"gradflow.enabled={monitor}"]
        cfg, choices = compose_config([*FAST, *overrides])
        members.append(ensemble.Member(cfg, tmp_path / str(i), choices, overrides))
    fine, member = ensemble.train(members)
    alone = run(*ENSEMBLE, "optimizer.lr=50", f"gradflow.enabled={monitor}")
    assert_agree(fine, None)
    assert_agree(alone, 3)
    assert_agree(member, 3)


def test_the_rule_on_the_device() -> None:
    """NaN, inf, the factor (relative to step 0, per member) and a loss at step 0 that is 0."""
    rule = Divergence(loss_factor=10.0)
    rule.add(0, torch.tensor([[2.0, 1.0, 0.0, 1.0], [3.0, 1.0, 5.0, 1.0]]))
    rule.add(2, torch.tensor([[19.0, math.nan, 1e30, math.inf], [21.0, 1.0, 1.0, 1.0]]))
    assert rule.first_steps() == [3, 2, None, 2]
    rule.add_weights(7, torch.tensor([True, True, False, True]))
    assert rule.first_steps() == [3, 2, 7, 2]
    assert Divergence().first_steps() == [] and NO_STEP > 10**18
    resumed = Divergence(loss_factor=10.0)  # a checkpoint keeps step 0's loss as the reference
    resumed.load_state_dict(Divergence(loss_factor=10.0).state_dict() | {"reference": 2.0})
    resumed.add(50, torch.tensor([19.0, 21.0]))
    assert resumed.first_steps() == [51]
