"""The dataflow graph the audit reads: one `Op` per tensor operation, whichever tracer produced it.

Both tracers (running the model under a TorchFunctionMode, or torch.fx) hand every call to
`OpGraph.add(name, args, kwargs)` with tensor arguments already replaced by `Node` (an earlier op's
output) or `Param` (a parameter, by its canonical name), so classification below is written once.
"""
from __future__ import annotations

from dataclasses import dataclass, field

# argument names of the functions whose operands have roles (positional order as in torch)
SIGNATURES = {
    "linear": ("input", "weight", "bias"),
    "addmm": ("bias", "input", "weight"),  # transformers' Conv1D: bias + x @ W, W stored [in, out]
    "hardtanh": ("input", "min_val", "max_val"),
    "leaky_relu": ("input", "negative_slope"),
    "conv1d": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv2d": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "conv3d": ("input", "weight", "bias", "stride", "padding", "dilation", "groups"),
    "batch_norm": ("input", "running_mean", "running_var", "weight", "bias"),
    "layer_norm": ("input", "normalized_shape", "weight", "bias"),
    "embedding": ("input", "weight"),
    "multi_head_attention_forward": (
        "query", "key", "value", "embed_dim_to_check", "num_heads", "in_proj_weight", "in_proj_bias",
        "bias_k", "bias_v", "add_zero_attn", "dropout_p", "out_proj_weight", "out_proj_bias", "training",
        "key_padding_mask", "need_weights", "attn_mask", "use_separate_proj_weight", "q_proj_weight",
        "k_proj_weight", "v_proj_weight"),
    "scaled_dot_product_attention": ("query", "key", "value"),
    "softmax": ("input", "dim"),
    "log_softmax": ("input", "dim"),
    "split": ("input", "split_size", "dim"),
    "chunk": ("input", "chunks", "dim"),
    "unbind": ("input", "dim"),
    "cat": ("tensors", "dim"),
    "stack": ("tensors", "dim"),
    "repeat_interleave": ("input", "repeats", "dim"),
    "flatten": ("input", "start_dim", "end_dim"),
    "mean": ("input", "dim"),
    "sum": ("input", "dim"),
    "amax": ("input", "dim"),
}
POSITIVE_HOMOGENEOUS = {"relu", "leaky_relu"}  # sigma(a x) = a sigma(x) for a > 0
ODD = {"tanh", "hardtanh", "softsign", "tanhshrink", "sin"}  # sigma(-x) = -sigma(x) (hardtanh: if bounds are)
ACTIVATIONS = POSITIVE_HOMOGENEOUS | ODD | {
    "gelu", "sigmoid", "silu", "elu", "selu", "celu", "softplus", "mish", "relu6", "hardswish",
    "hardsigmoid", "logsigmoid", "rrelu"}
PASS = {"dropout", "dropout1d", "dropout2d", "dropout3d", "alpha_dropout", "feature_alpha_dropout",
        "contiguous", "clone", "to", "float", "double", "half", "bfloat16", "type_as", "detach", "identity"}
SHAPE = {"view", "reshape", "transpose", "permute", "unflatten", "squeeze", "unsqueeze", "t", "expand", "movedim"}
UNARY = {"neg", "exp", "log", "sqrt", "rsqrt", "abs", "square", "reciprocal", "erf", "pow", "clamp", "clip", "sin",
         "cos", "add", "sub", "mul", "div"}  # elementwise on one tensor (the arithmetic ones with a number)
CONV = {"conv1d", "conv2d", "conv3d"}
CONV_NDIM = {"conv1d": 3, "conv2d": 4, "conv3d": 5}  # dims of a batched conv input/output
SOFTMAX = {"softmax", "log_softmax"}


@dataclass(frozen=True)
class Node:
    """The output of op `idx`."""

    idx: int


@dataclass(frozen=True)
class Param:
    """A model parameter, by its canonical name (the first name `named_parameters` gives it)."""

    name: str


@dataclass
class Op:
    kind: str  # input const linear conv norm act pool reduce flatten bias scale scalar mask softmax
    #            matmul sdpa mha embedding shape pass item add param_view other
    name: str  # the torch function / method / module name
    inputs: list[int]  # ops whose outputs this op reads, in argument order
    params: dict[str, str] = field(default_factory=dict)  # role -> parameter name
    meta: dict = field(default_factory=dict)  # bound non-tensor arguments, output shape, ...
    users: list[int] = field(default_factory=list)

    @property
    def what(self) -> str:
        """'linear', 'norm (layer_norm)': the kind, and the function when they differ."""
        return self.name if self.kind in (self.name, "other") else f"{self.kind} ({self.name})"

    @property
    def label(self) -> str:
        """A readable name: the module path of its weight when it has one."""
        for role in ("weight", "in_proj_weight", "q_proj_weight", *self.params):
            if role in self.params:
                return self.params[role].rsplit(".", 1)[0]
        return self.name


@dataclass
class Finding:
    """One symmetry the structure creates, on named parameters."""

    symmetry: str  # permutation rescaling sign rotation double_rotation scale translation
    layer: str
    ops: set[int]
    params: tuple[str, ...]  # every parameter the symmetry acts on
    spec: dict  # how symexp.audit.measures builds its tensors
    note: str = ""
    instances: int = 1  # > 1: the same parameters are applied several times (shared weights)


