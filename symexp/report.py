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
from omegaconf import DictConfig, ListConfig, OmegaConf

from symexp import experiments, optim
from symexp.claims import KINDS, UNDECIDED, exposure, outcome

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


KIND_TITLES = {"premise": "Premises (ours: the plain arm shows the phenomenon a claim explains; the rows that rest "
                          "on a failed premise are undecided)",
               "paper": "The paper's claims", "control": "Controls (ours: baselines and symmetry-breaking controls)",
               "informational": "Informational (hypotheses and disclosures of ours, not claims of the paper)"}
RESULT_TEXT = {"pass": "pass", "fail": "**FAIL**", UNDECIDED: "undecided"}


def counts(outcomes: pd.Series) -> str:
    """"3 pass, 1 fail, 2 undecided" (the undecided part only when there are some)."""
    n = outcomes.value_counts()
    parts = [f"{n.get('pass', 0)} pass", f"{n.get('fail', 0)} fail"]
    return ", ".join(parts + ([f"{n[UNDECIDED]} undecided"] if n.get(UNDECIDED, 0) else []))


def claims_section(ledger: pd.DataFrame) -> str:
    outcomes = ledger.passed.map(outcome)
    parts = [f"{len(ledger)} checks: {counts(outcomes)}; the paper's claims ({int((ledger.kind == 'paper').sum())}): "
             f"{counts(outcomes[ledger.kind == 'paper'])}. A failed check is a measured result, reported as is; "
             "a check passes when `measured <op> threshold`; a check is undecided when a premise it rests on failed "
             "(the experiment ran outside the regime its claim is about)."]
    for kind in KINDS:
        mine = ledger.kind == kind
        rows = [[r.claim, r.check, fmt(r.measured), fmt(r.threshold), RESULT_TEXT[o], f"{r.op} {fmt(r.threshold)}",
                 r.statement] for r, o in zip(ledger[mine].itertuples(), outcomes[mine])]
        if rows:
            parts.append(f"### {KIND_TITLES[kind]}: {counts(outcomes[mine])}\n\n"
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


def decay_rate(o: dict, lr: float, steps: int) -> float | None:
    """eta_eff, the per-step shrink factor of a weight with no gradient per unit of wd: lr / (1 - momentum) for
    SGD, lr for AdamW's decoupled decay, both times the mean schedule factor; None for Adam, whose coupled L2
    is rescaled per coordinate by its preconditioner (no single rate)."""
    factor = optim.mean_schedule_factor(o.get("schedule", "constant"), steps)
    if o.get("name") == "sgd":
        return lr / (1.0 - float(o.get("momentum", 0.0))) * factor
    if o.get("name") == "adamw":
        return lr * factor
    return None


def decay_section(results: Path, scale: str, experiment_names: list[str]) -> str:
    """Per experiment and optimiser setting: eta_eff * wd * T for each weight decay it trains, read from its
    jobs' resolved configs. Decay has acted only where this is >> 1; at <~ 0.3 it moved a weight by under a
    third, so a claim about what decay does is not tested there."""
    rows = {}
    for exp in experiment_names:
        for path in sorted((results / "runs" / scale / exp).rglob("config.yaml")):
            if ".hydra" in path.parts:
                continue
            c = OmegaConf.to_container(OmegaConf.load(path))
            o, steps = c.get("optim", {}), int(c.get("train", {}).get("steps", 0))
            wds = [w for w in c.get("ensemble", {}).get("weight_decays", []) if w > 0]
            if not wds or not steps:
                continue
            for lr in c["ensemble"].get("lrs", []):
                rate = decay_rate(o, lr, steps)
                key = (exp, o.get("name"), lr, o.get("momentum", 0.0), o.get("schedule", "constant"), steps)
                text = ("— (Adam: no single decay rate)" if rate is None else
                        ", ".join(f"{w:g}: {exposure(rate, w, steps):.3g}" for w in wds))
                rows[key] = [exp, f"{o.get('name')} lr {lr:g}, momentum {float(o.get('momentum', 0.0)):g}, "
                             f"{o.get('schedule', 'constant')} schedule", f"{steps}",
                             "" if rate is None else f"{rate:.3g}", text]
    if not rows:
        return ""
    return ("## Time for decay to act\n\nη_eff·wd·T for each weight decay an experiment trains "
            "(η_eff = lr/(1 − momentum) "
            "for SGD, lr for AdamW's decoupled decay, times the schedule's mean factor; T = the configured steps, an "
            "upper bound where a job stops at convergence). "
            "Coupled decay alone shrinks a weight by ≈ exp(−η_eff·wd·T): "
            "a claim about what decay does is tested only where this is ≫ 1.\n\n"
            + md_table(list(rows.values()), ["experiment", "optimiser", "T (steps)", "η_eff", "wd: η_eff·wd·T"]))


def scaled_overrides(path: Path) -> dict:
    """The dotted keys a configs/scaled/<experiment>_<scale>.yaml sets (other scaled files it extends first;
    `override /group: option` entries of its defaults as `group`)."""
    raw = OmegaConf.to_container(OmegaConf.load(path))
    out = {}
    for entry in raw.pop("defaults", []):
        if isinstance(entry, str):
            out.update(scaled_overrides(path.parent / f"{entry}.yaml"))
        else:
            out.update({k.split("/")[-1]: v for k, v in entry.items()})
    raw.pop("hydra", None)

    def leaves(d: dict, prefix: str = ""):
        for k, v in d.items():
            yield from leaves(v, f"{prefix}{k}.") if isinstance(v, dict) else [(prefix + k, v)]
    return {**out, **dict(leaves(raw))}


def scale_section(results: Path, scale: str, experiment_names: list[str], configs: Path = experiments.CONFIGS,
                  other: str = "paper") -> str:
    """Each experiment that ran smaller here than at `other` scale: the keys its configs/scaled file sets whose
    value differs in this run's resolved config (a list by its length)."""
    show = lambda v: (f"{len(v)} value" + "s" * (len(v) != 1)) if isinstance(v, list) else f"{v}"  # noqa: E731
    rows = []
    for exp in experiment_names:
        scaled = configs / "scaled" / f"{exp}_{other}.yaml"
        job = next((c for c in sorted((results / "runs" / scale / exp).rglob("config.yaml"))
                    if ".hydra" not in c.parts), None)
        if scale == other or job is None or not scaled.exists():
            continue
        here = OmegaConf.load(job)
        group = lambda k: here.get(k, {}).get("name") if isinstance(here.get(k), DictConfig) else None  # noqa: E731
        diffs = []
        for key, theirs in scaled_overrides(scaled).items():
            mine = OmegaConf.select(here, key) if "." in key or key not in ("data", "model", "optim") else group(key)
            mine = OmegaConf.to_container(mine) if isinstance(mine, (DictConfig, ListConfig)) else mine
            if mine != theirs:
                diffs.append(f"`{key}` {show(mine)} ({other}: {show(theirs)})")
        if diffs:
            rows.append([exp, "; ".join(diffs)])
    if not rows:
        return ""
    return (f"## Smaller than SCALE={other}\n\nThe experiments that ran here with less than their `{other}`-scale "
            f"protocol (configs/scaled/<experiment>_{other}.yaml), key by key:\n\n"
            + md_table(rows, ["experiment", f"this run ({other} scale)"]))


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
        decay_section(results, scale,
                      names := [exp for table in registry.tables.values() for exp in table.experiments]),
        scale_section(results, scale, names),
        "## Figures\n\n" + "\n\n".join(
            f"### {name}\n\n![{name}](figures/{name}.png)" for name, table in registry.tables.items()
            if table.plot and (results / "figures" / f"{name}.png").exists()),
        "## Configurations\n\n" + "\n\n".join(
            experiment_section(results, scale, exp, timings.get(exp))
            for table in registry.tables.values() for exp in table.experiments
            if (results / "runs" / scale / exp).exists()),
    ]
    return "\n\n".join(filter(None, sections)) + "\n"


def compare_with_reference(ledger: pd.DataFrame, reference: pd.DataFrame) -> tuple[list[str], int]:
    """Checks whose outcome (pass, fail or undecided) differs from the reference ledger (matched on claim +
    check), and how many checks were compared. The reference may be of the older format (a `figure` column,
    no kind)."""
    key = ["claim", "check"]
    both = ledger.merge(reference[key + ["passed"]], on=key, suffixes=("", "_ref"))
    here, there = both.passed.map(outcome), both.passed_ref.map(outcome)
    return [f"{r.claim}/{r.check}: {a} here, {b} in the reference"
            for r, a, b in zip(both.itertuples(), here, there) if a != b], len(both)


def ledger_tables(ledger: pd.DataFrame) -> pd.Series:
    """Each row's table: the `table` column, or `figure` in ledgers written before the registry."""
    return ledger["table"] if "table" in ledger else ledger["figure"]
