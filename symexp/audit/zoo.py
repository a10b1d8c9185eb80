"""Reference architectures in plain torch, random init, sizes as arguments: the audit's test zoo and the
speed bench's full-size models. Each reproduces the operations its family's reference code runs (as
transformers/timm write them), because the audit reads operations, not module names:

* `GPT2`      transformers' GPT-2: Conv1D (torch.addmm, weight [in, out]), fused c_attn split into q, k, v,
              learned positions, pre-LN, gelu_new written out, LM head tied to the token embedding;
              attention by SDPA, or (eager=True) written out with the causal mask through torch.where.
              GPT-2 small: GPT2() (12 layers, 768 wide, 12 heads, vocab 50257, context 1024).
* `Llama`     grouped K/V (any number of KV heads; repeat_kv, or SDPA's enable_gqa), rotary embeddings (rotate_half), an
              optional KV cache (torch.cat of past keys/values), SwiGLU MLP, RMSNorm, optionally tied embeddings.
* `ViT`       timm's VisionTransformer: conv patch embedding, class token, fused qkv through
              reshape -> permute -> unbind(0), pre-LN, GELU MLP.
* `Bert`      post-LN encoder, separate q/k/v, attention written out (matmul, scale, mask, softmax, matmul).
* `ResNet`    torchvision's bottleneck ResNet; ResNet(layers=(3, 4, 6, 3)) is ResNet50.
* `MobileNet` MobileNetV3-style inverted residuals: expand 1x1, depthwise 3x3, squeeze-excite, project 1x1.
* `ConvNeXt`  depthwise 7x7, LayerNorm2d (permute -> layer_norm -> permute), pointwise MLP as Linear, layer scale.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Conv1D(nn.Module):
    """transformers.pytorch_utils.Conv1D: a linear layer with its weight stored [in, out], run as addmm."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.02)
        self.bias = nn.Parameter(torch.zeros(nf))

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class GPT2Attention(nn.Module):
    def __init__(self, d: int, n_head: int, eager: bool = False):
        super().__init__()
        self.n_head, self.d, self.eager = n_head, d, eager
        self.c_attn, self.c_proj = Conv1D(3 * d, d), Conv1D(d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.d, dim=2)
        heads = lambda t: t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # noqa: E731
        q, k, v = heads(q), heads(k), heads(v)
        if self.eager:  # transformers' eager attention: the causal mask through torch.where
            scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(C // self.n_head)
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            scores = torch.where(causal, scores, torch.finfo(scores.dtype).min)
            y = torch.matmul(scores.softmax(-1), v)
        else:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))


