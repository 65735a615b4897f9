"""vLLM as it runs in production on CUDA, with fakes (no GPU here): the driver's settings per
device, the backend label from the communicator that ran, CUDA-event timing and delays planted on
the device, and ops captured in a CUDA graph counted at every replay."""

import pytest

from llmcomm_tests.frameworks import vllm_adapter as va
from llmcomm_tests.frameworks import vllm_plugin as vp
from llmcomm_tests.runtime.faults import parse_faults

torch = pytest.importorskip("torch")


class FakeEvent:
    clock = 0.0

    def __init__(self, enable_timing=False):
        self.t = None

    def record(self):
        FakeEvent.clock += 1e-3  # 1 ms of device time between any two events
        self.t = FakeEvent.clock

    def synchronize(self):
        pass

    def elapsed_time(self, other):
        return (other.t - self.t) * 1e3


@pytest.fixture
def fake_cuda(monkeypatch):
    """torch.cuda as a worker on a GPU sees it, as far as the plugin touches it."""
    spins = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(vp.state, "gpu_delay", spins.append)
    monkeypatch.setattr(vp, "_rank", lambda: 0)
    monkeypatch.setattr(vp.state, "records", [])
    monkeypatch.setattr(vp.state, "active", True)
    monkeypatch.setattr(vp.state, "faults", [])
    monkeypatch.setattr(vp.state, "phase", "decode")
    monkeypatch.setattr(vp.state, "rep", 0)
    monkeypatch.setattr(vp.state, "sites", ["layer0.attn.o_proj"])
    monkeypatch.setattr(vp.state, "comm", None)
    monkeypatch.setattr(vp.state, "capture", None)
    return spins


class CudaTensor:
    """Stands in for a CUDA tensor: the plugin reads numel, dtype, is_cuda."""

    is_cuda = True
    dtype = torch.bfloat16

    def __init__(self, n):
        self.n = n

    def numel(self):
        return self.n

    def clone(self):
        return CudaTensor(self.n)


class FakeCustomAllreduce:
    def custom_all_reduce(self, x):
        return x


class FakePyNccl:
    def all_reduce(self, x):
        return x


def _stand_in_group(ca: FakeCustomAllreduce, nccl: FakePyNccl, host_sleep: list):
    """A stand-in GroupCoordinator whose device communicator picks custom all-reduce for small
    tensors and pynccl otherwise, as vLLM's CudaCommunicator does."""

    class GC:
        ranks, rank_in_group, world_size = [0, 1], 0, 2

        def _all_reduce_out_place(self, x):
            return ca.custom_all_reduce(x) if x.numel() < 1024 else nccl.all_reduce(x)

        def _all_gather_out_place(self, x, dim=0):
            return x

        def _reduce_scatter_out_place(self, x, dim=0):
            return x

        def gather(self, x, dst=0, dim=-1):
            return x

        def broadcast(self, x, src=0):
            return x

        def send(self, x, dst=None):
            return None

        def recv(self, size, dtype, src=None):
            return None

    for name in ("isend_tensor_dict", "irecv_tensor_dict", "broadcast_tensor_dict", "broadcast_object",
                 "send_object", "recv_object", "isend_object", "barrier"):
        setattr(GC, name, lambda self, *a, **k: None)
    return GC


@pytest.fixture
def patched_gc(monkeypatch, fake_cuda):
    import sys
    import types

    host_sleep = []
    GC = _stand_in_group(FakeCustomAllreduce(), FakePyNccl(), host_sleep)
    # vllm.distributed.parallel_state / device_communicators as modules holding the stand-ins
    modules = {"vllm": types.ModuleType("vllm"), "vllm.distributed": types.ModuleType("vllm.distributed"),
               "vllm.distributed.parallel_state": types.ModuleType("ps"),
               "vllm.distributed.device_communicators": types.ModuleType("dc"),
               "vllm.distributed.device_communicators.custom_all_reduce": types.ModuleType("car"),
               "vllm.distributed.device_communicators.pynccl": types.ModuleType("pn")}
    modules["vllm.distributed"].parallel_state = modules["vllm.distributed.parallel_state"]
    modules["vllm.distributed.parallel_state"].GroupCoordinator = GC
    modules["vllm.distributed.device_communicators.custom_all_reduce"].CustomAllreduce = FakeCustomAllreduce
    modules["vllm.distributed.device_communicators.pynccl"].PyNcclCommunicator = FakePyNccl
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    for cls, names in ((FakeCustomAllreduce, ("custom_all_reduce",)), (FakePyNccl, ("all_reduce",))):
        for n in names:
            monkeypatch.setattr(cls, n, cls.__dict__[n])  # undone after the test
    monkeypatch.setattr("llmcomm_tests.runtime.faults._wait", host_sleep.append)
    vp._patch_group_coordinator()
    vp._patch_communicators()
    return GC(), fake_cuda, host_sleep


