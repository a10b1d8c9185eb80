"""Trace a model into an OpGraph: by running it (on the user's inputs, or on a probe input built from its
first layer) under a TorchFunctionMode, else with torch.fx, else from its modules' order.

Running sees every torch function actually called (Python control flow, functional activations,
nn.MultiheadAttention's packed projections) and the shapes; torch.fx needs no input but stops at
data-dependent control flow (symexp's own models all hit some); the module-order fallback sees only
modules, so functional ops between them are invisible and the audit says so.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from symexp.audit.attention import HEAD_ATTRS
from symexp.audit.errors import TraceError
from symexp.audit.fx_trace import fx_graph, module_call
from symexp.audit.graph import Node, OpGraph, Param



def trace(model: nn.Module, example_inputs=None) -> OpGraph:
    """The model's OpGraph; with example inputs, also each activation's per-channel max |output|."""
    graph = _trace(model, example_inputs)
    for path, m in model.named_modules():
        heads = next((getattr(m, a) for a in HEAD_ATTRS if isinstance(getattr(m, a, None), int)), None)
        if heads:
            graph.head_counts[path] = heads
    return graph


def _trace(model: nn.Module, example_inputs) -> OpGraph:
    names = canonical_names(model)
    if example_inputs is not None:
        try:
            g = run_graph(model, example_inputs, names, "run", record=True)
            g.probe = example_inputs
            return g
        except Exception as e:  # noqa: BLE001 - any failure of the user's forward is reported in one line
            raise TraceError(f"model(example_inputs) failed: {type(e).__name__}: {_first_line(e)}") from e
    failures = []
    for probe in probe_inputs(model):
        try:
            g = run_graph(model, probe, names, "run", record=False)
            g.probe = probe
            g.notes.append(f"traced by running on a probe input {_describe(probe)} (no example inputs)")
            return g
        except Exception as e:  # noqa: BLE001
            failures.append(f"probe run {_describe(probe)}: {type(e).__name__}: {_first_line(e)}")
    try:
        g = fx_graph(model, names)
        g.notes.extend(f"not traced by {f}" for f in failures)
        return g
    except Exception as e:  # noqa: BLE001
        failures.append(f"torch.fx: {type(e).__name__}: {_first_line(e)}")
    g = module_graph(model, names)
    if not g.ops or not g.param_users:
        raise TraceError("cannot trace the model (" + "; ".join(failures) + ") and it has no standard "
                         "modules to read its structure from; pass example_inputs that its forward accepts")
    g.notes.append("structure inferred from module order, not traced (" + "; ".join(failures) + "): "
                   "functional operations between modules are invisible; verify before relying on it")
    return g


def canonical_names(model: nn.Module) -> dict[int, str]:
    """id(parameter) -> its first name (tied parameters appear once, as in named_parameters)."""
    return {id(p): n for n, p in model.named_parameters()}


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else "(no message)"


def _describe(inputs) -> str:
    ts = inputs if isinstance(inputs, tuple) else (inputs,)
    return ", ".join(f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}" for t in ts if torch.is_tensor(t))


class _Recorder(TorchFunctionMode):
    """Appends one op per torch call whose result is a tensor (calls inside it are not seen)."""

    def __init__(self, graph: OpGraph, names: dict[int, str], record: bool):
        super().__init__()
        self.graph, self.names, self.record = graph, names, record
        self.node_of: dict[int, int] = {}
        self.keep: list = []  # every traced tensor stays alive so that ids are not reused mid-run

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if name == "__get__":  # attribute access: x.T, p.data
            name = getattr(getattr(func, "__self__", None), "__name__", name)
            name = {"T": "t", "mT": "t", "data": "detach"}.get(name, name)
        tensors = [out] if torch.is_tensor(out) else [t for t in out if torch.is_tensor(t)] \
            if isinstance(out, (tuple, list)) else []
        if not tensors:
            return out
        idx = self.graph.add(name, self._abstract(args), {k: self._abstract(v) for k, v in kwargs.items()})
        self.keep.append((args, out))
        if torch.is_tensor(out):
            self._bind(out, idx)
        else:
            for i, t in enumerate(out):
                if torch.is_tensor(t):
                    self._bind(t, self.graph.new("item", name, [idx], meta={"index": i}))
        return out

    def _bind(self, t: torch.Tensor, idx: int) -> None:
        op = self.graph.ops[idx]
        op.meta["shape"] = tuple(t.shape)
        self.node_of[id(t)] = idx
        if self.record and op.kind == "act" and t.dim() >= 2:
            a = t.detach().abs().float()
            op.meta["amax_dim1"] = a.movedim(1, 0).reshape(t.shape[1], -1).amax(1).cpu()
            op.meta["amax_last"] = a.reshape(-1, t.shape[-1]).amax(0).cpu()

    def _abstract(self, v):
        if isinstance(v, (tuple, list)):
            return type(v)(self._abstract(i) for i in v)
        if not torch.is_tensor(v):
            return v
        if id(v) in self.names:
            return Param(self.names[id(v)])
        if id(v) not in self.node_of:  # a tensor made outside any traced call (a buffer, a constant)
            self.keep.append(v)
            self.node_of[id(v)] = self.graph.new("const", "tensor", meta={"shape": tuple(v.shape)})
        return Node(self.node_of[id(v)])


def run_graph(model: nn.Module, inputs, names: dict[int, str], method: str, record: bool) -> OpGraph:
    graph = OpGraph(method)
    rec = _Recorder(graph, names, record)
    args, kwargs = split_inputs(inputs)
    for v in (*args, *kwargs.values()):
        if torch.is_tensor(v):
            rec.node_of[id(v)] = graph.new("input", "input", meta={"shape": tuple(v.shape)})
    with _eval_mode(model), torch.no_grad(), rec:
        out = model(*args, **kwargs)
    for t in tensors_in(out):
        if id(t) in rec.node_of:
            graph.outputs.add(rec.node_of[id(t)])
    graph.set_params(model)
    return graph


def split_inputs(inputs) -> tuple[tuple, dict]:
    """A tuple is positional arguments, a dict keyword arguments, anything else the one argument."""
    return (inputs, {}) if isinstance(inputs, tuple) else ((), inputs) if isinstance(inputs, dict) else ((inputs,), {})


def tensors_in(out):
    """Every tensor in a model's output (tuples, lists, dicts and dict-like ModelOutputs, nested)."""
    if torch.is_tensor(out):
        yield out
    elif isinstance(out, (tuple, list)):
        for o in out:
            yield from tensors_in(o)
    elif isinstance(out, dict):
        for o in out.values():
            yield from tensors_in(o)


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    """Eval mode (no BatchNorm statistics updates, no dropout) for the trace, then each module's own mode."""
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        yield
    finally:
        for m, training in modes.items():
            m.train(training)


