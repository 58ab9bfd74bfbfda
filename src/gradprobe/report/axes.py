"""Which keys the report's heatmaps are drawn over: by default the keys the sweep varied, so an
ensemble over ``optimizer.lr`` x ``seed`` is drawn over the learning rate (seeds averaged), not
over a depth x activation grid holding one cell."""

from __future__ import annotations

from dataclasses import dataclass, field

from gradprobe.report.values import Row, num, text, value_key

SEED = "seed"


@dataclass
class Axes:
    """The heatmaps' keys (x, then y if any) and what the figures average over besides."""

    keys: tuple[str, ...]
    averaged: list[str] = field(default_factory=list)  # varied keys not on an axis
    chosen: bool = True  # False when given on the command line

    @property
    def x(self) -> str | None:
        return self.keys[0] if self.keys else None

    @property
    def y(self) -> str | None:
        return self.keys[1] if len(self.keys) > 1 else None

    def describe(self) -> str:
        """The sentence report.md says about the axes."""
        if not self.keys:
            return "The runs vary in no configuration key, so the heatmaps have no axis."
        where = " and ".join(f"{k} ({a})" for k, a in zip(self.keys, ("x", "y"), strict=False))
        how = "the keys these runs vary" if self.chosen else "as asked"
        line = f"Axes: {where}, {how}."
        rest = [k for k in self.averaged if k != SEED]
        if rest:
            line += (f" Also varied, and averaged over in the heatmaps: {', '.join(rest)}"
                     f" (pass --axes to choose others).")
        if SEED in self.averaged:
            line += " Seeds are replicates: every figure shows their mean."
        return line


def distinct(rows: list[Row], key: str) -> int:
    """How many values ``key`` takes across the runs (1e-3 and 0.001 are one; unset is none)."""
    values = {num(v) if num(v) is not None else t
              for v in (r.get(key) for r in rows) if (t := text(v))}
    return len(values)


def _is_numeric(rows: list[Row], key: str) -> bool:
    return all(value_key(r.get(key))[0] == 0 for r in rows if text(r.get(key)))


def choose_axes(rows: list[Row], config_columns: list[str],
                given: tuple[str, ...] | None = None) -> Axes:
    """The given axes, or the varied keys: the two with most values (numbers on x on a tie), the
    rest averaged; seed only when nothing else varies, as seeds are replicates."""
    varied = [c for c in config_columns if c != SEED and distinct(rows, c) > 1]
    seeds = [SEED] if distinct(rows, SEED) > 1 else []
    if given:
        return Axes(tuple(given), [k for k in [*varied, *seeds] if k not in given], chosen=False)
    if not varied:
        return Axes(tuple(seeds))
    order = sorted(varied, key=lambda c: (-distinct(rows, c), not _is_numeric(rows, c),
                                          config_columns.index(c)))
    return Axes(tuple(order[:2]), [*order[2:], *seeds])
