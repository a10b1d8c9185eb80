"""The training loop of one job: batched steps, metrics every `eval_every`, divergence.

`train` is a generator: it yields an `Eval` at every evaluation (the metrics of every member) and
at every checkpoint step; the runner (symexp.run) owns the rows, the wandb sink and the checkpoints.
What is measured follows from the model's probes, the symmetry's `structure` and `metrics.families`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import torch
from torch.func import vmap

from symexp import collapse_eval, metrics, optim
from symexp.batcher import Batcher
from symexp.data import TensorData
from symexp.data.streams import StreamData
from symexp.ensemble import Ensemble, State
from symexp.metrics import names
from symexp.metrics.constraint import constraint_norm
from symexp.progress import Progress

Result = tuple[str, str, torch.Tensor]  # (layer, metric, values [M])
clock = time.monotonic  # what the checkpoint floor (train.checkpoint_min_s) reads; tests replace it


@dataclass
class Eval:
    """What the loop reports at `step`: metric results (empty at a checkpoint-only step) and the state."""

    step: int
    state: State
    batcher: Batcher
    results: list[Result] = field(default_factory=list)
    checkpoint: bool = False  # the runner should save a checkpoint now
    measure_s: float = 0.0  # seconds this evaluation took (metrics, losses, convergence check)


def measure(theta: torch.Tensor, families: tuple[str, ...], mcfg: dict) -> dict[str, torch.Tensor]:
    """Structure metrics of one probed tensor `[M, ...]` -> {metric name: [M]}."""
    out = {}
    matrix = theta.dim() >= 3  # a matrix per member: rank families apply
    if "sparsity" in families:
        for tau in mcfg["sparsity_tau"]:
            out[names.frac_zero(tau)] = metrics.frac_zero(theta, tau)
        out[names.L1_L2] = metrics.l1_l2_ratio(theta)
    # one SVD per tensor for every rank measure and the spectrum
    sv = metrics.singular_values(theta) if matrix and {"rank", "spectrum"} & set(families) else None
    if "rank" in families and matrix:
        # relative ranks always; with rank_atol > 0 also the floored ones (singular values <= atol
        # count as zero) under names that say so, so a table never hides which one a number is
        atol = mcfg.get("rank_atol", 0.0)
        for a in (0.0, atol) if atol > 0 else (0.0,):
            out[names.tau_rank(mcfg["rank_tau"], a)] = metrics.tau_rank(theta, mcfg["rank_tau"], a, sv=sv)
            out[names.erank(a)] = metrics.erank(theta, a, sv=sv)
            out[names.stable_rank(a)] = metrics.stable_rank(theta, a, sv=sv)
            out[names.energy_rank(mcfg["energy"], a)] = metrics.energy_rank(theta, mcfg["energy"], a, sv=sv)
    if "units" in families and matrix:  # theta: per-unit vectors [M, h, p] from a model's probe_views (anchors A1)
        out[names.INDEPENDENT_UNITS] = metrics.independent_units(theta, mcfg["unit_tol"], mcfg["dead_tau"])
        out[names.DEAD_FRAC] = metrics.dead_fraction(theta, mcfg["dead_tau"])
    if "norm" in families:  # Euclidean (Frobenius) norm of the whole tensor: exact zeros stay 0
        out[names.NORM] = torch.linalg.vector_norm(theta.reshape(theta.shape[0], -1), dim=1)
    if "spectrum" in families and matrix:  # every singular value, largest first
        for i, sigma in enumerate(sv.unbind(1)):
            out[names.singular_value(i)] = sigma
    if mcfg["constraint"]["k"]:  # a target O^T theta = 0 is set: measured on every probe
        out[names.CONSTRAINT] = constraint_norm(theta, **mcfg["constraint"])
    return out


def probe_plan(ens: Ensemble, mcfg: dict) -> dict[str, tuple[str, ...]]:
    """{probed tensor: metric families}: the model's own probes, the symmetry's structure on every
    effective weight, and `metrics.families` on all of them."""
    plan = {layer: list(fams) for layer, fams in ens.model.probes.items()}
    for name in ens.groups:
        plan.setdefault(name, []).extend(getattr(ens.symmetry, "structure", ()))
    for fams in plan.values():
        fams.extend(mcfg["families"])
    return {layer: tuple(dict.fromkeys(fams)) for layer, fams in plan.items() if fams}


def evaluate(ens: Ensemble, state: State, data: TensorData, mcfg: dict, final: bool = False,
             batcher: Batcher | None = None) -> list[Result]:
    """Every metric of every member at `state.step`. A stream has no fixed training set: it is
    measured on its probe and test views (symexp.collapse_eval), which the batcher's stream gives."""
    theta = ens.effective(state.raw, ens.fixed)
    if isinstance(data, StreamData):
        out = collapse_eval.stream_results(ens, state, data, batcher, mcfg) + [("", names.ALIVE, state.alive)]
    else:
        out = data_set_results(ens, state, data, mcfg, final) + collapse_eval.extra_results(ens, state, data)
    # a model may measure derived tensors (e.g. per-head W_Q^T W_K) beside its raw effective weights
    views = {**theta, **(ens.model.probe_views(theta) if hasattr(ens.model, "probe_views") else {})}
    for layer, families in probe_plan(ens, mcfg).items():
        out.extend((layer, name, v) for name, v in measure(views[layer].detach(), families, mcfg).items())
    return out


