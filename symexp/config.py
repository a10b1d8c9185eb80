"""The top-level config schema and `validate`: every key a job accepts, checked before anything is built.

Hydra composes YAML from configs/. The sections data, model, symmetry, breaking and optim are
components (symexp.components): each names its own dataclass schema by `_target_`. The rest is
described here. `validate(cfg)` checks types, ranges and unknown keys, builds the components and
runs their cross-checks, so a typo or an impossible value fails in one line that names the key and
what is allowed (symexp.errors.ConfigError).
"""
from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from typing import Annotated, Literal, Optional

from omegaconf import DictConfig, OmegaConf

from symexp import components
from symexp.errors import ConfigError
from symexp.schema import Count, Fraction, NonNeg, NonNegInt, Positive, Range, as_mapping, check_fields, filled

__all__ = ["Config", "ConfigError", "unnamed_keys", "validate", "validate_parts"]


def launch_dir() -> str:
    """`${symexp.cwd:}`, where paths.results lives: the directory the command was launched from. Hydra's own
    `${hydra:runtime.cwd}` fails in a multirun, whose sweep dir is resolved before HydraConfig is set
    (hydra#2247); a job sees Hydra's runtime.cwd, so a launcher that moves it elsewhere still writes there."""
    import os

    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get().runtime.cwd if HydraConfig.initialized() else os.getcwd()


OmegaConf.register_new_resolver("symexp.cwd", launch_dir, replace=True)


@dataclass
class Reg:
    name: Literal["l2"] = "l2"
    exclude: list[str] = field(default_factory=list)  # parameter-name substrings exempt from decay


@dataclass
class Ensemble:
    """The batched member axis: the product seeds x weight_decays x lrs x label_noises."""

    seeds: list[int] = field(default_factory=lambda: [0])
    weight_decays: list[NonNeg] = field(default_factory=lambda: [0.0])
    lrs: list[Positive] = field(default_factory=lambda: [0.01])
    label_noises: list[NonNeg] = field(default_factory=lambda: [0.0])


@dataclass
class Train:
    steps: Count = 1000
    eval_every: Count = 100
    converge_tol: NonNeg = 0.0
    checkpoint_every: NonNegInt = 100  # configs/config.yaml sets ${.eval_every}
    checkpoint_min_s: NonNeg = 30.0  # a checkpoint step is skipped until this long after the last checkpoint
    max_loss: Positive = 1e8


@dataclass
class Constraint:
    k: NonNegInt = 0  # measure |O^T theta| for O = symexp.symmetry.dcs.basis(p, k, seed); 0 = no constraint
    seed: int = 0


@dataclass
class Metrics:
    sparsity_tau: list[Fraction] = field(default_factory=lambda: [1e-3])
    rank_tau: Fraction = 1e-3
    rank_atol: NonNeg = 0.0  # rank metrics count singular values <= this as zero (0 = off; symexp.metrics.rank)
    energy: Annotated[float, Range(0, 1, lo_open=True)] = 0.99
    unit_tol: Annotated[float, Range(0, 4, lo_open=True)] = 0.1  # relative squared distance of two units
    dead_tau: Fraction = 0.1
    constraint: Constraint = field(default_factory=Constraint)
    families: list[str] = field(default_factory=list)  # extra metric families measured on every probe
    train_subset: NonNegInt = 0  # loss/train on the first n training examples (0 = all)
    near_corr: Fraction = 0.99  # classification: fraction of penultimate-feature pairs with |corr| > this
    corr_matrix: bool = False  # classification: write the final penultimate correlation matrix as rows


@dataclass
class Logger:
    name: Literal["none", "wandb"] = "none"
    project: str = "symexp"
    entity: Optional[str] = None
    mode: Literal["online", "offline", "disabled"] = "disabled"
    max_member_runs: Count = 128  # one wandb run per member up to this many; above, one run per job with a table
    sampled_member_runs: NonNegInt = 8  # above the limit: member runs kept for a sample spread over the grid


