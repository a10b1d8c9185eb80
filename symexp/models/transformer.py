"""A small decoder-only transformer for character-level language modelling (pre-LayerNorm, causal
self-attention), after karpathy/nanoGPT model.py, in plain torch.

It is a stateless template for the ensemble engine (functional_call), so it differs from nanoGPT
where that helps measuring or batching: W_Q, W_K, W_V, W_O are separate bias-free matrices, attention
is written out (vmap/grad friendly, the mask built in-line), no dropout, no weight tying.

Double rotation symmetry (paper.md 3): with head h's rows W_Q,h, W_K,h, W_V,h ([d_head, d_model]) and
columns W_O,h ([d_model, d_head]), (W_Q,h, W_K,h) -> (R W_Q,h, R W_K,h) and (W_V,h, W_O,h) ->
(R W_V,h, W_O,h R^T) for any orthogonal R leave the function unchanged; the invariants are the
bilinear forms W_Q,h^T W_K,h and W_O,h W_V,h. `probe_views` hands these (per head, and summed over
heads: the layer's W_Q^T W_K and W_O W_V) and W_Q, W_K alone to the rank metrics.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from symexp.components import Model
from symexp.errors import ConfigError
from symexp.schema import Count, Positive


@dataclass
class TransformerConfig(Model):
    name: Literal["transformer"] = "transformer"
    n_layer: Count = 2  # pre-LayerNorm blocks
    n_head: Count = 4  # attention heads per block (d_model must be a multiple)
    d_model: Count = 64  # residual stream width
    init_scale: Positive = 0.02  # std of weights at init (nanoGPT); residual projections / sqrt(2 n_layer)
    reads = ("tokens",)

    def check(self, parts, c: dict) -> None:
        if self.d_model % self.n_head:
            raise ConfigError(f"model.n_head: {self.n_head} must divide model.d_model ({self.d_model})")

    def build(self, data) -> nn.Module:
        return Transformer(len(data.vocab), data.x.shape[1], self.n_layer, self.n_head, self.d_model, self.init_scale)


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, d] -> [B, T, d]
        B, T, d = x.shape
        heads = lambda t: t.view(B, T, self.n_head, d // self.n_head).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))  # [B, H, T, d_head]
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.n_head)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        att = scores.masked_fill(future, float("-inf")).softmax(dim=-1)
        return self.o((att @ v).transpose(1, 2).reshape(B, T, d))


class Block(nn.Module):
    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d_model, bias=False)
        self.attn = CausalSelfAttention(d_model, n_head)
        self.ln_2 = nn.LayerNorm(d_model, bias=False)
        self.fc = nn.Linear(d_model, 4 * d_model, bias=False)
        self.proj = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.proj(F.gelu(self.fc(self.ln_2(x))))


class Transformer(nn.Module):
    """tokens [B, T] (int64) -> next-token logits [B, T, vocab]."""

    def __init__(self, vocab_size: int, context: int, n_layer: int, n_head: int, d_model: int, init_scale: float):
        super().__init__()
        self.n_layer, self.n_head, self.init_scale = n_layer, n_head, init_scale
        self.wte = nn.Embedding(vocab_size, d_model)
        self.wpe = nn.Embedding(context, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, bias=False)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        # every probe is a matrix; its rank metrics (symexp.evaluation.weights.measure) are logged per layer and head
        self.probes = {f"L{layer}.{name}": ("rank",) for layer in range(n_layer)
                       for name in ("qk", "ov", "q", "k", *(f"h{h}.{p}" for h in range(n_head) for p in ("qk", "ov")))}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nanoGPT's init: N(0, init_scale^2), residual projections scaled by 1/sqrt(2 n_layer)."""
        for name, p in self.named_parameters():
            if "ln_" in name:  # LayerNorm gains
                nn.init.ones_(p)
            elif name.endswith(("attn.o.weight", "proj.weight")):
                nn.init.normal_(p, std=self.init_scale / math.sqrt(2 * self.n_layer))
            else:
                nn.init.normal_(p, std=self.init_scale)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.wte(idx) + self.wpe.weight[: idx.shape[-1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))

    def probe_views(self, theta: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Per layer L and head h, from stacked weights `[M, ...]`: W_Q,h^T W_K,h and W_O,h W_V,h
        (`L.h.qk`, `L.h.ov`, each [M, d, d]), their sums over heads (`L.qk` = W_Q^T W_K, `L.ov` = W_O W_V)
        and W_Q, W_K (`L.q`, `L.k`)."""
        views = {}
        for layer in range(self.n_layer):
            w = {n: theta[f"blocks.{layer}.attn.{n}.weight"] for n in "qkvo"}  # [M, out, in]
            M, d, _ = w["q"].shape
            rows = {n: w[n].view(M, self.n_head, d // self.n_head, d) for n in "qkv"}  # [M, H, d_head, d]
            cols_o = w["o"].view(M, d, self.n_head, d // self.n_head).permute(0, 2, 1, 3)  # [M, H, d, d_head]
            qk = rows["q"].transpose(-2, -1) @ rows["k"]  # [M, H, d, d]
            ov = cols_o @ rows["v"]
            views.update({f"L{layer}.qk": qk.sum(1), f"L{layer}.ov": ov.sum(1),
                          f"L{layer}.q": w["q"], f"L{layer}.k": w["k"]})
            for h in range(self.n_head):
                views[f"L{layer}.h{h}.qk"], views[f"L{layer}.h{h}.ov"] = qk[:, h], ov[:, h]
        return views