def normalise(name: str) -> str:
    """'__iadd__' -> 'add', 'relu_' -> 'relu', '__matmul__' -> 'matmul', '_max_pool2d' -> 'max_pool2d'."""
    n = name.strip("_")
    n = {"iadd": "add", "radd": "add", "imul": "mul", "rmul": "mul", "truediv": "div", "itruediv": "div",
         "isub": "sub", "rsub": "sub"}.get(n, n)
    if n.startswith("max_pool") and n.endswith("_with_indices"):
        n = n[: -len("_with_indices")]
    return n


def bind(name: str, args: tuple, kwargs: dict) -> dict:
    names = SIGNATURES.get(name, ())
    bound = {names[i] if i < len(names) else f"arg{i}": a for i, a in enumerate(args)}
    bound.update(kwargs)
    return bound


class OpGraph:
    def __init__(self, method: str):
        self.method = method  # how it was traced: run | fx | modules
        self.ops: list[Op] = []
        self.outputs: set[int] = set()
        self.param_users: dict[str, set[int]] = {}
        self.param_shapes: dict[str, tuple] = {}
        self.notes: list[str] = []
        self.head_counts: dict[str, int] = {}  # module path -> its n_head/num_heads attribute (fx has no shapes)
        self.probe = None  # the input the traced run used (verification reruns the model on it)
        self.transposed: set[str] = set()  # weights stored [in, out] (Conv1D's addmm); shapes here are [out, in]

    def set_params(self, model) -> None:
        """Parameter shapes, weights stored [in, out] listed as [out, in] like every other map's."""
        self.param_shapes = {n: tuple(p.shape)[::-1] if n in self.transposed else tuple(p.shape)
                             for n, p in model.named_parameters()}

    def new(self, kind: str, name: str, inputs=(), params=None, meta=None) -> int:
        op = Op(kind, name, list(inputs), dict(params or {}), dict(meta or {}))
        self.ops.append(op)
        idx = len(self.ops) - 1
        for i in op.inputs:
            self.ops[i].users.append(idx)
        for p in op.params.values():
            self.param_users.setdefault(p, set()).add(idx)
        return idx

    def add(self, raw_name: str, args: tuple, kwargs: dict) -> int:
        """Classify one call (tensor operands already `Node`/`Param`) and append it; returns its index."""
        name = normalise(raw_name)
        bound = bind(name, args, kwargs)
        inputs, params, meta = [], {}, {}
        for role, v in bound.items():
            for item in v if isinstance(v, (list, tuple)) else (v,):
                if isinstance(item, Node):
                    inputs.append(item.idx)
                elif isinstance(item, Param):
                    params[role] = item.name
            if not isinstance(v, (Node, Param)) and not _has_operand(v):
                meta[role] = v
        kind = _kind(name, inputs, params, meta)
        if name == "addmm" and kind == "linear":
            self.transposed.add(params["weight"])
        return self.new(kind, name, inputs, params, meta)

    def users(self, idx: int) -> list[int]:
        return self.ops[idx].users


def _has_operand(v) -> bool:
    return isinstance(v, (list, tuple)) and any(isinstance(i, (Node, Param)) for i in v)


def _kind(name: str, inputs: list[int], params: dict, meta: dict) -> str:
    """The op's kind; parametrised ops need their weight as a parameter, not a derived tensor."""
    if name == "linear":
        return "linear" if "weight" in params else "other"
    if name == "addmm":
        return "linear" if "weight" in params and len(inputs) == 1 else "other"
    if name in CONV:
        if "weight" not in params:
            return "other"
        return "conv" if meta.get("groups", 1) == 1 else "gconv"  # grouped (depthwise: channels.py)
    if name in ("batch_norm", "layer_norm"):
        return "norm"
    if name in ACTIVATIONS or name == "leaky_relu":
        return "act" if not params else "other"
    if name.startswith(("max_pool", "adaptive_max_pool", "avg_pool", "adaptive_avg_pool")):
        return "pool"
    if name in ("mean", "sum", "amax"):
        return "reduce"
    if name in PASS:
        return "pass"
    if name in SHAPE or name in ("split", "chunk", "getitem"):
        return "param_view" if params and not inputs else "shape"
    if name == "flatten":
        return "flatten"
    if name in ("add", "mul"):
        return _elementwise_kind(name, inputs, params)
    if name == "div" and len(inputs) == 1 and not params:
        return "scalar"
    if name == "masked_fill" and not params:
        return "mask"
    if name in SOFTMAX:
        return "softmax"
    if name in ("matmul", "bmm"):
        return "matmul"
    if name == "scaled_dot_product_attention":
        return "sdpa"
    if name == "multi_head_attention_forward":
        return "mha"
    if name == "embedding":
        return "embedding" if "weight" in params else "other"
    return "other"


def _elementwise_kind(name: str, inputs: list[int], params: dict) -> str:
    if len(inputs) == 1 and len(params) == 1:  # x + b, x * g with a parameter: a per-unit affine op
        return "bias" if name == "add" else "scale"
    if name == "mul" and len(inputs) == 1 and not params:  # x * 0.5: linear, odd, homogeneous
        return "scalar"
    return "add" if name == "add" and len(inputs) == 2 else "other"
