"""The sweep report, from fabricated run directories: tables, figures, Markdown and HTML.

No training: every file a run leaves behind is written here, with numbers chosen so that means
and standard deviations can be checked by hand.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from gradprobe.report import build_report, main
from gradprobe.report.runs import find_run_dirs, parse_overrides

LAYER_COLUMNS = ["step", "layer", "depth", "grad_norm", "weight_norm", "grad_ratio",
                 "grad_mean_abs", "backprop_norm", "update_ratio", "act_mean", "act_std",
                 "act_zero_frac", "act_neg_frac", "act_dead_frac", "act_saturated_frac",
                 "pre_mean", "pre_std"]
FIGURES = ["heatmap_val_acc.png", "heatmap_grad_ratio.png", "grad_profile_init.png",
           "training_curves.png"]
PNG = b"\x89PNG\r\n\x1a\n"
ERROR = "RuntimeError: fabricated out of memory"
NAN = float("nan")


def val_acc(activation: str, depth: int, seed: int) -> float:
    return {"relu": 0.9, "sigmoid": 0.5}[activation] - 0.02 * depth + 0.05 * seed


def per_layer_factor(activation: str) -> float:
    """Gradient shrinks by this per layer towards the input: sigmoid vanishes, relu does not."""
    return {"relu": 0.9, "sigmoid": 0.25}[activation]


def write_layers(run_dir: Path, activation: str, depth: int) -> None:
    """gradflow/layers.csv at steps 0 and 10: depth hidden layers plus the output layer."""
    n = depth + 1
    rows = []
    for step, d in itertools.product((0, 10), range(1, n + 1)):
        hidden = d < n
        rows.append({"step": step, "layer": f"layer_{d:02d}" if hidden else "output", "depth": d,
                     "grad_norm": per_layer_factor(activation) ** (n - d) * (1 + step / 100),
                     "weight_norm": 3.0, "act_mean": 0.1 if hidden else "",
                     "act_saturated_frac": "" if activation == "relu" or not hidden else 0.3})
    (run_dir / "gradflow").mkdir(parents=True)
    with open(run_dir / "gradflow" / "layers.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, LAYER_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def write_metrics(run_dir: Path, final_loss: float, epochs: int = 3) -> None:
    """Lightning's sparse metrics.csv: step rows, validation rows and a test row."""
    header = ["epoch", "step", "train/loss_step", "val/loss", "val/acc", "test/loss", "grad/x"]
    rows = [["", 0, "", "", "", "", 1.0]]
    for e in range(epochs):
        rows.append([e, 10 * e + 5, 2.0, "", "", "", ""])
        rows.append([e, 10 * e + 9, "", final_loss * (epochs - e), 0.5, "", ""])
    rows.append([epochs, 10 * epochs, "", "", "", final_loss, ""])
    with open(run_dir / "metrics.csv", "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])


def diagnosis(activation: str, depth: int, diverged: bool) -> dict[str, Any]:
    ratio = per_layer_factor(activation) ** (depth - 1)
    verdict = "vanishing" if activation == "sigmoid" else "healthy"
    text = (f"vanishing gradients (first/last hidden-layer ratio {ratio:.2e}). Try: "
            "activation=relu, leaky_relu or elu" if verdict == "vanishing"
            else f"healthy (first/last hidden-layer gradient ratio {ratio:.2e})")
    init = {"step": 0, "verdicts": [verdict], "first_last_ratio": ratio, "dead_share": 0.0,
            "saturated_share": NAN, "text": text}
    final = dict(init, step=30, first_last_ratio=ratio * 2, dead_share=0.1)
    if diverged:
        final = dict(final, verdicts=["diverged"], first_last_ratio=NAN,
                     text="diverged at step 3 in layer_01. Try: a smaller learning rate")
    return {"init": init, "final": final}


def make_run(run_dir: Path, activation: str, depth: int, seed: int, status: str = "completed",
             overrides: list[str] | None = None) -> Path:
    """A run directory as a finished (or diverged, or failed) job leaves it."""
    run_dir.mkdir(parents=True)
    (run_dir / "config_resolved.yaml").write_text(
        f"seed: {seed}\nmodel:\n  depth: {depth}\n  width: 16\nactivation:\n"
        f"  _target_: torch.nn.Identity\noptimizer:\n  lr: 0.001\n")
    summary: dict[str, Any] = {
        "run_dir": str(run_dir), "status": status, "seed": seed,
        "choices": {"activation": activation, "model": "mlp", "data": "digits",
                    "init": "default", "norm": "none", "optimizer": "adam"},
        "overrides": overrides if overrides is not None else [],
        "wall_time_s": 1.5, "epochs": 3, "steps": 30, "num_parameters": 1000}
    acc = val_acc(activation, depth, seed)
    if status == "failed":
        summary["error"] = ERROR
    else:
        nan = status == "diverged"
        summary["metrics"] = {"train/loss": NAN if nan else 0.5, "train/loss_step": 0.4,
                              "val/loss": NAN if nan else 1 - acc, "val/acc": NAN if nan else acc,
                              "test/loss": NAN if nan else 1.1 - acc,
                              "test/acc": NAN if nan else acc - 0.01}
        summary["diagnosis"] = diagnosis(activation, depth, nan)
        write_metrics(run_dir, NAN if nan else 1 - acc)
        write_layers(run_dir, activation, depth)
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return run_dir


def make_sweep(root: Path) -> Path:
    """2 activations x 2 depths x 2 seeds as jobs 0..7 (job 3: relu, depth 6, seed 1, diverged),
    job 8 failed, job 9 never wrote a record."""
    for job, (act, depth, seed) in enumerate(itertools.product(("relu", "sigmoid"), (3, 6),
                                                               (0, 1))):
        status = "diverged" if (act, depth, seed) == ("relu", 6, 1) else "completed"
        make_run(root / str(job), act, depth, seed, status, sweep_overrides(act, depth, seed))
    make_run(root / "8", "relu", 3, 2, "failed", sweep_overrides("relu", 3, 2))
    (root / "9").mkdir()
    (root / "9" / "train.log").write_text("killed before writing a record\n")
    (root / "multirun.yaml").write_text("hydra:\n  mode: MULTIRUN\n")
    return root


def sweep_overrides(activation: str, depth: int, seed: int) -> list[str]:
    return [f"activation={activation}", f"model.depth={depth}", f"seed={seed}",
            "trainer.max_epochs=3", "hydra.verbose=true"]


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = make_sweep(tmp_path_factory.mktemp("multirun") / "2026-11-26" / "20-02-21-931280")
    return root, build_report(root)


def test_runs_csv_has_one_row_per_run_with_config_and_results(sweep) -> None:
    root, result = sweep
    rows = read_csv(root / "runs.csv")
    assert [r["run_dir"] for r in rows] == [str(i) for i in range(9)]
    by_job = {r["run_dir"]: r for r in rows}
    assert (by_job["7"]["activation"], by_job["7"]["model.depth"], by_job["7"]["seed"]) == \
        ("sigmoid", "6", "1")
    assert (by_job["4"]["activation"], by_job["4"]["model.depth"], by_job["4"]["seed"]) == \
        ("sigmoid", "3", "0")
    assert by_job["3"]["status"] == "diverged" and math.isnan(float(by_job["3"]["val/acc"]))
    assert by_job["8"]["status"] == "failed" and by_job["8"]["error"] == ERROR
    assert by_job["8"]["val/acc"] == "" and by_job["8"]["final_diagnosis"] == ""
    assert [r["status"] for r in rows].count("completed") == 7
    header = list(rows[0])
    assert {"val/loss", "val/acc", "test/loss", "test/acc", "train/loss", "model",
            "trainer.max_epochs", "init_first_last_ratio", "final_dead_share"} <= set(header)
    assert "train/loss_step" not in header and "hydra.verbose" not in header
    assert float(by_job["4"]["init_first_last_ratio"]) == pytest.approx(0.25 ** 2)
    assert by_job["4"]["final_diagnosis"] == "vanishing"
    assert by_job["3"]["final_diagnosis"] == "diverged"
    assert len(result["rows"]) == 9 and result["rows"][0]["activation"] == "relu"


def test_aggregate_means_and_stds_over_seeds(sweep) -> None:
    root, _ = sweep
    agg = {(r["activation"], r["model.depth"]): r for r in read_csv(root / "aggregate.csv")}
    assert set(agg) == {("relu", "3"), ("relu", "6"), ("sigmoid", "3"), ("sigmoid", "6")}
    assert "seed" not in next(iter(agg.values()))
    sig6 = agg["sigmoid", "6"]  # val/acc 0.38 and 0.43
    assert (sig6["n_runs"], sig6["n_completed"]) == ("2", "2")
    assert float(sig6["val/acc_mean"]) == pytest.approx(0.405)
    assert float(sig6["val/acc_std"]) == pytest.approx(0.05 / math.sqrt(2))
    assert float(sig6["val/loss_mean"]) == pytest.approx(0.595)
    assert float(sig6["init_first_last_ratio_mean"]) == pytest.approx(0.25 ** 5)
    assert sig6["final_diagnosis"] == "vanishing"
    relu6 = agg["relu", "6"]  # seed 1 diverged: its NaN is left out, one value has no std
    assert (relu6["n_runs"], relu6["n_completed"]) == ("2", "1")
    assert float(relu6["val/acc_mean"]) == pytest.approx(0.78) and relu6["val/acc_std"] == ""
    relu3 = agg["relu", "3"]  # two completed seeds and the failed job
    assert (relu3["n_runs"], relu3["n_completed"]) == ("3", "2")
    assert float(relu3["val/acc_mean"]) == pytest.approx(0.865)


def test_figures_are_pngs(sweep) -> None:
    root, result = sweep
    assert result["skipped"] == {}
    for name in FIGURES:
        path = root / "report_figures" / name
        assert result["figures"][name] == path
        assert path.read_bytes()[:8] == PNG


def test_markdown_and_html(sweep) -> None:
    root, _ = sweep
    md = (root / "report.md").read_text()
    assert f"# gradprobe report: {root}" in md
    assert "9 runs: 7 completed, 1 diverged, 1 failed" in md
    assert "| activation | model.depth | n_runs |" in md
    assert "| sigmoid | 6 | 2 | 2 | 0.405 ± 0.035 |" in md
    assert "- activation=sigmoid, model.depth=6: vanishing (init ratio 9.8e-04) — vanishing " \
           "gradients" in md
    assert "- activation=relu, model.depth=6: diverged (init ratio 5.9e-01) — diverged at step 3" \
        in md  # a tie (one healthy, one diverged seed) goes to the problem
    assert "Try: activation=relu, leaky_relu or elu" in md
    assert "8 (failed; activation=relu, model.depth=3, seed=2): " + ERROR in md
    for name in FIGURES:
        assert f"(report_figures/{name})" in md
    page = (root / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(FIGURES)
    assert '<table class="sortable">' in page and ERROR in page and "9 runs: 7 completed" in page
    assert "Axes: model.depth (x) and activation (y), the keys these runs vary." in md
    assert "| [3](3/) | diverged | relu | 6 | 1 | nan |" in md  # the runs table, linked


def test_single_runs_are_found_at_any_depth(tmp_path: Path) -> None:
    outputs = tmp_path / "outputs"
    make_run(outputs / "2026-11-26" / "19-14-35-998987", "relu", 8, 0)
    make_run(outputs / "2026-11-27" / "08-00-00-000001", "sigmoid", 20, 0,
             overrides=["activation=sigmoid", "model.depth=20"])
    wandb = outputs / "2026-11-27" / "08-00-00-000001" / "wandb" / "run-1" / "files"
    wandb.mkdir(parents=True)
    (wandb / "summary.json").write_text("{}")
    (outputs / "2026-11-27" / "08-30-00-000002").mkdir()  # no record: not a run
    assert len(find_run_dirs(outputs)) == 2
    result = build_report(outputs, out=tmp_path / "report")
    rows = read_csv(tmp_path / "report" / "runs.csv")
    assert [(r["run_dir"], r["activation"], r["model.depth"]) for r in rows] == [
        ("2026-11-26/19-14-35-998987", "relu", "8"),  # depth from config_resolved.yaml
        ("2026-11-27/08-00-00-000001", "sigmoid", "20")]
    assert set(result["figures"]) == set(FIGURES)
    assert "2 runs: 2 completed" in (tmp_path / "report" / "report.md").read_text()


def test_a_sweep_where_every_run_failed_still_reports(tmp_path: Path) -> None:
    for job in range(2):
        make_run(tmp_path / str(job), "relu", 3, job, "failed")
    result = build_report(tmp_path)
    assert len(read_csv(tmp_path / "runs.csv")) == 2
    md = (tmp_path / "report.md").read_text()
    assert "2 runs: 2 failed" in md and ERROR in md
    assert result["figures"] == {} and "heatmap_val_acc.png" in result["skipped"]
    assert "Figures skipped" in md


def test_odd_data_never_raises(tmp_path: Path) -> None:
    make_run(tmp_path / "0", "relu", 3, 0)
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "summary.json").write_text("{not json")
    (tmp_path / "2").mkdir()
    (tmp_path / "2" / "summary.json").write_text(json.dumps(
        {"status": "running", "metrics": None, "choices": None, "overrides": ["~x", 3]}))
    (tmp_path / "0" / "metrics.csv").write_text("epoch,val/loss\n0,oops\n")
    result = build_report(tmp_path, axes=("optimizer.momentum", "activation"))
    statuses = [r["status"] for r in result["rows"]]
    assert statuses == ["completed", "unreadable", "running"]
    assert "no run has both axes optimizer.momentum and activation" in \
        result["skipped"]["heatmap_val_acc.png"]
    md = (tmp_path / "report.md").read_text()
    assert "3 runs: 1 completed, 1 running, 1 unreadable" in md
    assert "no error recorded" in md
    assert build_report(tmp_path / "missing", out=tmp_path / "empty")["rows"] == []


def test_report_module_does_not_import_torch() -> None:
    code = "import sys, gradprobe.report; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_parse_overrides() -> None:
    assert parse_overrides(["+model.depth=20", "~norm=batch", "hydra.verbose=true",
                            "logger=[csv,wandb]", "flag"]) == {
        "model.depth": "20", "norm": "batch", "logger": "[csv,wandb]"}


def test_main(sweep, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = sweep
    out = tmp_path / "out"
    assert main([str(root), "--out", str(out), "--axes", "activation", "model.depth"]) == 0
    assert (out / "report.md").exists() and (out / "report.html").exists()
    printed = capsys.readouterr().out
    assert "9 runs: 7 completed, 1 diverged, 1 failed" in printed
    assert "Axes: activation (x) and model.depth (y), as asked." in printed
    assert main([str(tmp_path / "nowhere")]) == 2
    with pytest.raises(SystemExit) as too_many:
        main([str(root), "--out", str(out), "--axes", "activation", "model.depth", "seed"])
    assert too_many.value.code == 2


def set_val_acc(run_dir: Path, acc: float) -> None:
    summary = json.loads((run_dir / "summary.json").read_text())
    summary["metrics"]["val/acc"] = acc
    (run_dir / "summary.json").write_text(json.dumps(summary))


def test_an_lr_by_seed_ensemble_is_drawn_over_lr_with_seeds_averaged(tmp_path: Path) -> None:
    """The README's ensemble (seed x optimizer.lr) varies lr and seed: lr is the one axis (a
    one-row heatmap), seeds are averaged, and nothing is drawn over depth x activation."""
    lrs = ("1e-3", "3e-3", "1e-2")
    for job, (seed, lr) in enumerate(itertools.product(range(4), lrs)):
        run_dir = make_run(tmp_path / str(job), "relu", 3, seed,
                           overrides=[f"seed={seed}", f"optimizer.lr={lr}"])
        set_val_acc(run_dir, float(lr) * 10 + seed / 100)
    result = build_report(tmp_path)
    assert result["axes"].keys == ("optimizer.lr",) and result["axes"].averaged == ["seed"]
    assert set(result["figures"]) == set(FIGURES)
    agg = {r["optimizer.lr"]: r for r in read_csv(tmp_path / "aggregate.csv")}
    assert set(agg) == set(lrs) and {r["n_runs"] for r in agg.values()} == {"4"}
    assert float(agg["3e-3"]["val/acc_mean"]) == pytest.approx(0.03 + 0.015)
    md = (tmp_path / "report.md").read_text()
    assert "Axes: optimizer.lr (x), the keys these runs vary. Seeds are replicates" in md
    assert "Final validation metric by optimizer.lr" in md
    assert "model.depth (x)" not in md


def test_depth_by_activation_is_still_drawn_over_both(sweep) -> None:
    _, result = sweep
    assert result["axes"].keys == ("model.depth", "activation")  # numbers on x on a tie
    assert result["axes"].averaged == ["seed"]


def test_a_three_key_sweep_draws_the_two_with_most_values_and_says_so(tmp_path: Path) -> None:
    grid = itertools.product(("relu", "sigmoid"), (3, 6, 9), ("1e-3", "1e-2"))
    for job, (act, depth, lr) in enumerate(grid):
        make_run(tmp_path / str(job), act, depth, 0,
                 overrides=[f"activation={act}", f"model.depth={depth}", f"optimizer.lr={lr}"])
    result = build_report(tmp_path)
    axes = result["axes"]
    assert (axes.keys, axes.averaged) == (("model.depth", "optimizer.lr"), ["activation"])
    assert set(result["figures"]) == set(FIGURES)
    md = (tmp_path / "report.md").read_text()
    assert ("Axes: model.depth (x) and optimizer.lr (y), the keys these runs vary. Also varied, "
            "and averaged over in the heatmaps: activation (pass --axes to choose others).") in md
    asked = build_report(tmp_path, axes=("activation",), out=tmp_path / "asked")["axes"]
    assert (asked.keys, asked.chosen) == (("activation",), False)
    assert set(asked.averaged) == {"model.depth", "optimizer.lr"}


def test_seed_is_an_axis_only_when_nothing_else_varies(tmp_path: Path) -> None:
    for seed in range(3):
        make_run(tmp_path / str(seed), "relu", 3, seed, overrides=[f"seed={seed}"])
    result = build_report(tmp_path)
    assert result["axes"].keys == ("seed",) and "heatmap_val_acc.png" in result["figures"]
    make_run(tmp_path / "one" / "0", "relu", 3, 0)
    alone = build_report(tmp_path / "one")
    assert alone.get("axes").keys == ()
    assert "vary in no configuration key" in alone["skipped"]["heatmap_val_acc.png"]


class Page(HTMLParser):
    """The tables of report.html: their classes, header cells, and each body row's links."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.scripts: list[str] = []
        self._in_script = self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = dict(attrs)
        if tag == "table":
            self.tables.append({"class": attr.get("class"), "th": [], "rows": []})
        elif tag == "th":
            self.tables[-1]["th"].append(attr.get("class"))
        elif tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.tables[-1]["rows"].append([])
        elif tag == "a" and self._in_body:
            self.tables[-1]["rows"][-1].append(attr["href"])
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_body = self._in_body and tag != "tbody"
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts.append(data)


@pytest.mark.parametrize("elsewhere", [False, True])
def test_html_tables_sort_and_link_every_row_to_its_run(tmp_path: Path, elsewhere: bool) -> None:
    root = make_sweep(tmp_path / "sweep")
    figures = root / "2" / "gradflow" / "figures"
    figures.mkdir()
    for name in ("heatmap.png", "profile.png"):
        (figures / name).write_bytes(PNG)
    (root / "2" / "train.log").write_text("log\n")
    out = tmp_path / "elsewhere" / "report" if elsewhere else root
    page_path = build_report(root, out=out)["report_html"]
    page = Page()
    page.feed(page_path.read_text())
    assert page.scripts and "sort" in "".join(page.scripts) and "http" not in "".join(page.scripts)
    configurations, runs = page.tables
    for table in page.tables:
        assert table["class"] == "sortable" and set(table["th"]) == {"sortable"}
        assert table["rows"] and all(table["rows"])  # every row links somewhere
        for href in itertools.chain(*table["rows"]):
            assert not href.startswith(("/", "http", "file:")), href
            assert (page_path.parent / href).exists(), href
    assert len(configurations["rows"]) == 4 and len(runs["rows"]) == 9
    linked = {(page_path.parent / h).resolve() for h in runs["rows"][2]}
    assert {root.resolve() / "2", root.resolve() / "2" / "summary.json",
            root.resolve() / "2" / "train.log", (figures / "heatmap.png").resolve(),
            (figures / "profile.png").resolve()} <= linked
