"""Planted faults, so a user can prove a gate catches a regression before trusting it.

Syntax: ``OP[@SITE]:KIND=VALUE`` — OP is a recorded op name (all_reduce, all_gather, gather,
broadcast, send, recv), SITE an optional site class (attn, mlp, embed, lm_head, pp.boundary, …):

* ``all_reduce:delay=10%``   each call takes 10 % longer (it sleeps for 10 % of its own duration,
  from its issue to its wait's return)
* ``send@pp.boundary:delay=2ms``   a fixed extra 2 ms per call

A delay runs when the caller waits for the op, after the op completed: on gloo the host spins; on
NCCL a ``torch.cuda._sleep`` kernel spins on the caller's stream (``gpu_delay``), since an NCCL
``wait`` does not block the host.  A relative delay on NCCL takes the op class's latest GPU
duration (CUDA events).
* ``all_reduce@attn:extra=1``   one more all-reduce of the same tensor after each call
* ``all_reduce@mlp:size=2``   the message is twice as large (the tensor is padded, the result kept)
* ``all_reduce:crash=1``   rank 1 raises on its first such op (see how a crashed rank is reported)
* ``send:hang=0``   rank 0 stops at its first such op (see how a hung rank is reported)

Faults sit *under* the recorder: the recorder measures their effect like any other regression.
Each installation counts the ops each fault matched (``InstalledFaults.fired``); a fault that
matched nothing anywhere fails its case (``never_fired``).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from llmcomm_tests.core import call_site
from llmcomm_tests.core.contract import BUDGET_OPS, methods_of, site_class
from llmcomm_tests.core.units import parse_count, parse_duration, parse_factor, parse_percent
from llmcomm_tests.runtime.pg_patch import PgPatch

_SYNTAX = re.compile(r"^(?P<op>[a-z_]+)(?:@(?P<site>[a-z_.]+))?:(?P<kind>delay|extra|size|crash|hang)=(?P<value>\S+)$")
_USAGE = "OP[@SITE]:delay=10%|delay=2ms|extra=1|size=2|crash=R|hang=R"


@dataclass(frozen=True)
class Fault:
    op: str
    site: str | None
    kind: str  # delay | extra | size | crash | hang
    value: float  # delay: fraction (relative) or seconds (absolute); extra: count; size: factor
    relative: bool = False

    def __str__(self) -> str:
        where = f"@{self.site}" if self.site else ""
        if self.kind == "delay":
            value = f"{self.value:.0%}" if self.relative else f"{self.value * 1e3:g}ms"
        else:
            value = f"{self.value:g}"
        return f"{self.op}{where}:{self.kind}={value}"


def parse_fault(text: str) -> Fault:
    m = _SYNTAX.match(text.strip())
    if not m or m["op"] not in BUDGET_OPS:
        raise ValueError(f"bad fault {text!r}: expected {_USAGE} with OP in {', '.join(BUDGET_OPS)}")
    op, kind = m["op"], m["kind"]
    try:
        value, relative = _fault_value(kind, m["value"])
    except ValueError as exc:
        raise ValueError(f"bad fault {text!r}: {kind}: {exc}") from None
    if kind == "size" and (value <= 1 or op not in ("all_reduce", "broadcast")):
        raise ValueError(f"bad fault {text!r}: size=N needs N > 1 and op all_reduce or broadcast")
    if kind == "extra" and op != "all_reduce":
        raise ValueError(f"bad fault {text!r}: extra=N needs op all_reduce")
    return Fault(op, m["site"], kind, value, relative)


def _fault_value(kind: str, text: str) -> tuple[float, bool]:
    """(value, relative) of ``KIND=VALUE``: a delay is a percentage of the call (``10%``) or a
    duration (``2ms``; a bare number is seconds), extra a count >= 1, size a factor (``2``, ``2x``),
    crash and hang a global rank."""
    if kind == "delay":
        if text.endswith("%"):
            return parse_percent(text), True
        if not text[:1].isdigit() and not text.startswith("."):
            raise ValueError(f"expected a percentage such as 10% or a duration such as 2ms, got {text!r}")
        return parse_duration(text, unitless="s"), False
    if kind == "extra":
        return float(parse_count(text, minimum=1)), False
    if kind == "size":
        return parse_factor(text), False
    return float(parse_count(text)), False  # crash, hang: a rank


def parse_faults(texts) -> list[Fault]:
    return [parse_fault(t) for t in texts]


class InstalledFaults:
    """The patches of one ``install_faults`` call, and how often each fault matched an op here.

    ``fired`` (fault text → ops it matched on this rank) travels back in the rank's result: a
    fault that matched nothing on any rank planted nothing, and the case must say so."""

    def __init__(self, faults=()):
        self.faults = list(faults)
        self.fired: dict[str, int] = {str(f): 0 for f in self.faults}
        self._patch = PgPatch()
        self._delayed: dict[int, tuple] = {}  # id(work) -> (work, issued ns, delay faults, op key, start event)
        self._durations: dict[tuple, float] = {}  # op key -> last completed GPU duration (relative delays)
        self._gpu_events: list = []  # (start, end, key) not yet read
        self.gpu_delay = None  # GpuDelay, made on the first delay of a CUDA op

    def uninstall(self) -> None:
        self._patch.restore()

    # -- delays: applied when the caller waits, on the host (gloo) or the GPU stream (NCCL) -------

    def _delay_at_wait(self, work, faults, key, cuda: bool, issued_ns: int) -> None:
        """``issued_ns``: when the caller issued the op.  A host op's duration, which a relative
        delay scales, runs from there to the wait's return.  A gloo send writes its bytes while it
        is issued, so a delay timed from the returned Work would plant less than asked
        (docs/measurements.md#planted-delays)."""
        import torch

        start = None
        if cuda:
            start = torch.cuda.Event(enable_timing=True)
            start.record()  # after the op was enqueued: brackets the op's own stream wait below
        self._delayed[id(work)] = (work, issued_ns, faults, key, start)

    def _wrap_wait(self, original):
        installed = self

        def wait(work, *args, **kwargs):
            result = original(work, *args, **kwargs)
            entry = installed._delayed.pop(id(work), None)
            if entry is not None:
                installed._plant(*entry[1:])
            return result

        return wait

    def _plant(self, issued_ns: int, faults, key, start) -> None:
        """Waiting a p2p Work twice hangs on gloo (each wait consumes one completion), so the
        delay runs here, after the caller's own wait, inside the time the recorder measures.
        A caller that never waits (or waits through a future) gets no delay, and it is not counted."""
        for fault in faults:
            self.fired[str(fault)] += 1
        if start is None:  # host op: it has completed
            elapsed = (time.perf_counter_ns() - issued_ns) / 1e9
            for fault in faults:
                _wait(elapsed * fault.value if fault.relative else fault.value)
            return
        import torch

        end = torch.cuda.Event(enable_timing=True)
        end.record()  # the stream has waited for the collective: this marks its completion
        elapsed = 0.0
        if any(f.relative for f in faults):
            self._gpu_events.append((start, end, key))
            elapsed = self._gpu_duration(key)
        if self.gpu_delay is None:
            from llmcomm_tests.runtime.gpu_delay import GpuDelay

            self.gpu_delay = GpuDelay(torch)
        for fault in faults:
            self.gpu_delay(elapsed * fault.value if fault.relative else fault.value)

    def _gpu_duration(self, key) -> float:
        """The latest completed GPU duration of this op class, read without blocking; the first
        call of a class synchronises once on its own end event (nothing to go by yet)."""
        pending = []
        for start, end, k in self._gpu_events:
            if end.query():
                self._durations[k] = start.elapsed_time(end) / 1e3
            else:
                pending.append((start, end, k))
        self._gpu_events = pending
        if key not in self._durations:
            start, end, _ = next(e for e in reversed(pending) if e[2] == key)
            end.synchronize()
            self._durations[key] = start.elapsed_time(end) / 1e3
        return self._durations[key]


def install_faults(faults, recorder=None, cuda: bool | None = None) -> InstalledFaults:
    """Patch the ProcessGroup methods of the faulty ops.  Call before ``Recorder.install`` so the
    recorder wraps (and measures) the faulty call.  Faults act only while the engine is in a phase,
    and only while the recorder (if given) is active, so warm-up stays clean.  ``cuda`` (default:
    the recorder's ``cuda_events``): fit the GPU delay's clock now, not inside a timed op."""
    import torch
    import torch.distributed as dist

    installed = InstalledFaults(faults)
    if cuda is None:
        cuda = bool(getattr(recorder, "cuda_events", False))
    if cuda and any(f.kind == "delay" for f in faults):
        from llmcomm_tests.runtime.gpu_delay import GpuDelay

        installed.gpu_delay = GpuDelay(torch)
    by_method: dict[str, list[Fault]] = {}
    for fault in faults:
        for method in methods_of(fault.op):
            by_method.setdefault(method, []).append(fault)
    if any(f.kind == "delay" for f in faults):
        installed._patch.wrap_wait(installed._wrap_wait)
    for method, method_faults in by_method.items():
        def make_faulty(_original, _faults=method_faults, _method=method):
            def faulty(pg, *args, **kwargs):
                active = [f for f in _faults if not _busy and call_site.phase != "none"
                          and (recorder is None or recorder.active)
                          and (f.site is None or site_class(call_site.site) == f.site)]
                if not active:
                    return _original(pg, *args, **kwargs)
                for fault in active:
                    if fault.kind != "delay":  # a delay counts when it is planted (at the caller's wait)
                        installed.fired[str(fault)] += 1
                    if fault.kind in ("crash", "hang") and dist.get_rank() == int(fault.value):
                        if fault.kind == "crash":
                            raise RuntimeError(f"planted crash ({fault}) on rank {dist.get_rank()}")
                        time.sleep(1e9)
                    if fault.kind == "size":
                        return _padded(pg, args, kwargs, _original, fault.value, torch)
                issued_ns = time.perf_counter_ns()
                work = _original(pg, *args, **kwargs)
                extras = [f for f in active if f.kind == "extra"]
                if extras:  # all_reduce only (parse_fault): its Work may be waited twice
                    work.wait()
                    for fault in extras:
                        _extra_all_reduce(pg, args, kwargs, int(fault.value))
                delays = [f for f in active if f.kind == "delay"]
                if delays and work is not None:
                    tensor = _first_tensor(args)
                    cuda = tensor is not None and tensor.is_cuda
                    key = (_method, tensor.numel() if tensor is not None else 0)
                    installed._delay_at_wait(work, delays, key, cuda, issued_ns)
                return work

            return faulty

        installed._patch.wrap_method(method, make_faulty)
    return installed


def _first_tensor(args):
    import torch

    for arg in args:
        if isinstance(arg, torch.Tensor):
            return arg
        if isinstance(arg, (list, tuple)):
            found = _first_tensor(arg)
            if found is not None:
                return found
    return None


def never_fired(faults, fired_per_rank, case: str) -> list[str]:
    """One message per fault that matched no op on any rank: it planted nothing, so a passing
    case would prove nothing about the gate it was meant to test."""
    total = {str(f): 0 for f in faults}
    for fired in fired_per_rank:
        for name, n in (fired or {}).items():
            total[name] = total.get(name, 0) + n
    return [f"fault {f} never fired in {case}" for f in faults if not total[str(f)]]


def _wait(seconds: float) -> None:
    """time.sleep overshoots short waits by ~60-100 µs on Linux, which would plant a larger fault
    than asked for; spin for the last millisecond instead."""
    end = time.perf_counter() + seconds
    if seconds > 2e-3:
        time.sleep(seconds - 1e-3)
    while time.perf_counter() < end:
        pass


_busy = False  # set while a fault issues its own op, so that op is recorded but not faulted again


def _extra_all_reduce(pg, args, kwargs, count: int) -> None:
    """Issue extra all-reduces through the (recorded) ProcessGroup method, on scratch copies."""
    import torch.distributed as dist

    global _busy
    tensors = args[0] if isinstance(args[0], list) else [args[0]]
    _busy = True
    try:
        for _ in range(count):
            dist.ProcessGroup.allreduce(pg, [t.clone() for t in tensors], *args[1:], **kwargs).wait()
    finally:
        _busy = False


def _padded(pg, args, kwargs, original, factor, torch):
    """Run the op on a buffer ``factor`` times larger that starts with the real tensor."""
    tensor = args[0][0] if isinstance(args[0], list) else args[0]
    flat = tensor.reshape(-1)
    big = torch.zeros(int(flat.numel() * factor), dtype=tensor.dtype, device=tensor.device)
    big[: flat.numel()] = flat
    work = original(pg, [big], *args[1:], **kwargs)
    work.wait()
    tensor.copy_(big[: flat.numel()].view_as(tensor))
    return work
