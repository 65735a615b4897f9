"""vLLM general plugin: record every communication op of every vLLM worker in our record schema.

Registered under the ``vllm.general_plugins`` entry point, so vLLM calls :func:`register` in every
process it starts (driver, engine core, workers) before any work.  It does nothing unless
``LLMCOMM_VLLM_RECORD_DIR`` is set, so installing this package never changes a user's vLLM.

Where ops are seen (vLLM 0.3x, ``vllm/distributed/parallel_state.py``): every collective of the
model goes through a ``GroupCoordinator`` method; on CPU the device communicator under it calls
``torch.ops._C.shm_allreduce`` & co., which ``torch.distributed`` hooks never see.  We wrap the
methods that actually move data — ``_all_reduce_out_place`` and ``_all_gather_out_place`` (also
what ``torch.ops.vllm.all_reduce`` calls when the model is compiled), ``_reduce_scatter_out_place``,
``gather``, ``broadcast``, ``send``/``recv``, ``isend_tensor_dict``/``irecv_tensor_dict`` (the
pipeline boundary; ``send_tensor_dict``/``recv_tensor_dict`` call them) and ``broadcast_tensor_dict``
— so a world of one, which vLLM short-cuts before them, records nothing.  Pickled objects
(tensor-dict metadata, ``broadcast_object``, ``send_object``) and the scheduler's RPC messages over
the shared-memory message queue are recorded apart as control-plane records.

Position: the phase comes from the scheduler output of each ``execute_model`` call (a request
scheduled for the first time, or more than one token of one request, is prefill); the step counts
forwards since the prefill; the site comes from forward hooks on the model's modules
(``embed_tokens`` → ``embed``, ``layers.J.self_attn.o_proj`` → ``layerJ.attn.o_proj``,
``layers.J.mlp.down_proj`` → ``layerJ.mlp.down_proj``, ``logits_processor`` → ``lm_head``) and
``pp.boundaryS`` around the tensor-dict transfer into stage S.

Repetitions: the driver names requests ``llmcomm-rep<K>-…`` (recorded, repetition K) or anything
else (warm-up, not recorded).  Each rank appends its records as JSON lines to
``$LLMCOMM_VLLM_RECORD_DIR/rank<R>.jsonl`` after every forward, so nothing is lost when vLLM
kills its workers at shutdown.

Faults (``LLMCOMM_INJECT``, the syntax of ``llmcomm_tests.runtime.fault_spec``, selectors included):
``all_reduce[@SITE]:extra=N`` issues N more all-reduces of a copy through the recorded path;
``OP[@SITE]:delay=…`` / ``bw=…`` waits after a GroupCoordinator collective inside its timed span,
sized as the engine's faults are (the model's time for the op and size, the same on every rank).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import time
from contextlib import contextmanager

from llmcomm_tests.core.contract import site_class, wire_bytes
from llmcomm_tests.frameworks.sites import site_of
from llmcomm_tests.runtime.gpu_delay import GpuDelay
from llmcomm_tests.runtime.fault_spec import SLOWDOWNS, default_profile, model_transfer, parse_faults

RECORD_DIR_ENV = "LLMCOMM_VLLM_RECORD_DIR"
INJECT_ENV = "LLMCOMM_INJECT"
REP_PREFIX = "llmcomm-rep"

_installed = False


class _State:
    """This worker's position and records (one model runner per worker process)."""

    phase = "none"
    step = -1
    rep = -1
    active = False
    sites: list[str] = []
    records: list[dict] = []
    faults: list = []
    profile = None  # sizes relative delays and bw= (fault_spec.default_profile, loaded on first need)
    busy = False  # inside a tensor dict or object op: its inner ops are recorded by the outer one
    in_fault = False  # issuing a fault's own op: recorded, not faulted again
    hooked_model = None
    pending_rpc: dict | None = None
    comm: str | None = None  # the communicator that carried the op being recorded (see _COMMUNICATORS)
    capture: list | None = None  # ops seen while a CUDA graph is being captured
    gpu_delay = None  # runtime.gpu_delay.GpuDelay, built on the first delay planted on a CUDA op

    @property
    def site(self) -> str:
        return self.sites[-1] if self.sites else ""


state = _State()


