"""Declarative checks of the paper's claims, read from one tidy table, apart from drawing.

A check is declared once, as a `Check`: its id, its kind, a statement, how it is measured from the
table, a threshold and a comparison. `passed` is computed here, in one place, as
`OPS[op](measured, threshold)`; a NaN measurement fails. Each table's checks live in one module
(`CHECKS: list[Check]`) named by the experiments' `report.claims`, e.g. symexp.claims.fig1_left.

Kinds: "premise" (ours: the plain arm shows the phenomenon a claim explains, in the regime the claim is
about), "paper" (a claim of the paper), "control" (one of ours: a baseline or a symmetry-breaking control
that should show no effect), "informational" (a hypothesis or a disclosure of ours, which the data may
refute without any claim of the paper failing).

Outcomes: a row passes or fails by its comparison, unless it `rests_on` premise rows of its own module and
one of them failed or could not be measured: then it is "undecided" (its `passed` column reads so) -- an
experiment outside the regime its claim is about neither confirms nor refutes it.
"""
from __future__ import annotations

import difflib
import operator
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from symexp.errors import UserError
from symexp.metrics import names

KINDS = ("premise", "paper", "control", "informational")
UNDECIDED = "undecided"  # the third value of the ledger's `passed`
OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq}
LEDGER_COLUMNS = ["claim", "check", "kind", "table", "statement", "measured", "op", "threshold", "passed",
                  "rests_on"]
KEYS = ["experiment", "job", "member"]  # one trained member


class ClaimError(UserError):
    """A check that cannot be measured from its table (e.g. the metric it reads is not there)."""


@dataclass(frozen=True)
class Check:
    claim: str  # the claim it belongs to, e.g. "C1"
    check: str  # unique within the claim
    kind: str  # one of KINDS
    statement: str  # what is measured, in words (static)
    measure: Callable[[pd.DataFrame], float]  # the table -> the measured number
    threshold: float
    op: str  # passes when `measured <op> threshold`
    # whether the table holds what the check is about (its experiment, sweep cell); when not, the
    # check is left out of the ledger, as for an experiment that was not run. None: always.
    applies: Callable[[pd.DataFrame], bool] | None = None
    # the numbers that make the statement concrete (a predicted threshold, how many members
    # qualified, per-layer values), appended to it in the ledger
    detail: Callable[[pd.DataFrame], str] | None = None
    # ids "claim/check" of the premise rows (same module) this row means something only under
    rests_on: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.claim}/{self.check}"

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ClaimError(f"{self.claim}/{self.check}: kind {self.kind!r} is not allowed; "
                             f"allowed: {', '.join(KINDS)}")
        if self.op not in OPS:
            raise ClaimError(f"{self.claim}/{self.check}: op {self.op!r} is not allowed; allowed: {', '.join(OPS)}")
        if not isinstance(self.rests_on, tuple) or not all(isinstance(r, str) for r in self.rests_on):
            raise ClaimError(f"{self.id}: rests_on {self.rests_on!r}; allowed: a tuple of 'claim/check' ids")
        if self.kind == "premise" and self.rests_on:
            raise ClaimError(f"{self.id}: a premise rests on nothing; rests_on {self.rests_on!r}")

    def passes(self, measured: float) -> bool:
        return bool(OPS[self.op](measured, self.threshold))  # NaN compares False: a failure

    def row(self, table: pd.DataFrame, table_name: str) -> dict | None:
        """This check's ledger row, or None when it does not apply to `table`."""
        try:
            if self.applies is not None and not self.applies(table):
                return None
            measured = float(self.measure(table))
            statement = self.statement + (f" — {self.detail(table)}" if self.detail else "")
        except ClaimError as e:
            raise ClaimError(f"{table_name}: {self.claim}/{self.check}: {e}") from None
        except Exception as e:  # a bug in a measure: say which check hit it
            e.add_note(f"while measuring {self.claim}/{self.check} of table {table_name}")
            raise
        return dict(claim=self.claim, check=self.check, kind=self.kind, table=table_name, statement=statement,
                    measured=measured, op=self.op, threshold=self.threshold, passed=self.passes(measured),
                    rests_on=";".join(self.rests_on))


