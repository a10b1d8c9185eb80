"""The batched ensemble: M members of one architecture x symmetry trained as ONE program.

Members are the Cartesian product seeds x weight_decays x lrs x label_noises. Their raw parameters
are stacked on a leading `[M]` axis; one member's loss is written once and vmapped
(`torch.func.vmap(grad_and_value(...))`), and the update takes `[M]` hyperparameter tensors. A
member's init, offsets, batch order and label noise depend only on its own seed, so member m of a
batched run equals a standalone run of m (tests/test_ensemble.py).
"""
from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass, field

import torch
# imported here rather than on first use by make_fx or torch.func's jvp (~1 s), so that its second is
# not charged to whichever of a job's first step or first evaluation (a Hessian probe) comes first
import torch._dynamo  # noqa: F401
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad_and_value, vmap
from torch.fx.experimental.proxy_tensor import make_fx

from symexp import optim
from symexp.models import init_member
from symexp.symmetry import breaking

Tensors = dict[str, torch.Tensor]
MEMBER_KEYS = ("seed", "weight_decay", "lr", "label_noise")
# Offsets, batch order and label noise draw from generators seeded apart from the init seed.
OFFSET_STREAM, ORDER_STREAM, NOISE_STREAM = 1_000_003, 2_000_003, 3_000_017
AUGMENT_STREAM = 4_000_037
# samples per vmapped eval forward: memory grows with M x chunk, not M x data set. Small enough that
# CPU activations stay under glibc's mmap threshold: at 1024, mmap/munmap churn cost 3x the compute
# of a narrow ResNet's evaluation in system time (measured, fig1_right_resnet)
EVAL_CHUNK = 256
# full_loss takes a whole data set of float vectors in one call up to this many elements over all
# members (M x N x d; 16 MB of float32): 1000 x 100 regression samples for 27 members
EVAL_ELEMENTS = 2 ** 22


@contextlib.contextmanager
def evaluating(model: nn.Module):
    """Eval mode (BatchNorm uses its running statistics) for the duration, then back to train mode."""
    model.eval()
    try:
        yield
    finally:
        model.train()


def member_table(ens: dict) -> list[dict]:
    """One dict per member: the product of the ensemble lists, in a fixed order."""
    grid = itertools.product(ens["seeds"], ens["weight_decays"], ens["lrs"], ens["label_noises"])
    return [dict(member=m, **dict(zip(MEMBER_KEYS, vals)), gamma=vals[1] / 2) for m, vals in enumerate(grid)]


