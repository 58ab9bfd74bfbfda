"""``python scripts/report.py <dir>`` (or ``python -m gradprobe.report <dir>``): the report from
the command line, for any folder of runs, at any time after they ran."""

from __future__ import annotations

import argparse
from pathlib import Path

from gradprobe.report.build import build_report
from gradprobe.report.text import status_line


def main(argv: list[str] | None = None) -> int:
    """``report.py <dir> [--axes X [Y]] [--out DIR]``; 0 on success, 2 if there is no such dir
    (and 2, from argparse, for more than two axes)."""
    parser = argparse.ArgumentParser(
        description="Summarise a multirun (or a folder of single runs): tables, figures, "
                    "report.md and report.html.")
    parser.add_argument("directory", type=Path, help="multirun dir, or a folder of run dirs")
    parser.add_argument("--axes", nargs="+", metavar="KEY", default=None,
                        help="one or two config keys for the heatmaps' x (and y) axes "
                             "(default: the keys the runs vary, seeds averaged)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: <dir>)")
    args = parser.parse_args(argv)
    if args.axes is not None and len(args.axes) > 2:
        parser.error(f"--axes takes one or two config keys, not {len(args.axes)}")
    if not args.directory.is_dir():
        print(f"report: {args.directory} is not a directory")
        return 2
    result = build_report(args.directory, args.axes, args.out)
    print(status_line(result["rows"]))
    print(result["axes"].describe())
    for name in ("runs_csv", "aggregate_csv", "report_md", "report_html"):
        print(f"wrote {result[name]}")
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    return 0