def register() -> None:
    """Entry point of ``vllm.general_plugins``; idempotent (vLLM may call it more than once)."""
    global _installed
    if _installed or not os.environ.get(RECORD_DIR_ENV):
        return
    _installed = True

    state.faults = parse_faults([t for t in os.environ.get(INJECT_ENV, "").split(";") if t.strip()])
    _patch_group_coordinator()
    _patch_communicators()
    _patch_cuda_graphs()
    _patch_worker()
    _patch_message_queue()
    _tune_spin_wait()


# -- records ------------------------------------------------------------------------------------


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_initialized() else 0


def _wire(op: str, nbytes: int, size: int, group_rank: int, root: int) -> int:
    return wire_bytes(op, nbytes, size, group_rank, root)


def _record(op: str, group, tensor_numel: int, dtype, start_ns: int, end_ns: int | None, root: int = -1,
            site: str | None = None, plane: str = "data", nbytes: int | None = None, events=None,
            comm: str | None = None) -> None:
    """One record; ``end_ns`` None: no duration seen (a CUDA graph replay); ``events``: the CUDA
    events around the op, resolved into the duration at the next flush."""
    if not state.active:
        return
    import torch

    elem = torch.empty((), dtype=dtype).element_size() if dtype is not None else 1
    nbytes = tensor_numel * elem if nbytes is None else nbytes
    ranks = list(group.ranks) if group is not None else [_rank()]
    group_rank = group.rank_in_group if group is not None else 0
    wire = _wire(op, nbytes, len(ranks), group_rank, root) if plane == "data" else nbytes
    # The other side of a send/recv, or a rooted op's root, as a global rank (as our recorder).
    peer = getattr(group, "peer", None)
    if peer is None and 0 <= root < len(ranks):
        peer = ranks[root]
    state.records.append({
        "rank": _rank(), "rep": state.rep, "op": op, "group": ranks,
        "dtype": str(dtype).replace("torch.", "") if dtype is not None else "bytes",
        "numel": tensor_numel, "bytes": nbytes, "wire_bytes": wire, "phase": state.phase, "step": state.step,
        "site": state.site if site is None else site, "start_ns": start_ns,
        "duration_s": None if end_ns is None else (end_ns - start_ns) / 1e9, "plane": plane, "peer": peer,
    })
    if plane == "data":
        state.records[-1]["comm"] = comm or state.comm
    if events is not None:
        state.records[-1]["_events"] = events


def _flush() -> None:
    if not state.records:
        return
    timed = [r for r in state.records if "_events" in r]
    if timed:  # device time of each op, read once per forward (one synchronise)
        import torch

        torch.cuda.synchronize()
        for rec in timed:
            start, end = rec.pop("_events")
            rec["duration_s"] = start.elapsed_time(end) / 1e3
    path = os.path.join(os.environ[RECORD_DIR_ENV], f"rank{_rank()}.jsonl")
    with open(path, "a") as f:
        for rec in state.records:
            f.write(json.dumps(rec) + "\n")
    state.records = []


@contextmanager
def _at_site(name: str):
    state.sites.append(name)
    try:
        yield
    finally:
        state.sites.pop()


# -- faults ---------------------------------------------------------------------------------------


def _faults_for(op: str, nbytes: int) -> list:
    if not state.active or state.in_fault or not state.faults:
        return []

    return [f for f in state.faults if op in f.ops and f.selects(state.phase, site_class(state.site), nbytes)]


def _slowdown_s(op: str, faults, group, nbytes: int, on_device: bool) -> float:
    """What the slowdowns among ``faults`` add to one call (``fault_spec``: the same on every rank)."""
    slow = [f for f in faults if f.kind in SLOWDOWNS]
    transfer = None
    if any(f.needs_model for f in slow):
        if state.profile is None:
            import torch

            state.profile = (default_profile(True, torch.cuda.get_device_name(), torch.cuda.device_count())
                             if on_device else default_profile(False))
        transfer = model_transfer(state.profile, op, list(group.ranks), nbytes)
    return sum(f.seconds(transfer) for f in slow)


