"""Atomic writes and new dated folders: a record on disk is the old one or the new one, never
half, and a later one never lands on an earlier one (torch-free)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Any


@contextmanager
def atomic_file(path: Path, mode: str = "w", new: bool = False) -> Iterator[IO[Any]]:
    """A file written beside ``path``, flushed to disk and renamed over it: readers see the old
    file or the new one, never half. On any error (a full disk, a kill's exception) the
    temporary file is removed and the old file is untouched. ``new``: never over an existing
    file (``FileExistsError``; a hard link, which fails where a rename would replace)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if new:
            os.link(tmp, path)
            tmp.unlink()
        else:
            tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def write_json(path: Path, data: dict[str, Any], new: bool = False) -> None:
    with atomic_file(path, new=new) as f:
        f.write(json.dumps(data, indent=2, default=str) + "\n")


def new_dated_dir(parent: Path, prefix: str = "") -> Path:
    """A new folder ``<prefix><time to the microsecond>`` under ``parent`` (``-1``, ``-2`` …
    added if that exists): names sort by age, and a second one made at the same moment (a
    resume right after a kill) never lands in, or overwrites, the first."""
    stamp = f"{prefix}{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}"
    Path(parent).mkdir(parents=True, exist_ok=True)
    n = 0
    while True:
        path = Path(parent) / (f"{stamp}-{n}" if n else stamp)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            n += 1
