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
A planted slowdown (``runtime/faults.py``) is held here, so it lands inside the window and arming
one adds next to nothing else to it: a fault over the recorder hands it over in ``holding`` just
before the call, the recorder files it under the call's row before its issue clock, and the wait
plants it before the end clock, sized from when the wait returned (``plant(entry, since_ns)``), so
the bytecodes that find it are part of the time planted, not added to it.  A call made while the
recorder is off (an unrecorded repetition) is held in ``held`` by its Work instead.
Phase, step and site come from ``llmcomm_tests.core.call_site``, set by the engine.
"""

from __future__ import annotations

import functools
import time

import torch
import torch.distributed as dist

from llmcomm_tests.core import call_site
from llmcomm_tests.core.contract import FUNCTIONAL_OPS, PG_METHODS, site_class, wire_bytes
from llmcomm_tests.core.documents import CallClass, RankOps
from llmcomm_tests.runtime.pg_patch import PgPatch


def _numel_dtype(arg) -> tuple[int, object]:
    """Total elements and first dtype of a tensor or a (nested) list of tensors."""
    if isinstance(arg, torch.Tensor):
        return arg.numel(), arg.dtype
    numel, dtype = 0, None
    for item in arg:
        n, d = _numel_dtype(item)
        numel += n
        dtype = d if dtype is None else dtype
    return numel, dtype


_ARG_OF_KIND = {"tensors": 0, "output_list": 0, "input_list": 1, "input_lists": 1, "input_single": 1}


def payload_reader(kind: str | None):
    """``read(args) -> (numel, dtype)`` of the tensors whose size is the op's payload on this rank
    (see docs/communication.md); the one-tensor list of the common call is read without recursion."""
    if kind is None:
        return lambda args: (0, torch.uint8)
    index = _ARG_OF_KIND.get(kind, 0)  # output_list (scatter): what this rank receives
    tensor_type = torch.Tensor

    def read(args):
        arg = args[index]
        if arg.__class__ is list and len(arg) == 1 and arg[0].__class__ is tensor_type:
            return arg[0].numel(), arg[0].dtype
        if arg.__class__ is tensor_type:
            return arg.numel(), arg.dtype
        numel, dtype = _numel_dtype(arg)
        return numel, torch.uint8 if dtype is None else dtype

    return read


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


ROOTED = ("send", "recv", "gather", "scatter", "broadcast", "reduce")

# One recorded call is one tuple in ``Recorder._rows`` (fields in this order) plus its end time in
# ``Recorder._end_ns`` (0: no completion seen); groups are ProcessGroups, or a group name for
# functional ops, resolved in finalize().
OP, GROUP, NUMEL, DTYPE, ROOT, PHASE, STEP, SITE, REP, START_NS = range(10)


class CallView:
    """One recorded call, read from the recorder's rows (built on access, never on the hot path)."""

    __slots__ = ("_recorder", "_index")

    def __init__(self, recorder: "Recorder", index: int):
        self._recorder, self._index = recorder, index

    def _field(self, i):
        return self._recorder._rows[self._index][i]

    op = property(lambda self: self._field(OP))
    group = property(lambda self: self._field(GROUP))
    numel = property(lambda self: self._field(NUMEL))
    dtype = property(lambda self: self._field(DTYPE))
    root = property(lambda self: self._field(ROOT))
    phase = property(lambda self: self._field(PHASE))
    step = property(lambda self: self._field(STEP))
    site = property(lambda self: self._field(SITE))
    rep = property(lambda self: self._field(REP))
    start_ns = property(lambda self: self._field(START_NS))  # host issue time (perf_counter_ns)
    end_ns = property(lambda self: self._recorder._end_ns[self._index])  # host time the wait returned


class _Records:
    """The calls recorded so far as a sequence of :class:`CallView`: ``len``, iteration, indexing,
    slicing, ``del records[i:]`` (drop a tail) and ``clear()``."""

    def __init__(self, recorder: "Recorder"):
        self._recorder = recorder

    def __len__(self) -> int:
        return len(self._recorder._rows)

    def __iter__(self):
        return (CallView(self._recorder, i) for i in range(len(self)))

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [CallView(self._recorder, i) for i in range(*index.indices(len(self)))]
        index = index + len(self) if index < 0 else index
        if not 0 <= index < len(self):
            raise IndexError(index)
        return CallView(self._recorder, index)

    def __delitem__(self, index) -> None:
        start, stop, step = (index if isinstance(index, slice) else slice(index, index + 1)).indices(len(self))
        if step != 1 or stop != len(self):
            raise ValueError("only a tail of the records can be dropped")
        self._recorder._truncate(start)

    def clear(self) -> None:
        self._recorder._truncate(0)


