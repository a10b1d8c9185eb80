"""Issue 23's loss-of-plasticity measures on planted networks and the random-label stream: a unit exactly on
the zero plane stays there under the engine's SGD with coupled decay (Theorem 1) and leaves it when the decay's
centre is off the plane (syre); the per-example zero fraction the train step counts; the units silent on a
slow-bit pattern; the continuous distance to the plane; labels redrawn per task, deterministic per seed."""
from __future__ import annotations

import pytest
import torch

from symexp import optim
from symexp.data.continual import RandomLabels, SlowlyChangingRegression
from symexp.ensemble import Ensemble, member_table
from symexp.evaluation import stream
from symexp.metrics import names
from symexp.metrics import plasticity as lp
from symexp.models.mlp import MLP
from symexp.symmetry.breaking import Intact, Syre
from symexp.symmetry.plain import Plain


def planted(breaker, count_zeros=False) -> tuple[Ensemble, object]:
    """A 3-4-1 ReLU net, two members (wd 0.05 and 0.2): hidden unit 0's effective incoming row, bias and
    outgoing weight exactly 0, the other units as initialised."""
    model = MLP(3, [4], 1, "relu", scalar_output=True, count_zeros=count_zeros)
    members = member_table({"seeds": [0], "weight_decays": [0.05, 0.2], "lrs": [0.1], "label_noises": [0.0]})
    ens = Ensemble(model, Plain(), breaker, members, "regression", torch.device("cpu"), torch.float64)
    state = ens.init_state(optim.Rule("sgd"))
    for key, zero_at in (("layers.0.weight.w", (slice(None), 0)), ("layers.0.bias.w", (slice(None), 0)),
                         ("layers.1.weight.w", (slice(None), 0, 0))):
        # raw + offset = 0: the effective unit is on the zero plane for any breaking control
        state.raw[key][zero_at] = -ens.fixed[key][zero_at] if key in ens.fixed else 0.0
    return ens, state


def train(ens: Ensemble, state, steps: int = 40):
    step = ens.make_step(optim.Rule("sgd"), frozenset(ens.raw0), True, True, 1e8, compile=False,
                         buffers=state.buffers)
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(2, 8, 3, generator=g, dtype=torch.float64)
        y = x.sum(-1) + 0.1 * torch.randn(2, 8, generator=g, dtype=torch.float64)
        state.raw, state.opt, state.alive, _ = step(state.raw, state.opt, state.alive, x, y, torch.tensor(0.1))
    return ens.model.probe_views(ens.effective(state.raw, ens.fixed))["hidden1"]  # [M, 4, 3 + 1 + 1]


def test_a_unit_on_the_zero_plane_stays_there_and_leaves_it_under_syre():
    ens, state = planted(Intact())
    before = ens.model.probe_views(ens.effective(state.raw, ens.fixed))["hidden1"]
    after = train(ens, state)
    assert not after[:, 0].any()  # exactly 0: no gradient reaches it and decay keeps 0 at 0
    assert (after[:, 1:] != before[:, 1:]).any()  # the live units trained
    scale = torch.linalg.vector_norm(before.double(), dim=-1).mean(1)
    assert lp.left_plane_count(before, after, 1e-3, scale).tolist() == [0.0, 0.0]
    # syre's decay pulls the raw weights to 0, i.e. the effective unit towards the offset: off the plane
    ens, state = planted(Syre())
    before = ens.model.probe_views(ens.effective(state.raw, ens.fixed))["hidden1"]
    assert not before[:, 0].any()
    after = train(ens, state)
    assert after[:, 0].any(dim=-1).all()
    init = ens.model.probe_views(ens.effective(ens.raw0, ens.fixed))["hidden1"]
    scale = torch.linalg.vector_norm(init, dim=-1).mean(1)
    assert lp.left_plane_count(before, after, 1e-6, scale).tolist() == [1.0, 1.0]


