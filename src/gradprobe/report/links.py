"""Links from the report to what each run left behind (its directory, summary, log and figures),
relative to the report's folder so that they work when the folder is opened locally."""

from __future__ import annotations

import os
from pathlib import Path

from gradprobe.report.render import Link

RUN_FILES = (("summary", "summary.json"), ("log", "train.log"), ("metrics", "metrics.csv"))
RUN_FIGURES = "gradflow/figures"


def _href(target: Path, out: Path) -> str:
    return Path(os.path.relpath(target, out)).as_posix()


def run_dir_link(root: Path, out: Path, rel: str) -> Link:
    """The run's directory, named as in runs.csv."""
    return Link(rel, _href(root / rel, out) + "/")


def run_links(root: Path, out: Path, rel: str) -> list[Link]:
    """The run's directory, then each of its files and figures that exists."""
    run_dir = root / rel
    links = [run_dir_link(root, out, rel)]
    links += [Link(name, _href(run_dir / file, out)) for name, file in RUN_FILES
              if (run_dir / file).is_file()]
    figures = run_dir / RUN_FIGURES
    if figures.is_dir():
        links += [Link(p.stem, _href(p, out)) for p in sorted(figures.glob("*.png"))]
    return links
