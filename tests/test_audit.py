"""symexp audit: planted structure is reported exactly (and a random model of the same shape reports
none), on plain, torchvision-style, torch-native and symexp models; tied weights, offsets, fallbacks,
the hook, the CLI's bad inputs and a real job whose counts must equal its own metrics."""
from __future__ import annotations

import datetime
import pickle
import textwrap

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import symexp
from symexp import metrics
from symexp.audit import AuditHook, audit, audit_job
from symexp.audit.cli import main as cli_main
from symexp.audit.core import measure, thresholds
from symexp.audit.discover import discover
from symexp.audit.errors import AuditError, TraceError
from symexp.audit.fx_trace import fx_graph
from symexp.audit.report import structure_fractions, summary
from symexp.audit.trace import canonical_names, trace
from symexp.models.mlp import MLP
from symexp.models.resnet import ResNet18
from symexp.models.transformer import Transformer

COUNTS = ["dead_units", "duplicate_units", "duplicate_groups", "pairs_on_plane", "zero_units", "never_active",
          "qk_off_directions", "ov_off_directions", "off_directions"]


def value(df, layer, symmetry, measure, member=0):
    rows = df[(df.layer == layer) & (df.symmetry == symmetry) & (df.measure == measure) & (df.member == member)]
    assert len(rows) == 1, (layer, symmetry, measure, len(rows))
    return rows.value.iloc[0]


def structure(df) -> pd.DataFrame:
    """Count rows with a non-zero count: what the audit says sits on a mirror plane."""
    return df[df.measure.isin(COUNTS) & (df["count"] > 0)]


def copy_unit(w_in, b_in, w_out, src, dst):
    w_in[dst], w_out[:, dst] = w_in[src], w_out[:, src]
    if b_in is not None:
        b_in[dst] = b_in[src]


def zero_unit(w_in, b_in, w_out, i):
    w_in[i], w_out[:, i] = 0.0, 0.0
    if b_in is not None:
        b_in[i] = 0.0


def mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 5))


def test_planted_units_are_found_exactly_and_a_random_mlp_has_none():
    model = mlp()
    a, b = model[0], model[2]
    with torch.no_grad():
        for i in (0, 1, 2):  # k = 3 dead units: the rescaling pair (in, out) and bias at zero
            zero_unit(a.weight, a.bias, b.weight, i)
        for group in ((5, 6), (7, 8, 9)):  # m = 2 groups of duplicated units
            for j in group[1:]:
                copy_unit(a.weight, a.bias, b.weight, group[0], j)
        a.weight[10], a.bias[10] = 0.0, -5.0  # never active on data, yet not at zero (outgoing weights remain)
    df = audit(model, torch.randn(64, 12))
    got = {(r.layer, r.symmetry, r.measure): r.count for r in structure(df).itertuples()}
    assert got == {("0", "permutation", "dead_units"): 3, ("0", "permutation", "duplicate_units"): 3,
                   ("0", "permutation", "duplicate_groups"): 2, ("0", "permutation", "pairs_on_plane"): 4,
                   ("0", "permutation", "never_active"): 4, ("0", "rescaling", "zero_units"): 3}
    assert value(df, "0", "permutation", "independent_units") == 24 - 3 - 3
    assert value(df, "0", "permutation", "pair_distance_min") == pytest.approx(0.0, abs=1e-6)
    # weight-space structure only: a random ReLU unit may well be silent on 64 random inputs
    assert structure(audit(mlp(seed=1))).empty


