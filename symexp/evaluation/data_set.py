"""What is measured on a fixed data set (symexp.data.TensorData): the loss on the training set (or its
evaluation sample) and on the test set, and which members are alive; a classifier also gets the test
accuracy and the homogeneity of its penultimate features (near-identical pairs; the final correlation
matrix for the heatmaps), the structure the paper's Figure 1 (right) reads off the features."""
from __future__ import annotations

import torch
from torch.func import vmap

from symexp import metrics
from symexp.data import TensorData
from symexp.ensemble import Ensemble, State
from symexp.evaluation import Result
from symexp.metrics import names


def data_set_results(ens: Ensemble, state: State, data: TensorData, mcfg: dict, final: bool) -> list[Result]:
    """Losses on the training set (or its evaluation sample) and the test set; classification: the
    test accuracy and the penultimate features' homogeneity, from the same pass over the test set."""
    n = mcfg["train_subset"] or data.n  # loss/train on the first n examples (large image sets)
    x_fit, y_fit = (data.x[:n], data.y[:n]) if data.x_eval is None else (data.x_eval, data.y_eval)  # text: a sample
    out = [("", names.LOSS_TRAIN, ens.full_loss(state.raw, x_fit, y_fit, state.buffers))]
    classified = data.task == "classification" and data.x_test is not None
    if classified:
        logits, feats = ens.outputs(state.raw, data.x_test, state.buffers)
        out.append(("", names.LOSS_TEST, vmap(ens.loss, in_dims=(0, None))(logits, data.y_test)))
    elif data.x_test is not None:
        out.append(("", names.LOSS_TEST, ens.full_loss(state.raw, data.x_test, data.y_test, state.buffers)))
    out.append(("", names.ALIVE, state.alive))
    if classified:
        out.extend(feature_results(logits, feats, data.y_test, mcfg, final))
    return out


def feature_results(logits: torch.Tensor, feats: torch.Tensor, y: torch.Tensor, mcfg: dict,
                    final: bool) -> list[Result]:
    """Test accuracy and the penultimate features' homogeneity over the test set; at the final step,
    with metrics.corr_matrix, also every entry i < j of their correlation matrix (for the heatmaps)."""
    near = mcfg["near_corr"]
    out = [("", names.ACC_TEST, (logits.argmax(-1) == y).double().mean(1)),
           ("penultimate", names.near_identical(near), metrics.near_identical_pairs(feats, near))]
    if final and mcfg["corr_matrix"]:
        corr = metrics.feature_correlation(feats)
        i, j = torch.triu_indices(corr.shape[1], corr.shape[1], 1)
        out.extend(("penultimate", names.corr(a, b), v)
                   for a, b, v in zip(i.tolist(), j.tolist(), corr[:, i, j].unbind(1)))
    return out
