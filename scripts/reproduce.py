"""`make reproduce`: every experiment of the registry at one scale -> tables, figures, claim ledger, report.

    python scripts/reproduce.py --scale quick      # CPU, minutes
    python scripts/reproduce.py --scale paper      # GPU-sized
    python scripts/reproduce.py --only dcs         # one table and its experiments (repeatable)
    python scripts/reproduce.py --configs DIR      # also the experiments of DIR/experiment/*.yaml

The experiments, the table each feeds, its figure and its claims come from one place: the `report:`
block of each experiment YAML (symexp.experiments). Every job of every experiment runs on one pool of
worker processes, longest expected first (symexp.schedule; --jobs workers of --threads threads), into
the directory its own sweep gives it. Finished jobs are skipped on a rerun, so an interrupted reproduce
resumes. It ends with results/claims.csv, results/figures/*.png|pdf and
results/REPORT.md, compares the claims' pass/fail with the committed results/reference/claims.csv,
and exits non-zero when a job, a collect, a figure or a claims step failed.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

from symexp import cli, experiments, report, schedule, wandb_sink
from symexp.errors import UserError
from symexp.results import write_text

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
REFERENCE = ROOT / "results" / "reference"


def reference_note(ledger_path: Path, scale: str) -> str:
    ref = REFERENCE / "claims.csv"
    if scale != "quick" or not ref.exists():
        return ""
    differ, n = report.compare_with_reference(pd.read_csv(ledger_path), pd.read_csv(ref))
    if not n:
        return "No check of this run is in the committed reference run (results/reference/claims.csv)."
    if not differ:
        return (f"The outcome (pass, fail, undecided) of all {n} checks matches the committed reference run "
                "(results/reference/claims.csv).")
    return (f"{len(differ)} of {n} checks differ from the committed reference run:\n\n"
            + "\n".join(f"- {d}" for d in differ))


def plan(registry, tables, args, results: Path) -> tuple[list[schedule.Job], list[str]]:
    """Every job of the tables' experiments, longest expected first, and the experiments whose sweep
    could not be read. Expected times: this results folder's jobs.csv from an earlier run at this
    scale, where it has the job, else the committed reference run's."""
    jobs, failed = [], []
    for table in tables:
        for exp in table.experiments:
            base = ("-m", f"experiment={exp}", f"scale={args.scale}", f"paths.results={results}",
                    *registry.searchpath(), *args.overrides)
            try:
                pins = experiments.sweep_jobs(registry, exp, args.scale, args.overrides)
            except UserError as e:
                print(f"reproduce: {e}", file=sys.stderr)
                failed.append(f"experiment {exp}")
                continue
            jobs += [schedule.Job(exp, p, (*base, *p)) for p in pins]
    expected = {}
    for earlier in (REFERENCE / "jobs.csv", results / "jobs.csv"):
        expected |= schedule.expected_seconds(earlier, args.scale) if earlier.exists() else {}
    return schedule.longest_first(jobs, expected), failed


def run_tables(registry, tables, args, results: Path) -> tuple[list[str] | None, pd.DataFrame]:
    """Run every job of the tables on the worker pool, then collect each table into
    results/tables/<table>.parquet: the failed experiments (None when a collect failed: its table would
    be stale) and the per-job table (results/jobs.csv)."""
    jobs, failed = plan(registry, tables, args, results)
    print(f"== {len(jobs)} jobs of {sum(len(t.experiments) for t in tables)} experiments on {args.jobs} "
          f"worker(s) of {args.threads} thread(s), longest expected first (scale={args.scale})", flush=True)
    codes = schedule.run_jobs(jobs, args.jobs, args.threads)
    failed += sorted({f"experiment {j.experiment}" for j, code in codes.items() if code != 0})
    sweeps = {exp: results / "runs" / args.scale / exp for t in tables for exp in t.experiments}
    table = schedule.job_table(sweeps, args.scale)
    write_text(results / "jobs.csv", table.to_csv(index=False))
    for t in tables:
        out = results / "tables" / f"{t.name}.parquet"
        if cli.main(["collect", *(str(sweeps[e]) for e in t.experiments), "-o", str(out)]) != 0:
            return None, table
    return failed, table


def figures_and_claims(tables, args, results: Path) -> list[str]:
    """Draw each table's figure and write the ledger of every table's claims; the failed steps. The
    figures are drawn on --jobs worker processes while this one writes the ledger: serially the two
    took 22 s after the last job (15 s of figures, 5.5 s of claims)."""
    failed, plots_failed, tables_dir = [], [], results / "tables"
    configs = [a for d in args.configs for a in ("--configs", d)]
    plots = {t.name: ["plot", t.name, "--tables", str(tables_dir), "--out", str(results / "figures"), *configs]
             for t in tables if t.plot}
    with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        drawn = {name: pool.submit(cli.main, argv) for name, argv in plots.items()}
        ledger = results / "claims.csv"
        ledger.unlink(missing_ok=True)  # a failed step must not leave the last run's ledger to be reported
        if cli.main(["claims", "--tables", str(tables_dir), "--out", str(ledger), *configs]) != 0:
            failed.append("claims")
        for name, future in drawn.items():
            try:
                code = future.result()
            except Exception as e:  # a bug in a plot module: reported like a failed step, the others go on
                print(f"reproduce: plot {name}: {type(e).__name__}: {e}", file=sys.stderr)
                code = 1
            if code:
                plots_failed.append(f"plot {name}")
    return plots_failed + failed


