"""Planted faults, so a user can prove a gate catches a regression before trusting it.

What a fault is, its selectors and how a slowdown is sized: ``runtime/fault_spec.py``.  Kinds:

* ``all_reduce:delay=10%`` / ``delay=2ms`` / ``bw=0.7``   a slowdown: every rank of the call adds
  the same time after the call completes, before its caller's wait returns, so the call's
  completion — and its transfer after the last arrival — moves by that much on every rank.  On
  gloo the host spins; on NCCL a ``torch.cuda._sleep`` kernel spins on the caller's stream
  (``gpu_delay``), since an NCCL ``wait`` does not block the host.
* ``all_reduce@attn:extra=1``   one more all-reduce of the same tensor after each call
* ``all_reduce@mlp:size=2``   the message is twice as large (the tensor is padded, the result kept)
* ``all_reduce:crash=1``   rank 1 raises on its first such op (see how a crashed rank is reported)
* ``send:hang=0``   rank 0 stops at its first such op (see how a hung rank is reported)

The recorder measures a fault's effect like any other regression: the time a slowdown plants, the
extra op, the larger message all land inside what it times.  Each installation counts the ops each
fault matched (``InstalledFaults.fired``, at their issue); a fault that matched nothing anywhere
fails its case (``never_fired``).

Where they sit.  An installation made before ``Recorder.install`` sits under the recorder (inside
its issue-to-wait window); one made after sits over it.  Extra ops, crashes and hangs go under it;
the larger message over it (the recorder sees the larger tensor).  A slowdown goes over it and is
held by it (``held_by=``): the lookup that decides whether a call is slowed runs before the
recorder's issue clock, the slowdown is handed to the recorder before the call, and the
recorder's own wait plants it, timed from when the wait returned (``Recorder.holding``), so what
an armed slowdown adds to the timed window is the time it plants, and ``delay=0%`` (counted, never
held) leaves the window as the clean call's.  With the lookup in the window, a PP2 send at
``delay=0%`` measured about 10 µs long; with the lookup over the recorder but a wait wrapper of the
faults' own, a dict insertion after the issue and the count at the wait, still 4–8 µs
(docs/measurements.md#planted-delays).  With no recorder to hold them, the faults wrap the wait.
"""

from __future__ import annotations

import time

from llmcomm_tests.core import call_site
from llmcomm_tests.core.contract import PG_METHODS, POINT_TO_POINT, methods_of, site_class
from llmcomm_tests.runtime.fault_spec import (SLOWDOWNS, Fault, default_profile, model_transfer, never_fired,
                                               parse_fault, parse_faults)
from llmcomm_tests.runtime.pg_patch import PgPatch

__all__ = ["Fault", "InstalledFaults", "OVER_RECORDER", "SLOWDOWNS", "install_faults", "never_fired", "parse_fault",
           "parse_faults", "plant"]

OVER_RECORDER = frozenset(SLOWDOWNS) | {"size"}  # kinds whose method patch goes over the recorder (module docstring)


class InstalledFaults:
    """The patches of one ``install_faults`` call, and how often each fault matched an op here.

    ``fired`` (fault text → ops it matched on this rank) travels back in the rank's result: a
    fault that matched nothing on any rank planted nothing, and the case must say so.
    ``profile``: the hardware profile relative delays and ``bw=`` are sized by."""

    def __init__(self, faults=(), profile=None):
        self.faults = list(faults)
        self.fired: dict[str, int] = {str(f): 0 for f in self.faults}
        self.profile = profile
        self._patch = PgPatch()
        self._held: dict = {}  # Work -> (seconds, fault names, on a CUDA stream, this installation)
        self.gpu_delay = None  # GpuDelay, made on the first slowdown of a CUDA op

    def uninstall(self) -> None:
        self._patch.restore()

    def plan(self, faults, op: str, span: list[int], nbytes: int, phase: str, site: str):
        """``(others, slowdown seconds, slowdown names)`` for one kind of call, or None when no
        fault selects it.  The same on every rank of the call: it reads only what they share."""
        chosen = [f for f in faults if op in f.ops and f.selects(phase, site_class(site), nbytes)]
        if not chosen:
            return None
        slow = [f for f in chosen if f.kind in SLOWDOWNS]
        transfer = model_transfer(self.profile, op, span, nbytes) if any(f.needs_model for f in slow) else None
        return ([f for f in chosen if f.kind not in SLOWDOWNS], sum(f.seconds(transfer) for f in slow),
                tuple(str(f) for f in slow))

    def _wrap_wait(self, original):
        """With no recorder to hold them: plant this installation's slowdowns after the caller's own
        wait (waiting a p2p Work twice hangs on gloo: each wait consumes one completion)."""
        held = self._held

        def wait(work, *args, **kwargs):
            result = original(work, *args, **kwargs)
            if held:
                entry = held.pop(work, None)
                if entry is not None:
                    plant(entry, None)
            return result

        return wait


