"""torch.fx tracing into an OpGraph, and the functional form of the standard leaf modules (shared with
the module-order fallback). Composite torch modules (TransformerEncoderLayer, ...) are traced through;
only the modules below are leaves."""
from __future__ import annotations

import inspect
import operator

import torch.fx as fx
from torch import nn

from symexp.audit.graph import Node, OpGraph, Param

ACTIVATION_MODULES = {
    nn.ReLU: "relu", nn.Tanh: "tanh", nn.GELU: "gelu", nn.Sigmoid: "sigmoid", nn.SiLU: "silu", nn.ELU: "elu",
    nn.SELU: "selu", nn.CELU: "celu", nn.Softplus: "softplus", nn.Mish: "mish", nn.ReLU6: "relu6",
    nn.Hardswish: "hardswish", nn.Hardsigmoid: "hardsigmoid", nn.Softsign: "softsign",
    nn.Tanhshrink: "tanhshrink", nn.Identity: "identity", nn.Dropout: "dropout", nn.Dropout1d: "dropout",
    nn.Dropout2d: "dropout", nn.Dropout3d: "dropout", nn.AlphaDropout: "dropout",
}
POOL_MODULES = {nn.MaxPool1d: "max_pool1d", nn.MaxPool2d: "max_pool2d", nn.MaxPool3d: "max_pool3d",
                nn.AvgPool1d: "avg_pool1d", nn.AvgPool2d: "avg_pool2d", nn.AvgPool3d: "avg_pool3d",
                nn.AdaptiveAvgPool1d: "adaptive_avg_pool1d", nn.AdaptiveAvgPool2d: "adaptive_avg_pool2d",
                nn.AdaptiveAvgPool3d: "adaptive_avg_pool3d", nn.AdaptiveMaxPool2d: "adaptive_max_pool2d"}
CONV_MODULES = {nn.Conv1d: "conv1d", nn.Conv2d: "conv2d", nn.Conv3d: "conv3d"}
LEAVES = (nn.Linear, nn.Embedding, nn.LayerNorm, nn.MultiheadAttention, nn.modules.batchnorm._BatchNorm,
          nn.Flatten, nn.Softmax, nn.LogSoftmax, nn.LeakyReLU, nn.Hardtanh, nn.PReLU,
          *ACTIVATION_MODULES, *POOL_MODULES, *CONV_MODULES)
TUPLE_OPS = ("split", "chunk", "multi_head_attention_forward")


def _p(module: nn.Module, attr: str, names: dict[int, str]):
    t = getattr(module, attr, None)
    if t is None:
        return None
    return Param(names[id(t)]) if id(t) in names else None  # a buffer or a frozen non-parameter


def module_call(m: nn.Module, x, names: dict[int, str]):
    """(function name, args, kwargs) equivalent to calling leaf module `m` on `x`, or None."""
    w = lambda attr: _p(m, attr, names)  # noqa: E731
    if isinstance(m, nn.Linear):
        return "linear", (x, w("weight"), w("bias")), {}
    if type(m) in CONV_MODULES:
        return CONV_MODULES[type(m)], (x, w("weight"), w("bias")), {"groups": m.groups}
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return "batch_norm", (x, None, None, w("weight"), w("bias")), {}
    if isinstance(m, nn.LayerNorm):
        return "layer_norm", (x, m.normalized_shape, w("weight"), w("bias")), {}
    if isinstance(m, nn.Embedding):
        return "embedding", (x, w("weight")), {}
    if isinstance(m, nn.MultiheadAttention):
        kw = {r: w(r) for r in ("in_proj_weight", "in_proj_bias", "q_proj_weight", "k_proj_weight", "v_proj_weight")}
        return "multi_head_attention_forward", (x, x, x, m.embed_dim, m.num_heads), \
            {**kw, "out_proj_weight": _p(m.out_proj, "weight", names),
             "out_proj_bias": _p(m.out_proj, "bias", names), "batch_first": m.batch_first}
    if isinstance(m, nn.LeakyReLU):
        return "leaky_relu", (x, m.negative_slope), {}
    if isinstance(m, nn.Hardtanh):  # odd only with symmetric bounds
        return "hardtanh", (x, m.min_val, m.max_val), {}
    if isinstance(m, nn.PReLU):
        return "prelu", (x, w("weight")), {}
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return ("softmax" if isinstance(m, nn.Softmax) else "log_softmax"), (x, m.dim), {}
    if isinstance(m, nn.Flatten):
        return "flatten", (x, m.start_dim, m.end_dim), {}
    if type(m) in ACTIVATION_MODULES:
        return ACTIVATION_MODULES[type(m)], (x,), {}
    if type(m) in POOL_MODULES:
        return POOL_MODULES[type(m)], (x,), {}
    return None


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, LEAVES)


def fx_graph(model: nn.Module, names: dict[int, str]) -> OpGraph:
    """Symbolic trace (forward's keyword defaults held concrete) converted to an OpGraph."""
    params = list(inspect.signature(model.forward).parameters.values())[1:]
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    fxg = _Tracer().trace(model, concrete_args=concrete or None)
    graph = OpGraph("fx")
    graph.notes.append("traced symbolically with torch.fx (no shapes: head counts come from module attributes)")
    index: dict[fx.Node, object] = {}

    def arg(a):
        if isinstance(a, fx.Node):
            return index.get(a)
        if isinstance(a, (tuple, list)):
            return type(a)(arg(i) for i in a)
        return a

    for n in fxg.nodes:
        if n.op == "placeholder":
            index[n] = Node(graph.new("input", n.name))
        elif n.op == "get_attr":
            t = _attr(model, n.target)
            index[n] = Param(names[id(t)]) if id(t) in names else Node(graph.new("const", n.target))
        elif n.op == "call_module":
            call = module_call(model.get_submodule(n.target), arg(n.args[0]), names)
            index[n] = Node(graph.add(*call)) if call else Node(graph.add(n.target, arg(n.args), arg(n.kwargs)))
        elif n.op in ("call_function", "call_method"):
            index[n] = _call(graph, n, arg)
        elif n.op == "output":
            for o in _flat(arg(n.args)):
                if isinstance(o, Node):
                    graph.outputs.add(o.idx)
    graph.set_params(model)
    return graph


class _Meta:
    """A traced value that is not a tensor (x.size(), its items, arithmetic on them): not dataflow."""

    def __repr__(self) -> str:
        return "<shape>"


META = _Meta()


def _call(graph: OpGraph, n: fx.Node, arg):
    name = n.target if n.op == "call_method" else getattr(n.target, "__name__", str(n.target))
    args, kwargs = arg(n.args), arg(n.kwargs)
    if name in ("size", "dim", "numel", "getattr") or not any(isinstance(a, (Node, Param)) for a in _flat((args, kwargs))):
        return META
    if n.target is operator.getitem and isinstance(args[0], Node) \
            and graph.ops[args[0].idx].name in TUPLE_OPS and isinstance(args[1], int):
        return Node(graph.new("item", graph.ops[args[0].idx].name, [args[0].idx], meta={"index": args[1]}))
    return Node(graph.add(name, args, kwargs))


def _flat(v):
    if isinstance(v, (tuple, list)):
        for i in v:
            yield from _flat(i)
    elif isinstance(v, dict):
        for i in v.values():
            yield from _flat(i)
    else:
        yield v


def _attr(model: nn.Module, target: str):
    obj = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj
