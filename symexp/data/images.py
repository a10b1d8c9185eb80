"""Image datasets (Fashion-MNIST, CIFAR-10) held as tensors, with batched on-device augmentation.

No DataLoader: the whole set is converted to float once on the device and augmented
per batch with tensor ops, as in airbench.
"""
from __future__ import annotations

import gzip
import pickle
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from symexp import safe_pickle
from symexp.data import Augment, TensorData
from symexp.errors import DataError
from symexp.results import one_line

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
CIFAR10_ROOT = "~/datasets/cifar10"
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck"]
CIFAR10_LAYOUT = "cifar-10-batches-py/{data_batch_1..data_batch_5,test_batch,batches.meta}"
_IDX_MAGIC = {3: 2051, 1: 2049}  # ndim -> magic of unsigned-byte IDX files


class DataNotFound(DataError):
    """The dataset's directory or one of its files does not exist."""


@dataclass
class DeviceImages:
    """Normalised float images resident on one device; x: [N, C, H, W], y: int64 [N]."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: torch.Tensor  # [C], of the train set in [0, 1] units
    std: torch.Tensor   # [C]
    classes: list[str]
    name: str


@dataclass
class ImageData:
    """Raw dataset on CPU; x: uint8 [N, C, H, W], y: int64 [N]."""
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    name: str

    def subset(self, n_train: int | None = None, n_test: int | None = None) -> ImageData:
        """The first n_train / n_test examples (None keeps all); more than available is an error."""
        def first(x, y, n, split):
            if n is None:
                return x, y
            if not 0 < n <= len(y):
                raise DataError(f"data.n_{split}={n}: {self.name} has {len(y)} {split} examples; "
                                f"allowed: 1..{len(y)} or null (all)")
            # clone so the full tensors can be freed
            return x[:n].clone(), y[:n].clone()
        x_tr, y_tr = first(self.x_train, self.y_train, n_train, "train")
        x_te, y_te = first(self.x_test, self.y_test, n_test, "test")
        return ImageData(x_tr, y_tr, x_te, y_te, list(self.classes), self.name)

    def to(self, device, dtype: torch.dtype = torch.float32,
           channels_last: bool = False) -> DeviceImages:
        """Move to `device` once and normalise per channel with the train set's mean/std."""
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        # uint8 crosses to the device (4x less traffic), the float conversion happens there
        x_tr = self.x_train.to(device).float().div_(255)
        x_te = self.x_test.to(device).float().div_(255)
        mean = x_tr.mean(dim=(0, 2, 3))
        std = x_tr.std(dim=(0, 2, 3))

        def norm(x):  # in place: a float copy of CIFAR-10's train set is ~600 MB
            x = x.sub_(mean[:, None, None]).div_(std[:, None, None])
            return x.to(dtype).contiguous(memory_format=fmt)
        return DeviceImages(norm(x_tr), self.y_train.to(device), norm(x_te), self.y_test.to(device),
                            mean, std, list(self.classes), self.name)


def read_idx(path: str | Path, ndim: int) -> np.ndarray:
    """Parse one gzipped (or plain) unsigned-byte IDX file with `ndim` dims; uint8 array of that shape."""
    path = Path(path)
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataNotFound(f"{path}: file not found") from None
    except (OSError, EOFError, zlib.error) as e:  # truncated or corrupt gzip stream, or unreadable
        raise DataError(f"{path}: cannot decompress ({one_line(e)}); expected a gzipped IDX file") from None
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic != _IDX_MAGIC[ndim]:
        raise DataError(f"{path}: bad IDX magic number {magic:#010x}, expected {_IDX_MAGIC[ndim]:#010x}")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, expected {expected} for dims {dims}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def _idx_file(root: Path, stem: str) -> Path:
    for p in (root / f"{stem}.gz", root / stem):  # the Debian package ships .gz; accept unpacked too
        if p.exists():
            return p
    raise DataNotFound(f"Fashion-MNIST file {root / stem}.gz not found: "
                       "run `apt-get install dataset-fashion-mnist` or set data.root")


