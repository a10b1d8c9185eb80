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
import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

T0 = time.monotonic()  # the budget counts the imports of torch, Hydra and symexp too

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# symexp without an install (the GPU machine has none), and gpu_jobs beside this file whatever the cwd
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from gpu_jobs import CONFIGS, ensemble_item, experiment_item, resnet_item  # noqa: E402
from gpu_jobs import image_root, sweep_jobs  # noqa: E402, F401  (tests/test_gpu_check.py reaches them here)
from symexp.experiments import discover  # noqa: E402

FIRST = ["fig1_right_resnet", "transformer"]  # the paper-size jobs the issue asks about first
BENCHES = ["resnet_eager", "ensemble", "resnet_compiled"]


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
