"""How long `symexp.audit` takes on this CPU: the whole audit and its stages (trace by running on a probe
input, discover, measure, and within measure the spectra of every weight matrix; then the audit with
verify=True), each the min over --repeats with the process CPU utilisation of that repeat (symexp.bench).

    python scripts/bench_audit.py                    # ResNet18, 6x384 transformer -> results/bench/audit_cpu.json
    python scripts/bench_audit.py --models gpt2_small resnet50 --threads 1 --out results/bench/audit_full_cpu.json

Models: resnet18_w1 (11.2M parameters), transformer_6x384 (symexp's own, 10.8M), and the zoo's full-size
gpt2_small (GPT-2 small, 124.4M, random init: Conv1D/addmm, tied head) and resnet50 (bottleneck, 25.6M).
Two weight states per model: as initialised (no unit has a near-duplicate, so the exact duplicate-unit
count is skipped: every live unit is its own group) and with two planted duplicate channels in every
permutation (the exact, slower count of symexp.metrics.independent_units runs); the stages and the
verified audit are timed on the initialised weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from symexp.audit import audit, zoo
from symexp.audit.core import measure, thresholds
from symexp.audit.discover import discover
from symexp.audit.measures import Rows
from symexp.audit.spectra import spectrum_rows
from symexp.audit.trace import trace
from symexp.bench import min_time
from symexp.models.resnet import ResNet18
from symexp.models.transformer import Transformer

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"resnet18_w1": lambda: ResNet18(3, 10, 1.0),
          "transformer_6x384": lambda: Transformer(65, 256, 6, 6, 384, 0.02),
          "gpt2_small": zoo.GPT2, "resnet50": zoo.ResNet}


def plant_duplicates(model: torch.nn.Module) -> int:
    """Channel 1 := channel 0 in every permutation finding's parts; returns how many findings."""
    found = discover(trace(model))
    params = dict(model.named_parameters())
    planted = 0
    with torch.no_grad():
        for f in found.findings:
            if f.symmetry != "permutation":
                continue
            for name, axis in f.spec["parts"]:  # axes of the [out, in] layout: Conv1D weights are stored [in, out]
                t = params[name].T if name in found.graph.transposed else params[name]
                t.select(axis, 1).copy_(t.select(axis, 0))
            planted += 1
    return planted


def bench_model(name: str, repeats: int) -> list[dict]:
    out = []
    for state in ("init", "planted"):
        torch.manual_seed(0)
        model = MODELS[name]()
        planted = plant_duplicates(model) if state == "planted" else 0
        th = thresholds()
        graph = trace(model)
        found = discover(graph)
        theta = {n: p.detach()[None] for n, p in model.named_parameters()}
        df = audit(model)
        row = {"model": name, "weights": state, "parameters": sum(p.numel() for p in model.parameters()),
               "planted_findings": planted, "findings": len(found.findings), "rows": len(df),
               "weight_matrices": df[df.symmetry == "spectrum"].layer.nunique()}
        stages = {"total": lambda: audit(model)}
        if state == "init":
            stages |= {"trace": lambda: trace(model), "discover": lambda: discover(graph),
                       "measure": lambda: measure(found, theta, th),
                       "spectra": lambda: spectrum_rows(Rows(1), graph, theta, th),
                       "total_verified": lambda: audit(model, verify=True)}
        for stage, fn in stages.items():
            wall, util = min_time(fn, repeats)
            row[f"{stage}_s"], row[f"{stage}_cpu_util"] = round(wall, 4), round(util, 2)
            row[f"{stage}_cpu_s"] = round(wall * util, 4)  # process CPU seconds of that repeat
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=["resnet18_w1", "transformer_6x384"])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads (default: all cores)")
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "audit_cpu.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    rows = [r for name in args.models for r in bench_model(name, args.repeats)]
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "cpu": _cpu_model(), "platform": platform.platform(), "repeats": args.repeats,
              "load_average_before": load_before, "load_average_after": os.getloadavg(), "results": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
