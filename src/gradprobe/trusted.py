"""Configs read back from disk are data: they may name only code that gradprobe's ``conf/`` names.

A checkpoint's saved hyperparameters and a run directory's ``config_resolved.yaml`` are turned
back into objects with Hydra's ``instantiate``, which imports and calls whatever a ``_target_``
names (Hydra's own block list stops ``os.system``, not ``builtins.open``). Before that, every
``_target_`` must be one declared somewhere in this package's config groups, and no value may be
an interpolation: a saved config is resolved, and ``${oc.decode:...}`` could build a new target
when it is read. Torch-free, so the CLI can check a run directory before anything heavy loads.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import yaml

from gradprobe.config import CONF_DIR
from gradprobe.record import RunDirError

# Targets earlier versions of conf/ declared, so their run directories and checkpoints still load.
FORMERLY_DECLARED = frozenset({"pytorch_lightning.loggers.CSVLogger"})


class UntrustedConfig(RunDirError):
    """A saved config that names code gradprobe's own config groups do not declare."""


@cache
def declared_targets(conf_dir: Path = CONF_DIR) -> frozenset[str]:
    """Every ``_target_`` written in a YAML file under ``conf_dir``."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            target = node.get("_target_")
            if isinstance(target, str):
                found.add(target)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for path in sorted(conf_dir.rglob("*.yaml")):
        walk(yaml.safe_load(path.read_text()))
    return frozenset(found) | FORMERLY_DECLARED


def check(node: Any, source: str, key: str = "") -> None:
    """Raise :class:`UntrustedConfig` (one line naming ``source`` and the key) unless every
    ``_target_`` in ``node`` is declared in ``conf/`` and no string is an interpolation."""
    if isinstance(node, dict):
        for name, value in node.items():
            path = f"{key}.{name}" if key else str(name)
            if name == "_target_" and value not in declared_targets():
                raise UntrustedConfig(f"{source}: {path}={value!r} is not a target gradprobe's "
                                      "conf/ declares; refusing to load it (a saved config may "
                                      "name only gradprobe's own components)")
            check(value, source, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            check(value, source, f"{key}[{i}]")
    elif isinstance(node, str) and "${" in node:
        raise UntrustedConfig(f"{source}: {key}={node!r} is an interpolation, which a saved "
                              "(resolved) config never holds; refusing to load it")
