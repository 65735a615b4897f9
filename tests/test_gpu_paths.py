"""The CUDA/NCCL paths, tested without a GPU: fake torch.cuda pieces, groups that refuse CPU tensors
like NCCL's, profiler events and stack texts shaped like NCCL's."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from types import SimpleNamespace

import pytest
import torch

import rank_entries
from llmcomm_tests.runtime import launch as launch_mod
from llmcomm_tests.runtime.crosscheck import profiler_counts
from llmcomm_tests.runtime.launch import _in_communication, _where, init_rank, launch


# -- rank skew: every rank waits for its stream once per token ------------------------------------


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)])
def test_every_rank_synchronises_its_stream_once_per_token(tp, pp):
    gen_len = 3
    per_rank = launch(rank_entries.engine_stream_syncs, (tp, pp, gen_len), world_size=2, timeout_s=120)
    assert per_rank == [[0, 1, 2], [0, 1, 2]]  # the same point of every step on every rank


def test_a_cpu_engine_does_not_synchronise(tiny):
    from llmcomm_tests.engine.layout import Layout
    from llmcomm_tests.engine.parallel import ParallelEngine

    assert ParallelEngine(tiny, Layout(tp=1, pp=1), 0).sync_each_token is False


# -- the clock exchange and other host messages go over a gloo side group --------------------------


def test_clock_offsets_go_over_the_host_group_where_the_default_group_refuses_cpu_tensors():
    offsets = launch(rank_entries.offsets_over_nccl_like_default_group, world_size=2, timeout_s=120)[0]
    assert offsets[0] == (0, 0) and set(offsets) == {0, 1}


def _fake_nccl_init(monkeypatch):
    import torch.distributed as dist

    calls = SimpleNamespace(init={}, new_group=[], set_device=[])
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.set_device.append(d))
    monkeypatch.setattr(dist, "init_process_group", lambda backend, **kw: calls.init.update(kw, backend=backend))
    monkeypatch.setattr(dist, "new_group", lambda **kw: calls.new_group.append(kw) or "gloo-side-group")
    return calls


def test_nccl_rank_binds_its_gpu_and_gets_a_gloo_side_group(monkeypatch):
    calls = _fake_nccl_init(monkeypatch)
    ctx = init_rank(3, 8, 3, "nccl", "file:///nonexistent", 10.0)
    assert calls.set_device == [3] and ctx.device == "cuda:3"
    assert calls.init["backend"] == "nccl" and calls.init["device_id"] == torch.device("cuda:3")
    assert calls.new_group == [{"backend": "gloo", "timeout": timedelta(seconds=70)}]
    assert ctx.host_group == "gloo-side-group"


def test_gloo_rank_is_unchanged(monkeypatch):
    calls = _fake_nccl_init(monkeypatch)
    ctx = init_rank(1, 2, 1, "gloo", "file:///nonexistent", 10.0)
    assert "device_id" not in calls.init and calls.new_group == [] and calls.set_device == []
    assert ctx.host_group is None and ctx.device == "cpu"


# -- the profiler cross-check reads NCCL's p2p event names ----------------------------------------


def test_nccl_p2p_profiler_events_count_as_send_and_recv():
    event = lambda name, dims: SimpleNamespace(name=name, input_shapes=[dims])  # noqa: E731
    events = [event("nccl:send 0->1", [4, 8]), event("nccl:recv 1<-0", [4, 8]), event("nccl:all_reduce", [2, 3]),
              event("nccl:_all_gather_base", [16]), event("gloo:send", [5]), event("aten::mm", [2, 2])]
    assert profiler_counts(events) == Counter({("send", 32): 1, ("recv", 32): 1, ("all_reduce", 6): 1,
                                               ("all_gather", 16): 1, ("send", 5): 1})


# -- hang diagnosis on NCCL: a rank waiting for a peer blocks in a CUDA synchronize ---------------

TORCH = "/venv/lib/python3.11/site-packages/torch"
NCCL_WAITING = f'''Thread 0x7f (most recent call first):
  File "/usr/lib/python3.11/threading.py", line 320 in wait

Current thread 0x7e (most recent call first):
  File "{TORCH}/cuda/streams.py", line 102 in synchronize
  File "/src/llmcomm_tests/engine/parallel.py", line 231 in generate
  File "{TORCH}/utils/_contextlib.py", line 120 in decorate_context
  File "/src/llmcomm_tests/runtime/measure.py", line 99 in repetition
'''
NCCL_DEVICE_WAITING = NCCL_WAITING.replace("cuda/streams.py\", line 102", "cuda/__init__.py\", line 1214")
STUCK = '''Current thread 0x7e (most recent call first):
  File "/src/tests/rank_entries.py", line 37 in hang
  File "/src/llmcomm_tests/runtime/launch.py", line 395 in _rank_main
'''


@pytest.mark.parametrize("stacks", [NCCL_WAITING, NCCL_DEVICE_WAITING])
def test_a_rank_in_a_cuda_synchronize_waits_in_communication(stacks):
    assert _in_communication(stacks)
    assert _where(stacks) == "in cuda synchronize from generate (engine/parallel.py:231)"
    assert not _in_communication(STUCK)


def test_timeout_on_nccl_blames_the_rank_outside_communication(tmp_path, monkeypatch):
    (tmp_path / "stacks0.txt").write_text(NCCL_WAITING)
    (tmp_path / "stacks1.txt").write_text(STUCK)
    monkeypatch.setattr(launch_mod, "STACK_GRACE_S", 0.3)
    alive = SimpleNamespace(is_alive=lambda: True, pid=2 ** 22 + 12345)  # no such process: the signal is skipped
    error = launch_mod._timeout([alive, alive], {}, {}, tmp_path, 5.0)
    assert error.ranks == [1]
    assert "rank(s) [1] stuck outside communication, [0] waiting in a collective for them" in str(error)


# -- transformers: the prompt goes where the model is ------------------------------------------------


def test_hf_generation_feeds_the_prompt_on_the_models_device():
    from llmcomm_tests.frameworks.hf_adapter import _generate

    seen = []

    def forward(input_ids, **_):
        seen.append(input_ids.device.type)
        return SimpleNamespace(logits=torch.zeros(input_ids.shape[0], 1, 8))

    model = type("FakeModel", (), {"device": torch.device("meta"), "__call__": lambda self, **kw: forward(**kw)})()
    _generate(model, torch.zeros(2, 3, dtype=torch.int64), 1)
    assert seen == ["meta"]


def test_hf_single_rank_on_a_gpu_loads_the_model_onto_it(monkeypatch):
    import transformers

    from llmcomm_tests.frameworks import hf_adapter

    loaded = {}

    class Loaded(Exception):
        pass

    def from_pretrained(folder, **kwargs):
        loaded.update(kwargs)
        raise Loaded

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    ctx = SimpleNamespace(world_size=1, rank=0, device="cuda:0", backend="nccl")
    with pytest.raises(Loaded):
        hf_adapter.rank_run(ctx, SimpleNamespace(dtype="bf16"), "/nowhere")
    assert loaded["device_map"] == "cuda:0"


# -- the shipped specs name hardware whose node holds the ranks they run on one node ---------------


def _shipped_specs():
    from pathlib import Path

    from llmcomm_tests.spec import load_spec

    return [load_spec(p) for p in sorted((Path(__file__).parent.parent / "slo_specs").glob("*.yaml"))]


@pytest.mark.parametrize("spec", _shipped_specs(), ids=lambda s: s.name)
def test_a_one_node_spec_names_a_profile_whose_node_holds_its_widest_layout(spec):
    from llmcomm_tests.analytic.hardware import load_profile

    if spec.topology is not None and spec.topology.nodes > 1:
        pytest.skip("multi-node topology: links follow the topology")
    widest = max(layout.world_size for layout in spec.layouts)
    profile = load_profile(spec.hardware)
    assert widest <= profile.ranks_per_node, (
        f"{spec.name}: {widest} ranks on one node, but {profile.name} has {profile.ranks_per_node} per node "
        f"(its inter-node tier would price intra-node links)")


# -- emulated nodes on a GPU host: skipped on NCCL with the reason ----------------------------------


@pytest.mark.parametrize("backend", ["nccl", "gloo"])
def test_emulated_two_node_cases_skip_on_nccl_with_the_reason(backend, monkeypatch):
    import importlib
    from pathlib import Path

    from llmcomm_tests.spec import load_spec

    items = importlib.import_module("llmcomm_tests.suite.items")
    monkeypatch.setattr(items, "_namespaces_here", lambda: (True, ""))
    spec = load_spec(Path(__file__).parent.parent / "slo_specs" / "emulated-2node.yaml")
    state = SimpleNamespace(backend=backend, ranks=8, ranks_reason="8 GPUs")
    reasons = {items.skip_reason(case, state) for case in spec.cases()}
    if backend == "gloo":
        assert reasons == {None}
    else:
        (reason,) = reasons
        assert "Duplicate GPU detected" in reason and "--llmcomm-backend gloo" in reason


# -- pytest-xdist: each worker its own GPUs --------------------------------------------------------


def test_workers_get_disjoint_gpu_slices():
    from llmcomm_tests.suite.worker_gpus import worker_slice

    devices = [str(i) for i in range(8)]
    assert [worker_slice(devices, w, 2, None) for w in range(2)] == [devices[:4], devices[4:]]
    assert [worker_slice(devices, w, 2, 4) for w in range(2)] == [devices[:4], devices[4:]]
    assert [worker_slice(devices, w, 4, 2) for w in range(4)] == [devices[i:i + 2] for i in (0, 2, 4, 6)]
    assert worker_slice(devices, 0, 1, 8) == devices  # no xdist: every device
    assert worker_slice([], 1, 2, None) == []  # a CPU host: nothing to slice
    with pytest.raises(ValueError) as info:
        worker_slice(devices, 0, 2, 8)
    assert str(info.value) == ("-n 2 workers x 8 GPUs each need 16 GPUs, 8 here (each worker needs its own): "
                               "run -n 1 or fewer, or --gpus 4")
    with pytest.raises(ValueError, match="-n 16 workers x 1 GPUs each need 16 GPUs, 8 here"):
        worker_slice(devices, 0, 16, None)


def test_a_worker_sees_only_its_gpus(monkeypatch):
    from llmcomm_tests.suite import worker_gpus

    monkeypatch.setattr(worker_gpus, "cuda_device_count", lambda: 8)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    worker = SimpleNamespace(workerinput={"workerid": "gw1", "workercount": 2}, option=SimpleNamespace())
    worker_gpus.assign(worker, None)
    assert worker_gpus.os.environ["CUDA_VISIBLE_DEVICES"] == "4,5,6,7"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")  # the user's own selection is what gets sliced
    worker_gpus.assign(worker, None)
    assert worker_gpus.os.environ["CUDA_VISIBLE_DEVICES"] == "5"


def test_xdist_wider_than_the_gpus_is_refused_with_one_line(pytester, monkeypatch):
    from llmcomm_tests.suite import worker_gpus

    monkeypatch.setattr(worker_gpus, "cuda_device_count", lambda: 8)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    pytester.makefile(".yaml", **{"slo_specs/mini": 'name: mini\nengine: tiny\nlayouts: ["1x1"]\n'})
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", "-n", "2", "--gpus", "8")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*llmcomm: -n 2 workers x 8 GPUs each need 16 GPUs, 8 here*--gpus 4"])


# -- weights: a rank draws its own shard, which is the slice of the full tensor ---------------------


def test_a_shard_is_the_slice_of_the_full_weight_across_tile_edges():
    from llmcomm_tests.engine.weights import TILE, full_weight, weight_block

    dims = (TILE * 2 + 37, TILE + 11)  # ragged edge tiles
    full = full_weight("model.layers.0.mlp.down_proj.weight", dims, 7)
    for rows, cols in [(range(0, dims[0]), range(5, dims[1] - 3)), (range(TILE - 3, TILE * 2 + 1), range(0, dims[1])),
                       (range(dims[0] - 1, dims[0]), range(TILE, dims[1]))]:
        block = weight_block("model.layers.0.mlp.down_proj.weight", dims, 7, rows, cols)
        assert torch.equal(block, full[rows.start:rows.stop, cols.start:cols.stop])


@pytest.mark.parametrize("tp,pp", [(2, 1), (4, 1), (2, 2)])
def test_every_rank_shard_equals_the_slices_of_the_full_state(tiny, tp, pp):
    from llmcomm_tests.engine.layout import Layout
    from llmcomm_tests.engine.weights import full_state_dict, rank_shard, shard_range

    full, layout = full_state_dict(tiny, 3), Layout(tp=tp, pp=pp)
    seen = set()
    for rank in range(layout.world_size):
        for name, part in rank_shard(tiny, layout, rank, 3).items():
            seen.add(name)
            if part.dim() == 1:
                assert torch.equal(part, full[name])
                continue
            rows, cols = shard_range(name, tuple(full[name].shape), tiny, tp, layout.tp_rank_of(rank))
            assert torch.equal(part, full[name][rows.start:rows.stop, cols.start:cols.stop]), name
    assert seen == set(full)


def test_a_tp_rank_draws_about_its_share_of_the_weights(monkeypatch):
    from llmcomm_tests.engine import weights
    from llmcomm_tests.engine.config import EngineShape
    from llmcomm_tests.engine.layout import Layout
    from llmcomm_tests.engine.parallel import ParallelEngine

    shape = EngineShape("shard-test", n_layers=1, hidden=1024, n_heads=8, n_kv_heads=8, ffn=2048, vocab=4096)
    drawn = []
    real = torch.randn

    def counting_randn(*size, **kw):
        out = real(*size, **kw)
        drawn.append(out.numel())
        return out

    monkeypatch.setattr(weights.torch, "randn", counting_randn)
    monkeypatch.setattr(ParallelEngine, "_make_tp_groups", lambda self: None)  # no process group needed
    engine = ParallelEngine(shape, Layout(tp=4, pp=1), 1)
    held, by_engine = sum(t.numel() for t in engine.w.values()), sum(drawn)
    full = sum(t.numel() for t in weights.full_state_dict(shape, 0).values())
    assert held < full / 3.5 and by_engine == held  # tile-aligned shards: not one number more