def test_rescaling_pair_sign_mirror_and_linear_rotation():
    class Diagonal(nn.Module):  # f(x) = v . (u * x): the u * v rescaling pairs of spred
        def __init__(self):
            super().__init__()
            self.u = nn.Parameter(torch.randn(10))
            self.v = nn.Linear(10, 1, bias=False)

        def forward(self, x):
            return self.v(x * self.u)

    torch.manual_seed(0)
    diag = Diagonal()
    with torch.no_grad():
        diag.u[3], diag.v.weight[0, 3] = 0.0, 0.0
    df = audit(diag, softmax_output=False)
    assert value(df, "u", "rescaling", "zero_units") == 1
    assert structure(audit(Diagonal(), softmax_output=False)).empty

    tanh = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    with torch.no_grad():
        zero_unit(tanh[0].weight, tanh[0].bias, tanh[2].weight, 4)
    df = audit(tanh)
    assert set(df[df.layer == "0"].symmetry) == {"permutation", "sign"}  # tanh is odd, not homogeneous
    assert value(df, "0", "sign", "zero_units") == 1

    linear = nn.Sequential(nn.Linear(10, 8, bias=False), nn.Dropout(0.1), nn.Linear(8, 6, bias=False))
    with torch.no_grad():
        linear[0].weight[2:], linear[2].weight[:, 2:] = 0.0, 0.0  # inner directions 2..7 off: rank 2 of min(6, 8, 10)
    df = audit(linear, softmax_output=False)
    assert value(df, "0", "rotation", "tau_rank") == 2 and value(df, "0", "rotation", "off_directions") == 4
    assert value(df, "0", "rotation", "direction_distance_min") == 0.0
    assert structure(audit(nn.Sequential(nn.Linear(10, 8), nn.Linear(8, 6)), softmax_output=False)).empty


def encoder(seed=0):
    torch.manual_seed(seed)
    layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)


def test_multihead_attention_heads_of_planted_rank():
    model = encoder()
    w = model.layers[1].self_attn.in_proj_weight  # packed [W_Q; W_K; W_V], 4 heads of 8 rows
    with torch.no_grad():
        w[16 + 3:24] = 0.0  # head 2's W_Q keeps 3 rows: W_Q,2^T W_K,2 has rank r = 3
        w[64 + 8:64 + 16] = 0.0  # head 1's W_V is zero: W_O,1 W_V,1 = 0
    df = audit(model, torch.randn(2, 5, 32))
    assert set(df[df.symmetry == "double_rotation"].layer) >= {f"layers.{i}.self_attn.h{h}" for i in (0, 1) for h in range(4)}
    assert value(df, "layers.1.self_attn.h2", "double_rotation", "qk_tau_rank") == 3
    got = {(r.layer, r.measure): r.count for r in structure(df).itertuples()}
    assert got == {("layers.1.self_attn.h2", "qk_off_directions"): 5, ("layers.1.self_attn.h1", "ov_off_directions"): 8}
    assert structure(audit(encoder(seed=1), torch.randn(2, 5, 32))).empty
    assert value(df, "layers.0.linear1", "rescaling", "zero_units") == 0  # the ReLU feed-forward block is found too


class PackedAttention(nn.Module):
    """nanoGPT's attention: one packed q/k/v projection, split, F.scaled_dot_product_attention."""

    def __init__(self, d=32, n_head=4):
        super().__init__()
        self.n_head, self.n_embd = n_head, d
        self.c_attn, self.c_proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        B, T, C = x.size()
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        heads = lambda t: t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # noqa: E731
        y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


def test_packed_attention_with_sdpa_by_running_and_by_fx():
    torch.manual_seed(0)
    model = PackedAttention()
    with torch.no_grad():
        model.c_attn.weight[32 + 8 + 1:32 + 16] = 0.0  # head 1's W_K keeps one row: rank 1
    for found in (discover(trace(model, torch.randn(2, 5, 32))), discover(fx_graph(model, canonical_names(model)))):
        attn = [f for f in found.findings if f.symmetry == "double_rotation"]
        assert len(attn) == 1 and attn[0].spec["k"][0] == "c_attn.weight"
        assert attn[0].spec["k"][1].flatten().tolist() == list(range(32, 64))  # W_K: the second third of c_attn
    df = audit(model, torch.randn(2, 5, 32))
    assert value(df, "c_attn.h1", "double_rotation", "qk_tau_rank") == 1  # no common module: named by W_Q's
    assert structure(df).layer.tolist() == ["c_attn.h1"]


