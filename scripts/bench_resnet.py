"""Train-step throughput of the CIFAR ResNet18 through the ensemble engine, on the current device.

    python scripts/bench_resnet.py                                   # full width, batch 128, 3x32x32
    python scripts/bench_resnet.py --width 0.125 --batch 32 --steps 3  # a quick CPU run
    python scripts/bench_resnet.py --width 0.0625 --batch 64 --size 28 --channels 1 --members 5 \
        --threads 1 --compile     # fig1_right_resnet's shapes, one thread as a reproduce job has
    python scripts/bench_resnet.py --width 0.0625 --batch 64 --size 28 --channels 1 --members 5 \
        --threads 1 --cpp-wrapper --repeats 2   # Inductor's Python vs C++ wrapper for that step

(a) precision: images/s of one member's batched train step (SGD momentum, coupled L2, BatchNorm
    statistics updated) in fp32 vs bf16 autocast with channels_last stored images, and each again under
    torch.compile with --compile (compile time excluded: paid in a warm-up step).
(b) BatchNorm members: M members as ONE vmapped step with stacked per-member BatchNorm buffers vs
    the same M members run one after another as separate M=1 steps (the "separate jobs" option),
    eager and, with --compile, compiled (Ensemble.make_step(compile=True)).
(c) with --cpp-wrapper (CPU; replaces a and b): Inductor's Python wrapper vs its C++ wrapper
    (config `cpp_wrapper`) for the compiled M-member step. A cold compile runs in a child process on an
    empty cache, --repeats times per wrapper, interleaved: its wall time and CPU seconds, the child's own
    and its g++ processes' (getrusage of waited-for children). Then both steps from one warm cache,
    their repeats interleaved in one process: seconds per step. Writes resnet_cpp_wrapper_<device>.json.
Each number is the min over --repeats of --steps timed steps, with the process CPU utilisation of
that repeat (cpu time / wall time); compile_s is the warm-up call (trace + compile, or a cache load)
minus one timed step. Writes results/bench/resnet_<device>.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from symexp import optim
from symexp.bench import min_time
from symexp.components import load
from symexp.data import TensorData
from symexp.ensemble import Ensemble, member_table
from symexp.models.resnet import ResNet18

ROOT = Path(__file__).resolve().parent.parent


def make_step(device, width: float, members: int, batch: int, bf16: str, compile: bool, size: int, channels: int,
              cpp_wrapper: bool = False):
    """A ready-to-call engine step on random images and the images it consumes per call. The bf16
    variant also stores the images channels_last, as symexp.data.images does on CUDA."""
    fmt = torch.channels_last if bf16 == "always" else torch.contiguous_format
    data = TensorData(torch.randn(batch, channels, size, size, device=device).contiguous(memory_format=fmt),
                      torch.randint(0, 10, (batch,), device=device), "classification")
    ens = Ensemble(ResNet18(channels, 10, width, bf16), load("symmetry", "plain"), load("breaking", "none"),
                   member_table(dict(seeds=list(range(members)), weight_decays=[5e-4], lrs=[0.05], label_noises=[0.0])),
                   "classification", device, torch.float32)
    rule = optim.Rule(name="sgd", momentum=0.9)
    state = ens.init_state(rule)
    step = ens.make_step(rule, frozenset(ens.raw0), True, True, 1e8, compile, state.buffers, cpp_wrapper=cpp_wrapper)
    x = data.x.expand(members, *data.x.shape).contiguous()  # per-member batches, stored as the Batcher gives them
    y = data.y.expand(members, *data.y.shape).contiguous()
    lr = ens.hyper["lr"]

    def run():
        state.raw, state.opt, state.alive, _ = step(state.raw, state.opt, state.alive, x, y, lr)
    return run, members * batch


def timed(run, steps: int, repeats: int, device) -> tuple[float, float, float]:
    """(min seconds per step over repeats, CPU utilisation of that repeat, warm-up seconds)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    warm, _ = min_time(run, 1, sync)  # warm-up: compile, cudnn.benchmark autotuning, allocator
    wall, util = min_time(lambda: [run() for _ in range(steps)], repeats, sync)
    return wall / steps, util, warm


def cold_compile(args, cpp: bool) -> dict:
    """One cold compile of the step, in a child process on an empty Inductor cache: wall and CPU seconds."""
    shape = [f"--width={args.width}", f"--batch={args.batch}", f"--size={args.size}",
             f"--channels={args.channels}", f"--members={args.members}", f"--threads={args.threads}"]
    with tempfile.TemporaryDirectory() as cache:
        before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([sys.executable, __file__, "--cold-child", *shape, *(["--cpp"] if cpp else [])], check=True,
                       env={**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache})
        wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dict(cpp_wrapper=cpp, wall_s=round(wall, 2), cpu_s=round(cpu, 2), loadavg=os.getloadavg()[0])


