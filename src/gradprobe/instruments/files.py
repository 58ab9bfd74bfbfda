"""Atomic writes: a record on disk is the old one or the new one, never half (torch-free)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
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
