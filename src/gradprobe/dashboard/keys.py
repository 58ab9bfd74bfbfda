"""What the logged keys are, from their names and summary values alone: per-layer statistics
(``<stat>/<layer>``, one panel each holding every layer), step-level series by namespace, and
media (images, tables, custom charts). Pure (keys in, groups out), so it is tested without W&B
and fits any depth: a 300-layer net gives the same groups as an 8-layer one, with more keys."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gradprobe.instruments.layers import LAYER_NAME_PATTERN
from gradprobe.instruments.recorder import LAYER_STATS, metric_key
from gradprobe.instruments.stats import VERDICT_STATS

PER_LAYER = re.compile(rf"^(?P<stat>.+)/(?P<layer>{LAYER_NAME_PATTERN})$")
# the instruments' order: gradients before activations, as the figures and layers.csv have it
KNOWN_ORDER = [metric_key(s) for s in LAYER_STATS]
GRADIENT_NAMESPACES = ("grad", "weight", "backprop", "update")
ACTIVATION_NAMESPACES = ("act",)
ACTIVATION_FIRST = tuple(metric_key(s) for s in VERDICT_STATS)  # what the diagnosis reads


@dataclass(frozen=True)
class Statistic:
    """One per-layer statistic, ``grad/norm``, and its logged keys in depth order."""

    key: str
    layer_keys: tuple[str, ...]

    @property
    def namespace(self) -> str:
        return self.key.split("/", 1)[0]


def is_scalar(value: Any) -> bool:
    """A number W&B draws as a line (summary values of images, tables and histograms are dicts)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def media_type(value: Any) -> str | None:
    """``image``, ``table`` or ``histogram`` for a summary value W&B stores as a file."""
    kind = value.get("_type", "") if isinstance(value, Mapping) else ""
    for name in ("image", "table", "histogram"):
        if kind.startswith(name):
            return name
    return None


def _depth(key: str) -> tuple[int, int]:
    layer = PER_LAYER.match(key)["layer"]  # type: ignore[index]
    return (1, 0) if layer == "output" else (0, int(layer.removeprefix("layer_")))


def per_layer_statistics(scalar_keys: Iterable[str]) -> list[Statistic]:
    """Every per-layer statistic among the keys, layers in depth order (output last), statistics
    in the instruments' order and any other (a newer instrument's) after them by name."""
    groups: dict[str, list[str]] = {}
    for key in scalar_keys:
        if match := PER_LAYER.match(key):
            groups.setdefault(match["stat"], []).append(key)
    return [Statistic(s, tuple(sorted(set(groups[s]), key=_depth)))
            for s in sorted(groups, key=rank)]


def rank(stat: str, first: tuple[str, ...] = ()) -> tuple[int, int, str]:
    """Where a statistic goes: those in ``first``, then the instruments' order, then by name."""
    return (first.index(stat) if stat in first else len(first),
            KNOWN_ORDER.index(stat) if stat in KNOWN_ORDER else len(KNOWN_ORDER), stat)


def in_namespaces(stats: list[Statistic], namespaces: tuple[str, ...],
                  first: tuple[str, ...] = ()) -> list[Statistic]:
    """The statistics of these namespaces, those named in ``first`` leading."""
    return sorted((s for s in stats if s.namespace in namespaces), key=lambda s: rank(s.key, first))


def step_series(scalar_keys: Iterable[str], namespaces: tuple[str, ...],
                exclude: Iterable[str]) -> dict[str, list[str]]:
    """Step-level series of these namespaces, by name without its last ``_part``:
    ``grad/global_norm`` and ``grad/global_norm_preclip`` share a panel."""
    skip = set(exclude)
    panels: dict[str, list[str]] = {}
    for key in sorted(scalar_keys):
        if key in skip or PER_LAYER.match(key) or key.split("/", 1)[0] not in namespaces:
            continue
        stem = next((p for p in panels if key.startswith(p + "_")), key)
        panels.setdefault(stem, []).append(key)
    return panels
