"""One report for many runs: a sweep's jobs, or every single run under a folder such as outputs/.

Everything is read from the files runs leave behind (``summary.json``, ``config_resolved.yaml``,
``metrics.csv``, ``gradflow/layers.csv``), so a report can be drawn at any time, without torch, for
finished, diverged, failed or killed runs alike. The sweep callback calls :func:`build_report` at
the end of every multirun, so odd or partial data never raises: it is reported, or left out.

    python scripts/report.py multirun/2026-11-26/20-02-21-931280
    python scripts/report.py outputs --axes optimizer.lr activation --out /tmp/report

The heatmaps are drawn over the keys the runs vary (``axes``) unless ``--axes`` names them.

Modules, in the order a report is made: ``runs`` (find and read run dirs), ``table`` (rows and
the aggregate), ``axes`` (what the figures are drawn over), ``labels`` (naming configurations),
``heatmaps``/``profiles``/``curves`` (the figures, drawn by ``figures``), ``text`` (what the
report says), ``links`` (to each run's files), ``render`` (Markdown, HTML), ``build`` (all of
it), ``cli`` (the command line).
"""

from gradprobe.report.build import build_report
from gradprobe.report.cli import main

__all__ = ["build_report", "main"]
