"""Numbers and text out of loosely typed records: JSON and CSV cells may be missing, text or NaN,
and a report must read them all without raising."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

Row = dict[str, Any]


def num(value: Any) -> float | None:
    """A float from a JSON number or CSV cell; None when missing or not a number (NaN is kept)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def finite(values: Iterable[Any]) -> list[float]:
    nums = (num(v) for v in values)
    return [v for v in nums if v is not None and math.isfinite(v)]


def mean_std(values: Iterable[Any]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof=1) of the finite values: NaN/inf (diverged runs) are ignored."""
    vals = finite(values)
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) * (v - mean) for v in vals) / (len(vals) - 1))


def log_mean(values: Iterable[Any]) -> float | None:
    """Mean of log10 over the positive finite values: ratios span decades, so average logs."""
    logs = [math.log10(v) for v in finite(values) if v > 0]
    return sum(logs) / len(logs) if logs else None


def text(value: Any) -> str:
    return "" if value is None else str(value)


def value_key(value: Any) -> tuple[int, float, str]:
    """Sort numbers numerically (3 < 20, 1e-3 < 1e-2) and everything else by text."""
    number = num(value)
    if number is not None and math.isfinite(number):
        return (0, number, "")
    return (1, 0.0, text(value))


def path_key(rel: str) -> list[tuple[int, int, str]]:
    """Natural order for run dirs, so that job 10 comes after job 9."""
    return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"(\d+)", rel) if p]


def most_common(values: Iterable[Any]) -> str:
    """The most common verdict; a tie goes to a problem over "healthy", so it is not hidden."""
    counts = Counter(v for v in values if v)
    if not counts:
        return ""
    top = max(counts.values())
    tied = [v for v, n in counts.items() if n == top]
    return next((v for v in tied if v != "healthy"), tied[0])


def fmt(value: Any, spec: str) -> str:
    number = num(value)
    return "–" if number is None else format(number, spec)
