"""The W&B workspace as code (gradprobe.dashboard), built from a real offline depth-30 run read
back through ``wandb leet inspect``: its sections, every logged per-layer statistic in exactly
one multi-series panel, a panel count that does not grow with depth, grouping by Hydra choices,
and one-line refusals. Saving it needs a W&B server: ``test_saved_on_a_wandb_server`` runs when
WANDB_API_KEY and GRADPROBE_WANDB_TEST_PROJECT are set (README, "Dashboards")."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import FAST, run_job
from gradprobe.dashboard import cli, logged, workspace
from gradprobe.dashboard.keys import PER_LAYER

DEPTH = 30
SECTIONS = ["Diagnosis", "Gradient flow", "Activations", "Training", "Sweeps and figures"]
MAX_PANELS = 45


@pytest.fixture(scope="module")
def deep_run(tmp_path_factory) -> Path:
    """A finished depth-30 run logged to W&B offline (narrow and short: keys, not accuracy)."""
    run_dir = tmp_path_factory.mktemp("dashboard") / "run"
    run_job(run_dir, [*FAST, "logger=wandb", f"model.depth={DEPTH}", "model.width=16",
                      "gradflow.every_n_steps=4", "trainer.limit_train_batches=9"])
    return run_dir


@pytest.fixture(scope="module")
def runs(deep_run) -> list[logged.LoggedRun]:
    return logged.read_paths([deep_run])


def spec_of(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "spec.json"
    assert cli.main(["me/gradprobe", *args, "--spec", str(out)]) == 0
    return json.loads(out.read_text())


def sections_of(spec: dict) -> list[dict]:
    return spec["spec"]["section"]["panelBankConfig"]["sections"]


def panels_of(spec: dict) -> list[dict]:
    return [p for s in sections_of(spec) for p in s["panels"]]


def test_workspace_from_a_real_deep_run(deep_run, runs, tmp_path, capsys):
    spec = spec_of(tmp_path, "--runs", str(deep_run))
    assert "5 sections" in capsys.readouterr().out
    assert [s["name"] for s in sections_of(spec)] == SECTIONS
    panels = panels_of(spec)
    assert len(panels) <= MAX_PANELS
    per_layer = {k for k in logged.scalar_keys(runs) if PER_LAYER.match(k)}
    assert len(per_layer) > 10 * DEPTH  # what the automatic workspace makes a panel of, each
    plotted = [m for p in panels for m in p["config"].get("metrics", [])]
    assert per_layer <= set(plotted)
    for key in per_layer:  # in exactly one panel, and that panel holds the statistic's layers
        holding = [p for p in panels if key in p["config"].get("metrics", [])]
        assert len(holding) == 1, key
        stat = PER_LAYER.match(key)["stat"]
        assert {PER_LAYER.match(m)["stat"] for m in holding[0]["config"]["metrics"]} == {stat}
        assert len(holding[0]["config"]["metrics"]) >= DEPTH
    assert set(plotted) <= logged.scalar_keys(runs)  # nothing plotted that no run logged
    activations = sections_of(spec)[2]["panels"]  # what the diagnosis reads comes first
    assert activations[0]["config"]["chartTitle"].startswith("act/dead_frac")
    assert activations[1]["config"]["chartTitle"].startswith("act/pre_cosine")  # ReLU: no
    lines = [p for p in panels if p["viewType"] == "Run History Line Plot"]  # saturation
    assert {p["config"]["xAxis"] for p in lines} == {"trainer/global_step"}


def test_preview_draws_the_layout(deep_run, tmp_path, capsys):
    picture = tmp_path / "layout.png"
    spec_of(tmp_path, "--runs", str(deep_run), "--preview", str(picture))
    assert f"wrote {picture}" in capsys.readouterr().out
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_runs_table_and_native_profile_charts(deep_run, runs, tmp_path):
    spec = spec_of(tmp_path, "--runs", str(deep_run))
    columns = spec["spec"]["section"]["runSets"][0]["runFeed"]["columnOrder"]
    for key in ("diagnosis/init", "diagnosis/final", "backprop/first_last_ratio_init",
                "backprop/first_last_ratio_final", "test/acc"):
        assert f"summary:{key}" in columns
    tables = logged.media_keys(runs, "table")
    profiles = [k for k in tables if k.startswith("profile/")]
    assert profiles, tables  # the run logged its depth profiles (gradprobe.wandb_charts)
    charts = {q["args"][0]["value"]: p["config"]["panelDefId"]
              for p in panels_of(spec) if p["viewType"] == "Vega2"
              for q in p["config"]["userQuery"]["queryFields"][0]["fields"]
              if q["name"] == "summaryTable"}
    assert charts == dict.fromkeys(profiles, "wandb/lineseries/v0")
    assert "gradflow/layers" in json.dumps(sections_of(spec)[0])  # the layers table, diagnosed


def deeper(run: logged.LoggedRun, depth: int) -> logged.LoggedRun:
    """The run as if it had ``depth`` hidden layers: the same statistics, more layer keys."""
    summary = {}
    for key, value in run.summary.items():
        match = PER_LAYER.match(key)
        if match and match["layer"] != "output":
            summary |= {f"{match['stat']}/layer_{i:03d}": value for i in range(1, depth + 1)}
        else:
            summary[key] = value
    return logged.LoggedRun(run.name, summary, run.config, run.tags)


def test_panel_count_does_not_grow_with_depth(runs):
    shallow = workspace.build("me", "p", runs, [])
    deep = workspace.build("me", "p", [deeper(runs[0], 300)], [])

    def count(view):
        return [len(s.panels) for s in view.sections]

    assert count(deep) == count(shallow)
    grad_norm = next(p for s in deep.sections for p in s.panels
                     if getattr(p, "title", "") and p.title.startswith("grad/norm"))
    assert len(grad_norm.y) == 301 and grad_norm.y[-1] == "grad/norm/output"
    assert grad_norm.y[:3] == ["grad/norm/layer_001", "grad/norm/layer_002", "grad/norm/layer_003"]


def varied_runs(runs: list[logged.LoggedRun]) -> list[logged.LoggedRun]:
    """Four runs of a sweep over activation x optimizer (with optimizer.* following it)."""
    out = []
    for activation in ("relu", "tanh"):
        for optimizer, momentum in (("adam", None), ("sgd", 0.9)):
            run = copy.deepcopy(runs[0])
            run.config |= {"activation": activation, "optimizer": optimizer,
                           "optimizer.momentum": momentum, "logger.wandb.group": activation}
            run.tags = [t for t in run.tags if not t.startswith(("activation:", "optimizer:"))]
            run.tags += [f"activation:{activation}", f"optimizer:{optimizer}"]
            out.append(run)
    return out


def test_grouped_by_the_choices_a_sweep_varied(runs):
    sweep = varied_runs(runs)
    assert workspace.default_group_by(sweep) == ["activation", "optimizer"]
    assert workspace.default_group_by(runs) == []
    # not optimizer.momentum (it follows optimizer), nor the W&B group (bookkeeping)
    assert workspace.swept(sweep) == ["activation", "optimizer"]
    spec = workspace.build("me", "p", sweep, ["activation"])._spec
    runset = spec["spec"]["section"]["runSets"][0]
    assert [g["name"] for g in runset["grouping"]] == ["activation.value"]
    assert runset["runFeed"]["columnOrder"][:2] == ["run:displayName", "config:activation.value"]
    coords = next(p for p in panels_of(spec) if p["viewType"] == "Parallel Coordinates Plot")
    accessors = [c["accessor"] for c in coords["config"]["columns"]]
    assert accessors[:2] == ["config:activation.value", "config:optimizer.value"]
    assert "summary:val/acc" in accessors


def test_group_by_a_dotted_key(deep_run, tmp_path):
    spec = spec_of(tmp_path, "--runs", str(deep_run), "--group-by", "model.depth")
    grouping = spec["spec"]["section"]["runSets"][0]["grouping"]
    assert [g["name"] for g in grouping] == ["model.depth.value"]  # W&B's path to a flat key
    coords = next(p for p in panels_of(spec) if p["viewType"] == "Parallel Coordinates Plot")
    assert "config:model.depth.value" in [c["accessor"] for c in coords["config"]["columns"]]


@pytest.mark.parametrize(("args", "says"), [
    (["me", "--runs", "{run}"], "'me' is not ENTITY/PROJECT"),
    (["me/p", "--runs", "{tmp}/none"], "dashboard: --runs {tmp}/none does not exist"),
    (["me/p", "--runs", "{tmp}"], "dashboard: no offline W&B run"),
    (["me/p", "--runs", "{run}", "--group-by", "depth"], "--group-by depth is not a config key"),
])
def test_refusals_are_one_line_and_write_nothing(deep_run, tmp_path, capsys, args, says):
    empty = tmp_path / "empty"
    empty.mkdir()
    fill = {"{run}": str(deep_run), "{tmp}": str(empty)}
    args = [re.sub("|".join(map(re.escape, fill)), lambda m: fill[m[0]], a) for a in args]
    assert cli.main([*args, "--spec", str(empty / "spec.json")]) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and says.format(tmp=empty) in out
    assert list(empty.iterdir()) == []


def test_saving_without_a_login_is_refused(deep_run, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert cli.main(["me/p", "--runs", str(deep_run)]) == 2
    assert "needs a W&B login" in capsys.readouterr().out


@pytest.mark.skipif(not (os.environ.get("WANDB_API_KEY")
                         and os.environ.get("GRADPROBE_WANDB_TEST_PROJECT")),
                    reason="needs WANDB_API_KEY and GRADPROBE_WANDB_TEST_PROJECT=ENTITY/PROJECT")
def test_saved_on_a_wandb_server(deep_run, runs):
    """Syncs the offline run to the project, saves the workspace from the server's view of it,
    and loads the saved view back by its URL."""
    import wandb_workspaces.workspaces as ws

    target = os.environ["GRADPROBE_WANDB_TEST_PROJECT"]
    entity, project = cli.entity_and_project(target)
    offline = logged.offline_run_dirs([deep_run])[0]
    subprocess.run(["wandb", "sync", "--entity", entity, "--project", project, str(offline)],
                   check=True, capture_output=True, timeout=600,
                   env=os.environ | {"WANDB_MODE": "online"})
    server_runs = logged.read_project(target)
    view = workspace.build(entity, project, server_runs, [], name="gradprobe test").save()
    loaded = ws.Workspace.from_url(view.url)
    assert [s.name for s in loaded.sections] == SECTIONS
    assert sum(len(s.panels) for s in loaded.sections) == sum(len(s.panels)
                                                              for s in view.sections)
