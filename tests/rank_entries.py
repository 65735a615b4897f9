"""Rank entry points for the launcher's and recorder's own tests (planted crashes, hangs, DTensor)."""

from __future__ import annotations

import os
import time
import warnings


def _note_pid(ctx, pid_dir):
    if pid_dir:
        with open(os.path.join(pid_dir, f"rank{ctx.rank}.pid"), "w") as f:
            f.write(str(os.getpid()))


def echo(ctx, payload=None, pid_dir=None):
    """All-reduce the rank ids (proves the group works) and return what the rank saw."""
    import torch
    import torch.distributed as dist

    _note_pid(ctx, pid_dir)
    x = torch.tensor([float(ctx.rank)])
    if ctx.world_size > 1:
        dist.all_reduce(x)
    return {"rank": ctx.rank, "sum": x.item(), "pid": os.getpid(), "payload": payload}


def crash(ctx, bad_rank: int = 1):
    if ctx.rank == bad_rank:
        raise RuntimeError(f"planted crash on rank {ctx.rank}")
    return echo(ctx)


def hang(ctx, bad_rank: int = 1, seconds: float = 3600, pid_dir=None):
    _note_pid(ctx, pid_dir)
    if ctx.rank == bad_rank:
        time.sleep(seconds)
    return echo(ctx)


def die(ctx, bad_rank: int = 1):
    if ctx.rank == bad_rank:
        os._exit(7)
    return echo(ctx)


def dtensor_mlp(ctx, batch: int = 4, hidden: int = 16, ffn: int = 32):
    """A two-layer MLP under DTensor tensor parallelism (ColwiseParallel → RowwiseParallel) on a CPU
    device mesh, recorded: DTensor issues functional collectives that never touch the eager
    ``torch.distributed`` API.  Returns the records of one forward."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module

    from llmcomm_tests.core import call_site
    from llmcomm_tests.runtime.recorder import Recorder

    torch.manual_seed(0)
    mesh = init_device_mesh("cpu", (ctx.world_size,))
    mlp = torch.nn.Sequential(torch.nn.Linear(hidden, ffn), torch.nn.ReLU(), torch.nn.Linear(ffn, hidden))
    parallelize_module(mlp, mesh, {"0": ColwiseParallel(), "2": RowwiseParallel()})
    recorder = Recorder().install()
    recorder.active = True
    call_site.set_phase("prefill", 0)
    with call_site.at_site("dtensor.mlp"):
        out = mlp(torch.ones(batch, hidden))
        total = float(out.sum())  # first use of the output: DTensor waits for the collective here
    call_site.set_phase("none", -1)
    recorder.active = False
    from llmcomm_tests.runtime.metrics import records as as_records

    records = as_records([recorder.finalize(ctx.rank)])
    recorder.uninstall()
    return {"records": records, "out_sum": total}


def allgather_base(ctx, faults=(), numel: int = 6):
    """An all-gather into one tensor the way torch 2.6–2.12 issue ``all_gather_into_tensor``
    (``ProcessGroup._allgather_base``), then through ``all_gather_into_tensor`` itself, however this
    torch routes it (2.13: ``all_gather_single``), recorded, under the planted ``faults``.  Returns
    the records and what was gathered."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.core import call_site
    from llmcomm_tests.runtime.faults import install_faults, parse_faults
    from llmcomm_tests.runtime.recorder import Recorder

    pg = dist.group.WORLD
    installed = install_faults(parse_faults(faults)) if faults else None  # under the recorder
    recorder = Recorder().install()
    recorder.active = True
    call_site.set_phase("decode", 1)
    inp = torch.full((numel,), float(ctx.rank))
    old = torch.empty(numel * ctx.world_size)
    new = torch.empty(numel * ctx.world_size)
    with call_site.at_site("pp.boundary1"):
        pg._allgather_base(old, inp).wait()
        with warnings.catch_warnings():  # deprecated in 2.13 for all_gather_single, same route
            warnings.simplefilter("ignore", FutureWarning)
            dist.all_gather_into_tensor(new, inp)
    call_site.set_phase("none", -1)
    recorder.active = False
    from llmcomm_tests.runtime.metrics import records as as_records

    records = as_records([recorder.finalize(ctx.rank)])
    recorder.uninstall()
    if installed is not None:
        installed.uninstall()
    return {"records": records, "old": old.tolist(), "new": new.tolist()}


