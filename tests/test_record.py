"""The recorder: counts from the structure in docs/communication.md (written here from the formulas, not from
the recorder or the analytic module), DTensor's functional collectives, the profiler cross-check."""

from collections import Counter

import pytest

import rank_entries
from llmcomm_tests.calibration.sweep import sweep, table
from llmcomm_tests.core.contract import bus_factor, site_class, wire_bytes
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime.measure import run_engine
from llmcomm_tests.runtime.run_config import RunConfig
from llmcomm_tests.runtime.launch import launch

B, SP, SD = 2, 12, 5  # batch, prompt tokens, generated tokens
LAYOUTS = [(2, 1), (1, 2), (2, 2), (4, 1)]


@pytest.fixture(scope="module")
def docs(tiny):
    return {lay: run_engine(RunConfig(tiny, Layout(*lay), batch=B, prompt_len=SP, gen_len=SD, repeats=2, warmup=0,
                                    cross_check=True, keep_records=True), timeout_s=120) for lay in LAYOUTS}


def expected_counts(L: int, t: int, p: int) -> Counter:
    """(op, phase) → calls summed over ranks for one request (docs/communication.md)."""
    c = Counter()
    for phase, forwards in (("prefill", 1), ("decode", SD - 1)):
        if t > 1:
            c[("all_reduce", phase)] += forwards * t * (2 * L + 1)  # 2 per layer + embedding, every TP rank
            c[("gather", phase)] += forwards * t  # last position's logits to the sampler
            if phase == "decode":
                c[("broadcast", phase)] += forwards * t  # next input ids inside stage 0
        if p > 1:
            boundary = 2 * (p - 1) * t  # hidden_states and residual at each boundary, per TP rank
            c[("send", phase)] += forwards * (boundary + 1)  # + sampled ids back to rank 0
            c[("recv", phase)] += forwards * (boundary + 1)
            if t > 1:
                c[("all_gather", phase)] += forwards * boundary
    return c


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"tp{lay[0]}-pp{lay[1]}")
def test_counts_follow_the_structure(docs, tiny, layout):
    t, p = layout
    counted = Counter()
    for row in docs[layout].volume:
        counted[(row.op, row.phase)] += row.count
    assert counted == expected_counts(tiny.n_layers, t, p)
    assert docs[layout].volume_stable


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"tp{lay[0]}-pp{lay[1]}")
def test_bytes_of_the_big_ops(docs, tiny, layout):
    """All-reduce payload is b·s·h·4 per call; p2p boundary tensors b·s·h/t each."""
    t, p = layout
    h, e = tiny.hidden, 4
    ops = [o for o in docs[layout].records if o.rep == 0]
    for op in ops:
        s = SP if op.phase == "prefill" else 1
        if op.op == "all_reduce":
            assert op.bytes == B * s * h * e and op.wire_bytes == 2 * (t - 1) * B * s * h * e // t
        if op.site.startswith("pp.boundary") and op.op in ("send", "recv"):
            assert op.bytes == B * s * h * e // t
            assert op.peer == (op.rank + t if op.op == "send" else op.rank - t)  # the same tp rank one stage over
        if op.site == "pp.tokens":
            assert op.bytes == B * 8 and op.dtype == "int64"
            assert op.peer == ((p - 1) * t if op.op == "recv" else 0)  # the sampler and global rank 0
        if op.site == "lm_head":
            assert op.bytes == B * tiny.vocab // t * e
            assert op.wire_bytes == (0 if op.rank == (p - 1) * t else op.bytes)
    assert all(o.duration_s is not None and o.duration_s > 0 for o in ops)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda lay: f"tp{lay[0]}-pp{lay[1]}")
def test_profiler_cross_check_agrees(docs, layout):
    checks = docs[layout].cross_check
    assert len(checks) == layout[0] * layout[1]
    for check in checks:
        assert check["match"], check
        assert check["recorder"], "nothing recorded on this rank"


def test_dtensor_functional_collectives_are_recorded():
    results = launch(rank_entries.dtensor_mlp, world_size=2, timeout_s=120)
    for result in results:
        records = result["records"]
        # RowwiseParallel's partial output becomes replicated: one all-reduce of [batch, hidden] fp32
        assert [(r.op, r.numel, r.bytes, r.site) for r in records] == [("all_reduce", 64, 256, "dtensor.mlp")]
        assert records[0].group == [0, 1] and records[0].duration_s > 0
    assert results[0]["out_sum"] == results[1]["out_sum"]


def test_recorder_sees_no_op_outside_generate(docs):
    """The barrier between repetitions and warm-up are not in the record."""
    assert all(o.phase in ("prefill", "decode") for o in docs[(2, 2)].records)
    assert {o.rep for o in docs[(2, 2)].records} == {0, 1}


def test_summaries_account_for_every_recorded_call(docs):
    """The bounded per-class summaries hold exactly the calls the kept records list."""
    doc = docs[(2, 2)]
    assert sum(s.count for s in doc.ops) == len(doc.records)
    by_class = Counter((r.op, r.phase, site_class(r.site), r.bytes) for r in doc.records)
    summed = Counter()
    for s in doc.ops:
        summed[(s.op, s.phase, s.site, s.bytes)] += s.count
        assert s.latency.count == s.count and s.latency.min_s > 0  # every call timed on gloo
    assert summed == by_class


