"""Summarise a multirun or a folder of runs: ``python scripts/report.py <dir> [--axes X [Y]]``."""

from gradprobe.report import main

raise SystemExit(main())
