"""The communication contract: the names the engine speaks in and the model predicts in.

Vocabulary (used the same way in every module):

* **op** – the recorded name of one communication operation: ``all_reduce``, ``all_gather``,
  ``reduce_scatter``, ``all_to_all``, ``broadcast``, ``gather``, ``scatter``, ``reduce``, ``send``,
  ``recv``, ``barrier``.  Several torch entry points carry one op (``allreduce``,
  ``all_gather_single``, ``_allgather_base`` on older torch, ``gloo:all_reduce`` in the profiler…):
  :data:`PG_METHODS`, :data:`FUNCTIONAL_OPS` and :data:`PROFILER_EVENTS` map each to its op.
* **site** – where the engine issued an op: ``embed``, ``layer3.attn.o_proj``,
  ``layer3.mlp.down_proj``, ``pp.boundary1``, ``lm_head``, ``pp.tokens``, ``tokens.broadcast``.
  Built only by the site builders below, so the engine and the analytic model cannot drift apart.
* **site class** – a site without its layer index or stage number (``attn``, ``pp.boundary``): the
  key volume rows, checks and faults use.
* **latency op** – the α-β model's name: the ops above, with ``send``/``recv`` one ``send_recv``.
* **bytes** – the payload on this rank; **wire bytes** – what this rank transmits under ring
  algorithms (:func:`wire_bytes`); **bus factor** – nccl-tests' busbw/algbw (:func:`bus_factor`).

The analytic volume model keeps its own byte formulas (``analytic/volume.py``): only the names come
from here, so the exact volume check stays independent of the recorder.  No torch here.
"""

from __future__ import annotations

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "broadcast", "gather", "scatter", "reduce",
       "send", "recv", "barrier")
# Ops a spec's per-op budget or tolerance, or a planted fault, may name.
BUDGET_OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "gather", "send", "recv")
# What the α-β model times; the rest (barrier, all_to_all, scatter, reduce) it does not.
LATENCY_OPS = ("all_reduce", "all_gather", "reduce_scatter", "broadcast", "gather", "send_recv")
POINT_TO_POINT = ("send", "recv")

# ProcessGroup method → (op, which argument holds this rank's payload).  Every eager
# torch.distributed call reaches one of these; the underscored ones are what older torch releases
# (and some frameworks, directly) call for the tensor variants.
PG_METHODS: dict[str, tuple[str, str | None]] = {
    "allreduce": ("all_reduce", "tensors"),
    "allreduce_coalesced": ("all_reduce", "tensors"),
    "allgather": ("all_gather", "input_list"),
    "all_gather_single": ("all_gather", "input_single"),
    "_allgather_base": ("all_gather", "input_single"),
    "allgather_coalesced": ("all_gather", "input_list"),
    "all_gather_single_coalesced": ("all_gather", "input_list"),
    "allgather_into_tensor_coalesced": ("all_gather", "input_list"),
    "gather": ("gather", "input_list"),
    "scatter": ("scatter", "output_list"),
    "broadcast": ("broadcast", "tensors"),
    "reduce": ("reduce", "tensors"),
    "reduce_scatter": ("reduce_scatter", "input_lists"),
    "reduce_scatter_single": ("reduce_scatter", "input_single"),
    "_reduce_scatter_base": ("reduce_scatter", "input_single"),
    "reduce_scatter_single_coalesced": ("reduce_scatter", "input_list"),
    "reduce_scatter_tensor_coalesced": ("reduce_scatter", "input_list"),
    "alltoall": ("all_to_all", "input_list"),
    "all_to_all_single": ("all_to_all", "input_single"),
    "alltoall_base": ("all_to_all", "input_single"),
    "send": ("send", "tensors"),
    "recv": ("recv", "tensors"),
    "recv_anysource": ("recv", "tensors"),
    "barrier": ("barrier", None),
}

# _c10d_functional op (what DTensor issues) → (op, index of its group-name argument)
FUNCTIONAL_OPS: dict[str, tuple[str, int]] = {
    "all_reduce": ("all_reduce", 2),
    "all_reduce_": ("all_reduce", 2),
    "all_gather_into_tensor": ("all_gather", 2),
    "all_gather_into_tensor_out": ("all_gather", 2),
    "reduce_scatter_tensor": ("reduce_scatter", 3),
    "all_to_all_single": ("all_to_all", 3),
    "broadcast": ("broadcast", 2),
    "broadcast_": ("broadcast", 2),
}

