"""Checkpoints (ckpt.pt) and final weights (weights.pt) in the form `torch.load(weights_only=True)` reads.

Both are files a user may be handed, so neither is ever unpickled with `weights_only=False`: they hold
only dicts, lists, tuples, strings, numbers and tensors. The training State is stored as its fields
and rebuilt on load; the batcher's generator states are the ByteTensors of `Generator.get_state()`;
the rows so far are packed into a few tensors (fast to save, exact: the values are float64 either way).

A checkpoint that cannot be read (cut short by a crash on a full disk, a bad copy, or refused by
weights_only) is renamed aside as ckpt.pt.corrupt-<n> with one stderr line, and the job starts afresh.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from symexp.ensemble import State
from symexp.errors import FileError
from symexp.results import atomic_write, one_line, set_aside

CKPT = "ckpt.pt"
FORMAT = 2  # bump when the layout changes: an older checkpoint is then set aside, not misread
STATE_TENSOR_DICTS = ("raw", "opt", "buffers", "last_eval")


def save(out_dir: Path, config_hash: str, state: State, batcher_state: dict, rows_blocks: list) -> None:
    """Write <out_dir>/ckpt.pt atomically: the State, the batcher's state dict and the rows so far."""
    payload = {"format": FORMAT, "hash": config_hash,
               "state": {**{k: dict(getattr(state, k)) for k in STATE_TENSOR_DICTS},
                         "alive": state.alive, "step": int(state.step)},
               "batcher": batcher_state, "rows": _pack_rows(rows_blocks)}
    _require_plain(payload, "checkpoint")
    atomic_write(Path(out_dir) / CKPT, lambda p: torch.save(payload, p))


def load(out_dir: Path, config_hash: str) -> dict | None:
    """{"state": State, "batcher": dict, "rows": list} from <out_dir>/ckpt.pt, or None: no checkpoint,
    one of another config, or an unreadable one (then set aside, with one stderr line)."""
    f = Path(out_dir) / CKPT
    if not f.exists():
        return None
    try:
        ck = torch.load(f, weights_only=True)
    except Exception as e:  # torch raises RuntimeError (zip), UnpicklingError (refused), EOFError, ...
        return _start_afresh(f, _why(e, f))
    problem = _layout_problem(ck)
    if problem:
        return _start_afresh(f, problem)
    if ck["hash"] != config_hash:
        return None
    return {"state": State(**ck["state"]), "batcher": ck["batcher"], "rows": _unpack_rows(ck["rows"])}


def save_weights(path: Path, theta: dict[str, torch.Tensor]) -> None:
    """The effective weights {name: tensor}, on the CPU, atomically."""
    weights = {k: v.detach().cpu() for k, v in theta.items()}
    _require_plain(weights, "weights")
    atomic_write(Path(path), lambda p: torch.save(weights, p))


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Weights written by save_weights; FileError (one line naming the file) for anything else."""
    try:
        weights = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as e:
        raise FileError(f"{path}: unreadable weights ({_why(e, path)})") from None
    if not isinstance(weights, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                for k, v in weights.items()):
        raise FileError(f"{path}: expected a dict of name -> tensor, got {type(weights).__name__}")
    return weights


def _start_afresh(f: Path, why: str) -> None:
    print(f"symexp: {f}: unreadable checkpoint ({why}); kept aside as {set_aside(f).name}; "
          "the job starts afresh", file=sys.stderr)
    return None


def _why(e: BaseException, path: Path) -> str:
    """One line; for weights_only's refusal, the global it refused (its message is a paragraph)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        detail = next((line for line in lines[1:] if "GLOBAL" in line or "Unsupported" in line), lines[-1])
        return f"refused by weights_only=True, nothing in it ran: {detail.split('. ')[0][:160]}"
    return f"corrupt or cut short: {one_line(e, path)}"


def _pack_rows(blocks: list) -> dict:
    """[(step, layer, metric, values)] -> steps, names, and all values in one float64 tensor."""
    return {"step": torch.tensor([b[0] for b in blocks], dtype=torch.int64),
            "layer": [b[1] for b in blocks], "metric": [b[2] for b in blocks],
            "length": torch.tensor([len(b[3]) for b in blocks], dtype=torch.int64),
            "values": torch.tensor([v for b in blocks for v in b[3]], dtype=torch.float64)}


def _unpack_rows(p: dict) -> list:
    values = p["values"].split(p["length"].tolist()) if len(p["length"]) else []
    return [(step, layer, metric, v.tolist())
            for step, layer, metric, v in zip(p["step"].tolist(), p["layer"], p["metric"], values)]


def _layout_problem(ck) -> str | None:
    """What is wrong with a loaded checkpoint's layout, or None (a readable file of another layout)."""
    if not isinstance(ck, dict) or ck.get("format") != FORMAT or not isinstance(ck.get("hash"), str):
        return f"not a symexp checkpoint of format {FORMAT}"
    state, rows = ck.get("state"), ck.get("rows")
    if not (isinstance(state, dict) and set(state) == {*STATE_TENSOR_DICTS, "alive", "step"}
            and isinstance(state["step"], int) and isinstance(state["alive"], torch.Tensor)
            and all(_tensor_dict(state[k]) for k in STATE_TENSOR_DICTS)):
        return "its training state is incomplete"
    if not isinstance(ck.get("batcher"), dict):
        return "its batcher state is missing"
    if not isinstance(rows, dict):
        return "its rows are missing"
    step, length, values, names = rows.get("step"), rows.get("length"), rows.get("values"), \
        [rows.get("layer"), rows.get("metric")]
    if not (all(isinstance(t, torch.Tensor) and t.dim() == 1 for t in (step, length, values))
            and all(isinstance(n, list) for n in names) and len({len(step), len(length), *map(len, names)}) == 1
            and bool((length >= 0).all()) and int(length.sum()) == len(values)):
        return "its rows are inconsistent"
    return None


def _tensor_dict(d) -> bool:
    return isinstance(d, dict) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in d.items())


def _require_plain(obj, where: str) -> None:
    """A TypeError now, at save, for anything weights_only=True would refuse at load (a resume would
    then start afresh every time)."""
    if obj is None or isinstance(obj, (torch.Tensor, bool, int, float, str)):
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TypeError(f"{where}: key {k!r} is not a str")
            _require_plain(v, f"{where}[{k!r}]")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _require_plain(v, f"{where}[{i}]")
    else:
        raise TypeError(f"{where}: {type(obj).__name__} is not readable with torch.load(weights_only=True)")
