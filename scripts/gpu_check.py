"""Paper scale on one GPU, inside a time budget: every paper-scale experiment, the batched-ensemble
benchmark and ResNet18 training throughput, in one call (`make gpu-check`).

    python scripts/gpu_check.py --budget-s 400                      # a CUDA machine -> results/bench/
    python scripts/gpu_check.py --device cpu --smoke --budget-s 60  # tiny sizes, on CPU

A job is composed as SCALE=paper composes it (experiment=<exp> scale=paper, the first job of its
sweep) and run in-process by symexp.run.run_job, timed from outside: a cold run of N1 steps
(compile, cuDNN autotuning), warm runs of N1 and N2 steps (N2 grows until t2 - t1 is long enough to
time), then N2 steps evaluated twice as often. step = (t2 - t1)/(N2 - N1); setup = t1 - N1 step (data,
model, two evals, files); compile = t_cold - t1; eval = the extra eval + checkpoint. Full job = compile
+ setup + steps x step + (evals - 2) x eval; sweep = compile + jobs x (job - compile), every job taken
to cost what the first does. The benchmarks time the engine the same way (eval shrunk) against plain
PyTorch loops on data resident on the device. Items run in priority order; one that does not fit the
budget left is skipped and listed, and at the budget's end a watchdog writes what was measured and
exits. A missing CIFAR-10 or Fashion-MNIST is replaced by random images of the same shape.
Writes <out-dir>/gpu_<name>.json and .md after every item.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

T0 = time.monotonic()  # the budget counts the imports of torch, Hydra and symexp too

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.core.global_hydra import GlobalHydra  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # symexp without an install (the GPU machine has none)

from symexp.bench import min_time  # noqa: E402
from symexp.data.images import augment, write_cifar10_like  # noqa: E402
from symexp.experiments import discover  # noqa: E402
from symexp.models.resnet import ResNet18  # noqa: E402
from symexp.run import run_job  # noqa: E402

CONFIGS = ROOT / "configs"
FIRST = ["fig1_right_resnet", "transformer"]  # the paper-size jobs the issue asks about first
BENCHES = ["resnet_eager", "ensemble", "resnet_compiled"]
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


class Budget:
    """Seconds left of --budget-s. `reserve`: kept for the items still to come when an item decides
    whether to measure more than its minimum (`optional`)."""

    def __init__(self, seconds: float):
        self.end, self.reserve = T0 + seconds, 0.0

    def left(self) -> float:
        return self.end - time.monotonic()

    def fits(self, seconds: float, optional: bool = False) -> bool:
        return seconds <= self.left() - (self.reserve if optional else 0.0)


class Check:
    """The device, sizes, budget and record shared by every item; runs and data go to `scratch`."""

    def __init__(self, args, path: Path, info: dict, scratch: Path):
        self.device, self.smoke, self.compile = torch.device(args.device), args.smoke, not args.no_compile
        self.budget, self.path, self.scratch, self.lock = Budget(args.budget_s), path, scratch, threading.Lock()
        self.data = dict(info, experiments=[], ensemble=[], resnet=[], skipped=[], errors=[])
        self.runs, self.synthetic, self.current, self.pending = 0, {}, None, []

    def add(self, section: str, row: dict) -> None:
        with self.lock:
            self.data[section].append(row)
            self.write()

    def write(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - T0, 1)
        for path, text in ((self.path, json.dumps(self.data, indent=2) + "\n"),
                           (self.path.with_suffix(".md"), markdown(self.data))):
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)

    def skip(self, item: str, need: float) -> bool:
        """True (and the item listed as skipped) when `need` seconds do not fit the budget left."""
        if self.budget.fits(need):
            return False
        self.add("skipped", dict(item=item, reason=f"budget: needs ~{need:.0f} s, {max(self.budget.left(), 0):.0f} s left"))
        print(f"gpu_check: skip {item}: not enough budget left", flush=True)
        return True

    def attempt(self, name: str, action) -> None:
        """Run one item or case; a failure (out of memory, say) is recorded and the check goes on."""
        self.current = name
        try:
            action()
        except TimeoutError as e:  # measure() found too little budget to time it
            self.add("skipped", dict(item=name, reason=str(e)))
        except Exception as e:
            self.add("errors", dict(item=name, error=f"{type(e).__name__}: {e}"[:800]))
            print(f"gpu_check: {name} failed: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
        finally:
            self.current = None

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def reset_peak(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float | None:
        return round(torch.cuda.max_memory_allocated() / 2**30, 2) if self.device.type == "cuda" else None


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
    """Black-box step, setup and compile seconds of the planned job (see the module docstring)."""
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


def has_paper_layer(exp: str) -> bool:
    return (CONFIGS / "scaled" / f"{exp}_paper.yaml").exists()


def experiment_names() -> list[str]:
    """The registry's experiments: FIRST, then the others with a paper-size layer, then the rest."""
    rank = {n: i for i, n in enumerate(FIRST)}
    return sorted(discover().experiments, key=lambda n: (not has_paper_layer(n), rank.get(n, len(FIRST))))