def data_set_results(ens: Ensemble, state: State, data: TensorData, mcfg: dict, final: bool) -> list[Result]:
    """Losses on the training set (or its evaluation sample) and the test set; classification: the
    test accuracy and the penultimate features' homogeneity, from the same pass over the test set."""
    n = mcfg["train_subset"] or data.n  # loss/train on the first n examples (large image sets)
    x_fit, y_fit = (data.x[:n], data.y[:n]) if data.x_eval is None else (data.x_eval, data.y_eval)  # text: a sample
    out = [("", names.LOSS_TRAIN, ens.full_loss(state.raw, x_fit, y_fit, state.buffers))]
    classified = data.task == "classification" and data.x_test is not None
    if classified:
        logits, feats = ens.outputs(state.raw, data.x_test, state.buffers)
        out.append(("", names.LOSS_TEST, vmap(ens.loss, in_dims=(0, None))(logits, data.y_test)))
    elif data.x_test is not None:
        out.append(("", names.LOSS_TEST, ens.full_loss(state.raw, data.x_test, data.y_test, state.buffers)))
    out.append(("", names.ALIVE, state.alive))
    if classified:
        out.extend(feature_results(logits, feats, data.y_test, mcfg, final))
    return out


def feature_results(logits: torch.Tensor, feats: torch.Tensor, y: torch.Tensor, mcfg: dict,
                    final: bool) -> list[Result]:
    """Test accuracy and the penultimate features' homogeneity over the test set; at the final step,
    with metrics.corr_matrix, also every entry i < j of their correlation matrix (for the heatmaps)."""
    near = mcfg["near_corr"]
    out = [("", names.ACC_TEST, (logits.argmax(-1) == y).double().mean(1)),
           ("penultimate", names.near_identical(near), metrics.near_identical_pairs(feats, near))]
    if final and mcfg["corr_matrix"]:
        corr = metrics.feature_correlation(feats)
        i, j = torch.triu_indices(corr.shape[1], corr.shape[1], 1)
        out.extend(("penultimate", names.corr(a, b), v)
                   for a, b, v in zip(i.tolist(), j.tolist(), corr[:, i, j].unbind(1)))
    return out


