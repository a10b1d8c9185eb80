"""Compile time of an experiment's train step with an empty vs a warm Inductor cache (issue 13).

    python scripts/bench_compile.py [--only fig1_left ...] [--threads 1]

For each experiment (its default job, no sweep axis set), in fresh processes whose
TORCHINDUCTOR_CACHE_DIR is a new empty folder (cold: nothing compiled on this machine), then the same
folder again (warm: what a second job of the same structure, or a rerun, finds):
  engine   Ensemble.make_step(compile=True): make_fx trace + Inductor (symexp.ensemble.GraphStep)
  dynamo   torch.compile of the same eager step (the engine's path before issue 13)
The figure is the wall time of the first call (trace + compile + one step) minus one eager step,
with the process CPU utilisation of that call. Writes results/bench/compile_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def first_call(exp: str, path: str) -> dict:
    """In this process: seconds of the first compiled call of `exp`'s step (minus one eager step)."""
    import torch
    from hydra import compose, initialize_config_dir

    from symexp import optim
    from symexp.batcher import Batcher
    from symexp.config import validate_parts
    from symexp.ensemble import Ensemble, member_table

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={exp}", f"paths.results={tempfile.gettempdir()}"])
    c, parts = validate_parts(cfg)
    dev, dtype = torch.device("cpu"), getattr(torch, c["dtype"])
    data = parts.data.build(dev, dtype)
    ens = Ensemble(parts.model.build(data), parts.symmetry, parts.breaking, member_table(c["ensemble"]),
                   data.task, dev, dtype)
    rule, batcher = parts.optim.rule(), Batcher(data, c["optim"]["batch_size"], ens.members, ens.hyper["label_noise"])
    decayed = frozenset(k for k in ens.raw0 if not any(s in k for s in c["reg"]["exclude"]))
    times = {}
    for kind in ("eager", path):
        state = ens.init_state(rule)
        step = ens.make_step(rule, decayed, batcher.per_member_x, batcher.per_member_y, c["train"]["max_loss"],
                             kind == "engine", state.buffers)
        step = torch.compile(step, dynamic=False) if kind == "dynamo" else step
        x, y = batcher.next()
        c0, t0 = time.process_time(), time.perf_counter()
        step(state.raw, state.opt, state.alive, x, y, ens.hyper["lr"])
        times[kind] = (time.perf_counter() - t0, time.process_time() - c0)
    wall, cpu = times[path]
    return dict(compile_s=wall - times["eager"][0], cpu_util=cpu / wall, members=ens.size)


def in_subprocess(exp: str, path: str, cache: str, threads: int, extra_env: dict) -> dict:
    env = dict(os.environ, **extra_env, TORCHINDUCTOR_CACHE_DIR=cache, OMP_NUM_THREADS=str(threads))
    code = f"import json, sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import bench_compile as b; " \
           f"print(json.dumps(b.first_call({exp!r}, {path!r})))"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="+", default=["fig1_left"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--paths", nargs="+", default=["engine", "dynamo"], choices=["engine", "dynamo"])
    p.add_argument("--env", nargs="*", default=[], metavar="KEY=VALUE",
                   help="environment of the compiling processes, e.g. TORCHINDUCTOR_COMPILE_THREADS=1")
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "compile_cpu.json"))
    args = p.parse_args()
    extra_env = dict(kv.split("=", 1) for kv in args.env)
    rows = []
    for exp in args.only:
        for path in args.paths:
            with tempfile.TemporaryDirectory(prefix="inductor-cold-") as cache:
                cold = in_subprocess(exp, path, cache, args.threads, extra_env)
                warm = in_subprocess(exp, path, cache, args.threads, extra_env)
            rows.append(dict(experiment=exp, path=path, env=extra_env, cold=cold, warm=warm, loadavg=os.getloadavg()))
            print(f"{exp:20s} {path:7s} cold {cold['compile_s']:6.1f} s (cpu {cold['cpu_util']:.2f})  "
                  f"warm {warm['compile_s']:6.1f} s (cpu {warm['cpu_util']:.2f})", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    note = "fresh TORCHINDUCTOR_CACHE_DIR per path (cold), then the same dir again (warm)"
    out.write_text(json.dumps(dict(threads=args.threads, rows=rows, note=note), indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
