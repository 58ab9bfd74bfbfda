"""Bad values fail at once, in one line naming key, value and what is allowed (issue 10).

Static values: ``schema.validate`` on a composed config (no torch). Values that only the
loaded data can judge: ``data.check_splits``. Damaged dataset files: ``data.DataError`` (or
regenerated). Every precision either trains with finite statistics or is refused up front.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import cli, compose_config
from fabricate import vision_root
from gradprobe import data
from gradprobe.schema import PRECISIONS, ConfigError, validate

ONE_LINE_START = "config error: "

# (overrides, the key=value the message must show, what it must say is allowed)
BAD = [
    # non-finite numbers: by each key's own rule, or the generic rule for keys without one
    (["optimizer.lr=nan"], "optimizer.lr=nan", "a number > 0"),
    (["optimizer.lr=inf"], "optimizer.lr=inf", "a number > 0"),
    (["model.dropout=-inf"], "model.dropout=-inf", "a number in [0, 1)"),
    (["data=synthetic", "data.source.noise=nan"], "data.source.noise=nan", "a number >= 0"),
    (["gradflow.thresholds.exploding_ratio=inf"], "gradflow.thresholds.exploding_ratio=inf",
     "a number > 1"),
    (["init=normal", "init.weight.mean=nan"], "init.weight.mean=nan", "a number"),
    (["scheduler=step", "scheduler.gamma=inf"], "scheduler.gamma=inf", "a number > 0"),
    (["optimizer.betas=[0.9,nan]"], "optimizer.betas=[0.9, nan]", "two numbers in [0, 1)"),
    (["+model.extra=nan"], "model.extra=nan", "a finite number (no nan or inf)"),
    (["+data.source.extra=[1.0,-inf]"], "data.source.extra[1]=-inf", "a finite number"),
    # seeds: numpy's (and so seed_everything's) range
    (["seed=-1"], "seed=-1", "an integer >= 0 and <= 4294967295"),
    (["seed=4294967296"], "seed=4294967296", "an integer >= 0 and <= 4294967295"),
    (["seed=1.5"], "seed=1.5", "an integer >= 0"),
    (["data.source.seed=-1"], "data.source.seed=-1", "<= 4294967295"),
    (["data.source.split_seed=4294967296"], "data.source.split_seed=4294967296",
     "<= 4294967295"),
    # Lightning's limits and counts
    (["trainer.limit_train_batches=-1"], "trainer.limit_train_batches=-1",
     "a fraction in (0.0, 1.0] or a number of batches >= 1"),
    (["trainer.limit_train_batches=0"], "trainer.limit_train_batches=0", "batches >= 1"),
    (["trainer.limit_train_batches=5.0"], "trainer.limit_train_batches=5.0", "(an integer)"),
    (["trainer.limit_val_batches=-0.5"], "trainer.limit_val_batches=-0.5",
     "a fraction in [0.0, 1.0] or a number of batches >= 0"),
    (["trainer.limit_test_batches=1.5"], "trainer.limit_test_batches=1.5", "0: no test"),
    (["trainer.num_sanity_val_steps=-2"], "trainer.num_sanity_val_steps=-2",
     "an integer >= 0, or -1"),
    (["trainer.devices=0"], "trainer.devices=0", "an integer >= 1, -1 (all), 'auto'"),
    (["trainer.devices=[]"], "trainer.devices=[]", "a list of device indices"),
    (["trainer.devices=-1"], "trainer.devices=-1", "a number of processes >= 1"),  # on cpu
    (["+trainer.num_nodes=0"], "trainer.num_nodes=0", "an integer >= 1"),
    # other keys of conf/ that had no rule
    (["data=synthetic", "data.source.teacher_width=0"], "data.source.teacher_width=0",
     "an integer >= 1"),
    (["data.source.train_split=1.0"], "data.source.train_split=1.0", "a number in (0, 1)"),
    (["data=mnist", "data.source.download=maybe"], "data.source.download='maybe'",
     "true or false"),
    (["gradflow.enabled=maybe"], "gradflow.enabled='maybe'", "true or false"),
    (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0", "an integer >= 1"),
    (["scheduler=cosine", "scheduler.eta_min=-1"], "scheduler.eta_min=-1", "a number >= 0"),
    (["scheduler=cosine", "trainer.max_epochs=-1", "trainer.max_steps=50"],
     "scheduler.T_max=-1", "with max_epochs=-1 set scheduler.T_max"),
    (["init=kaiming_normal", "init.weight.nonlinearity=relux"],
     "init.weight.nonlinearity='relux'", "leaky_relu"),
    (["+optimizer.eps=-1"], "optimizer.eps=-1", "a number >= 0"),
    # values allowed alone but not together
    (["optimizer=sgd", "optimizer.nesterov=true"], "optimizer.nesterov=True",
     "a momentum > 0"),
    (["norm=batch", "data.batch_size=1"], "data.batch_size=1", "an integer >= 2"),
    (["trainer.precision=16-true"], "trainer.precision='16-true'",
     "+optimizer.eps=0.0001 (or larger), optimizer=sgd"),
    (["trainer.precision=64-true", "accelerator=mps"], "trainer.precision='64-true'",
     "32-true, 16-mixed or bf16-mixed"),
    # splits the config alone decides (data.split_off holds out at least one example)
    (["data=digits", "data.source.test_fraction=0.9999"],
     "data.source.test_fraction=0.9999, data.source.val_fraction=0.1 leave 0 training "
     "examples (train 0, val 0, test 1797)", "expected at least 1"),
    (["data=digits", "data.source.val_fraction=0.9999"],
     "data.source.val_fraction=0.9999 leave 0 training examples (train 0, val 1438",
     "expected at least 1"),
    (["data.source.train_split=0.0001"],
     "data.source.num_samples=5000, data.source.train_split=0.0001", "at least 1"),
    (["data.source.num_samples=10", "data.source.train_split=0.05"],
     "leave 0 training examples (train 0, val 0, test 10)", "at least 1"),
    (["data=synthetic", "data.source.n_val=1"],
     "data.source.n_val=1 leaves 1 validation example", "at least 2 (task=regression: R2"),
    (["data=synthetic", "data.source.n_test=1"],
     "data.source.n_test=1 leaves 1 test example", "at least 2 (task=regression: R2"),
    (["data=synthetic", "data.source.n_train=1", "norm=batch"],
     "data.source.n_train=1 leaves 1 training example", "at least 2 (norm=batch"),
    (["data=digits", "trainer.limit_train_batches=0.01"],  # int(20 batches * 0.01) = 0
     "trainer.limit_train_batches=0.01, data.batch_size=64 leave 0 training examples",
     "at least 1"),
    (["data=digits", "trainer.limit_val_batches=0.5"],  # int(1 batch * 0.5) = 0
     "trainer.limit_val_batches=0.5, data.eval_batch_size=1000 leave 0 validation",
     "at least 1"),
    (["data=synthetic", "trainer.limit_test_batches=1", "data.eval_batch_size=1"],
     "trainer.limit_test_batches=1, data.eval_batch_size=1 leave 1 test example",
     "at least 2 (task=regression: R2"),
]


@pytest.mark.parametrize(("overrides", "shown", "allowed"), BAD,
                         ids=[" ".join(o) for o, _, _ in BAD])
def test_bad_value_is_one_line_with_key_value_and_rule(overrides: list[str], shown: str,
                                                       allowed: str) -> None:
    cfg, _ = compose_config(overrides)
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    message = str(err.value)
    assert message.startswith(ONE_LINE_START) and "\n" not in message
    assert shown in message and allowed in message, message


GOOD = [  # the edges of the rules above, and what Lightning or the data really accept
    ["seed=0"], ["seed=4294967295"], ["data.source.seed=4294967295"],
    ["trainer.limit_train_batches=5"], ["trainer.limit_train_batches=1.0"],
    ["trainer.limit_val_batches=0"], ["trainer.limit_test_batches=0.0"],
    ["trainer.num_sanity_val_steps=-1"], ["trainer.devices=2"], ["trainer.devices=auto"],
    ["accelerator=gpu", "trainer.devices=-1"], ["accelerator=gpu", "trainer.devices=[0,1]"],
    ["norm=batch", "data.batch_size=2"], ["norm=batch", "model=cnn1d", "data.batch_size=1"],
    ["trainer.precision=16-true", "optimizer=sgd"],
    ["trainer.precision=16-true", "+optimizer.eps=1e-4"],
    ["optimizer=sgd", "optimizer.nesterov=true", "optimizer.momentum=0.9"],
    ["scheduler=cosine", "trainer.max_epochs=-1", "trainer.max_steps=50",
     "scheduler.T_max=10"],
    ["data=synthetic", "data.source.n_val=2", "data.source.n_test=2", "data.source.n_train=1",
     "data.batch_size=64"],  # the batch shrinks to the training set
    ["data=digits", "trainer.limit_train_batches=0.05"],  # int(20 * 0.05) = 1 batch
    ["data.source.num_samples=10"],  # 7 train, 1 val, 2 test
]


@pytest.mark.parametrize("overrides", GOOD, ids=[" ".join(o) for o in GOOD])
def test_edge_values_are_accepted(overrides: list[str]) -> None:
    validate(compose_config(overrides)[0])


def test_cli_bad_value_is_refused_fast_without_torch(tmp_path: Path, monkeypatch) -> None:
    """``python train.py trainer.limit_val_batches=-1``: exit 2, one stderr line naming the
    key, in well under 1.5 s of CPU time (about 0.6 s here). A ``torch`` that cannot be
    imported shadows the real one: had the CLI imported torch, it would have failed
    differently."""
    shadow = tmp_path / "shadow" / "torch"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('torch imported before validation')")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(shadow.parent), *filter(None, [os.environ.get("PYTHONPATH")])]))
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = cli("trainer.limit_val_batches=-1", f"hydra.run.dir={tmp_path / 'run'}", timeout=60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time, not wall time: the shared CI machine's other load stretches the wall clock
    seconds = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    print(f"refused in {seconds:.2f} s of CPU ({time.perf_counter() - start:.2f} s wall) "
          "with interpreter start")
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "config error: trainer.limit_val_batches=-1 is not allowed; expected null (all), a "
        "fraction in [0.0, 1.0] or a number of batches >= 0 (an integer; 0: no validation)"]
    assert seconds < 1.5
    # the control: with the same environment, importing torch does fail
    probe = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True,
                           text=True, timeout=60)
    assert probe.returncode == 1 and "torch imported before validation" in probe.stderr


# --------------------------------------------------------------------------- loaded data


def fake_splits(train: int, val: int, test: int, outputs: int = 10) -> data.Splits:
    def pair(n: int) -> data.Pair:
        return torch.zeros(n, 4), torch.zeros(n, dtype=torch.long)
    return data.Splits(pair(train), pair(val), pair(test), num_outputs=outputs)


LOADED = [  # (overrides, train, val, test, the message's key=value part, what it says)
    (["data=mnist"], 0, 0, 20, "data.source.name='MNIST', data.source.val_fraction=0.1 "
     "leave 0 training examples (train 0, val 0, test 20)", "at least 1"),
    (["data=mnist"], 50, 5, 0, "data.source.name='MNIST' leaves 0 test examples",
     "at least 1"),
    (["data=cifar10", "norm=batch"], 1, 1, 12, "leave 1 training example",
     "at least 2 (norm=batch"),
    (["data=fashion_mnist", "trainer.limit_val_batches=0.5"], 54, 6, 20,
     "trainer.limit_val_batches=0.5, data.eval_batch_size=2000 leave 0 validation examples",
     "at least 1"),
    (["data=mnist", "trainer.limit_train_batches=0.5"], 54, 6, 20,  # 54 // 128: 1 batch
     "trainer.limit_train_batches=0.5, data.batch_size=128 leave 0 training", "at least 1"),
    (["data=synthetic", "data.source.n_val=1"], 100, 1, 100,  # a regression source's val set
     "data.source.n_val=1 leaves 1 validation example", "at least 2 (task=regression: R2"),
]


@pytest.mark.parametrize(("overrides", "train", "val", "test", "shown", "allowed"), LOADED)
def test_check_splits_refuses_data_too_small(overrides: list[str], train: int, val: int,
                                             test: int, shown: str, allowed: str) -> None:
    cfg, _ = compose_config(overrides)
    with pytest.raises(ConfigError) as err:
        data.check_splits(fake_splits(train, val, test), cfg)
    message = str(err.value)
    assert message.startswith(ONE_LINE_START) and "\n" not in message
    assert shown in message and allowed in message, message


def test_check_splits_accepts_a_small_usable_set() -> None:
    cfg, _ = compose_config(["data=mnist", "norm=batch"])
    data.check_splits(fake_splits(2, 1, 1), cfg)  # one batch of 2; val and test of 1


def test_run_refuses_loaded_data_too_small_before_training(run, tmp_path: Path) -> None:
    """The wiring: a source whose sizes only the files tell (6 validation images)."""
    root = vision_root(tmp_path / "vision")
    with pytest.raises(ConfigError, match=r"trainer\.limit_val_batches=0\.5, "
                                          r"data\.eval_batch_size=2000 leave 0 validation"):
        run("data=mnist", f"data.source.root={root}", "trainer.limit_val_batches=0.5")
    assert not (tmp_path / "run" / "gradflow").exists()  # refused before training


# --------------------------------------------------------------------------- damaged files


def test_corrupt_mnist1d_cache_is_regenerated(tmp_path: Path, caplog) -> None:
    fresh = data.mnist1d(num_samples=100, root=str(tmp_path))
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    for damage in (cache.read_bytes()[:1000], b"garbage", b""):
        cache.write_bytes(damage)
        with caplog.at_level(logging.WARNING, logger="gradprobe"):
            again = data.mnist1d(num_samples=100, root=str(tmp_path))
        assert torch.equal(again.train[0], fresh.train[0])
        assert torch.equal(again.test[1], fresh.test[1])
        (record,) = [r for r in caplog.records if "regenerating" in r.getMessage()]
        assert str(cache) in record.getMessage() and "\n" not in record.getMessage()
        caplog.clear()
    with np.load(cache) as d:
        assert d["x"].shape == (80, 40)  # a whole file again


def test_unreadable_mnist1d_cache_names_the_file(tmp_path: Path, monkeypatch) -> None:
    def unreadable(cache: Path):
        raise OSError("disk says no")
    monkeypatch.setattr(data, "_read_mnist1d", unreadable)
    with pytest.raises(data.DataError) as err:
        data.mnist1d(num_samples=100, root=str(tmp_path))
    (cache,) = tmp_path.glob("mnist1d-*.npz")
    assert str(err.value) == (
        f"data error: MNIST-1D cache {cache} is unreadable even after regenerating it "
        "(OSError: disk says no); delete it to regenerate, and check the disk")


def test_torchvision_missing_or_corrupt_files_name_the_folder(tmp_path: Path) -> None:
    with pytest.raises(data.DataError) as err:
        data.torchvision_dataset("MNIST", root=str(tmp_path / "empty"), download=False)
    assert str(err.value).startswith(f"data error: torchvision MNIST could not be loaded from "
                                     f"{tmp_path / 'empty' / 'MNIST'} (RuntimeError: Dataset "
                                     "not found")
    assert str(err.value).endswith("; set data.source.download=true, or put the files there")
    root = vision_root(tmp_path / "vision")
    images = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:5000])
    with pytest.raises(data.DataError) as err:
        data.torchvision_dataset("MNIST", root=str(root), download=True)
    assert "\n" not in str(err.value)
    assert str(err.value).endswith(f"; delete {root / 'MNIST'} to download it again")


# --------------------------------------------------------------------------- precisions

# None: trains on this CPU; else the refusal's text. 16-true trains with SGD (Adam is refused,
# see BAD); 16-mixed on a CPU is Lightning's bf16-mixed.
PRECISION_OUTCOME = {
    "64-true": None, "64": None, "32-true": None, "32": None, "16-mixed": None,
    "bf16-mixed": None, "16-true": None, "bf16-true": None,
    "transformer-engine": "expected accelerator=gpu",
    "transformer-engine-float16": "expected accelerator=gpu",
}
ALWAYS_FINITE = ("grad_norm", "weight_norm", "grad_ratio", "grad_mean_abs", "backprop_norm",
                 "update_ratio", "pre_mean", "pre_std")
HIDDEN_FINITE = ("act_mean", "act_std", "act_zero_frac", "act_neg_frac", "act_dead_frac")


def test_precision_table_covers_every_precision() -> None:
    assert set(PRECISION_OUTCOME) == set(PRECISIONS)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_precision_trains_with_finite_statistics_or_is_refused(precision: str, run,
                                                               tmp_path: Path) -> None:
    overrides = ["data=digits", "model.depth=2", "model.width=16", "trainer.max_steps=2",
                 "gradflow.every_n_steps=1", f"trainer.precision={precision}"]
    overrides += ["optimizer=sgd"] if precision == "16-true" else []
    refusal = PRECISION_OUTCOME[precision]
    if refusal is not None:
        with pytest.raises(ConfigError) as err:
            validate(compose_config(overrides)[0])
        message = str(err.value)
        assert "\n" not in message and f"trainer.precision={precision!r}" in message
        assert refusal in message
        return
    summary = run(*overrides)
    assert summary["status"] == "completed" and summary["steps"] == 2
    with open(tmp_path / "run" / "gradflow" / "layers.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted({int(r["step"]) for r in rows}) == [0, 1]
    assert len(rows) == 2 * 3  # two hidden layers and the output, per step
    for r in rows:
        stats = ALWAYS_FINITE + (HIDDEN_FINITE if r["layer"] != "output" else ())
        values = {s: float(r[s]) if r[s] else math.nan for s in stats}
        assert all(math.isfinite(v) for v in values.values()), (r["step"], r["layer"], values)



def test_half_precision_norms_are_accumulated_in_float32() -> None:
    """Under 16-true a gradient's norm can pass float16's 65504: it must not become inf."""
    import torch

    from gradprobe.instruments.gradients import norms_of

    half = [torch.full((1000,), 5000.0, dtype=torch.float16), torch.ones(4, dtype=torch.float16)]
    assert torch._foreach_norm(half)[0].isinf()  # a float16 result overflows
    assert norms_of(half).tolist() == pytest.approx([5000.0 * 1000**0.5, 2.0])
    assert norms_of([torch.ones(4, dtype=torch.float64)]).dtype == torch.float64
