"""C3 (paper.md 2.3, T2): the critical weight decay gamma* = |E[x r]| of a dead tanh unit. After GD a
unit (one unit, or every unit of a 4-unit net) is exactly dead above gamma*, alive below it, and every
unit that ended dead sits above its own threshold |E[x r_-i]| at the final weights."""
from __future__ import annotations

import pandas as pd

from symexp.claims import Check, final, has, select
from symexp.metrics import names

EXPERIMENT = "theory_critical"
NORM, STAR = names.NORM, names.ref("critical", names.GAMMA_STAR)
DEAD = 1e-6  # |(u, w)| below this is a dead unit (paper.md 7, row T2)
ABOVE, BELOW = 1.05, 0.95  # the claim's margins around gamma / gamma* = 1
WIDTHS = (1, 4)  # the sweep's model.width values
WIDTH, WHOLE = "width", "weight"  # WHOLE: the probe of all parameters; unit<i>: one unit's (u_i, w_i)


def _unit(i: int) -> str:
    return f"unit{i}"


def members(table: pd.DataFrame) -> pd.DataFrame:
    """One row per (width, member) at the last step: gamma / gamma*, |theta|, each unit's norm and gamma*_i,
    the fraction of dead units, and max over dead units of gamma*_i / gamma."""
    t = final(table[table.experiment == EXPERIMENT])
    probes = set(select(t, EXPERIMENT, NORM).layer)
    n_units = next(i for i in range(len(probes) + 1) if _unit(i) not in probes)
    unit_stars = [names.ref("critical", names.unit_gamma_star(i)) for i in range(n_units)]
    select(t, EXPERIMENT, STAR)
    keep = t[t.metric.isin([NORM, STAR, *unit_stars])]
    wide = keep.assign(col=keep.layer + ":" + keep.metric).pivot_table(
        index=["job", "member", "seed", "gamma"], columns="col", values="value").reset_index()
    wide["ratio"] = (wide["gamma"] / wide[f"{WHOLE}:{STAR}"]).round(6)
    units = [f"{_unit(i)}:{NORM}" for i in range(n_units)]
    stars = [f"{WHOLE}:{s}" for s in unit_stars]
    wide[WIDTH] = wide[units].notna().sum(axis=1)  # the net's width: one probe per unit
    dead = wide[units].to_numpy() < DEAD
    wide["dead_frac"] = dead.sum(axis=1) / wide[WIDTH]
    wide["dead_star_over_gamma"] = [max([s / g for s, d in zip(row, dmask) if d], default=float("nan"))
                                    for row, dmask, g in zip(wide[stars].to_numpy(), dead, wide.gamma)]
    return wide


def _width(table: pd.DataFrame, width: int) -> pd.DataFrame:
    m = members(table)
    return m[m[WIDTH] == width]


def _side(table: pd.DataFrame, width: int, above: bool) -> pd.Series:
    """Final |theta| of the width-`width` members with gamma >= ABOVE gamma* (above) or <= BELOW gamma*."""
    s = _width(table, width)
    return s[(s.ratio >= ABOVE) if above else (s.ratio <= BELOW)][f"{WHOLE}:{NORM}"]


def _dead(table: pd.DataFrame) -> pd.Series:
    return members(table).dead_star_over_gamma.dropna()


def _checks(width: int) -> list[Check]:
    what = "one tanh unit's ‖(u, w)‖" if width == 1 else f"the {width}-unit net's ‖θ‖ (every unit dead)"
    applies = lambda t: has(EXPERIMENT)(t) and len(_width(t, width)) > 0  # noqa: E731
    star = lambda t: f"γ* = ‖E[x y]‖ = {_width(t, width)[f'{WHOLE}:{STAR}'].iloc[0]:.4g}"  # noqa: E731
    return [
        Check("C3", f"dead_above_w{width}", "paper", f"T2: {what} after GD: max over every member with γ ≥ {ABOVE}·γ*",
              lambda t: _side(t, width, above=True).max(), threshold=DEAD, op="<", applies=applies,
              detail=lambda t: f"{len(_side(t, width, above=True))} members, {star(t)}"),
        Check("C3", f"alive_below_w{width}", "paper",
              f"T2: the transition is sharp: min of {what} over members with γ ≤ {BELOW}·γ*",
              lambda t: _side(t, width, above=False).min(), threshold=DEAD, op=">", applies=applies,
              detail=lambda t: f"{len(_side(t, width, above=False))} members"),
    ]


CHECKS = [c for width in WIDTHS for c in _checks(width)] + [
    Check("C3", "dead_units_stable", "paper",
          "T2: every unit that ended dead (any width, any γ) has γ ≥ its own γ*ᵢ = ‖E[x r₋ᵢ]‖ at the final weights: "
          "max γ*ᵢ/γ (NaN when no unit ended dead)",
          lambda t: _dead(t).max(), threshold=1.0, op="<=", applies=has(EXPERIMENT),
          detail=lambda t: f"{len(_dead(t))} members with a dead unit"),
]