def deadlock(ctx):
    """Both ranks receive from each other first: neither sends, both wait in communication."""
    import torch
    import torch.distributed as dist

    buf = torch.empty(4)
    dist.recv(buf, 1 - ctx.rank)
    return ctx.rank


class _FakeStream:
    def __init__(self, calls, step_of):
        self.calls, self.step_of = calls, step_of

    def synchronize(self):
        self.calls.append(self.step_of())


def engine_stream_syncs(ctx, tp: int, pp: int, gen_len: int = 3):
    """The tiny engine on this rank as if on a GPU: a fake ``torch.cuda.current_stream`` records the
    decode step of every stream synchronize.  Returns the rank's steps."""
    import torch

    from llmcomm_tests.core import call_site
    from llmcomm_tests.engine.config import PRESETS
    from llmcomm_tests.engine.layout import Layout
    from llmcomm_tests.engine.parallel import ParallelEngine

    calls: list[int] = []
    torch.cuda.current_stream = lambda device=None: _FakeStream(calls, lambda: call_site.step)
    engine = ParallelEngine(PRESETS["tiny"], Layout(tp=tp, pp=pp), ctx.rank)
    engine.sync_each_token = True  # what a CUDA device sets
    engine.generate(torch.zeros(1, 4, dtype=torch.int64), gen_len)
    return calls


def offsets_over_nccl_like_default_group(ctx):
    """The default group refuses CPU tensors, as a NCCL-only group does: the clock exchange must go
    over the gloo side group it is given."""
    import torch.distributed as dist

    from llmcomm_tests.runtime.clocks import estimate_offsets

    host_group = dist.new_group(backend="gloo")
    real_send, real_recv = dist.send, dist.recv

    def refuse_cpu(real):
        def op(tensor, peer=None, group=None, *args, **kwargs):
            if group is None and tensor.device.type == "cpu":
                raise RuntimeError("No backend type associated with device type cpu")
            return real(tensor, peer, group, *args, **kwargs)
        return op

    dist.send, dist.recv = refuse_cpu(real_send), refuse_cpu(real_recv)
    try:
        return estimate_offsets(rounds=2, group=host_group)
    finally:
        dist.send, dist.recv = real_send, real_recv


def gpu_placement(ctx):
    """What this rank was given for a GPU: its NCCL variables, and the device ``init_rank`` binds
    with the local rank the launcher passed, joining a fake NCCL group (no GPU needed)."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.runtime.launch import init_rank

    bound, joined = [], {}
    torch.cuda.set_device = bound.append
    dist.init_process_group = lambda backend, **kw: joined.update(kw, backend=backend)
    dist.new_group = lambda **kw: "gloo-side-group"
    nccl_ctx = init_rank(ctx.rank, ctx.world_size, ctx.local_rank, "nccl", "file:///nonexistent", 10.0)
    return {"env": {k: v for k, v in os.environ.items() if k.startswith("NCCL_") or k == "EXTRA"},
            "bound": bound, "device": nccl_ctx.device, "device_id": str(joined.get("device_id"))}


def with_child(ctx, pid_dir, bad_rank: int = 1):
    """Start a child process that would outlive the rank, note its pid, then fail on ``bad_rank``."""
    import subprocess

    child = subprocess.Popen(["sleep", "600"])
    with open(os.path.join(pid_dir, f"child{ctx.rank}.pid"), "w") as f:
        f.write(str(child.pid))
    if ctx.rank == bad_rank:
        raise RuntimeError("planted failure with a child running")
    return hang(ctx, bad_rank=ctx.rank, seconds=3600)


def sleep_target(argv) -> int:
    """A node_rank target that runs until it is killed."""
    time.sleep(600)
    return 0


def quick_target(argv) -> int:
    """A node_rank target that is done at once."""
    return 0


def interleaved_delay(ctx, fault: str, late_rank: int = 1, late_s: float = 4e-3, pairs: int = 30):
    """All-reduces of 16 floats, clean and with ``fault`` armed in turn, rank ``late_rank`` arriving
    ``late_s`` late to each (its peer waits): per rank, the (wait, transfer) of every call and
    whether the fault was armed, and what the fault matched."""
    from types import SimpleNamespace

    import numpy as np
    import torch
    import torch.distributed as dist

    from llmcomm_tests.core import call_site
    from llmcomm_tests.runtime.faults import install_faults, parse_faults
    from llmcomm_tests.runtime.recorder import Recorder

    armed = SimpleNamespace(active=False)
    recorder = Recorder().install()
    installed = install_faults(parse_faults([fault]), armed, held_by=recorder)  # as runtime/measure.py
    recorder.active = True
    call_site.set_phase("decode", 1)
    x = torch.ones(16)
    armed.active = True
    dist.all_reduce(x)  # the fault plans this kind of call once, here: left out of the figures
    flags = [2]
    for i in range(2 * pairs):
        armed.active = bool(i % 2)
        flags.append(armed.active)
        dist.barrier()
        if ctx.rank == late_rank:
            time.sleep(late_s)
        dist.all_reduce(x)
    armed.active = recorder.active = False
    ops = recorder.finalize(ctx.rank)
    installed.uninstall()
    recorder.uninstall()
    return {"ops": ops, "armed": np.array(flags), "fired": installed.fired}  # per all_reduce: 0, 1, 2 (first)


def _armed_in_turn(armed, recorder, calls: int) -> list[bool]:
    """``2 * calls`` recorded decode all-reduces of 16 floats, a barrier before each, ``armed`` on
    every second one: which were armed."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.core import call_site

    recorder.active = True
    call_site.set_phase("decode", 1)
    x, flags = torch.ones(16), []
    for i in range(2 * calls):
        armed.active = bool(i % 2)
        flags.append(armed.active)
        dist.barrier()
        dist.all_reduce(x)
    armed.active = recorder.active = False
    call_site.set_phase("none", -1)
    return flags