@pytest.mark.parametrize("op, n, factor", [("all_reduce", 2, 1.0), ("all_reduce", 8, 1.75), ("all_gather", 4, 0.75),
                                           ("reduce_scatter", 8, 0.875), ("gather", 4, 0.75), ("broadcast", 8, 1.0),
                                           ("send_recv", 2, 1.0)])
def test_bus_factors_are_nccl_tests(op, n, factor):
    assert bus_factor(op, n) == factor


@pytest.mark.parametrize("op, nbytes, size, rank, root, wire", [
    ("all_reduce", 1000, 4, 0, -1, 1500), ("all_gather", 100, 4, 1, -1, 300), ("gather", 100, 4, 0, 0, 0),
    ("gather", 100, 4, 2, 0, 100), ("broadcast", 64, 2, 0, 0, 64), ("broadcast", 64, 2, 1, 0, 0),
    ("send", 10, 2, 0, 1, 10), ("recv", 10, 2, 1, 0, 0)])
def test_wire_bytes(op, nbytes, size, rank, root, wire):
    assert wire_bytes(op, nbytes, size, rank, root) == wire


def test_bench_comm_sweep_measures_every_op():
    rows = sweep(2, ["all_reduce", "all_gather", "send_recv"], [4096, 1 << 20], repeats=3, warmup=1)
    assert [(r["op"], r["bytes"]) for r in rows] == [("all_reduce", 4096), ("all_reduce", 1 << 20),
                                                      ("all_gather", 4096), ("all_gather", 1 << 20),
                                                      ("send_recv", 4096), ("send_recv", 1 << 20)]
    summary = table(rows)
    for row in summary:
        assert row["n"] == 3 and 0 < row["time_min_s"] <= row["time_median_s"] <= row["time_max_s"]
        assert row["busbw_GBps"] == pytest.approx(row["algbw_GBps"] * bus_factor(row["op"], 2))
    big = {r["op"]: r for r in summary if r["bytes"] == 1 << 20}
    small = {r["op"]: r for r in summary if r["bytes"] == 4096}
    assert big["all_reduce"]["algbw_GBps"] > small["all_reduce"]["algbw_GBps"]  # α dominates small messages


def test_uninstall_leaves_torch_distributed_working():
    """Recorder and faults put pybind's own method descriptors back (restoring getattr's unbound
    builtin broke every later collective: torchrun's gather_object after a run hit it)."""
    import subprocess
    import sys

    code = """
import tempfile, torch, torch.distributed as dist
from llmcomm_tests.runtime.faults import install_faults, parse_faults
from llmcomm_tests.runtime.recorder import Recorder
dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
before = {n: type(dist.ProcessGroup.__dict__[n]) for n in ("allgather", "allreduce")}
faults = install_faults(parse_faults(["all_reduce:delay=1ms"]))
rec = Recorder().install()
rec.active = True
x = torch.ones(2)
dist.all_reduce(x)
rec.uninstall(); faults.uninstall()
assert {n: type(dist.ProcessGroup.__dict__[n]) for n in before} == before
out = [torch.empty(2)]
dist.all_gather(out, x)
dist.all_reduce(x, async_op=True).wait()
objs = [None]
dist.gather_object({"ok": 1}, objs, dst=0)
assert objs == [{"ok": 1}] and len(rec.records) == 1
print("OK")
"""
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout.strip() == "OK"


def test_stacked_patches_put_back_the_very_descriptors_they_replaced():
    import torch.distributed as dist

    from llmcomm_tests.runtime.pg_patch import PgPatch

    originals = {n: dist.ProcessGroup.__dict__[n] for n in ("allreduce", "send")}
    wait = dist.Work.__dict__["wait"]
    under, over = PgPatch(), PgPatch()
    seen = []
    assert under.wrap_method("allreduce", lambda original: seen.append(original) or (lambda pg, *a: None))
    under.wrap_wait(lambda original: lambda work, *a: None)
    assert over.wrap_method("allreduce", lambda original: seen.append(original) or (lambda pg, *a: None))
    assert over.wrap_method("send", lambda original: lambda pg, *a: None)
    assert not over.wrap_method("no_such_method", lambda original: original)
    assert seen[0] is originals["allreduce"] and seen[1] is not originals["allreduce"]  # the second wraps the first
    over.restore()
    under.restore()
    assert {n: dist.ProcessGroup.__dict__[n] for n in originals} == originals
    assert dist.Work.__dict__["wait"] is wait and not hasattr(dist.ProcessGroup, "no_such_method")


@pytest.mark.parametrize("faults", [(), ("all_gather:delay=200ms",)], ids=["clean", "delay"])
def test_allgather_base_is_recorded_and_faulted_as_all_gather(faults):
    """torch 2.6–2.12 route ``all_gather_into_tensor`` to ``ProcessGroup._allgather_base`` (2.13:
    ``all_gather_single``): the old route, called directly, and this torch's route are both the op
    all_gather, recorded with their bytes, and a fault on all_gather reaches both."""
    numel, t = 6, 2
    results = launch(rank_entries.allgather_base, (faults, numel), world_size=t, timeout_s=120)
    for result in results:
        assert result["old"] == result["new"] == [0.0] * numel + [1.0] * numel  # the gather really ran
        records = result["records"]
        assert [(r.op, r.numel, r.bytes, r.wire_bytes, r.group, r.site) for r in records] == \
            [("all_gather", numel, numel * 4, (t - 1) * numel * 4, [0, 1], "pp.boundary1")] * 2
        for r in records:
            assert (r.duration_s >= 0.2) == bool(faults), r  # the delay lands on both entry points
