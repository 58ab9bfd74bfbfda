"""Runs as rows, and rows as configurations: one row per run (runs.csv) and mean/std over seeds
per configuration (aggregate.csv), both plain CSV so they read back without pandas."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from gradprobe.report.runs import (
    METRIC_PREFIXES,
    Run,
    choices,
    diagnosis,
    lookup,
    metrics,
    parse_overrides,
)
from gradprobe.report.values import Row, mean_std, most_common, num, text, value_key

RATIOS = ("init_first_last_ratio", "final_first_last_ratio")
DIAGNOSIS_COLUMNS = (*RATIOS, "init_diagnosis", "final_diagnosis", "final_dead_share",
                     "final_saturated_share")
TAIL_COLUMNS = ("wall_time_s", "error", "final_diagnosis_text")
NUMERIC_EXTRA = (*RATIOS, "final_dead_share", "final_saturated_share", "wall_time_s")


def config_columns_of(runs: list[Run], axes: tuple[str, ...] = ()) -> list[str]:
    """Choice groups, then override keys, then the axes: the columns that name a configuration."""
    columns: dict[str, None] = {}
    for run in runs:
        columns.update(dict.fromkeys(choices(run.summary)))
    for run in runs:
        columns.update(dict.fromkeys(parse_overrides(run.summary.get("overrides"))))
    columns.update(dict.fromkeys(axes))
    columns.pop("seed", None)
    return list(columns)


def metric_columns_of(runs: list[Run]) -> list[str]:
    """Every metric any run has, grouped train/, val/, test/, each in the order runs logged them."""
    seen: dict[str, None] = {}
    for run in runs:
        seen.update(dict.fromkeys(metrics(run.summary)))
    return sorted(seen, key=lambda k: next(i for i, p in enumerate(METRIC_PREFIXES)
                                          if k.startswith(p)))


def run_row(run: Run, config_columns: list[str], metric_columns: list[str]) -> Row:
    """One run's line of runs.csv; a key the run did not set comes from its resolved config."""
    summary, chosen = run.summary, choices(run.summary)
    overrides = parse_overrides(summary.get("overrides"))
    row: Row = {"run_dir": run.rel, "status": text(summary.get("status")) or "unknown"}
    for col in config_columns:
        value = chosen.get(col) or overrides.get(col)
        row[col] = value if value is not None else lookup(run.config, col)
    seed = summary.get("seed", overrides.get("seed", lookup(run.config, "seed")))
    row["seed"] = seed if seed is None or isinstance(seed, int) else text(seed)
    logged = metrics(summary)
    row.update({col: logged.get(col) for col in metric_columns})
    row.update(diagnosis(summary))
    row["wall_time_s"] = num(summary.get("wall_time_s"))
    row["error"] = text(summary.get("error")) or None
    return row


def columns_of(config_columns: list[str], metric_columns: list[str]) -> list[str]:
    """runs.csv's columns: who, how it ended, its configuration, then its results."""
    return ["run_dir", "status", *config_columns, "seed", *metric_columns, *DIAGNOSIS_COLUMNS,
            *TAIL_COLUMNS]


def group_runs(rows: list[Row], config_columns: list[str]) -> dict[tuple[str, ...], list[Row]]:
    """Runs that differ only in seed (and results) share a configuration, in sorted order."""
    groups: dict[tuple[str, ...], list[Row]] = {}
    for row in rows:
        groups.setdefault(tuple(text(row.get(c)) for c in config_columns), []).append(row)
    return {k: groups[k] for k in sorted(groups, key=lambda k: [value_key(v) for v in k])}


def aggregate(rows: list[Row], config_columns: list[str], numeric: list[str]) -> list[Row]:
    """Per configuration: n_runs, n_completed, mean and std over seeds, most common verdict."""
    out = []
    for key, members in group_runs(rows, config_columns).items():
        agg: Row = dict(zip(config_columns, key, strict=True))
        agg["n_runs"] = len(members)
        agg["n_completed"] = sum(r["status"] == "completed" for r in members)
        for col in numeric:
            agg[f"{col}_mean"], agg[f"{col}_std"] = mean_std(r.get(col) for r in members)
        agg["final_diagnosis"] = most_common(r.get("final_diagnosis") for r in members)
        out.append(agg)
    return out


def aggregate_columns_of(config_columns: list[str], numeric: list[str]) -> list[str]:
    """aggregate.csv's columns: the configuration, run counts, then mean and std per number."""
    return [*config_columns, "n_runs", "n_completed",
            *(f"{c}_{s}" for c in numeric for s in ("mean", "std")), "final_diagnosis"]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return repr(value) if isinstance(value, float) else str(value)


def write_csv(path: Path, rows: list[Row], columns: list[str]) -> Path:
    """Plain CSV (no pandas needed to read it back): missing is empty, NaN is ``nan``."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        writer.writerows([_cell(row.get(c)) for c in columns] for row in rows)
    return path


def primary_metric(metric_columns: list[str]) -> str | None:
    """val/acc where there is one; else val/loss (regression); else any validation metric."""
    for name in ("val/acc", "val/loss"):
        if name in metric_columns:
            return name
    return next((c for c in metric_columns if c.startswith("val/")), None)
