"""Figures, one module per tidy table: `draw(table, out_dir) -> list[Path]`, saved under the table's name
(results/figures/<table>.png|pdf). A module only draws: what a figure's claims measure, and the
thresholds it marks, come from the table's claims module (symexp.claims.<table>). Which module draws
which table is said by the experiments' `report.plot` (symexp.experiments)."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402


def band(ax, rows, x: str, **style) -> None:
    """Mean +- sd over seeds of `value` against `x`."""
    g = rows.groupby(x)["value"].agg(["mean", "std"]).fillna(0.0)
    line, = ax.plot(g.index, g["mean"], marker="o", ms=3, **style)
    ax.fill_between(g.index, g["mean"] - g["std"], g["mean"] + g["std"], color=line.get_color(), alpha=0.2, lw=0)


def save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths
