"""Seconds a rank spends drawing its weights: its own shard vs the full tensors it used to draw.

    python benchmarks/weight_shard_time.py [--engine llama-3.1-8b] [--tp 8] [--layers 1] [--ranks 0,7]

One thread, as a rank runs.  Only ``--layers`` of the preset's layers are drawn (plus embedding,
norm and lm_head, which every TP rank of a one-stage layout holds); the per-layer time is
extrapolated to the preset's depth.  "full tensors" is what every rank did before: draw each whole
tensor of its stage, then slice.
"""

import argparse
import time

import torch

from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.weights import full_weight, shard_range, weight_block, weight_shapes


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared host the CPU time is what the draw
    costs on an idle core (one thread)."""
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def draw(shape, names: dict, tp: int, rank: int | None) -> None:
    """Draw ``names`` as TP rank ``rank`` holds them, or whole (``rank`` None: the old way)."""
    for name, dims in names.items():
        if rank is None or len(dims) == 1:
            full_weight(name, dims, 0)
        else:
            weight_block(name, dims, 0, *shard_range(name, dims, shape, tp, rank))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--engine", default="llama-3.1-8b")
    parser.add_argument("--tp", type=int, default=8)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--ranks", default="0,7")
    args = parser.parse_args()
    torch.set_num_threads(1)
    shape = PRESETS[args.engine]
    globals_, layers = weight_shapes(shape), {}
    for layer in range(args.layers):
        layers.update(weight_shapes(shape, layer))
    print(f"{args.engine} tp={args.tp}: embedding, norm, lm_head and {args.layers} of {shape.n_layers} layers, "
          f"1 thread; seconds as CPU (wall)")
    who = [int(r) for r in args.ranks.split(",")] + [None]
    for rank in who:
        g_wall, g_cpu = timed(lambda: draw(shape, globals_, args.tp, rank))
        l_wall, l_cpu = timed(lambda: draw(shape, layers, args.tp, rank))
        scale = shape.n_layers / args.layers
        label = "full tensors (before)" if rank is None else f"rank {rank} shard"
        print(f"  {label:<22} globals {g_cpu:6.2f} ({g_wall:6.2f})  per layer {l_cpu / args.layers:6.3f} "
              f"({l_wall / args.layers:6.3f})  -> {g_cpu + l_cpu * scale:6.1f} ({g_wall + l_wall * scale:6.1f}) "
              f"s for {shape.n_layers} layers")


if __name__ == "__main__":
    main()
