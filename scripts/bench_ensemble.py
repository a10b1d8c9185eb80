"""Batched ensemble vs per-member loops and vs the machine's matmul peak, Figure 1 (left) members
(theta = u * v, MSE, SGD with coupled decay; d = 100, n = 1000, full batch).

    python scripts/bench_ensemble.py [--sizes 1 8 64 256] [--steps 200] [--repeats 5] [--threads N]
    python scripts/bench_ensemble.py --profile 64 [--threads 1]   # where the engine step's time goes
    python scripts/bench_ensemble.py --sizes 1 64 --fuse 4 16 --out results/bench/ensemble_fused_cpu.json

For each M, seconds for --steps steps of every member, all in one process with the same threads:
  loop_eager      M nn-free parameter pairs, each with its own torch.optim.SGD (the old baseline)
  loop_compiled   the strongest per-member baseline: a minimal step written with torch.func.grad and
                  torch.compile (no engine), called once per member per step
  hand_batched    the same math written by hand on [M, d] tensors, torch.func.grad + torch.compile
  engine_vmap     the engine's batched step (Ensemble.make_step(trace=False)), vmapped op by op
  engine_graph    the same step traced once into a flat ATen graph (make_step's uncompiled default)
  engine_dynamo   torch.compile of the engine's vmapped step (its compiled path before issue 13)
  engine          the engine's batched step, compiled (what `compile: true` experiments run)
  engine_fusedK   with --fuse K: K of those steps traced into one graph and compiled, one call per K
                  steps (full batch: every step sees the same data): what a call's own overhead costs
Compile time is paid in a warm-up and excluded. Repeats are interleaved across the methods (noise
from other processes spreads over all of them) and each figure is the min over repeats, with the
process CPU time of that repeat: cpu_util = CPU time / wall time (~threads when the cores are ours),
and the CPU seconds per step, which other processes on the machine disturb far less than wall time.
Writes results/bench/ensemble_<device>.json: the rows, the float32 matmul peak (2048^3, same threads),
the three issue-13 targets and the load average.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from torch.func import grad
from torch.fx.experimental.proxy_tensor import make_fx

from symexp import optim
from symexp.components import load
from symexp.ensemble import Ensemble, member_table

DATA = dict(n_train=1000, dim=100, teacher="sparse", nonzero=10, noise=0.5, seed=0)
LR, WD = 0.05, 1e-3


def member_loss(u, v, x, y):
    return ((x @ (u * v) - y) ** 2).mean()


def member_step(u, v, x, y, lr, wd):
    """The minimal per-member step: one member's gradient, SGD with coupled decay."""
    gu, gv = grad(member_loss, argnums=(0, 1))(u, v, x, y)
    return u - lr * (gu + wd * u), v - lr * (gv + wd * v)


def batched_loss(u, v, x, y):
    return ((u * v) @ x.T - y).pow(2).mean(1).sum()  # members are independent: d(sum)/du_m = d(loss_m)/du_m


def batched_step(u, v, x, y, lr, wd):
    """The same math by hand on [M, d] tensors; lr, wd are [M, 1]."""
    gu, gv = grad(batched_loss, argnums=(0, 1))(u, v, x, y)
    return u - lr * (gu + wd * u), v - lr * (gv + wd * v)


