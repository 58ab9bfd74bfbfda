"""The order-to-chaos phase diagram of an activation (matplotlib, imported only when drawn)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gradprobe.theory.meanfield import critical_sigma_w2


def phase_diagram(activation: str, point: tuple[float, float] | None, path: Path,
                  **params: float) -> Path:
    """The order-to-chaos line sigma_w2(sigma_b2) of an activation, with a config's point
    (Poole et al. 2016 / Schoenholz et al. 2017 style)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    b2 = np.concatenate([np.linspace(0.0, 0.05, 11), np.linspace(0.06, 0.5, 23)])
    w2 = np.array([critical_sigma_w2(activation, b, **params) for b in b2])
    fig = Figure(figsize=(6, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(b2, w2, color="black", label=r"critical line $\chi_1(q^*) = 1$")
    top = max(float(np.nanmax(w2)) if np.isfinite(w2).any() else 2.0, point[0] if point else 0)
    ax.fill_between(b2, 0, w2, color="tab:blue", alpha=0.15, label="ordered: gradients vanish")
    ax.fill_between(b2, w2, top * 1.3, color="tab:red", alpha=0.15,
                    label="chaotic: gradients explode")
    if point:
        ax.plot([point[1]], [point[0]], "o", color="tab:orange", markersize=9,
                label=rf"this config ($\sigma_w^2$={point[0]:.3g}, $\sigma_b^2$={point[1]:.3g})")
    ax.set_xlabel(r"bias variance $\sigma_b^2$")
    ax.set_ylabel(r"weight variance $\sigma_w^2$ (times 1/fan_in)")
    ax.set_title(f"Mean-field phase diagram: {activation}")
    ax.set_ylim(0, top * 1.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return Path(path)

