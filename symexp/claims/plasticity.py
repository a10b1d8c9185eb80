"""LP / RL (paper.md 6, loss of plasticity): weight decay pushes a network onto mirror planes (units on the
zero plane {incoming = bias = outgoing = 0}) that gradient updates cannot leave (Theorem 1), so capacity lost
does not come back; removing the symmetry (syre: decay towards a fixed random centre; L2-Init: towards the
initial weights) is the remedy. Measured on slowly-changing regression (LP, Dohare et al.'s protocol at their
length, with their linear learner as a reference line) and on random-label memorisation (RL, after Kumar et
al.'s L2-Init benchmark; the scale is ours, calibrated on plain SGD's premise alone:
results/protocols/plasticity.md).

Arms are cells of the sweep: plain = breaking none at wd 0; L2 = breaking none at wd > 0; syre and L2-Init =
those breaking controls at wd > 0, on one wd grid whose exposure eta_eff * wd * T runs from <= 0.3 (decay has
not acted) to >= 10 (claims.exposure; printed beside every arm).

Rows re-derived from the theory, written down before the full runs (their thresholds too, disclosed as such):
  * premise (LP0, RL0): plain SGD loses plasticity (SCR: late / early online error >= RISE; RL: end-of-task
    training accuracy falls by >= ACC_DROP). Rows about plasticity rest on it; rows about the mechanism on the
    weights (Theorem 1) do not: a unit decays onto the plane whether or not the task shows plasticity loss.
  * decay puts units on the zero plane at a rate set by eta * wd (LP2/RL2): none at exposure <= 0.3 (L2 at the
    smallest wd: seed-mean zero-plane count 0), some at >= 10 (L2 at the largest wd: > 0);
  * a unit on the zero plane stays there (LP3/RL3): under SGD with coupled decay a unit exactly on the plane
    gets zero gradient and decays towards 0, so the units that leave it (within ZERO_TAU of the layer's init
    unit norm at one evaluation, beyond it at the next), summed over members, layers and evaluations of every
    decay arm, are 0. Exactly on the plane this is exact (tests/test_plasticity_measures.py); within tau it
    holds where decay beats the pull of the loss (paper.md: gamma > gamma*);
  * symmetry-removed arms have no plane through their decay's centre (LP4/RL4): syre's and L2-Init's
    seed-mean zero-plane count stays <= NO_PLANE at every exposure;
  * removing the symmetry keeps plasticity where it matters (LP5/RL5, paper, resting on the premise): syre at
    the largest wd keeps its early error / accuracy, and does no worse than L2 at the same wd;
  * where units reach planes, plasticity falls with their number (LP6/RL6, informational: with L2 the count
    and the loss of plasticity can move apart, the theory says nothing of units that are silent but off the
    plane): Spearman rho over the L2 arm's members and evaluations at the largest wd.
Retired: "plain's mirror count grows" (LP2 before): at wd 0 nothing pulls a unit onto the plane (a silent ReLU
unit gets neither gradient nor decay), so the theory does not predict it; plain's zero-plane count is printed
beside the premise instead. Which unit measure tracks plain's error on SCR (LP7) is informational: the per-example
zero fraction (LoP's), units silent on the current pattern, units dead on every probe input, and each unit's
norm over its init norm (the continuous distance to the zero plane), each as a Spearman rho over members and
windows.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from symexp.claims import Check, ClaimError, exposure, has
from symexp.evaluation.stream import ZERO_PLANE_TAUS
from symexp.metrics import names

SCR, LINEAR, RL = "plasticity_scr", "plasticity_scr_linear", "plasticity_random_labels"
ZERO_TAU = ZERO_PLANE_TAUS[0]
ZERO_PLANE, LEFT_PLANE = names.zero_plane(ZERO_TAU), names.left_zero_plane(ZERO_TAU)
# SCR windows as fractions of the run: early = windows ending in (10 %, 50 %] (after the first descent),
# late = windows ending in (80 %, 100 %]
EARLY, LATE = (0.1, 0.5), (0.8, 1.0)
RISE, KEEP = 1.10, 1.05  # plain's late/early error must reach RISE (premise); syre's must stay within KEEP
ACC_DROP, ACC_KEEP = 0.2, 0.05  # RL: plain's end-of-task accuracy must fall by 0.2 (premise); syre's by < 0.05
NO_PLANE = 0.2  # seed-mean zero-plane units (all hidden layers) a symmetry-removed arm may show
TRACKS = 0.5  # |Spearman rho| of a measure that "tracks" the error
FIXED = " [threshold fixed before the first full run]"
ARM_BREAKING = {"L2": "none", "syre": "syre", "L2-Init": "l2_init"}
# the quick sweeps' decays; a row about a regime (exposure <= 0.3 or >= 10) is left out where its arm is not in it
SCR_WDS, RL_WDS = (3e-5, 3e-4, 1e-3), (1e-4, 1e-3, 1e-2)
PREMISE = {SCR: "LP0/scr_error_rise", RL: "RL0/accuracy_drop"}


def cell(table: pd.DataFrame, experiment: str, breaking: str, wd: float) -> pd.DataFrame:
    """The rows of one arm (breaking x weight decay) at the sweep's largest lr (SCALE=paper also runs smaller
    ones), without members that diverged."""
    t = table[table.experiment == experiment]
    t = t[(t.breaking == breaking) & (t.weight_decay == wd) & (t.lr == t.lr.max())]
    if not len(t):
        raise ClaimError(f"no rows of experiment {experiment!r} with breaking={breaking}, weight_decay={wd:g}")
    div = t[t.metric == names.DIVERGED]
    bad = set(div[div.value > 0].member)
    return t[~t.member.isin(bad)]


def per_member(t: pd.DataFrame, metric: str, layer: str | None = "") -> pd.DataFrame:
    """step x member values of `metric` (summed over hidden layers when layer is None)."""
    rows = t[t.metric == metric] if layer is None else t[(t.metric == metric) & (t.layer == layer)]
    if not len(rows):
        raise ClaimError(f"metric {metric!r} is not in the table (layer {layer!r})")
    return rows.pivot_table(index="step", columns="member", values="value", aggfunc="sum")


def windows(curve: pd.Series, span: tuple[float, float]) -> pd.Series:
    last = curve.index.max()
    return curve[(curve.index > span[0] * last) & (curve.index <= span[1] * last)]


def arm_exposure(table: pd.DataFrame, experiment: str, wd: float) -> float:
    """eta * wd * T of an arm: the experiment's largest lr (plain SGD, no momentum) and its last step."""
    t = table[table.experiment == experiment]
    return exposure(float(t.lr.max()), wd, float(t.step.max()))


