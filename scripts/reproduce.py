"""`make reproduce`: every experiment of every figure at one scale -> tables, figures, claim ledger, report.

    python scripts/reproduce.py --scale quick      # CPU, minutes
    python scripts/reproduce.py --scale paper      # GPU-sized
    python scripts/reproduce.py --only dcs         # one figure (repeatable)

The list of experiments lives in one place: symexp.plots.FIGURES (a figure and the experiments
feeding its table). Finished jobs are skipped on a rerun, so an interrupted reproduce resumes.
It ends with results/claims.csv, results/figures/*.png|pdf and results/REPORT.md, and compares the
claims' pass/fail with the committed results/reference/claims.csv.
"""
from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from symexp import cli, plots, report
from symexp.results import write_text

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
REFERENCE = ROOT / "results" / "reference"


def sweep_size(exp: str, scale: str) -> int:
    """Jobs in the experiment's own sweep (hydra.sweeper.params of its config and its scaled/ layer)."""
    layers = [CONFIGS / "experiment" / f"{exp}.yaml", CONFIGS / "scaled" / f"{exp}_{scale}.yaml"]
    cfg = OmegaConf.merge(*[OmegaConf.load(f) for f in layers if f.exists()])
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
    return math.prod(len(str(v).split(",")) for v in params.values())


def run_experiment(exp: str, scale: str, results: Path, jobs: int, overrides: list[str]) -> bool:
    cmd = [sys.executable, "-m", "symexp.run", "-m", f"experiment={exp}", f"scale={scale}",
           f"paths.results={results}", *overrides]
    env = dict(os.environ)
    jobs = min(jobs, sweep_size(exp, scale))
    if jobs > 1:  # jobs side by side, one thread each: small models do not scale over threads
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
        env["OMP_NUM_THREADS"] = "1"
    return subprocess.run(cmd, cwd=ROOT, env=env).returncode == 0


def reference_note(ledger_path: Path, scale: str) -> str:
    ref = REFERENCE / "claims.csv"
    if scale != "quick" or not ref.exists():
        return ""
    differ, n = report.compare_with_reference(pd.read_csv(ledger_path), pd.read_csv(ref))
    if not differ:
        return f"Pass/fail of all {n} checks matches the committed reference run (results/reference/claims.csv)."
    return (f"{len(differ)} of {n} checks differ from the committed reference run:\n\n"
            + "\n".join(f"- {d}" for d in differ))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", default="quick", choices=["quick", "paper"])
    p.add_argument("--results", default=str(ROOT / "results"), help="results root (runs/, tables/, figures/)")
    p.add_argument("--only", action="append", choices=list(plots.FIGURES), help="a figure to run (repeatable)")
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                   help="jobs of one sweep run side by side (joblib launcher) when > 1")
    p.add_argument("--started", type=float, help="epoch seconds the whole run started (make passes the "
                   "time before set-up, so the report's wall time includes it)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every experiment")
    args = p.parse_args()
    results, start = Path(args.results), args.started or time.time()
    figures = args.only or list(plots.FIGURES)
    timings, failed = {}, []
    for i, name in enumerate(figures, 1):
        sweeps = []
        for exp in plots.FIGURES[name].EXPERIMENTS:
            print(f"== [{i}/{len(figures)}] {name}: experiment {exp} (scale={args.scale})", flush=True)
            tic = time.time()
            if not run_experiment(exp, args.scale, results, args.jobs, args.overrides):
                failed.append(exp)
            timings[exp] = time.time() - tic
            print(f"== {exp}: {timings[exp]:.0f} s", flush=True)
            sweeps.append(str(results / "runs" / args.scale / exp))
        if cli.main(["collect", *sweeps, "-o", str(results / "tables" / f"{name}.parquet")]) != 0:
            return 1
    tables, figs, ledger = results / "tables", results / "figures", results / "claims.csv"
    for name in figures:
        cli.main(["plot", name, "--tables", str(tables), "--out", str(figs)])
    cli.main(["claims", "--tables", str(tables), "--out", str(ledger)])
    note = reference_note(ledger, args.scale)
    total = time.time() - start
    command = "scripts/reproduce.py " + shlex.join(sys.argv[1:])
    write_text(results / "REPORT.md", report.build(results, args.scale, timings, total, command, note))
    print(note)
    print(f"reproduce: scale={args.scale} finished in {total:.0f} s ({total / 60:.1f} min, set-up included "
          f"when run by make) -> {results / 'REPORT.md'}")
    if failed:
        print(f"reproduce: experiments with failing jobs: {', '.join(failed)} (see the summary above each)",
              file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
