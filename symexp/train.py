"""The training loop of one job: batched steps, metrics every `eval_every`, divergence.

`train` is a generator: it yields an `Eval` at every evaluation (the metrics of every member) and
at every checkpoint step; the runner (symexp.run) owns the rows, the wandb sink and the checkpoints.
What an evaluation measures is symexp.evaluation's: one module per kind of data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Iterator

import torch

from symexp import optim
from symexp.batcher import Batcher
from symexp.data import TensorData
from symexp.ensemble import Ensemble, State
from symexp.evaluation import Result
from symexp.evaluation.dispatch import evaluate
from symexp.progress import Progress

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
