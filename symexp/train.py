"""The training loop of one job: batched steps, metrics every `eval_every`, divergence, checkpoints."""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from symexp import metrics, optim
from symexp.data import TensorData
from symexp.data.images import crop_flip, crop_flip_params
from symexp.ensemble import AUGMENT_STREAM, NOISE_STREAM, ORDER_STREAM, Ensemble, State
from symexp.metrics.constraint import constraint_norm
from symexp.results import Rows


class Batcher:
    """Per-member batches: member m permutes the data with its own generator every epoch and draws
    its own fresh label noise, so its batches do not depend on which other members run beside it."""

    def __init__(self, data: TensorData, batch_size: int | None, members: list[dict], label_noise: torch.Tensor):
        self.data, self.bs, self.noise = data, batch_size, label_noise
        self.order = [torch.Generator().manual_seed(m["seed"] + ORDER_STREAM) for m in members]
        self.noise_gen = [torch.Generator().manual_seed(m["seed"] + NOISE_STREAM) for m in members]
        self.noisy = bool((label_noise > 0).any())
        self.augment = data.extras.get("augment")  # {pad, flip} for image data, else None
        self.aug_gen = [torch.Generator(device=data.x.device).manual_seed(m["seed"] + AUGMENT_STREAM)
                        for m in members] if self.augment else []
        self.perm, self.pos = None, 0

    @property
    def per_member_x(self) -> bool:
        return self.bs is not None

    @property
    def per_member_y(self) -> bool:
        return self.bs is not None or self.noisy

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = self.data.x, self.data.y
        if self.bs is not None:
            if self.perm is None or self.pos + self.bs > self.data.n:  # new epoch; drop the ragged tail
                self.perm = torch.stack([torch.randperm(self.data.n, generator=g) for g in self.order])
                self.perm, self.pos = self.perm.to(x.device), 0
            idx = self.perm[:, self.pos:self.pos + self.bs]  # [M, B]
            self.pos += self.bs
            x, y = x[idx], y[idx]
            if self.augment:  # images: each member draws its own crops and flips; one gather applies all
                pad, flip = self.augment["pad"], self.augment["flip"]
                draws = [crop_flip_params(self.bs, pad, flip, g, x.device) for g in self.aug_gen]
                dy, dx, flipped = (torch.cat(d) for d in zip(*draws))
                x = crop_flip(x.flatten(0, 1), dy, dx, flipped, pad).unflatten(0, idx.shape)
        if self.noisy:  # fresh label noise every step: a pure gradient-noise knob (paper.md 2.4)
            shape = y.shape[1:] if self.bs is not None else y.shape  # one member's targets
            eps = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in self.noise_gen])
            y = y + optim.per_member(self.noise, eps) * eps.to(y.device, y.dtype)
        return x, y

    def state_dict(self) -> dict:
        return {"order": [g.get_state() for g in self.order], "noise": [g.get_state() for g in self.noise_gen],
                "augment": [g.get_state() for g in self.aug_gen], "perm": self.perm, "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        for g, st in zip(self.order, s["order"]):
            g.set_state(st)
        for g, st in zip(self.noise_gen, s["noise"]):
            g.set_state(st)
        for g, st in zip(self.aug_gen, s.get("augment", [])):
            g.set_state(st)
        self.perm, self.pos = s["perm"], s["pos"]


def measure(theta: torch.Tensor, families: tuple[str, ...], mcfg: dict) -> dict[str, torch.Tensor]:
    """Structure metrics of one probed weight `[M, ...]` -> {metric name: [M]}."""
    out = {}
    if "sparsity" in families:
        for tau in mcfg["sparsity_tau"]:
            out[f"sparsity/frac_zero@{tau:g}"] = metrics.frac_zero(theta, tau)
        out["sparsity/l1_l2"] = metrics.l1_l2_ratio(theta)
    if "rank" in families:
        # relative ranks always; with rank_atol > 0 also the floored ones (singular values <= atol
        # count as zero) under names that say so, so a table never hides which one a number is
        atol = mcfg.get("rank_atol", 0.0)
        for a, sfx in ((0.0, ""),) + (((atol, f",atol@{atol:g}"),) if atol > 0 else ()):
            out[f"rank/tau@{mcfg['rank_tau']:g}{sfx}"] = metrics.tau_rank(theta, mcfg["rank_tau"], a)
            out[f"rank/erank{sfx}"] = metrics.erank(theta, a)
            out[f"rank/stable{sfx}"] = metrics.stable_rank(theta, a)
            out[f"rank/energy@{mcfg['energy']:g}{sfx}"] = metrics.energy_rank(theta, mcfg["energy"], a)
    if "units" in families:  # theta: per-unit vectors [M, h, p] from a model's probe_views (anchors A1)
        out["units/independent"] = metrics.independent_units(theta, mcfg["unit_tol"], mcfg["dead_tau"])
        out["units/dead_frac"] = metrics.dead_fraction(theta, mcfg["dead_tau"])
    if "norm" in families:  # Euclidean (Frobenius) norm of the whole tensor: exact zeros stay 0
        out["norm/l2"] = torch.linalg.vector_norm(theta.reshape(theta.shape[0], -1), dim=1)
    if "spectrum" in families:  # every singular value, largest first: spectrum/sv0 ... sv{k-1}
        for i, sv in enumerate(metrics.singular_values(theta).unbind(1)):
            out[f"spectrum/sv{i}"] = sv
    if mcfg.get("constraint", {}).get("k"):  # a target O^T theta = 0 is set: measured on every probe
        out["constraint/norm"] = constraint_norm(theta, **mcfg["constraint"])
    return out


def evaluate(ens: Ensemble, state: State, data: TensorData, mcfg: dict, rows: Rows,
             final: bool = False) -> dict[str, torch.Tensor]:
    """Append every metric of every member at `state.step` to `rows`; return the losses."""
    theta = ens.effective(state.raw, ens.fixed)
    n = mcfg.get("train_subset") or data.n  # loss/train on the first n examples (large image sets)
    x_fit, y_fit = (data.x[:n], data.y[:n]) if data.x_eval is None else (data.x_eval, data.y_eval)  # text: a sample
    losses = {"loss/train": ens.full_loss(state.raw, x_fit, y_fit, state.buffers)}
    if data.x_test is not None:
        losses["loss/test"] = ens.full_loss(state.raw, data.x_test, data.y_test, state.buffers)
    for name, v in losses.items():
        rows.add(state.step, "", name, v)
    rows.add(state.step, "", "status/alive", state.alive)
    if data.task == "classification" and data.x_test is not None:
        evaluate_features(ens, state, data, mcfg, rows, final)
    # a model may measure derived tensors (e.g. per-head W_Q^T W_K) beside its raw effective weights
    views = ens.model.probe_views(theta) if hasattr(ens.model, "probe_views") else theta
    for layer, families in ens.model.probes.items():
        for name, v in measure(views[layer].detach(), families, mcfg).items():
            rows.add(state.step, layer, name, v)
    return losses


def evaluate_features(ens: Ensemble, state: State, data: TensorData, mcfg: dict, rows: Rows, final: bool) -> None:
    """Test accuracy and the penultimate features' homogeneity over the test set; at the final step,
    with metrics.corr_matrix, also every entry i < j of their correlation matrix (for the heatmaps)."""
    logits, feats = ens.outputs(state.raw, data.x_test, state.buffers)
    rows.add(state.step, "", "acc/test", (logits.argmax(-1) == data.y_test).double().mean(1))
    thresh = mcfg["near_corr"]
    rows.add(state.step, "penultimate", f"features/near_identical@{thresh:g}", metrics.near_identical_pairs(feats, thresh))
    if final and mcfg["corr_matrix"]:
        corr = metrics.feature_correlation(feats)
        i, j = torch.triu_indices(corr.shape[1], corr.shape[1], 1)
        for a, b, v in zip(i.tolist(), j.tolist(), corr[:, i, j].unbind(1)):
            rows.add(state.step, "penultimate", f"corr/{a}/{b}", v)


def converged(prev: dict | None, theta: dict, alive: torch.Tensor, tol: float) -> bool:
    """True when every live member moved less than tol * max|theta| over the last eval window."""
    if prev is None or tol <= 0:
        return False
    for k, v in theta.items():
        scale = v.flatten(1).abs().amax(1).clamp_min(1e-30)
        moved = (v - prev[k]).flatten(1).abs().amax(1) / scale
        if bool(((moved >= tol) & alive).any()):
            return False
    return True


def train(ens: Ensemble, data: TensorData, cfg: dict, rows: Rows, checkpoint, resume: dict | None = None,
          on_eval=None, progress: bool = True) -> State:
    """Run `cfg["train"]["steps"]` batched steps (or until converged). `checkpoint(state, batcher)` is
    called every `checkpoint_every` steps; `resume` is a checkpoint dict to continue from."""
    tcfg, ocfg = cfg["train"], cfg["optim"]
    decayed = frozenset(k for k in ens.raw0 if not any(s in k for s in cfg["reg"]["exclude"]))
    batcher = Batcher(data, ocfg["batch_size"], ens.members, ens.hyper["label_noise"])
    rule = optim.rule(ocfg)  # sgd | adam (coupled L2) | adamw (decoupled decay)
    state = ens.init_state(rule)
    if resume is not None:
        state = resume["state"]
        batcher.load_state_dict(resume["batcher"])
    step_fn = ens.make_step(rule, decayed, batcher.per_member_x, batcher.per_member_y,
                            tcfg["max_loss"], cfg["compile"], state.buffers)
    prev = None
    if state.step == 0:
        on_eval and on_eval(state.step, evaluate(ens, state, data, cfg["metrics"], rows))
    bar = tqdm(total=tcfg["steps"], initial=state.step, disable=not progress, desc=cfg["name"], leave=False)
    while state.step < tcfg["steps"]:
        x, y = batcher.next()
        lr = ens.hyper["lr"] * optim.schedule_factor(ocfg["schedule"], state.step, tcfg["steps"])
        state.raw, state.opt, state.alive, _ = step_fn(state.raw, state.opt, state.alive, x, y, lr)
        state.step += 1
        bar.update(1)
        last = state.step == tcfg["steps"]
        if state.step % tcfg["eval_every"] == 0 or last:
            losses = evaluate(ens, state, data, cfg["metrics"], rows, final=last)
            on_eval and on_eval(state.step, losses)
            live = losses["loss/train"][state.alive]
            bar.set_postfix(loss=f"{live.mean().item() if len(live) else float('nan'):.4g}",
                            alive=f"{int(state.alive.sum())}/{ens.size}")
            theta = {k: v.detach().clone() for k, v in ens.effective(state.raw, ens.fixed).items()}
            if converged(prev, theta, state.alive, tcfg["converge_tol"]):
                break
            prev = theta
        if tcfg["checkpoint_every"] and state.step % tcfg["checkpoint_every"] == 0 and not last:
            checkpoint(state, batcher)
    bar.close()
    return state
