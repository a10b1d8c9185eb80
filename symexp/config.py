"""The config schema: every key a job accepts, its meaning, and the one-line errors for bad input.

Hydra composes YAML from configs/; `validate(cfg)` checks the result against these dataclasses
before anything is built, so a typo or an impossible value fails in one line that names the key
and what is allowed. Sections whose fields depend on a choice (data, model, symmetry) pick their
schema by `name`.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A bad configuration; the message is one line naming the key and what is allowed."""


# ---------------------------------------------------------------- data (schema chosen by name)
@dataclass
class RegressionData:
    name: str = "regression"
    n_train: int = 1000  # samples
    dim: int = 100  # input dimension d
    teacher: Literal["sparse", "dense"] = "sparse"
    nonzero: int = 10  # nonzero teacher coordinates (teacher=sparse)
    noise: float = 0.5  # std of the fixed label noise of the data set
    seed: int = 0  # data seed, shared by all members


@dataclass
class LowRankMapData:
    name: str = "lowrank_map"
    n_train: int = 1000  # samples (>= dim: the sample is whitened exactly)
    dim: int = 20  # input = output dimension d
    spectrum: Literal["decay", "rank"] = "decay"  # s_i = top * decay^i, or that cut to 0 beyond `rank`
    top: float = 2.0  # largest singular value of M
    decay: float = 0.7  # ratio of consecutive singular values
    rank: int = 5  # rank of M (spectrum=rank)
    noise: float = 0.0  # std of the fixed label noise of the data set
    seed: int = 0  # data seed, shared by all members


@dataclass
class ImageDataset:
    name: Literal["fashion_mnist", "cifar10"] = "fashion_mnist"
    root: Optional[str] = None  # directory of the files; null = the data set's default location
    fallback: Optional[Literal["fashion_mnist"]] = None  # load this instead (with one message) if `name` is missing
    n_train: Optional[int] = None  # the first n training images (null = all)
    n_test: Optional[int] = None  # the first n test images (null = all)
    augment: bool = False  # per-member random crop (after `pad` reflect padding) and horizontal flip
    pad: int = 4
    flip: bool = True


@dataclass
class TextData:
    name: str = "text"
    path: Optional[str] = None  # a UTF-8 text file (e.g. tiny-Shakespeare); null = Python's pydoc_data topics
    context: int = 64  # characters per training window = the model's context length
    val_fraction: float = 0.1  # the last fraction of the corpus is the validation split
    eval_windows: int = 64  # windows per split on which loss/train and loss/test are measured
    seed: int = 0  # draws the fixed eval windows, shared by all members


@dataclass
class TanhTeacherData:
    name: str = "tanh_teacher"
    n_train: int = 512  # samples
    dim: int = 5  # input dimension d
    width: int = 2  # teacher hidden units: y = sum_j a_j tanh(b_j . x) + noise
    noise: float = 0.1  # std of the fixed label noise (before the xy_norm rescaling)
    xy_norm: Optional[float] = None  # rescale y so |E[x y]| = this = gamma* of the dead net; null = as drawn
    seed: int = 0  # data seed, shared by all members


DATA_SCHEMAS: dict[str, type] = {"regression": RegressionData, "lowrank_map": LowRankMapData,
                                 "fashion_mnist": ImageDataset, "cifar10": ImageDataset, "text": TextData,
                                 "tanh_teacher": TanhTeacherData}


# ---------------------------------------------------------------- model (schema chosen by name)
@dataclass
class LinearModel:
    name: str = "linear"
    init_scale: float = 0.1  # std of each raw parameter at init


@dataclass
class MatrixModel:
    name: str = "matrix"
    init_scale: float = 0.1  # std of each entry of the effective W at init


@dataclass
class MlpModel:
    name: str = "mlp"
    widths: list[int] = field(default_factory=lambda: [128, 128])  # hidden layer widths
    activation: Literal["relu", "tanh"] = "relu"


@dataclass
class ResNetModel:
    name: str = "resnet18"
    width: float = 1.0  # multiplier of the stage widths 64-128-256-512
    bf16: Literal["auto", "always", "never"] = "auto"  # bf16 autocast of the forward; auto = on CUDA only


@dataclass
class TransformerModel:
    name: str = "transformer"
    n_layer: int = 2  # pre-LayerNorm blocks
    n_head: int = 4  # attention heads per block (d_model must be a multiple)
    d_model: int = 64  # residual stream width
    init_scale: float = 0.02  # std of weights at init (nanoGPT); residual projections / sqrt(2 n_layer)


