"""What scripts/gpu_check.py measures: a paper-scale job composed as SCALE=paper composes it and timed
from outside (its docstring gives the protocol), the batched-ensemble benchmark and the ResNet18
throughput cases. Every item takes gpu_check's Check (device, sizes, budget, record) and adds its rows
to it."""
from __future__ import annotations

import itertools
import json
import math
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from symexp.bench import min_time
from symexp.data.images import augment, write_cifar10_like
from symexp.models.resnet import ResNet18
from symexp.run import run_job

if TYPE_CHECKING:
    from gpu_check import Check

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
# --smoke: tiny models and sets, where the experiment's config has the key; 1 seed x 2 decays x 1 lr
SMOKE = {"resnet18": {"model.width": 0.0625, "optim.batch_size": 8, "data.n_train": 64, "data.n_test": 32,
                      "metrics.train_subset": 32},
         "transformer": {"model.n_layer": 1, "model.n_head": 2, "model.d_model": 32, "data.context": 16,
                         "optim.batch_size": 4, "data.eval_windows": 4},
         "mlp": {"model.widths": "[32,16]", "optim.batch_size": 16, "data.n_train": 256, "data.per_class": 20,
                 "data.n_test": 64, "data.probe_examples": 64, "metrics.train_subset": 64}}
# image sets by the word in their data.name: (default root, a file that shows the set is there)
IMAGE_SETS = {"cifar10": ("~/datasets/cifar10", ["data_batch_1", "cifar-10-batches-py/data_batch_1"]),
              "fashion_mnist": ("/usr/share/datasets/fashion-mnist", ["train-images-idx3-ubyte.gz",
                                                                      "train-images-idx3-ubyte"])}
CIFAR_DECAYS = [0.0, 1e-4, 5e-4, 1e-3, 3e-3, 1e-2, 3e-2]  # fig1_right_resnet_paper's M = 7 members