def test_the_train_step_counts_units_at_zero_on_each_training_example():
    """A hand-built 2-3-1 net: on x = (1, 0) units (+, -, 0 bias) give activations (1, 0, 0); on x = (0, 1)
    (0, 1, 0): 2/3 of the units at 0 on each example; the counter holds (sum of fractions, examples)."""
    model = MLP(2, [3], 1, "relu", scalar_output=True, count_zeros=True)
    with torch.no_grad():
        model.layers[0].weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0], [0.0, 0.0]]))
        model.layers[0].bias.zero_()
    model.train()
    model(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    assert model.zeros_hidden1.tolist() == pytest.approx([2.0, 3.0])
    model.eval()  # an evaluation pass counts nothing
    model(torch.ones(5, 2))
    assert model.zeros_hidden1.tolist() == pytest.approx([2.0, 3.0])
    assert lp.zero_fraction(torch.tensor([[2.0, 3.0], [0.0, 0.0]])).tolist()[0] == pytest.approx(2 / 3)
    assert torch.isnan(lp.zero_fraction(torch.zeros(1, 2))).all()


def test_the_engine_step_accumulates_the_zero_fraction_and_evaluation_reads_it_once():
    ens, state = planted(Intact(), count_zeros=True)
    train(ens, state, steps=5)
    counter = state.buffers["zeros_hidden1"]  # [M, 2]
    assert counter[:, 1].tolist() == [40.0, 40.0]  # 5 steps of 8 examples per member
    assert ((counter[:, 0] >= 10.0) & (counter[:, 0] <= 40.0)).all()  # unit 0 is at 0 on every example: >= 1/4
    expected = (counter[:, 0] / 40).tolist()
    got = {(layer, metric): v for layer, metric, v in stream.zero_fraction_results(state)}
    assert got["hidden1", names.ZERO_FRACTION].tolist() == pytest.approx(expected)
    assert not state.buffers["zeros_hidden1"].any()  # restarted for the next window
    assert stream.zero_fraction_results(state) == []  # nothing counted since


def test_units_silent_on_a_pattern_and_the_distance_to_the_plane():
    scr = SlowlyChangingRegression([3, 4], flip_after=50)
    scr.next(10)
    x = scr.pattern_inputs()  # [M, 32, 20]: the current pattern with every fast-bit combination
    assert x.shape == (2, 32, 20) and len(torch.unique(x[0], dim=0)) == 32
    assert torch.equal(x[:, :, :15], scr._slow[:, None].expand(-1, 32, -1))
    torch.testing.assert_close(scr._y_block, scr.target(scr._x_block), rtol=0, atol=0)  # the looked-up targets
    acts = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 2.0, 0.0]]])  # units 0 and 2 silent on every input
    assert lp.dead_units(acts).tolist() == [2.0]
    V0 = torch.ones(1, 3, 4)
    ratio = lp.unit_norm_ratio(torch.stack([V0[0, 0] * 0.5, V0[0, 1] * 0.0, V0[0, 2] * 2])[None], V0)
    assert ratio.tolist() == [[0.5, 0.0, 2.0]]


def test_random_labels_are_redrawn_every_task_and_deterministic_per_seed():
    images = torch.arange(8 * 4, dtype=torch.float32).reshape(8, 1, 2, 2)

    def stream_of(seeds):
        return RandomLabels(images, 10, seeds, epochs_per_task=3, batch_size=4)  # 6 steps a task

    a, b = stream_of([5, 5, 6]), stream_of([5, 5, 6])
    batches = [a.next() for _ in range(12)]
    for xb, yb in batches:
        xb2, yb2 = b.next()
        assert torch.equal(xb, xb2) and torch.equal(yb, yb2)
        assert torch.equal(xb[0], xb[1]) and torch.equal(yb[0], yb[1])  # equal seeds, equal streams
    first, second = batches[:6], batches[6:]
    # every epoch of a task is every image once, with the task's own label for each image
    seen = torch.cat([xb[2, :, 0] for xb, _ in first[:2]])
    assert sorted(seen.tolist()) == sorted(images.reshape(8, 4)[:, 0].tolist())
    labels = {}
    for xb, yb in first:
        for img, lab in zip(xb[2, :, 0].tolist(), yb[2].tolist()):
            assert labels.setdefault(img, lab) == lab
    relabelled = {img: lab for xb, yb in second for img, lab in zip(xb[2, :, 0].tolist(), yb[2].tolist())}
    assert relabelled != labels  # task 2 redrew them (8 labels of 10 classes alike by chance: 1e-8)
    x, y = a.trained_task()  # the set under the labels just trained (task 2)
    assert y.shape == (3, 8) and all(y[2, i].item() == relabelled[x[i, 0].item()] for i in range(8))
    resumed = stream_of([5, 5, 6])
    resumed.load_state_dict(stream_of_state(stream_of([5, 5, 6]), 9))
    c = stream_of([5, 5, 6])
    for _ in range(9):
        c.next()
    for _ in range(5):
        assert all(torch.equal(u, v) for u, v in zip(resumed.next(), c.next()))
    with pytest.raises(ValueError, match="batch size dividing"):
        RandomLabels(images, 10, [0], epochs_per_task=1, batch_size=3)


def stream_of_state(s: RandomLabels, steps: int) -> dict:
    for _ in range(steps):
        s.next()
    return s.state_dict()
