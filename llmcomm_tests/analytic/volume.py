"""Communication volume of one request batch, in closed form (docs/communication.md, exactly).

The engine's ops are enumerated here per *forward kind* — the prefill forward (s = prompt_len) and
the decode forward (s = 1), which repeats gen_len − 1 times identically — in the engine's issue
order, as *logical ops* (one collective over its group, one send/recv pair).  Every public view is
derived from that one enumeration, so they cannot disagree with each other:

* ``predict_volume``   – calls summed over ranks, keyed (op, phase, site class): the recorder's view.
* ``per_rank_volume``  – the same per global rank.
* ``op_instances``     – logical ops with group size, message size and count: the latency model's view.
* ``study_totals``     – the study's per-GPU element totals next to ours, term by term
  (docs/communication.md).

Byte rules (docs/communication.md): M = numel · element size of the call on this rank;
all_reduce wire = 2(t−1)·M // t per call (integer division per call, then × count); all_gather wire
= (t−1)·m; gather wire = m off the root, 0 at the root; broadcast wire = M at the root, 0 elsewhere;
send wire = M, recv wire = 0.  Token ids are int64: 8 bytes each, whatever the engine dtype.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction

from llmcomm_tests.engine.config import DTYPE_BYTES, EngineShape
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.core import contract
from llmcomm_tests.core.contract import site_class

TOKEN_BYTES = 8  # int64 token ids (next-input broadcast, sampled ids back to stage 0)

ROW_KEYS = ("op", "phase", "site", "count", "bytes", "wire_bytes")


@dataclass(frozen=True)
class Call:
    """One op as one rank issues it."""

    rank: int
    op: str  # all_reduce | all_gather | gather | broadcast | send | recv
    bytes: int
    wire_bytes: int


@dataclass(frozen=True)
class LogicalOp:
    """One collective over its group, or one send/recv pair (``send_recv``), possibly issued by
    ``parallel`` identical disjoint pairs at once (the t slice transfers of a hybrid boundary)."""

    op: str  # all_reduce | all_gather | gather | broadcast | send_recv
    site: str  # full site name, e.g. "layer3.attn.o_proj"
    group_size: int  # ranks taking part in one instance (2 for send_recv)
    ranks: tuple[int, ...]  # every global rank taking part (all parallel pairs included)
    parallel: int  # concurrent identical instances (t for hybrid boundary slices, else 1)
    bytes: int  # per-rank payload of one call (the contract's ``bytes``)
    msg_bytes: int  # size the α-β formula takes (nccl-tests convention, see analytic/__init__)
    calls: tuple[Call, ...]


def _check(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int, dtype: str) -> int:
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; known: {', '.join(DTYPE_BYTES)}")
    if batch < 1 or prompt_len < 1 or gen_len < 1:
        raise ValueError("batch, prompt_len and gen_len must be >= 1")
    layout.validate(shape)
    return DTYPE_BYTES[dtype]


def forward_ops(shape: EngineShape, layout: Layout, batch: int, seq: int, phase: str, elem: int) -> list[LogicalOp]:
    """Logical ops of one forward of ``seq`` tokens per request, in the engine's issue order."""
    t, p, b = layout.tp, layout.pp, batch
    act = b * seq * shape.hidden * elem  # one [b, s, h] activation
    ops: list[LogicalOp] = []

    def all_reduce(site: str, group: list[int]) -> None:
        wire = 2 * (t - 1) * act // t
        ops.append(LogicalOp("all_reduce", site, t, tuple(group), 1, act, act,
                             tuple(Call(r, "all_reduce", act, wire) for r in group)))

    def send_recv(site: str, pairs: list[tuple[int, int]], nbytes: int) -> None:
        calls = []
        for src, dst in pairs:
            calls += [Call(src, "send", nbytes, nbytes), Call(dst, "recv", nbytes, 0)]
        ranks = tuple(sorted({r for pair in pairs for r in pair}))
        ops.append(LogicalOp("send_recv", site, 2, ranks, len(pairs), nbytes, nbytes, tuple(calls)))

    # 1. Decode only: stage 0's TP group learns the next input ids from global rank 0.
    if phase == "decode" and t > 1:
        group = layout.tp_group(0)
        ops.append(LogicalOp("broadcast", contract.TOKENS_BROADCAST, t, tuple(group), 1, TOKEN_BYTES * b,
                             TOKEN_BYTES * b,
                             tuple(Call(r, "broadcast", TOKEN_BYTES * b, TOKEN_BYTES * b if r == 0 else 0)
                                   for r in group)))
    for stage, layers in enumerate(layout.stage_layers(shape.n_layers)):
        group = layout.tp_group(stage)
        if stage == 0:
            if t > 1:
                all_reduce(contract.EMBED, group)  # 2. vocab-parallel embedding
        else:
            # 5 / 5'. Boundary `stage` (stage−1 → stage): hidden_states, then residual.
            site = contract.pp_boundary(stage)
            pairs = [(layout.rank_of(stage - 1, r), layout.rank_of(stage, r)) for r in range(t)]
            part = act // t  # t = 1: the whole tensor; t > 1: this tp_rank's 1/t slice
            send_recv(site, pairs, part)
            send_recv(site, pairs, part)
            if t > 1:
                for _ in range(2):  # the receiving stage all-gathers hidden_states, then residual
                    ops.append(LogicalOp("all_gather", site, t, tuple(group), 1, part, t * part,
                                         tuple(Call(r, "all_gather", part, (t - 1) * part) for r in group)))
        if t > 1:
            for j in layers:  # 3, 4. row-parallel o_proj and down_proj
                all_reduce(contract.attn_out(j), group)
                all_reduce(contract.mlp_out(j), group)
    # 6. Last stage: last-position logits (v/t per rank) gathered to its tp_rank 0, the sampler.
    sampler = layout.rank_of(p - 1, 0)
    if t > 1:
        group = layout.tp_group(p - 1)
        m = b * (shape.vocab // t) * elem
        ops.append(LogicalOp("gather", contract.LM_HEAD, t, tuple(group), 1, m, t * m,
                             tuple(Call(r, "gather", m, 0 if r == sampler else m) for r in group)))
    # 7. Sampled ids back to global rank 0, every forward (prefill included).
    if p > 1:
        send_recv(contract.PP_TOKENS, [(sampler, 0)], TOKEN_BYTES * b)
    return ops


def forward_kinds(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int,
                  dtype: str = "fp32") -> list[tuple[str, int, list[LogicalOp]]]:
    """``[(phase, how many such forwards, logical ops of one)]`` for one request batch."""
    elem = _check(shape, layout, batch, prompt_len, gen_len, dtype)
    kinds = [("prefill", 1, forward_ops(shape, layout, batch, prompt_len, "prefill", elem))]
    if gen_len > 1:
        kinds.append(("decode", gen_len - 1, forward_ops(shape, layout, batch, 1, "decode", elem)))
    return kinds


def _rows(table: dict, key_names: tuple[str, ...]) -> list[dict]:
    rows = [dict(zip(key_names, key), count=c, bytes=nb, wire_bytes=w) for key, (c, nb, w) in table.items()]
    return sorted(rows, key=lambda r: tuple(r[k] for k in key_names))


def predict_volume(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int,
                   dtype: str = "fp32") -> list[dict]:
    """Rows ``{op, phase, site, count, bytes, wire_bytes}``: calls summed over ranks for one request
    batch, site = site class, sorted by (op, phase, site).  Empty for a single rank."""
    return volume_rows(forward_kinds(shape, layout, batch, prompt_len, gen_len, dtype))


def volume_rows(kinds) -> list[dict]:
    """The calls of ``(phase, forwards, logical ops)`` kinds summed per (op, phase, site class)."""
    table: dict = defaultdict(lambda: [0, 0, 0])
    for phase, n, ops in kinds:
        for op in ops:
            for call in op.calls:
                acc = table[(call.op, phase, site_class(op.site))]
                acc[0] += n
                acc[1] += n * call.bytes
                acc[2] += n * call.wire_bytes
    return _rows(table, ("op", "phase", "site"))


def per_rank_volume(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int,
                    dtype: str = "fp32") -> list[dict]:
    """``predict_volume`` per global rank: rows ``{rank, op, phase, site, count, bytes, wire_bytes}``
    sorted by (rank, op, phase, site)."""
    table: dict = defaultdict(lambda: [0, 0, 0])
    for phase, n, ops in forward_kinds(shape, layout, batch, prompt_len, gen_len, dtype):
        for op in ops:
            for call in op.calls:
                acc = table[(call.rank, call.op, phase, site_class(op.site))]
                acc[0] += n
                acc[1] += n * call.bytes
                acc[2] += n * call.wire_bytes
    return _rows(table, ("rank", "op", "phase", "site"))


def op_instances(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int,
                 dtype: str = "fp32") -> list[dict]:
    """Logical ops for the latency model: rows ``{op, phase, site, group_size, ranks, parallel,
    bytes, msg_bytes, wire_bytes, calls, count}``.

    ``bytes`` is the per-rank payload of one call, ``msg_bytes`` the α-β message size, ``wire_bytes``
    the wire bytes of one logical op summed over its calls, ``calls`` its number of calls, ``count``
    how many times it happens per request batch (all on the critical path of one request: nothing
    overlaps).  Σ count·wire_bytes equals the total of ``predict_volume``.  Sorted by
    (op, phase, site, ranks, bytes)."""
    table: dict = defaultdict(int)
    for phase, n, ops in forward_kinds(shape, layout, batch, prompt_len, gen_len, dtype):
        for op in ops:
            key = (op.op, phase, site_class(op.site), op.group_size, op.ranks, op.parallel, op.bytes,
                   op.msg_bytes, sum(c.wire_bytes for c in op.calls), len(op.calls))
            table[key] += n
    names = ("op", "phase", "site", "group_size", "ranks", "parallel", "bytes", "msg_bytes", "wire_bytes",
             "calls")
    rows = [dict(zip(names, key), count=c) for key, c in table.items()]
    return sorted(rows, key=lambda r: (r["op"], r["phase"], r["site"], r["ranks"], r["bytes"]))


def summarize(rows: list[dict], batch: int, gen_len: int, world_size: int) -> dict:
    """Totals of volume rows; ``*_per_token`` divides by the batch·gen_len generated tokens,
    ``*_per_gpu`` by the world size (the study's per-GPU view)."""
    total = sum(r["bytes"] for r in rows)
    wire = sum(r["wire_bytes"] for r in rows)
    tokens = batch * gen_len
    return {
        "calls": sum(r["count"] for r in rows),
        "bytes": total,
        "wire_bytes": wire,
        "bytes_per_token": total / tokens,
        "wire_bytes_per_token": wire / tokens,
        "wire_bytes_per_gpu": wire / world_size,
    }


# -- the study's totals (docs/communication.md), term by term next to ours -------------------------

DIFFERENCES = """\
Where the engine (and so this model) differs from the study's totals (docs/communication.md):
- Token transfers the study leaves out are counted: sampled ids back to global rank 0 under PP
  (pp.tokens, b int64 per forward, prefill included) and the next-input-id broadcast inside stage
  0's TP group (tokens.broadcast, b int64 per decode forward, t > 1).
- Tokens through the model are the same (Sp + Sd − 1), but prefill moves Sp at once and each decode
  forward one token; per-forward message sizes differ, element totals do not.
- Logits: the study's Sd·(v/t)·b per GPU is what each non-root rank of the last stage sends with our
  gather (b·v/t per forward, Sd forwards); the root (sampler) keeps its slice locally (0 wire bytes).
- Hybrid all-reduce: the study's (2L/p) term has no embedding all-reduce and assumes L/p layers per
  stage; ours adds stage 0's embedding all-reduce and follows vLLM's uneven split (extra layers on
  the stages before the last), so the per-stage average is (2L+1)/p all-reduces.
- Scopes: TP terms are per GPU (one tp_rank; the logits term a non-root one).  PP and hybrid
  boundary terms are summed over the p−1 boundaries: PP over all senders, hybrid per tp_rank
  column (the same tp_rank in every stage).  The hybrid all-reduce term is per GPU, our value the
  average over the stages of one tp_rank column.
- Element counts are of the engine dtype; int64 token transfers are reported apart, in bytes.
"""


def _q(x: Fraction) -> "int | float":
    return int(x) if x.denominator == 1 else float(x)


def study_totals(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int) -> dict:
    """The study's per-GPU element totals for this layout, each term with its scope and the
    engine's value under the same scope (from ``per_rank_volume``; ``equal`` says if they match).

    Returns ``{kind, terms: [{term, scope, study, engine, equal}], study_total, engine_total,
    token_bytes: {site: bytes}, differences}``."""
    L, h, v = shape.n_layers, shape.hidden, shape.vocab
    t, p, b, sp, sd = layout.tp, layout.pp, batch, prompt_len, gen_len
    n = sp + sd - 1  # tokens through the model
    elem = DTYPE_BYTES["fp32"]  # any dtype: engine bytes / element size give elements
    rows = per_rank_volume(shape, layout, b, sp, sd, "fp32")

    def engine(ops: set[str], sites: set[str], ranks) -> Fraction:
        wire = sum(r["wire_bytes"] for r in rows if r["op"] in ops and r["site"] in sites and r["rank"] in ranks)
        return Fraction(wire, elem)

    column = {layout.rank_of(s, 1 if t > 1 else 0) for s in range(p)}  # one non-root tp_rank, every stage
    non_root_last = {layout.rank_of(p - 1, 1)} if t > 1 else set()
    ar = Fraction(2 * (t - 1), t)
    terms = []
    if layout.kind == "tp":
        terms.append(("all_reduce (2L+1)·N·h·b·2(t−1)/t", "per GPU", (2 * L + 1) * n * h * b * ar,
                      engine({"all_reduce"}, {"embed", "attn", "mlp"}, column)))
        terms.append(("logits Sd·(v/t)·b", "per non-root GPU", Fraction(sd * (v // t) * b),
                      engine({"gather"}, {"lm_head"}, non_root_last)))
    elif layout.kind == "pp":
        terms.append(("boundary (p−1)·2·N·h·b", "summed over boundaries", Fraction((p - 1) * 2 * n * h * b),
                      engine({"send"}, {"pp.boundary"}, set(range(layout.world_size)))))
    elif layout.kind == "hybrid":
        terms.append(("all_reduce (2L/p)·N·h·b·2(t−1)/t", "per GPU (ours: stage average)",
                      Fraction(2 * L, p) * n * h * b * ar,
                      engine({"all_reduce"}, {"embed", "attn", "mlp"}, column) / p))
        terms.append(("boundary all_gather 2(p−1)·N·h·b·(t−1)/t", "per tp_rank column, over boundaries",
                      2 * (p - 1) * n * h * b * Fraction(t - 1, t),
                      engine({"all_gather"}, {"pp.boundary"}, column)))
        terms.append(("logits Sd·(v/t)·b", "per non-root GPU", Fraction(sd * (v // t) * b),
                      engine({"gather"}, {"lm_head"}, non_root_last)))
        terms.append(("boundary slices (p−1)·2·N·(h/t)·b", "per tp_rank column, over boundaries",
                      Fraction((p - 1) * 2 * n * (h // t) * b),
                      engine({"send"}, {"pp.boundary"}, column)))
    token_bytes: dict[str, int] = defaultdict(int)
    for r in rows:
        if r["site"] in (contract.PP_TOKENS, contract.TOKENS_BROADCAST):
            token_bytes[r["site"]] += r["wire_bytes"]
    out = [{"term": name, "scope": scope, "study": _q(s), "engine": _q(e), "equal": s == e}
           for name, scope, s, e in terms]
    return {
        "kind": layout.kind,
        "terms": out,
        "study_total": _q(sum((s for _, _, s, _ in terms), Fraction(0))),
        "engine_total": _q(sum((e for _, _, _, e in terms), Fraction(0))),
        "token_bytes": dict(sorted(token_bytes.items())),
        "differences": DIFFERENCES,
    }
