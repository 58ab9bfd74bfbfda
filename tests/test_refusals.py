"""Refusing changes nothing: each refused command prints one line, exits 2, and writes not one
byte, neither in the directory it names nor in the folder it runs from.

Each case runs the real command in a fresh working folder; most never import torch (~1-2 s).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from conftest import REPO, cli, snapshot


def interrupted(small_run: Path, dest: Path) -> Path:
    shutil.copytree(small_run, dest)
    summary = json.loads((dest / "summary.json").read_text())
    (dest / "summary.json").write_text(json.dumps(summary | {"status": "interrupted"}))
    return dest


def fake_sweep(root: Path, overrides: list[str]) -> Path:
    """A finished two-job sweep of ``seed=0,1 <overrides[1:]>``, as Hydra and gradprobe leave
    it (the records that matter here)."""
    sweep = root / "sweep"
    sweep.mkdir()
    (sweep / "multirun.yaml").write_text(yaml.safe_dump(
        {"hydra": {"overrides": {"task": overrides}}}))
    for job, seed in enumerate((0, 1)):
        (sweep / str(job)).mkdir()
        (sweep / str(job) / "summary.json").write_text(json.dumps(
            {"status": "completed", "overrides": [f"seed={seed}", *overrides[1:]]}))
    return sweep


def other_project(tmp: Path, run: Path) -> Path:
    (tmp / "proj").mkdir()
    (tmp / "proj" / "README").write_text("not a run\n")
    return tmp / "proj"


def damaged(name: str, text: str | None) -> Callable[[Path, Path], Path]:
    """An interrupted copy of the run whose file ``name`` is replaced by ``text`` (or gone)."""
    def make(tmp: Path, run: Path) -> Path:
        path = interrupted(run, tmp / "run") / name
        path.unlink()
        if text is not None:
            path.write_text(text)
        return path.parent
    return make


def finished(tmp: Path, run: Path) -> Path:
    return shutil.copytree(run, tmp / "run")


def nothing(name: str) -> Callable[[Path, Path], Path]:
    return lambda tmp, run: tmp / name


def a_sweep(tmp: Path, run: Path) -> Path:
    return fake_sweep(tmp, ["seed=0,1", "data=digits"])


# name -> (make the target under tmp from the shared small run, the command's arguments for
#          that target, what the one line must say)
CASES: dict[str, tuple[Callable[[Path, Path], Path], Callable[[Path], list[str]], str]] = {
    "resume a missing path": (
        nothing("no/such/run"), lambda p: [f"resume={p}"], "no such directory"),
    "resume another project's folder": (
        other_project, lambda p: [f"resume={p}"], "not a gradprobe run directory"),
    "resume a completed run": (
        finished, lambda p: [f"resume={p}"], "already ended with status completed"),
    "resume with a corrupt summary.json": (
        damaged("summary.json", '{"status": "runn'), lambda p: [f"resume={p}"],
        "summary.json is unreadable (JSONDecodeError"),
    "resume without config_resolved.yaml": (
        damaged("config_resolved.yaml", None), lambda p: [f"resume={p}"],
        "config_resolved.yaml is missing"),
    "resume with a corrupt config_resolved.yaml": (
        damaged("config_resolved.yaml", "model: [unclosed\n  x: {"), lambda p: [f"resume={p}"],
        "config_resolved.yaml is unreadable"),
    "resume with an override it may not change": (
        lambda tmp, run: interrupted(run, tmp / "run"),
        lambda p: [f"resume={p}", "optimizer.lr=0.5"], "would change the run being resumed"),
    "a new run into a finished run's dir": (
        finished, lambda p: [f"hydra.run.dir={p}", "data=digits"], "already holds a run"),
    "a bad config value": (
        nothing("never"), lambda p: ["model.depth=-1"], "model.depth=-1 is not allowed"),
    "sweep.resume of a mistyped path": (
        nothing("multirun/typo"), lambda p: ["-m", f"sweep.resume={p}", "seed=0,1"],
        "no such directory"),
    "sweep.resume of a folder that is no sweep": (
        finished, lambda p: ["-m", f"sweep.resume={p}", "seed=0,1"], "not a sweep directory"),
    "sweep.resume with other overrides": (
        a_sweep, lambda p: ["-m", f"sweep.resume={p}", "seed=0,1,2", "data=digits"],
        "resume a sweep with the command that started it"),
}


@pytest.mark.parametrize("case", CASES)
def test_refusal_is_one_line_exit_2_and_writes_nothing(small_run, tmp_path, case) -> None:
    make, args, says = CASES[case]
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    target = make(tmp_path, small_run)
    before = snapshot(tmp_path)
    out = cli(*args(target), cwd=workdir, timeout=120)
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and says in out.stderr, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert snapshot(tmp_path) == before  # not one byte: no outputs/, no .hydra, no train.log


def test_resume_of_a_run_with_no_intact_checkpoint_writes_nothing(small_run, tmp_path) -> None:
    run_dir = interrupted(small_run, tmp_path / "run")
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        ckpt.write_bytes(b"")
    before = snapshot(run_dir)
    out = cli(f"resume={run_dir}", timeout=300)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "no intact checkpoint" in out.stderr and snapshot(run_dir) == before


def test_resume_and_sweep_resume_of_a_live_run_write_nothing(small_run, tmp_path) -> None:
    run_dir = interrupted(small_run, tmp_path / "run")
    sweep = fake_sweep(tmp_path, ["seed=0,1", "data=digits"])
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from gradprobe.record import acquire_lock; "
         f"acquire_lock({str(run_dir)!r}); acquire_lock({str(sweep / '1')!r}); "
         "print('held', flush=True); time.sleep(120)"], cwd=REPO, stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = snapshot(tmp_path)
        out = cli(f"resume={run_dir}", cwd=tmp_path)
        assert out.returncode == 2 and f"still running (pid {holder.pid} on " in out.stderr
        out = cli("-m", f"sweep.resume={sweep}", "seed=0,1", "data=digits", cwd=tmp_path)
        assert out.returncode == 2 and "job 1 is still running" in out.stderr, out.stderr
        assert snapshot(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


def test_a_read_only_output_folder_is_one_line(tmpfs) -> None:
    read_only_folder = tmpfs("size=1m,ro")
    out = cli(f"hydra.run.dir={read_only_folder / 'run'}")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert f"{read_only_folder} is not a writable folder" in out.stderr
    out = cli("-m", f"hydra.sweep.dir={read_only_folder / 'sweep'}", "seed=0,1")
    assert out.returncode == 2 and "hydra.sweep.dir=" in out.stderr


def test_sweep_resume_leaves_finished_jobs_untouched(tmp_path) -> None:
    sweep = fake_sweep(tmp_path, ["seed=0,1", "data=digits", "logger=csv"])
    jobs = {job: snapshot(sweep / job) for job in ("0", "1")}
    out = cli("-m", f"sweep.resume={sweep}", "seed=0,1", "data=digits", "logger=csv",
              "sweep.report=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("already completed, skipped") == 2
    assert {job: snapshot(sweep / job) for job in ("0", "1")} == jobs