def converged(prev: dict, theta: dict, alive: torch.Tensor, tol: float) -> bool:
    """True when every live member moved less than tol * max|theta| over the last eval window."""
    if not prev or tol <= 0:  # no evaluation before this one
        return False
    for k, v in theta.items():
        scale = v.flatten(1).abs().amax(1).clamp_min(1e-30)
        moved = (v - prev[k]).flatten(1).abs().amax(1) / scale
        if bool(((moved >= tol) & alive).any()):
            return False
    return True


def train(ens: Ensemble, data: TensorData, cfg: dict, rule: optim.Rule, resume: dict | None = None,
          progress: bool = True) -> Iterator[Eval]:
    """Run `cfg["train"]["steps"]` batched steps (or until converged), yielding an Eval at every
    evaluation and checkpoint step; the last one yielded holds the final state. `resume` is a
    checkpoint ({"state", "batcher"}) to continue from."""
    tcfg, ocfg, mcfg = cfg["train"], cfg["optim"], cfg["metrics"]
    decayed = frozenset(k for k in ens.raw0 if not any(s in k for s in cfg["reg"]["exclude"]))
    batcher = Batcher(data, ocfg["batch_size"], ens.members, ens.hyper["label_noise"])
    state = ens.init_state(rule)
    if resume is not None:
        state = resume["state"]
        batcher.load_state_dict(resume["batcher"])
    step_fn = ens.make_step(rule, decayed, batcher.per_member_x, batcher.per_member_y,
                            tcfg["max_loss"], cfg["compile"], state.buffers, cpp_wrapper=cfg["cpp_wrapper"])
    floor = CheckpointFloor(tcfg["checkpoint_every"], tcfg["checkpoint_min_s"])
    if state.step == 0:
        tic = time.perf_counter()
        results = evaluate(ens, state, data, mcfg, batcher=batcher)
        yield Eval(0, state, batcher, results, measure_s=time.perf_counter() - tic)
    bar = Progress(tcfg["steps"], state.step, cfg["name"], enabled=progress)
    while state.step < tcfg["steps"]:
        x, y = batcher.next()
        lr = ens.hyper["lr"] * optim.schedule_factor(ocfg["schedule"], state.step, tcfg["steps"])
        state.raw, state.opt, state.alive, loss = step_fn(state.raw, state.opt, state.alive, x, y, lr)
        batcher.record(loss)  # the online loss of the eval window (streams)
        state.step += 1
        bar.step()
        last = state.step == tcfg["steps"]
        save = not last and floor.due(state.step)
        if state.step % tcfg["eval_every"] == 0 or last:
            tic = time.perf_counter()
            results = evaluate(ens, state, data, mcfg, final=last, batcher=batcher)
            theta = {k: v.detach().clone() for k, v in ens.effective(state.raw, ens.fixed).items()}
            done = converged(state.last_eval, theta, state.alive, tcfg["converge_tol"])
            state.last_eval = theta
            bar.eval(state.step, _live_mean(results[0][2], state.alive), int(state.alive.sum()), ens.size)
            yield Eval(state.step, state, batcher, results, checkpoint=save and not done,
                       measure_s=time.perf_counter() - tic)
            if done:
                break
        elif save:
            yield Eval(state.step, state, batcher, checkpoint=True)
        if save:  # the runner has written it by now
            floor.written()
    bar.close()


class CheckpointFloor:
    """Which steps checkpoint: every `every` steps (0 = never), but never sooner than `min_s` seconds
    after the previous checkpoint (or the start of training): a short job then writes none, and a
    killed one loses at most min_s seconds plus one cadence window. Which steps checkpoint does not
    change any number: a resumed job continues from whichever one was written last."""

    def __init__(self, every: int, min_s: float):
        self.every, self.min_s, self.since = every, min_s, clock()

    def due(self, step: int) -> bool:
        return bool(self.every) and step % self.every == 0 and clock() - self.since >= self.min_s

    def written(self) -> None:
        self.since = clock()


def _live_mean(values: torch.Tensor, alive: torch.Tensor) -> float:
    live = values[alive]
    return live.mean().item() if len(live) else float("nan")
