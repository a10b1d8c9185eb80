"""Bad files, table-driven, each refused or set aside with one line naming the file; never a traceback.

Data: a CIFAR-10 folder or Fashion-MNIST IDX files that are missing, cut short, corrupt, or of the wrong
shape, dtype or label range. Each goes through a real job (run_job), as a user's `data.root` would: the
job stops with a UserError, and its directory gains no rows.
A job's own files: a ckpt.pt, status.json, metrics.parquet or weights.pt cut short or corrupt. `symexp
collect` names the file and exits 2; a rerun keeps it aside, byte for byte, and redoes the job, whose
table then equals an undisturbed run's. (Files that carry code: tests/test_malicious.py.)"""
from __future__ import annotations

import gzip
import json
import math
import pickle
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from conftest import CONFIGS
from symexp import checkpoint, cli, results
from symexp.data.images import image_data, write_cifar10_like
from symexp.ensemble import State
from symexp.errors import FileError, UserError
from symexp.run import run_job

N_BATCH, N_TEST = 4, 3  # images per tiny CIFAR-10 training batch, and in its test batch


def assert_one_line(err: BaseException, *must_contain: str, says: str = "") -> None:
    """A UserError, one line, naming what it must name and matching `says`."""
    msg = str(err)
    assert isinstance(err, UserError), f"{type(err).__name__}: {msg}"
    assert "\n" not in msg and msg.strip(), msg
    assert all(m in msg for m in must_contain), f"{must_contain} not all in: {msg}"
    assert re.search(says, msg), f"{says!r} not in: {msg}"


def cut(path: Path, keep: float = 0.5) -> None:
    """Keep the first fraction of a file, as a copy or a download interrupted part-way leaves it."""
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def batch(n: int = N_BATCH, **changes) -> dict:
    """A valid CIFAR-10 python batch of n images, with `changes` (None removes a key)."""
    rng = np.random.default_rng(7)
    d = {b"batch_label": b"training batch 1 of 5", b"labels": [int(v) for v in rng.integers(0, 10, n)],
         b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"filenames": [b"x.png"] * n}
    for k, v in changes.items():
        d.pop(k.encode()) if v is None else d.__setitem__(k.encode(), v)
    return d


def write_gz(path: Path, raw: bytes) -> None:
    with gzip.open(path, "wb") as f:
        f.write(raw)


