"""Type and range checks of config sections against dataclass schemas, with one-line errors.

A schema is a dataclass; a field's annotation is its type, and `Annotated[T, Range(...)]` adds the
values it may take (on a list, `list[Annotated[T, Range]]` checks every item). Hydra composes the
YAML; `check_fields` then names the first bad key and what is allowed, before anything is built.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Literal

from symexp.errors import ConfigError

UNIONS = (typing.Union, types.UnionType)


@dataclass(frozen=True)
class Range:
    """Allowed numbers: lo <= x (lo < x if lo_open) and x <= hi (x < hi if hi_open); None = unbounded."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, x) -> bool:
        above = self.lo is None or (x > self.lo if self.lo_open else x >= self.lo)
        below = self.hi is None or (x < self.hi if self.hi_open else x <= self.hi)
        return above and below

    def describe(self, key: str = "") -> str:
        """'>= 1', or '0 <= momentum < 1' when bounded on both sides."""
        lo = f"{'>' if self.lo_open else '>='} {self.lo:g}" if self.lo is not None else ""
        hi = f"{'<' if self.hi_open else '<='} {self.hi:g}" if self.hi is not None else ""
        if lo and hi:
            return f"{self.lo:g} {'<' if self.lo_open else '<='} {key or 'x'} {hi}"
        return lo or hi


# the ranges most schemas need, named once
Count = Annotated[int, Range(1)]  # sizes and counts where 0 is meaningless
NonNegInt = Annotated[int, Range(0)]
NonNeg = Annotated[float, Range(0)]
Positive = Annotated[float, Range(0, lo_open=True)]
Fraction = Annotated[float, Range(0, 1, lo_open=True, hi_open=True)]  # a relative threshold tau in (0, 1)


def _base_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return True
    if origin is Annotated:
        return _base_ok(value, typing.get_args(tp)[0])
    if origin in UNIONS:
        return any(_base_ok(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin in (list, tuple):
        args = typing.get_args(tp)
        return isinstance(value, (list, tuple)) and all(_base_ok(v, args[0]) for v in value)
    if tp is type(None):
        return value is None
    if tp is float:  # YAML writes 1 for 1.0; bools are not numbers here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _range_violation(value, tp) -> tuple[object, Range] | None:
    """(the offending value, the Range it breaks) for `value` (already of type tp), if any."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        for r in meta:
            if isinstance(r, Range) and value is not None and not isinstance(value, (list, tuple)) and value not in r:
                return value, r
        return _range_violation(value, base)
    if origin in UNIONS:
        for a in typing.get_args(tp):
            if _base_ok(value, a):
                return _range_violation(value, a)
    if origin in (list, tuple) and isinstance(value, (list, tuple)):
        for v in value:
            bad = _range_violation(v, typing.get_args(tp)[0])
            if bad:
                return bad
    return None


def describe(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if origin is Annotated:
        base, *meta = typing.get_args(tp)
        ranges = [r.describe() for r in meta if isinstance(r, Range)]
        return f"{describe(base)}{' ' + ', '.join(ranges) if ranges else ''}"
    if origin in (list, tuple):
        return f"a list of {describe(typing.get_args(tp)[0])}"
    if origin in UNIONS:
        return " or ".join(describe(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp)).replace("NoneType", "null")


def check_fields(values: dict, schema: type, where: str) -> None:
    """Every key of `values` is a field of `schema`, of its type and inside its range."""
    hints = typing.get_type_hints(schema, include_extras=True)
    allowed = [f.name for f in dataclasses.fields(schema)]
    for key, value in values.items():
        if key not in allowed:
            raise ConfigError(f"{where}.{key}: unknown key; allowed keys: {', '.join(allowed)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            check_fields(as_mapping(value, f"{where}.{key}"), tp, f"{where}.{key}")
            continue
        if not _base_ok(value, tp):
            raise ConfigError(f"{where}.{key}: got {value!r}; expected {describe(tp)}")
        bad = _range_violation(value, tp)
        if bad:
            raise ConfigError(f"{where}.{key}: {bad[0]!r} is not allowed; expected {bad[1].describe(key)}")


def as_mapping(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a config group (mapping), got {value!r}")
    return value


def filled(values: dict, schema: type) -> dict:
    """`values` (already checked) with every missing field of `schema` at its default, recursively:
    the dataclass defaults are the defaults, whatever a YAML leaves out."""
    hints = typing.get_type_hints(schema, include_extras=True)
    out = {}
    for f in dataclasses.fields(schema):
        if f.name in values:
            v = values[f.name]
            out[f.name] = filled(v, hints[f.name]) if dataclasses.is_dataclass(hints[f.name]) else v
        elif f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            d = f.default_factory()
            out[f.name] = dataclasses.asdict(d) if dataclasses.is_dataclass(d) else d
    return out
