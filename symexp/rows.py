"""A job's metric rows while it runs: blocks of (step, layer, metric, value per member).

The runner owns them: it appends what the training loop yields, hands each new block to the wandb
sink, saves them in checkpoints and expands them to the tidy table (one row per member) at the end.
"""
from __future__ import annotations

import pandas as pd
import torch

Block = tuple[int, str, str, list[float]]


class Rows:
    def __init__(self, blocks: list[Block] | None = None):
        self.blocks: list[Block] = list(blocks or [])

    def add(self, step: int, layer: str, metric: str, values: torch.Tensor) -> Block:
        block = (step, layer, metric, values.detach().double().cpu().tolist())
        self.blocks.append(block)
        return block

    def extend(self, step: int, results) -> list[Block]:
        """Append `(layer, metric, values [M])` results at `step`; return the new blocks."""
        return [self.add(step, layer, metric, values) for layer, metric, values in results]

    def frame(self, members: list[dict], job_columns: dict) -> pd.DataFrame:
        records = [{**members[m], "step": step, "layer": layer, "metric": metric, "value": v}
                   for step, layer, metric, values in self.blocks for m, v in enumerate(values)]
        df = pd.DataFrame.from_records(records)
        for k, v in reversed(job_columns.items()):
            df.insert(0, k, v)
        return df