def online_error(table: pd.DataFrame, experiment: str, breaking: str, wd: float) -> pd.Series:
    """The seed-mean online error of one arm, per window (indexed by step)."""
    return per_member(cell(table, experiment, breaking, wd), names.LOSS_ONLINE).mean(axis=1)


def error_ratio(table: pd.DataFrame, breaking: str, wd: float) -> float:
    """SCR: late over early mean online error of the seed-mean curve (window ends as fractions of the run)."""
    curve = online_error(table, SCR, breaking, wd)
    return float(windows(curve, LATE).mean() / windows(curve, EARLY).mean())


def late_error(table: pd.DataFrame, experiment: str, breaking: str, wd: float) -> float:
    return float(windows(online_error(table, experiment, breaking, wd), LATE).mean())


def task_accuracy(table: pd.DataFrame, breaking: str, wd: float) -> pd.Series:
    """RL: seed-mean training accuracy at the end of each task (1-based)."""
    acc = per_member(cell(table, RL, breaking, wd), names.ACC_TRAIN).mean(axis=1)
    acc = acc[acc.index > 0]
    return pd.Series(acc.to_numpy(), index=np.arange(1, len(acc) + 1))


def accuracy_change(table: pd.DataFrame, breaking: str, wd: float) -> float:
    """RL: mean end-of-task accuracy of the last five tasks minus the best of tasks 2-5."""
    acc = task_accuracy(table, breaking, wd)
    return float(acc.iloc[-5:].mean() - acc.loc[2:5].max())


def plane_units(table: pd.DataFrame, experiment: str, breaking: str, wd: float, how: str = "last") -> float:
    """Seed-mean zero-plane units summed over hidden layers: at the last evaluation, or the largest over the run."""
    curve = per_member(cell(table, experiment, breaking, wd), ZERO_PLANE, layer=None).mean(axis=1)
    return float(curve.iloc[-1] if how == "last" else curve.max())


def units_left_plane(table: pd.DataFrame, experiment: str) -> float:
    """Units that left the zero plane between evaluations, summed over every decay arm's members, layers, steps."""
    t = table[(table.experiment == experiment) & (table.weight_decay > 0) & (table.metric == LEFT_PLANE)]
    if not len(t):
        raise ClaimError(f"metric {LEFT_PLANE!r} is not in the table for experiment {experiment!r}")
    return float(t.value.sum())