def stacked(*models) -> dict:
    return {n: torch.stack([dict(m.named_parameters())[n].detach() for m in models]) for n, _ in models[0].named_parameters()}


def test_symexp_transformer_heads_agree_with_its_own_probes():
    planted, plain = (Transformer(40, 16, 2, 4, 32, 0.1) for _ in range(2))
    with torch.no_grad():
        planted.blocks[1].attn.k.weight[8 + 2:16] = 0.0  # layer 1, head 1: rank 2
    theta = stacked(planted, plain)  # two members, audited at once
    df = measure(discover(trace(planted)), theta, thresholds())
    views = planted.probe_views(theta)
    for layer in range(2):
        for h in range(4):
            expect = metrics.tau_rank(views[f"L{layer}.h{h}.qk"], 1e-3).tolist()
            got = [value(df, f"blocks.{layer}.attn.h{h}", "double_rotation", "qk_tau_rank", m) for m in (0, 1)]
            assert got == expect
    assert value(df, "blocks.1.attn.h1", "double_rotation", "qk_tau_rank", 0) == 2
    assert value(df, "blocks.1.attn.h1", "double_rotation", "qk_tau_rank", 1) == 8


def plant(theta, w_in, extras, w_out):
    """Member 0: unit 1 duplicates unit 0, unit 2 is at zero."""
    for name in (w_in, *extras):
        theta[name][0, 1], theta[name][0, 2] = theta[name][0, 0], 0.0
    theta[w_out][0, :, 1], theta[w_out][0, :, 2] = theta[w_out][0, :, 0], 0.0


def test_symexp_mlp_and_resnet_units_agree_with_their_own_probes():
    mlp_layers = {"layers.0": ("hidden1", "layers.1"), "layers.1": ("hidden2", "layers.2")}
    blocks = {f"layer{s}.{b}.conv1": (f"layer{s}.{b}", f"layer{s}.{b}.conv2") for s in range(1, 5) for b in range(2)}
    for make, layers in ((lambda: MLP(20, [16, 12], 3, "relu"), mlp_layers), (lambda: ResNet18(3, 10, 0.125), blocks)):
        model = make()
        theta = stacked(model, make())
        for layer, (_, out) in layers.items():
            bn = layer.replace("conv1", "bn1")
            extras = [layer + ".bias"] if layer.startswith("layers") else [bn + ".weight", bn + ".bias"]
            plant(theta, layer + ".weight", extras, out + ".weight")
        df = measure(discover(trace(model)), theta, thresholds())
        views = model.probe_views(theta)
        for layer, (probe, _) in layers.items():
            assert [value(df, layer, "permutation", "independent_units", m) for m in (0, 1)] == \
                metrics.independent_units(views[probe]).tolist()
            dead = (metrics.dead_fraction(views[probe]) * views[probe].shape[1]).round().tolist()
            assert [value(df, layer, "permutation", "dead_units", m) for m in (0, 1)] == dead
            assert value(df, layer, "permutation", "duplicate_units", 0) == 1 and dead[0] == 1


class Block(nn.Module):
    """torchvision's BasicBlock, written with standard modules."""

    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class TorchvisionResNet(nn.Module):
    def __init__(self, widths=(8, 16), classes=5):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Block(widths[0], widths[0]), Block(widths[0], widths[0]))
        self.layer2 = nn.Sequential(Block(widths[0], widths[1], 2), Block(widths[1], widths[1]))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[1], classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(x, 1))