AUDITED = {"fig1_right": "breaking=none", "transformer": ""}  # experiment -> the job to audit (name contains)


def audit_section(results: Path, scale: str) -> str:
    """`symexp audit` of the Figure 1 (right) MLP and the coupled-L2 transformer at their smallest and largest
    weight decay, beside the experiments' own metrics on the same weights (results/audit/)."""
    from symexp.audit.agreement import agreement

    audits, checks = [], []
    for exp, pick in AUDITED.items():
        for job in sorted(p.parent for p in (results / "runs" / scale / exp).rglob("weights.pt") if pick in str(p)):
            audit, agree = agreement(job)
            audits.append(audit)
            checks.append(agree)
    if not checks:
        return ""
    out = results / "audit"
    out.mkdir(parents=True, exist_ok=True)
    pd.concat(audits).to_csv(out / "audit.csv", index=False)
    table = pd.concat(checks)
    table.to_csv(out / "agreement.csv", index=False)
    summary = table.groupby(["experiment", "weight_decay", "measure"]).agg(
        audit=("audit", "sum"), logged=("logged", "sum"), agree=("agree", "sum"), of=("agree", "size")).reset_index()
    rows = [f"| {r.experiment} | {r.weight_decay:g} | {r.measure} | {r.audit:g} | {r.logged:g} | {r.agree}/{r.of} |"
            for r in summary.itertuples()]
    return ("\n## Audit beside the claims (results/audit/)\n\n`symexp audit` found the mirror symmetries of the "
            "trained weights from the models' own graphs; its counts, summed over layers (MLP) or heads "
            "(transformer), against the experiment's own metrics at the last step:\n\n"
            "| experiment | wd | measure | audit | logged | layers agreeing |\n|---|---|---|---|---|---|\n"
            + "\n".join(rows) + "\n")


def mirror_to_wandb(overrides: list[str], scale: str, ledger: Path, figures: Path) -> None:
    """With logger=wandb among the overrides: one summary run with the figures, the ledger and the software."""
    if "logger=wandb" not in overrides:
        return
    given = [o.removeprefix("logger.") for o in overrides if o.startswith("logger.")]
    cfg = OmegaConf.merge(OmegaConf.load(CONFIGS / "logger" / "wandb.yaml"), OmegaConf.from_dotlist(given))
    software = {**report.versions(), "device": report.device_line(), "commit": report.git_commit()}
    wandb_sink.summary_run(OmegaConf.to_container(cfg), scale, ledger, sorted(figures.glob("*.png")), software)


def positive(key: str):
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < 1:
            raise argparse.ArgumentTypeError(f"must be >= 1, got {text!r}")
        return int(text)
    parse.__name__ = key
    return parse


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--scale", default="quick", choices=["quick", "paper"])
    p.add_argument("--results", default=str(ROOT / "results"), help="results root (runs/, tables/, figures/)")
    p.add_argument("--only", action="append", metavar="TABLE", help="a table to run (repeatable)")
    p.add_argument("--configs", action="append", default=[], metavar="DIR",
                   help="a config dir whose experiment/*.yaml join the registry (repeatable)")
    p.add_argument("--jobs", type=positive("--jobs"), default=min(2, os.cpu_count() or 1),
                   help="worker processes: jobs run side by side, of every experiment (symexp.schedule)")
    p.add_argument("--threads", type=positive("--threads"), default=1,
                   help="torch threads per worker (small models do not scale over threads; one job per core does)")
    p.add_argument("--started", type=float, help="epoch seconds the whole run started (make passes the "
                   "time before set-up, so the report's wall time includes it)")
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for every experiment")
    args = p.parse_args()
    results, start = Path(args.results), args.started or time.time()
    try:
        registry = experiments.discover(args.configs)
        tables = [registry.table(name) for name in args.only] if args.only else list(registry.tables.values())
    except UserError as e:
        print(f"reproduce: {e}", file=sys.stderr)
        return 2
    facts = {"jobs": f"{args.jobs} worker process(es) x {args.threads} torch thread(s), longest expected first",
             "Inductor cache at the start": report.inductor_cache_line(),
             "set-up": "included (make passed the time before it)" if args.started else "not included"}
    failed, jobs = run_tables(registry, tables, args, results)
    if failed is None:
        return 1
    failed += figures_and_claims(tables, args, results)
    ledger = results / "claims.csv"
    if not ledger.exists():
        print("reproduce: no claim ledger was written; no report", file=sys.stderr)
        return 1
    note = reference_note(ledger, args.scale)
    total = time.time() - start
    command = "scripts/reproduce.py " + shlex.join(sys.argv[1:])
    audit = audit_section(results, args.scale)
    text = report.build(results, args.scale, jobs, total, command, note, registry, facts)
    write_text(results / "REPORT.md", text + audit)
    mirror_to_wandb(args.overrides, args.scale, ledger, results / "figures")
    print(note)
    print(f"reproduce: scale={args.scale} finished in {total:.0f} s ({total / 60:.1f} min, set-up included "
          f"when run by make) -> {results / 'REPORT.md'}")
    if failed:
        print(f"reproduce: failed steps: {', '.join(failed)} (see the messages above each)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