@dataclass
class TanhNetModel:
    name: str = "tanh_net"
    width: int = 4  # hidden units h of f(x) = sum_i u_i tanh(w_i . x)
    init_scale: float = 0.5  # std of each u_i and w_i entry at init
    dead_units: int = 0  # units 0..dead_units-1 start at (u, w) = 0: the sign mirror's symmetric point
    twin_pairs: int = 0  # the next pairs of units start identical: the permutation mirror's symmetric point
    probe_hessian: bool = False  # measure the full-batch loss Hessian and its mirror cross blocks every eval


MODEL_SCHEMAS: dict[str, type] = {"linear": LinearModel, "matrix": MatrixModel, "mlp": MlpModel,
                                  "resnet18": ResNetModel, "transformer": TransformerModel,
                                  "tanh_net": TanhNetModel}


# ---------------------------------------------------------------- symmetry and its breaking
@dataclass
class PlainSymmetry:
    name: str = "plain"


@dataclass
class RescalingSymmetry:
    name: str = "rescaling"


@dataclass
class RotationSymmetry:
    name: str = "rotation"
    hidden: Optional[int] = None  # inner width h of W = U V; None = min(out, in)


@dataclass
class DcsSymmetry:
    name: str = "dcs"
    k: int = 5  # constrained directions: O^T theta = 0 with O [p, k] orthonormal (symexp.symmetry.dcs)
    seed: int = 0  # draws O; shared by every member (must match metrics.constraint when that is set)


@dataclass
class PenaltySymmetry:
    name: str = "penalty"
    k: int = 5  # the O of dcs: same (k, seed), same basis
    seed: int = 0
    lam: float = 10.0  # soft penalty lam |O^T theta|^2 added to the trained loss (GD needs lr < 1 / lam)


SYMMETRY_SCHEMAS: dict[str, type] = {"plain": PlainSymmetry, "rescaling": RescalingSymmetry,
                                     "rotation": RotationSymmetry, "dcs": DcsSymmetry, "penalty": PenaltySymmetry}


@dataclass
class Breaking:
    name: Literal["none", "offset", "mask", "residual"] = "none"
    scale: float = 0.0  # std of the fixed random offset b (offset) or of the pinned values (mask)
    mask_frac: float = 0.125  # mask: fraction of each weight row's entries pinned (a different subset per row)


# ---------------------------------------------------------------- training
@dataclass
class Reg:
    name: Literal["l2"] = "l2"
    exclude: list[str] = field(default_factory=list)  # parameter-name substrings exempt from decay


@dataclass
class Optim:
    name: Literal["sgd", "adam", "adamw"] = "sgd"  # sgd, adam: coupled L2 (gamma = wd/2); adamw: decoupled decay
    momentum: float = 0.0  # sgd only
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw: moment decay rates
    eps: float = 1e-8  # adam, adamw: added to the root second moment
    batch_size: Optional[int] = None  # None = full batch
    schedule: Literal["constant", "cosine"] = "constant"


@dataclass
class Ensemble:
    seeds: list[int] = field(default_factory=lambda: [0])
    weight_decays: list[float] = field(default_factory=lambda: [0.0])
    lrs: list[float] = field(default_factory=lambda: [0.01])
    label_noises: list[float] = field(default_factory=lambda: [0.0])


@dataclass
class Train:
    steps: int = 1000
    eval_every: int = 100
    converge_tol: float = 0.0
    checkpoint_every: int = 0
    max_loss: float = 1e8


@dataclass
class Constraint:
    k: int = 0  # measure |O^T theta| for O = symexp.symmetry.dcs.basis(p, k, seed); 0 = no constraint
    seed: int = 0


@dataclass
class Metrics:
    sparsity_tau: list[float] = field(default_factory=lambda: [1e-3])
    rank_tau: float = 1e-3
    rank_atol: float = 0.0  # rank metrics count singular values <= this as zero (0 = off; symexp.metrics.rank)
    energy: float = 0.99
    unit_tol: float = 0.1
    dead_tau: float = 0.1
    constraint: Constraint = field(default_factory=Constraint)
    train_subset: int = 0  # loss/train on the first n training examples (0 = all)
    near_corr: float = 0.99  # classification: fraction of penultimate-feature pairs with |corr| > this
    corr_matrix: bool = False  # classification: write the final penultimate correlation matrix as rows