def _apply_after(op: str, faults, group, nbytes: int, redo, on_device: bool = False) -> None:
    """Plant ``faults`` after the op; ``on_device``: the op runs on a CUDA stream, so a slowdown
    is a spin on that stream (a host sleep would not delay it), inside the op's event span."""
    seconds = _slowdown_s(op, faults, group, nbytes, on_device)
    if seconds > 0:
        if on_device:
            _device_delay(seconds)
        else:
            from llmcomm_tests.runtime.faults import _wait

            _wait(seconds)
    for fault in faults:
        if fault.kind in SLOWDOWNS:
            continue
        if fault.kind == "extra":
            state.in_fault = True
            try:
                for _ in range(int(fault.value)):
                    redo()
            finally:
                state.in_fault = False
        else:
            raise RuntimeError(f"fault {fault} is not supported inside vLLM (only extra=, delay= and bw=)")


def _device_delay(seconds: float) -> None:
    if state.gpu_delay is None:
        import torch

        state.gpu_delay = GpuDelay(torch)
    state.gpu_delay(seconds)


# -- GroupCoordinator -----------------------------------------------------------------------------


def _patch_group_coordinator() -> None:
    from vllm.distributed import parallel_state as ps

    GC = ps.GroupCoordinator

    def tensor_op(name: str, op: str, root_arg: int | None = None, root_kw: str | None = None):
        original = getattr(GC, name)

        def wrapped(self, input_, *args, **kwargs):
            if self.world_size == 1 or state.busy or (not state.active and state.capture is None):
                return original(self, input_, *args, **kwargs)
            root = -1
            if root_arg is not None:
                root = args[root_arg] if len(args) > root_arg else kwargs.get(root_kw, 0)
            state.comm = None
            if state.capture is not None:  # inside a CUDA graph capture: replays will repeat it
                out = original(self, input_, *args, **kwargs)
                state.capture.append((op, self, input_.numel(), input_.dtype, root, state.site, state.comm))
                return out
            nbytes = input_.numel() * input_.dtype.itemsize
            faults = _faults_for(op, nbytes)
            if getattr(input_, "is_cuda", False):
                return _device_timed(self, op, input_, root, faults, original, args, kwargs, wrapped)
            start = time.perf_counter_ns()
            out = original(self, input_, *args, **kwargs)
            end = time.perf_counter_ns()
            _record(op, self, input_.numel(), input_.dtype, start, end, root=root)
            if faults:
                _apply_after(op, faults, self, nbytes, lambda: wrapped(self, input_.clone(), *args, **kwargs))
            return out

        wrapped.__name__ = name
        setattr(GC, name, wrapped)

    tensor_op("_all_reduce_out_place", "all_reduce")
    tensor_op("_all_gather_out_place", "all_gather")
    tensor_op("_reduce_scatter_out_place", "reduce_scatter")
    tensor_op("gather", "gather", root_arg=0, root_kw="dst")
    tensor_op("broadcast", "broadcast", root_arg=0, root_kw="src")

    send, recv = GC.send, GC.recv

    def send_wrapped(self, tensor, dst=None):
        start = time.perf_counter_ns()
        out = send(self, tensor, dst)
        if not state.busy:
            _record("send", None, tensor.numel(), tensor.dtype, start, time.perf_counter_ns())
        return out

    def recv_wrapped(self, size, dtype, src=None):
        start = time.perf_counter_ns()
        out = recv(self, size, dtype, src)
        if not state.busy:
            _record("recv", None, out.numel(), out.dtype, start, time.perf_counter_ns())
        return out

    GC.send, GC.recv = send_wrapped, recv_wrapped
    _patch_tensor_dicts(GC)
    _patch_objects(GC)