def plant(entry, since_ns: int | None) -> None:
    """Plant one held slowdown, at its caller's wait (``Recorder.plant``): on the host (gloo) or on
    the GPU stream (NCCL).  ``since_ns`` (``perf_counter_ns`` when the wait returned): the host wait
    ends that long after it, so what ran since is part of the planted time.  A caller that never
    waits (or waits through a future) gets none; it was counted at its issue."""
    seconds, _, cuda, installed = entry
    if not cuda:
        _wait(seconds if since_ns is None else seconds - (time.perf_counter_ns() - since_ns) / 1e9)
        return
    if installed.gpu_delay is None:
        import torch

        from llmcomm_tests.runtime.gpu_delay import GpuDelay

        installed.gpu_delay = GpuDelay(torch)
    installed.gpu_delay(seconds)


def install_faults(faults, armed=None, cuda: bool | None = None, profile=None, *, held_by=None) -> InstalledFaults:
    """Patch the ProcessGroup methods of the faulty ops.  Called before ``Recorder.install``, the
    recorder wraps (and measures) the faulty call.  Faults act only while the engine is in a phase,
    and only while ``armed`` (anything with ``active``: a Recorder, a flag) is active, so warm-up
    stays clean.  ``cuda`` (default: ``held_by``'s ``cuda_events``): fit the GPU delay's clock now,
    not inside a timed op.  ``profile`` (default ``fault_spec.default_profile``): sizes relative
    delays and ``bw=``.  ``held_by``: the Recorder whose wait plants the slowdowns (module
    docstring); without one, the faults wrap the wait themselves."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.runtime.recorder import payload_reader

    faults = list(faults)
    if cuda is None:
        cuda = bool(getattr(held_by, "cuda_events", False))
    if profile is None and any(f.needs_model for f in faults):
        profile = (default_profile(True, torch.cuda.get_device_name(), torch.cuda.device_count()) if cuda
                   else default_profile(False))
    installed = InstalledFaults(faults, profile)
    holder = None  # the recorder under these patches, which files a recorded call's slowdown before its clock
    if any(f.kind in SLOWDOWNS for f in faults):
        if held_by is not None:
            installed._held, held_by.plant = held_by.held, plant
            holder = held_by if held_by.installed else None  # under it, the call is timed already
        else:
            installed._patch.wrap_wait(installed._wrap_wait)
        if cuda:
            from llmcomm_tests.runtime.gpu_delay import GpuDelay

            installed.gpu_delay = GpuDelay(torch)
    by_method: dict[str, list[Fault]] = {}
    for fault in faults:
        for op in fault.ops:
            for method in methods_of(op):
                by_method.setdefault(method, []).append(fault)
    where, held, fired = call_site, installed._held, installed.fired
    for method, method_faults in by_method.items():
        def make_faulty(_original, _faults=method_faults, _method=method):
            op, kind = PG_METHODS[_method]
            read_payload, p2p = payload_reader(kind), op in POINT_TO_POINT and _method != "recv_anysource"
            plans: dict = {}

            def faulty(pg, *args, **kwargs):
                if _busy or where.phase == "none" or (armed is not None and not armed.active):
                    return _original(pg, *args, **kwargs)
                numel, dtype = read_payload(args)
                key = (pg, where.phase, where.site, numel, dtype, args[1] if p2p else -1)
                plan = plans.get(key, False)
                if plan is False:
                    plan = plans[key] = _plan(installed, _faults, op, pg, key[-1], numel, dtype, args)
                if plan is None:
                    return _original(pg, *args, **kwargs)
                others, entry = plan
                if others:  # the rare kinds (crash, hang, size, extra): off the slowdown's hot path
                    return _issue_with(others, entry, installed, pg, args, kwargs, _original, torch, dist)
                # Every bytecode between the recorder's issue clock and its end clock is measured as
                # transfer, and cold, between compute, each costs about 0.1 µs
                # (docs/measurements.md#planted-delays): so a slowdown is counted here, before the
                # call, and one that plants nothing holds nothing; a recorded call's slowdown goes
                # to the recorder before the call, others are filed by their Work after it.
                for name in entry[1]:
                    fired[name] += 1
                if entry[0] <= 0:
                    return _original(pg, *args, **kwargs)
                if holder is not None and holder.active:
                    holder.holding = entry
                    return _original(pg, *args, **kwargs)
                work = _original(pg, *args, **kwargs)
                if work is not None:
                    held[work] = entry
                return work

            return faulty

        installed._patch.wrap_method(method, make_faulty)
    return installed


def _issue_with(others, entry, installed: InstalledFaults, pg, args, kwargs, original, torch, dist):
    """Issue a call that a crash, hang, size or extra fault selects (and a slowdown, ``entry``)."""
    for fault in others:
        installed.fired[str(fault)] += 1
        if fault.kind in ("crash", "hang") and dist.get_rank() == int(fault.value):
            if fault.kind == "crash":
                raise RuntimeError(f"planted crash ({fault}) on rank {dist.get_rank()}")
            time.sleep(1e9)
        if fault.kind == "size":
            return _padded(pg, args, kwargs, original, fault.value, torch)
    work = original(pg, *args, **kwargs)
    extras = [f for f in others if f.kind == "extra"]
    if extras:  # all_reduce only (parse_fault): its Work may be waited twice
        work.wait()
        for fault in extras:
            _extra_all_reduce(pg, args, kwargs, int(fault.value))
    if entry is not None:
        for name in entry[1]:
            installed.fired[name] += 1
        if entry[0] > 0 and work is not None:
            installed._held[work] = entry
    return work


def _plan(installed: InstalledFaults, faults, op, pg, peer, numel, dtype, args):
    """``(other faults, slowdown entry or None)`` of one kind of call, or None when no fault
    selects it; the entry (what ``plant`` takes) says whether it runs on a CUDA stream."""
    import torch.distributed as dist

    nbytes = numel * (dtype.itemsize if dtype is not None else 1)
    span: list[int] = []
    if any(f.needs_model for f in faults):
        if op in POINT_TO_POINT:  # the pair (the rank alone for a recv from any source)
            span = sorted({dist.get_rank(), *([dist.get_global_rank(pg, int(peer))] if peer >= 0 else [])})
        else:
            span = dist.get_process_group_ranks(pg)
    plan = installed.plan(faults, op, span, nbytes, call_site.phase, call_site.site)
    if plan is None:
        return None
    others, seconds, names = plan
    tensor = _first_tensor(args)
    return tuple(others), ((seconds, names, tensor is not None and tensor.is_cuda, installed) if names else None)


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


SPIN_S = 3e-4


def _wait(seconds: float) -> None:
    """Sleep, then spin for the last ``SPIN_S`` (all of a shorter delay): time.sleep overshoots by
    ~60-100 µs on Linux, which would plant more than asked, and a spin of a long delay holds the
    core that this rank's own transport thread needs to finish the peer's side of the call
    (docs/measurements.md#planted-delays)."""
    end = time.perf_counter() + seconds
    if seconds > 2 * SPIN_S:
        time.sleep(seconds - SPIN_S)
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
