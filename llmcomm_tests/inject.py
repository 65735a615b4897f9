"""Planted faults, so a user can prove a gate catches a regression before trusting it.

Syntax: ``OP[@SITE]:KIND=VALUE`` — OP is a recorded op name (all_reduce, all_gather, gather,
broadcast, send, recv), SITE an optional site class (attn, mlp, embed, lm_head, pp.boundary, …):

* ``all_reduce:delay=10%``   each call takes 10 % longer (it sleeps for 10 % of its own duration)
* ``send@pp.boundary:delay=2ms``   a fixed extra 2 ms per call
* ``all_reduce@attn:extra=1``   one more all-reduce of the same tensor after each call
* ``all_reduce@mlp:size=2``   the message is twice as large (the tensor is padded, the result kept)
* ``all_reduce:crash=1``   rank 1 raises on its first such op (see how a crashed rank is reported)
* ``send:hang=0``   rank 0 stops at its first such op (see how a hung rank is reported)

Faults sit *under* the recorder: the recorder measures their effect like any other regression.
"""

from __future__ import annotations

import inspect
import re
import time
from dataclasses import dataclass

from . import position
from .contract import BUDGET_OPS, methods_of, site_class

_SYNTAX = re.compile(r"^(?P<op>[a-z_]+)(?:@(?P<site>[a-z_.]+))?:(?P<kind>delay|extra|size|crash|hang)=(?P<value>[0-9.]+)(?P<unit>%|ms|us|s|x)?$")
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
        raise ValueError(f"bad fault {text!r}: expected OP[@SITE]:delay=10%|delay=2ms|extra=1|size=2|crash=R|hang=R "
                         f"with OP in {', '.join(BUDGET_OPS)}")
    value, unit, kind = float(m["value"]), m["unit"], m["kind"]
    if kind == "delay":
        if unit == "%":
            return Fault(m["op"], m["site"], kind, value / 100, relative=True)
        scale = {"ms": 1e-3, "us": 1e-6, "s": 1.0, None: 1.0}.get(unit)
        if scale is None:
            raise ValueError(f"bad fault {text!r}: delay unit must be %, s, ms or us")
        return Fault(m["op"], m["site"], kind, value * scale)
    if kind in ("crash", "hang"):
        if value != int(value) or unit:
            raise ValueError(f"bad fault {text!r}: {kind}=RANK takes a global rank number")
        return Fault(m["op"], m["site"], kind, value)
    if kind == "size" and (value <= 1 or (m["op"] not in ("all_reduce", "broadcast"))):
        raise ValueError(f"bad fault {text!r}: size=N needs N > 1 and op all_reduce or broadcast")
    if kind == "extra" and (value < 1 or value != int(value) or m["op"] != "all_reduce"):
        raise ValueError(f"bad fault {text!r}: extra=N needs a whole N >= 1 and op all_reduce")
    return Fault(m["op"], m["site"], kind, value)


def parse_faults(texts) -> list[Fault]:
    return [parse_fault(t) for t in texts]


class InstalledFaults:
    def __init__(self):
        self._saved: dict[str, object] = {}

    def uninstall(self) -> None:
        import torch.distributed as dist

        for method, original in self._saved.items():
            setattr(dist.ProcessGroup, method, original)
        self._saved.clear()


def install_faults(faults, recorder=None) -> InstalledFaults:
    """Patch the ProcessGroup methods of the faulty ops.  Call before ``Recorder.install`` so the
    recorder wraps (and measures) the faulty call.  Faults act only while the engine is in a phase,
    and only while the recorder (if given) is active, so warm-up stays clean."""
    import torch
    import torch.distributed as dist

    installed = InstalledFaults()
    by_method: dict[str, list[Fault]] = {}
    for fault in faults:
        for method in methods_of(fault.op):
            by_method.setdefault(method, []).append(fault)
    for method, method_faults in by_method.items():
        original = inspect.getattr_static(dist.ProcessGroup, method, None)  # the descriptor: restorable
        if original is None:  # not in this torch release
            continue
        installed._saved[method] = original

        def faulty(pg, *args, _original=original, _faults=method_faults, **kwargs):
            active = [f for f in _faults if not _busy and position.phase != "none"
                      and (recorder is None or recorder.active)
                      and (f.site is None or site_class(position.site) == f.site)]
            if not active:
                return _original(pg, *args, **kwargs)
            for fault in active:
                if fault.kind in ("crash", "hang") and dist.get_rank() == int(fault.value):
                    if fault.kind == "crash":
                        raise RuntimeError(f"planted crash ({fault}) on rank {dist.get_rank()}")
                    time.sleep(1e9)
                if fault.kind == "size":
                    return _padded(pg, args, kwargs, _original, fault.value, torch)
            if not any(f.kind in ("delay", "extra") for f in active):
                return _original(pg, *args, **kwargs)
            t0 = time.perf_counter()
            work = _original(pg, *args, **kwargs)
            work.wait()
            elapsed = time.perf_counter() - t0
            for fault in active:
                if fault.kind == "delay":
                    _wait(elapsed * fault.value if fault.relative else fault.value)
                elif fault.kind == "extra":
                    _extra_all_reduce(pg, args, kwargs, int(fault.value))
            return work

        setattr(dist.ProcessGroup, method, faulty)
    return installed


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
