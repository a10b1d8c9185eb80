"""No file a user is handed runs code when symexp reads it: a CIFAR-10 folder whose pickles carry a
`__reduce__` payload, a checkpoint and a weights file that do. Each payload would create a marker
file; the marker must never appear, and the refusal is one line naming the file and what it asked for.
The payloads are live: plain `pickle.load` / `torch.load(weights_only=False)` runs each (the controls)."""
from __future__ import annotations

import json
import os
import pickle
import pickletools
import subprocess
from pathlib import Path

import numpy as np
import numpy.testing._private.utils as np_test_utils
import pytest
import torch

from conftest import PYTHON, ROOT, cli_env
from symexp import checkpoint
from symexp.data.images import load_cifar10, write_cifar10_like
from symexp.errors import DataError, FileError
from symexp.run import run_job
from tests.test_bad_files import clean_job  # noqa: F401  (the fixture)
from tests.test_bad_files import (N_BATCH, N_TEST, TINY_IMAGE_JOB, TINY_JOB, assert_one_line, batch, copy_job,
                                  one_stderr_line, rewrite_status)


class Payload:
    """Unpickling this calls fn(*args) (pickle's REDUCE): each below creates the marker file."""

    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def payloads(marker: Path) -> dict[str, Payload]:
    """{the callable: a payload that creates `marker` when unpickled}."""
    code = f"open({str(marker)!r}, 'w').close()"
    return {"posix.system": Payload(os.system, f"touch {marker}"),
            "builtins.exec": Payload(exec, code),
            "builtins.eval": Payload(eval, code),
            "io.open": Payload(open, str(marker), "w"),
            "subprocess.call": Payload(subprocess.call, ["touch", str(marker)]),
            # numpy's own modules are partly admitted; a numpy function that runs code is not
            "numpy.testing._private.utils.runstring": Payload(np_test_utils.runstring, code, {})}


GLOBALS = list(payloads(Path("m")))
PLACES = {  # where in a CIFAR-10 folder the payload sits: (file, its pickled content)
    "the whole batch": ("data_batch_1", lambda p: p),
    "a label": ("data_batch_3", lambda p: batch(labels=[0, 1, p, 2])),
    "an object array as data": ("test_batch", lambda p: batch(N_TEST, data=np.array([p] * N_TEST, dtype=object))),
    "a class name": ("batches.meta", lambda p: {b"label_names": [b"cat"] * 9 + [p]}),
}


def write_evil(folder: Path, name: str, content) -> str:
    """Pickle `content` as the official files are (protocol 2); return the global it names first, as
    the file spells it (python 3 writes python-2 names: __builtin__.exec, commands.call ...)."""
    raw = pickle.dumps(content, protocol=2)
    (folder / name).write_bytes(raw)
    return next(arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL").replace(" ", ".")


@pytest.mark.parametrize("what", GLOBALS)
def test_payloads_are_live(tmp_path, what):
    """The control: unrestricted unpickling of each payload does create its marker."""
    marker = tmp_path / "ran"
    pickle.loads(pickle.dumps(payloads(marker)[what], protocol=2))
    assert marker.exists()


@pytest.mark.parametrize("what", GLOBALS)
def test_cifar_batch_payload_never_runs(tmp_path, what):
    marker, folder = tmp_path / "ran", write_cifar10_like(tmp_path / "cifar-10-batches-py", N_BATCH, N_TEST)
    named = write_evil(folder, "data_batch_1", payloads(marker)[what])
    with pytest.raises(DataError) as e:
        load_cifar10(folder)
    assert_one_line(e.value, str(folder / "data_batch_1"), f"refused to unpickle {named}:", "nothing in it was run")
    assert not marker.exists()


@pytest.mark.parametrize("place", PLACES)
def test_cifar_payload_anywhere_in_the_folder_never_runs(tmp_path, place):
    marker, folder = tmp_path / "ran", write_cifar10_like(tmp_path / "cifar-10-batches-py", N_BATCH, N_TEST)
    name, content = PLACES[place]
    write_evil(folder, name, content(payloads(marker)["posix.system"]))
    with pytest.raises(DataError) as e:
        load_cifar10(folder)
    assert_one_line(e.value, str(folder / name), says=r"refused to unpickle (posix\.system|numpy\.dtype\('O8'\))")
    assert not marker.exists()


def test_cli_on_a_malicious_cifar_folder(tmp_path):
    """The issue's report, as a user meets it: exit code 2, one stderr line, no code run, no rows."""
    marker, folder = tmp_path / "ran", write_cifar10_like(tmp_path / "cifar-10-batches-py", N_BATCH, N_TEST)
    write_evil(folder, "data_batch_1", payloads(marker)["posix.system"])
    job_dir = tmp_path / "run"
    cmd = [PYTHON, "-m", "symexp.run", *TINY_IMAGE_JOB, "data=cifar10", f"data.root={folder}", "data.n_train=8",
           "data.augment=false", f"paths.results={tmp_path}", f"hydra.run.dir={job_dir}", "compile=false"]
    proc = subprocess.run(cmd, cwd=ROOT, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and str(folder / "data_batch_1") in lines[0] and "posix.system" in lines[0], proc.stderr
    assert not marker.exists() and not (job_dir / "metrics.parquet").exists()


def evil_checkpoint(f: Path, payload: Payload) -> None:
    torch.save({"format": checkpoint.FORMAT, "hash": "h", "state": payload, "batcher": {}, "rows": {}}, f)


def test_torch_payload_is_live(tmp_path):
    marker = tmp_path / "ran"
    evil_checkpoint(tmp_path / "ckpt.pt", payloads(marker)["builtins.exec"])
    torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("what", GLOBALS)
def test_checkpoint_payload_never_runs(tmp_path, capsys, what):
    marker, f = tmp_path / "ran", tmp_path / "ckpt.pt"
    evil_checkpoint(f, payloads(marker)[what])
    assert checkpoint.load(tmp_path, "h") is None
    one_stderr_line(capsys, str(f), "refused by weights_only=True, nothing in it ran", what.split(".")[-1],
                    "kept aside as ckpt.pt.corrupt-0")
    assert not marker.exists()


def test_weights_payload_never_runs(tmp_path):
    marker, f = tmp_path / "ran", tmp_path / "weights.pt"
    torch.save({"weight": torch.zeros(2), "bias": payloads(marker)["posix.system"]}, f)
    with pytest.raises(FileError) as e:
        checkpoint.load_weights(f)
    assert_one_line(e.value, str(f), "refused by weights_only=True", "posix.system")
    assert not marker.exists()


def test_job_with_a_malicious_checkpoint_runs_afresh(make_cfg, clean_job, tmp_path, capsys):
    job, marker = copy_job(clean_job, tmp_path), tmp_path / "ran"
    for name in ("metrics.parquet", "weights.pt"):
        (job / name).unlink()
    rewrite_status(job, state="running")
    evil_checkpoint(job / "ckpt.pt", payloads(marker)["posix.system"])
    capsys.readouterr()
    assert run_job(make_cfg(*TINY_JOB), job, progress=False)["state"] == "done"
    one_stderr_line(capsys, str(job / "ckpt.pt"), "posix.system", "the job starts afresh")
    assert not marker.exists() and json.loads((job / "status.json").read_text())["state"] == "done"
