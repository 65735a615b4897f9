"""Seeded random weights, identical for every layout.

Each full tensor is drawn from its own generator seeded by (seed, tensor name), so a rank builds
only the tensors of its stage and slices its shard, and every layout sees the same numbers.
Names follow Hugging Face's Llama state dict, so the reference test loads them unchanged.
"""

from __future__ import annotations

import zlib

import torch

from llmcomm_tests.engine.config import EngineShape


def weight_shapes(shape: EngineShape, layer: int | None = None) -> dict[str, tuple[int, ...]]:
    """Full (unsharded) tensor shapes: the globals when ``layer`` is None, else that layer's."""
    h, d, f = shape.hidden, shape.head_dim, shape.ffn
    if layer is None:
        return {
            "model.embed_tokens.weight": (shape.vocab, h),
            "model.norm.weight": (h,),
            "lm_head.weight": (shape.vocab, h),
        }
    p = f"model.layers.{layer}."
    return {
        p + "input_layernorm.weight": (h,),
        p + "self_attn.q_proj.weight": (shape.n_heads * d, h),
        p + "self_attn.k_proj.weight": (shape.n_kv_heads * d, h),
        p + "self_attn.v_proj.weight": (shape.n_kv_heads * d, h),
        p + "self_attn.o_proj.weight": (h, shape.n_heads * d),
        p + "post_attention_layernorm.weight": (h,),
        p + "mlp.gate_proj.weight": (f, h),
        p + "mlp.up_proj.weight": (f, h),
        p + "mlp.down_proj.weight": (h, f),
    }


def full_weight(name: str, dims: tuple[int, ...], seed: int) -> torch.Tensor:
    """One full fp32 tensor. Norm weights sit near 1; matrices are scaled by 1/sqrt(fan_in) so
    activations stay O(1) and greedy argmax has clear margins (layouts must agree on tokens)."""
    gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
    if len(dims) == 1:
        return 1.0 + 0.1 * torch.randn(dims, generator=gen)
    if name.endswith("embed_tokens.weight"):
        return torch.randn(dims, generator=gen)
    return torch.randn(dims, generator=gen) / dims[1] ** 0.5


def full_state_dict(shape: EngineShape, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the engine (for the single-process reference and the HF comparison)."""
    state = {n: full_weight(n, dims, seed) for n, dims in weight_shapes(shape).items()}
    for layer in range(shape.n_layers):
        state.update({n: full_weight(n, dims, seed) for n, dims in weight_shapes(shape, layer).items()})
    return state