def spearman(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Spearman rho of two step x member tables over every (member, step) both hold; NaN when either is constant."""
    both = pd.concat([a.stack(), b.stack()], axis=1, join="inner").dropna()
    if len(both) < 3 or both.nunique().min() < 2:
        return float("nan")
    return float(both.iloc[:, 0].corr(both.iloc[:, 1], method="spearman"))


def error_tracking(table: pd.DataFrame, metric: str, layer: str | None) -> float:
    """SCR plain: Spearman rho of (window online error, a unit measure at the window's end) over members and windows."""
    t = cell(table, SCR, "none", 0.0)
    return spearman(per_member(t, names.LOSS_ONLINE), per_member(t, metric, layer))


def plane_vs_plasticity(table: pd.DataFrame, experiment: str, wd: float) -> float:
    """L2 at wd: Spearman rho of zero-plane units and the plasticity signal (SCR: window error; RL: minus the
    end-of-task accuracy), over members and evaluations after step 0."""
    t = cell(table, experiment, "none", wd)
    signal = per_member(t, names.LOSS_ONLINE) if experiment == SCR else -per_member(t, names.ACC_TRAIN)
    return spearman(per_member(t, ZERO_PLANE, layer=None).loc[lambda d: d.index > 0], signal)


def describe(table: pd.DataFrame, experiment: str, breaking: str, wd: float) -> str:
    """eta*wd*T and, at the end (seed means, all hidden layers): dead, silent, zero-plane units."""
    t = cell(table, experiment, breaking, wd)
    last = lambda metric: per_member(t, metric, layer=None).mean(axis=1).iloc[-1]  # noqa: E731
    silent = f", silent on the task {last(names.SILENT_TASK):.2f}" if (t.metric == names.SILENT_TASK).any() else ""
    return (f"eta*wd*T = {arm_exposure(table, experiment, wd):.3g}; at the end (seed means, all hidden layers): "
            f"dead units {last(names.DEAD_UNITS):.2f}{silent}, zero-plane {last(ZERO_PLANE):.2f} "
            f"(within {ZERO_PLANE_TAUS[1]:g} of init: {last(names.zero_plane(ZERO_PLANE_TAUS[1])):.2f})")


def _plasticity(experiment: str, breaking: str, wd: float) -> tuple:
    """(measure, op, threshold, words) of "this arm keeps plasticity"."""
    if experiment == SCR:
        return (lambda t: error_ratio(t, breaking, wd)), "<=", KEEP, "late / early online error"
    return (lambda t: accuracy_change(t, breaking, wd)), ">=", -ACC_KEEP, "last-5 minus best of tasks 2-5 accuracy"


def _experiment_checks(experiment: str, claim: str, tag: str, wds: tuple[float, ...]) -> list[Check]:
    low, high = wds[0], wds[-1]
    premise = (PREMISE[experiment],)
    arm = lambda brk, wd: has(experiment, breaking=brk, weight_decay=wd)  # noqa: E731

    def regime(wd: float, lo: float, hi: float):  # the L2 arm at wd, where its eta*wd*T is what the row is about
        return lambda t: arm("none", wd)(t) and lo * (1 - 1e-9) <= arm_exposure(t, experiment, wd) <= hi * (1 + 1e-9)
    detail = lambda brk, wd: (lambda t: describe(t, experiment, brk, wd))  # noqa: E731
    checks = [
        Check(f"{claim}2", f"{tag}/L2@{low:g}/no_plane", "paper", f"{tag}, L2 at wd {low:g} (exposure <= 0.3): "
              "seed-mean zero-plane units at the end (decay has not acted: none)" + FIXED,
              lambda t: plane_units(t, experiment, "none", low), 0.0, "<=", regime(low, 0, 0.3), detail("none", low)),
        Check(f"{claim}2", f"{tag}/L2@{high:g}/plane", "paper", f"{tag}, L2 at wd {high:g} (exposure >= 10): seed-mean "
              "zero-plane units at the end (decay to 0 puts units on the plane)" + FIXED,
              lambda t: plane_units(t, experiment, "none", high), 0.0, ">", regime(high, 10, float("inf")),
              detail("none", high)),
        Check(f"{claim}3", f"{tag}/stays_on_plane", "paper", f"{tag}, every decay arm: units that left the zero plane "
              "between evaluations, summed over members, layers and evaluations (Theorem 1: none)" + FIXED,
              lambda t: units_left_plane(t, experiment), 0.0, "<=", has(experiment)),
    ]
    for name in ("syre", "L2-Init"):
        brk = ARM_BREAKING[name]
        checks.append(Check(f"{claim}4", f"{tag}/{name}@{high:g}/no_plane", "paper", f"{tag}, {name} at wd {high:g}: "
                            "largest seed-mean zero-plane count over the run (no plane through its decay's centre)"
                            + FIXED, lambda t, b=brk: plane_units(t, experiment, b, high, how="max"), NO_PLANE, "<=",
                            arm(brk, high), detail(brk, high)))
    measure, op, thr, what = _plasticity(experiment, "syre", high)
    l2, _, _, _ = _plasticity(experiment, "none", high)
    better = (lambda t: l2(t) - measure(t)) if experiment == SCR else (lambda t: measure(t) - l2(t))
    checks += [
        Check(f"{claim}5", f"{tag}/syre@{high:g}/keeps", "paper", f"{tag}, syre at wd {high:g}: {what} (removing the "
              "symmetry keeps plasticity)" + FIXED, measure, thr, op, arm("syre", high), detail("syre", high), premise),
        Check(f"{claim}5", f"{tag}/syre_vs_L2@{high:g}", "paper", f"{tag}, wd {high:g}: syre's {what} against L2's, "
              "signed so that > 0 is syre keeping more plasticity (at >= 0 it does no worse)" + FIXED, better, 0.0,
              ">=", arm("syre", high), detail("none", high), premise),
        Check(f"{claim}6", f"{tag}/L2@{high:g}/plane_vs_loss", "informational", f"{tag}, L2 at wd {high:g}: "
              "Spearman rho of zero-plane units and lost plasticity over members and evaluations (our reading of "
              "'plasticity falls with their number'; NaN when the count never changes)" + FIXED,
              lambda t: plane_vs_plasticity(t, experiment, high), TRACKS, ">=", arm("none", high), None, premise),
    ]
    return checks


def _checks() -> list[Check]:
    plain_scr, plain_rl = has(SCR, breaking="none", weight_decay=0.0), has(RL, breaking="none", weight_decay=0.0)
    checks = [
        Check("LP0", "scr_error_rise", "premise", "SCR, plain backprop: late / early online error (Dohare et al.'s "
              "loss of plasticity)" + FIXED, lambda t: error_ratio(t, "none", 0.0), RISE, ">=", plain_scr,
              lambda t: describe(t, SCR, "none", 0.0)),
        Check("LP1", "scr/plain_vs_linear", "informational", "SCR: plain backprop's late online error over the linear "
              "learner's on the same streams (>= 1: the network has lost its advantage over a linear map)" + FIXED,
              lambda t: late_error(t, SCR, "none", 0.0) / late_error(t, LINEAR, "none", 0.0), 1.0, ">=",
              lambda t: plain_scr(t) and has(LINEAR)(t), lambda t: f"linear learner's late error "
              f"{late_error(t, LINEAR, 'none', 0.0):.3f}, plain's {late_error(t, SCR, 'none', 0.0):.3f}",
              (PREMISE[SCR],)),
        Check("RL0", "accuracy_drop", "premise", "RL, plain backprop: best end-of-task training accuracy of tasks 2-5 "
              "minus the mean of the last 5 tasks (loss of plasticity)" + FIXED,
              lambda t: -accuracy_change(t, "none", 0.0), ACC_DROP, ">=", plain_rl,
              lambda t: describe(t, RL, "none", 0.0)),
    ]
    for metric, layer, op, thr, what in (
            (names.ZERO_FRACTION, "hidden1", ">=", TRACKS, "LoP's per-example zero fraction"),
            (names.SILENT_TASK, "hidden1", ">=", TRACKS, "units silent on the window's pattern (its 32 inputs)"),
            (names.DEAD_UNITS, "hidden1", ">=", TRACKS, "units dead on every probe input"),
            (names.NORM_RATIO_MIN, "hidden1", "<=", -TRACKS, "smallest unit norm over its init norm (distance to "
             "the zero plane)"),
            (names.WEIGHT_MAGNITUDE, "layers.0.weight", ">=", TRACKS, "mean |W| of the hidden layer")):
        checks.append(Check("LP7", f"scr/tracks/{metric.split('/')[-1]}", "informational", f"SCR, plain backprop: "
                            f"Spearman rho of window error and {what}, over members and windows (NaN: constant)"
                            + FIXED,
                            lambda t, m=metric, lay=layer: error_tracking(t, m, lay), thr, op, plain_scr,
                            rests_on=(PREMISE[SCR],)))
    return checks + _experiment_checks(SCR, "LP", "scr", SCR_WDS) + _experiment_checks(RL, "RL", "rl", RL_WDS)


CHECKS = _checks()
