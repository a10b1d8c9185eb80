"""One module per figure; each reads ONE tidy table and exposes `draw(table, out_dir)` and
`claims(table)` (rows of the claim ledger). A new figure joins `symexp plot/claims` with one line here."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

KEYS = ["experiment", "job", "member"]


def final(table: pd.DataFrame) -> pd.DataFrame:
    """The rows at each member's last step, without the members that diverged."""
    last = table.groupby(KEYS)["step"].transform("max")
    t = table[table.step == last]
    div = t[t.metric == "status/diverged"].set_index(KEYS)["value"]
    bad = div[div > 0].index
    return t[~t.set_index(KEYS).index.isin(bad)]


def band(ax, rows: pd.DataFrame, x: str, **style) -> None:
    """Mean +- sd over seeds of `value` against `x`."""
    g = rows.groupby(x)["value"].agg(["mean", "std"]).fillna(0.0)
    line, = ax.plot(g.index, g["mean"], marker="o", ms=3, **style)
    ax.fill_between(g.index, g["mean"] - g["std"], g["mean"] + g["std"], color=line.get_color(), alpha=0.2, lw=0)


def largest_rise(values, default: float = float("nan")) -> float:
    """Largest increase between consecutive values (<= 0: non-increasing); `default` for fewer than two."""
    steps = np.diff(np.asarray(values, dtype=float))
    return float(steps.max()) if len(steps) else default


def save(fig, out_dir: Path, name: str) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.pdf"]
    for p in paths:
        fig.savefig(p, dpi=150)
    plt.close(fig)
    return paths


from symexp.plots import dcs, fig1_left, fig1_middle, fig1_right  # noqa: E402
from symexp.plots import theory_critical, theory_invariance, theory_noise  # noqa: E402
from symexp.plots import transformer  # noqa: E402

FIGURES = {"fig1_left": fig1_left, "dcs": dcs, "fig1_middle": fig1_middle, "fig1_right": fig1_right,
           "theory_invariance": theory_invariance, "theory_critical": theory_critical, "theory_noise": theory_noise,
           "transformer": transformer}
