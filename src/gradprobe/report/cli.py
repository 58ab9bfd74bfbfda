"""``python scripts/report.py <dir>`` (or ``python -m gradprobe.report <dir>``): the report from
the command line, for any folder of runs, at any time after they ran."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradprobe.report.build import DEFAULT_AXES, build_report
from gradprobe.report.text import status_line


def main(argv: list[str] | None = None) -> int:
    """``report.py <dir> [--axes X Y] [--out DIR]``; 0 on success, 2 if there is no such dir."""
    parser = argparse.ArgumentParser(
        description="Summarise a multirun (or a folder of single runs): tables, figures, "
                    "report.md and report.html.")
    parser.add_argument("directory", type=Path, help="multirun dir, or a folder of run dirs")
    parser.add_argument("--axes", nargs=2, metavar=("X", "Y"), default=list(DEFAULT_AXES),
                        help="config keys for the heatmaps' x and y axes "
                             "(default: model.depth activation)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: <dir>)")
    args = parser.parse_args(argv)
    if not args.directory.is_dir():
        print(f"report: {args.directory} is not a directory")
        return 2
    result = build_report(args.directory, (args.axes[0], args.axes[1]), args.out)
    print(status_line(result["rows"]))
    for name in ("runs_csv", "aggregate_csv", "report_md", "report_html"):
        print(f"wrote {result[name]}")
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    return 0
