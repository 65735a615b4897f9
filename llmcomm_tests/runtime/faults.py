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
fault matched (``InstalledFaults.fired``; a slowdown counts when it is planted, at the caller's
wait); a fault that matched nothing anywhere fails its case (``never_fired``).

Where they sit.  An installation made before ``Recorder.install`` sits under the recorder (inside
its issue-to-wait window); one made after sits over it.  Extra ops, crashes and hangs go under it;
the larger message over it (the recorder sees the larger tensor).  A slowdown is split (``over=``):
its wait, which plants the time, under the recorder, and the lookup that decides whether a call is
slowed over it, before the recorder's issue clock: in the window, with nothing planted, it added
about 10 µs to a 60–100 µs point-to-point call here (docs/measurements.md#planted-delays).

Cost.  What a slowed call pays inside the recorder's window is one dict insertion after its issue
and one removal at its wait: ``delay=0%`` runs the whole path and plants nothing
(``benchmarks/planted_delay.py`` measures it).
"""

from __future__ import annotations

import time

from llmcomm_tests.core import call_site
from llmcomm_tests.core.contract import PG_METHODS, POINT_TO_POINT, methods_of, site_class
from llmcomm_tests.runtime.fault_spec import (SLOWDOWNS, Fault, default_profile, model_transfer, never_fired,
                                               parse_fault, parse_faults)
from llmcomm_tests.runtime.pg_patch import PgPatch

__all__ = ["Fault", "InstalledFaults", "OVER_RECORDER", "SLOWDOWNS", "install_faults", "never_fired", "parse_fault",
           "parse_faults"]

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
        self._planted: dict = {}  # Work -> (seconds, fault names, on a CUDA stream, their fired counts)
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

    # -- slowdowns: planted when the caller waits, on the host (gloo) or the GPU stream (NCCL) ----

    def _wrap_wait(self, original):
        """Waiting a p2p Work twice hangs on gloo (each wait consumes one completion), so the
        slowdown runs here, after the caller's own wait, inside the time the recorder measures.
        A caller that never waits (or waits through a future) gets none, and it is not counted."""
        planted = self._planted

        def wait(work, *args, **kwargs):
            result = original(work, *args, **kwargs)
            if planted:
                entry = planted.pop(work, None)
                if entry is not None:
                    seconds, names, cuda, fired = entry
                    for name in names:
                        fired[name] += 1
                    if seconds > 0:
                        self._plant(seconds, cuda)
            return result

        return wait

    def _plant(self, seconds: float, cuda: bool) -> None:
        if not cuda:
            _wait(seconds)
            return
        if self.gpu_delay is None:
            import torch

            from llmcomm_tests.runtime.gpu_delay import GpuDelay

            self.gpu_delay = GpuDelay(torch)
        self.gpu_delay(seconds)


def install_faults(faults, recorder=None, cuda: bool | None = None, profile=None, *, plants_for: bool = False,
                   over: "InstalledFaults | None" = None) -> InstalledFaults:
    """Patch the ProcessGroup methods of the faulty ops.  Called before ``Recorder.install``, the
    recorder wraps (and measures) the faulty call.  Faults act only while the engine is in a phase,
    and only while the recorder (if given) is active, so warm-up stays clean.  ``cuda`` (default:
    the recorder's ``cuda_events``): fit the GPU delay's clock now, not inside a timed op.
    ``profile`` (default ``fault_spec.default_profile``): sizes relative delays and ``bw=``.

    The split slowdown (module docstring): ``plants_for=True`` on the installation made under the
    recorder patches the wait that plants slowdowns even with none of its own; ``over=`` that
    installation, on the one made over the recorder, plants this one's slowdowns through its wait."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.runtime.recorder import payload_reader

    faults = list(faults)
    if cuda is None:
        cuda = bool(getattr(recorder, "cuda_events", False))
    if profile is None and any(f.needs_model for f in faults):
        profile = (default_profile(True, torch.cuda.get_device_name(), torch.cuda.device_count()) if cuda
                   else default_profile(False))
    installed = InstalledFaults(faults, profile)
    slowdowns = any(f.kind in SLOWDOWNS for f in faults)
    plants_here = (slowdowns and over is None) or plants_for
    if over is not None:
        installed._planted = over._planted  # its wait (under the recorder) plants what this one selects
    elif cuda and plants_here:
        from llmcomm_tests.runtime.gpu_delay import GpuDelay

        installed.gpu_delay = GpuDelay(torch)
    by_method: dict[str, list[Fault]] = {}
    for fault in faults:
        for op in fault.ops:
            for method in methods_of(op):
                by_method.setdefault(method, []).append(fault)
    if plants_here:
        installed._patch.wrap_wait(installed._wrap_wait)
    where, planted = call_site, installed._planted
    for method, method_faults in by_method.items():
        def make_faulty(_original, _faults=method_faults, _method=method):
            op, kind = PG_METHODS[_method]
            read_payload, p2p = payload_reader(kind), op in POINT_TO_POINT and _method != "recv_anysource"
            plans: dict = {}

            def faulty(pg, *args, **kwargs):
                if _busy or where.phase == "none" or (recorder is not None and not recorder.active):
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
                # Between the recorder's issue clock and the caller's wait, every bytecode here is
                # measured as transfer (docs/measurements.md#planted-delays): a slowdown's hot path
                # is one lookup above and one insertion below, its entry made once.
                work = _original(pg, *args, **kwargs)
                if work is not None:
                    planted[work] = entry
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
    if entry is not None and work is not None:
        installed._planted[work] = entry
    return work


def _plan(installed: InstalledFaults, faults, op, pg, peer, numel, dtype, args):
    """``(other faults, slowdown entry or None)`` of one kind of call, or None when no fault
    selects it; the entry (``InstalledFaults._planted``'s value) says whether it runs on a CUDA stream."""
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
    return tuple(others), ((seconds, names, tensor is not None and tensor.is_cuda, installed.fired) if names else None)


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