def probe_inputs(model: nn.Module) -> list:
    """Small inputs for the first layer (in registration order); several image sizes for convolutions
    (small first: the trace costs one forward pass), none when no first layer is recognised."""
    embeddings = [m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding)]
    for m in model.modules():
        p = next(m.parameters(recurse=False), None)
        if p is None:
            continue
        kw = {"dtype": p.dtype if p.is_floating_point() else torch.float32, "device": p.device}
        if isinstance(m, nn.Linear):
            return [torch.randn(2, m.in_features, **kw)]
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            n = len(m.kernel_size)
            return [torch.randn(2, m.in_channels, *[side] * n, **kw) for side in ((16, 32, 28) if n < 3 else (8, 16))]
        if isinstance(m, nn.Embedding):
            return [torch.randint(0, min(embeddings), (2, min(8, *embeddings)), device=p.device)]
        if isinstance(m, nn.MultiheadAttention):
            return [torch.randn(*((2, 8, m.embed_dim) if m.batch_first else (8, 2, m.embed_dim)), **kw)]
        if isinstance(m, nn.LayerNorm):
            return [torch.randn(2, 8, *m.normalized_shape, **kw)]
        return []
    return []


def module_graph(model: nn.Module, names: dict[int, str]) -> OpGraph:
    """The module-order fallback: every leaf module with a known meaning, chained in registration order."""
    graph = OpGraph("modules")
    prev = graph.new("input", "input")

    def walk(m: nn.Module) -> None:
        nonlocal prev
        call = module_call(m, Node(prev), names)
        if call is not None:  # a leaf: its own children (MultiheadAttention.out_proj) are part of it
            prev = graph.add(*call)
            return
        for child in m.children():
            walk(child)

    walk(model)
    graph.outputs.add(prev)
    graph.set_params(model)
    return graph