def plan_items(check: Check) -> list[tuple[str, float, object]]:
    """(name, seconds it needs at least, action), in the order they run: the paper ResNet and transformer,
    the eager ResNet benchmark, the other experiments with a paper-size layer, the ensemble benchmark,
    the experiments whose paper scale is their quick scale, and the compiled ResNet cases (minutes each)."""
    small, names = check.smoke, experiment_names()
    exps = {e: (e, 1 if small else 15, lambda e=e: experiment_item(check, e)) for e in names}
    paper = [n for n in names if has_paper_layer(n)]
    return [exps[n] for n in paper[:2]] + [("resnet_eager", 1 if small else 15, lambda: resnet_item(check, False))] \
        + [exps[n] for n in paper[2:]] + [("ensemble", 1 if small else 8, lambda: ensemble_item(check))] \
        + [exps[n] for n in names if n not in paper] \
        + [("resnet_compiled", 1 if small else 150, lambda: resnet_item(check, True))]


def run_items(check: Check, todo: list) -> None:
    for i, (name, need, action) in enumerate(todo):
        # extra precision for this item may use what the later items need to start, up to half of what is left
        check.budget.reserve = min(sum(n for _, n, _ in todo[i + 1:]), check.budget.left() / 2)
        if name == "resnet_compiled" and not check.compile:
            check.add("skipped", dict(item=name, reason="--no-compile"))
            continue
        if check.skip(name, need):
            continue
        tic, check.pending = time.monotonic(), [n for n, _, _ in todo[i + 1:]]
        print(f"gpu_check: {name} ({check.budget.left():.0f} s left)", flush=True)
        check.attempt(name, action)
        print(f"gpu_check: {name} took {time.monotonic() - tic:.1f} s", flush=True)


def watchdog(check: Check) -> threading.Timer:
    """At the budget's end, mid-item: list that item as cut off and the rest as not started, write the
    files and exit at once."""
    def cut():
        if check.current is None:  # between items: the loop skips the rest by itself
            return
        if check.lock.acquire(timeout=10):
            check.data["skipped"] += [dict(item=check.current, reason="budget: cut off at the budget's end")] + [
                dict(item=n, reason="budget: spent before it started") for n in check.pending]
            check.write()
        print(f"gpu_check: budget spent during {check.current}; wrote {check.path}", flush=True)
        os._exit(0)
    timer = threading.Timer(max(check.budget.left(), 0), cut)
    timer.daemon = True
    timer.start()
    return timer


