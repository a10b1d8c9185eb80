import gzip
import io
import os
import pickle
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from symexp.data import Augment
from symexp.data.images import (
    CIFAR10_CLASSES, FASHION_MNIST_ROOT, DataNotFound, ImageData, augment, crop_flip_params, image_data,
    load_cifar10, load_fashion_mnist, load_images, write_cifar10_like)
from symexp.errors import DataError

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def require_fashion_mnist():
    """Real Fashion-MNIST, or skip (fail under CI=true, where the data must be installed)."""
    try:
        return load_fashion_mnist(FASHION_MNIST_ROOT)
    except DataNotFound as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but Fashion-MNIST is missing: {e}")
        pytest.skip(f"Fashion-MNIST not installed: {e}")


@pytest.fixture(scope="module")
def fmnist():
    return require_fashion_mnist()


# ---------- CIFAR-10 pickle format ----------

@pytest.fixture
def cifar_dir(tmp_path):
    return write_cifar10_like(tmp_path / "cifar-10-batches-py", n_train_per_batch=4, n_test=3, seed=1)


def _raw(path):
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


@pytest.mark.parametrize("use_parent", [True, False])
def test_cifar_loads_bytes_as_written(cifar_dir, use_parent):
    data = load_cifar10(cifar_dir.parent if use_parent else cifar_dir)
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32)
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.int64
    assert data.classes == CIFAR10_CLASSES and data.name == "cifar10"
    raws = [_raw(cifar_dir / f"data_batch_{i}") for i in range(1, 6)]
    assert data.y_train.tolist() == sum((r[b"labels"] for r in raws), [])
    # Rows are CHW: bytes 0..1023 red, 1024..2047 green; pixel (5, 7) is byte 5*32+7 of a plane.
    row = raws[0][b"data"][0]
    assert not np.array_equal(row[:1024], row[1024:2048])
    assert data.x_train[0, 0].numpy().tobytes() == row[:1024].tobytes()
    assert data.x_train[0, 1, 5, 7].item() == row[1024 + 5 * 32 + 7]
    assert data.x_train[0, 2, 31, 0].item() == row[2048 + 31 * 32]
    # Batches are concatenated in order: image 4 is the first of data_batch_2.
    assert data.x_train[4].numpy().tobytes() == raws[1][b"data"][0].tobytes()
    test = _raw(cifar_dir / "test_batch")
    assert data.y_test.tolist() == test[b"labels"]
    assert data.x_test[2].numpy().tobytes() == test[b"data"][2].tobytes()


