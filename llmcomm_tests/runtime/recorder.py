"""Record every communication op a rank issues: op, group, bytes, wire bytes, phase, step, site, time.

How ops are seen (torch 2.13):

* Eager ``torch.distributed`` calls (``dist.all_reduce``, ``send``, ``gather``, batch_isend_irecv,
  …) all reach a Python-visible ``ProcessGroup`` method.  We patch those methods on the class: it
  catches every caller, whatever module issued it, and costs nothing for compute ops (a
  TorchDispatchMode would tax every aten op; a Python kernel on the ``c10d::`` ops pays for boxing
  on every call: docs/measurements.md#recorder-cost).
* Functional collectives (``_c10d_functional``, what DTensor uses) go from C++ straight to the
  ProcessGroup and never touch those Python methods; we register a BackendSelect kernel for those
  ops only, so the cost falls only on code that uses them.

Timing.  An op starts when it is issued and ends when its caller waits for it (``Work.wait`` or
``wait_tensor``): for the blocking calls the engine makes this is the blocking call, peers'
lateness included.  On NCCL the host clock would only see the launch, so we also record CUDA events
on the caller's stream at issue and after the wait, and report the event time.
Phase, step and site come from ``llmcomm_tests.core.call_site``, set by the engine.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llmcomm_tests.core import call_site
from llmcomm_tests.core.contract import FUNCTIONAL_OPS, PG_METHODS, site_class, wire_bytes
from llmcomm_tests.core.documents import CallClass, RankOps
from llmcomm_tests.runtime.pg_patch import PgPatch


def _tensors(arg) -> list[torch.Tensor]:
    if isinstance(arg, torch.Tensor):
        return [arg]
    out = []
    for item in arg:
        out.extend(_tensors(item) if not isinstance(item, torch.Tensor) else [item])
    return out


def _payload(kind: str | None, args: tuple) -> list[torch.Tensor]:
    """The tensors whose size is the op's payload on this rank (see docs/communication.md)."""
    if kind is None:
        return []
    if kind == "tensors":
        return _tensors(args[0])
    if kind in ("input_list", "input_lists", "input_single"):
        return _tensors(args[1])
    return _tensors(args[0])  # output_list (scatter): what this rank receives


def _root(method: str, args: tuple) -> int:
    """Root (group rank) of rooted ops, peer of p2p ops, -1 otherwise."""
    if method in ("send", "recv"):
        return int(args[1])
    if method in ("gather", "scatter", "broadcast", "reduce"):
        opts = args[-1]
        if isinstance(opts, int):  # broadcast(tensor, root) overload
            return opts
        return int(getattr(opts, "rootRank", -1))
    return -1


@dataclass
class _Call:
    """One call as the hook sees it; resolved into the class table and columns by ``finalize``."""

    op: str
    group: object  # ProcessGroup, or a group name for functional ops; resolved in finalize()
    numel: int
    dtype: torch.dtype
    root: int
    phase: str
    step: int
    site: str
    rep: int
    start_ns: int  # host issue time (perf_counter_ns); on CUDA the duration comes from the events
    end_ns: int = 0  # host time the caller's wait returned; 0: no completion seen
    start_event: object = None
    end_event: object = None