def one_hot_squared_error(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|logits - e_y|^2 summed over classes, averaged over samples: classification by the squared loss
    (Han, Papyan & Donoho, ICLR 2022, for neural collapse); the one-hot built by comparison, as vmap allows."""
    target = (y[..., None] == torch.arange(logits.shape[-1], device=logits.device)).to(logits.dtype)
    return (logits - target).pow(2).sum(-1).mean()


def task_loss(task: str, classification: str = "cross_entropy"):
    """The data loss of a task; `classification` (a model's choice) picks cross_entropy or mse."""
    if task == "regression":
        return lambda pred, y: (pred - y).pow(2).mean()
    if task == "classification":
        return one_hot_squared_error if classification == "mse" else F.cross_entropy
    if task == "objective":  # the model returns its own loss (a linear VAE's negative ELBO); no targets
        return lambda loss, y: loss
    if task == "language":  # next-token logits [B, T, V] against token ids [B, T]: mean over all B * T
        return lambda logits, y: F.cross_entropy(logits.flatten(0, -2), y.flatten())
    raise ValueError(f"unknown task {task!r}")


@dataclass
class State:
    """Everything that evolves during training (saved in checkpoints)."""

    raw: Tensors  # trained factors, [M, ...]
    opt: Tensors  # optimiser buffers, [M, ...]
    alive: torch.Tensor  # [M] bool; False once a member diverged (it is then frozen)
    step: int = 0
    buffers: Tensors = field(default_factory=dict)  # per-member module buffers (BatchNorm statistics), [M, ...]
    # effective weights at the last evaluation: what the convergence check compares against, so a job
    # resumed from a checkpoint stops at the step an uninterrupted one would
    last_eval: Tensors = field(default_factory=dict)


class Ensemble:
    """Stacked members of `model` under a symmetry (and optional breaking control)."""

    def __init__(self, model: nn.Module, symmetry, breaker, members: list[dict],
                 task: str, device: torch.device, dtype: torch.dtype):
        """`symmetry` and `breaker` are components (symexp.symmetry, symexp.symmetry.breaking)."""
        self.model = model.to(device, dtype)
        self.symmetry = symmetry
        self.members = members
        self.loss = task_loss(task, getattr(model, "classification_loss", "cross_entropy"))
        self.device, self.dtype = device, dtype
        self.hyper = {k: torch.tensor([m[k] for m in members], device=device, dtype=dtype)
                      for k in ("weight_decay", "lr", "label_noise")}
        raws, fixeds, bases = [], [], {}
        for m in members:
            seed = m["seed"]
            if seed not in bases:  # members that share a seed share their init
                bases[seed] = init_member(self.model, seed)
            gen = torch.Generator().manual_seed(seed + OFFSET_STREAM)
            raw = {f"{name}.{sfx}": t for name, base in bases[seed].items()
                   for sfx, t in self.symmetry.factor(base, gen).items()}
            fixeds.append(breaker.offsets(raw, gen))
            raws.append(breaker.start(raw) if hasattr(breaker, "start") else raw)
        self.raw0 = {k: torch.stack([r[k] for r in raws]) for k in raws[0]}
        self.fixed = {k: torch.stack([f[k] for f in fixeds]) for k in fixeds[0]}
        # module buffers (BatchNorm running statistics) stacked per member; BatchNorm updates them in
        # place under vmap, as it does its own buffers (equality with a standalone run: tests/test_resnet.py)
        self.buffers0 = {k: torch.stack([b.detach()] * self.size) for k, b in self.model.named_buffers()}
        self.groups: dict[str, list[str]] = {}
        for key in self.raw0:
            name, sfx = key.rsplit(".", 1)
            self.groups.setdefault(name, []).append(sfx)

    @property
    def size(self) -> int:
        return len(self.members)

    def effective(self, raw: Tensors, fixed: Tensors) -> Tensors:
        """The weights the model uses, from raw factors (+ fixed offsets); works with or without [M]."""
        raw = breaking.shifted(raw, fixed)
        return {name: self.symmetry.compose({s: raw[f"{name}.{s}"] for s in sfxs})
                for name, sfxs in self.groups.items()}

    def member_loss(self, raw: Tensors, fixed: Tensors, x: torch.Tensor, y: torch.Tensor,
                    buffers: Tensors | None = None) -> torch.Tensor:
        """The data loss of ONE member (no regulariser: decay is applied in the update)."""
        tensors = {**self.effective(raw, fixed), **(buffers or {})}
        return self.loss(functional_call(self.model, tensors, (x,)), y)

    def full_loss(self, raw: Tensors, x: torch.Tensor, y: torch.Tensor, buffers: Tensors | None = None) -> torch.Tensor:
        """`[M]` data losses on a shared data set, in eval mode: in one vmapped call when x is float
        vectors [N, d] holding at most EVAL_ELEMENTS over all members (each call costs ~1 ms of dispatch
        on the CPU, more than a small regression's compute), else over chunks of EVAL_CHUNK samples:
        an image's or a token's activations are many times its own size."""
        fn = vmap(self.member_loss, in_dims=(0, 0, None, None, 0))
        small = x.dim() == 2 and x.is_floating_point() and self.size * x.numel() <= EVAL_ELEMENTS
        chunk = len(x) if small else EVAL_CHUNK
        total = 0.0
        with torch.no_grad(), evaluating(self.model):
            for i in range(0, len(x), chunk):  # each loss is a mean over dim 0: reweight the chunks
                xc, yc = x[i:i + chunk], y[i:i + chunk]
                total = total + fn(raw, self.fixed, xc, yc, buffers or {}) * (len(xc) / len(x))
        return total

    def outputs(self, raw: Tensors, x: torch.Tensor, buffers: Tensors | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Eval-mode `(logits [M, N, C], penultimate features [M, N, h])` of a model whose forward
        takes `features=True`, over chunks of EVAL_CHUNK samples (bounds memory at M x chunk)."""
        def member(raw, fixed, buffers, x):
            return functional_call(self.model, {**self.effective(raw, fixed), **buffers}, (x,), {"features": True})
        fn = vmap(member, in_dims=(0, 0, 0, None))
        with torch.no_grad(), evaluating(self.model):
            parts = [fn(raw, self.fixed, buffers or {}, x[i:i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)]
        return torch.cat([p[0] for p in parts], 1), torch.cat([p[1] for p in parts], 1)

    def init_state(self, rule: optim.Rule) -> State:
        raw = {k: v.clone() for k, v in self.raw0.items()}
        alive = torch.ones(self.size, dtype=torch.bool, device=self.device)
        buffers = {k: v.clone() for k, v in self.buffers0.items()}
        return State(raw=raw, opt=rule.init(raw), alive=alive, buffers=buffers)

    def make_step(self, rule: optim.Rule, decayed: frozenset[str], per_member_x: bool, per_member_y: bool,
                  max_loss: float, compile: bool, buffers: Tensors | None = None, trace: bool = True,
                  cpp_wrapper: bool = False):
        """The batched train step: (raw, opt, alive, x, y, lr) -> (raw, opt, alive, loss[M]).
        `buffers` (a State's, [M, ...]) are updated in place by the model's train-mode forward (BatchNorm).
        By default the step runs as one traced ATen graph (GraphStep); `compile`: that graph compiled by
        Inductor (`cpp_wrapper`: into one C++ library, see GraphStep); `trace=False`: the vmapped step
        itself, op by op (what the graph is traced from)."""
        penalty = getattr(self.symmetry, "penalty", None)  # an explicit loss term (symmetry=penalty only)
        trained = self.member_loss if penalty is None else (
            lambda raw, fixed, x, y, b: self.member_loss(raw, fixed, x, y, b) + penalty(self.effective(raw, fixed)))
        grad_fn = vmap(grad_and_value(trained),
                       in_dims=(0, 0, 0 if per_member_x else None, 0 if per_member_y else None, 0))
        wd, fixed, buffers = self.hyper["weight_decay"], self.fixed, buffers if buffers is not None else {}

        def update(raw: Tensors, opt: Tensors, alive: torch.Tensor, x, y, lr: torch.Tensor,
                   wd: torch.Tensor, fixed: Tensors, buffers: Tensors):
            grads, loss = grad_fn(raw, fixed, x, y, buffers)
            grads = weighted_decay(grads, raw, fixed, wd, decayed)
            new_raw, new_opt = rule.update(raw, grads, opt, lr, wd, decayed)
            ok = alive & torch.isfinite(loss) & (loss.abs() < max_loss)
            for v in new_raw.values():
                ok = ok & torch.isfinite(v).flatten(1).all(1)
            # a diverged member is frozen at its last finite parameters; the others are untouched
            keep = lambda new, old: torch.where(optim.per_member(ok, new), new, old)  # noqa: E731
            new_raw = {k: keep(v, raw[k]) for k, v in new_raw.items()}
            new_opt = {k: keep(v, opt[k]) for k, v in new_opt.items()}
            return new_raw, new_opt, ok, loss

        eager = lambda raw, opt, alive, x, y, lr: update(raw, opt, alive, x, y, lr, wd, fixed, buffers)  # noqa: E731
        if compile and _has_standalone_compile():
            # measured on the CPU only: a GPU compiles as Inductor does by default
            return GraphStep(update, wd, fixed, buffers, inductor=True,
                             cpp_wrapper=cpp_wrapper and self.device.type == "cpu")
        if compile:  # an older torch without Inductor's standalone_compile: the same step through torch.compile
            return torch.compile(eager, dynamic=False)
        return GraphStep(update, wd, fixed, buffers, inductor=False) if trace else eager


def _has_standalone_compile() -> bool:
    try:
        from torch._inductor import standalone_compile  # noqa: F401
    except ImportError:
        return False
    return True


def weighted_decay(grads: Tensors, raw: Tensors, fixed: Tensors, wd: torch.Tensor, decayed: frozenset[str]) -> Tensors:
    """Decay wd * D * raw instead of wd * raw where a breaking control fixed per-entry weights D (syre's
    diagonal variant): the optimiser adds wd * raw itself, so the gradient gets wd * (D - 1) * raw."""
    out = dict(grads)
    for k, g in grads.items():
        d = fixed.get(k + breaking.DECAY)
        if d is not None and k in decayed:
            out[k] = g + optim.per_member(wd, g) * (d - 1) * raw[k]
    return out


class GraphStep:
    """A train step traced into one flat ATen graph by make_fx on fake tensors (the trace changes no
    state), once per shape of the batch. A call runs the graph's ops on a flat list of tensors: no
    vmap or autograd dispatch per op, which is most of a small model's eager step (u*v members: 2.7x
    faster than the vmapped step at M = 1, 1.8x at M = 64, bit for bit the same numbers;
    scripts/bench_ensemble.py). `inductor`: the graph compiled by Inductor, called with no Dynamo frame
    evaluation or guards: through torch.compile those cost as much as the whole step of one small
    member (profile: notes in scripts/bench_ensemble.py). The weight decays, offsets and buffers are
    graph inputs, not constants, so every job of one structure shares one entry of Inductor's on-disk
    cache; buffers are updated in place, as by the eager step.

    `cpp_wrapper`: Inductor writes the code that calls the kernels in C++ too, and builds wrapper and
    kernels as two translation units on precompiled headers instead of one g++ call per kernel. For the
    narrow ResNet's step (45 kernels, M = 5) a cold compile then costs 59-69 instead of 86 CPU seconds,
    a step 0.91x the time, the same numbers bit for bit (scripts/bench_resnet.py --cpp-wrapper)."""

    def __init__(self, update, wd: torch.Tensor, fixed: Tensors, buffers: Tensors, inductor: bool,
                 cpp_wrapper: bool = False):
        self.update, self.fixed, self.buffers, self.inductor = update, fixed, buffers, inductor
        self.cpp_wrapper = cpp_wrapper
        self.extras = [wd, *fixed.values(), *buffers.values()]
        self.graphs: dict[tuple, object] = {}  # (x shape, y shape) -> its graph
        self.raw_keys, self.opt_keys = [], []

    def _flat(self, *ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
        nr, no = len(self.raw_keys), len(self.opt_keys)
        raw, opt = dict(zip(self.raw_keys, ts[:nr])), dict(zip(self.opt_keys, ts[nr:nr + no]))
        alive, x, y, lr, wd = ts[nr + no:nr + no + 5]
        rest = ts[nr + no + 5:]
        fixed = dict(zip(self.fixed, rest[:len(self.fixed)]))
        new_raw, new_opt, ok, loss = self.update(raw, opt, alive, x, y, lr, wd, fixed,
                                                 dict(zip(self.buffers, rest[len(self.fixed):])))
        return (*(new_raw[k] for k in self.raw_keys), *(new_opt[k] for k in self.opt_keys), ok, loss)

    def __call__(self, raw: Tensors, opt: Tensors, alive: torch.Tensor, x, y, lr: torch.Tensor):
        if not self.graphs:
            self.raw_keys, self.opt_keys = list(raw), list(opt)
        args = [*(raw[k] for k in self.raw_keys), *(opt[k] for k in self.opt_keys), alive, x, y, lr, *self.extras]
        key = (x.shape, y.shape)  # raw, opt and the extras keep their shapes from call to call
        graph = self.graphs.get(key)
        if graph is None:
            # tensors a component holds (dcs's fixed matrices) enter the graph as constants
            graph = make_fx(self._flat, tracing_mode="fake", _allow_non_fake_inputs=True)(*args)
            if self.inductor:
                from torch._inductor import config, standalone_compile  # loaded only when a step compiles

                with config.patch(cpp_wrapper=self.cpp_wrapper):
                    graph = standalone_compile(graph, args, dynamic_shapes="from_example_inputs")
            self.graphs[key] = graph
        out = graph(*args)
        nr, no = len(self.raw_keys), len(self.opt_keys)
        return dict(zip(self.raw_keys, out[:nr])), dict(zip(self.opt_keys, out[nr:nr + no])), out[-2], out[-1]