class Py2Pickler(pickle._Pickler):
    """Pickles as python 2's cPickle wrote the official files: every string a py2 `str`
    (SHORT_BINSTRING / BINSTRING, read back as bytes) and numpy's module as `numpy.core`."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("ascii") if isinstance(obj, str) else obj
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[bytes] = dispatch[str] = save_py2_str


def test_cifar_reads_the_official_python2_format(tmp_path):
    rng = np.random.default_rng(4)
    batches = {name: {"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), "batch_label": name,
                      "labels": [int(v) for v in rng.integers(0, 10, 2)], "filenames": ["a.png", "b.png"]}
               for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]}
    meta = {"label_names": CIFAR10_CLASSES, "num_cases_per_batch": 2, "num_vis": 3072}
    files = dict(batches, **{"batches.meta": meta})
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for name, content in files.items():
        buf = io.BytesIO()
        Py2Pickler(buf, protocol=2).dump(content)
        raw = buf.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")
        assert b"X" + struct.pack("<I", 4) + b"data" not in raw  # no python-3 str left
        (d / name).write_bytes(raw)
    with open(d / "data_batch_2", "rb") as f:  # numpy's own (unrestricted) reading of the same bytes
        assert np.array_equal(pickle.load(f, encoding="bytes")[b"data"], batches["data_batch_2"]["data"])
    data = load_cifar10(tmp_path)
    assert data.classes == CIFAR10_CLASSES
    assert data.x_train[2:4].flatten(1).numpy().tobytes() == batches["data_batch_2"]["data"].tobytes()
    assert data.y_test.tolist() == batches["test_batch"]["labels"]


def test_image_data_fields(cifar_dir):
    cfg = dict(name="cifar10", root=str(cifar_dir), fallback=None, n_train=12, n_test=2, augment=True, pad=3,
               flip=False)
    data = image_data(cfg, torch.device("cpu"), torch.float32)
    assert data.classes == tuple(CIFAR10_CLASSES) and data.augment == Augment(pad=3, flip=False)
    assert data.source == "cifar10" and data.x.shape == (12, 3, 32, 32) and data.x_test.shape == (2, 3, 32, 32)
    assert image_data(dict(cfg, augment=False), torch.device("cpu"), torch.float32).augment is None


def test_cifar_truncated_pickle_names_file(cifar_dir):
    p = cifar_dir / "data_batch_3"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(DataError, match="data_batch_3") as e:
        load_cifar10(cifar_dir)
    assert "\n" not in str(e.value)


def test_cifar_wrong_shape_names_file(cifar_dir):
    with open(cifar_dir / "test_batch", "wb") as f:
        pickle.dump({b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}, f)
    with pytest.raises(DataError, match=r"test_batch.*3072"):
        load_cifar10(cifar_dir)


def test_cifar_missing_says_where_to_put_it(tmp_path):
    with pytest.raises(DataNotFound, match="cifar-10-batches-py") as e:
        load_cifar10(tmp_path / "nowhere")
    assert "\n" not in str(e.value) and str(tmp_path / "nowhere") in str(e.value)


def test_cifar_missing_without_fallback_raises(tmp_path):
    with pytest.raises(DataNotFound):
        load_images("cifar10", root=tmp_path)


def test_unknown_name_lists_allowed():
    with pytest.raises(DataError, match="fashion_mnist, cifar10"):
        load_images("mnist")


def test_cifar_fallback_to_fashion_mnist(tmp_path, capsys):
    require_fashion_mnist()
    data = load_images("cifar10", root=tmp_path, fallback="fashion_mnist")
    assert data.name == "fashion_mnist" and data.x_train.shape[1:] == (1, 28, 28)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cifar-10-batches-py" in err and "falling back to fashion_mnist" in err


# ---------- IDX format ----------

def _write_idx(path, arr, magic=None):
    arr = np.asarray(arr, np.uint8)
    magic = magic if magic is not None else {3: 2051, 1: 2049}[arr.ndim]
    header = struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())


@pytest.fixture
def idx_dir(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {"train": (rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)),
              "t10k": (rng.integers(0, 256, (3, 28, 28)), rng.integers(0, 10, 3))}
    for prefix, (x, y) in arrays.items():
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", x)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", y)
    return tmp_path, arrays


def test_idx_round_trip(idx_dir):
    root, arrays = idx_dir
    data = load_fashion_mnist(root)
    assert data.x_train.shape == (5, 1, 28, 28) and data.x_test.shape == (3, 1, 28, 28)
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.int64
    assert np.array_equal(data.x_train[:, 0].numpy(), arrays["train"][0])
    assert np.array_equal(data.y_test.numpy(), arrays["t10k"][1])
    assert len(data.classes) == 10


def test_idx_bad_magic(idx_dir):
    root, arrays = idx_dir
    _write_idx(root / "t10k-images-idx3-ubyte.gz", arrays["t10k"][0], magic=2049)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz.*magic"):
        load_fashion_mnist(root)


def test_idx_count_mismatch(idx_dir):
    root, _ = idx_dir
    _write_idx(root / "train-labels-idx1-ubyte.gz", np.zeros(4))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: 4 labels .* 5 images"):
        load_fashion_mnist(root)


def test_idx_truncated(idx_dir):
    root, arrays = idx_dir
    p = root / "train-images-idx3-ubyte.gz"
    with gzip.open(p, "wb") as f:
        f.write(struct.pack(">4I", 2051, 5, 28, 28) + bytes(100))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: 116 bytes, expected"):
        load_fashion_mnist(root)


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(DataNotFound, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path / "absent")


def test_real_fashion_mnist(fmnist):
    assert fmnist.x_train.shape == (60000, 1, 28, 28) and fmnist.x_test.shape == (10000, 1, 28, 28)
    assert len(fmnist.classes) == 10
    counts = torch.bincount(fmnist.y_train, minlength=10)
    assert counts.min() >= 5500 and counts.max() <= 6500
    assert torch.bincount(fmnist.y_test, minlength=10).min() >= 900


# ---------- ImageData ----------

def _toy(n_train=64, n_test=16):
    g = torch.Generator().manual_seed(0)
    # Channels on very different ranges so per-channel (not global) statistics are required.
    lo, hi = torch.tensor([0, 100, 200]), torch.tensor([50, 200, 256])

    def imgs(n):
        u = torch.rand(n, 3, 8, 8, generator=g)
        return (lo[:, None, None] + u * (hi - lo)[:, None, None]).to(torch.uint8)
    return ImageData(imgs(n_train), torch.arange(n_train) % 10, imgs(n_test), torch.arange(n_test) % 10,
                     [str(i) for i in range(10)], "toy")


@pytest.mark.parametrize("device", DEVICES)
def test_to_normalises_per_channel_with_train_stats(device):
    data = _toy()
    d = data.to(device)
    assert d.x_train.device.type == device and d.y_train.device.type == device
    assert d.x_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    mean, std = d.x_train.mean(dim=(0, 2, 3)), d.x_train.std(dim=(0, 2, 3))
    assert torch.allclose(mean, torch.zeros(3, device=device), atol=1e-5)
    assert torch.allclose(std, torch.ones(3, device=device), atol=1e-5)
    expected_test = (data.x_test.float() / 255 - d.mean.cpu()[:, None, None]) / d.std.cpu()[:, None, None]
    assert torch.allclose(d.x_test.cpu(), expected_test, atol=1e-5)


def test_to_dtype_and_channels_last():
    d = _toy().to("cpu", dtype=torch.bfloat16, channels_last=True)
    assert d.x_train.dtype == torch.bfloat16
    assert d.x_train.is_contiguous(memory_format=torch.channels_last)


def test_subset_takes_first_examples():
    data = _toy()
    s = data.subset(10, 5)
    assert torch.equal(s.x_train, data.x_train[:10]) and torch.equal(s.y_test, data.y_test[:5])
    assert s.subset(n_train=3).x_test.shape[0] == 5
    with pytest.raises(DataError, match=r"^data\.n_train=100: toy has 64 train examples; allowed: 1\.\.64"):
        data.subset(n_train=100)


# ---------- augment ----------

def _batch(device, b=16):
    return torch.randn(b, 3, 32, 32, generator=torch.Generator().manual_seed(3)).to(device)


def _gen(device, seed):
    return torch.Generator(device=device).manual_seed(seed)


@pytest.mark.parametrize("device", DEVICES)
def test_augment_identity_and_determinism(device):
    x = _batch(device)
    assert torch.equal(augment(x, _gen(device, 0), pad=0, flip=False), x)
    a = augment(x, _gen(device, 7))
    assert a.shape == x.shape and a.device == x.device
    assert torch.equal(a, augment(x, _gen(device, 7)))
    assert not torch.equal(a, augment(x, _gen(device, 8)))


@pytest.mark.parametrize("device", DEVICES)
def test_augment_flip_only(device):
    x = _batch(device, b=64)
    a = augment(x, _gen(device, 0), pad=0, flip=True)
    flipped = [torch.equal(a[i], x[i].flip(-1)) for i in range(len(x))]
    same = [torch.equal(a[i], x[i]) for i in range(len(x))]
    assert all(f or s for f, s in zip(flipped, same))
    assert 10 < sum(flipped) < 54


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["reflect", "constant"])
def test_augment_crop_matches_shifted_slice(device, mode):
    x, pad = _batch(device), 4
    a = augment(x, _gen(device, 5), pad=pad, flip=True, mode=mode)
    dy, dx, flip = crop_flip_params(len(x), pad, True, _gen(device, 5), device)
    assert len(set(zip(dy.tolist(), dx.tolist()))) > 1 and 0 < int(flip.sum()) < len(x)
    assert 0 <= min(dy.min(), dx.min()) and max(dy.max(), dx.max()) <= 2 * pad
    xp = F.pad(x, (pad,) * 4, mode=mode)
    for i in range(len(x)):
        y0, x0 = int(dy[i]), int(dx[i])
        expected = xp[i, :, y0:y0 + 32, x0:x0 + 32]
        assert torch.equal(a[i], expected.flip(-1) if flip[i] else expected)
