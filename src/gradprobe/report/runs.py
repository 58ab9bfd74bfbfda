"""Finding run directories and reading what each run left behind (summary.json and
config_resolved.yaml); a broken or partial record is still a run, so nothing here raises."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gradprobe.report.values import Row, num, path_key, text

SUMMARY = "summary.json"
CONFIG = "config_resolved.yaml"
METRIC_PREFIXES = ("train/", "val/", "test/")
SKIPPED_METRICS = ("train/loss_step",)


@dataclass
class Run:
    path: Path
    rel: str
    summary: dict[str, Any]
    config: dict[str, Any]


def find_run_dirs(directory: Path) -> list[Path]:
    """Every folder under ``directory`` holding a summary.json, at any depth, in natural order.

    W&B's own copies (``wandb/``) and hidden folders (``.hydra/``) are never runs.
    """
    directory = Path(directory)
    found = []
    for root, dirs, files in os.walk(directory):
        dirs[:] = [d for d in dirs if d != "wandb" and not d.startswith(".")]
        if SUMMARY in files:
            found.append(Path(root))
    return sorted(found, key=lambda p: path_key(p.relative_to(directory).as_posix()))


def read_summary(run_dir: Path) -> dict[str, Any]:
    """The summary, or a stand-in saying it could not be read: a broken record is still a run."""
    try:
        summary = json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError) as e:
        return {"status": "unreadable", "error": f"{SUMMARY} could not be read: {e}"}
    if not isinstance(summary, dict):
        return {"status": "unreadable", "error": f"{SUMMARY} is not a JSON object"}
    return summary


def read_config(run_dir: Path) -> dict[str, Any]:
    try:
        config = yaml.safe_load((run_dir / CONFIG).read_text())
    except (OSError, yaml.YAMLError):
        return {}
    return config if isinstance(config, dict) else {}


def load_runs(directory: Path) -> list[Run]:
    runs = []
    for path in find_run_dirs(directory):
        rel = path.relative_to(directory).as_posix()
        runs.append(Run(path, rel, read_summary(path), read_config(path)))
    return runs


def lookup(config: dict[str, Any], dotted: str) -> str | None:
    """A scalar at a dotted key of the resolved config, as text; None for a group or absence."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if isinstance(node, dict | list) or node is None else str(node)


def parse_overrides(overrides: Any) -> dict[str, str]:
    """``["+model.depth=20", "seed=1"]`` -> ``{"model.depth": "20", "seed": "1"}``.

    Leading ``+``/``~`` are dropped, and so are ``hydra.*`` keys: they do not change the run.
    """
    parsed: dict[str, str] = {}
    for item in overrides if isinstance(overrides, list) else []:
        if not isinstance(item, str) or "=" not in item:
            continue
        key, value = item.split("=", 1)
        key = key.strip().lstrip("+~")
        if key and key != "hydra" and not key.startswith(("hydra.", "hydra/")):
            parsed[key] = value
    return parsed


def choices(summary: dict[str, Any]) -> dict[str, str]:
    chosen = summary.get("choices")
    if not isinstance(chosen, dict):
        return {}
    return {str(k): text(v) for k, v in chosen.items() if not str(k).startswith("hydra")}


def metrics(summary: dict[str, Any]) -> dict[str, float | None]:
    logged = summary.get("metrics")
    if not isinstance(logged, dict):
        return {}
    return {k: num(v) for k, v in logged.items()
            if k.startswith(METRIC_PREFIXES) and k not in SKIPPED_METRICS}


def diagnosis(summary: dict[str, Any]) -> Row:
    """The diagnosis columns of one run: verdicts joined by '+', ratios and shares as floats."""
    found = summary.get("diagnosis")
    found = found if isinstance(found, dict) else {}
    row: Row = {}
    for phase in ("init", "final"):
        part = found.get(phase)
        part = part if isinstance(part, dict) else {}
        verdicts = part.get("verdicts")
        row[f"{phase}_first_last_ratio"] = num(part.get("first_last_ratio"))
        row[f"{phase}_diagnosis"] = ("+".join(map(str, verdicts))
                                     if isinstance(verdicts, list) and verdicts else None)
        if phase == "final":
            row["final_dead_share"] = num(part.get("dead_share"))
            row["final_saturated_share"] = num(part.get("saturated_share"))
            row["final_diagnosis_text"] = part.get("text") or None
    return row
