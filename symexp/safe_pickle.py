"""A restricted unpickler for data files a user was handed (the CIFAR-10 python batches).

`pickle.load` runs whatever callable a file names, so a data set from a mirror could run code. This
unpickler resolves no global except the few that numpy arrays of the allowed dtypes need, each
replaced by a wrapper that checks its arguments:

    numpy(.core|._core).multiarray._reconstruct   only for numpy.ndarray
    numpy.dtype                                    only for the allowed dtypes, always a fresh copy
    _codecs.encode                                 (str, "latin1"): bytes in a protocol-2 pickle written by Python 3

Everything else the files hold (dict, list, tuple, bytes, str, int, float, bool, None) needs no
global. Any other global is refused before it is imported, so nothing a file names ever runs.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle asks for a global (or a dtype) outside the allow-list; nothing it names was imported or called."""

    def __init__(self, what: str):
        super().__init__(what)
        self.what = what


class _NDArrayType:
    """Stands in for numpy.ndarray in the stream: only `_reconstruct` accepts it (calling it makes an empty object)."""


def _fresh_dtype(allowed: frozenset[str]):
    def dtype(spec, align=False, copy=True):
        name = spec.decode("latin1") if isinstance(spec, bytes) else spec  # python-2 pickles hold bytes
        if not isinstance(name, str) or np.dtype(name).str.lstrip("<>|=") not in allowed:
            raise ForbiddenGlobal(f"numpy.dtype({spec!r}) (allowed dtypes: {', '.join(sorted(allowed))})")
        # a copy: the BUILD opcode that follows calls __setstate__ on it, never on numpy's shared dtype
        return np.dtype(name, bool(align), True)
    return dtype


def _reconstruct(subtype, shape, typecode):
    if subtype is not _NDArrayType:
        raise ForbiddenGlobal(f"numpy _reconstruct of {subtype!r} (only numpy.ndarray)")
    # empty whatever `shape` says (numpy writes (0,)): the BUILD that follows sets shape, dtype and bytes
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _latin1_bytes(text, encoding):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):  # no codec lookup: it imports modules
        raise ForbiddenGlobal(f"_codecs.encode(..., {encoding!r}) (only latin1 text to bytes)")
    return text.encode("latin1")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays whose dtype is in `dtypes` (e.g. {"u1"}); nothing else."""

    def __init__(self, file, dtypes: frozenset[str], **kw):
        super().__init__(file, **kw)
        self.globals = {("numpy.core.multiarray", "_reconstruct"): _reconstruct,
                        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
                        ("numpy", "ndarray"): _NDArrayType,
                        ("numpy", "dtype"): _fresh_dtype(dtypes),
                        ("_codecs", "encode"): _latin1_bytes}

    def find_class(self, module: str, name: str):
        try:
            return self.globals[(module, name)]
        except KeyError:
            raise ForbiddenGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise ForbiddenGlobal(f"persistent id {pid!r}")


def load(path: Path, dtypes: frozenset[str] = frozenset({"u1"})) -> object:
    """Unpickle `path` (python-2 strings as bytes, like the official CIFAR-10 files).

    Raises ForbiddenGlobal for anything outside the allow-list, other exceptions for corrupt bytes."""
    with open(path, "rb") as f:
        return RestrictedUnpickler(f, frozenset(dtypes), encoding="bytes").load()