def write_idx(path: Path, arr, magic: int | None = None) -> None:
    arr = np.asarray(arr, np.uint8)
    magic = magic if magic is not None else {3: 2051, 1: 2049}[arr.ndim]
    write_gz(path, struct.pack(">I", magic) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


def write_idx_set(root: Path) -> Path:
    """Four valid gzipped IDX files (5 training images, 3 test images) under root."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 5), ("t10k", 3)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    return root


def flip(path: Path, start: int, count: int = 4) -> None:
    """Invert `count` bytes from `start` (negative: from the end), as a bad disk or copy would."""
    raw = bytearray(path.read_bytes())
    start = start % len(raw)
    raw[start:start + count] = bytes(b ^ 0xFF for b in raw[start:start + count])
    path.write_bytes(bytes(raw))


def replace_with_dir(path: Path) -> None:
    path.unlink()
    path.mkdir()


def put(obj):
    return lambda f: f.write_bytes(pickle.dumps(obj, protocol=2))  # as the official files: protocol 2


def replace_bytes(content: bytes):
    return lambda f: f.write_bytes(content)


def idx(arr, magic: int | None = None):
    return lambda f: write_idx(f, arr, magic)


def zeros(*shape, dtype=np.uint8):
    return np.zeros(shape, dtype)


# (case, the file it breaks and the message names, how it breaks it, what the line says)
CIFAR_CASES = [
    ("batch cut in half", "data_batch_1", cut, "corrupt or truncated pickle"),
    ("batch cut to 200 bytes", "data_batch_3", lambda f: cut(f, 200 / 4e4), "corrupt or truncated"),
    ("empty batch", "data_batch_2", replace_bytes(b""), r"truncated pickle \(EOFError"),
    ("an html error page", "test_batch", replace_bytes(b"<html>404</html>"), "corrupt"),
    ("a directory as a batch", "data_batch_5", replace_with_dir, "cannot read"),
    ("rows of 100 bytes", "test_batch", put(batch(N_TEST, data=zeros(N_TEST, 100))),
     r"'data' must be uint8 \[N, 3072\], got uint8 \[3, 100\]"),
    ("images as [N, 3, 32, 32]", "data_batch_2", put(batch(data=zeros(4, 3, 32, 32))), r"got uint8 \[4, 3, 32, 32\]"),
    ("data as a list", "data_batch_1", put(batch(data=[[0] * 3072] * 4)), r"uint8 \[N, 3072\], got list"),
    ("data as float32", "data_batch_1", put(batch(data=zeros(4, 3072, dtype=np.float32))),
     r"refused to unpickle numpy\.dtype\('f4'\)"),
    ("labels as an int64 array", "data_batch_4", put(batch(labels=zeros(4, dtype=np.int64))),
     r"refused to unpickle numpy\.dtype\('i8'\)"),
    ("no data key", "data_batch_3", put(batch(data=None)), "got NoneType"),
    ("a label short", "data_batch_1", put(batch(labels=[1, 2, 3])),
     r"'labels' must be a list of 4 ints .*got 3 labels"),
    ("label 10", "data_batch_2", put(batch(labels=[0, 9, 10, 1])),
     r"'labels'\[2\] is 10; labels must be ints in \[0, 10\)"),
    ("label -1", "test_batch", put(batch(N_TEST, labels=[-1, 0, 0])), r"'labels'\[0\] is -1"),
    ("label 3.0", "data_batch_5", put(batch(labels=[0, 3.0, 1, 1])), r"'labels'\[1\] is 3\.0"),
    ("label True", "data_batch_5", put(batch(labels=[0, 1, True, 1])), r"'labels'\[2\] is True"),
    ("a list, not a dict", "data_batch_1", put([batch()]), "expected a pickled dict, got list"),
    ("a batch missing", "data_batch_4", Path.unlink, "file not found; expected layout"),
    ("batches.meta missing", "batches.meta", Path.unlink, "file not found"),
    ("batches.meta with 9 names", "batches.meta", put({b"label_names": [b"cat"] * 9}),
     "'label_names' must be a list of 10 names"),
    ("batches.meta cut short", "batches.meta", lambda f: cut(f, 0.7), "corrupt or truncated pickle"),
]

TRAIN_X, TRAIN_Y = "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"
TEST_X, TEST_Y = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"
IDX_CASES = [
    ("images gz cut in half", TRAIN_X, cut, "cannot decompress"),
    ("labels gz with a bad checksum", TEST_Y, lambda f: flip(f, -8), "cannot decompress .*CRC check failed"),
    ("images gz with flipped bytes", TRAIN_X, lambda f: flip(f, 2000), "cannot decompress"),
    ("not gzip at all", TRAIN_Y, replace_bytes(b"\x00" * 64), "cannot decompress"),
    ("wrong magic", TEST_X, idx(zeros(3, 28, 28), magic=2049), "bad IDX magic number 0x00000801"),
    ("label 10", TRAIN_Y, idx([0, 1, 10, 2, 3]), r"label 10 out of range \[0, 10\)"),
    ("label 255", TEST_Y, idx([255, 1, 2]), "label 255"),
    ("a label short", TRAIN_Y, idx(zeros(4)), f"4 labels but {TRAIN_X} has 5 images"),
    ("10x10 images", TRAIN_X, idx(zeros(5, 10, 10)), r"dims \[5, 10, 10\], expected \[N >= 1, 28, 28\]"),
    ("payload cut short", TRAIN_X, lambda f: write_gz(f, struct.pack(">4I", 2051, 5, 28, 28) + bytes(100)),
     "116 bytes, expected 3936"),
    ("header cut short", TEST_Y, lambda f: write_gz(f, b"\x00\x00"), r"truncated IDX header \(2 bytes\)"),
    ("labels file missing", TEST_Y, Path.unlink, "not found"),
]

TINY_IMAGE_JOB = ["experiment=fig1_right", "model.widths=[4]", "train.steps=2", "train.eval_every=1",
                  "ensemble.seeds=[0]", "ensemble.weight_decays=[0.0]", "data.n_test=2", "metrics.train_subset=2",
                  "optim.batch_size=2"]


def run_bad_job(make_cfg, tmp_path, data_overrides: list[str]) -> UserError:
    """Run a tiny image job on the broken folder; return its error after checking the job wrote no rows."""
    job_dir = tmp_path / "job"
    with pytest.raises(UserError) as e:
        run_job(make_cfg(*TINY_IMAGE_JOB, *data_overrides), job_dir, progress=False)
    assert not (job_dir / "metrics.parquet").exists() and not (job_dir / "weights.pt").exists()
    assert not list(job_dir.glob("*.corrupt-*"))  # a data error never touches the job's own files
    return e.value


@pytest.mark.parametrize("case, name, breaks, says", CIFAR_CASES, ids=[c[0] for c in CIFAR_CASES])
def test_bad_cifar_folder(make_cfg, tmp_path, case, name, breaks, says):
    folder = write_cifar10_like(tmp_path / "cifar10" / "cifar-10-batches-py", N_BATCH, N_TEST, seed=1)
    breaks(folder / name)
    err = run_bad_job(make_cfg, tmp_path, ["data=cifar10", f"data.root={folder.parent}", "data.n_train=8",
                                           "data.augment=false"])
    assert_one_line(err, str(folder / name), says=says)


@pytest.mark.parametrize("case, name, breaks, says", IDX_CASES, ids=[c[0] for c in IDX_CASES])
def test_bad_fashion_mnist_files(make_cfg, tmp_path, case, name, breaks, says):
    root = write_idx_set(tmp_path / "fmnist")
    breaks(root / name)
    err = run_bad_job(make_cfg, tmp_path, [f"data.root={root}", "data.n_train=4"])
    assert_one_line(err, str(root / name), says=says)


@pytest.mark.parametrize("dataset", ["cifar10", "fashion_mnist"])
def test_missing_folder(make_cfg, tmp_path, dataset):
    err = run_bad_job(make_cfg, tmp_path, [f"data={dataset}", f"data.root={tmp_path / 'nowhere'}"])
    assert_one_line(err, str(tmp_path / "nowhere"))


def test_valid_tiny_folders_load(tmp_path):
    """The folders every case above breaks are valid."""
    folder = write_cifar10_like(tmp_path / "cifar10", N_BATCH, N_TEST, seed=1)
    root = write_idx_set(tmp_path / "fmnist")
    for name, where, n_train in (("cifar10", folder, 5 * N_BATCH), ("fashion_mnist", root, 5)):
        cfg = dict(name=name, root=str(where), fallback=None, n_train=None, n_test=None, augment=False, pad=4,
                   flip=True)
        assert image_data(cfg, torch.device("cpu"), torch.float32).n == n_train


# ---------- a job's own files: ckpt.pt, status.json, metrics.parquet, weights.pt ----------

TINY_JOB = ["experiment=fig1_left", "data.n_train=50", "data.dim=6", "data.nonzero=2", "ensemble.seeds=[0]",
            "ensemble.weight_decays=[0.0,0.2]", "ensemble.lrs=[0.01]", "train.steps=20", "train.eval_every=10"]


@pytest.fixture(scope="module")
def clean_job(tmp_path_factory) -> Path:
    """A finished tiny job directory, as symexp.run leaves it (each case breaks a copy)."""
    out = tmp_path_factory.mktemp("clean")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("config", overrides=[f"paths.results={out}", "compile=false", *TINY_JOB])
    GlobalHydra.instance().clear()
    assert run_job(cfg, out / "sweep" / "job", progress=False)["state"] == "done"
    return out / "sweep" / "job"


def copy_job(clean_job: Path, tmp_path: Path) -> Path:
    job = tmp_path / "sweep" / "job"
    shutil.copytree(clean_job, job)
    return job


def table(job: Path) -> pd.DataFrame:
    df = pd.read_parquet(job / "metrics.parquet")
    return df.sort_values(["member", "step", "layer", "metric"], ignore_index=True)


def rewrite_status(job_dir: Path, **changes) -> None:
    status = json.loads((job_dir / "status.json").read_text())
    status.update(changes)
    (job_dir / "status.json").write_text(json.dumps({k: v for k, v in status.items() if v is not None}))


def rewrite_table(job: Path, change) -> None:
    change(pd.read_parquet(job / "metrics.parquet")).to_parquet(job / "metrics.parquet", index=False)


def one_stderr_line(capsys, *must_contain: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and all(m in err for m in must_contain), err
    return err


STATUS_CASES = [
    ("cut in half", lambda j: cut(j / "status.json"), r"unreadable status \(JSONDecodeError"),
    ("empty", lambda j: (j / "status.json").write_text(""), "unreadable status"),
    ("not UTF-8", lambda j: (j / "status.json").write_bytes(b"\xff\xfe{}"), r"unreadable status \(UnicodeDecodeError"),
    ("a JSON list", lambda j: (j / "status.json").write_text("[]"), "not a status file"),
    ("an unknown state", lambda j: rewrite_status(j, state="finished"), "needs a 'state' in running, failed, done"),
    ("done without members", lambda j: rewrite_status(j, members=None), r"a done status needs 'members' \(int\)"),
    ("done with a numeric job", lambda j: rewrite_status(j, job=3), r"needs 'job' \(str\)"),
]
TABLE_CASES = [
    ("cut in half", lambda j: cut(j / "metrics.parquet"), "unreadable parquet"),
    ("empty", lambda j: (j / "metrics.parquet").write_bytes(b""), "unreadable parquet"),
    ("missing", lambda j: (j / "metrics.parquet").unlink(), "missing, but status.json says done"),
    ("a column missing", lambda j: rewrite_table(j, lambda df: df.drop(columns="value")), r"missing column\(s\) value"),
    ("a member missing", lambda j: rewrite_table(j, lambda df: df[df.member == 0]), r"members 1 vs 2"),
    ("rows of another job", lambda j: rewrite_table(j, lambda df: df.assign(job="other")), r"jobs \['other'\]"),
    ("duplicated rows", lambda j: rewrite_table(j, lambda df: pd.concat([df, df])), "duplicated"),
    ("fewer rows than the status says", lambda j: rewrite_status(j, rows=10**6), "rows, status.json says 1000000"),
]


@pytest.mark.parametrize("case, breaks, says", STATUS_CASES + TABLE_CASES,
                         ids=[f"status {c[0]}" for c in STATUS_CASES] + [f"table {c[0]}" for c in TABLE_CASES])
def test_bad_job_file_is_named_by_collect_and_set_aside_on_rerun(clean_job, tmp_path, capsys, case, breaks, says):
    job = copy_job(clean_job, tmp_path)
    breaks(job)
    before = {p.name: p.read_bytes() for p in job.iterdir() if p.is_file()}
    named = "status.json" if (case, breaks, says) in STATUS_CASES else "metrics.parquet"
    # collect: exit 2, one line naming the file, no table written
    assert cli.main(["collect", str(job.parent), "-o", str(tmp_path / "table.parquet")]) == 2
    assert re.search(says, one_stderr_line(capsys, str(job / named)))
    assert not (tmp_path / "table.parquet").exists()
    # rerun: the job is not taken as finished; what it had is kept aside, byte for byte
    assert results.read_complete(job) is None
    one_stderr_line(capsys, str(job / named), "kept aside as", "the job starts afresh")
    assert not (job / "status.json").exists() and not (job / "metrics.parquet").exists()
    for name in ("status.json", "metrics.parquet"):
        if name in before:
            assert (job / f"{name}.corrupt-0").read_bytes() == before[name]


@pytest.mark.parametrize("file, breaks", [("status.json", lambda j: cut(j / "status.json")),
                                          ("metrics.parquet", lambda j: cut(j / "metrics.parquet"))])
def test_rerun_redoes_a_job_whose_file_is_bad(make_cfg, clean_job, tmp_path, capsys, file, breaks):
    job = copy_job(clean_job, tmp_path)
    breaks(job)
    capsys.readouterr()
    assert run_job(make_cfg(*TINY_JOB), job, progress=False)["state"] == "done"
    one_stderr_line(capsys, str(job / file), "kept aside as status.json.corrupt-0", "the job starts afresh",
                    *(["metrics.parquet.corrupt-0"] if file == "metrics.parquet" else []))
    pd.testing.assert_frame_equal(table(job), table(clean_job))  # every row, once: none lost, none gained
    assert results.read_complete(job) is not None


def test_read_status_never_raises(tmp_path, capsys):
    (tmp_path / "status.json").write_text('{"state": "do')
    assert results.read_status(tmp_path) is None
    one_stderr_line(capsys, str(tmp_path / "status.json"), "status.json.corrupt-0")
    (tmp_path / "status.json").write_text("{}")
    assert results.read_status(tmp_path) is None
    one_stderr_line(capsys, "status.json.corrupt-1")  # a second bad file never overwrites the first
    assert (tmp_path / "status.json.corrupt-0").read_text() == '{"state": "do'


def a_state(step: int = 40) -> State:
    g = torch.Generator().manual_seed(step)
    return State(raw={"u": torch.randn(2, 3, generator=g), "v": torch.randn(2, 3, generator=g)},
                 opt={"u.momentum": torch.randn(2, 3, generator=g)}, alive=torch.tensor([True, False]), step=step,
                 buffers={"bn.running_var": torch.rand(2, 4, generator=g)})


def save_checkpoint(job: Path, h: str) -> tuple[State, list[torch.Generator], list]:
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    for g in gens:
        torch.rand(5, generator=g)  # states other than the seed's
    rows = [(10, "weight", "sparsity/l1_l2", [0.5, float("nan")]), (20, "", "status/diverged", [0.0, 1.0])]
    state = a_state()
    checkpoint.save(job, h, state, {"order": [g.get_state() for g in gens], "perm": torch.randperm(6), "pos": 3}, rows)
    return state, gens, rows


def test_checkpoint_round_trip(tmp_path, capsys):
    state, gens, rows = save_checkpoint(tmp_path, "h1")
    ck = checkpoint.load(tmp_path, "h1")
    assert ck["state"].step == 40 and ck["state"].alive.tolist() == [True, False]
    for field in ("raw", "opt", "buffers"):
        got, want = getattr(ck["state"], field), getattr(state, field)
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    resumed = [torch.Generator().set_state(s) for s in ck["batcher"]["order"]]
    assert all(torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b)) for a, b in zip(resumed, gens))
    assert ck["batcher"]["pos"] == 3 and ck["batcher"]["perm"].shape == (6,)
    assert [r[:3] for r in ck["rows"]] == [r[:3] for r in rows] and ck["rows"][1][3] == [0.0, 1.0]
    assert ck["rows"][0][3][0] == 0.5 and math.isnan(ck["rows"][0][3][1])
    before = (tmp_path / "ckpt.pt").read_bytes()
    assert checkpoint.load(tmp_path, "another config") is None  # a checkpoint of another config: unused, untouched
    assert (tmp_path / "ckpt.pt").read_bytes() == before and capsys.readouterr().err == ""


def rewrite_checkpoint(change):
    def rewrite(f: Path) -> None:
        ck = torch.load(f, weights_only=True)
        change(ck)
        torch.save(ck, f)
    return rewrite


CKPT_CASES = [
    ("cut in half", lambda f: cut(f), "corrupt or cut short: OSError"),
    ("empty", lambda f: f.write_bytes(b""), "corrupt or cut short: EOFError"),
    ("random bytes", replace_bytes(np.random.default_rng(0).bytes(4096)), "nothing in it ran: Unsupported operand"),
    ("symexp's old pickled State", lambda f: torch.save({"hash": "h", "state": a_state()}, f),
     "refused by weights_only=True, nothing in it ran: .*symexp.ensemble.State"),
    ("a bare tensor", lambda f: torch.save(torch.zeros(3), f), "not a symexp checkpoint of format 2"),
    ("format 1 (before last_eval)", rewrite_checkpoint(lambda ck: ck.update(format=1)),
     "not a symexp checkpoint of format 2"),
    ("format 3", rewrite_checkpoint(lambda ck: ck.update(format=3)), "not a symexp checkpoint of format 2"),
    ("state without opt", rewrite_checkpoint(lambda ck: ck["state"].pop("opt")), "training state is incomplete"),
    ("rows of mismatched lengths", rewrite_checkpoint(lambda ck: ck["rows"]["length"].add_(1)),
     "rows are inconsistent"),
]


@pytest.mark.parametrize("case, breaks, says", CKPT_CASES, ids=[c[0] for c in CKPT_CASES])
def test_bad_checkpoint_is_set_aside(tmp_path, capsys, case, breaks, says):
    save_checkpoint(tmp_path, "h1")
    f = tmp_path / "ckpt.pt"
    breaks(f)
    bad = f.read_bytes()
    assert checkpoint.load(tmp_path, "h1") is None
    err = one_stderr_line(capsys, f"{f}: unreadable checkpoint (",
                          "kept aside as ckpt.pt.corrupt-0; the job starts afresh")
    assert re.search(says, err), err
    assert not f.exists() and (tmp_path / "ckpt.pt.corrupt-0").read_bytes() == bad


def test_rerun_with_a_half_checkpoint_starts_afresh(make_cfg, clean_job, tmp_path, capsys):
    """A job killed mid-write of its checkpoint (non-atomic writers, a full disk): every rerun used
    to fail on torch's zip error until the file was deleted by hand."""
    job = copy_job(clean_job, tmp_path)
    for name in ("metrics.parquet", "weights.pt"):
        (job / name).unlink()
    rewrite_status(job, state="running")
    save_checkpoint(job, json.loads((job / "status.json").read_text())["config_hash"])
    cut(job / "ckpt.pt")
    capsys.readouterr()
    assert run_job(make_cfg(*TINY_JOB), job, progress=False)["state"] == "done"
    one_stderr_line(capsys, str(job / "ckpt.pt"), "kept aside as ckpt.pt.corrupt-0; the job starts afresh")
    pd.testing.assert_frame_equal(table(job), table(clean_job))
    assert not (job / "ckpt.pt").exists() and (job / "ckpt.pt.corrupt-0").exists()


WEIGHTS_CASES = [
    ("cut in half", lambda f: cut(f), r"unreadable weights \(corrupt or cut short: RuntimeError: PytorchStreamReader"),
    ("random bytes", replace_bytes(np.random.default_rng(1).bytes(512)), "nothing in it ran: Unsupported operand"),
    ("a list of tensors", lambda f: torch.save([torch.zeros(2)], f), "expected a dict of name -> tensor, got list"),
    ("a number among the tensors", lambda f: torch.save({"weight": torch.zeros(2), "step": 3}, f), "expected a dict"),
]


@pytest.mark.parametrize("case, breaks, says", WEIGHTS_CASES, ids=[c[0] for c in WEIGHTS_CASES])
def test_bad_weights_file(clean_job, tmp_path, case, breaks, says):
    f = tmp_path / "weights.pt"
    shutil.copy(clean_job / "weights.pt", f)
    assert checkpoint.load_weights(f)["weight"].shape[0] == 2  # the file run_job wrote: [M = 2, ...]
    breaks(f)
    with pytest.raises(FileError) as e:
        checkpoint.load_weights(f)
    assert_one_line(e.value, str(f), says=says)