def validate(checks: list[Check]) -> None:
    """Every `rests_on` names a premise check of the same list (a slip here would decide rows silently)."""
    premises = {c.id for c in checks if c.kind == "premise"}
    for c in checks:
        for r in c.rests_on:
            if r not in premises:
                raise ClaimError(f"{c.id}: rests_on {r!r} is not a premise check of its module; "
                                 f"allowed: {', '.join(sorted(premises)) or 'none declared'}")


def settle(rows: list[dict], checks: list[Check]) -> list[dict]:
    """`rows` with each row whose premise failed, or was not measured, marked undecided (in place)."""
    validate(checks)
    premise = {f"{r['claim']}/{r['check']}": r for r in rows if r["kind"] == "premise"}
    for row in rows:
        why = []
        for pid in filter(None, str(row.get("rests_on") or "").split(";")):
            p = premise.get(pid)
            if p is None:
                why.append(f"premise {pid} was not measured")
            elif p["passed"] is not True:
                why.append(f"premise {pid} failed ({p['measured']:.4g} {p['op']} {p['threshold']:g} does not hold)")
        if why:
            row["passed"] = UNDECIDED
            row["statement"] += " — undecided: " + "; ".join(why)
    return rows


def evaluate(checks: list[Check], table: pd.DataFrame, table_name: str) -> list[dict]:
    """The ledger rows of every check that applies to `table`, settled against their premises; raises
    ClaimError at the first that cannot be measured."""
    rows = [c.row(table, table_name) for c in checks]
    return settle([r for r in rows if r is not None], checks)


def outcome(passed) -> str:
    """"pass", "fail" or "undecided" of a ledger's `passed` value (a bool, or its text in a CSV)."""
    text = str(passed).strip().lower()
    if text == UNDECIDED:
        return UNDECIDED
    if text in ("true", "1", "1.0"):
        return "pass"
    if text in ("false", "0", "0.0"):
        return "fail"
    raise ClaimError(f"ledger: passed {passed!r}; allowed: True, False, {UNDECIDED}")


def exposure(lr: float, weight_decay: float, steps: float, momentum: float = 0.0) -> float:
    """eta_eff * wd * T: how far coupled decay alone shrinks a weight, (1 - eta_eff wd)^T ~ exp(-exposure),
    eta_eff = lr / (1 - momentum). Decay has acted only where this is >> 1 (<~ 0.3: it moved weights by
    under a third)."""
    return float(lr) / (1.0 - float(momentum)) * float(weight_decay) * float(steps)


# ---- reading the tidy table -------------------------------------------------------------------

def select(table: pd.DataFrame, experiment: str, metric: str) -> pd.DataFrame:
    """Rows of `metric` from `experiment`; ClaimError naming both when the table has none."""
    rows = table[(table.experiment == experiment) & (table.metric == metric)]
    if not len(rows):
        known = table[table.experiment == experiment].metric.unique()
        if not len(known):
            raise ClaimError(f"metric {metric!r}: the table has no rows of experiment {experiment!r}")
        close = difflib.get_close_matches(metric, [str(m) for m in known], n=3)
        hint = f"; close: {', '.join(close)}" if close else ""
        raise ClaimError(f"metric {metric!r} is not in the table for experiment {experiment!r}{hint}")
    return rows


def has(experiment: str, **columns) -> Callable[[pd.DataFrame], bool]:
    """`applies` for a check about one experiment (and one cell of its sweep, e.g. breaking="mask")."""
    def applies(table: pd.DataFrame) -> bool:
        rows = table[table.experiment == experiment]
        for col, value in columns.items():
            if col not in rows:
                return False
            rows = rows[rows[col] == value]
        return len(rows) > 0
    return applies


def final(table: pd.DataFrame) -> pd.DataFrame:
    """The rows at each member's last step, without the members that diverged."""
    last = table.groupby(KEYS)["step"].transform("max")
    t = table[table.step == last]
    div = t[t.metric == names.DIVERGED].set_index(KEYS)["value"]
    bad = div[div > 0].index
    return t[~t.set_index(KEYS).index.isin(bad)]


def largest_rise(values, default: float = float("nan")) -> float:
    """Largest increase between consecutive values (<= 0: non-increasing); `default` for fewer than two."""
    steps = np.diff(np.asarray(values, dtype=float))
    return float(steps.max()) if len(steps) else default