class Recorder:
    """Install on a rank with ``Recorder().install()``; ops are kept while ``active``.

    The hot path (one wrapped call and its wait) appends one tuple and one int and does no other
    allocation: the wrappers are built once per method at install, with everything they read bound
    as closure variables (docs/measurements.md#recorder-cost)."""

    def __init__(self, cuda_events: bool = False):
        self.active = False
        self.rep = 0
        self.cuda_events = cuda_events
        self._rows: list[tuple] = []
        self._end_ns: list[int] = []
        self._start_events: dict[int, object] = {}  # row -> CUDA event recorded at issue
        self._end_events: dict[int, object] = {}  # row -> CUDA event recorded after the wait
        self._pending: dict[object, int] = {}  # Work (kept alive until waited) -> row
        self._pending_tensors: dict[int, int] = {}  # functional op's output data_ptr -> row
        self.installed = False  # its patches are in place (faults installed after it sit over it)
        self.holding = None  # the planted slowdown the next call carries (module docstring)
        self._holds: dict[int, object] = {}  # row -> its planted slowdown
        self.held: dict[object, object] = {}  # Work -> the planted slowdown of a call made while off
        self.plant = None  # plant(slowdown, since_ns or None): set by the faults that hold (runtime/faults.py)
        self._patch = PgPatch()
        self._library = None

    @property
    def records(self) -> _Records:
        return _Records(self)

    def _truncate(self, n: int) -> None:
        del self._rows[n:], self._end_ns[n:]
        for table in (self._start_events, self._end_events, self._holds):
            for row in [r for r in table if r >= n]:
                del table[row]
        for table in (self._pending, self._pending_tensors):
            for key in [k for k, r in table.items() if r >= n]:
                del table[key]

    # -- installation ----------------------------------------------------------------------------

    def install(self) -> "Recorder":
        self.installed = True
        for method, (op, kind) in PG_METHODS.items():
            self._patch.wrap_method(method, functools.partial(self._wrap_method, method, op, kind))
        self._patch.wrap_wait(self._wrap_wait)
        self._install_functional()
        return self

    def uninstall(self) -> None:
        self.installed = False
        self._patch.restore()
        if self._library is not None:
            self._library._destroy()
            self._library = None

    def _issue(self, op, group, numel, dtype, root) -> int:
        """Append one call (the functional path's issue); its row."""
        row = len(self._rows)
        self._rows.append((op, group, numel, dtype, root, call_site.phase, call_site.step, call_site.site, self.rep,
                           time.perf_counter_ns()))
        self._end_ns.append(0)
        if self.cuda_events:
            self._start_event(row)
        return row

    def _start_event(self, row: int) -> None:
        event = self._start_events[row] = torch.cuda.Event(enable_timing=True)
        event.record()

    def _wrap_method(self, method, op, kind, original):
        recorder, rows, end_ns, pending, holds = self, self._rows, self._end_ns, self._pending, self._holds
        read_payload, where, clock, cuda = payload_reader(kind), call_site, time.perf_counter_ns, self.cuda_events
        rooted, tensor_type = method in ROOTED, torch.Tensor
        # The common call (a list of one tensor, e.g. all_reduce) is read inline: a function call
        # costs as much as the rest of the hook.
        index = _ARG_OF_KIND.get(kind, -1) if kind in ("tensors", "input_list", "input_single") else -1

        def recorded(pg, *args, **kwargs):
            if not recorder.active:
                return original(pg, *args, **kwargs)
            arg = args[index] if index >= 0 else None
            if arg.__class__ is list and len(arg) == 1 and arg[0].__class__ is tensor_type:
                numel, dtype = arg[0].numel(), arg[0].dtype
            else:
                numel, dtype = read_payload(args)
            row = len(rows)
            if recorder.holding is not None:  # filed before the issue clock: not part of the call's time
                holds[row], recorder.holding = recorder.holding, None
            rows.append((op, pg, numel, dtype, _root(method, args) if rooted else -1, where.phase, where.step,
                         where.site, recorder.rep, clock()))
            end_ns.append(0)
            if cuda:
                recorder._start_event(row)
            work = original(pg, *args, **kwargs)
            if work is not None:  # else no completion to time: the call counts in no_completion()
                pending[work] = row
            return work

        recorded.__name__ = method
        return recorded

    def _wrap_wait(self, original):
        recorder, pending, end_ns, clock, cuda = self, self._pending, self._end_ns, time.perf_counter_ns, self.cuda_events
        holds, held = self._holds, self.held

        def wait(work, *args, **kwargs):
            result = original(work, *args, **kwargs)
            if holds or held:  # a planted slowdown ends the call later, inside its window (module docstring)
                since = clock()
                hold = holds.pop(pending.get(work, -1), None) if holds else None
                if hold is None and held:
                    hold = held.pop(work, None)
                if hold is not None:
                    recorder.plant(hold, since)
            if pending:
                row = pending.pop(work, -1)
                if row >= 0:
                    end_ns[row] = clock()
                    if cuda:
                        recorder._end_event(row)
            return result

        return wait

    def _end_event(self, row: int) -> None:
        event = self._end_events[row] = torch.cuda.Event(enable_timing=True)
        event.record()

    def _finish(self, row: int) -> None:
        self._end_ns[row] = time.perf_counter_ns()
        if self.cuda_events:
            self._end_event(row)

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
            row = self._pending_tensors.pop(tensor.data_ptr(), None)
            if row is not None:
                self._finish(row)
            return out

        library.impl("wait_tensor", wait_kernel, "BackendSelect")
        self._library = library

    def _functional_kernel(self, overload, op, group_arg):
        def kernel(*args):
            tensor = args[0]
            out = overload.redispatch(_backend_keys(tensor), *args)
            if self.active:
                root = int(args[1]) if op == "broadcast" else -1
                row = self._issue(op, str(args[group_arg]), tensor.numel(), tensor.dtype, root)
                self._pending_tensors[out.data_ptr()] = row
            return out

        return kernel

    # -- results ---------------------------------------------------------------------------------

    def no_completion(self) -> dict[str, int]:
        """Calls whose completion was never seen (the backend returned no Work, or nobody waited),
        per "op phase site class": they have no duration, and a latency row built without them
        must say so instead of vanishing."""
        out: dict[str, int] = {}
        for row, end in zip(self._rows, self._end_ns):
            if not end:
                key = f"{row[OP]} {row[PHASE]} {site_class(row[SITE])}"
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
        n = len(self._rows)
        cls, rep, step = (np.empty(n, np.int32) for _ in range(3))
        start_ns = np.empty(n, np.int64)
        duration_s = np.full(n, np.nan)
        for i, (row, end) in enumerate(zip(self._rows, self._end_ns)):
            group = row[GROUP]
            gkey = group if isinstance(group, str) else id(group)
            if gkey not in groups:
                groups[gkey] = _group_ranks(group)
            key = (row[OP], gkey, row[DTYPE], row[NUMEL], row[ROOT], row[PHASE], row[SITE])
            index = classes.get(key)
            if index is None:
                index = classes[key] = len(table)
                table.append(_call_class(row, groups[gkey], rank))
            cls[i], rep[i], step[i], start_ns[i] = index, row[REP], row[STEP], row[START_NS]
            if i in self._end_events:
                duration_s[i] = self._start_events[i].elapsed_time(self._end_events[i]) / 1e3
            elif end:
                duration_s[i] = (end - row[START_NS]) / 1e9
        return RankOps(rank, table, cls, rep, step, start_ns, duration_s, self.cuda_events)


def _call_class(row: tuple, ranks: list[int], rank: int) -> CallClass:
    op, numel, dtype, root = row[OP], row[NUMEL], row[DTYPE], row[ROOT]
    elem = torch.empty((), dtype=dtype).element_size()
    group_rank = ranks.index(rank) if rank in ranks else 0
    nbytes = numel * elem
    # send/recv name their peer, rooted ops their root, as a group rank: keep the global rank
    peer = ranks[root] if 0 <= root < len(ranks) else None
    return CallClass(op, tuple(ranks), str(dtype).replace("torch.", ""), numel, nbytes,
                     wire_bytes(op, nbytes, len(ranks), group_rank, root), row[PHASE], row[SITE], peer)


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
