"""Names for configurations, used by the table, the curves' legend and the diagnosis lines: a
configuration is named by the keys that tell it apart from the others."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from gradprobe.report.values import Row, text


def varying(rows: list[Row], columns: list[str]) -> list[str]:
    """The columns whose value differs between rows: what tells configurations apart."""
    return [c for c in columns if len({text(r.get(c)) for r in rows}) > 1]


def config_label(row: Row, columns: list[str], short: bool = False) -> str:
    """``activation=relu, model.depth=3`` (``depth=3`` when short); unset keys are left out."""
    parts = [f"{c.rsplit('.', 1)[-1] if short else c}={text(row.get(c))}"
             for c in columns if text(row.get(c))]
    return ", ".join(parts) or "defaults"


@dataclass
class Labels:
    """How configurations are named: by the keys that differ between them. With many such keys
    (a folder of unrelated runs) names are compact: only values off the most common one."""

    columns: list[str]
    common: dict[str, str]  # key -> most common value; empty unless compact

    @classmethod
    def of_rows(cls, rows: list[Row], config_columns: list[str],
                axes: tuple[str, ...]) -> Labels:
        columns = varying(rows, config_columns) or [
            a for a in axes if any(text(r.get(a)) for r in rows)]
        if len(columns) <= 4:
            return cls(columns, {})
        common = {c: Counter(text(r.get(c)) for r in rows).most_common(1)[0][0]
                  for c in columns}
        return cls(columns, {c: v for c, v in common.items() if v})

    @property
    def compact(self) -> bool:
        return len(self.columns) > 4

    def of(self, row: Row, short: bool = False) -> str:
        if not self.compact:
            return config_label(row, self.columns, short)
        parts = [f"{c.rsplit('.', 1)[-1] if short else c}={text(row.get(c)) or 'unset'}"
                 for c in self.columns if text(row.get(c)) != self.common.get(c, "")]
        return ", ".join(parts) or "most common settings"