def test_torchvision_style_resnet():
    torch.manual_seed(0)
    model = TorchvisionResNet()
    blocks = [f"layer{s}.{b}.conv1" for s in (1, 2) for b in (0, 1)]
    found = discover(trace(model))
    kinds = {(f.symmetry, f.layer) for f in found.findings}
    assert {(s, b) for s in ("permutation", "rescaling") for b in blocks} <= kinds
    assert {f.layer for f in found.findings if f.symmetry == "scale"} == \
        {"conv1", "layer2.0.downsample.0", *blocks, *(b.replace("conv1", "conv2") for b in blocks)}
    assert ("translation", "fc") in kinds
    # one residual stream per stage (a traced run: channel spaces need shapes), its norms included
    streams = {f.layer: f for f in found.findings if f.layer.endswith(":stream")}
    assert set(streams) == {"conv1:stream", "layer2.0.conv2:stream"} and not found.unclassified
    assert {"bn1.weight", "layer1.0.bn2.weight", "layer1.1.conv1.weight"} <= set(streams["conv1:stream"].params)
    assert "layer2.0.downsample.1.bias" in streams["layer2.0.conv2:stream"].params
    fx = discover(fx_graph(model, canonical_names(model)))  # without shapes: the rest, and the norms listed
    assert kinds - {("permutation", s) for s in streams} == {(f.symmetry, f.layer) for f in fx.findings}
    assert {"bn1.weight", "layer1.0.bn2.weight", "layer2.0.downsample.1.bias"} <= set(fx.unclassified)
    assert structure(audit(model)).empty
    with torch.no_grad():
        blk = model.layer1[0]
        blk.bn1.weight[3], blk.bn1.bias[3], blk.conv2.weight[:, 3] = 0.0, 0.0, 0.0  # a zeroed rescaling pair
        blk = model.layer2[1]
        for t in (blk.conv1.weight, blk.bn1.weight, blk.bn1.bias):
            t[6] = t[5]
        blk.conv2.weight[:, 6] = blk.conv2.weight[:, 5]
    got = {(r.layer, r.symmetry, r.measure): r.count for r in structure(audit(model)).itertuples()}
    assert got == {("layer1.0.conv1", "rescaling", "zero_units"): 1, ("layer2.1.conv1", "permutation", "duplicate_units"): 1,
                   ("layer2.1.conv1", "permutation", "duplicate_groups"): 1, ("layer2.1.conv1", "permutation", "pairs_on_plane"): 1}


def test_shared_and_tied_weights():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.block = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8))

        def forward(self, x):
            return self.block(self.block(x))

    perm = [f for f in discover(trace(Shared())).findings if f.symmetry == "permutation"]
    assert len(perm) == 1 and perm[0].instances == 2 and "applied 2 times" in perm[0].note

    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 8)
            self.head = nn.Linear(8, 20, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, idx):
            return self.head(self.fc2(F.relu(self.fc1(self.emb(idx)))))

    found = discover(trace(TiedLM()))
    assert {(f.symmetry, f.layer) for f in found.findings} == {("permutation", "fc1"), ("rescaling", "fc1")}
    # fc2 -> head is a linear path (rotation) and the head's logits a translation, but both would have to
    # move the embedding the head's weight is tied to
    assert "broken by tied weights: emb.weight is also used by emb" in found.unclassified["fc2.bias"]
    assert "broken by tied weights" in found.unclassified["emb.weight"]


def test_offsets_mean_no_mirror_at_the_origin():
    model = mlp()
    names = ("0.weight", "0.bias", "2.weight")
    assert not any(audit(model).measure == "origin_on_plane")  # without offsets every plane passes the origin
    gen = torch.Generator().manual_seed(0)
    offsets = {n: torch.randn(dict(model.named_parameters())[n].shape, generator=gen) for n in names}
    df = audit(model, offsets=offsets)
    assert value(df, "0", "permutation", "origin_on_plane") == 0
    assert value(df, "0", "rescaling", "origin_on_plane") == 0
    zero_unit(offsets["0.weight"], offsets["0.bias"], offsets["2.weight"], 4)  # unit 4 unshifted
    copy_unit(offsets["0.weight"], offsets["0.bias"], offsets["2.weight"], 6, 7)  # 6 and 7 shifted alike
    df = audit(model, offsets=offsets)
    assert value(df, "0", "rescaling", "origin_on_plane") == 1
    assert value(df, "0", "permutation", "origin_on_plane") == 1
    with pytest.raises(AuditError, match="not a parameter"):
        audit(model, offsets={"nope": torch.zeros(1)})


