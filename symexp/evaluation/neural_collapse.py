"""What is measured on a balanced image set (symexp.data.collapse_sets.BalancedData), beside a fixed
data set's losses (symexp.evaluation.data_set): NC1-NC4 and the centred feature rank of the penultimate
features of the whole training set, and the training accuracy -- neural collapse is a property of the
training features in the terminal phase, so they are measured there, not on the test set."""
from __future__ import annotations

from symexp.data.collapse_sets import BalancedData
from symexp.ensemble import Ensemble, State
from symexp.metrics import collapse, names

FEATURE_RANK_TAU = 1e-3


def neural_collapse_results(ens: Ensemble, state: State, data: BalancedData) -> list:
    """NC1-NC4 and the feature rank of the penultimate features of the whole training set."""
    logits, feats = ens.outputs(state.raw, data.x, state.buffers)
    y, C = data.y, len(data.classes)
    out = [("", names.ACC_TRAIN, (logits.argmax(-1) == y).double().mean(1))]
    pen = "penultimate"
    out += [(pen, names.NC1, collapse.nc1(feats, y, C)), (pen, names.EQUINORM, collapse.equinorm(feats, y, C)),
            (pen, names.MEAN_COS, collapse.mean_cosine(feats, y, C)),
            (pen, names.EQUIANGULARITY, collapse.equiangularity(feats, y, C)),
            (pen, names.ETF_ERROR, collapse.etf_error(feats, y, C)),
            (pen, names.NC4, collapse.nc4_agreement(feats, y, logits, C)),
            (pen, names.feature_rank(FEATURE_RANK_TAU), collapse.feature_rank(feats, FEATURE_RANK_TAU))]
    if hasattr(ens.model, "classifier"):
        W = ens.model.classifier(ens.effective(state.raw, ens.fixed))
        out.append((pen, names.NC3, collapse.nc3(feats, y, W, C)))
    return out