@dataclass
class Scale:
    name: Literal["quick", "paper"] = "quick"


@dataclass
class Paths:
    results: str = "results"


@dataclass
class Report:
    """Where an experiment's jobs go after the run (symexp.experiments); not part of the job's hash."""

    table: Optional[str] = None  # results/tables/<table>.parquet; null = the experiment's name
    plot: Optional[str] = None  # module with draw(table, out_dir); null = no figure
    claims: Optional[str] = None  # module with CHECKS; null = no claims


@dataclass
class Config:
    data: dict
    model: dict
    symmetry: dict
    breaking: dict
    optim: dict
    reg: Reg
    ensemble: Ensemble
    logger: Logger
    scale: Scale
    train: Train
    metrics: Metrics
    paths: Paths
    report: Report = field(default_factory=Report)
    name: str = "default"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    compile: bool = False
    cpp_wrapper: bool = False
    references: list[str] = field(default_factory=list)


@functools.cache
def unnamed_keys() -> frozenset[str]:
    """Overrides that change no number: config.yaml keeps them out of job directory names, and the tidy
    table out of its columns."""
    return frozenset(OmegaConf.load(components.CONFIGS / "config.yaml").hydra.job.config.override_dirname.exclude_keys)


def validate(cfg: DictConfig) -> dict:
    """Check a composed config; return it as a plain resolved dict. Raises ConfigError (one line)."""
    return validate_parts(cfg)[0]


def validate_parts(cfg: DictConfig) -> tuple[dict, components.Parts]:
    """`validate`, also returning the built components."""
    raw = OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
    raw.pop("hydra", None)
    hints = typing.get_type_hints(Config)
    for key in raw:
        if key not in hints:
            raise ConfigError(f"{key}: unknown top-level key; allowed keys: {', '.join(hints)}")
    for f in dataclasses.fields(Config):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in raw:
            raise ConfigError(f"{f.name}: missing config group")
    for section in components.SECTIONS:
        as_mapping(raw[section], section)
    rest = {k: v for k, v in raw.items() if k not in components.SECTIONS}
    check_fields(rest, Config, "config")
    parts = components.build_parts(raw)
    raw = {**filled(rest, Config), **{s: {"_target_": raw[s]["_target_"], **dataclasses.asdict(getattr(parts, s))}
                                      for s in components.SECTIONS}}
    _check_values(raw, parts)
    components.cross_check(parts, raw)
    return raw, parts


def _check_values(c: dict, parts: components.Parts) -> None:
    """Constraints between top-level values and the components that types cannot express."""
    for key, values in c["ensemble"].items():
        if len(values) == 0:
            raise ConfigError(f"ensemble.{key}: empty list; give at least one value")
    from symexp import theory  # the closed forms import models and data

    for ref in c["references"]:
        if ref not in theory.REFERENCES:
            raise ConfigError(f"references: unknown reference {ref!r}; allowed: {', '.join(theory.REFERENCES)}")
        theory.REFERENCES[ref].check(parts, c)
    bs, n = parts.optim.batch_size, getattr(parts.data, "n_train", None)
    if bs is not None and n is not None and bs > n:
        raise ConfigError(f"optim.batch_size: {bs} is not allowed; use 1..data.n_train ({n}) or null (full batch)")
    if getattr(parts.data, "task", "regression") != "regression" and any(v > 0 for v in c["ensemble"]["label_noises"]):
        raise ConfigError(f"ensemble.label_noises: label noise is for regression targets; use [0.0] with "
                          f"data={parts.data.name}")
    known = ("sparsity", "rank", "units", "norm", "spectrum")
    for fam in c["metrics"]["families"]:
        if fam not in known:
            raise ConfigError(f"metrics.families: unknown family {fam!r}; allowed: {', '.join(known)}")
    spec = c["metrics"]["constraint"]
    if "dcs" in c["references"] and not spec["k"]:
        raise ConfigError("references: dcs needs metrics.constraint.k >= 1 (the O whose threshold it predicts)")
