"""Batched ensemble vs a per-member Python loop, Figure 1 (left) members (u*v regression, d=100, n=1000).

    python scripts/bench_ensemble.py [--sizes 1 8 64 256] [--steps 200] [--repeats 3]

For each M: seconds for 200 full-batch steps of (a) the loop: M ordinary modules, each with its own
torch.optim.SGD, (b) the engine's batched step eager, (c) compiled (compile time excluded, paid in a
warm-up). Reports the min over repeats, the process CPU utilisation during each timing (cpu time /
wall time; ~2.0 means both cores busy), speedups vs the loop, and achieved GFLOP/s of the batched
step against this machine's measured float32 matmul peak. Writes results/bench/ensemble_<device>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from symexp import optim
from symexp.bench import min_time
from symexp.data import build_data
from symexp.ensemble import Ensemble, member_table
from symexp.models import build_model

DATA = dict(name="regression", n_train=1000, dim=100, teacher="sparse", nonzero=10, noise=0.5, seed=0)


def loop_run(data, members, steps: int) -> None:
    models = []
    for m in members:
        g = torch.Generator().manual_seed(m["seed"])
        u = torch.nn.Parameter(0.1 * torch.randn(100, generator=g))
        v = torch.nn.Parameter(0.1 * torch.randn(100, generator=g))
        models.append((u, v, torch.optim.SGD([u, v], lr=m["lr"], weight_decay=m["weight_decay"])))
    for _ in range(steps):
        for u, v, opt in models:
            opt.zero_grad(set_to_none=True)
            ((data.x @ (u * v) - data.y) ** 2).mean().backward()
            opt.step()


def batched_run(ens: Ensemble, step, steps: int, data) -> None:
    state = ens.init_state(optim.Rule())
    raw, opt, alive = state.raw, state.opt, state.alive
    for _ in range(steps):
        raw, opt, alive, _ = step(raw, opt, alive, data.x, data.y, ens.hyper["lr"])


def matmul_peak(device: torch.device, repeats: int) -> float:
    a = torch.randn(2048, 2048, device=device)
    sec, _ = min_time(lambda: [a @ a for _ in range(10)], repeats)
    return 10 * 2 * 2048**3 / sec / 1e9


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 64, 256])
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="results/bench")
    args = p.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = build_data(DATA, device, torch.float32)
    model = build_model({"name": "linear", "init_scale": 0.1}, data)
    rows = []
    for M in args.sizes:
        ens_cfg = dict(seeds=list(range(M)), weight_decays=[1e-3], lrs=[0.05], label_noises=[0.0])
        members = member_table(ens_cfg)
        ens = Ensemble(model, "rescaling", {"name": "none", "scale": 0.0}, members, "regression", device, torch.float32)
        decayed = frozenset(ens.raw0)
        eager = ens.make_step(optim.Rule(), decayed, False, False, 1e8, compile=False)
        compiled = ens.make_step(optim.Rule(), decayed, False, False, 1e8, compile=True)
        batched_run(ens, compiled, 3, data)  # warm-up: pays the compile
        loop_s, loop_cpu = min_time(lambda: loop_run(data, members, args.steps), args.repeats)
        eager_s, eager_cpu = min_time(lambda: batched_run(ens, eager, args.steps, data), args.repeats)
        comp_s, comp_cpu = min_time(lambda: batched_run(ens, compiled, args.steps, data), args.repeats)
        flops = 4 * 1000 * 100 * M * args.steps  # forward x@w and backward x^T r: 2 x 2nd per member-step
        rows.append(dict(M=M, loop_s=loop_s, loop_cpu=loop_cpu, eager_s=eager_s, eager_cpu=eager_cpu,
                         compiled_s=comp_s, compiled_cpu=comp_cpu, speedup_eager=loop_s / eager_s,
                         speedup=loop_s / comp_s, compiled_gflops=flops / comp_s / 1e9))
        r = rows[-1]
        print(f"M={M:4d} loop {loop_s:7.3f}s (cpu {loop_cpu:.2f})  eager {eager_s:6.3f}s ({r['speedup_eager']:5.1f}x)"
              f"  compiled {comp_s:6.3f}s ({r['speedup']:5.1f}x, cpu {comp_cpu:.2f}, {r['compiled_gflops']:.1f} GFLOP/s)",
              flush=True)
    peak = matmul_peak(device, args.repeats)
    result = dict(device=str(device), torch=torch.__version__, threads=torch.get_num_threads(),
                  cpu_count=os.cpu_count(), machine=platform.processor() or platform.machine(),
                  steps=args.steps, repeats=args.repeats, matmul_peak_gflops=peak, rows=rows,
                  note="times are min over repeats; *_cpu = process CPU time / wall time during that repeat")
    out = Path(args.out) / f"ensemble_{device.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"matmul peak {peak:.1f} GFLOP/s float32; wrote {out}")


if __name__ == "__main__":
    main()