def markdown(d: dict) -> str:
    def g(v, unit=1.0):
        return "-" if v is None else f"{v * unit:.3g}"

    def wall(s):
        return f"{s:.0f} s" if s < 600 else f"{s / 3600:.2f} h"
    lines = [f"# gpu_check on {d['device_name']}", "", f"`{d['command']}`: torch {d['torch']}, budget {d['budget_s']:g} s, "
             f"took {d.get('elapsed_s', 0)} s{'; SMOKE sizes, not paper scale' if d['smoke'] else ''}. Protocol "
             "(black-box slopes between runs of N1 and N2 steps; extrapolation): scripts/gpu_check.py's docstring.", "",
             "| experiment | job timed | jobs | members | ms/step | throughput | compile s | setup s | eval s | peak GiB "
             "| paper steps | full job | full sweep |", "|" + "---|" * 13]
    lines += [f"| {r['experiment']} | {r['job']} | {r['jobs']} | {r['members']} | {g(r['step_s'], 1e3)} | "
              f"{g(r['throughput'])} {r['unit']} | {r['compile_s']:.1f} | {r['setup_s']:.1f} | {g(r['eval_s'])} | "
              f"{g(r['peak_gib'])} | {r['paper_steps']} | {wall(r['job_wall_s'])} | {wall(r['sweep_wall_s'])} |"
              for r in d["experiments"]]
    lines += ["", "| ensemble M | engine | engine ms/step | loop ms/step | speedup | compile s |", "|" + "---|" * 6]
    lines += [f"| {r['M']} | {'compiled' if r['compiled'] else 'eager'} | {g(r['step_s'], 1e3)} | "
              f"{g(r['loop_step_s'], 1e3)} | {g(r['speedup'])}x | {r['compile_s']:.1f} |" for r in d["ensemble"]]
    lines += ["", "| ResNet18 (batch per member) | images/s | ms/step | compile s | peak GiB |", "|" + "---|" * 5]
    lines += [f"| {r['case']} (B={r['batch']}) | {g(r['throughput'])} | {g(r['step_s'], 1e3)} | "
              f"{r['compile_s']:.1f} | {g(r['peak_gib'])} |" for r in d["resnet"]]
    lines += [""] + [f"- skipped {s['item']}: {s['reason']}" for s in d["skipped"]]
    lines += [f"- FAILED {e['item']}: {e['error']}" for e in d["errors"]]
    lines += [f"- {r['experiment']}: {n}" for r in d["experiments"] for n in r["notes"] + [f"data: {r['data']}"]]
    lines += [f"- {r.get('case') or 'ensemble M=' + str(r['M'])}: {n}" for r in d["ensemble"] + d["resnet"]
              for n in r.get("notes", [])]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--budget-s", type=float, required=True, help="limit for the whole script, imports included")
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--smoke", action="store_true", help="tiny sizes (the CPU test); numbers mean nothing")
    p.add_argument("--no-compile", action="store_true", help="time no torch.compile'd step (compile=false)")
    p.add_argument("--only", nargs="+", metavar="ITEM", help="these items alone: experiments or " + ", ".join(BENCHES))
    p.add_argument("--out-dir", default=str(ROOT / "results" / "bench"))
    p.add_argument("--name", help="names the files gpu_<name>.json|md (default: the device)")
    args = p.parse_args(argv)
    allowed = experiment_names() + BENCHES
    for item in args.only or []:
        if item not in allowed:
            p.error(f"--only {item}: unknown item; allowed: {', '.join(allowed)}")
    if args.budget_s <= 0:
        p.error(f"--budget-s {args.budget_s:g}: must be a positive number of seconds")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device here; on a CPU run --device cpu --smoke")
    return args


def describe(args: argparse.Namespace, argv: list[str]) -> dict:
    """The record's header: machine, software, command."""
    name = args.name or (torch.cuda.get_device_name().replace(" ", "_") if args.device == "cuda" else "cpu")
    return dict(device=args.device, device_name=name, torch=torch.__version__, cuda=torch.version.cuda,
                python=platform.python_version(), smoke=args.smoke, budget_s=args.budget_s,
                command="scripts/gpu_check.py " + " ".join(argv), started=time.strftime("%Y-%m-%d %H:%M:%S"))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.device == "cuda":  # the CUDA context is paid here, not by the first item
        torch.ones(1, device="cuda").add_(1)
        torch.cuda.synchronize()
    info = describe(args, argv)
    path = Path(args.out_dir) / f"gpu_{info['device_name']}{'_smoke' if args.smoke else ''}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as scratch:
        check = Check(args, path, info, Path(scratch))
        timer = watchdog(check)
        run_items(check, [t for t in plan_items(check) if not args.only or t[0] in args.only])
        timer.cancel()
        check.write()
    print(markdown(check.data) + f"gpu_check: wrote {path} and {path.with_suffix('.md')}")
    return 1 if check.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