def _idx_pair(root: Path, prefix: str, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    img_path, lab_path = _idx_file(root, f"{prefix}-images-idx3-ubyte"), _idx_file(root, f"{prefix}-labels-idx1-ubyte")
    x, y = read_idx(img_path, 3), read_idx(lab_path, 1)
    if x.shape[1:] != (28, 28) or len(x) == 0:
        raise DataError(f"{img_path}: images of dims {list(x.shape)}, expected [N >= 1, 28, 28]")
    if len(x) != len(y):
        raise DataError(f"{lab_path}: {len(y)} labels but {img_path.name} has {len(x)} images")
    if y.max() >= n_classes:
        raise DataError(f"{lab_path}: label {y.max()} out of range [0, {n_classes})")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def load_fashion_mnist(root: str | Path = FASHION_MNIST_ROOT) -> ImageData:
    """Fashion-MNIST from the four IDX files under `root`; x: uint8 [N, 1, 28, 28]."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataNotFound(f"Fashion-MNIST directory {root} not found: "
                           "run `apt-get install dataset-fashion-mnist` or set data.root")
    n = len(FASHION_MNIST_CLASSES)
    x_tr, y_tr = _idx_pair(root, "train", n)
    x_te, y_te = _idx_pair(root, "t10k", n)
    return ImageData(x_tr, y_tr, x_te, y_te, list(FASHION_MNIST_CLASSES), "fashion_mnist")


def _unpickle(path: Path) -> dict:
    """One file of the python version, read by the restricted unpickler (never `pickle.load`: a
    downloaded folder could carry code); its keys as str (the official files use python-2 strings)."""
    try:
        d = safe_pickle.load(path, dtypes={"u1"})
    except FileNotFoundError:
        raise DataNotFound(f"{path}: file not found; expected layout <root>/{CIFAR10_LAYOUT}") from None
    except safe_pickle.ForbiddenGlobal as e:
        raise DataError(f"{path}: refused to unpickle {e.what}: a CIFAR-10 file holds only dicts, lists, "
                        "strings, ints and uint8 arrays (nothing in it was run)") from None
    except OSError as e:  # a directory, no permission
        raise DataError(f"{path}: cannot read ({one_line(e)})") from None
    except Exception as e:  # corrupt bytes can make an unpickler raise almost anything
        raise DataError(f"{path}: corrupt or truncated pickle ({one_line(e)}); "
                        "expected a CIFAR-10 python batch (cifar-10-python.tar.gz)") from None
    if not isinstance(d, dict):
        raise DataError(f"{path}: expected a pickled dict, got {type(d).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    data, labels = d.get("data"), d.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        desc = f"{data.dtype} {list(data.shape)}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: 'data' must be uint8 [N, 3072], got {desc}")
    if not isinstance(labels, list) or len(labels) != len(data):
        desc = f"{len(labels)} labels" if isinstance(labels, list) else type(labels).__name__
        raise DataError(f"{path}: 'labels' must be a list of {len(data)} ints (one per row of 'data'), got {desc}")
    bad = [i for i, v in enumerate(labels) if type(v) is not int or not 0 <= v < len(CIFAR10_CLASSES)]
    if bad:
        raise DataError(f"{path}: 'labels'[{bad[0]}] is {labels[bad[0]]!r}; labels must be ints in [0, 10)")
    return data.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)  # rows are CHW: 1024 red, green, blue


def _cifar_dir(root: Path) -> Path:
    for d in (root, root / "cifar-10-batches-py"):
        if (d / "data_batch_1").is_file():
            return d
    raise DataNotFound(f"CIFAR-10 not found under {root}: expected {root}/{CIFAR10_LAYOUT} "
                       "(the python version, cifar-10-python.tar.gz, extracted there), or set data.root")


def load_cifar10(root: str | Path = CIFAR10_ROOT) -> ImageData:
    """CIFAR-10 from `root` = the cifar-10-batches-py dir or its parent; x: uint8 [N, 3, 32, 32]."""
    d = _cifar_dir(Path(root).expanduser())
    train = [_cifar_batch(d / f"data_batch_{i}") for i in range(1, 6)]
    x_te, y_te = _cifar_batch(d / "test_batch")
    names = _unpickle(d / "batches.meta").get("label_names")
    if not isinstance(names, list) or len(names) != 10 or not all(isinstance(n, (bytes, str)) for n in names):
        raise DataError(f"{d / 'batches.meta'}: 'label_names' must be a list of 10 names")
    classes = [n.decode("latin1") if isinstance(n, bytes) else n for n in names]
    x_tr = torch.from_numpy(np.concatenate([x for x, _ in train]))
    y_tr = torch.from_numpy(np.concatenate([y for _, y in train]))
    return ImageData(x_tr, y_tr, torch.from_numpy(x_te.copy()), torch.from_numpy(y_te), classes, "cifar10")


def write_cifar10_like(path: str | Path, n_train_per_batch: int, n_test: int, seed: int = 0) -> Path:
    """Write a tiny random dataset at `path` (the cifar-10-batches-py dir itself) in the exact
    official pickle format, to check a directory layout or test the loader. Returns `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def dump(name, d):
        with open(path / name, "wb") as f:
            pickle.dump(d, f, protocol=2)  # the official files are python-2 pickles

    for name, n, label in [(f"data_batch_{i}", n_train_per_batch, f"training batch {i} of 5")
                           for i in range(1, 6)] + [("test_batch", n_test, "testing batch 1 of 1")]:
        dump(name, {b"batch_label": label.encode(),
                    b"labels": rng.integers(0, 10, n).tolist(),
                    b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                    b"filenames": [f"img_{name}_{j}.png".encode() for j in range(n)]})
    dump("batches.meta", {b"num_cases_per_batch": n_train_per_batch,
                          b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_vis": 3072})
    return path


_LOADERS = {"fashion_mnist": (load_fashion_mnist, FASHION_MNIST_ROOT),
            "cifar10": (load_cifar10, CIFAR10_ROOT)}


def load_images(name: str, root: str | Path | None = None, fallback: str | None = None) -> ImageData:
    """Load dataset `name` from `root` (None: its default). If it is missing and `fallback` names
    another dataset, say so on stderr and load that one from its default root instead."""
    for n in (name, fallback):
        if n is not None and n not in _LOADERS:
            raise DataError(f"unknown image dataset {n!r}; allowed: {', '.join(_LOADERS)}")
    loader, default_root = _LOADERS[name]
    try:
        return loader(default_root if root is None else root)
    except DataNotFound as e:
        if fallback is None or fallback == name:
            raise
        print(f"symexp: {e} -- falling back to {fallback}", file=sys.stderr)
    fb_loader, fb_root = _LOADERS[fallback]
    return fb_loader(fb_root)


def crop_flip_params(batch: int, pad: int, flip: bool, generator: torch.Generator,
                     device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image random crop offsets dy, dx in [0, 2*pad] and flip mask; each [batch]. Drawn in this order."""
    dy = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=device)
    dx = torch.randint(0, 2 * pad + 1, (batch,), generator=generator, device=device)
    flipped = (torch.rand(batch, generator=generator, device=device) < 0.5) & flip
    return dy, dx, flipped


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4, flip: bool = True,
            mode: str = "reflect") -> torch.Tensor:
    """Random crop (after `mode` = "reflect" | "constant" padding) and horizontal flip of a float
    batch x: [B, C, H, W] -> [B, C, H, W]; each image gets its own draw from `generator`."""
    return crop_flip(x, *crop_flip_params(x.shape[0], pad, flip, generator, x.device), pad, mode)


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flipped: torch.Tensor, pad: int,
              mode: str = "reflect") -> torch.Tensor:
    """Apply per-image crop offsets and flips (from `crop_flip_params`) to x [B, C, H, W]: one gather."""
    b, c, h, w = x.shape
    xp = F.pad(x, (pad,) * 4, mode=mode) if pad > 0 else x
    rows = dy[:, None] + torch.arange(h, device=x.device)           # [B, H]
    cols = torch.arange(w, device=x.device).expand(b, w)
    # Flipping reverses the column order of the crop, so crop and flip are one gather.
    cols = dx[:, None] + torch.where(flipped[:, None], w - 1 - cols, cols)  # [B, W]
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    ci = torch.arange(c, device=x.device)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


def image_data(cfg: dict, device: torch.device, dtype: torch.dtype) -> TensorData:
    """The `data` config of an image set -> TensorData on `device`.

    A CIFAR-10 that is not at `cfg["root"]` falls back to `cfg["fallback"]` only when that is set,
    with one message naming where to put it; otherwise the DataNotFound error stops the job."""
    raw = load_images(cfg["name"], cfg["root"], cfg["fallback"]).subset(cfg["n_train"], cfg["n_test"])
    imgs = raw.to(device, dtype, channels_last=device.type == "cuda")  # NHWC for cuDNN's fast convolutions
    return TensorData(imgs.x_train, imgs.y_train, "classification", imgs.x_test, imgs.y_test,
                      classes=tuple(raw.classes), source=raw.name,
                      augment=Augment(cfg["pad"], cfg["flip"]) if cfg["augment"] else None)
