"""The lean step: chunks of optimizer steps per Lightning call, and the CUDA-graph option, train
exactly as one Lightning step per optimizer step does."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from conftest import FAST, run_job
from gradprobe.engine import StepChunks

# 30 steps of 20-batch epochs: the second epoch is cut short (not validated, as Lightning does)
SHORT = [*FAST, "data=digits", "trainer.max_epochs=2", "trainer.max_steps=30",
         "gradflow.every_n_steps=3", "gradflow.histogram_every_n_steps=7"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict]:
    """One optimizer step per Lightning call; 8 per call (the default); 8 with compile=graph
    (on a machine without CUDA: the eager fallback, with its warning)."""
    base = tmp_path_factory.mktemp("engine")
    variants = {"one": ["engine.steps_per_call=1"], "chunked": [],
                "graph": ["engine.compile=graph"]}
    return {name: run_job(base / name, [*SHORT, *extra]) for name, extra in variants.items()}


def rows(path: Path) -> list[dict[str, str]]:
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("variant", ["chunked", "graph"])
def test_chunked_steps_train_exactly_as_one_step_per_call(runs, variant) -> None:
    one, other = runs["one"], runs[variant]
    assert other["status"] == one["status"] == "completed"
    assert other["steps"] == one["steps"] == 30 and other["epochs"] == one["epochs"]
    assert set(other["metrics"]) == set(one["metrics"])
    for key, value in one["metrics"].items():
        assert other["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    # every sampled row of every layer statistic, and the same sampled steps (incl. the last)
    a, b = (rows(Path(r["run_dir"]) / "gradflow" / "layers.csv") for r in (one, other))
    assert [r["step"] for r in a] == [r["step"] for r in b] and a[-1]["step"] == "29"
    for ra, rb in zip(a, b, strict=True):
        for key, value in ra.items():
            if key not in ("layer",) and value:
                assert float(rb[key]) == pytest.approx(float(value), rel=1e-5, abs=1e-12), key
    # the loggers' steps count optimizer steps in both
    def logged(run: dict) -> list[tuple[str, str]]:
        return [(r["step"], k) for r in rows(Path(run["run_dir"]) / "metrics.csv")
                for k in ("train/loss", "train/loss_step", "val/loss", "test/loss") if r.get(k)]
    assert logged(other) == logged(one)


def test_graph_falls_back_with_one_line_warning_off_cuda(tmp_path, caplog) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the graph is used, not the fallback")
    with caplog.at_level(logging.WARNING, logger="gradprobe"):
        run_job(tmp_path / "run", [*SHORT, "trainer.max_steps=2", "engine.compile=graph"])
    warnings = [r.getMessage() for r in caplog.records if "engine.compile=graph" in r.getMessage()]
    assert warnings == ["engine.compile=graph: CUDA graphs need a CUDA device, this run is on "
                        "cpu; training eagerly"]


def test_step_chunks_keep_the_sampler_order_limits_and_the_max_steps_cut() -> None:
    sampler = DistributedSampler(range(100), num_replicas=1, rank=0, shuffle=True, seed=3)
    order = torch.as_tensor(list(sampler))
    chunks = StepChunks(sampler, batch_size=8, steps=5)  # 12 full batches, 4 examples dropped
    assert len(chunks) == 3 and chunks.sizes(0) == [4, 4, 4]
    assert torch.equal(torch.cat(list(chunks)).flatten(), order[:96])
    # max_steps 19 cuts epoch 1 after 7 batches: a chunk boundary there, a chunk after it
    assert StepChunks(sampler, 8, 5, max_steps=19).sizes(1) == [4, 3, 5]
    # a chunk longer than the epoch still gives 2 chunks, so a cut never ends the last one
    assert StepChunks(sampler, 8, 32, max_steps=5).sizes(0) == [5, 7]
    assert StepChunks(sampler, 8, 32).sizes(0) == [6, 6]
    assert StepChunks(sampler, 8, 5, limit=3).batches == 3
    assert StepChunks(sampler, 8, 5, limit=0.5).batches == 6  # int(12 * 0.5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_step_equals_the_eager_step(tmp_path) -> None:
    """On a GPU: the replayed graph trains as the eager step does (float tolerance: kernels
    inside a graph are the same, but capturable Adam keeps its step count on the device)."""
    gpu = [*SHORT, "accelerator=gpu", "trainer.deterministic=false"]
    eager = run_job(tmp_path / "eager", gpu)
    graph = run_job(tmp_path / "graph", [*gpu, "engine.compile=graph"])
    assert graph["status"] == eager["status"] == "completed"
    assert graph["steps"] == eager["steps"]
    for key, value in eager["metrics"].items():
        assert graph["metrics"][key] == pytest.approx(value, rel=1e-3, abs=1e-5), key
