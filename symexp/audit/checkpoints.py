"""Weights from a file a user was handed, read without running anything it names: `.safetensors` by its
header (raw little-endian tensors after a JSON table, https://huggingface.co/docs/safetensors; no package
needed), anything else (.pt, .pth, .bin) with torch.load(weights_only=True). One line for every failure."""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import torch
from torch import nn

from symexp.audit.errors import CheckpointError, first_line

Tensors = dict[str, torch.Tensor]
SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
                      "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8,
                      "U8": torch.uint8, "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn,
                      "F8_E5M2": torch.float8_e5m2}


def read_tensors(path: Path) -> Tensors:
    """The name -> tensor dict in a checkpoint (also under 'state_dict' / 'model'); one clear error else."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return read_safetensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"{path}: refused by torch.load(weights_only=True) (it holds objects other than "
                              f"tensors and plain containers; save model.state_dict()): {first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - truncated zip, random bytes, wrong format: one line
        raise CheckpointError(f"{path}: not a readable torch checkpoint "
                              f"({type(e).__name__}: {first_line(e)})") from None
    for key in (None, "state_dict", "model_state_dict", "model"):
        sd = obj if key is None else obj.get(key) if isinstance(obj, dict) else None
        if isinstance(sd, dict) and sd and all(isinstance(k, str) and torch.is_tensor(v) for k, v in sd.items()):
            return sd
    raise CheckpointError(f"{path}: holds no state_dict (a dict of name -> tensor, alone or under "
                          f"'state_dict' / 'model'); found {type(obj).__name__}")


def read_safetensors(path: Path) -> Tensors:
    """Every tensor of a .safetensors file: 8 bytes of header length (little endian), a JSON table
    {name: {dtype, shape, data_offsets: [begin, end]}} (offsets into the bytes after it), the data."""
    size = path.stat().st_size
    data = bytearray(size)
    with path.open("rb") as f:
        f.readinto(data)
    bad = lambda why: CheckpointError(f"{path}: not a valid .safetensors file ({why})")  # noqa: E731
    n = int.from_bytes(data[:8], "little") if size >= 8 else -1
    if not 0 < n <= size - 8:
        raise bad(f"header length {n} in a file of {size} bytes")
    try:
        table = json.loads(bytes(data[8:8 + n]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"header is not JSON: {first_line(e)}") from None
    if not isinstance(table, dict):
        raise bad("header is not a JSON object")
    start, out = 8 + n, {}
    for name, entry in table.items():
        if name == "__metadata__":
            continue
        out[name] = _tensor(data, start, size, name, entry, bad)
    if not out:
        raise bad("it holds no tensors")
    return out


def _tensor(data: bytearray, start: int, size: int, name: str, entry, bad) -> torch.Tensor:
    if not isinstance(entry, dict) or entry.get("dtype") not in SAFETENSORS_DTYPES:
        dtype = entry.get("dtype") if isinstance(entry, dict) else entry
        raise bad(f"{name}: dtype {dtype!r}; allowed: {', '.join(SAFETENSORS_DTYPES)}")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise bad(f"{name}: shape {shape!r} is not a list of sizes")
    dtype = SAFETENSORS_DTYPES[entry["dtype"]]
    numel, itemsize = math.prod(shape), torch.empty((), dtype=dtype).element_size()
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)
            and 0 <= offsets[0] <= offsets[1] <= size - start and offsets[1] - offsets[0] == numel * itemsize):
        raise bad(f"{name}: data_offsets {offsets!r} do not hold {numel} x {itemsize} bytes inside the file")
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    # a view of the file's bytes (the tensor keeps them alive): no second copy of a large model
    return torch.frombuffer(data, dtype=dtype, count=numel, offset=start + offsets[0]).view(shape)


def load_into(model: nn.Module, sd: Tensors, path: Path, spec: str) -> None:
    """Load `sd` strictly; a mismatch is one line naming missing, unexpected and mis-shaped keys. A key
    missing only because it is tied to one present (an LM head sharing the token embedding) is fine."""
    own = model.state_dict(keep_vars=True)
    tied = {k for k in own if k not in sd and any(own[k] is own[j] for j in sd if j in own)}
    missing = [k for k in own if k not in sd and k not in tied]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = [f"{name}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} ({len(keys)})"
                 for name, keys in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)) if keys]
        raise CheckpointError(f"{path}: does not fit {spec}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=not tied)
