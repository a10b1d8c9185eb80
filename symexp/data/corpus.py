"""A character corpus as a component (reading it: symexp.data.text)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Optional

import torch

from symexp.components import DataSet
from symexp.data import TensorData
from symexp.errors import ConfigError
from symexp.schema import Count, Fraction


@dataclass
class Corpus(DataSet):
    name: Literal["text"] = "text"
    path: Optional[str] = None  # a UTF-8 text file (e.g. tiny-Shakespeare); null = Python's pydoc_data topics
    context: Count = 64  # characters per training window = the model's context length
    val_fraction: Fraction = 0.1  # the last fraction of the corpus is the validation split
    eval_windows: Count = 64  # windows per split on which loss/train and loss/test are measured
    seed: int = 0  # draws the fixed eval windows, shared by all members
    kind = "tokens"
    task = "language"

    def check(self, parts, c: dict) -> None:
        if self.path is not None and not Path(self.path).expanduser().is_file():
            raise ConfigError(f"data.path: {self.path!r} is not a file; give a UTF-8 text file, or null for the "
                              f"built-in corpus (pydoc_data.topics)")

    def build(self, device: torch.device, dtype: torch.dtype) -> TensorData:
        from symexp.data.text import text

        return text(asdict(self), device, dtype)
