"""`symexp audit` as a user runs it: the real CLI in a subprocess for every error path (one line on stderr,
exit status 2, no terminal escape codes, nothing written) and for a checkpoint audit from a model file with
keyword arguments and .safetensors weights. The subprocesses run concurrently (each imports torch)."""
from __future__ import annotations

import datetime
import importlib.util
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import torch

from symexp.audit.checkpoints import read_safetensors
from symexp.audit.cli import main as cli_main
from symexp.audit.errors import CheckpointError

NETS = """
    import torch
    from torch import nn
    class Net(nn.Module):
        def __init__(self, width=10):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(6, width), nn.ReLU(), nn.Linear(width, 3))
        def forward(self, x):
            return self.body(x)
"""
DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
          torch.int64: "I64", torch.int32: "I32", torch.int8: "I8", torch.uint8: "U8", torch.bool: "BOOL"}


def write_safetensors(path, tensors: dict[str, torch.Tensor]) -> None:
    """The format by hand (header length, JSON table, raw little-endian bytes), independent of the reader."""
    table, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in tensors.items():
        blob = t.contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b""
        table[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    header = json.dumps(table).encode()
    header += b" " * (-len(header) % 8)
    path.write_bytes(len(header).to_bytes(8, "little") + header + b"".join(blobs))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    (d / "nets.py").write_text(textwrap.dedent(NETS))
    (d / "broken.py").write_text("import torch\ndef Net(:\n")
    (d / "kwargs.yaml").write_text("width: 12\n")
    sys.path.insert(0, str(d))
    import nets

    sys.path.remove(str(d))
    torch.manual_seed(0)
    model = nets.Net(width=12)
    with torch.no_grad():
        model.body[0].weight[7], model.body[0].bias[7], model.body[2].weight[:, 7] = 0, 0, 0
    write_safetensors(d / "net.safetensors", model.state_dict())
    (d / "corrupt.safetensors").write_bytes((10**9).to_bytes(8, "little") + b"{}")
    (d / "pickled.pt").write_bytes(pickle.dumps({"w": datetime.date(2020, 1, 1)}, protocol=2))  # never unpickled
    return d, model


ERRORS = {  # case: (arguments, what the one line says); {d}: the files' folder, {net}: --model {d}/nets.py:Net
    "no_model": ("{d}/net.safetensors", "needs --model"),
    "missing_checkpoint": ("{d}/absent.pt {net}", "absent.pt: no such file or directory"),
    "missing_model_file": ("{d}/net.safetensors --model {d}/absent.py:Net", "absent.py: no such file"),
    "bad_form": ("{d}/net.safetensors --model nets", "allowed forms: pkg.module:Factory, path/to/file.py:Factory"),
    "kwargs_not_json": ("{net} --model-kwargs {{width:", "cannot read it (JSONDecodeError"),
    "kwargs_not_mapping": ("{net} --model-kwargs [12]", "holds a list; allowed: a mapping"),
    "kwargs_file_missing": ("{net} --model-kwargs @{d}/absent.yaml", "cannot read it (FileNotFoundError"),
    "unknown_option": ("{d}/net.safetensors {net} --widht 3", "unrecognized arguments: --widht"),
    "threshold_form": ("{d}/net.safetensors {net} --threshold dead_tau", "allowed form is NAME=NUMBER"),
    "hf_missing": ("--model hf:{d}", "needs the transformers package, which is not installed"),
    "timm_missing": ("--model timm:resnet50", "needs the timm package, which is not installed"),
    # these import torch
    "pickled": ("{d}/pickled.pt {net}", "refused by torch.load(weights_only=True)"),
    "corrupt_safetensors": ("{d}/corrupt.safetensors {net}", "not a valid .safetensors file (header length"),
    "syntax_error": ("--model {d}/broken.py:Net", "failed: SyntaxError: invalid syntax (broken.py, line 2)"),
    "bad_kwarg": ("{net} --model-kwargs {{\"depth\":2}}", 'calling it with {{"depth": 2}} failed (TypeError'),
    "misfit": ("{d}/net.safetensors {net}", "does not fit {d}/nets.py:Net: shape: body.0.weight (12, 6) vs (10, 6)"),
    "threshold_name": ("{d}/net.safetensors {net} --model-kwargs @{d}/kwargs.yaml --threshold deadtau=1",
                       "unknown threshold 'deadtau'; allowed: active_atol, dead_tau"),
}
NEEDS = {"hf_missing": "transformers", "timm_missing": "timm"}  # cases that need the package absent
SUCCESS = "{d}/net.safetensors {net} --model-kwargs @{d}/kwargs.yaml --out {d}/report --input-shape 16,6"


def fill(text: str, d) -> str:
    return text.format(d=d, net=f"--model {d}/nets.py:Net")


@pytest.fixture(scope="module")
def runs(files):
    """Every case's (exit status, stdout, stderr), the CLI run as `python -m symexp.cli audit ...`."""
    d, _ = files
    cases = {name: f"{args} --out {{d}}/out_{name}" for name, (args, _) in ERRORS.items()} | {"success": SUCCESS}
    procs = {name: subprocess.Popen([sys.executable, "-m", "symexp.cli", "audit", *fill(args, d).split()],
                                    cwd=d, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    env={**os.environ, "OMP_NUM_THREADS": "1"})
             for name, args in cases.items()}
    return {name: (p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for name, p in procs.items()}


@pytest.mark.parametrize("case", ERRORS)
def test_every_error_is_one_plain_line_with_exit_2(runs, files, case):
    if case in NEEDS and importlib.util.find_spec(NEEDS[case]) is not None:
        pytest.skip(f"{NEEDS[case]} is installed")
    d, _ = files
    rc, out, err = runs[case]
    assert rc == 2 and err.count("\n") == 1 and "\x1b" not in err, (rc, err)
    assert err.startswith(("symexp audit: ", "symexp: ")) and fill(ERRORS[case][1], d) in err, err
    assert out == "" and not (d / f"out_{case}").exists()


def test_torch_writes_escape_codes_the_cli_removes(files):
    """The premise of the `pickled` case: torch's own message carries terminal escape codes."""
    d, _ = files
    with pytest.raises(pickle.UnpicklingError, match="\x1b\\["):
        torch.load(d / "pickled.pt", weights_only=True)


def test_checkpoint_from_a_model_file_with_kwargs_and_safetensors(runs, files):
    d, model = files
    rc, out, err = runs["success"]
    assert rc == 0, err
    df = pd.read_csv(d / "report" / "audit.csv")
    values = df.set_index(["symmetry", "measure", "layer"]).value
    assert values[("rescaling", "zero_units", "body.0")] == 1  # the planted unit: the checkpoint's weights
    sigma = float(torch.linalg.svdvals(model.body[0].weight.detach().double())[0])
    assert values[("spectrum", "spectrum/sv0", "body.0.weight")] == pytest.approx(sigma, rel=1e-9)
    assert "zero_units 1/12" in out and "spectra of 2 weight matrices" in out
    assert "no audit bug" in out and (df.measure == "verify_train").any()  # verified by default: a small model


def test_a_bare_model_is_audited_as_built(files, tmp_path, monkeypatch, capsys):
    d, _ = files
    monkeypatch.chdir(tmp_path)
    assert cli_main(["--model", f"{d}/nets.py:Net", "--model-kwargs", '{"width": 5}', "--no-verify"]) == 0
    text = (tmp_path / "nets.Net.audit" / "summary.txt").read_text()
    assert "no checkpoint" in text and text in capsys.readouterr().out
    df = pd.read_csv(tmp_path / "nets.Net.audit" / "audit.csv")
    assert not df.measure.str.startswith("verify").any()
    tau = df[df.measure == "rank/tau@0.001"].set_index("layer")["of"]
    assert tau.to_dict() == {"body.0.weight": 5, "body.2.weight": 3}


def test_safetensors_reader_round_trips_and_refuses_what_does_not_fit(tmp_path):
    tensors = {f"t{i}": (torch.randn(3, 4) * 10).to(dt) for i, dt in enumerate(DTYPES)} | {"empty": torch.zeros(0, 5)}
    write_safetensors(tmp_path / "ok.safetensors", tensors)
    back = read_safetensors(tmp_path / "ok.safetensors")
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k], v) and back[k].dtype == v.dtype for k, v in tensors.items())
    good = (tmp_path / "ok.safetensors").read_bytes()
    n = int.from_bytes(good[:8], "little")
    table = json.loads(good[8:8 + n])

    def with_table(change) -> bytes:
        t = json.loads(json.dumps(table))
        change(t)
        h = json.dumps(t).encode()
        return len(h).to_bytes(8, "little") + h + good[8 + n:]

    bad = {"short": good[:5], "not json": (4).to_bytes(8, "little") + b"{{{{",
           "dtype": with_table(lambda t: t["t0"].update(dtype="F128")),
           "shape": with_table(lambda t: t["t1"].update(shape=[3, -4])),
           "offsets": with_table(lambda t: t["t1"].update(data_offsets=[0, 10 ** 9])),
           "size": with_table(lambda t: t["t1"].update(shape=[3, 5]))}
    for case, blob in bad.items():
        (tmp_path / "bad.safetensors").write_bytes(blob)
        with pytest.raises(CheckpointError, match="not a valid .safetensors file"):
            read_safetensors(tmp_path / "bad.safetensors")


@pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                    reason="transformers is not installed (optional: the hf: scheme)")
def test_hf_folder_with_its_saved_weights(tmp_path, monkeypatch, capsys):
    import transformers

    config = transformers.GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=50, n_positions=16)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config)
    model.save_pretrained(tmp_path / "gpt2")  # config.json and model.safetensors (the head tied: saved once)
    monkeypatch.chdir(tmp_path)
    assert cli_main(["--model", f"hf:{tmp_path / 'gpt2'}", "--no-verify"]) == 0
    df = pd.read_csv(tmp_path / "gpt2.audit" / "audit.csv")
    sv0 = df[(df.measure == "spectrum/sv0")].set_index("layer").value
    w = model.transformer.h[0].attn.c_attn.weight.detach().double()
    assert sv0["transformer.h.0.attn.c_attn.weight"] == pytest.approx(float(torch.linalg.svdvals(w)[0]), rel=1e-9)
    assert "model.safetensors" in capsys.readouterr().out


def test_a_module_factory_with_kwargs_gets_token_inputs(tmp_path):
    kwargs = '{"vocab": 50, "n_ctx": 16, "d": 32, "n_layer": 1, "n_head": 4}'
    out = tmp_path / "gpt2"
    assert cli_main(["--model", "symexp.audit.zoo:GPT2", "--model-kwargs", kwargs, "--input-shape", "3,8",
                     "--out", str(out), "--no-verify"]) == 0
    df = pd.read_csv(out / "audit.csv")
    never = df[df.measure == "never_active"]  # measured on the token ids: float inputs fail in the embedding
    assert len(never) and never.note.str.contains(r"\[3, 8\]").all()
    assert df[df.measure == "rank/tau@0.001"].set_index("layer")["of"]["wte.weight"] == 32
