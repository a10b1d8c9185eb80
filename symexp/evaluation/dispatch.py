"""Every metric of every member at one step: the measures a data set's kind calls for (one module per
kind in symexp.evaluation) and the structure of the weights, measured for every kind."""
from __future__ import annotations

from symexp.batcher import Batcher
from symexp.data import TensorData
from symexp.data.collapse_sets import BalancedData, SpectrumData
from symexp.data.streams import StreamData
from symexp.ensemble import Ensemble, State
from symexp.evaluation import Result, data_set, neural_collapse, posterior_collapse, stream
from symexp.evaluation.weights import measure, probe_plan
from symexp.metrics import names


def evaluate(ens: Ensemble, state: State, data: TensorData, mcfg: dict, final: bool = False,
             batcher: Batcher | None = None) -> list[Result]:
    """Every metric of every member at `state.step`. A stream has no fixed training set: it is
    measured on its probe and test views (symexp.evaluation.stream), which the batcher's stream gives."""
    theta = ens.effective(state.raw, ens.fixed)
    if isinstance(data, StreamData):
        out = stream.stream_results(ens, state, data, batcher, mcfg) + [("", names.ALIVE, state.alive)]
    else:
        out = data_set.data_set_results(ens, state, data, mcfg, final) + extra_results(ens, state, data)
    # a model may measure derived tensors (e.g. per-head W_Q^T W_K) beside its raw effective weights
    views = {**theta, **(ens.model.probe_views(theta) if hasattr(ens.model, "probe_views") else {})}
    for layer, families in probe_plan(ens, mcfg).items():
        out.extend((layer, name, v) for name, v in measure(views[layer].detach(), families, mcfg).items())
    return out


def extra_results(ens: Ensemble, state: State, data: TensorData) -> list[Result]:
    """The collapse measures a fixed data set calls for by its type (none for the others)."""
    if isinstance(data, BalancedData):
        return neural_collapse.neural_collapse_results(ens, state, data)
    if isinstance(data, SpectrumData):
        return posterior_collapse.posterior_results(ens, state, data)
    return []