def new_gelu(x):
    """transformers' NewGELUActivation (GPT-2's gelu_new), written out as it runs: several elementwise ops."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


class GPT2MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.c_fc, self.c_proj = Conv1D(4 * d, d), Conv1D(d, 4 * d)

    def forward(self, x):
        return self.c_proj(new_gelu(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, d: int, n_head: int, eager: bool = False):
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(d), GPT2Attention(d, n_head, eager)
        self.ln_2, self.mlp = nn.LayerNorm(d), GPT2MLP(d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, vocab: int = 50257, n_ctx: int = 1024, d: int = 768, n_layer: int = 12, n_head: int = 12,
                 eager: bool = False):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(vocab, d), nn.Embedding(n_ctx, d)
        self.h = nn.ModuleList(GPT2Block(d, n_head, eager) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as GPT-2's
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.01)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


class RMSNorm(nn.Module):
    def __init__(self, d: int, eps: float = 1e-6):
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(d)), eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class LlamaAttention(nn.Module):
    """transformers' LlamaAttention (eager): RoPE on q and k (pairs (i, i + d_head/2) rotate together),
    K/V heads repeated for their group of query heads, optional KV cache."""

    def __init__(self, d: int, n_head: int, n_kv_head: int, theta: float = 10000.0, enable_gqa: bool = False):
        super().__init__()
        self.n_head, self.n_kv, self.dh, self.enable_gqa = n_head, n_kv_head, d // n_head, enable_gqa
        self.q_proj = nn.Linear(d, n_head * self.dh, bias=False)
        self.k_proj = nn.Linear(d, n_kv_head * self.dh, bias=False)
        self.v_proj = nn.Linear(d, n_kv_head * self.dh, bias=False)
        self.o_proj = nn.Linear(n_head * self.dh, d, bias=False)
        self.register_buffer("inv_freq", 1.0 / theta ** (torch.arange(0, self.dh, 2).float() / self.dh),
                             persistent=False)

    def forward(self, x, past=None):
        B, T, _ = x.shape
        start = 0 if past is None else past[0].shape[2]
        q = self.q_proj(x).view(B, T, self.n_head, self.dh).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.n_kv, self.dh).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.n_kv, self.dh).transpose(1, 2)
        freqs = torch.outer(torch.arange(start, start + T, device=x.device).float(), self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos(), emb.sin()
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        cache = (k, v)
        group = self.n_head // self.n_kv
        if not self.enable_gqa:  # transformers' repeat_kv
            k, v = (t[:, :, None].expand(B, self.n_kv, group, *t.shape[2:]).reshape(B, self.n_head, *t.shape[2:])
                    for t in (k, v))
        mask = torch.ones(T, start + T, dtype=torch.bool, device=x.device).tril(start)  # causal, after the cache
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=self.enable_gqa)
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1)), cache


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.gate_proj, self.up_proj = nn.Linear(d, hidden, bias=False), nn.Linear(d, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaBlock(nn.Module):
    def __init__(self, d, n_head, n_kv_head, hidden, enable_gqa=False):
        super().__init__()
        self.input_layernorm = RMSNorm(d)
        self.self_attn = LlamaAttention(d, n_head, n_kv_head, enable_gqa=enable_gqa)
        self.post_attention_layernorm, self.mlp = RMSNorm(d), SwiGLU(d, hidden)

    def forward(self, x, past=None):
        a, cache = self.self_attn(self.input_layernorm(x), past)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class Llama(nn.Module):
    """forward(idx) -> logits. use_cache: the first half of the tokens fills a KV cache, the second half
    attends to it (the keys and values of earlier positions concatenated, as in generation)."""

    def __init__(self, vocab: int = 256, d: int = 64, n_layer: int = 2, n_head: int = 8, n_kv_head: int = 2,
                 hidden: int = 96, tie: bool = False, use_cache: bool = False, enable_gqa: bool = False):
        super().__init__()
        self.embed_tokens = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(LlamaBlock(d, n_head, n_kv_head, hidden, enable_gqa) for _ in range(n_layer))
        self.norm = RMSNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        if tie:
            self.lm_head.weight = self.embed_tokens.weight
        self.use_cache = use_cache

    def run(self, idx, past=None):
        x = self.embed_tokens(idx)
        caches = []
        for i, layer in enumerate(self.layers):
            x, cache = layer(x, None if past is None else past[i])
            caches.append(cache)
        return self.lm_head(self.norm(x)), caches

    def forward(self, idx):
        if not self.use_cache:
            return self.run(idx)[0]
        half = idx.shape[1] // 2
        first, cache = self.run(idx[:, :half])
        return torch.cat([first, self.run(idx[:, half:], cache)[0]], dim=1)


class ViTAttention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class ViTBlock(nn.Module):
    def __init__(self, d, n_head, mlp_ratio=4):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), ViTAttention(d, n_head)
        self.norm2 = nn.LayerNorm(d)
        self.fc1, self.act, self.fc2 = nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ViT(nn.Module):
    def __init__(self, image: int = 32, patch: int = 8, d: int = 48, depth: int = 2, n_head: int = 4,
                 classes: int = 10):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, d, patch, patch)
        self.cls_token = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, (image // patch) ** 2 + 1, d) * 0.02)
        self.blocks = nn.ModuleList(ViTBlock(d, n_head) for _ in range(depth))
        self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x)[:, 0])


class BertLayer(nn.Module):
    def __init__(self, d, n_head, ffn):
        super().__init__()
        self.n_head = n_head
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.attn_out, self.attn_norm = nn.Linear(d, d), nn.LayerNorm(d)
        self.intermediate, self.output, self.out_norm = nn.Linear(d, ffn), nn.Linear(ffn, d), nn.LayerNorm(d)

    def forward(self, x, mask):
        B, T, C = x.shape
        heads = lambda t: t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(C // self.n_head)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, C)
        x = self.attn_norm(x + self.attn_out(y))
        return self.out_norm(x + self.output(F.gelu(self.intermediate(x))))


class Bert(nn.Module):
    def __init__(self, vocab: int = 128, n_pos: int = 32, d: int = 32, n_layer: int = 2, n_head: int = 4,
                 ffn: int = 64, classes: int = 3):
        super().__init__()
        self.word, self.position, self.token_type = nn.Embedding(vocab, d), nn.Embedding(n_pos, d), nn.Embedding(2, d)
        self.emb_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(BertLayer(d, n_head, ffn) for _ in range(n_layer))
        self.pooler, self.classifier = nn.Linear(d, d), nn.Linear(d, classes)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.word(idx) + self.position(torch.arange(T, device=idx.device)) + self.token_type(torch.zeros_like(idx))
        x = self.emb_norm(x)
        mask = torch.ones_like(idx)
        for layer in self.layers:
            x = layer(x, mask)
        return self.classifier(torch.tanh(self.pooler(x[:, 0])))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int = 1):
        super().__init__()
        c_out = width * self.expansion
        self.conv1, self.bn1 = nn.Conv2d(c_in, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """torchvision's ResNet with bottleneck blocks; defaults are ResNet50 (25.6M parameters)."""

    def __init__(self, layers=(3, 4, 6, 3), width: int = 64, classes: int = 1000):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        c, stages = width, []
        for i, n in enumerate(layers):
            w = width * 2 ** i
            blocks = [Bottleneck(c, w, 1 if i == 0 else 2)] + [Bottleneck(w * 4, w) for _ in range(n - 1)]
            stages.append(nn.Sequential(*blocks))
            c = w * 4
        self.layer1, self.layer2, self.layer3, self.layer4 = (stages + [nn.Identity()] * 4)[:4]
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(c, classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SqueezeExcite(nn.Module):
    def __init__(self, c: int, squeeze: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)

    def forward(self, x):
        s = F.adaptive_avg_pool2d(x, 1)
        return x * F.hardsigmoid(self.fc2(F.relu(self.fc1(s))))


class InvertedResidual(nn.Module):
    def __init__(self, c_in: int, expand: int, c_out: int, stride: int = 1, se: bool = True):
        super().__init__()
        self.expand, self.bn1 = nn.Conv2d(c_in, expand, 1, bias=False), nn.BatchNorm2d(expand)
        self.dw = nn.Conv2d(expand, expand, 3, stride, 1, groups=expand, bias=False)
        self.bn2 = nn.BatchNorm2d(expand)
        self.se = SqueezeExcite(expand, max(8, expand // 4)) if se else None
        self.project, self.bn3 = nn.Conv2d(expand, c_out, 1, bias=False), nn.BatchNorm2d(c_out)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        y = F.hardswish(self.bn1(self.expand(x)))
        y = F.hardswish(self.bn2(self.dw(y)))
        if self.se is not None:
            y = self.se(y)
        y = self.bn3(self.project(y))
        return x + y if self.residual else y


class MobileNet(nn.Module):
    """blocks: (expand, c_out, stride, squeeze-excite) per inverted residual."""

    def __init__(self, stem: int = 8, blocks=((16, 8, 1, True), (24, 12, 2, False), (36, 12, 1, True)),
                 head: int = 32, classes: int = 10):
        super().__init__()
        self.stem, self.stem_bn = nn.Conv2d(3, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem)
        c, layers = stem, []
        for expand, c_out, stride, se in blocks:
            layers.append(InvertedResidual(c, expand, c_out, stride, se))
            c = c_out
        self.blocks = nn.Sequential(*layers)
        self.head_conv, self.head_bn = nn.Conv2d(c, head, 1, bias=False), nn.BatchNorm2d(head)
        self.classifier = nn.Linear(head, classes)

    def forward(self, x):
        x = self.blocks(F.hardswish(self.stem_bn(self.stem(x))))
        x = F.hardswish(self.head_bn(self.head_conv(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


class LayerNorm2d(nn.LayerNorm):
    """timm's LayerNorm2d: channels-first input, normalised over channels."""

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.dwconv = nn.Conv2d(d, d, 7, padding=3, groups=d)
        self.norm = nn.LayerNorm(d)
        self.pwconv1, self.act, self.pwconv2 = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)
        self.gamma = nn.Parameter(torch.full((d,), 1e-1))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + y.mul(self.gamma.reshape(1, -1, 1, 1))  # timm's layer scale, channels first


class ConvNeXt(nn.Module):
    def __init__(self, dims=(16, 32), depths=(1, 1), classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0]))
        stages = []
        for i, (d, n) in enumerate(zip(dims, depths)):
            down = [] if i == 0 else [LayerNorm2d(dims[i - 1]), nn.Conv2d(dims[i - 1], d, 2, 2)]
            stages.append(nn.Sequential(*down, *(ConvNeXtBlock(d) for _ in range(n))))
        self.stages = nn.Sequential(*stages)
        self.norm, self.head = nn.LayerNorm(dims[-1]), nn.Linear(dims[-1], classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.head(self.norm(x.mean((2, 3))))


def example_input(model: nn.Module, batch: int = 2, tokens: int = 8, image: int = 32) -> torch.Tensor:
    """An input each zoo model accepts: token ids for the language models, images for the rest."""
    if isinstance(model, (GPT2, Llama, Bert)):
        vocab = (model.wte if isinstance(model, GPT2)
                 else model.embed_tokens if isinstance(model, Llama) else model.word)
        return torch.randint(0, vocab.num_embeddings, (batch, tokens))
    return torch.randn(batch, 3, image, image)