@dataclass
class Logger:
    name: Literal["none", "wandb"] = "none"
    project: str = "symexp"
    entity: Optional[str] = None
    mode: Literal["online", "offline", "disabled"] = "disabled"


@dataclass
class Scale:
    name: Literal["quick", "paper"] = "quick"


@dataclass
class Paths:
    results: str = "results"


@dataclass
class Config:
    data: dict
    model: dict
    symmetry: dict
    breaking: Breaking
    reg: Reg
    optim: Optim
    ensemble: Ensemble
    logger: Logger
    scale: Scale
    train: Train
    metrics: Metrics
    paths: Paths
    name: str = "default"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["float32", "float64"] = "float32"
    compile: bool = False
    references: list[str] = field(default_factory=list)


CLASS_TARGET_DATA = ("fashion_mnist", "cifar10", "text")  # integer targets: no additive label noise
VECTOR_MODELS = ("linear",)  # models whose only weight is a vector (no matrix for rotation to factorise)
CHOICE_SCHEMAS = {"data": DATA_SCHEMAS, "model": MODEL_SCHEMAS, "symmetry": SYMMETRY_SCHEMAS}
REFERENCES = ("lasso", "ridge", "spectrum", "dcs", "critical", "lyapunov")


def _type_ok(value, tp) -> bool:
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return True
    if origin is typing.Union:
        return any(_type_ok(value, a) for a in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if tp is type(None):
        return value is None
    if tp is float:  # YAML writes 1 for 1.0; bools are not numbers here
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _describe(tp) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    return str(tp).replace("typing.", "").replace("<class '", "").replace("'>", "")


def _check_section(values: dict, schema: type, where: str) -> None:
    hints = typing.get_type_hints(schema)
    allowed = [f.name for f in dataclasses.fields(schema)]
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(f"{where}.{key}: unknown key; allowed keys: {', '.join(allowed)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            _check_section(_as_dict(value, f"{where}.{key}"), tp, f"{where}.{key}")
        elif not _type_ok(value, tp):
            raise ConfigError(f"{where}.{key}: got {value!r}; expected {_describe(tp)}")


def _as_dict(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a config group (mapping), got {value!r}")
    return value


def validate(cfg: DictConfig) -> dict:
    """Check a composed config; return it as a plain resolved dict. Raises ConfigError (one line)."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    raw.pop("hydra", None)
    hints = typing.get_type_hints(Config)
    for key in raw:
        if key not in hints:
            raise ConfigError(f"{key}: unknown top-level key; allowed keys: {', '.join(hints)}")
    for f in dataclasses.fields(Config):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in raw:
            raise ConfigError(f"{f.name}: missing config group")
    for section, schemas in CHOICE_SCHEMAS.items():
        values = _as_dict(raw[section], section)
        name = values.get("name")
        if name not in schemas:
            raise ConfigError(f"{section}.name: unknown {section} {name!r}; allowed: {', '.join(schemas)}")
        _check_section(values, schemas[name], section)
    rest = {k: v for k, v in raw.items() if k not in CHOICE_SCHEMAS}
    _check_section(rest, Config, "config")
    _check_values(raw)
    return raw


def _check_values(c: dict) -> None:
    """Constraints between values that types cannot express."""
    ens = c["ensemble"]
    for key in ("seeds", "weight_decays", "lrs", "label_noises"):
        if len(ens[key]) == 0:
            raise ConfigError(f"ensemble.{key}: empty list; give at least one value")
    for key, ok, what in (
        ("weight_decays", lambda v: v >= 0, ">= 0"),
        ("lrs", lambda v: v > 0, "> 0"),
        ("label_noises", lambda v: v >= 0, ">= 0"),
    ):
        bad = [v for v in ens[key] if not ok(v)]
        if bad:
            raise ConfigError(f"ensemble.{key}: {bad[0]!r} is not allowed; values must be {what}")
    for ref in c["references"]:
        if ref not in REFERENCES:
            raise ConfigError(f"references: unknown reference {ref!r}; allowed: {', '.join(REFERENCES)}")
    bs = c["optim"]["batch_size"]
    n = c["data"].get("n_train")
    if bs is not None and (bs < 1 or (n is not None and bs > n)):
        raise ConfigError(f"optim.batch_size: {bs} is not allowed; use 1..data.n_train ({n}) or null (full batch)")
    _check_optim(c["optim"])
    t = c["train"]
    for key in ("steps", "eval_every"):
        if t[key] < 1:
            raise ConfigError(f"train.{key}: {t[key]} is not allowed; expected an integer >= 1")
    frac = c["breaking"].get("mask_frac", Breaking.mask_frac)
    if not 0 < frac <= 1:
        raise ConfigError(f"breaking.mask_frac: {frac!r}; expected 0 < mask_frac <= 1")
    if c["breaking"]["name"] != "none" and c["breaking"]["scale"] < 0:
        raise ConfigError(f"breaking.scale: {c['breaking']['scale']!r}; expected >= 0")
    if c["symmetry"]["name"] == "rotation" and c["model"]["name"] in VECTOR_MODELS:
        raise ConfigError(f"symmetry.name: rotation factorises matrix weights; model {c['model']['name']!r} has "
                          f"a vector; allowed models: {', '.join(m for m in MODEL_SCHEMAS if m not in VECTOR_MODELS)}")
    hidden = c["symmetry"].get("hidden") if c["symmetry"]["name"] == "rotation" else None
    if hidden is not None and hidden < 1:
        raise ConfigError(f"symmetry.hidden: {hidden} is not allowed; expected an integer >= 1 or null (min(out, in))")
    if hidden is not None and c["breaking"]["name"] == "residual" and hidden != c["data"].get("dim", hidden):
        raise ConfigError(f"symmetry.hidden: {hidden}; breaking=residual (U (V x + x)) needs hidden = data.dim "
                          f"({c['data']['dim']}) or null")
    if c["breaking"]["name"] == "residual" and c["symmetry"]["name"] != "rotation":
        raise ConfigError(f"breaking.name: residual needs symmetry rotation (W = U V), got {c['symmetry']['name']!r}")
    if c["data"]["name"] == "regression":
        d = c["data"]
        if d["teacher"] == "sparse" and not 0 < d["nonzero"] <= d["dim"]:
            raise ConfigError(f"data.nonzero: {d['nonzero']} is not allowed; expected 1..data.dim ({d['dim']})")
    if c["data"]["name"] == "lowrank_map":
        d = c["data"]
        if d["n_train"] < d["dim"]:
            raise ConfigError(f"data.n_train: {d['n_train']} is not allowed; expected >= data.dim ({d['dim']})")
        if d["spectrum"] == "rank" and not 0 < d["rank"] <= d["dim"]:
            raise ConfigError(f"data.rank: {d['rank']} is not allowed; expected 1..data.dim ({d['dim']})")
    if c["data"]["name"] in CLASS_TARGET_DATA and any(v > 0 for v in c["ensemble"]["label_noises"]):
        raise ConfigError(f"ensemble.label_noises: label noise is for regression targets; use [0.0] with "
                          f"data={c['data']['name']}")
    if c["data"]["name"] in ("fashion_mnist", "cifar10") or c["model"]["name"] in ("mlp", "resnet18"):
        _check_images(c)
    if c["data"]["name"] == "text" or c["model"]["name"] == "transformer":
        _check_text(c)
    if (c["model"]["name"] == "tanh_net" or c["data"]["name"] == "tanh_teacher"
            or {"critical", "lyapunov"} & set(c["references"])):
        _check_tanh(c)
    _check_constraint(c)


def _check_tanh(c: dict) -> None:
    """The tanh net of Theorem 1 (T1-T3): its symmetric-point layout fits its width; its references need it."""
    m, d = c["model"], c["data"]
    if d["name"] == "tanh_teacher" and d["xy_norm"] is not None and d["xy_norm"] <= 0:
        raise ConfigError(f"data.xy_norm: {d['xy_norm']!r}; expected > 0 or null")
    if m["name"] != "tanh_net":
        if {"critical", "lyapunov"} & set(c["references"]):
            raise ConfigError(f"references: critical and lyapunov are closed forms of model tanh_net, got {m['name']!r}")
        return
    if m["width"] < 1 or m["dead_units"] < 0 or m["twin_pairs"] < 0:
        raise ConfigError(f"model: width {m['width']}, dead_units {m['dead_units']}, twin_pairs {m['twin_pairs']}; "
                          f"expected width >= 1 and counts >= 0")
    if m["dead_units"] + 2 * m["twin_pairs"] > m["width"]:
        raise ConfigError(f"model.width: {m['width']} units cannot hold dead_units {m['dead_units']} + "
                          f"2 x twin_pairs {m['twin_pairs']}")
    if m["probe_hessian"] and not (m["dead_units"] and m["twin_pairs"]):
        raise ConfigError("model.probe_hessian: needs dead_units >= 1 and twin_pairs >= 1 (else its mirror "
                          "projectors are 0 and their cross blocks trivially vanish)")


def _check_optim(o: dict) -> None:
    momentum, betas = o.get("momentum", 0.0), o.get("betas", [0.9, 0.999])
    if not 0 <= momentum < 1:
        raise ConfigError(f"optim.momentum: {momentum!r}; expected 0 <= momentum < 1")
    if o["name"] != "sgd" and momentum:
        raise ConfigError(f"optim.momentum: {o['name']} takes no momentum; its first-moment rate is optim.betas[0]")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"optim.betas: {betas!r}; expected two values in [0, 1)")
    if o.get("eps", 1e-8) <= 0:
        raise ConfigError(f"optim.eps: {o['eps']!r}; expected > 0")


def _check_text(c: dict) -> None:
    """Character-level language modelling: text data with the transformer, a readable corpus, valid sizes."""
    d, m = c["data"], c["model"]
    if (d["name"] == "text") != (m["name"] == "transformer"):
        raise ConfigError(f"model.name: {m['name']!r} with data {d['name']!r}; "
                          f"the transformer and data=text go together")
    if d["path"] is not None and not Path(d["path"]).expanduser().is_file():
        raise ConfigError(f"data.path: {d['path']!r} is not a file; give a UTF-8 text file, or null for the "
                          f"built-in corpus (pydoc_data.topics)")
    for key, ok, what in (("context", d["context"] >= 1, ">= 1"), ("eval_windows", d["eval_windows"] >= 1, ">= 1"),
                          ("val_fraction", 0 < d["val_fraction"] < 1, "in (0, 1)")):
        if not ok:
            raise ConfigError(f"data.{key}: {d[key]!r} is not allowed; expected {what}")
    if m["n_layer"] < 1 or m["n_head"] < 1 or m["d_model"] % m["n_head"]:
        raise ConfigError(f"model.n_head: {m['n_head']} must divide model.d_model ({m['d_model']}); "
                          f"n_layer ({m['n_layer']}) and n_head must be >= 1")


def _check_images(c: dict) -> None:
    """Image classification: image data with an image model, sane subset sizes."""
    d, model = c["data"], c["model"]["name"]
    if model not in ("mlp", "resnet18"):
        raise ConfigError(f"model.name: {model!r} cannot read images; use mlp or resnet18")
    if d["name"] not in ("fashion_mnist", "cifar10"):
        raise ConfigError(f"data.name: model {model} classifies images; use data=fashion_mnist or data=cifar10")
    for key in ("n_train", "n_test", "pad"):
        if d[key] is not None and d[key] < (0 if key == "pad" else 1):
            raise ConfigError(f"data.{key}: {d[key]} is not allowed; expected {'>= 0' if key == 'pad' else '>= 1 or null'}")


def _check_constraint(c: dict) -> None:
    """DCS / penalty and the constraint metric must mean the same O (paper.md 5)."""
    sym, spec = c["symmetry"], c["metrics"].get("constraint", {"k": 0, "seed": 0})
    if set(spec) != {"k", "seed"}:
        raise ConfigError(f"metrics.constraint: got keys {sorted(spec)}; set both k and seed")
    if sym["name"] in ("dcs", "penalty") and sym["k"] < 1:
        raise ConfigError(f"symmetry.k: {sym['k']} is not allowed; expected an integer >= 1")
    if spec["k"] < 0:
        raise ConfigError(f"metrics.constraint.k: {spec['k']} is not allowed; expected >= 0 (0 = off)")
    if sym["name"] in ("dcs", "penalty") and spec["k"] and (sym["k"], sym["seed"]) != (spec["k"], spec["seed"]):
        raise ConfigError(f"metrics.constraint (k={spec['k']}, seed={spec['seed']}) differs from symmetry "
                          f"(k={sym['k']}, seed={sym['seed']}); set both to the same O")
    if "dcs" in c["references"] and not spec["k"]:
        raise ConfigError("references: dcs needs metrics.constraint.k >= 1 (the O whose threshold it predicts)")
