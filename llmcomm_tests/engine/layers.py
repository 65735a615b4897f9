"""Per-rank math of a Llama-style decoder: RMSNorm, rotary embeddings, GQA attention, SwiGLU.

Everything here works on whatever shard a rank holds; communication lives in ``parallel.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def rotary_tables(head_dim: int, max_len: int, theta: float, dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin of shape [max_len, head_dim], Hugging Face's non-interleaved convention."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32, device=device), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [b, heads, s, d]; cos/sin: [s, d]."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


class KVCache:
    """Preallocated keys/values of one layer's local KV heads: [b, kv_local, max_len, d]."""

    def __init__(self, batch: int, kv_heads: int, max_len: int, head_dim: int, dtype, device):
        self.k = torch.zeros(batch, kv_heads, max_len, head_dim, dtype=dtype, device=device)
        self.v = torch.zeros_like(self.k)

    def update(self, pos: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = pos + k.shape[2]
        self.k[:, :, pos:end] = k
        self.v[:, :, pos:end] = v
        return self.k[:, :, :end], self.v[:, :, :end]


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_index: torch.Tensor, causal: bool) -> torch.Tensor:
    """q: [b, hq, s, d]; k, v: [b, hkv, T, d]; kv_index maps each local q head to its local KV head."""
    k = k.index_select(1, kv_index)
    v = v.index_select(1, kv_index)
    return F.scaled_dot_product_attention(q, k, v, is_causal=causal)


def swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """down(silu(gate x) * up x) on this rank's ffn slice: a partial sum under TP."""
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)