class Recorder:
    """Install on a rank with ``Recorder().install()``; ops are kept while ``active``."""

    def __init__(self, cuda_events: bool = False):
        self.records: list[_Call] = []
        self.active = False
        self.rep = 0
        self.cuda_events = cuda_events
        self._pending: dict[int, tuple[object, _Call]] = {}
        self._pending_tensors: dict[int, _Call] = {}
        self._patch = PgPatch()
        self._library = None

    # -- installation ----------------------------------------------------------------------------

    def install(self) -> "Recorder":
        for method, (op, kind) in PG_METHODS.items():
            self._patch.wrap_method(method, functools.partial(self._wrap_method, method, op, kind))
        self._patch.wrap_wait(self._wrap_wait)
        self._install_functional()
        return self

    def uninstall(self) -> None:
        self._patch.restore()
        if self._library is not None:
            self._library._destroy()
            self._library = None

    def _issue(self, op, group, numel, dtype, root) -> _Call:
        rec = _Call(op, group, numel, dtype, root, call_site.phase, call_site.step, call_site.site, self.rep,
                       time.perf_counter_ns())
        if self.cuda_events:
            rec.start_event = torch.cuda.Event(enable_timing=True)
            rec.start_event.record()
        self.records.append(rec)
        return rec

    def _wrap_method(self, method, op, kind, original):
        recorder = self

        def recorded(pg, *args, **kwargs):
            if not recorder.active:
                return original(pg, *args, **kwargs)
            tensors = _payload(kind, args)
            numel = sum(t.numel() for t in tensors)
            dtype = tensors[0].dtype if tensors else torch.uint8
            rec = recorder._issue(op, pg, numel, dtype, _root(method, args))
            work = original(pg, *args, **kwargs)
            if work is not None:  # else no completion to time: the call counts in no_completion()
                recorder._pending[id(work)] = (work, rec)
            return work

        recorded.__name__ = method
        return recorded

    def _wrap_wait(self, original):
        recorder = self

        def wait(work, *args, **kwargs):
            result = original(work, *args, **kwargs)
            entry = recorder._pending.pop(id(work), None)
            if entry is not None:
                recorder._finish(entry[1])
            return result

        return wait

    def _finish(self, rec: _Call) -> None:
        rec.end_ns = time.perf_counter_ns()
        if self.cuda_events:
            rec.end_event = torch.cuda.Event(enable_timing=True)
            rec.end_event.record()

    def _install_functional(self) -> None:
        library = torch.library.Library("_c10d_functional", "IMPL")
        for name, (op, group_arg) in FUNCTIONAL_OPS.items():
            overload = getattr(torch.ops._c10d_functional, name, None)
            if overload is None:
                continue
            library.impl(name, self._functional_kernel(overload.default, op, group_arg), "BackendSelect")
        wait = torch.ops._c10d_functional.wait_tensor.default

        def wait_kernel(tensor):
            out = wait.redispatch(_backend_keys(tensor), tensor)
            rec = self._pending_tensors.pop(tensor.data_ptr(), None)
            if rec is not None:
                self._finish(rec)
            return out

        library.impl("wait_tensor", wait_kernel, "BackendSelect")
        self._library = library

    def _functional_kernel(self, overload, op, group_arg):
        def kernel(*args):
            tensor = args[0]
            out = overload.redispatch(_backend_keys(tensor), *args)
            if self.active:
                root = int(args[1]) if op == "broadcast" else -1
                rec = self._issue(op, str(args[group_arg]), tensor.numel(), tensor.dtype, root)
                self._pending_tensors[out.data_ptr()] = rec
            return out

        return kernel

    # -- results ---------------------------------------------------------------------------------

    def no_completion(self) -> dict[str, int]:
        """Calls whose completion was never seen (the backend returned no Work, or nobody waited),
        per "op phase site class": they have no duration, and a latency row built without them
        must say so instead of vanishing."""
        out: dict[str, int] = {}
        for rec in self.records:
            if not rec.end_ns:
                key = f"{rec.op} {rec.phase} {site_class(rec.site)}"
                out[key] = out.get(key, 0) + 1
        return out

    def finalize(self, rank: int) -> RankOps:
        """Every call of this rank as columns over a table of call classes (op, group, dtype, size,
        phase, site, peer), with bytes and wire bytes resolved (docs/communication.md): compact
        enough to ship ~100 000 calls per rank back to the launcher."""
        import numpy as np

        if self.cuda_events:
            torch.cuda.synchronize()
        groups: dict[object, list[int]] = {}
        classes: dict[tuple, int] = {}
        table: list[CallClass] = []
        n = len(self.records)
        cls, rep, step = (np.empty(n, np.int32) for _ in range(3))
        start_ns = np.empty(n, np.int64)
        duration_s = np.full(n, np.nan)
        for i, rec in enumerate(self.records):
            gkey = rec.group if isinstance(rec.group, str) else id(rec.group)
            if gkey not in groups:
                groups[gkey] = _group_ranks(rec.group)
            key = (rec.op, gkey, rec.dtype, rec.numel, rec.root, rec.phase, rec.site)
            index = classes.get(key)
            if index is None:
                index = classes[key] = len(table)
                table.append(_call_class(rec, groups[gkey], rank))
            cls[i], rep[i], step[i], start_ns[i] = index, rec.rep, rec.step, rec.start_ns
            if rec.end_event is not None:
                duration_s[i] = rec.start_event.elapsed_time(rec.end_event) / 1e3
            elif rec.end_ns:
                duration_s[i] = (rec.end_ns - rec.start_ns) / 1e9
        return RankOps(rank, table, cls, rep, step, start_ns, duration_s, self.cuda_events)


def _call_class(rec: _Call, ranks: list[int], rank: int) -> CallClass:
    elem = torch.empty((), dtype=rec.dtype).element_size()
    group_rank = ranks.index(rank) if rank in ranks else 0
    nbytes = rec.numel * elem
    # send/recv name their peer, rooted ops their root, as a group rank: keep the global rank
    peer = ranks[rec.root] if 0 <= rec.root < len(ranks) else None
    return CallClass(rec.op, tuple(ranks), str(rec.dtype).replace("torch.", ""), rec.numel, nbytes,
                     wire_bytes(rec.op, nbytes, len(ranks), group_rank, rec.root), rec.phase, rec.site, peer)


def _backend_keys(tensor: torch.Tensor):
    key = torch._C.DispatchKey.CUDA if tensor.is_cuda else torch._C.DispatchKey.CPU
    return torch._C.DispatchKeySet(key)


def _group_ranks(group) -> list[int]:
    if isinstance(group, str):
        from torch.distributed.distributed_c10d import _resolve_process_group

        group = _resolve_process_group(group)
    try:
        return dist.get_process_group_ranks(group)
    except (ValueError, RuntimeError):  # not registered (world of one)
        return list(range(group.size()))