# Backend profiler event (after the "gloo:" / "nccl:" prefix) → op.  gloo names its events after the
# op; ProcessGroupNCCL after the ProcessGroup method (``nccl:all_reduce``, ``nccl:_all_gather_base``,
# ``nccl:_reduce_scatter_base``, ``nccl:all_gather_into_tensor_coalesced`` …).
PROFILER_EVENTS: dict[str, str] = {
    "all_reduce": "all_reduce", "allreduce": "all_reduce", "all_reduce_coalesced": "all_reduce",
    "all_gather": "all_gather", "_allgather_base": "all_gather", "_all_gather_base": "all_gather",
    "all_gather_into_tensor": "all_gather", "all_gather_into_tensor_coalesced": "all_gather",
    "reduce_scatter": "reduce_scatter", "_reduce_scatter_base": "reduce_scatter",
    "reduce_scatter_tensor_coalesced": "reduce_scatter",
    "gather": "gather", "scatter": "scatter", "broadcast": "broadcast", "reduce": "reduce",
    "all_to_all": "all_to_all", "all_to_allv": "all_to_all",
    "send": "send", "recv": "recv",
}


def methods_of(op: str) -> tuple[str, ...]:
    """The ProcessGroup methods that carry ``op`` (a fault on it patches all of them)."""
    return tuple(m for m, (o, _) in PG_METHODS.items() if o == op)


def latency_op(op: str) -> str | None:
    """The α-β model's name for a recorded op, or None when the model does not time it."""
    if op in POINT_TO_POINT:
        return "send_recv"
    return op if op in LATENCY_OPS else None


# -- sites ----------------------------------------------------------------------------------------

EMBED = "embed"
LM_HEAD = "lm_head"
PP_TOKENS = "pp.tokens"  # sampled token ids from the last stage back to stage 0
TOKENS_BROADCAST = "tokens.broadcast"  # stage 0's TP leader to its TP peers
SITE_CLASSES = (EMBED, "attn", "mlp", "pp.boundary", LM_HEAD, PP_TOKENS, TOKENS_BROADCAST)


def attn_out(layer: int) -> str:
    """The row-parallel attention output projection's all-reduce."""
    return f"layer{layer}.attn.o_proj"


def mlp_out(layer: int) -> str:
    """The row-parallel MLP down projection's all-reduce."""
    return f"layer{layer}.mlp.down_proj"


def pp_boundary(stage: int) -> str:
    """Activations from stage ``stage - 1`` to stage ``stage``."""
    return f"pp.boundary{stage}"


def site_class(site: str) -> str:
    """``layer3.attn.o_proj`` → ``attn``, ``pp.boundary2`` → ``pp.boundary``, ``embed`` → ``embed``."""
    if site.startswith("layer"):
        return site.split(".", 2)[1]
    return site.rstrip("0123456789")


# -- bytes ----------------------------------------------------------------------------------------


def wire_bytes(op: str, nbytes: int, group_size: int, group_rank: int, root: int) -> int:
    """Bytes this rank transmits under ring algorithms (the table in docs/communication.md)."""
    t = group_size
    if op == "all_reduce":
        return 2 * (t - 1) * nbytes // t
    if op == "all_gather":
        return (t - 1) * nbytes
    if op in ("reduce_scatter", "all_to_all"):
        return (t - 1) * nbytes // t
    if op == "gather":
        return 0 if group_rank == root else nbytes
    if op == "broadcast":
        return nbytes if group_rank == root else 0
    if op == "send":
        return nbytes
    return 0  # recv, barrier


def bus_factor(op: str, group_size: int) -> float:
    """nccl-tests' busbw / algbw (its doc/PERFORMANCE.md): all_reduce 2(n−1)/n; all_gather,
    reduce_scatter, all_to_all, gather and scatter (n−1)/n; broadcast, reduce and send_recv 1."""
    n = group_size
    if op == "all_reduce":
        return 2 * (n - 1) / n
    if op in ("all_gather", "reduce_scatter", "all_to_all", "gather", "scatter"):
        return (n - 1) / n
    return 1.0