def cpp_wrapper_ab(args, report: dict, out: Path) -> None:
    """(c): cold compiles, then warm steps, of the two wrappers."""
    report["cold_compiles"] = []
    for _ in range(args.repeats):
        for cpp in (False, True):
            report["cold_compiles"].append(cold_compile(args, cpp))
            print(report["cold_compiles"][-1], flush=True)
            out.write_text(json.dumps(report, indent=2) + "\n")
    cpu = torch.device("cpu")
    runs = {cpp: make_step(cpu, args.width, args.members, args.batch, "never", True, args.size, args.channels, cpp)
            for cpp in (False, True)}
    best = {}
    for _ in range(args.repeats):
        for cpp, (run, images) in runs.items():
            run()  # a warm-up step (the first one compiles, or loads from the cache)
            wall, util = min_time(lambda: [run() for _ in range(args.steps)], 1)
            if wall < best.get(cpp, (float("inf"),))[0]:
                best[cpp] = (wall, util)
    report["steps"] = [dict(cpp_wrapper=cpp, s_per_step=w / args.steps, images_per_s=runs[cpp][1] * args.steps / w,
                            cpu_util=u) for cpp, (w, u) in best.items()]
    report["cpp_over_python"] = dict(
        cold_cpu_s=min(r["cpu_s"] for r in report["cold_compiles"] if r["cpp_wrapper"])
        / min(r["cpu_s"] for r in report["cold_compiles"] if not r["cpp_wrapper"]),
        s_per_step=best[True][0] / best[False][0])
    report["loadavg_after"] = os.getloadavg()
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(report["steps"], report["cpp_over_python"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--width", type=float, default=1.0, help="stage-width multiplier (1 = 64..512)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--size", type=int, default=32, help="image side")
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--members", type=int, default=4, help="M for the batched-vs-separate comparison")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also time compiled steps")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--skip-precision", action="store_true", help="skip fp32 vs bf16 autocast (one member)")
    p.add_argument("--cpp-wrapper", action="store_true", help="(c) only: Python vs C++ wrapper of the compiled step")
    p.add_argument("--cold-child", action="store_true", help=argparse.SUPPRESS)  # (c)'s child: compile, one step
    p.add_argument("--cpp", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.cold_child:
        run, _ = make_step(torch.device("cpu"), args.width, args.members, args.batch, "never", True, args.size,
                           args.channels, args.cpp)
        run()
        return
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name().replace(" ", "_") if device.type == "cuda" else f"cpu{os.cpu_count()}"
    kind = "resnet_cpp_wrapper" if args.cpp_wrapper else "resnet"
    out = Path(args.out) if args.out else ROOT / "results" / "bench" / f"{kind}_{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report = dict(device=str(device), device_name=name, torch=torch.__version__, platform=platform.platform(),
                  threads=torch.get_num_threads(), steps=args.steps, repeats=args.repeats,
                  loadavg_before=os.getloadavg(),
                  shape=dict(width=args.width, batch=args.batch, size=args.size, channels=args.channels), rows=[])

    def record(case, members, bf16, compile):
        """Time one case; the JSON is rewritten after each, so a run cut short keeps what it measured."""
        run, images = make_step(device, args.width, members, args.batch, bf16, compile, args.size, args.channels)
        sec, util, warm = timed(run, args.steps, args.repeats, device)
        report["rows"].append(dict(case=case, members=members, bf16=bf16, compile=compile, s_per_step=sec,
                                   images_per_s=images / sec, cpu_util=util, compile_s=warm - sec))
        report["loadavg_after"] = os.getloadavg()
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"{case:28s} M={members:<3d} {images / sec:10.1f} img/s  {sec * 1e3:9.1f} ms/step  cpu {util:.2f}"
              f"  warm-up {warm:6.1f} s", flush=True)
        return sec

    if args.cpp_wrapper:
        report["members"] = args.members
        cpp_wrapper_ab(args, report, out)
        return
    report["bn_members"] = []
    for compile in ([False, True] if args.compile else [False]):
        tag = "+compile" if compile else ""
        batched = record(f"bn/batched_vmap{tag}", args.members, "auto", compile)
        separate = args.members * record(f"bn/one_member{tag}", 1, "auto", compile)  # M separate jobs: M steps
        report["bn_members"].append(dict(members=args.members, compile=compile, batched_s_per_step=batched,
                                         separate_s_per_step=separate, batched_over_separate=batched / separate))
        print(f"BatchNorm members{tag}: {args.members} batched in one vmapped step {batched * 1e3:.1f} ms vs "
              f"{args.members} separate steps {separate * 1e3:.1f} ms -> batched/separate = {batched / separate:.2f}")
    if not args.skip_precision:
        for compile, bf16 in itertools.product([False, True] if args.compile else [False], ("never", "always")):
            record(f"precision/{'bf16+cl' if bf16 == 'always' else 'fp32'}{'+compile' if compile else ''}",
                   1, bf16, compile)
    print(out)


if __name__ == "__main__":
    main()