def compose_cfg(overrides: dict, hydra_cfg: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("config", overrides=[f"{k}={v}" for k, v in overrides.items()], return_hydra_config=hydra_cfg)


def sweep_jobs(params: dict) -> list[dict]:
    """Every job of a sweep as {key: value}, as Hydra's basic sweeper expands hydra.sweeper.params."""
    lists = []
    for o in OverridesParser.create().parse_overrides([f"{k}={v}" for k, v in params.items()]):
        values = o.sweep_string_iterator() if o.is_sweep_override() else [o.get_value_element_as_str()]
        lists.append([(o.get_key_element(), v) for v in values])
    return [dict(job) for job in itertools.product(*lists)]


def listed(values) -> str:
    return "[" + ",".join(map(repr, values)) + "]"


def image_kind(data) -> str | None:
    """Which image set a data config reads (cifar10, fashion_mnist, or a variant of one), else None."""
    return next((k for k in IMAGE_SETS if k in str(data.get("name")) and "root" in data), None)


def image_root(check: Check, data) -> tuple[dict, str]:
    """({data.root override}, what the data is): the real image set when its files are there, else
    random images of its shape (full size, or tiny for --smoke), written once to the scratch folder."""
    kind = image_kind(data)
    if kind is None:
        return {}, "as configured"
    default, files = IMAGE_SETS[kind]
    root = Path(data.get("root") or default).expanduser()
    if any((root / f).exists() for f in files):
        return {}, f"{kind} from {root}"
    if kind not in check.synthetic:
        check.synthetic[kind] = out = check.scratch / f"random_{kind}"
        n_train, n_test = (80, 32) if check.smoke else ((50000, 10000) if kind == "cifar10" else (60000, 10000))
        write_cifar10_like(out, n_train // 5, n_test) if kind == "cifar10" else write_idx_set(out, n_train, n_test)
    return {"data.root": str(check.synthetic[kind])}, f"random {kind}-shaped images ({root} has no {kind})"


def write_idx_set(out: Path, n_train: int, n_test: int) -> None:
    """Fashion-MNIST's four IDX files, uncompressed: uint8 images 28x28 and labels 0-9, random."""
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        for kind, magic, shape, high in (("images-idx3", 2051, (n, 28, 28), 256), ("labels-idx1", 2049, (n,), 10)):
            header = b"".join(int(v).to_bytes(4, "big") for v in (magic, *shape))
            (out / f"{prefix}-{kind}-ubyte").write_bytes(header + rng.integers(0, high, shape, dtype=np.uint8).tobytes())


def plan_job(check: Check, exp: str, extra: dict | None = None) -> dict:
    """The paper-scale job of `exp` to time (its sweep's first job, `extra` on top): its composed config,
    the paper schedule, the sweep's size and the throughput unit."""
    head = {"experiment": exp, "scale": "paper", "device": check.device.type, "paths.results": "."}
    paper = compose_cfg(head, hydra_cfg=True)
    jobs = sweep_jobs(OmegaConf.to_container(paper.hydra.sweeper.params) or {})
    root, data_note = image_root(check, paper.data)
    shrink = {}
    if check.smoke:
        ens, absent = paper.ensemble, object()
        shrink = {"ensemble.seeds": listed(ens.seeds[:1]), "ensemble.lrs": listed(ens.lrs[:1]),
                  "ensemble.weight_decays": listed(ens.weight_decays[:2])}
        shrink.update({k: v for k, v in SMOKE.get(paper.model.name, {}).items()
                       if OmegaConf.select(paper, k, default=absent) is not absent})
    overrides = {**head, **jobs[0], **root, **shrink, **(extra or {})}
    overrides.update({} if check.compile else {"compile": "false"})
    cfg = compose_cfg(overrides)
    per_step = cfg.optim.batch_size or cfg.data.get("n_train") or 0  # null batch = full batch
    unit = "images/s" if image_kind(cfg.data) else "samples/s"
    if cfg.data.name == "text":
        unit, per_step = "tokens/s", per_step * cfg.data.context
    return dict(experiment=exp, cfg=cfg, overrides=[f"{k}={v}" for k, v in overrides.items()], jobs=len(jobs),
                job=",".join(f"{k}={v}" for k, v in jobs[0].items()) or "default", unit=unit, per_step=per_step,
                compile=cfg.compile, data=data_note, paper_steps=paper.train.steps,
                paper_eval_every=paper.train.eval_every, upper_bound=paper.train.get("converge_tol", 0) > 0)


def timed_run(check: Check, plan: dict, steps: int, every: int) -> tuple[float, int]:
    """(wall seconds, members) of one fresh job of `steps` steps evaluated every `every`."""
    check.runs += 1
    out = check.scratch / "runs" / str(check.runs)
    cfg = OmegaConf.merge(plan["cfg"], {"train": {"steps": steps, "eval_every": every}, "paths": {"results": str(out)}})
    torch.compiler.reset()  # compile afresh, as a new job does, not into dynamo's recompile limit
    check.sync()
    tic = time.perf_counter()
    run_job(cfg, out, job=plan["job"], overrides=plan["overrides"], progress=False)
    check.sync()
    seconds = time.perf_counter() - tic
    status = json.loads((out / "status.json").read_text())
    shutil.rmtree(out)  # weights and tables of a paper-size job: gigabytes over a whole check
    if status["state"] not in ("done", "diverged"):
        raise RuntimeError(f"job ended {status['state']}: {status.get('error', '')}")
    return seconds, status["members"]


def measure(check: Check, plan: dict, with_eval: bool) -> dict:
    """Black-box step, setup and compile seconds of the planned job (see gpu_check's docstring)."""
    n1 = 1 if check.smoke else 10
    check.reset_peak()
    runs = []

    def run(steps: int, every: int) -> float:
        seconds, plan["members"] = timed_run(check, plan, steps, every)
        runs.append(dict(steps=steps, eval_every=every, s=seconds))
        return seconds

    cold, t1 = run(n1, n1), run(n1, n1)
    n2, t2 = n1, t1
    # t2 - t1 must outweigh the run-to-run spread of a run's fixed cost (data, evals, a recompile)
    target = 0.3 if check.smoke else max(3.0, 0.5 * t1)
    while n2 == n1 or (t2 - t1 < target and n2 < plan["paper_steps"]):
        # aim at the target from the step time seen so far (double when noise hides it); N2 = 4 N1 is required
        step = (t2 - t1) / (n2 - n1) if n2 > n1 and t2 > t1 else None
        if step is None:
            nxt, guess = (4 * n1, 4 * t1) if n2 == n1 else (2 * n2, 2 * max(t1, t2))
        else:
            nxt = max(2 * n2, n1 + math.ceil(1.3 * target / step))
            guess = t1 + (nxt - n1) * step
        nxt = max(min(nxt, plan["paper_steps"]), n1 + 1)
        if not check.budget.fits(guess, optional=n2 > n1):
            if n2 == n1:
                raise TimeoutError(f"budget: ~{guess:.0f} s needed to time {nxt} steps, {check.budget.left():.0f} s left")
            break
        n2, t2 = nxt, run(nxt, nxt)
    step = (t2 - t1) / (n2 - n1)
    eval_s = None
    if with_eval and check.budget.fits(1.5 * t2, optional=True):  # one eval + checkpoint more than t2's run
        eval_s = max(run(n2, math.ceil(n2 / 2)) - t2, 0.0)
    notes = [] if step > 0 else ["step time not resolved: t2 - t1 stayed inside the run-to-run spread"]
    return dict(members=plan["members"], runs=runs, step_s=step, compile_s=cold - t1, setup_s=t1 - n1 * step, eval_s=eval_s,
                throughput=plan["per_step"] * plan["members"] / step if step > 0 else None, peak_gib=check.peak_gib(),
                notes=notes)


def experiment_item(check: Check, exp: str) -> None:
    plan = plan_job(check, exp)
    m = measure(check, plan, with_eval=True)
    evals = math.ceil(plan["paper_steps"] / plan["paper_eval_every"]) + 1  # step 0, every k, the last
    job = m["compile_s"] + m["setup_s"] + plan["paper_steps"] * m["step_s"] + (evals - 2) * (m["eval_s"] or 0.0)
    notes = m["notes"] + ([] if m["eval_s"] is not None else ["periodic evals not timed (budget): left out of the job time"])
    notes += ["paper steps are an upper bound (converge_tol may stop earlier)"] if plan["upper_bound"] else []
    plan = {k: v for k, v in plan.items() if k != "cfg"}
    check.add("experiments", dict(plan, **dict(m, notes=notes), paper_evals=evals, job_wall_s=job,
                                  sweep_wall_s=m["compile_s"] + plan["jobs"] * (job - m["compile_s"])))


def ensemble_item(check: Check) -> None:
    """Figure 1 (left) members (u*v, d=100, n=1000, full batch, float32): M members as one engine job,
    eager and compiled, against a plain loop of M ordinary modules with their own torch.optim.SGD."""
    sizes, repeats = ([4], 1) if check.smoke else ([1, 64, 1024, 8, 256], 3)  # the budget may cut the last
    x = torch.randn(1000, 100, device=check.device)
    y = x[:, :10].sum(1) + 0.5 * torch.randn(1000, device=check.device)
    for M, compiled in itertools.product(sizes, [False, True] if check.compile else [False]):
        name = f"ensemble M={M}{' compiled' if compiled else ''}"
        if check.skip(name, 1 if check.smoke else (30 if compiled else 8)):
            continue
        check.attempt(name, lambda: ensemble_case(check, M, compiled, x, y, repeats))


def ensemble_case(check: Check, M: int, compiled: bool, x: torch.Tensor, y: torch.Tensor, repeats: int) -> None:
    plan = plan_job(check, "fig1_left", {
        "symmetry": "rescaling", "dtype": "float32", "references": "[]", "train.converge_tol": 0,
        "metrics.sparsity_tau": "[0.001]", "ensemble.seeds": listed(range(M)), "ensemble.weight_decays": "[0.001]",
        "ensemble.lrs": "[0.05]", "compile": str(compiled).lower()})
    engine = measure(check, plan, with_eval=False)
    loop_steps = max(2, min(200, 3000 // M))  # the loop costs ~M x a step: fewer steps, same per-step figure
    loop_s = min_time(member_loop(x, y, M, loop_steps), repeats, check.sync)[0] / loop_steps
    check.add("ensemble", dict(M=M, compiled=compiled, loop_step_s=loop_s, loop_steps=loop_steps,
                               speedup=loop_s / engine["step_s"] if engine["step_s"] > 0 else None, **engine))


def member_loop(x: torch.Tensor, y: torch.Tensor, members: int, steps: int):
    """bench_ensemble.loop_run's baseline, made on x's device and outside the timed call."""
    params = [[torch.nn.Parameter(0.1 * torch.randn(100, device=x.device)) for _ in "uv"] for _ in range(members)]
    opts = [torch.optim.SGD(p, lr=0.05, weight_decay=1e-3) for p in params]

    def run():
        for _ in range(steps):
            for (u, v), opt in zip(params, opts):
                opt.zero_grad(set_to_none=True)
                ((x @ (u * v) - y) ** 2).mean().backward()
                opt.step()
    return run


def plain_resnet(check: Check, width: float, batch: int, bf16: bool, compiled: bool):
    """The baseline: one ResNet18 module and torch.optim.SGD on images resident on the device, each
    batch gathered and crop+flipped there; bf16 autocast + channels_last, compiled once, when asked."""
    fmt = torch.channels_last if bf16 else torch.contiguous_format
    model = ResNet18(3, 10, width, "always" if bf16 else "never").to(check.device, memory_format=fmt)
    images = torch.randn(64 if check.smoke else 8192, 3, 32, 32, device=check.device)
    labels = torch.randint(0, 10, images.shape[:1], device=check.device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    forward, gen = torch.compile(model) if compiled else model, torch.Generator(check.device).manual_seed(0)

    def run():
        idx = torch.randint(0, len(images), (batch,), device=check.device, generator=gen)
        x = augment(images[idx], gen).contiguous(memory_format=fmt)
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(forward(x), labels[idx]).backward()
        opt.step()
    return run


def resnet_item(check: Check, compiled: bool) -> None:
    """CIFAR-shaped ResNet18 train steps: the engine (the paper job, eval shrunk) with 1 and M members,
    fp32 vs bf16 autocast (channels_last data on CUDA), vs the plain single-model loop at the same batch."""
    M = 2 if check.smoke else len(CIFAR_DECAYS)
    cases = [("engine", 1, "bf16"), ("engine", M, "bf16"), ("plain", 1, "bf16")]
    cases = cases if compiled else [("engine", 1, "fp32"), ("engine", M, "fp32"), ("plain", 1, "fp32")] + cases
    for impl, members, precision in cases:
        name = f"{impl} M={members} {precision}{'+channels_last' if precision == 'bf16' else ''}" \
               f"{' compiled' if compiled else ''}"
        if check.skip(f"resnet {name}", 1 if check.smoke else (150 if compiled else 15)):
            continue
        check.attempt(f"resnet {name}", lambda: resnet_case(check, compiled, impl, members, precision, name))


def resnet_case(check: Check, compiled: bool, impl: str, members: int, precision: str, name: str) -> None:
    width, batch, steps, repeats = (0.0625, 8, 2, 1) if check.smoke else (1.0, 128, 20, 3)
    row = dict(case=name, impl=impl, members=members, precision=precision, compiled=compiled, batch=batch)
    if impl == "engine":
        decays = CIFAR_DECAYS[:members] if members > 1 else [5e-4]
        plan = plan_job(check, "fig1_right_resnet", {
            "model.bf16": "always" if precision == "bf16" else "never", "ensemble.weight_decays": listed(decays),
            "compile": str(compiled).lower(), "metrics.corr_matrix": "false",
            **({} if check.smoke else {"data.n_test": 1000, "metrics.train_subset": 1000})})
        row.update(measure(check, plan, with_eval=False))
    else:
        check.reset_peak()
        run = plain_resnet(check, width, batch, precision == "bf16", compiled)
        warm = min_time(lambda: [run() for _ in range(3)], 1, check.sync)[0]  # compile, autotune
        step_s = min_time(lambda: [run() for _ in range(steps)], repeats, check.sync)[0] / steps
        row.update(step_s=step_s, compile_s=warm - 3 * step_s, throughput=batch / step_s, peak_gib=check.peak_gib())
    check.add("resnet", row)
