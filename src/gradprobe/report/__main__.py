"""``python -m gradprobe.report <dir>``: the same as ``python scripts/report.py <dir>``."""

from gradprobe.report.cli import main

raise SystemExit(main())
