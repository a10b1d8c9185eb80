"""Continual-learning streams (symexp.data.continual): schedule, determinism per seed, exact resume."""
import io

import pytest
import torch

from symexp.data.continual import PermutedImages, SlowlyChangingRegression


def round_trip(state: dict) -> dict:
    """A checkpoint's path: torch.save, then torch.load(weights_only=True)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def take(stream, batch_sizes):
    xs, ys = zip(*(stream.next(b) for b in batch_sizes))
    return torch.cat(xs, dim=1), torch.cat(ys, dim=1)


# ------------------------------------------------------------------ slowly-changing regression

def test_slow_bits_change_exactly_every_flip_after_examples():
    stream = SlowlyChangingRegression([0, 1])
    x, _ = take(stream, [9_999, 1, 2, 10_000, 9_998, 5])  # batches that straddle and hit boundaries
    slow, fast = x[..., :15], x[..., 15:]
    for block in range(3):
        rows = slow[:, block * 10_000:(block + 1) * 10_000]
        assert (rows == rows[:, :1]).all()  # constant within a block
    for boundary in (10_000, 20_000, 30_000):
        assert (slow[:, boundary] != slow[:, boundary - 1]).any(dim=1).all()  # redrawn at each boundary
    assert set(x.unique().tolist()) == {0.0, 1.0}
    assert 0.45 < fast.mean().item() < 0.55  # the 5 fast bits are fresh coin flips
    assert (fast[:, 1:] != fast[:, :-1]).any(dim=2).float().mean() > 0.9


def test_flip_one_variant_flips_exactly_one_slow_bit_per_block():
    stream = SlowlyChangingRegression([3], flip_after=20, flip_one=True)
    x, _ = take(stream, [200])
    patterns = x[0, ::20, :15]
    assert ((patterns[1:] != patterns[:-1]).sum(dim=1) == 1).all()


def test_target_is_the_ltu_network_of_fix_ltu_net():
    """Recomputed unit by unit: f_i = 1[(W1 x + b1)_i > beta (n+1) - (n - sum_j W1_ij + b1_i)/2]."""
    stream = SlowlyChangingRegression([7], num_target_features=30)
    x, y = stream.next(50)
    w1, b1, w2, b2 = stream.w1[0], stream.b1[0], stream.w2[0], stream.b2[0]
    assert set(torch.cat([w1.flatten(), b1, w2, b2.reshape(1)]).unique().tolist()) == {-1.0, 1.0}
    for t in range(50):
        out = b2.item()
        for i in range(30):
            threshold = 0.7 * 21 - (20 - w1[i].sum().item() + b1[i].item()) / 2
            out += w2[i].item() * float((w1[i] @ x[0, t]).item() + b1[i].item() > threshold)
        assert y[0, t].item() == out
    assert y.std() > 0  # the thresholds leave some units switching


def test_streams_are_deterministic_per_seed_and_independent_of_batching():
    a = SlowlyChangingRegression([5, 5, 6], flip_after=100)
    b = SlowlyChangingRegression([5, 5, 6], flip_after=100)
    xa, ya = take(a, [1, 37, 99, 163])
    xb, yb = take(b, [300])
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(xa[0], xa[1]) and torch.equal(ya[0], ya[1])  # equal seeds, equal streams
    assert not torch.equal(xa[0], xa[2])


@pytest.mark.parametrize("stop", [0, 1, 250, 300, 301])  # before any draw, mid-block, at a boundary
@pytest.mark.parametrize("flip_one", [False, True])
def test_slowly_changing_resume_equals_uninterrupted(stop, flip_one):
    kwargs = dict(flip_after=50, flip_one=flip_one)
    reference = SlowlyChangingRegression([2, 9], **kwargs)
    expected = take(reference, [stop + 120]) if stop else None
    first = SlowlyChangingRegression([2, 9], **kwargs)
    head = take(first, [stop]) if stop else None
    state = round_trip(first.state_dict())
    resumed = SlowlyChangingRegression([2, 9], **kwargs)
    resumed.load_state_dict(state)
    tail = take(resumed, [7, 113])
    full_x = torch.cat([head[0], tail[0]], dim=1) if stop else tail[0]
    full_y = torch.cat([head[1], tail[1]], dim=1) if stop else tail[1]
    want = expected if stop else take(SlowlyChangingRegression([2, 9], **kwargs), [120])
    assert torch.equal(full_x, want[0]) and torch.equal(full_y, want[1])


def test_probe_is_fixed_and_leaves_the_stream_alone():
    a, b = SlowlyChangingRegression([4], flip_after=30), SlowlyChangingRegression([4], flip_after=30)
    take(a, [10])
    take(b, [10])
    px, py = a.probe(64, seed=1)
    assert torch.equal(px, b.probe(64, seed=1)[0]) and torch.equal(py, b.target(px))
    assert torch.equal(take(a, [50])[0], take(b, [50])[0])


def test_slowly_changing_rejects_a_mismatched_checkpoint():
    state = SlowlyChangingRegression([1, 2]).state_dict()
    with pytest.raises(ValueError, match="seeds"):
        SlowlyChangingRegression([1, 3]).load_state_dict(state)
    with pytest.raises(ValueError, match="config"):
        SlowlyChangingRegression([1, 2], flip_after=99).load_state_dict(state)
    with pytest.raises(ValueError, match="num_flipping_bits"):
        SlowlyChangingRegression([1], num_flipping_bits=20)


# ------------------------------------------------------------------ permuted images

N_IMAGES, SIDE = 24, 4


def coded_images():
    """Pixel j of image i holds 100 i + j, so any batch decodes to (image index, pixel permutation)."""
    codes = 100 * torch.arange(N_IMAGES)[:, None] + torch.arange(SIDE * SIDE)[None, :]
    return codes.double().reshape(N_IMAGES, 1, SIDE, SIDE), torch.arange(N_IMAGES) % 10


def decode(x):
    """(image index [M, B], pixel permutation [M, B, P]) of a batch of coded images."""
    return (x // 100).long()[..., 0], (x % 100).long()


def test_permuted_tasks_switch_exactly_every_steps_per_task():
    images, labels = coded_images()
    stream = PermutedImages(images, labels, [0, 1], steps_per_task=3, batch_size=8)
    perms = []
    for step in range(12):
        x, y = stream.next()
        index, perm = decode(x)
        assert (perm == perm[:, :1]).all()  # one permutation per member and minibatch
        assert torch.equal(y, labels[index])  # labels follow their images
        assert (perm[:, 0].sort(dim=-1).values == torch.arange(SIDE * SIDE)).all()  # a true permutation
        perms.append(perm[:, 0])
    for step in range(1, 12):
        same = torch.equal(perms[step], perms[step - 1])
        assert same == (step % 3 != 0)
    identity = torch.arange(SIDE * SIDE)
    assert not any(torch.equal(p[0], identity) for p in perms)  # task 0 is permuted too


def test_each_task_visits_every_image_once_per_pass():
    images, labels = coded_images()
    stream = PermutedImages(images, labels, [4], steps_per_task=6, batch_size=8)
    index = torch.cat([decode(stream.next()[0])[0] for _ in range(6)], dim=1)[0]
    for start in (0, 24):  # 3 steps cover the 24 images; the next 3 wrap around the same order
        assert sorted(index[start:start + 24].tolist()) == list(range(N_IMAGES))
    assert torch.equal(index[:24], index[24:])


def test_permute_and_probe_use_the_current_task():
    images, labels = coded_images()
    stream = PermutedImages(images, labels, [1, 2], steps_per_task=2, batch_size=4)
    for _ in range(3):
        x, _ = stream.next()
    view = stream.permute(images)
    assert view.shape == (2, N_IMAGES, SIDE * SIDE)
    assert torch.equal(decode(view)[1][:, 0], decode(x)[1][:, 0])
    px, py = stream.probe(5)
    index = decode(px)[0]
    assert torch.equal(px, view[torch.arange(2)[:, None], index]) and torch.equal(py, labels[index])


@pytest.mark.parametrize("stop", [0, 2, 4, 5])
def test_permuted_resume_equals_uninterrupted(stop):
    images, labels = coded_images()

    def make():
        return PermutedImages(images, labels, [3, 3, 8], steps_per_task=4, batch_size=5)

    reference = make()
    expected = [reference.next() for _ in range(stop + 6)]
    first = make()
    got = [first.next() for _ in range(stop)]
    resumed = make()
    resumed.load_state_dict(round_trip(first.state_dict()))
    got += [resumed.next() for _ in range(6)]
    for (xe, ye), (xg, yg) in zip(expected, got):
        assert torch.equal(xe, xg) and torch.equal(ye, yg)
    assert torch.equal(expected[0][0][0], expected[0][0][1])  # equal seeds, equal streams
    assert not torch.equal(expected[0][0][0], expected[0][0][2])


def test_permuted_rejects_bad_input():
    images, labels = coded_images()
    with pytest.raises(ValueError, match="labels"):
        PermutedImages(images, labels.float(), [0], steps_per_task=2, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        PermutedImages(images, labels, [0], steps_per_task=2, batch_size=100)
    with pytest.raises(ValueError, match="seeds"):
        PermutedImages(images, labels, [], steps_per_task=2, batch_size=4)
    state = PermutedImages(images, labels, [0], steps_per_task=2, batch_size=4).state_dict()
    with pytest.raises(ValueError, match="steps_per_task"):
        PermutedImages(images, labels, [0], steps_per_task=3, batch_size=4).load_state_dict(state)


def test_trained_view_is_the_task_just_finished_and_draws_nothing():
    images, labels = coded_images()
    stream = PermutedImages(images, labels, [1, 2], steps_per_task=2, batch_size=4)
    first = stream.trained_view(images)  # before any minibatch: the first task
    x, _ = stream.next()
    stream.next()  # the last minibatch of task 0: the stream now stands at the boundary
    before = stream.state_dict()
    view = stream.trained_view(images)
    assert torch.equal(view, first) and torch.equal(decode(view)[1][:, 0], decode(x)[1][:, 0])
    assert stream.state_dict()["task"] == before["task"] == 0  # task 1 not drawn by measuring
    assert not torch.equal(stream.permute(images), view)  # permute() moves on to task 1
