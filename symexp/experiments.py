"""The experiment registry: the experiment YAMLs themselves.

Every `configs/experiment/<name>.yaml` (and `<dir>/experiment/<name>.yaml` of each extra config dir)
is an experiment. Its optional `report:` block says where its results go:

    report:
      table: fig1_left                  # results/tables/<table>.parquet (default: the experiment's name)
      plot: symexp.plots.fig1_left      # a module with draw(table, out_dir) -> list[Path]; null: no figure
      claims: symexp.claims.fig1_left   # a module with CHECKS: list[Check]; null: no claims

Experiments that share a table share its figure and its claims. `symexp plot`, `symexp claims`,
scripts/reproduce.py and the report all read this registry; modules are imported by dotted path, so
they may live outside symexp, on PYTHONPATH.
"""
from __future__ import annotations

import importlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from omegaconf import DictConfig, OmegaConf

from symexp.errors import UserError

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
REPORT_KEYS = ("table", "plot", "claims")


class RegistryError(UserError):
    """An experiment YAML whose name or report block is inconsistent, or a module it names that is missing."""


@dataclass(frozen=True)
class Experiment:
    name: str
    path: Path  # its YAML
    table: str
    plot: str | None
    claims: str | None


@dataclass(frozen=True)
class Table:
    name: str
    experiments: tuple[str, ...]  # whose collected rows it holds, in registry order
    plot: str | None
    claims: str | None


@dataclass(frozen=True)
class Registry:
    config_dirs: tuple[Path, ...]  # the extra config dirs (the packaged configs/ comes first, implied)
    experiments: dict[str, Experiment]
    tables: dict[str, Table]

    def table(self, name: str) -> Table:
        if name not in self.tables:
            raise RegistryError(f"unknown table {name!r}; allowed: {', '.join(self.tables)}")
        return self.tables[name]

    def searchpath(self) -> list[str]:
        """Hydra overrides that make a run see the extra config dirs."""
        return [searchpath_override(self.config_dirs)] if self.config_dirs else []


def searchpath_override(dirs) -> str:
    """`hydra.searchpath=['file:///abs/dir', ...]`, each entry quoted for Hydra's override grammar."""
    quoted = [f"'file://{Path(d).resolve()}'".replace("\\", "\\\\") for d in dirs]
    return f"hydra.searchpath=[{','.join(quoted)}]"


def _read(path: Path) -> Experiment:
    cfg = OmegaConf.load(path)
    name = cfg.get("name") if isinstance(cfg, DictConfig) else None
    if name != path.stem:
        raise RegistryError(f"{path}: name: {name!r} must equal the file's stem {path.stem!r}")
    report = cfg.get("report")
    report = OmegaConf.create() if report is None else report
    if not isinstance(report, DictConfig):
        raise RegistryError(f"{path}: report: must be a mapping with keys {', '.join(REPORT_KEYS)}")
    for key, value in report.items():
        if key not in REPORT_KEYS:
            raise RegistryError(f"{path}: report.{key}: unknown key; allowed: {', '.join(REPORT_KEYS)}")
        if value is not None and not isinstance(value, str):
            raise RegistryError(f"{path}: report.{key}: {value!r} must be a string or null")
    return Experiment(name=name, path=path, table=report.get("table") or name, plot=report.get("plot"),
                      claims=report.get("claims"))


def discover(extra_config_dirs=()) -> Registry:
    """The experiments of configs/ and of each extra config dir; tables in a stable order (by name)."""
    dirs = tuple(Path(d) for d in extra_config_dirs)
    for d in dirs:
        if not (d / "experiment").is_dir():
            raise RegistryError(f"--configs {d}: no experiment/ folder in it (experiments live in "
                                "<dir>/experiment/*.yaml)")
    experiments: dict[str, Experiment] = {}
    for d in (CONFIGS, *dirs):
        for path in sorted((d / "experiment").glob("*.yaml")):
            exp = _read(path)
            if exp.name in experiments:
                raise RegistryError(f"{path}: experiment {exp.name!r} is also defined in {experiments[exp.name].path}")
            experiments[exp.name] = exp
    tables: dict[str, Table] = {}
    for exp in sorted(experiments.values(), key=lambda e: (e.table, e.name)):
        first = tables.get(exp.table)
        if first is None:
            tables[exp.table] = Table(exp.table, (exp.name,), exp.plot, exp.claims)
            continue
        for key in ("plot", "claims"):
            if getattr(exp, key) != getattr(first, key):
                raise RegistryError(f"{exp.path}: report.{key} {getattr(exp, key)!r} differs from "
                                    f"{getattr(first, key)!r} of experiment {first.experiments[0]!r}, which shares "
                                    f"table {exp.table!r}")
        tables[exp.table] = Table(exp.table, (*first.experiments, exp.name), first.plot, first.claims)
    return Registry(config_dirs=dirs, experiments=experiments, tables=tables)


def _module(table: Table, key: str, attribute: str) -> ModuleType:
    name = getattr(table, key)
    try:
        module = importlib.import_module(name)
    except ImportError as e:
        raise RegistryError(f"table {table.name!r}: report.{key} {name!r} cannot be imported ({e}); it must be a "
                            "module on PYTHONPATH") from None
    if not hasattr(module, attribute):
        raise RegistryError(f"table {table.name!r}: report.{key} module {name!r} has no {attribute}")
    return module


def draw_function(table: Table):
    """`draw(table, out_dir) -> list[Path]` of the table's plot module."""
    return _module(table, "plot", "draw").draw


def checks(table: Table) -> list:
    """The table's CHECKS (symexp.claims.Check), [] when it has no claims module."""
    return list(_module(table, "claims", "CHECKS").CHECKS) if table.claims else []


def sweep_jobs(registry: Registry, experiment: str, scale: str, overrides=()) -> list[tuple[str, ...]]:
    """The jobs Hydra's basic sweeper launches for `experiment` at `scale`, each as the overrides the
    sweeper gives it (one `key=value` per key, in Hydra's quoting): its hydra.sweeper.params as composed
    (the experiment, its defaults and its scaled/<experiment>_<scale> layer) plus `overrides`, expanded by
    Hydra's own override parser (range(), choice(), glob() included). Passing a job's overrides after the
    sweep's command line runs that job alone, in the directory the whole sweep gives it."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
            cfg = compose("config", overrides=[f"experiment={experiment}", f"scale={scale}", *registry.searchpath()],
                          return_hydra_config=True)
            params = OmegaConf.to_container(cfg.hydra.sweeper.params) if cfg.hydra.sweeper.params else {}
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
            parsed = parser.parse_overrides([f"{k}={v}" for k, v in params.items()] + list(overrides))
            # later overrides of a key replace earlier ones, as in the basic sweeper
            values = {o.get_key_element(): list(o.sweep_string_iterator()) if o.is_sweep_override()
                      else [o.get_value_element_as_str()] for o in parsed}
    except HydraException as e:
        raise RegistryError(f"experiment {experiment!r} (scale {scale}): cannot read its sweep: "
                            f"{str(e).splitlines()[0]}") from None
    finally:
        GlobalHydra.instance().clear()
    return list(itertools.product(*([f"{k}={v}" for v in vs] for k, vs in values.items())))


def sweep_size(registry: Registry, experiment: str, scale: str, overrides=()) -> int:
    """How many jobs `python -m symexp.run -m experiment=<experiment> scale=<scale> <overrides>` launches."""
    return len(sweep_jobs(registry, experiment, scale, overrides))
