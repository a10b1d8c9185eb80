"""How long `symexp.audit` takes on a full-width ResNet18 (11.2M parameters) and a 6-layer, 384-wide
transformer on this CPU: the whole audit, and its stages (trace by running on a probe input, discover,
measure), each the min over --repeats with the process CPU utilisation of that repeat (symexp.bench).

    python scripts/bench_audit.py                 # -> results/bench/audit_cpu.json
    python scripts/bench_audit.py --repeats 5 --out /tmp/audit.json

Two weight states per model: as initialised (no unit has a near-duplicate, so the exact
duplicate-unit count is skipped: every live unit is its own group) and with two planted duplicate
units in every unit layer (the exact, slower count of symexp.metrics.independent_units runs).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path

import torch

from symexp.audit import audit
from symexp.audit.core import measure, thresholds
from symexp.audit.discover import discover
from symexp.audit.trace import trace
from symexp.bench import min_time
from symexp.models.resnet import ResNet18
from symexp.models.transformer import Transformer

ROOT = Path(__file__).resolve().parent.parent


def plant_duplicates(model: torch.nn.Module) -> int:
    """Unit 1 := unit 0 in every permutation finding's unit layer; returns how many layers."""
    found = discover(trace(model))
    layers = 0
    with torch.no_grad():
        params = dict(model.named_parameters())
        for f in found.findings:
            if f.symmetry != "permutation":
                continue
            for name in (f.spec["w_in"], *f.spec["rows"]):
                params[name][1] = params[name][0]
            for name in f.spec["out"]:
                params[name][:, 1] = params[name][:, 0]
            layers += 1
    return layers


def bench_model(name: str, make, repeats: int) -> list[dict]:
    out = []
    for state in ("init", "planted"):
        torch.manual_seed(0)
        model = make()
        planted = plant_duplicates(model) if state == "planted" else 0
        n_params = sum(p.numel() for p in model.parameters())
        th = thresholds()
        graph = trace(model)
        found = discover(graph)
        theta = {n: p.detach()[None] for n, p in model.named_parameters()}
        row = {"model": name, "weights": state, "parameters": n_params, "planted_layers": planted,
               "findings": len(found.findings), "rows": len(audit(model))}
        for stage, fn in (("total", lambda: audit(model)), ("trace", lambda: trace(model)),
                          ("discover", lambda: discover(graph)), ("measure", lambda: measure(found, theta, th))):
            wall, util = min_time(fn, repeats)
            row[f"{stage}_s"], row[f"{stage}_cpu_util"] = round(wall, 4), round(util, 2)
            row[f"{stage}_cpu_s"] = round(wall * util, 4)  # process CPU seconds of that repeat
        print(json.dumps(row))
        out.append(row)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "audit_cpu.json"))
    args = p.parse_args()
    models = {"resnet18_w1": lambda: ResNet18(3, 10, 1.0),
              "transformer_6x384": lambda: Transformer(65, 256, 6, 6, 384, 0.02)}
    rows = [r for name, make in models.items() for r in bench_model(name, make, args.repeats)]
    result = {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
              "cpu": _cpu_model(), "platform": platform.platform(), "repeats": args.repeats,
              "load_average": os.getloadavg(), "results": rows}
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
