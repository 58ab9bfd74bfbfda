"""What the report says: the status line, the configuration table, the figures and their axes, a
diagnosis per configuration, the failed runs and a table of every run with links to its files, as
blocks that render.py turns into Markdown and HTML."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from gradprobe import trainability
from gradprobe.report.axes import Axes
from gradprobe.report.labels import Labels
from gradprobe.report.links import run_dir_link, run_links
from gradprobe.report.render import Block, Cell
from gradprobe.report.table import RATIOS
from gradprobe.report.values import Row, fmt, log_mean, text

STATUS_ORDER = ("completed", "diverged", "failed", "interrupted", "running")
OK = ("completed", "diverged")
CAPTIONS = {"heatmap_val_acc.png": "Final validation metric by {by}",
            "heatmap_grad_ratio.png": "First/last dL/dh ratio at init by {by}",
            "grad_profile_init.png": "Gradient norm per layer at init, per {per}",
            "training_curves.png": "Validation loss per epoch, per configuration",
            trainability.FIGURE: "Test accuracy by init.sigma_w2 and model.depth, with the "
                                 "mean-field trainable depth 6 xi_c (Schoenholz et al. 2017)"}
Groups = dict[tuple[str, ...], list[Row]]


def status_line(rows: list[Row]) -> str:
    """``8 runs: 6 completed, 1 diverged, 1 failed``."""
    counts = Counter(r["status"] for r in rows)
    order = sorted(counts, key=lambda s: (STATUS_ORDER.index(s) if s in STATUS_ORDER else 99, s))
    noun = "run" if len(rows) == 1 else "runs"
    detail = ", ".join(f"{counts[s]} {s}" for s in order)
    return f"{len(rows)} {noun}: {detail}" if rows else "0 runs found"


def _table(agg: list[Row], groups: Groups, labels: Labels, metric: str | None,
           root: Path, out: Path) -> Block:
    """The aggregate as a table, each configuration linked to its runs; many differing keys (a
    folder of unrelated runs) make one compact ``configuration`` column rather than a wide,
    mostly empty table."""
    compact = labels.compact
    header = ["configuration"] if compact else list(labels.columns)
    header += ["n_runs", "completed"]
    if metric:
        header.append(f"{metric} (mean ± std)")
    header += ["init first/last ∂L/∂h ratio", "final first/last ∂L/∂h ratio", "final diagnosis",
               "runs"]
    spec = _spec(metric)
    body = []
    for a, members in zip(agg, groups.values(), strict=True):
        cells: list[Cell] = ([labels.of(a)] if compact
                             else [text(a.get(c)) for c in labels.columns])
        cells += [str(a["n_runs"]), str(a["n_completed"])]
        if metric:
            mean, std = a.get(f"{metric}_mean"), a.get(f"{metric}_std")
            cells.append(fmt(mean, spec) + (f" ± {fmt(std, spec)}" if std is not None else ""))
        cells += [fmt(a.get(f"{r}_mean"), ".2e") for r in RATIOS]
        cells.append(a.get("final_diagnosis") or "–")
        cells.append([run_dir_link(root, out, r["run_dir"]) for r in members])
        body.append(cells)
    return Block("table", header=header, rows=body)


def _spec(metric: str | None) -> str:
    return ".3f" if metric and metric.endswith("acc") else ".4g"


def _runs_table(rows: list[Row], labels: Labels, metric: str | None, root: Path,
                out: Path) -> Block:
    """One line per run, linked to its directory, summary, log and figures."""
    header = ["run", "status", *(["configuration"] if labels.compact else labels.columns), "seed"]
    header += [metric] if metric else []
    header += ["init first/last ∂L/∂h ratio", "final diagnosis", "files"]
    body = []
    for r in rows:
        links = run_links(root, out, r["run_dir"])
        cells: list[Cell] = [links[:1], r["status"]]
        cells += [labels.of(r)] if labels.compact else [text(r.get(c)) for c in labels.columns]
        cells.append(text(r.get("seed")))
        cells += [fmt(r.get(metric), _spec(metric))] if metric else []
        cells += [fmt(r.get("init_first_last_ratio"), ".2e"), r.get("final_diagnosis") or "–",
                  links[1:]]
        body.append(cells)
    return Block("table", header=header, rows=body)


def _diagnosis_lines(groups: Groups, agg: list[Row], labels: Labels) -> list[str]:
    """``activation=sigmoid, model.depth=20: vanishing (init ratio 1.3e-08) — <diagnosis>``."""
    lines = []
    for members, a in zip(groups.values(), agg, strict=True):
        label = labels.of(members[0])
        verdict = a.get("final_diagnosis")
        if not verdict:
            statuses = ", ".join(sorted({r["status"] for r in members}))
            lines.append(f"{label}: no diagnosis (status: {statuses})")
            continue
        ratio = log_mean(r.get("init_first_last_ratio") for r in members)
        line = f"{label}: {verdict}"
        if ratio is not None:
            line += f" (init ratio {10 ** ratio:.1e})"
        texts = [r.get("final_diagnosis_text") for r in members
                 if r.get("final_diagnosis") == verdict and r.get("final_diagnosis_text")]
        first_text = texts[0] if texts else None
        lines.append(f"{line} — {first_text}" if first_text else line)
    return lines


def _failed_lines(rows: list[Row], labels: Labels) -> list[str]:
    lines = []
    for r in rows:
        if r["status"] not in OK:
            error = r.get("error") or "no error recorded (killed, or still running?)"
            label = labels.of(r)
            lines.append(f"{r['run_dir']} ({r['status']}; {label}, seed={r.get('seed')}): {error}")
    return lines


def _figure_blocks(axes: Axes, figures: dict[str, Path],
                   skipped: dict[str, str]) -> list[Block]:
    blocks = [Block("h2", "Figures"), Block("p", axes.describe())]
    by, per = " and ".join(axes.keys), axes.y or axes.x or "run"
    blocks += [Block("img", text=CAPTIONS.get(name, name).format(by=by, per=per), path=p)
               for name, p in figures.items()]
    if skipped:
        blocks.append(Block("p", "Figures skipped:"))
        blocks.append(Block("ul", items=[f"{name}: {why}" for name, why in skipped.items()]))
    return blocks


def report_blocks(directory: Path, out: Path, rows: list[Row], agg: list[Row], groups: Groups,
                  labels: Labels, metric: str | None, axes: Axes,
                  figures: dict[str, Path], skipped: dict[str, str]) -> list[Block]:
    """The report's content, once, for both renderings; links are relative to ``out``."""
    blocks = [Block("h1", f"gradprobe report: {directory}"), Block("p", status_line(rows))]
    if agg:
        blocks += [Block("h2", "Configurations"),
                   _table(agg, groups, labels, metric, directory, out)]
    if labels.common:
        common = ", ".join(f"{k}={v}" for k, v in labels.common.items())
        blocks.append(Block("p", f"Configurations differ in many keys; they are named by how "
                                 f"they differ from the most common settings: {common}."))
    blocks += _figure_blocks(axes, figures, skipped)
    if agg:
        blocks += [Block("h2", "Diagnosis per configuration"),
                   Block("ul", items=_diagnosis_lines(groups, agg, labels))]
    failed = _failed_lines(rows, labels)
    if failed:
        blocks += [Block("h2", "Failed runs"), Block("ul", items=failed)]
    if rows:
        blocks += [Block("h2", "Runs"), _runs_table(rows, labels, metric, directory, out)]
    return blocks