def slow_lookup(ctx, over: bool, lookup_s: float = 10e-3, calls: int = 20):
    """All-reduces, clean and with ``all_reduce:delay=0%`` armed in turn, the fault's lookup made
    ``lookup_s`` slow (its payload read waits), the fault's method patch over the recorder
    (``over``, as runtime/measure.py installs a slowdown) or under it: the records, which
    all-reduces were armed, and what the fault fired."""
    from types import SimpleNamespace

    import torch.distributed as dist

    from llmcomm_tests.runtime import faults, recorder as recorder_module
    from llmcomm_tests.runtime.recorder import Recorder

    real_reader = recorder_module.payload_reader

    def slow_reader(kind):
        read = real_reader(kind)

        def slow(args):
            faults._wait(lookup_s)
            return read(args)

        return slow

    import inspect

    before = [inspect.getattr_static(dist.ProcessGroup, "allreduce"), inspect.getattr_static(dist.Work, "wait")]
    armed, fault = SimpleNamespace(active=False), faults.parse_faults(["all_reduce:delay=0%"])
    recorder = Recorder()
    if over:
        recorder.install()
    recorder_module.payload_reader = slow_reader  # the faults' reader only: the recorder installs apart
    try:
        installed = faults.install_faults(fault, armed, held_by=recorder)
    finally:
        recorder_module.payload_reader = real_reader
    if not over:
        recorder.install()
    flags = _armed_in_turn(armed, recorder, calls)
    ops = recorder.finalize(ctx.rank)
    for patch in (installed, recorder) if over else (recorder, installed):  # the reverse order of installation
        patch.uninstall()
    return {"ops": ops, "armed": flags, "fired": installed.fired,
            "restored": [inspect.getattr_static(dist.ProcessGroup, "allreduce"), inspect.getattr_static(dist.Work, "wait")]
            == before}


def held_slowdown(ctx, fault: str, bookkeeping_s: float, calls: int = 24):
    """All-reduces, clean and with ``fault`` armed in turn, installed as runtime/measure.py installs a
    slowdown (over the recorder, held by it), the recorder's bookkeeping before each plant made
    ``bookkeeping_s`` slow: the records, which calls were armed, what fired, and what is still held."""
    from types import SimpleNamespace

    from llmcomm_tests.runtime import faults
    from llmcomm_tests.runtime.recorder import Recorder

    armed = SimpleNamespace(active=False)
    recorder = Recorder().install()
    installed = faults.install_faults(faults.parse_faults([fault]), armed, held_by=recorder)

    def slow_plant(hold, since_ns):
        faults._wait(bookkeeping_s)
        faults.plant(hold, since_ns)

    recorder.plant = slow_plant
    flags = _armed_in_turn(armed, recorder, calls)
    ops = recorder.finalize(ctx.rank)
    installed.uninstall()
    recorder.uninstall()
    return {"ops": ops, "armed": flags, "fired": installed.fired,
            "held": len(recorder.held) + len(recorder._holds) + (recorder.holding is not None)}
