"""symexp audit's per-matrix spectra: every weight matrix (Linear, Conv1D [in, out], Embedding, conv kernel
slices as WeightWatcher reads them, grouped convs as their blocks, conv_transpose, a [1, T, d] table) gets
the stable rank, erank, tau-rank and sigma_1 of its pooled spectrum, equal to an SVD of the slices; stacked
members are measured each on its own; and where weightwatcher is installed its stable ranks are ours."""
from __future__ import annotations

import importlib.util

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from symexp.audit import audit
from symexp.audit.core import measure, thresholds
from symexp.audit.discover import discover
from symexp.audit.report import summary
from symexp.audit.trace import trace

TAU = "rank/tau@0.001"
MEASURES = ["rank/stable", "rank/erank", TAU, "spectrum/sv0"]


class Zoo(nn.Module):
    """One of each way a weight matrix is stored: Linear, transformers' Conv1D (addmm, [in, out]), Embedding,
    a [1, T, d] position table, a 3x3 conv, a grouped and a depthwise conv, a transposed conv."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 12)
        self.pos = nn.Parameter(torch.randn(1, 5, 12))
        self.c_fc = nn.Parameter(torch.randn(12, 20) * 0.1)  # [in, out], run as addmm
        self.c_fc_bias = nn.Parameter(torch.zeros(20))
        self.fc = nn.Linear(20, 16)
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.grouped = nn.Conv2d(8, 12, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.up = nn.ConvTranspose2d(12, 6, 2, stride=2, groups=3)

    def forward(self, tok, img):
        x = self.emb(tok) + self.pos
        x = torch.addmm(self.c_fc_bias, x.view(-1, 12), self.c_fc).view(*x.shape[:2], 20)
        y = self.up(self.depthwise(self.grouped(torch.relu(self.conv(img)))))
        return self.fc(torch.tanh(x)).mean() + y.mean()


def inputs():
    return torch.randint(0, 50, (2, 5)), torch.randn(2, 4, 6, 6)


def expected(W: torch.Tensor, groups: int = 1) -> dict[str, float]:
    """The measures from a plain SVD of every kernel position's (and group's) block, spectra pooled."""
    W = W.detach().double()
    if W.dim() == 2:
        blocks = [W]
    else:
        g = W.reshape(groups, W.shape[0] // groups, W.shape[1], -1)
        blocks = [g[k, :, :, p] for k in range(groups) for p in range(g.shape[-1])]
    s = torch.cat([torch.linalg.svdvals(b) for b in blocks]).sort(descending=True).values
    p = s / s.sum()
    return {"rank/stable": float((s / s[0]).square().sum()), TAU: float((s > 1e-3 * s[0]).sum()),
            "rank/erank": float(torch.exp(-torch.special.xlogy(p, p).sum())), "spectrum/sv0": float(s[0])}


def spectra(df, member=0):
    sp = df[(df.symmetry == "spectrum") & (df.member == member)]
    return sp.pivot_table(index="layer", columns="measure", values="value", dropna=False)


def test_every_matrix_has_the_spectrum_of_its_slices():
    torch.manual_seed(0)
    model = Zoo()
    with torch.no_grad():  # planted rank 3 in the Linear, a zero kernel position in the 3x3 conv
        model.fc.weight.copy_(torch.randn(16, 3) @ torch.randn(3, 20))
        model.conv.weight[:, :, 1, 1] = 0
    sp = spectra(audit(model, inputs()))
    want = {"emb.weight": expected(model.emb.weight), "pos": expected(model.pos[0]), "c_fc": expected(model.c_fc),
            "fc.weight": expected(model.fc.weight), "conv.weight": expected(model.conv.weight),
            "grouped.weight": expected(model.grouped.weight, 2),
            "depthwise.weight": expected(model.depthwise.weight, 12),
            "up.weight": expected(model.up.weight, 3)}
    assert set(sp.index) == set(want)  # biases and vectors have no spectrum
    for layer, values in want.items():
        for m in MEASURES:
            assert sp.loc[layer, m] == pytest.approx(values[m], rel=1e-6), (layer, m)
    assert sp.loc["fc.weight", TAU] == 3 and sp.loc["depthwise.weight", TAU] == 12 * 9
    assert sp.loc["conv.weight", TAU] == 8 * 4  # 8 positions of rank 4 (4 inputs), the zeroed one adds none


def test_members_are_measured_each_on_their_own_and_non_finite_is_nan():
    torch.manual_seed(0)
    a, b = Zoo(), Zoo()
    with torch.no_grad():
        b.fc.weight[:, 5:] = 0
    found = discover(trace(a, inputs()))
    pb = dict(b.named_parameters())
    theta = {n: torch.stack([p.detach(), pb[n].detach()]) for n, p in a.named_parameters()}
    df = measure(found, theta, thresholds())
    for m, model in enumerate((a, b)):
        pd.testing.assert_frame_equal(spectra(df, m), spectra(audit(model, inputs())), rtol=1e-9)
    theta["fc.weight"][1, 0, 0] = float("nan")
    sp = [spectra(measure(found, theta, thresholds()), m) for m in (0, 1)]
    assert sp[1].loc["fc.weight"].isna().all() and sp[0].loc["fc.weight"].notna().all()
    pd.testing.assert_frame_equal(sp[1].drop("fc.weight"), spectra(audit(b, inputs())).drop("fc.weight"), rtol=1e-9)


def test_summary_names_matrices_below_full_rank():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16))
    with torch.no_grad():
        model[0].weight[:, :4] = 0
    text = summary(audit(model), "mlp")
    assert "spectra of 2 weight matrices" in text and "below full tau-rank: 0.weight 8/12" in text
    assert "spectrum" not in text.split("symmetries found:")[1].splitlines()[0]


@pytest.mark.skipif(importlib.util.find_spec("weightwatcher") is None,
                    reason="weightwatcher is not installed (optional: pip install weightwatcher)")
def test_stable_ranks_equal_weightwatchers():
    import weightwatcher

    class Net(nn.Module):  # no groups: WeightWatcher reads a grouped conv's [out, in/g] slice as one matrix
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(200, 70)
            self.conv1, self.conv2 = nn.Conv2d(3, 64, 3, padding=1), nn.Conv2d(64, 96, 3, padding=1)
            self.fc1, self.fc2 = nn.Linear(166, 120), nn.Linear(120, 80)

        def forward(self, x, tok):
            h = F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3))
            return self.fc2(F.relu(self.fc1(torch.cat([h, self.emb(tok).mean(1)], 1))))

    torch.manual_seed(0)
    model = Net()
    with torch.no_grad():
        model.fc1.weight[:, :60] = 0
    theirs = weightwatcher.WeightWatcher(model=model).analyze(min_evals=1).set_index("longname").stable_rank
    ours = spectra(audit(model, (torch.randn(2, 3, 8, 8), torch.randint(0, 200, (2, 5)))))["rank/stable"]
    assert len(theirs) == 5
    for name, value in theirs.items():
        assert ours[f"{name}.weight"] == pytest.approx(value, rel=1e-5), name