class Opaque2(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x, y):
        return self.fc2(F.relu(self.fc1(x))) if bool(y.sum() > 0) else y


def test_tracing_fallbacks_and_untraceable_models():
    class TwoInputs(nn.Module):  # the probe input is not enough; torch.fx traces it
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

        def forward(self, x, y):
            return self.fc2(torch.tanh(self.fc1(x))) + y

    df = audit(TwoInputs())
    assert df.attrs["trace"] == "traced with torch.fx" and "sign" in set(df.symmetry)

    class Branchy(nn.Module):  # data-dependent control flow and two inputs: module order only
        def __init__(self):
            super().__init__()
            self.fc1, self.act, self.fc2 = nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2)

        def forward(self, x, y):
            return self.fc2(self.act(self.fc1(x))) if bool(y.sum() > 0) else y

    found = discover(trace(Branchy()))
    assert found.graph.method == "modules" and {f.symmetry for f in found.findings} >= {"permutation", "rescaling"}
    assert all("module order" in f.note for f in found.findings)
    unseen = discover(trace(Opaque2()))  # Linear, Linear with a functional relu between: no rotation claimed
    assert "rotation" not in {f.symmetry for f in unseen.findings} and "functional" in unseen.unclassified["fc1.weight"]

    class Opaque(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(3, 3))

        def forward(self, x, y):
            return x @ self.w if bool(y.sum() > 0) else y

    with pytest.raises(TraceError, match="cannot trace") as e:
        audit(Opaque())
    assert "\n" not in str(e.value)
    with pytest.raises(TraceError, match=r"model\(example_inputs\) failed"):
        audit(mlp(), torch.randn(3, 7))


@pytest.mark.parametrize("kwargs, match", [({"dead_tol": 0.1}, "unknown threshold 'dead_tol'"),
                                           ({"rank_tau": -1.0}, "rank_tau=-1.0")])
def test_bad_thresholds_fail_in_one_line(kwargs, match):
    with pytest.raises(AuditError, match=match):
        audit(mlp(), **kwargs)


def test_hook_audits_every_k_optimizer_steps():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    hook = AuditHook(model, every=3, example_inputs=torch.randn(16, 4))
    handle = hook.attach(opt)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    for _ in range(7):
        opt.zero_grad()
        F.mse_loss(model(x), y).backward()
        opt.step()
    handle.remove()
    frame = hook.frame()
    assert sorted(set(frame.step)) == [3, 6] and "never_active" in set(frame.measure)


def test_report_fractions_and_summary():
    model = mlp()
    with torch.no_grad():
        zero_unit(model[0].weight, model[0].bias, model[2].weight, 0)
        copy_unit(model[0].weight, model[0].bias, model[2].weight, 1, 2)
    df = audit(model)
    frac = structure_fractions(df).set_index(["layer", "symmetry"])["fraction"]
    assert frac[("0", "permutation")] == pytest.approx(2 / 24) and frac[("0", "rescaling")] == pytest.approx(1 / 24)
    text = summary(df, "mlp")
    assert "dead_units 1/24" in text and "duplicate_groups 1/12" in text and "zero_units 1/24" in text
    assert symexp.audit(model).equals(df)  # the package is callable: symexp.audit(...) is audit(...)


NET = """
    import torch
    from torch import nn
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 3))
        def forward(self, x):
            return self.body(x)
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.randn(6, 3))
        def forward(self, x, y):
            return x @ self.w if bool(y.sum() > 0) else y
"""


