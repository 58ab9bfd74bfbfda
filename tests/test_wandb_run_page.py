"""The W&B run page: depth-profile charts and the layers table posted at the end of a run, and
the ``gradflow.wandb`` switches for what W&B receives. Real offline W&B runs, read back from
their files (``wandb leet inspect`` and the table JSON W&B writes under ``files/``)."""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from conftest import FAST, compose_config, run_job
from gradprobe import ensemble, wandb_charts
from gradprobe.errors import ConfigError
from gradprobe.instruments.recorder import LAYER_STATS, metric_key
from gradprobe.record import RunDirError
from gradprobe.resume import changeable
from gradprobe.schema import validate

# 4 layers (3 hidden + output), 20 optimizer steps: 11 samples (every 2nd step and the last)
TINY = [*FAST, "logger=[csv,wandb]", "data=digits", "model.depth=3",
        "gradflow.every_n_steps=2", "gradflow.histogram_every_n_steps=4"]
PER_LAYER = re.compile(r"(grad|weight|backprop|update|act)/\w+/(layer_\d+|output)")
HIST = re.compile(r"(grad|act)_hist/")


def offline_run(run_dir: Path) -> Path:
    found = sorted((run_dir / "wandb").glob("offline-run-*"))
    assert len(found) == 1, found
    return found[0]


def summary_of(run_dir: Path) -> dict[str, Any]:
    out = subprocess.run(["wandb", "leet", "inspect", "--summary", "--json",
                          str(offline_run(run_dir))], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)["summary"]


