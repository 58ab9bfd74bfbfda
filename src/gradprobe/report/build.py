"""The whole report for one folder: read the runs, tabulate, draw, write. The sweep callback
calls this at the end of every multirun, so it reports odd or partial data rather than raising."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gradprobe.report.axes import choose_axes
from gradprobe.report.figures import draw_figures
from gradprobe.report.labels import Labels
from gradprobe.report.render import render_html, render_markdown
from gradprobe.report.runs import load_runs
from gradprobe.report.table import (
    NUMERIC_EXTRA,
    aggregate,
    aggregate_columns_of,
    columns_of,
    config_columns_of,
    group_runs,
    metric_columns_of,
    primary_metric,
    run_row,
    write_csv,
)
from gradprobe.report.text import report_blocks

FIGURES_DIR = "report_figures"


def build_report(directory: Path, axes: tuple[str, ...] | None = None,
                 out: Path | None = None) -> dict[str, Any]:
    """Write runs.csv, aggregate.csv, figures, report.md and report.html for every run found.

    ``axes`` (one or two config keys) defaults to the keys the runs vary (``report.axes``).
    Returns the paths written (``runs_csv``, ``aggregate_csv``, ``report_md``, ``report_html``,
    ``figures`` by name), ``skipped`` figures with the reason, ``rows``, ``aggregate`` and the
    ``axes`` drawn over.
    """
    directory, given = Path(directory), tuple(str(a) for a in axes or ())
    out = Path(out) if out is not None else directory
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(directory) if directory.is_dir() else []
    config_columns, metric_columns = config_columns_of(runs, given), metric_columns_of(runs)
    rows = [run_row(run, config_columns, metric_columns) for run in runs]
    chosen = choose_axes(rows, config_columns, given)
    numeric = [*metric_columns, *NUMERIC_EXTRA]
    agg = aggregate(rows, config_columns, numeric)
    labels = Labels.of_rows(rows, config_columns, chosen.keys)
    metric = primary_metric(metric_columns)
    figures, skipped = draw_figures(rows, directory, chosen.keys, config_columns, labels, metric,
                                    out / FIGURES_DIR)
    blocks = report_blocks(directory, out, rows, agg, group_runs(rows, config_columns), labels,
                           metric, chosen, figures, skipped)
    paths = {"runs_csv": write_csv(out / "runs.csv", rows,
                                   columns_of(config_columns, metric_columns)),
             "aggregate_csv": write_csv(out / "aggregate.csv", agg,
                                        aggregate_columns_of(config_columns, numeric))}
    paths["report_md"] = out / "report.md"
    paths["report_md"].write_text(render_markdown(blocks, out))
    paths["report_html"] = out / "report.html"
    paths["report_html"].write_text(render_html(blocks))
    return {**paths, "figures": figures, "skipped": skipped, "rows": rows, "aggregate": agg,
            "axes": chosen}