@pytest.fixture
def checkpoint(tmp_path, monkeypatch):
    (tmp_path / "auditnets.py").write_text(textwrap.dedent(NET))
    monkeypatch.syspath_prepend(str(tmp_path))
    import auditnets

    model = auditnets.Net()
    with torch.no_grad():
        zero_unit(model.body[0].weight, model.body[0].bias, model.body[2].weight, 7)
    path = tmp_path / "net.pt"
    torch.save(model.state_dict(), path)
    return path


def test_cli_audits_a_checkpoint(checkpoint, tmp_path, capsys):
    out = tmp_path / "report"
    assert cli_main([str(checkpoint), "--model", "auditnets:Net", "--out", str(out), "--input-shape", "32,6"]) == 0
    df = pd.read_csv(out / "audit.csv")
    assert value(df, "body.0", "rescaling", "zero_units") == 1 and value(df, "body.0", "permutation", "never_active") == 1
    assert pd.read_parquet(out / "audit.parquet").shape == df.shape
    assert "zero_units 1/10" in capsys.readouterr().out and (out / "audit.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("case, match", [
    ("missing", "no such file"), ("corrupt", "not a readable torch checkpoint"),
    ("pickle", "weights_only=True"), ("misfit", "does not fit auditnets:Net: missing: body.0.weight"),
    ("no_model", "needs --model"), ("untraceable", "cannot trace"), ("threshold", "NAME=NUMBER")])
def test_cli_bad_input_is_one_line_and_writes_nothing(checkpoint, tmp_path, capsys, case, match):
    path, args = checkpoint, ["--model", "auditnets:Net"]
    if case == "missing":
        path = tmp_path / "absent.pt"
    elif case == "corrupt":
        path.write_bytes(path.read_bytes()[:100])
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"w": datetime.date(2020, 1, 1)}, protocol=2))  # an arbitrary object: never unpickled
    elif case == "misfit":
        torch.save({"other.weight": torch.zeros(2, 2)}, path)
    elif case == "no_model":
        args = []
    elif case == "untraceable":
        args = ["--model", "auditnets:Branchy"]
        import auditnets
        torch.save(auditnets.Branchy().state_dict(), path)
    else:
        args += ["--threshold", "dead_tau"]
    out = tmp_path / "out"
    assert cli_main([str(path), *args, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1 and err.startswith("symexp audit: ")
    assert not out.exists()


def test_audit_job_counts_equal_the_jobs_own_metrics(make_cfg, tmp_path):
    from symexp.run import run_job
    from tests.test_images import require_fashion_mnist

    require_fashion_mnist()
    tiny = ["experiment=fig1_right", "data.n_train=256", "data.n_test=64", "model.widths=[16,12]", "train.steps=4",
            "train.eval_every=4", "metrics.train_subset=64", "ensemble.seeds=[0]", "ensemble.weight_decays=[0.0,0.5]"]
    for brk in ("none", "offset"):
        run_job(make_cfg(*tiny, f"breaking={brk}"), tmp_path / brk, job=brk, progress=False)
    df = audit_job(tmp_path / "none")
    own = pd.read_parquet(tmp_path / "none" / "metrics.parquet")
    own = own[own.step == own.step.max()]
    for layer, probe in (("layers.0", "hidden1"), ("layers.1", "hidden2")):
        for m in (0, 1):
            mine = df[(df.layer == layer) & (df.member == m) & (df.symmetry == "permutation")].set_index("measure").value
            theirs = own[(own.layer == probe) & (own.member == m)].set_index("metric").value
            assert mine["independent_units"] == theirs["units/independent"]
            assert mine["dead_units"] == round(theirs["units/dead_frac"] * (16 if probe == "hidden1" else 12))
    assert set(df.weight_decay) == {0.0, 0.5} and not any(df.measure == "origin_on_plane")
    broken = audit_job(tmp_path / "offset")
    origin = broken[(broken.measure == "origin_on_plane") & (broken.symmetry == "permutation")]
    assert len(origin) == 4 and (origin["count"] == 0).all()  # 2 layers x 2 members: no plane through theta_0