def charts_of(run_dir: Path) -> dict[str, dict[str, Any]]:
    """Each custom chart the run declared (W&B's ``_wandb.visualize.<key>`` config records)."""
    out = subprocess.run(["wandb", "leet", "inspect", "--json", str(offline_run(run_dir))],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    charts = {}
    for record in map(json.loads, out.stdout.splitlines()):
        for key, value in ((record.get("config") or {}).get("update") or {}).items():
            if key.startswith("_wandb.visualize."):
                charts[key.removeprefix("_wandb.visualize.")] = value["panel_config"]
    return charts


def table_of(run_dir: Path, summary: dict[str, Any], key: str) -> dict[str, Any]:
    """A logged table, as W&B wrote it into the run's files."""
    return json.loads((offline_run(run_dir) / "files" / summary[key]["path"]).read_text())


def csv_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def typed(row: dict[str, str], columns: list[str]) -> list[Any]:
    """A layers.csv row as the table holds it: ints, the layer's name, floats, None if empty."""
    return [int(row["step"]), row["layer"], int(row["depth"]),
            *(float(row[c]) if row[c] else None for c in columns[3:])]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """One monitored run with every W&B option at its default."""
    run_dir = tmp_path_factory.mktemp("page") / "run"
    run_job(run_dir, TINY)
    return run_dir


def test_every_statistic_with_values_gets_a_depth_profile_chart(page) -> None:
    summary, charts = summary_of(page), charts_of(page)
    _, rows = csv_rows(page / "gradflow" / "layers.csv")
    finite = {s for s in LAYER_STATS if any(r[s] and math.isfinite(float(r[s])) for r in rows)}
    assert "act_saturated_frac" not in finite  # relu: nothing saturates, nothing to chart
    charted = {k.removeprefix("profile/") for k in charts if k.startswith("profile/")}
    assert charted == finite
    for stat in finite:
        chart = charts[wandb_charts.profile_key(stat)]
        assert chart["panelDefId"] == "wandb/lineseries/v0"
        assert chart["stringSettings"]["xname"] == "depth" and stat in chart["stringSettings"][
            "title"]
        assert f"profile/{stat}_table" in summary

    steps = sorted({int(r["step"]) for r in rows})
    assert len(steps) >= 3
    table = table_of(page, summary, "profile/grad_norm_table")
    assert table["columns"] == ["step", "lineKey", "lineVal"]
    series: dict[str, list[tuple[int, float]]] = {}
    for depth, key, value in table["data"]:
        series.setdefault(key, []).append((depth, value))
    mid = min(steps, key=lambda s: abs(s - (steps[0] + steps[-1]) / 2))
    assert list(series) == [f"init (step {steps[0]})", f"mid (step {mid})",
                            f"end (step {steps[-1]})"]
    for key, step in ((f"init (step {steps[0]})", steps[0]), (f"end (step {steps[-1]})",
                                                                steps[-1])):
        expected = sorted((int(r["depth"]), float(r["grad_norm"])) for r in rows
                          if int(r["step"]) == step)
        assert series[key] == expected and len(expected) == 4


def test_the_layers_table_is_layers_csv(page) -> None:
    summary = summary_of(page)
    columns, rows = csv_rows(page / "gradflow" / "layers.csv")
    table = table_of(page, summary, wandb_charts.LAYERS_TABLE_KEY)
    assert table["columns"] == columns
    assert table["data"] == [typed(r, columns) for r in rows]
    assert summary[wandb_charts.LAYERS_TABLE_KEY]["nrows"] == len(rows) == 44


def test_by_default_w_and_b_gets_every_per_layer_key_and_histogram(page) -> None:
    keys = set(summary_of(page))
    assert "grad/norm/layer_01" in keys and "backprop/norm/output" in keys
    assert {"grad_hist/log10_abs/layer_01", "act_hist/value/layer_01"} <= keys


def test_without_per_layer_scalars_w_and_b_gets_step_keys_and_charts_only(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_job(run_dir, [*TINY, "gradflow.wandb.per_layer_scalars=false"])
    keys = set(summary_of(run_dir))
    assert not {k for k in keys if PER_LAYER.fullmatch(k)}
    assert {"grad/global_norm", "grad/first_last_ratio", "profile/grad_norm_table",
            wandb_charts.LAYERS_TABLE_KEY} <= keys
    assert "grad_hist/log10_abs/layer_01" in keys  # the other switch is still on
    header, _ = csv_rows(run_dir / "metrics.csv")  # the CSV logger keeps everything
    assert {f"{metric_key(s)}/layer_01" for s in ("grad_norm", "backprop_norm")} <= set(header)


def test_without_histograms_w_and_b_gets_none(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_job(run_dir, [*TINY, "gradflow.wandb.histograms=false",
                      "gradflow.wandb.profile_charts=false"])
    keys = set(summary_of(run_dir))
    assert not {k for k in keys if HIST.match(k)}
    assert "grad/norm/layer_01" in keys  # the other switch is still on
    assert not {k for k in keys if k.startswith(("profile/", "gradflow/"))}
    assert (run_dir / "gradflow" / "histograms.npz").is_file()  # the run's files keep them


def test_a_table_over_the_row_limit_keeps_whole_evenly_spaced_steps(page, tmp_path, monkeypatch,
                                                                     caplog) -> None:
    """Posted to a plain W&B run (the function also takes a Lightning WandbLogger)."""
    import wandb

    monkeypatch.setattr(wandb_charts, "ROW_LIMIT", 4 * 4 + 3)  # room for 4 steps of 4 layers
    columns, rows = csv_rows(page / "gradflow" / "layers.csv")
    steps = sorted({int(r["step"]) for r in rows})
    run = wandb.init(mode="offline", dir=str(tmp_path), project="gradprobe-test")
    caplog.set_level(logging.INFO, logger="gradprobe")
    try:
        logged = wandb_charts.log_run_page(run, page)
        summary = dict(run.summary)
    finally:
        run.finish()
    assert wandb_charts.LAYERS_TABLE_KEY in logged and "profile/grad_norm" in logged
    said = [r.getMessage() for r in caplog.records if wandb_charts.LAYERS_TABLE_KEY in
            r.getMessage()]
    assert len(said) == 1 and "11 sampled steps x 4 layers" in said[0] and "keeps 4" in said[0]
    path = summary[wandb_charts.LAYERS_TABLE_KEY]["path"]
    table = json.loads((next(tmp_path.glob("wandb/offline-run-*")) / "files" / path).read_text())
    kept = sorted({row[0] for row in table["data"]})
    assert len(kept) == 4 and kept[0] == steps[0] and kept[-1] == steps[-1]
    gaps = [steps.index(b) - steps.index(a) for a, b in zip(kept, kept[1:], strict=False)]
    assert max(gaps) - min(gaps) <= 1  # evenly spaced samples
    assert table["data"] == [typed(r, columns) for r in rows if int(r["step"]) in kept]


def test_charts_that_cannot_be_posted_do_not_fail_the_run(tmp_path, caplog) -> None:
    """A run directory without gradflow records: the error is logged, nothing raised."""
    import wandb

    from gradprobe.publish import post_charts

    run = wandb.init(mode="offline", dir=str(tmp_path), project="gradprobe-test")
    try:
        post_charts(run, tmp_path / "nothing")
    finally:
        run.finish()
    assert any("W&B profile charts could not be posted" in r.getMessage() and r.exc_info
               for r in caplog.records)


def test_ensemble_members_honour_the_switches(tmp_path) -> None:
    """Each member's own W&B run: no per-layer keys, the charts; its metrics.csv has them."""
    members = []
    for seed in (0, 1):
        cfg, choices = compose_config([*TINY, f"seed={seed}", "trainer.limit_train_batches=6",
                                       "gradflow.wandb.per_layer_scalars=false"])
        members.append(ensemble.Member(cfg, tmp_path / str(seed), choices, [f"seed={seed}"]))
    assert [s["status"] for s in ensemble.train(members)] == ["completed"] * 2
    for seed in (0, 1):
        keys = set(summary_of(tmp_path / str(seed)))
        assert not {k for k in keys if PER_LAYER.fullmatch(k)}
        assert {"grad/global_norm", "profile/grad_norm_table", "grad_hist/log10_abs/output",
                wandb_charts.LAYERS_TABLE_KEY} <= keys
        header, _ = csv_rows(tmp_path / str(seed) / "metrics.csv")
        assert "grad/norm/layer_01" in header


@pytest.mark.parametrize("name", ["per_layer_scalars", "histograms", "profile_charts"])
def test_a_bad_switch_is_refused_in_one_line(name) -> None:
    cfg, _ = compose_config([f"gradflow.wandb.{name}=maybe"])
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value) == (f"config error: gradflow.wandb.{name}='maybe' is not allowed; "
                              "expected true or false")


def test_gradflow_off_still_composes() -> None:
    cfg, _ = compose_config(["gradflow=off"])
    validate(cfg)
    assert "wandb" not in cfg.gradflow


def test_a_resume_may_change_what_w_and_b_receives() -> None:
    kept = ["gradflow.wandb.per_layer_scalars=false", "gradflow.wandb.histograms=false"]
    assert changeable(kept, "resume=x") == kept
    with pytest.raises(RunDirError, match="gradflow.every_n_steps=5 would change the run"):
        changeable(["gradflow.every_n_steps=5"], "resume=x")


def test_the_callback_refuses_an_unknown_w_and_b_switch() -> None:
    from gradprobe.instruments.gradient_flow import GradientFlow

    assert GradientFlow(wandb={"histograms": False}).wandb == {"per_layer_scalars": True,
                                                               "histograms": False}
    with pytest.raises(ValueError, match="histogram"):
        GradientFlow(wandb={"histogram": False})
