"""vLLM's and transformers' data-plane volume, derived from our engine's enumeration
(``volume.forward_ops``): each framework's logical ops are ours, transformed.

vLLM
----

vLLM (V1 engine, offline ``LLM``, multiprocessing executor; ``vllm/distributed/parallel_state.py``,
``model_executor/layers/logits_processor.py``, ``v1/worker/gpu_worker.py``) moves the same
activations as our engine, with these differences, each applied to our logical ops below:

1. Logits: ``LogitsProcessor._gather_logits`` all-gathers (``Platform.use_all_gather()`` is True on
   every platform in V1) the last-position logits [b, v/t] over the last stage's TP group, so every
   TP rank samples itself: an ``all_gather`` of b·(v/t) elements per rank (wire (t−1)·m on every
   rank) where our engine gathers to one sampler (wire m off the root, 0 at the root).
2. No next-input-id broadcast inside stage 0's TP group (our ``tokens.broadcast``): the scheduler
   sends every step's input ids to every worker in its RPC message (control plane: vLLM's
   shared-memory message queue, recorded apart as ``mq_read`` records, not in this model).
3. No sampled ids back to global rank 0 under PP (our ``pp.tokens``): the last stage's worker
   returns its output to the engine core over the response message queue (control plane).
4. PP boundaries: ``isend_tensor_dict``/``irecv_tensor_dict`` of {hidden_states, residual}, each
   [b·s, h], with the all-gather optimisation under TP (each TP rank sends its 1/t slice, the
   receiving TP group all-gathers): the same bytes as ours.  The tensor dict's metadata is pickled
   over the CPU group (or inside the shared-memory message on CPU): control plane.
5. Activations are [b·s, h] (tokens flattened) instead of [b, s, h]: same element counts.

transformers (5.x, ``DistributedConfig(tp_size=t)``, Llama's ``base_model_tp_plan``)
------------------------------------------------------------------------------------
6. The embedding follows the model's effective TP plan, which changed between releases: 5.19
   leaves ``embed_tokens`` replicated (no rule: no embedding all-reduce); later releases
   (``distributed/mixin.py``, seen in 5.24) add ``embed_tokens: embedding_rowwise`` (vocab-parallel:
   one all-reduce, as ours).  The adapter reports the plan it ran with (``framework.tp_plan``) and
   the model takes the embedding rule from it; every other op is fixed here.
7. ``lm_head`` is ``colwise_gather_output``: an all-gather of the last position's logits [b, 1, v/t]
   (``logits_to_keep=1``), as vLLM's (difference 1); every rank takes the argmax itself, so there
   is no token broadcast (difference 2).  o_proj / down_proj are ``rowwise``: one all-reduce each,
   as ours.  Pipeline parallel is not run (the adapter refuses it).

Byte conventions are ours (docs/communication.md): ``bytes`` = the call's payload on this rank,
``wire_bytes`` = what a ring algorithm would put on the wire.  vLLM's CPU shared-memory
collectives are not rings; the convention keeps frameworks comparable.
"""

from __future__ import annotations

from dataclasses import replace

from llmcomm_tests.engine.config import EngineShape
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.analytic.volume import Call, LogicalOp, forward_kinds, volume_rows

FRAMEWORKS = ("ours", "vllm", "transformers")
# Sites of ours with no data-plane op in the framework.
DROPPED_SITES = {
    "vllm": ("tokens.broadcast", "pp.tokens"),  # control plane in vLLM (differences 2, 3)
    "transformers": ("tokens.broadcast", "pp.tokens"),  # difference 7
}


def embedding_sharded(tp_plan: dict | None) -> bool:
    """Whether a transformers TP plan shards the input embedding (difference 6)."""
    return any(key.split(".")[-1] == "embed_tokens" for key in (tp_plan or {}))


def framework_op(framework: str, op: LogicalOp, tp_plan: dict | None = None) -> LogicalOp | None:
    """Our logical op → the framework's (None where it has no data-plane op)."""
    if op.site in DROPPED_SITES[framework]:
        return None
    if framework == "transformers" and op.site == "embed" and not embedding_sharded(tp_plan):
        return None
    if op.op == "gather" and op.site == "lm_head":  # difference 1
        t = op.group_size
        calls = tuple(Call(c.rank, "all_gather", op.bytes, (t - 1) * op.bytes) for c in op.calls)
        return replace(op, op="all_gather", calls=calls)
    return op


def framework_forward_kinds(framework: str, shape: EngineShape, layout: Layout, batch: int, prompt_len: int,
                            gen_len: int, dtype: str = "fp32", tp_plan: dict | None = None):
    """``[(phase, forwards, the framework's logical ops of one)]``, as ``volume.forward_kinds``."""
    out = []
    for phase, n, ops in forward_kinds(shape, layout, batch, prompt_len, gen_len, dtype):
        mapped = [framework_op(framework, op, tp_plan) for op in ops]
        out.append((phase, n, [op for op in mapped if op is not None]))
    return out


def predict_for(framework: str, shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int,
                dtype: str = "fp32", tp_plan: dict | None = None) -> list[dict]:
    """Rows ``{op, phase, site, count, bytes, wire_bytes}`` summed over ranks for ``framework``'s data
    plane, as ``volume.predict_volume`` (which it equals for ``ours``).  ``tp_plan``: the TP plan
    transformers reported running with (its embedding rule; see difference 6)."""
    if framework == "ours":
        from llmcomm_tests.analytic.volume import predict_volume

        return predict_volume(shape, layout, batch, prompt_len, gen_len, dtype)
    if framework not in DROPPED_SITES:
        raise ValueError(f"unknown framework {framework!r}; known: {', '.join(FRAMEWORKS)}")
    return volume_rows(framework_forward_kinds(framework, shape, layout, batch, prompt_len, gen_len, dtype,
                                               tp_plan))