def init_pairs(M: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gens = [torch.Generator().manual_seed(m) for m in range(M)]
    return [(0.1 * torch.randn(100, generator=g), 0.1 * torch.randn(100, generator=g)) for g in gens]


def loop_eager(data, M: int):
    def run(steps: int) -> None:
        models = [(torch.nn.Parameter(u), torch.nn.Parameter(v)) for u, v in init_pairs(M)]
        opts = [torch.optim.SGD(p, lr=LR, weight_decay=WD) for p in models]
        for _ in range(steps):
            for (u, v), opt in zip(models, opts):
                opt.zero_grad(set_to_none=True)
                member_loss(u, v, data.x, data.y).backward()
                opt.step()
    return run


def loop_compiled(data, M: int, compiled):
    lr, wd = torch.tensor(LR), torch.tensor(WD)

    def run(steps: int) -> None:
        pairs = init_pairs(M)
        for _ in range(steps):
            pairs = [compiled(u, v, data.x, data.y, lr, wd) for u, v in pairs]
    return run


def hand_batched(data, M: int, compiled):
    lr, wd = torch.full((M, 1), LR), torch.full((M, 1), WD)

    def run(steps: int) -> None:
        u, v = (torch.stack(t) for t in zip(*init_pairs(M)))
        for _ in range(steps):
            u, v = compiled(u, v, data.x, data.y, lr, wd)
    return run


def u_v_ensemble(data, M: int) -> Ensemble:
    """M members of theta = u * v (seeds 0..M-1, one lr and decay): what the engine rows train."""
    members = member_table(dict(seeds=list(range(M)), weight_decays=[WD], lrs=[LR], label_noises=[0.0]))
    return Ensemble(load("model", "linear", init_scale=0.1).build(data), load("symmetry", "rescaling"),
                    load("breaking", "none"), members, "regression", data.x.device, torch.float32)


def engine(data, M: int, mode: str):
    """The engine's step: mode vmap (make_step(trace=False): the vmapped step op by op), graph (its traced
    ATen graph, the uncompiled default), compiled (make_step(compile=True)) or dynamo (torch.compile of the
    vmapped step: the engine's compiled path before issue 13)."""
    ens = u_v_ensemble(data, M)
    step = ens.make_step(optim.Rule(), frozenset(ens.raw0), False, False, 1e8, compile=mode == "compiled",
                         trace=mode in ("graph", "compiled"))
    step = torch.compile(step, dynamic=False) if mode == "dynamo" else step

    def run(steps: int) -> None:
        state = ens.init_state(optim.Rule())
        raw, opt, alive = state.raw, state.opt, state.alive
        for _ in range(steps):
            raw, opt, alive, _ = step(raw, opt, alive, data.x, data.y, ens.hyper["lr"])
    return run


def engine_fused(data, M: int, k: int):
    """K engine steps in one compiled call: the step's flat ATen form (GraphStep._flat) applied K times,
    each step's parameters, optimiser state and live mask feeding the next, traced and compiled once."""
    from torch._inductor import standalone_compile

    ens = u_v_ensemble(data, M)
    step = ens.make_step(optim.Rule(), frozenset(ens.raw0), False, False, 1e8, compile=False)
    state = ens.init_state(optim.Rule())
    step(state.raw, state.opt, state.alive, data.x, data.y, ens.hyper["lr"])  # fixes its key order
    carried = len(step.raw_keys) + len(step.opt_keys) + 1  # raw, opt, alive in; raw, opt, ok out

    def k_steps(*ts):
        now, rest = ts[:carried], ts[carried:]
        for _ in range(k):
            out = step._flat(*now, *rest)
            now = out[:carried]
        return out

    def start():
        s = ens.init_state(optim.Rule())
        return [*(s.raw[key] for key in step.raw_keys), *(s.opt[key] for key in step.opt_keys), s.alive]

    rest = [data.x, data.y, ens.hyper["lr"], *step.extras]
    graph = make_fx(k_steps, tracing_mode="fake", _allow_non_fake_inputs=True)(*start(), *rest)
    compiled = standalone_compile(graph, [*start(), *rest], dynamic_shapes="from_example_inputs")
    one_by_one = start()  # the same K steps one call each: the fused graph must compute what they compute
    for _ in range(k):
        one_by_one = step._flat(*one_by_one, *rest)[:carried]
    fused = compiled(*start(), *rest)[:carried]
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(fused, one_by_one)), "fused != K steps"

    def run(steps: int) -> None:
        now = start()
        for _ in range(steps // k):
            now = compiled(*now, *rest)[:carried]
    return run


def timed(methods: dict, repeats: int) -> dict:
    """{name: (min wall s, CPU s of that repeat, min CPU s)} of `run(steps)` for {name: (run, steps)},
    repeats interleaved across the methods so that every method sees the same spells of load."""
    best = {name: (float("inf"), 0.0, float("inf")) for name in methods}
    for _ in range(repeats):
        for name, (run, steps) in methods.items():
            c0, t0 = time.process_time(), time.perf_counter()
            run(steps)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            w, c, cmin = best[name]
            best[name] = (wall, cpu, min(cmin, cpu)) if wall < w else (w, c, min(cmin, cpu))
    return best


def matmul_peak(repeats: int) -> tuple[float, float]:
    """float32 2048^3 matmul: (GFLOP/s wall, GFLOP per CPU second), best of repeats."""
    a = torch.randn(2048, 2048)
    res = timed({"mm": (lambda n: [a @ a for _ in range(n)], 5)}, repeats)["mm"]
    flops = 5 * 2 * 2048**3
    return flops / res[0] / 1e9, flops / res[2] / 1e9


def bench_size(data, M: int, steps: int, repeats: int, compiled_member, compiled_batched,
               fuse: tuple[int, ...] = ()) -> list[dict]:
    """One row per method at ensemble size M, as per-step figures (the loops run fewer steps at large M)."""
    loop_steps = max(10, steps * 16 // max(M, 16))
    methods = {"loop_eager": (loop_eager(data, M), loop_steps),
               "loop_compiled": (loop_compiled(data, M, compiled_member), loop_steps),
               "hand_batched": (hand_batched(data, M, compiled_batched), steps),
               "engine_vmap": (engine(data, M, "vmap"), steps),
               "engine_graph": (engine(data, M, "graph"), steps),
               "engine_dynamo": (engine(data, M, "dynamo"), steps),
               "engine": (engine(data, M, "compiled"), steps)}
    methods |= {f"engine_fused{k}": (engine_fused(data, M, k), steps // k * k) for k in fuse}
    for name, (run, n) in methods.items():
        run(3 if "fused" not in name else n)  # warm-up: compiles, allocator
    flops_step = 4 * DATA["n_train"] * DATA["dim"] * M  # x @ theta and x^T r: 2 n d each, per member
    rows = []
    for name, (wall, cpu, cpu_min) in timed(methods, repeats).items():
        n = methods[name][1]
        rows.append(dict(M=M, method=name, steps=n, us_per_step=wall / n * 1e6, cpu_util=cpu / wall,
                         cpu_us_per_step=cpu_min / n * 1e6, gflops=flops_step * n / wall / 1e9,
                         gflops_per_cpu_s=flops_step * n / cpu_min / 1e9))
    return rows


def targets(rows: list[dict], peak: float, peak_cpu: float) -> dict:
    """The issue-13 targets, from wall time (the target) and from CPU time (robust to other load)."""
    at = {(r["M"], r["method"]): r for r in rows}
    out = {}
    if (64, "engine") in at:
        eng, loop = at[64, "engine"], at[64, "loop_compiled"]
        out["speedup_vs_compiled_loop_M64"] = dict(
            target=20, wall=loop["us_per_step"] / eng["us_per_step"],
            cpu=loop["cpu_us_per_step"] / eng["cpu_us_per_step"])
    if (256, "engine") in at:
        eng = at[256, "engine"]
        out["peak_fraction_M256"] = dict(target=0.6, wall=eng["gflops"] / peak, cpu=eng["gflops_per_cpu_s"] / peak_cpu)
    if (1, "engine") in at:
        eng, minimal = at[1, "engine"], at[1, "loop_compiled"]
        out["overhead_M1_vs_minimal_step"] = dict(
            target=1.3, wall=eng["us_per_step"] / minimal["us_per_step"],
            cpu=eng["cpu_us_per_step"] / minimal["cpu_us_per_step"])
    return out


def profile(data, M: int, steps: int) -> list[dict]:
    """torch.profiler of the compiled engine step and the hand-batched step at M: self CPU time per
    op or Inductor kernel (kernel names are recorded by Inductor's cpp.enable_kernel_profile)."""
    import torch._inductor.config as inductor_config
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    inductor_config.cpp.enable_kernel_profile = True
    rows = []
    runs = {"engine": engine(data, M, "compiled"), "engine_dynamo": engine(data, M, "dynamo"),
            "hand_batched": hand_batched(data, M, torch.compile(batched_step, dynamic=False))}
    for name, run in runs.items():
        run(3)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            run(steps)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        for e in events[:10]:
            rows.append(dict(method=name, M=M, op=e.key[:70], us_per_step=e.self_cpu_time_total / steps,
                             share=e.self_cpu_time_total / total, calls_per_step=e.count / steps))
            print(f"{name:13s} M={M:<4d} {e.key[:60]:60s} {rows[-1]['us_per_step']:8.1f} us/step "
                  f"{rows[-1]['share']:6.1%}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--profile", type=int, metavar="M", help="only profile the compiled steps at this M")
    p.add_argument("--fuse", type=int, nargs="*", default=[], metavar="K", help="also K steps per compiled call")
    p.add_argument("--out", default="results/bench/ensemble_cpu.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    data = load("data", "regression", **DATA).build(torch.device("cpu"), torch.float32)
    if args.profile:
        out = Path(args.out).with_name(f"ensemble_profile_M{args.profile}.json")
        rows = profile(data, args.profile, args.steps)
        out.write_text(json.dumps(dict(threads=args.threads, loadavg=os.getloadavg(), rows=rows), indent=2) + "\n")
        return
    compiled_member = torch.compile(member_step, dynamic=False)
    compiled_batched = torch.compile(batched_step, dynamic=False)
    load_before, rows = os.getloadavg(), []
    for M in args.sizes:
        rows += bench_size(data, M, args.steps, args.repeats, compiled_member, compiled_batched, tuple(args.fuse))
        for r in (r for r in rows if r["M"] == M):
            print(f"M={M:4d} {r['method']:14s} {r['us_per_step']:9.1f} us/step  cpu {r['cpu_util']:.2f}  "
                  f"{r['cpu_us_per_step']:9.1f} cpu-us/step  {r['gflops']:6.1f} GFLOP/s  "
                  f"{r['gflops_per_cpu_s']:6.1f} GFLOP/cpu-s", flush=True)
    peak, peak_cpu = matmul_peak(args.repeats)
    goals = targets(rows, peak, peak_cpu)
    result = dict(device="cpu", torch=torch.__version__, threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
                  machine=platform.processor() or platform.machine(), steps=args.steps, repeats=args.repeats,
                  loadavg_before=load_before, loadavg_after=os.getloadavg(), matmul_peak_gflops=peak,
                  matmul_peak_gflops_per_cpu_s=peak_cpu, targets=goals, rows=rows,
                  note="per-step figures: min wall over interleaved repeats (us_per_step, with cpu_util = CPU/wall "
                       "of that repeat) and min CPU time (cpu_us_per_step); loops run fewer steps at large M")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"matmul peak {peak:.1f} GFLOP/s ({peak_cpu:.1f} per CPU second), load {os.getloadavg()}")
    for name, g in goals.items():
        print(f"{name}: {g['wall']:.2f} (wall), {g['cpu']:.2f} (CPU time); target {g['target']}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
