"""results/REPORT.md: one page generated from what a reproduce run left on disk, never hand-edited.

It holds the wall time, the device and software versions, the claim ledger (the paper's claims counted
apart from our controls and informational checks), every figure, and the exact configuration of each
experiment (its command, its swept axes, and one job's resolved config). Which tables, figures and
experiments there are comes from the experiment registry (symexp.experiments).
"""
from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import OmegaConf

from symexp import experiments
from symexp.claims import KINDS

PACKAGES = ("torch", "hydra-core", "omegaconf", "numpy", "pandas", "pyarrow", "scikit-learn", "matplotlib", "wandb")
ROOT = Path(__file__).resolve().parent.parent


def inductor_cache_line() -> str:
    """What Inductor's compiled-kernel cache holds now: a run that starts from an empty one pays every compile."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    where = Path(cache_dir())
    n = sum(1 for p in where.rglob("*") if p.is_file()) if where.exists() else 0
    return f"{'empty' if n == 0 else f'{n} files'} ({where})"


def device_line() -> str:
    if torch.cuda.is_available():
        return f"CUDA: {torch.cuda.get_device_name(0)} (torch {torch.version.cuda})"
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    model = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")),
                 platform.processor())
    return f"CPU: {model}, {os.cpu_count()} logical cores visible, torch threads {torch.get_num_threads()}"


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def md_table(rows: list[list], header: list[str]) -> str:
    cell = lambda v: str(v).replace("|", "\\|").replace("\n", " ")  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def fmt(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.4g}"
    return str(v)


KIND_TITLES = {"paper": "The paper's claims", "control": "Controls (ours: baselines and symmetry-breaking controls)",
               "informational": "Informational (hypotheses and disclosures of ours, not claims of the paper)"}


def claims_section(ledger: pd.DataFrame) -> str:
    passed = ledger.passed.astype(bool)
    per_kind = {k: (int(passed[ledger.kind == k].sum()), int((ledger.kind == k).sum())) for k in KINDS}
    parts = [f"{int(passed.sum())} of {len(ledger)} checks pass; the paper's claims: {per_kind['paper'][0]} of "
             f"{per_kind['paper'][1]}. A failed check is a measured result, reported as is; a check passes when "
             "`measured <op> threshold`."]
    for kind in KINDS:
        rows = [[r.claim, r.check, fmt(r.measured), fmt(r.threshold), "pass" if r.passed else "**FAIL**",
                 f"{r.op} {fmt(r.threshold)}", r.statement] for r in ledger[ledger.kind == kind].itertuples()]
        if rows:
            parts.append(f"### {KIND_TITLES[kind]}: {per_kind[kind][0]} of {per_kind[kind][1]} pass\n\n"
                         + md_table(rows, ["claim", "check", "measured", "threshold", "result", "passes if measured",
                                           "what is measured"]))
    return "\n\n".join(parts)


def experiment_section(results: Path, scale: str, exp: str, wall_s: float | None) -> str:
    sweep = results / "runs" / scale / exp
    parts = [f"### `{exp}`" + (f" ({wall_s:.0f} job-seconds)" if wall_s is not None else ""),
             f"Command: `python -m symexp.run -m experiment={exp} scale={scale}`"]
    multirun = sweep / "multirun.yaml"
    if multirun.exists():  # the sweep's keys as composed (reproduce runs each job as a sweep of one)
        hydra = OmegaConf.load(multirun).hydra
        params = OmegaConf.to_container(hydra.sweeper.params) if hydra.sweeper.params is not None else {}
        if params:
            parts.append("Swept (one job each): " + "; ".join(f"`{k}` ∈ {{{v}}}" for k, v in params.items()))
    configs = sorted(sweep.rglob("config.yaml"))
    configs = [c for c in configs if ".hydra" not in c.parts]
    if configs:
        others = f"; the {len(configs)} jobs differ only in the swept keys" if len(configs) > 1 else ""
        parts.append(f"<details><summary>resolved config of the job {configs[0].parent.name}{others}</summary>"
                     f"\n\n```yaml\n"
                     f"{configs[0].read_text().rstrip()}\n```\n</details>")
    return "\n\n".join(parts)


def experiment_times(jobs: pd.DataFrame) -> str:
    """Per experiment: its jobs, their seconds summed and the longest, the share of that time spent
    measuring (evaluations, rows, the wandb mirror, checkpoints; each job's status.json `measure_s`) and
    the share spent on the closed-form references at the end (`reference_s`: once a job, whatever the
    evaluation cadence)."""
    if "reference_s" not in jobs:  # a jobs.csv from before references were timed apart
        jobs = jobs.assign(reference_s=float("nan"))
    per = jobs.groupby("experiment", sort=False).agg(n=("job", "size"), total=("wall_s", "sum"),
                                                     longest=("wall_s", "max"), measure=("measure_s", "sum"),
                                                     reference=("reference_s", "sum"))
    share = lambda part, total: f"{100 * part / total:.1f} %" if total > 0 and part > 0 else "-"  # noqa: E731
    rows = [[exp, f"{r.n:.0f}", f"{r.total:.0f}", f"{r.longest:.0f}", share(r.measure, r.total),
             share(r.reference, r.total)] for exp, r in per.iterrows()]
    return md_table(rows, ["experiment", "jobs", "job time (s, summed)", "longest job (s)", "measuring",
                           "references"])


def build(results: Path, scale: str, jobs: pd.DataFrame, total_s: float, command: str,
          reference: str = "", registry: experiments.Registry | None = None,
          facts: dict[str, str] | None = None) -> str:
    """The report; `jobs` is the per-job table (symexp.schedule.job_table) each experiment's time is
    summed from, `facts` extra rows of its run table (how the jobs ran, what was cached at the start)."""
    results = Path(results)
    registry = registry or experiments.discover()
    ledger = pd.read_csv(results / "claims.csv")
    timings = jobs.groupby("experiment").wall_s.sum().to_dict() if len(jobs) else {}
    per_exp = experiment_times(jobs) if len(jobs) else ""
    sections = [
        f"# symexp reproduction report: scale={scale}",
        f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} by `{command}`, from the files under `{results.name}/`. "
        "Regenerate it; do not edit it.",
        "## Run\n\n" + md_table([
            ["wall time, everything", f"{total_s:.0f} s ({total_s / 60:.1f} min)"],
            ["device", device_line()],
            ["code", git_commit()],
            *[[k, v] for k, v in (facts or {}).items()],
            *[[k, v] for k, v in versions().items()]], ["", ""]) + "\n\n" + per_exp,
        "## Claims (results/claims.csv)\n\n" + claims_section(ledger) + (f"\n\n{reference}" if reference else ""),
        "## Figures\n\n" + "\n\n".join(
            f"### {name}\n\n![{name}](figures/{name}.png)" for name, table in registry.tables.items()
            if table.plot and (results / "figures" / f"{name}.png").exists()),
        "## Configurations\n\n" + "\n\n".join(
            experiment_section(results, scale, exp, timings.get(exp))
            for table in registry.tables.values() for exp in table.experiments
            if (results / "runs" / scale / exp).exists()),
    ]
    return "\n\n".join(sections) + "\n"


def compare_with_reference(ledger: pd.DataFrame, reference: pd.DataFrame) -> tuple[list[str], int]:
    """Checks whose pass/fail differs from the reference ledger (matched on claim + check), and how
    many checks were compared. The reference may be of the older format (a `figure` column, no kind)."""
    key = ["claim", "check"]
    both = ledger.merge(reference[key + ["passed"]], on=key, suffixes=("", "_ref"))
    differ = both[both.passed.astype(bool) != both.passed_ref.astype(bool)]
    return [f"{r.claim}/{r.check}: {'pass' if r.passed else 'fail'} here, "
            f"{'pass' if r.passed_ref else 'fail'} in the reference" for r in differ.itertuples()], len(both)


def ledger_tables(ledger: pd.DataFrame) -> pd.Series:
    """Each row's table: the `table` column, or `figure` in ledgers written before the registry."""
    return ledger["table"] if "table" in ledger else ledger["figure"]