def test_cuda_engine_args_are_production_and_cpu_keeps_its_own(monkeypatch):
    from llmcomm_tests.engine.config import PRESETS
    from llmcomm_tests.engine.layout import Layout
    from llmcomm_tests.runtime.run_config import RunConfig

    cfg = RunConfig(PRESETS["tiny"], Layout(2, 1), batch=1, prompt_len=8, gen_len=4)
    monkeypatch.delenv(va.EAGER_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert va.device_of("auto") == "cuda" and va.device_of("gloo") == "cpu"
    gpu = va.request_of(cfg, None, "cuda")
    assert gpu["enforce_eager"] is False and gpu["device"] == "cuda"
    env = va.worker_env(2, "/tmp/r", "", "cuda")
    assert "TORCHDYNAMO_DISABLE" not in env and not any(k.startswith("VLLM_CPU_") for k in env)
    monkeypatch.setenv(va.EAGER_ENV, "1")
    assert va.request_of(cfg, None, "cuda")["enforce_eager"] is True
    monkeypatch.delenv(va.EAGER_ENV)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert va.device_of("auto") == "cpu"
    cpu_env = va.worker_env(2, "/tmp/r", "", "cpu")
    assert va.request_of(cfg, None, "cpu")["enforce_eager"] is True and cpu_env["TORCHDYNAMO_DISABLE"] == "1"
    assert cpu_env["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_label_names_the_communicators_that_ran(patched_gc):
    group, _, _ = patched_gc
    group._all_reduce_out_place(CudaTensor(256))
    group._all_reduce_out_place(CudaTensor(1 << 20))
    assert [r["comm"] for r in vp.state.records] == ["custom-ar", "pynccl"]
    assert va.backend_label(vp.state.records, "cuda") == "vllm-custom-ar+pynccl"
    assert va.backend_label([{"op": "all_reduce"}], "cpu") == "vllm-cpu-shm"  # today's CPU label stays
    assert va.backend_label([], "cuda") == "vllm-cuda"


def test_cuda_op_is_timed_by_events_and_delays_spin_on_the_device(patched_gc, monkeypatch):
    """A relative delay is the model's time for the op and size (the same on every rank), not
    the op's own device time (1 ms between any two fake events); selectors apply."""
    from llmcomm_tests.analytic.hardware import load_profile
    from llmcomm_tests.runtime.fault_spec import model_transfer

    group, spins, host_sleep = patched_gc
    profile = load_profile("h100-nvlink4")
    monkeypatch.setattr(vp.state, "profile", profile)
    vp.state.faults = parse_faults(["all_reduce:delay=2ms"])
    group._all_reduce_out_place(CudaTensor(256))
    vp.state.faults = parse_faults(["all_reduce:delay=100%", "all_reduce/prefill:delay=1ms",
                                    "all_reduce/>=1KiB:delay=1ms"])
    group._all_reduce_out_place(CudaTensor(256))  # 512 B in decode: only the first fires
    model = model_transfer(profile, "all_reduce", [0, 1], 512)[0]
    assert spins == [pytest.approx(2e-3), pytest.approx(model, rel=1e-9)] and model < 1e-3
    assert host_sleep == []  # no host sleep: it would not delay an op on a stream
    timed = [r for r in vp.state.records if "_events" in r]
    assert len(timed) == 2 and all(r["duration_s"] == 0 for r in timed)  # resolved at flush, not host time


def test_durations_come_from_the_events_at_flush(patched_gc, tmp_path, monkeypatch):
    group, _, _ = patched_gc
    monkeypatch.setenv(vp.RECORD_DIR_ENV, str(tmp_path))
    group._all_reduce_out_place(CudaTensor(256))
    vp._flush()
    import json

    rec = json.loads((tmp_path / "rank0.jsonl").read_text())
    assert rec["duration_s"] == pytest.approx(1e-3) and "_events" not in rec and rec["comm"] == "custom-ar"


def test_graph_captured_ops_count_at_every_replay(patched_gc):
    group, _, _ = patched_gc

    class FakeGraph:
        def capture_begin(self, *a, **k):
            pass

        def capture_end(self):
            pass

        def replay(self):
            pass

    vp._patch_cuda_graphs(FakeGraph)
    graph = FakeGraph()
    vp.state.active = False  # vLLM captures at start-up, before any recorded request
    graph.capture_begin()
    for _ in range(3):  # e.g. three layers' all-reduces in the captured decode graph
        group._all_reduce_out_place(CudaTensor(256))
    graph.capture_end()
    assert vp.state.records == []
    vp.state.active, vp.state.phase, vp.state.step = True, "decode", 4
    graph.replay()
    graph.replay()
    data = vp.state.records
    assert len(data) == 6 and {(r["op"], r["phase"], r["step"], r["comm"], r["numel"]) for r in data} == {
        ("all_reduce", "decode", 4, "custom-ar", 256)}
    assert all(r["duration_s"] is None for r in data)  # no event brackets a replay: n/a, not zero