def _device_timed(group, op, input_, root, faults, original, args, kwargs, wrapped):
    """A GroupCoordinator op on a CUDA stream: its time is the CUDA events' around it (the host
    clock sees only the launch), and a planted delay spins on the stream inside that span."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start_ns = time.perf_counter_ns()
    start.record()
    out = original(group, input_, *args, **kwargs)
    comm = state.comm
    nbytes = input_.numel() * input_.dtype.itemsize
    if faults:
        _apply_after(op, [f for f in faults if f.kind in SLOWDOWNS], group, nbytes, None, on_device=True)
    end.record()
    _record(op, group, input_.numel(), input_.dtype, start_ns, start_ns, root=root, events=(start, end), comm=comm)
    extra = [f for f in faults if f.kind not in SLOWDOWNS]
    if extra:
        _apply_after(op, extra, group, nbytes, lambda: wrapped(group, input_.clone(), *args, **kwargs), on_device=True)
    return out


# -- the communicator under a GroupCoordinator op: what the backend label names ----------------

# (module under vllm.distributed.device_communicators, class, methods, label).  vLLM's
# CudaCommunicator picks one of these per call (custom all-reduce for small tensors within a
# node, quick all-reduce on ROCm, symmetric memory, else pynccl); what ran is what we name.
_COMMUNICATORS = (
    ("custom_all_reduce", "CustomAllreduce", ("custom_all_reduce", "all_reduce"), "custom-ar"),
    ("quick_all_reduce", "QuickAllReduce", ("quick_all_reduce",), "quick-ar"),
    ("symm_mem", "SymmMemCommunicator", ("all_reduce",), "symm-mem"),
    ("pynccl", "PyNcclCommunicator", ("all_reduce", "all_gather", "reduce_scatter", "send", "recv", "broadcast"),
     "pynccl"),
    ("cpu_communicator", "CpuCommunicator", ("all_reduce", "all_gather", "gather", "send", "recv"), "cpu-shm"),
)


def _patch_communicators(table=_COMMUNICATORS, package: str = "vllm.distributed.device_communicators") -> None:
    """Wrap each communicator's data methods to name itself in ``state.comm`` (the outermost one
    that ran; a communicator falling back to another leaves the first name)."""
    import importlib

    for module_name, class_name, methods, label in table:
        try:
            cls = getattr(importlib.import_module(f"{package}.{module_name}"), class_name)
        except (ImportError, AttributeError):  # not in this vLLM release or build
            continue
        for method in methods:
            original = cls.__dict__.get(method)
            if original is None:
                continue

            def named(self, *args, _original=original, _label=label, **kwargs):
                if state.comm is None:
                    state.comm = _label
                return _original(self, *args, **kwargs)

            named.__name__ = method
            setattr(cls, method, named)


# -- CUDA graphs: ops captured once, replayed without Python ------------------------------------


def replay_durations(graph, ops: list) -> list | None:
    """Device time of each op of one replay of ``graph``, or None (records say no duration).
    The hook for kernel timing (the Kineto kernel parser, the kernel_timing module of the runtime
    floor): a replay runs no Python, so no event of ours brackets its collectives."""
    return None


def _patch_cuda_graphs(graph_cls=None) -> None:
    """Ops issued while a graph is captured are kept on the graph; each replay while recording
    emits them again (count = captured × replays), at the phase and step of that replay."""
    if graph_cls is None:
        import torch

        if not torch.cuda.is_available():
            return
        graph_cls = torch.cuda.CUDAGraph
    begin, end, replay = graph_cls.capture_begin, graph_cls.capture_end, graph_cls.replay

    def capture_begin(self, *args, **kwargs):
        state.capture = []
        return begin(self, *args, **kwargs)

    def capture_end(self, *args, **kwargs):
        try:
            return end(self, *args, **kwargs)
        finally:
            self._llmcomm_ops, state.capture = state.capture or [], None

    def replayed(self, *args, **kwargs):
        start_ns = time.perf_counter_ns()
        out = replay(self, *args, **kwargs)
        ops = getattr(self, "_llmcomm_ops", ())
        if state.active and ops:
            durations = replay_durations(self, ops) or [None] * len(ops)
            for (op, group, numel, dtype, root, site, comm), seconds in zip(ops, durations):
                _record(op, group, numel, dtype, start_ns, None if seconds is None else start_ns + round(seconds * 1e9),
                        root=root, site=site, comm=comm)
        return out

    graph_cls.capture_begin, graph_cls.capture_end, graph_cls.replay = capture_begin, capture_end, replayed


def _split(tensor_dict) -> tuple[list, list]:
    import torch

    meta, tensors = [], []
    for key, value in tensor_dict.items():
        if isinstance(value, torch.Tensor):
            meta.append((key, ("tensor", str(value.dtype), tuple(value.shape))))
            tensors.append((key, value))
        else:
            meta.append((key, value))
    return meta, tensors


def _boundary_site(pp_group, receiving: bool) -> str:
    stage = pp_group.rank_in_group if receiving else pp_group.rank_in_group + 1
    return f"pp.boundary{stage}"


def _timed(fn, *args):
    """``(fn(*args), start_ns, end_ns)``, with the calls it makes underneath not recorded again."""
    start = time.perf_counter_ns()
    state.busy = True
    try:
        out = fn(*args)
    finally:
        state.busy = False
    return out, start, time.perf_counter_ns()


def _patch_tensor_dicts(GC) -> None:
    isend, irecv, bcast = GC.isend_tensor_dict, GC.irecv_tensor_dict, GC.broadcast_tensor_dict

    def isend_wrapped(self, tensor_dict, dst=None, all_gather_group=None, all_gather_tensors=None):
        if self.world_size <= 1 or not state.active:
            return isend(self, tensor_dict, dst, all_gather_group, all_gather_tensors)
        site = _boundary_site(self, receiving=False)
        peer = self.ranks[(self.rank_in_group + 1) % self.world_size if dst is None else dst]
        out, start, end = _timed(isend, self, tensor_dict, dst, all_gather_group, all_gather_tensors)
        meta, tensors = _split(tensor_dict)
        _record("send_object", None, 0, None, start, end, site=site, plane="control",
                nbytes=len(pickle.dumps(meta)))
        for key, t in tensors:
            n = t.numel()
            if self._should_use_all_gather(key, n, all_gather_group, all_gather_tensors):
                n //= all_gather_group.world_size
            _record("send", _P2P(self, peer), n, t.dtype, start, end, site=site)
        return out

    def irecv_wrapped(self, src=None, all_gather_group=None, all_gather_tensors=None):
        if self.world_size <= 1 or not state.active:
            return irecv(self, src, all_gather_group, all_gather_tensors)
        site = _boundary_site(self, receiving=True)
        peer = self.ranks[(self.rank_in_group - 1) % self.world_size if src is None else src]
        (tensor_dict, handles, post), start, end = _timed(irecv, self, src, all_gather_group, all_gather_tensors)
        if tensor_dict is not None:
            meta, tensors = _split(tensor_dict)
            _record("recv_object", None, 0, None, start, end, site=site, plane="control",
                    nbytes=len(pickle.dumps(meta)))
            for _key, t in tensors:  # sliced tensors arrive as their slice until post-processing
                _record("recv", _P2P(self, peer), t.numel(), t.dtype, start, end, site=site)

        def at_boundary(fn):
            def run():
                with _at_site(site):
                    return fn()
            return run

        return tensor_dict, handles, [at_boundary(fn) for fn in post]

    def bcast_wrapped(self, tensor_dict=None, src=0, group=None, metadata_group=None):
        if self.world_size == 1 or not state.active:
            return bcast(self, tensor_dict, src, group, metadata_group)
        out, start, end = _timed(bcast, self, tensor_dict, src, group, metadata_group)
        if out is not None:
            meta, tensors = _split(out)
            _record("broadcast_object", self, 0, None, start, end, plane="control", nbytes=len(pickle.dumps(meta)))
            for _key, t in tensors:
                _record("broadcast", self, t.numel(), t.dtype, start, end, root=src)
        return out

    GC.isend_tensor_dict, GC.irecv_tensor_dict, GC.broadcast_tensor_dict = isend_wrapped, irecv_wrapped, bcast_wrapped


class _P2P:
    """The pipeline group of a p2p record, with the peer (global rank) on the other side."""

    def __init__(self, group, peer: int):
        self.ranks = list(group.ranks)
        self.rank_in_group = group.rank_in_group
        self.peer = peer


def _patch_objects(GC) -> None:
    for name in ("broadcast_object", "send_object", "recv_object", "isend_object", "barrier"):
        original = getattr(GC, name)

        def wrapped(self, *args, _original=original, _name=name, **kwargs):
            if self.world_size == 1 or not state.active or state.busy:
                return _original(self, *args, **kwargs)
            start = time.perf_counter_ns()
            out = _original(self, *args, **kwargs)
            end = time.perf_counter_ns()
            obj = out if _name in ("recv_object", "broadcast_object") else (args[0] if args else None)
            nbytes = len(pickle.dumps(obj)) if _name != "barrier" else 0
            _record(_name, self, 0, None, start, end, plane="control", nbytes=nbytes)
            return out

        wrapped.__name__ = name
        setattr(GC, name, wrapped)


# -- worker: phase, step, repetition, sites -------------------------------------------------------

def _hook_model(model) -> None:
    for name, module in model.named_modules():
        site = site_of(name)
        if site is None:
            continue

        def pre(_module, _inputs, _site=site):
            state.sites.append(_site)

        def post(_module, _inputs, _output):
            state.sites.pop()

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)
    state.hooked_model = model


def _request_rep(req_id: str) -> int:
    if not req_id.startswith(REP_PREFIX):
        return -1
    digits = re.match(r"\d+", req_id[len(REP_PREFIX):])
    return int(digits.group()) if digits else -1


def position_of(scheduler_output) -> tuple[str, int | None]:
    """(phase, repetition of a new request or None) of one scheduler step."""
    new = list(getattr(scheduler_output, "scheduled_new_reqs", []) or [])
    counts = dict(getattr(scheduler_output, "num_scheduled_tokens", {}) or {})
    rep = _request_rep(new[0].req_id) if new else None
    prefill = bool(new) or any(n > 1 for n in counts.values())
    return ("prefill" if prefill else "decode"), rep


def _patch_worker() -> None:
    from vllm.v1.worker import gpu_worker

    Worker = gpu_worker.Worker
    execute = Worker.execute_model

    def execute_model(self, scheduler_output):
        if scheduler_output.total_num_scheduled_tokens == 0:
            return execute(self, scheduler_output)
        if state.hooked_model is None:
            _hook_model(self.model_runner.get_model())
        phase, rep = position_of(scheduler_output)
        if rep is not None:  # a new request: a new repetition (or a warm-up)
            state.rep, state.step = rep, -1
            state.active = rep >= 0
        state.phase = phase
        state.step = 0 if phase == "prefill" else state.step + 1
        return execute(self, scheduler_output)

    Worker.execute_model = execute_model

    from vllm.v1.executor import multiproc_executor

    WorkerProc = multiproc_executor.WorkerProc
    run_rpc = WorkerProc._execute_worker_rpc

    def execute_worker_rpc(self, rpc_request):
        try:
            return run_rpc(self, rpc_request)
        finally:
            # After the call: execute_model has set this step's phase and repetition.
            pending, state.pending_rpc = state.pending_rpc, None
            if pending is not None:
                method = rpc_request[0] if isinstance(rpc_request[0], str) else "callable"
                _record(site=f"rpc.{method}", **pending)
            _flush()

    WorkerProc._execute_worker_rpc = execute_worker_rpc


# -- the scheduler's RPC messages over the shared-memory message queue (control plane) -----------


def _message_bytes(buf) -> int | None:
    """Size of the message in a ring-buffer chunk (header: overflow byte, buffer count, then
    length-prefixed buffers); None for an overflowed message (it went over a socket)."""
    if buf[0] == 1:
        return None
    count = int.from_bytes(bytes(buf[1:3]), "big")
    offset, total = 3, 3
    for _ in range(count):
        n = int.from_bytes(bytes(buf[offset:offset + 4]), "big")
        offset += 4 + n
        total += 4 + n
    return total


def _patch_message_queue() -> None:
    from vllm.distributed.device_communicators import shm_broadcast

    MQ = shm_broadcast.MessageQueue
    acquire_read = MQ.acquire_read

    @contextmanager
    def read(self, *args, **kwargs):
        with acquire_read(self, *args, **kwargs) as buf:
            start = time.perf_counter_ns()
            yield buf
            nbytes = _message_bytes(buf)
        if nbytes is not None:
            # Recorded once the RPC it carries has run (it sets the step's phase).
            state.pending_rpc = {"op": "mq_read", "group": None, "tensor_numel": 0, "dtype": None,
                                 "start_ns": start, "end_ns": time.perf_counter_ns(), "plane": "control",
                                 "nbytes": nbytes}

    MQ.acquire_read = read


def _tune_spin_wait() -> None:
    """``LLMCOMM_VLLM_MQ_BUSY_LOOP_S``: how long a message-queue reader spins (``sched_yield``)
    after its last message before it blocks on the queue's zmq socket.  vLLM 0.32 hard-codes 1 s,
    so during generation its workers and engine core never block; on an oversubscribed CPU host
    the spinners take cores from the workers' compute.  Unset: vLLM's own value (nothing changes)."""
    value = os.environ.get("LLMCOMM_VLLM_MQ_BUSY_LOOP_S")
    if not value:
        return
    from vllm.distributed.device_communicators import shm_broadcast

    init = shm_broadcast.SpinCondition.__init__

    def spin_init(self, is_reader, context, notify_address, busy_loop_s: float = 1):
        init(self, is_reader, context, notify_address, busy_loop_s=float(value) if is_reader else busy_loop_s)

    shm_broadcast.SpinCondition.__init__ = spin_init
