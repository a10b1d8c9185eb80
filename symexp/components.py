"""Components: the data set, model, symmetry, breaking control and optimiser of a job.

Each is a dataclass that is its own schema, living next to its code, and each YAML under
configs/<section>/ names it by `_target_`. `build(section, spec)` checks the keys against the
dataclass (types, ranges, unknown keys: one-line errors) and then lets Hydra's `instantiate`
construct it. Nothing else lists components, so a new one is a module plus a YAML, anywhere on
the Python path and Hydra's search path (README "Add a symmetry / a model / a figure").

What a component declares, so that cross-checks need no name lists:
    data set    kind (vector | matrix | images | tokens), task; build(device, dtype) -> TensorData
    model       reads (the data kinds it accepts), matrix_only (every parameter is a matrix);
                build(data) -> nn.Module with reset_parameters() and probes {layer: metric families}
    symmetry    factor(base, gen), compose(raw); structure (the metric families its structure
                shows in); needs_matrices; optional penalty(theta)
    breaking    offsets(raw, gen) -> fixed tensors (see symexp.symmetry.breaking)
    optimiser   rule() -> symexp.optim.Rule; batch_size, schedule
Any of them may add `check(parts, c)`: its own constraints on the whole config, one-line errors.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from symexp.errors import ConfigError
from symexp.schema import check_fields

SECTIONS = ("data", "model", "symmetry", "breaking", "optim")
CONFIGS = Path(__file__).resolve().parent.parent / "configs"


class Component:
    """Defaults every component inherits; a duck-typed class works too."""

    def check(self, parts: "Parts", c: dict) -> None:
        """Constraints between this component and the rest of the config (raise ConfigError)."""


class DataSet(Component):
    kind: ClassVar[str] = "vector"  # vector | matrix | images | tokens: what a model must read
    task: ClassVar[str] = "regression"  # regression | classification | language: picks the loss


class Model(Component):
    reads: ClassVar[tuple[str, ...]] = ("vector",)
    matrix_only: ClassVar[bool] = False  # every parameter a matrix (what rotation can factorise)


class Symmetry(Component):
    structure: ClassVar[tuple[str, ...]] = ()  # metric families measured on every weight probe
    needs_matrices: ClassVar[bool] = False


@dataclass
class Parts:
    data: Any
    model: Any
    symmetry: Any
    breaking: Any
    optim: Any


def component_class(section: str, spec: dict) -> type:
    target = spec.get("_target_")
    if not target:
        raise ConfigError(f"{section}._target_: missing; name the component's dataclass, e.g. "
                          f"symexp.symmetry.rescaling.Rescaling")
    try:
        cls = get_class(target)
    except Exception as e:  # hydra wraps ImportError/AttributeError alike
        raise ConfigError(f"{section}._target_: cannot import {target!r} ({type(e).__name__}); "
                          f"check the module is on the Python path") from None
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"{section}._target_: {target} is not a dataclass (a component is its own schema)")
    return cls


def build(section: str, spec: dict):
    """The component of one config section, checked against its dataclass first."""
    cls = component_class(section, spec)
    name = spec.get("name")
    allowed = typing.get_type_hints(cls, include_extras=True).get("name")
    if typing.get_origin(allowed) is Literal and name not in typing.get_args(allowed):
        # `symmetry.name=rotation` cannot switch components: the option does (symmetry=rotation)
        raise ConfigError(f"{section}.name: unknown {section} {name!r} for {cls.__name__}; choose a {section} with "
                          f"{section}=<option>; allowed: {', '.join(options(section))}")
    check_fields({k: v for k, v in spec.items() if k != "_target_"}, cls, section)
    return instantiate(spec, _convert_="all")


def build_parts(c: dict) -> Parts:
    return Parts(**{s: build(s, c[s]) for s in SECTIONS})


def options(section: str) -> dict[str, type]:
    """{option: class} of the package's own configs/<section>/*.yaml (for error messages)."""
    out = {}
    for f in sorted((CONFIGS / section).glob("*.yaml")):
        target = OmegaConf.load(f).get("_target_")
        if target:
            out[f.stem] = get_class(target)
    return out


def fitting(section: str, ok) -> str:
    """Comma-separated options of `section` whose class satisfies `ok(cls)`."""
    return ", ".join(name for name, cls in options(section).items() if ok(cls)) or "none"


def cross_check(parts: Parts, c: dict) -> None:
    """What the components declare about each other, then each component's own check."""
    data, model, sym = parts.data, parts.model, parts.symmetry
    reads = getattr(model, "reads", Model.reads)
    kind = getattr(data, "kind", DataSet.kind)
    if kind not in reads:
        raise ConfigError(f"model.name: {model.name} cannot read {kind} (data={data.name}); it reads "
                          f"{' or '.join(reads)}, data that fit: "
                          f"{fitting('data', lambda k: getattr(k, 'kind', None) in reads)}; models that read {kind}: "
                          f"{fitting('model', lambda k: kind in getattr(k, 'reads', ()))}")
    if getattr(sym, "needs_matrices", False) and not getattr(model, "matrix_only", False):
        raise ConfigError(f"symmetry.name: {sym.name} factorises matrix weights, model {model.name} also has "
                          f"vector or higher-order parameters; models that fit: "
                          f"{fitting('model', lambda k: getattr(k, 'matrix_only', False))}")
    for part in vars(parts).values():
        check = getattr(part, "check", None)
        if check is not None:
            check(parts, c)


def load(section: str, option: str, **overrides):
    """The component configs/<section>/<option>.yaml describes, with keys overridden (library use:
    `load("data", "regression", n_train=100).build(device, dtype)`)."""
    spec = OmegaConf.to_container(OmegaConf.load(CONFIGS / section / f"{option}.yaml"), resolve=True)
    return build(section, {**spec, **overrides})
