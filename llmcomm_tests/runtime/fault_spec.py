"""What a planted fault is and how large a planted slowdown is: its syntax, its selectors, and its
sizing from the analytic model.  No torch here (``runtime.run_config`` parses faults for ``--help``).

Syntax: ``OP[@SITE][/SELECTOR...]:KIND=VALUE``

* OP – a recorded op name (all_reduce, all_gather, gather, broadcast, send, recv).  ``send`` and
  ``recv`` both name the point-to-point *pair*: a slowdown on either end moves both ends.
* SITE – a site class (attn, mlp, embed, lm_head, pp.boundary, pp.tokens, tokens.broadcast).
* SELECTOR – ``prefill`` or ``decode`` (the phase), or a size bound on the call's payload (its
  recorded ``bytes``, the same on every rank of the call): ``>=1MiB``, ``>64KiB``, ``<4KiB``,
  ``<=1KiB``.  Selectors combine (``all_reduce@mlp/decode/>=1KiB/<1MiB``).
* KIND=VALUE – a slowdown (``delay=``, ``bw=``) or another fault (``extra=``, ``size=``,
  ``crash=``, ``hang=``; ``runtime/faults.py``).

A slowdown adds the same time to the call's transfer on every rank of the call (every member of a
collective, both ends of a send/recv), sized from what all of them agree on — never from a rank's
own clock, which also counts its wait for late peers:

* ``delay=2ms`` – 2 ms more per call.
* ``delay=10%`` – 10 % of the analytic model's transfer time of this op and size
  (``latency.op_time`` under the run's hardware profile, the base fit: no per-role variant, which
  would differ between ranks).
* ``bw=0.7`` – the bytes cross at 0.7× the profile's bandwidth: the model's bandwidth term
  n_β·M/β grows to n_β·M/(0.7·β), i.e. ``(1/0.7 − 1)·n_β·M/β`` more per call; the α term is kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from llmcomm_tests.core.contract import BUDGET_OPS, POINT_TO_POINT
from llmcomm_tests.core.units import parse_byte_count, parse_count, parse_duration, parse_factor, parse_percent

KINDS = ("delay", "bw", "extra", "size", "crash", "hang")
SLOWDOWNS = ("delay", "bw")
PHASES = ("prefill", "decode")
_HEAD = re.compile(r"^(?P<target>[^:]+):(?P<kind>[a-z_]+)=(?P<value>\S+)$")
_TARGET = re.compile(r"^(?P<op>[a-z_]+)(?:@(?P<site>[a-z_.]+))?$")
_SIZE = re.compile(r"^(?P<cmp>>=|<=|>|<)(?P<size>.+)$")
USAGE = ("OP[@SITE]:KIND=VALUE or OP[@SITE]/SELECTOR/...:KIND=VALUE (SELECTOR prefill, decode, >=1MiB, <4KiB, ...; "
         "KIND=VALUE delay=10%|delay=2ms|bw=0.7|extra=1|size=2|crash=R|hang=R)")


@dataclass(frozen=True)
class SizeBound:
    """One bound on a call's payload bytes: ``>=1MiB`` is ``SizeBound(">=", 1048576, "1MiB")``."""

    cmp: str  # >=, >, <=, <
    nbytes: int
    text: str  # as written, so the fault's name reads back the same

    def holds(self, nbytes: int) -> bool:
        if self.cmp == ">=":
            return nbytes >= self.nbytes
        if self.cmp == ">":
            return nbytes > self.nbytes
        if self.cmp == "<=":
            return nbytes <= self.nbytes
        return nbytes < self.nbytes

    def __str__(self) -> str:
        return f"{self.cmp}{self.text}"


@dataclass(frozen=True)
class Fault:
    op: str
    site: str | None
    kind: str  # one of KINDS
    value: float  # delay: fraction of the model (relative) or seconds; bw: factor; extra: count; size: factor
    relative: bool = False
    phase: str | None = None  # prefill | decode | None (both)
    sizes: tuple = ()  # SizeBound, all of which must hold

    def __str__(self) -> str:
        where = f"@{self.site}" if self.site else ""
        where += f"/{self.phase}" if self.phase else ""
        where += "".join(f"/{b}" for b in self.sizes)
        if self.kind == "delay":
            value = f"{self.value * 100:g}%" if self.relative else f"{self.value * 1e3:g}ms"
        else:
            value = f"{self.value:g}"
        return f"{self.op}{where}:{self.kind}={value}"

    @property
    def ops(self) -> tuple[str, ...]:
        """The recorded ops it acts on: a p2p fault's pair, else its op."""
        return POINT_TO_POINT if self.op in POINT_TO_POINT and self.kind in SLOWDOWNS else (self.op,)

    @property
    def needs_model(self) -> bool:
        """Sized from the analytic model (a relative delay, a bandwidth factor)."""
        return self.kind == "bw" or (self.kind == "delay" and self.relative)

    def selects(self, phase: str, site_class: str, nbytes: int) -> bool:
        """Whether a call in ``phase`` at a site of class ``site_class`` with ``nbytes`` of payload
        is one this fault acts on (its op is matched by whoever patched the op's methods)."""
        return ((self.phase is None or phase == self.phase) and (self.site is None or site_class == self.site)
                and all(b.holds(nbytes) for b in self.sizes))

    def seconds(self, transfer: "tuple[float, float] | None") -> float:
        """The time this slowdown adds to one call; ``transfer``: the model's (whole transfer,
        bandwidth term) of the call, in seconds (None: a group of one rank, which transfers nothing)."""
        if self.kind == "delay" and not self.relative:
            return self.value
        if transfer is None:
            return 0.0
        model_s, bandwidth_s = transfer
        if self.kind == "delay":
            return model_s * self.value
        return bandwidth_s * (1.0 / self.value - 1.0)


