"""Character-level text: a corpus as token windows resident on the training device.

The built-in corpus is the prose of Python's own help system, `pydoc_data.topics` (the Language
Reference sections behind `help("if")`, `help("FORMATTING")` ...: about 465k characters and 103
distinct ones under Python 3.11). It is part of the standard library of every CPython (python.org
and pyenv builds, Debian's libpython3.x-stdlib, which `python3` depends on), so a fresh machine with
only `pip install -e .[test]` has it, offline; its text changes a little between Python versions, so
the source, its size and a hash are kept in the data's `source`. Any UTF-8 file can replace it:
`data.path=/path/to/input.txt` (e.g. tiny-Shakespeare).

Split: the first 1 - val_fraction of the characters train, the rest validate (nanoGPT's char
recipe). Every training offset is a window (a strided view, no copy): x = chars [i, i + T), y = chars
[i + 1, i + T + 1). Losses are measured on fixed samples of `eval_windows` windows of each split,
since the full training set (every offset) is too large to evaluate at every eval step.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from symexp.data import TensorData
from symexp.errors import ConfigError

BUILTIN = "pydoc_data.topics"  # what data.path=null means


def load_corpus(path: str | None) -> str:
    """The corpus text: the built-in pydoc topics (path None) or a UTF-8 file; ConfigError names data.path."""
    if path is None:
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k] for k in sorted(topics))
    try:
        return Path(path).expanduser().read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"data.path: cannot read {path!r} as UTF-8 text ({type(e).__name__}); "
                          f"give a text file or null for the built-in corpus") from None


def encode(corpus: str) -> tuple[torch.Tensor, list[str]]:
    """Token ids [n] (int64) and the vocabulary: the sorted distinct characters."""
    vocab = sorted(set(corpus))
    index = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([index[c] for c in corpus], dtype=torch.int64), vocab


def _sample(tokens: torch.Tensor, context: int, count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` windows at random offsets (without replacement): x, y [count, context]."""
    starts = torch.randperm(len(tokens) - context, generator=gen)[:count]
    w = tokens[starts[:, None] + torch.arange(context + 1)]
    return w[:, :-1], w[:, 1:]


def text(cfg: dict, device: torch.device, dtype: torch.dtype) -> TensorData:
    corpus = load_corpus(cfg["path"])
    tokens, vocab = encode(corpus)
    T = cfg["context"]
    n_val = int(len(tokens) * cfg["val_fraction"])
    train, val = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val:]
    for split, part in (("training", train), ("validation", val)):
        if len(part) <= T + cfg["eval_windows"]:
            raise ConfigError(f"data.path: the {split} split has {len(part)} characters, too few for "
                              f"data.context={T} plus data.eval_windows={cfg['eval_windows']}")
    gen = torch.Generator().manual_seed(cfg["seed"])
    x_eval, y_eval = _sample(train, T, cfg["eval_windows"], gen)
    x_val, y_val = _sample(val, T, cfg["eval_windows"], gen)
    windows = train.to(device).unfold(0, T + 1, 1)  # [n - T, T + 1], a view of the resident corpus
    return TensorData(
        x=windows[:, :-1], y=windows[:, 1:], task="language",
        x_test=x_val.to(device), y_test=y_val.to(device), x_eval=x_eval.to(device), y_eval=y_eval.to(device),
        vocab=tuple(vocab), source=describe_source(cfg["path"], corpus),
    )


def describe_source(path: str | None, corpus: str) -> str:
    """Provenance for the report: which corpus, its size and a hash (the built-in one varies by Python)."""
    digest = hashlib.sha256(corpus.encode()).hexdigest()[:16]
    return f"{path or BUILTIN} ({len(corpus)} chars, sha256 {digest})"
