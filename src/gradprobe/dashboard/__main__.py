"""``python -m gradprobe.dashboard ENTITY/PROJECT``: the same as ``gradprobe-dashboard``."""

from gradprobe.dashboard.cli import main

raise SystemExit(main())
