"""``eval.py`` / ``gradprobe-eval``: a saved run's checkpoint tested again, on its own test split
or other data of the same shape; the result in a new ``eval/<time>.json``; refusals write
nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA_DIR, REPO, snapshot
from gradprobe.evaluate import main


@pytest.fixture
def run_dir(small_run, tmp_path) -> Path:
    return Path(shutil.copytree(small_run, tmp_path / "run"))


def evaluate(capsys, *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exit:
        code = exit.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_best_and_last_give_the_runs_own_test_metrics(run_dir, capsys) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())["metrics"]
    before = snapshot(run_dir)
    for weights, prefix in (("best", "test/"), ("last", "test_last/")):
        code, out, err = evaluate(capsys, f"run={run_dir}", f"checkpoint={weights}")
        assert code == 0 and len(out.splitlines()) == 1, err
        written = Path(out.split(" -> ")[-1].strip())
        result = json.loads(written.read_text())
        assert written.parent == run_dir / "eval" and result["weights"] == weights
        for key in ("loss", "acc"):
            assert result["metrics"][f"test/{key}"] == pytest.approx(summary[prefix + key],
                                                                     rel=1e-5)
    after = snapshot(run_dir)
    assert len(list((run_dir / "eval").iterdir())) == 2  # a new file each time
    assert {k: v for k, v in after.items() if not k.startswith("eval")} == before


def test_other_data_of_the_same_shape(run_dir, capsys) -> None:
    code, out, err = evaluate(capsys, f"run={run_dir}", "data=digits",
                              "data.source.split_seed=1")
    assert code == 0, err
    result = json.loads(Path(out.split(" -> ")[-1].strip()).read_text())
    assert result["overrides"] == ["data=digits", "data.source.split_seed=1"]
    own = json.loads((run_dir / "summary.json").read_text())["metrics"]["test/loss"]
    assert result["metrics"]["test/loss"] != pytest.approx(own)  # another test split
    code, out, err = evaluate(capsys, f"run={run_dir}", "data.source.split_seed=1")
    assert code == 0, err  # the same, on the run's own data config
    alone = json.loads(Path(out.split(" -> ")[-1].strip()).read_text())
    assert alone["metrics"] == pytest.approx(result["metrics"])


@pytest.mark.parametrize(("damage", "args", "says"), [
    ("none", ["run={run}/nope"], "not a gradprobe run directory"),
    ("none", ["checkpoint=best"], "run= is missing"),
    ("none", ["run={run}", "checkpoint=first"], "checkpoint='first' is not allowed"),
    ("none", ["run={run}", "trainer.max_epochs=3"], "is not an eval argument"),
    ("none", ["run={run}", "data=mnist1d"], "does not fit the network"),
    ("none", ["run={run}", "data.batch_size=0"], "data.batch_size=0 is not allowed"),
    ("none", ["run={run}", "data.source.nokey=1"], "data.source.nokey is not a key"),
    ("no checkpoints", ["run={run}"], "no best-epoch*.ckpt"),
    ("no checkpoints", ["run={run}", "checkpoint=last"], "no last.ckpt"),
    ("torn", ["run={run}", "checkpoint=last"], "is unreadable or not a gradprobe checkpoint"),
])
def test_refusals_are_one_line_and_write_nothing(run_dir, capsys, damage, args, says) -> None:
    if damage == "no checkpoints":
        shutil.rmtree(run_dir / "checkpoints")
    if damage == "torn":
        last = run_dir / "checkpoints" / "last.ckpt"
        last.write_bytes(last.read_bytes()[:1000])
    before = snapshot(run_dir.parent)
    code, out, err = evaluate(capsys, *(a.format(run=run_dir) for a in args))
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert says in err
    assert snapshot(run_dir.parent) == before


def test_the_command(run_dir) -> None:
    out = subprocess.run([sys.executable, str(REPO / "eval.py"), str(run_dir),
                          "checkpoint=last"], capture_output=True, text=True, timeout=300,
                         env=os.environ | {"GRADPROBE_DATA_DIR": DATA_DIR})
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1 and "test/acc=" in out.stdout
    assert "last.ckpt" in out.stdout
