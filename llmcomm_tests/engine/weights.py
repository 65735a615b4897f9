"""Seeded random weights, identical for every layout.

Each 2-D tensor is drawn tile by tile (``TILE`` x ``TILE`` blocks of the full [out, in] matrix), each
tile from its own generator seeded by (seed, tensor name, tile row, tile column).  A rank therefore
draws only the tiles its shard touches — a TP rank about 1/t of every matrix, not all of it — and
every layout, the single-process reference and the checkpoint see the same numbers: a shard is
exactly the slice of the full tensor.  1-D tensors (norms) are small and drawn whole.
Names follow Hugging Face's Llama state dict, so the reference test loads them unchanged.
"""

from __future__ import annotations

import zlib

import torch

from llmcomm_tests.engine.config import EngineShape
from llmcomm_tests.engine.layout import Layout, kv_heads_of

TILE = 128  # rows and columns of one seeded tile: one head's rows at head_dim 128, so a shard draws little beyond itself


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
    if len(dims) == 1:
        gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}".encode()))
        return 1.0 + 0.1 * torch.randn(dims, generator=gen)
    return weight_block(name, dims, seed, range(dims[0]), range(dims[1]))


def weight_block(name: str, dims: tuple[int, int], seed: int, rows: range, cols: range) -> torch.Tensor:
    """``full_weight(name, dims, seed)[rows, cols]`` of a matrix, drawing only the tiles it touches."""
    if rows.stop > dims[0] or cols.stop > dims[1] or rows.start < 0 or cols.start < 0:
        raise ValueError(f"{name}: block [{rows.start}:{rows.stop}, {cols.start}:{cols.stop}] outside {dims}")
    out = torch.empty(len(rows), len(cols))
    for ti in range(rows.start // TILE, -(-rows.stop // TILE)):
        for tj in range(cols.start // TILE, -(-cols.stop // TILE)):
            r0, c0 = ti * TILE, tj * TILE
            gen = torch.Generator().manual_seed(zlib.crc32(f"{seed}:{name}:{ti}:{tj}".encode()))
            tile = torch.randn(min(TILE, dims[0] - r0), min(TILE, dims[1] - c0), generator=gen)
            lo_r, hi_r = max(rows.start, r0), min(rows.stop, r0 + TILE)
            lo_c, hi_c = max(cols.start, c0), min(cols.stop, c0 + TILE)
            out[lo_r - rows.start:hi_r - rows.start, lo_c - cols.start:hi_c - cols.start] = \
                tile[lo_r - r0:hi_r - r0, lo_c - c0:hi_c - c0]
    return out if name.endswith("embed_tokens.weight") else out / dims[1] ** 0.5


def full_state_dict(shape: EngineShape, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the engine (for the single-process reference and the HF comparison)."""
    state = {n: full_weight(n, dims, seed) for n, dims in weight_shapes(shape).items()}
    for layer in range(shape.n_layers):
        state.update({n: full_weight(n, dims, seed) for n, dims in weight_shapes(shape, layer).items()})
    return state


def _chunk(size: int, n: int, i: int) -> range:
    """The i-th of ``tensor.chunk(n)`` along a dim of ``size``."""
    step = -(-size // n)
    return range(min(size, i * step), min(size, (i + 1) * step))


def shard_range(name: str, dims: tuple[int, ...], shape: EngineShape, tp: int, tp_rank: int) -> tuple[range, range]:
    """(rows, cols) of a matrix a TP rank holds (the table in engine/parallel.py)."""
    every_row, every_col = range(dims[0]), range(dims[1])
    if name.endswith(("embed_tokens.weight", "lm_head.weight", "q_proj.weight", "gate_proj.weight",
                      "up_proj.weight")):
        return _chunk(dims[0], tp, tp_rank), every_col
    if name.endswith(("k_proj.weight", "v_proj.weight")):
        kv = kv_heads_of(shape, tp, tp_rank)
        return range(kv.start * shape.head_dim, kv.stop * shape.head_dim), every_col
    if name.endswith(("o_proj.weight", "down_proj.weight")):
        return every_row, _chunk(dims[1], tp, tp_rank)
    return every_row, every_col


def shard_blocks(shape: EngineShape, layout: Layout, rank: int) -> dict[str, tuple[tuple[int, ...], range, range]]:
    """name -> (full dims, rows, cols) of every tensor one rank holds: its stage's layers, its TP
    slice of each; a 1-D tensor (drawn whole) has one column."""
    stage, tp_rank = layout.stage_of(rank), layout.tp_rank_of(rank)
    names = {}
    if stage == 0:
        names.update({k: v for k, v in weight_shapes(shape).items() if "embed" in k})
    if stage == layout.pp - 1:
        names.update({k: v for k, v in weight_shapes(shape).items() if "embed" not in k})
    for layer in layout.stage_layers(shape.n_layers)[stage]:
        names.update(weight_shapes(shape, layer))
    return {name: (dims, range(dims[0]), range(1)) if len(dims) == 1
            else (dims, *shard_range(name, dims, shape, layout.tp, tp_rank)) for name, dims in names.items()}


def drawn_elements(shape: EngineShape, layout: Layout, rank: int) -> int:
    """Random numbers ``rank_shard`` draws for one rank: every tile its blocks touch, whole."""
    total = 0
    for dims, rows, cols in shard_blocks(shape, layout, rank).values():
        if len(dims) == 1:
            total += dims[0]
        else:
            total += _tiled(rows, dims[0]) * _tiled(cols, dims[1])
    return total


def _tiled(span: range, size: int) -> int:
    """Rows (columns) of the whole tiles ``span`` touches along a dim of ``size``."""
    return min(-(-span.stop // TILE) * TILE, size) - span.start // TILE * TILE


def rank_shard(shape: EngineShape, layout: Layout, rank: int, seed: int) -> dict[str, torch.Tensor]:
    """The fp32 tensors one rank holds (``shard_blocks``), drawn without drawing the rest."""
    shard = {}
    for name, (dims, rows, cols) in shard_blocks(shape, layout, rank).items():
        shard[name] = full_weight(name, dims, seed) if len(dims) == 1 else weight_block(name, dims, seed, rows, cols)
    return shard