def parse_fault(text: str) -> Fault:
    """A fault from its text; ValueError naming the part that is wrong."""
    def bad(why: str) -> ValueError:
        return ValueError(f"bad fault {text!r}: expected {USAGE}: {why}")

    head = _HEAD.match(text.strip())
    if not head:
        raise bad("no KIND=VALUE after a ':'")
    kind = head["kind"]
    if kind not in KINDS:
        raise bad(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
    target, *selectors = head["target"].split("/")
    m = _TARGET.match(target)
    if not m:
        raise bad(f"bad OP[@SITE] {target!r}")
    op = m["op"]
    if op not in BUDGET_OPS:
        raise bad(f"unknown op {op!r}; known: {', '.join(BUDGET_OPS)}")
    phase, sizes = None, []
    for selector in selectors:
        if selector in PHASES:
            if phase is not None:
                raise bad(f"selector {selector!r}: a second phase")
            phase = selector
            continue
        s = _SIZE.match(selector)
        if not s:
            raise bad(f"bad selector {selector!r}: a phase ({', '.join(PHASES)}) or a size such as >=1MiB")
        try:
            sizes.append(SizeBound(s["cmp"], parse_byte_count(s["size"]), s["size"]))
        except ValueError as exc:
            raise bad(f"selector {selector!r}: {exc}") from None
    try:
        value, relative = _value(kind, head["value"])
    except ValueError as exc:
        raise ValueError(f"bad fault {text!r}: {kind}: {exc}") from None
    if kind == "size" and (value <= 1 or op not in ("all_reduce", "broadcast")):
        raise ValueError(f"bad fault {text!r}: size=N needs N > 1 and op all_reduce or broadcast")
    if kind == "extra" and op != "all_reduce":
        raise ValueError(f"bad fault {text!r}: extra=N needs op all_reduce")
    return Fault(op, m["site"], kind, value, relative, phase, tuple(sizes))


def _value(kind: str, text: str) -> tuple[float, bool]:
    """(value, relative) of ``KIND=VALUE``: a delay is a percentage of the model (``10%``, ``0%``
    plants nothing through the whole path) or a duration (``2ms``; a bare number is seconds), bw a
    factor in (0, 1), extra a count >= 1, size a factor (``2``, ``2x``), crash and hang a global rank."""
    if kind == "delay":
        if text.endswith("%"):
            return (0.0 if re.fullmatch(r"0+(\.0*)?%", text) else parse_percent(text)), True
        if not text[:1].isdigit() and not text.startswith("."):
            raise ValueError(f"expected a percentage such as 10% or a duration such as 2ms, got {text!r}")
        return parse_duration(text, unitless="s"), False
    if kind == "bw":
        factor = parse_factor(text)
        if factor >= 1:
            raise ValueError(f"expected a bandwidth factor below 1 (0.7: the link at 70 %), got {text!r}")
        return factor, False
    if kind == "extra":
        return float(parse_count(text, minimum=1)), False
    if kind == "size":
        return parse_factor(text), False
    return float(parse_count(text)), False  # crash, hang: a rank


def parse_faults(texts) -> list[Fault]:
    return [parse_fault(t) for t in texts]


def never_fired(faults, fired_per_rank, case: str) -> list[str]:
    """One message per fault that matched no op on any rank: it planted nothing, so a passing
    case would prove nothing about the gate it was meant to test."""
    total = {str(f): 0 for f in faults}
    for fired in fired_per_rank:
        for name, n in (fired or {}).items():
            total[name] = total.get(name, 0) + n
    return [f"fault {f} never fired in {case}" for f in faults if not total[str(f)]]


# -- sizing ---------------------------------------------------------------------------------------


def model_transfer(profile, op: str, span: list[int], nbytes: int) -> "tuple[float, float] | None":
    """(model transfer s, its bandwidth term s) of one call under ``profile``: ``op`` recorded,
    ``span`` the global ranks it spans (a group, or a p2p pair), ``nbytes`` its payload; None for a
    group of one rank (every op a fault may name is one the model times)."""
    from llmcomm_tests.analytic import accuracy, latency

    inst = accuracy.instance(op, span, nbytes)
    if inst is None:
        return None
    tier = profile.tier_of(inst["ranks"])
    fit = profile.fit(inst["op"], inst["group_size"], tier)
    args = (inst["op"], inst["group_size"], inst["msg_bytes"])
    model = latency.hockney_time(*args, fit.alpha_s, fit.beta_Bps, profile.algorithm, fit.base_s)
    if model <= 0:
        return None
    return model, latency.hockney_time(*args, 0.0, fit.beta_Bps, profile.algorithm)


def default_profile(cuda: bool, device_name: str = "", devices: int = 0):
    """The profile a slowdown is sized by: ``cpu-loopback`` on gloo; on CUDA the preset (or a
    profile in ``.llmcomm/profiles``) for this device model and count, else the first for this
    model at any node size (its intra-node fits), else a ValueError."""
    from llmcomm_tests.analytic.hardware import PROFILE_DIR, load_profile, match_preset

    if not cuda:
        return load_profile("cpu-loopback")
    found = match_preset(device_name, devices)
    if found is None:
        found = next((p for p in map(load_profile, sorted(PROFILE_DIR.glob("*.yaml"))) if p.describes(device_name)),
                     None)
    if found is None:
        raise ValueError(f"no hardware profile for {devices} x {device_name}: a relative delay or bw= fault is "
                         f"sized by the model; calibrate one (llmcomm calibrate) or plant an absolute delay=")
    return found
