"""Does compiling an experiment's train step pay for itself on a fresh machine? (issue 13)

    python scripts/bench_jobs.py [--only fig1_left_noise ...] [--repeats 2]

For each experiment, one job (its sweep's first, or --job N) as `make reproduce` runs it (one thread),
in a fresh process with compile=false and with compile=true on an EMPTY Inductor cache
(TORCHINDUCTOR_CACHE_DIR a new folder: what a newcomer's first run pays), then compile=true again on
that now warm cache. Reported per case: the
job's CPU seconds (user + system of the process and the compiler processes it starts: robust to other
load on a shared machine), its wall seconds and the CPU utilisation (CPU / wall). Min of --repeats.
Writes results/bench/jobs_compile_cpu.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def run_job(exp: str, pins: tuple[str, ...], compile_: bool, cache: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCHINDUCTOR_CACHE_DIR=cache, SYMEXP_PROGRESS="lines")
    with tempfile.TemporaryDirectory() as results:
        before, tic = resource.getrusage(resource.RUSAGE_CHILDREN), time.time()
        r = subprocess.run([sys.executable, "-m", "symexp.run", f"experiment={exp}", *pins, f"compile={compile_}",
                            f"paths.results={results}"], cwd=ROOT, env=env, capture_output=True, text=True)
        wall, after = time.time() - tic, resource.getrusage(resource.RUSAGE_CHILDREN)
        if r.returncode:
            raise SystemExit(f"{exp} compile={compile_}: exit {r.returncode}\n{r.stderr[-2000:]}")
        status = json.loads(next(Path(results).rglob("status.json")).read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu_s": round(cpu, 2), "wall_s": round(wall, 2), "job_wall_s": status["wall_s"],
            "cpu_util": round(cpu / wall, 2)}


def main() -> None:
    from symexp import experiments

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--only", nargs="*", help="experiments (default: every experiment with compile: true)")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--job", type=int, default=0, help="which job of each sweep (index, Hydra's order)")
    p.add_argument("--out", default=str(ROOT / "results" / "bench" / "jobs_compile_cpu.json"))
    args = p.parse_args()
    registry = experiments.discover()
    names = args.only or list(registry.experiments)
    out = Path(args.out)
    rows = json.loads(out.read_text())["rows"] if out.exists() else []
    for exp in names:
        pins = experiments.sweep_jobs(registry, exp, "quick")[args.job]
        best: dict[str, dict] = {}
        for _ in range(args.repeats):
            cache = tempfile.mkdtemp(prefix="inductor_bench_")
            for case, compile_ in (("eager", False), ("compiled_cold", True), ("compiled_warm", True)):
                m = run_job(exp, pins, compile_, cache)
                if case not in best or m["cpu_s"] < best[case]["cpu_s"]:
                    best[case] = m
        row = {"experiment": exp, "job": ",".join(pins), "load_avg_1m": round(os.getloadavg()[0], 2), **best,
               "cold_saves_cpu_s": round(best["eager"]["cpu_s"] - best["compiled_cold"]["cpu_s"], 2)}
        print(json.dumps(row), flush=True)
        rows = [r for r in rows if (r["experiment"], r["job"]) != (exp, row["job"])] + [row]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"command": "python scripts/bench_jobs.py " + " ".join(sys.argv[1:]),
                               "threads": 1, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
