"""`make reproduce`: every experiment of every figure at one scale -> tables, figures, claim ledger.

    python scripts/reproduce.py --scale quick      # CPU, minutes
    python scripts/reproduce.py --scale paper      # GPU-sized

The list of experiments lives in one place: symexp.plots.FIGURES (a figure and the experiments
feeding its table). Finished jobs are skipped on a rerun, so an interrupted reproduce resumes.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from symexp import cli, plots

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", default="quick", choices=["quick", "paper"])
    p.add_argument("--results", default=str(ROOT / "results"), help="results root (runs/, tables/, figures/)")
    p.add_argument("--only", action="append", help="a figure to run (repeatable; default: all)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every experiment")
    args = p.parse_args()
    results = Path(args.results)
    start = time.time()
    figures = args.only or list(plots.FIGURES)
    for name in figures:
        sweeps = []
        for exp in plots.FIGURES[name].EXPERIMENTS:
            print(f"== {name}: experiment {exp} (scale={args.scale})", flush=True)
            cmd = [sys.executable, "-m", "symexp.run", "-m", f"experiment={exp}", f"scale={args.scale}",
                   f"paths.results={results}", *args.overrides]
            if subprocess.run(cmd, cwd=ROOT).returncode != 0:
                print(f"reproduce: experiment {exp} had failing jobs (see error.txt in its job dirs)", file=sys.stderr)
            sweeps.append(str(results / "runs" / args.scale / exp))
        if cli.main(["collect", *sweeps, "-o", str(results / "tables" / f"{name}.parquet")]) != 0:
            return 1
    tables, figs = str(results / "tables"), str(results / "figures")
    for name in figures:
        cli.main(["plot", name, "--tables", tables, "--out", figs])
    cli.main(["claims", "--tables", tables, "--out", str(results / "claims.csv")])
    print(f"reproduce: scale={args.scale} finished in {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
