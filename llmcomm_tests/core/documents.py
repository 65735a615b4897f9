"""The documents that cross module boundaries, typed, and their one serialisation.

Vocabulary:

* **op record** (:class:`OpRecord`) – one communication call on one rank.  Kept only on request
  (``--llmcomm-keep-records``) and for the one decode step the timeline shows: a Llama-3.1-8B 8x1
  case issues ~660 000 of them.
* **op summary** (:class:`OpSummary`) – every call of one class — (op, phase, site class, ranks,
  bytes per call) — summed over ranks and repetitions: count, bytes, wire bytes and a mergeable
  :class:`LatencySummary` of the call durations.  What checks, baselines and reports read.
* **run document** (:class:`RunDocument`) – one case measured: tokens, TTFT/TPOT/E2E, comm
  metrics, volume rows, op summaries.
* **verdict row** (:class:`VerdictRow`) – one check: measured vs model vs bound vs budget, numbers
  as numbers with their unit; the text is made only where it is shown (``report/table.py``).
* **case result** (:class:`CaseResult`) – a run document, the prediction and the verdict of one
  pytest item; what reports, JUnit and the HTML are built from.

``to_json`` / ``from_json`` are the only (de)serialisers: dataclasses become plain JSON objects
and come back typed, by their type hints.  No torch here.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from llmcomm_tests.core import stats

RUN_SCHEMA = "llmcomm.run/2"
PASS, FAIL, NA = "pass", "fail", "n/a"


# -- (de)serialisation ----------------------------------------------------------------------------


def to_json(obj: Any) -> Any:
    """Plain JSON data of a document (dataclasses, lists, tuples, dicts, numbers, strings)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_json(x) for x in obj]
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else (1e308 if obj > 0 else -1e308)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    return obj


def write_json(obj: Any, path: str) -> None:
    """Write a document as JSON (``to_json``) to ``path``."""
    with open(path, "w") as f:
        json.dump(to_json(obj), f, indent=1)


def from_json(cls: Any, data: Any) -> Any:
    """``data`` (as written by :func:`to_json`) back as ``cls``, recursively by type hints."""
    if data is None:
        return None
    origin = typing.get_origin(cls)
    if origin in (Union, types.UnionType):
        inner = [a for a in typing.get_args(cls) if a is not type(None)]
        return from_json(inner[0], data) if len(inner) == 1 else data
    if origin in (list, tuple):
        args = typing.get_args(cls)
        item = args[0] if args else Any
        out = [from_json(item, x) for x in data]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        key_type, value_type = typing.get_args(cls)
        return {(int(k) if key_type is int else k): from_json(value_type, v) for k, v in data.items()}
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls) if f.init}
        return cls(**{k: from_json(hints[k], v) for k, v in data.items() if k in known})
    return data


# -- latency summaries ----------------------------------------------------------------------------

BUCKETS_PER_DECADE = 100  # bucket width ≈ 2.3 %: a quantile from buckets is within ~1.2 % of the truth
SAMPLE_CAP = 512  # exact samples kept per class (a seeded uniform sample past that)


@dataclass
class LatencySummary:
    """Durations (seconds) of a class of calls, mergeable and bounded in size.

    Exact samples up to :data:`SAMPLE_CAP` (a seeded uniform sample past it: what bootstraps and
    rank tests use) plus a fixed-bucket log histogram of all of them (what quantiles use once the
    reservoir no longer holds every sample)."""

    count: int = 0
    total_s: float = 0.0
    min_s: float | None = None
    max_s: float | None = None
    buckets: dict[int, int] = field(default_factory=dict)
    samples: list[float] = field(default_factory=list)

    @staticmethod
    def bucket(x: float) -> int:
        return math.floor(math.log10(max(x, 1e-12)) * BUCKETS_PER_DECADE)

    @classmethod
    def of(cls, values, seed: int = 0) -> "LatencySummary":
        """The summary of ``values`` (a sequence or numpy array of seconds), vectorised."""
        import numpy as np

        x = np.asarray(values, dtype=float)
        if not len(x):
            return cls()
        index, counts = np.unique(np.floor(np.log10(np.maximum(x, 1e-12)) * BUCKETS_PER_DECADE).astype(np.int64),
                                  return_counts=True)
        kept = x if len(x) <= SAMPLE_CAP else np.random.default_rng(seed).choice(x, SAMPLE_CAP, replace=False)
        return cls(len(x), float(x.sum()), float(x.min()), float(x.max()),
                   dict(zip(index.tolist(), counts.tolist())), kept.tolist())

    def merge(self, other: "LatencySummary", seed: int = 0) -> "LatencySummary":
        out = LatencySummary(self.count + other.count, self.total_s + other.total_s,
                             _opt(min, self.min_s, other.min_s), _opt(max, self.max_s, other.max_s),
                             dict(self.buckets))
        for b, n in other.buckets.items():
            out.buckets[b] = out.buckets.get(b, 0) + n
        pool = self.samples + other.samples
        if len(pool) <= SAMPLE_CAP:
            out.samples = pool
        else:  # keep each side in proportion to the calls it stands for
            rng = random.Random(seed)
            take = round(SAMPLE_CAP * self.count / out.count)
            out.samples = rng.sample(self.samples, min(take, len(self.samples))) + \
                rng.sample(other.samples, min(SAMPLE_CAP - take, len(other.samples)))
        return out

    @property
    def exact(self) -> bool:
        return len(self.samples) == self.count

    def quantile(self, q: float) -> float | None:
        """The ``q``-quantile (0..1): exact while every sample is kept (``stats.percentile``), else
        from the buckets (geometric bucket centre, clamped to the observed range).  A different
        estimator on purpose: past ``SAMPLE_CAP`` the kept samples are a subsample, while the
        buckets count every call, so a tail quantile from them is the whole run's."""
        if not self.count:
            return None
        if self.exact:
            return stats.percentile(self.samples, 100 * q)
        rank = q * (self.count - 1)
        seen = 0
        for b in sorted(self.buckets):
            seen += self.buckets[b]
            if seen > rank:
                centre = 10 ** ((b + 0.5) / BUCKETS_PER_DECADE)
                return min(max(centre, self.min_s), self.max_s)
        return self.max_s

    @property
    def p50(self) -> float | None:
        return self.quantile(0.5)

    @property
    def p99(self) -> float | None:
        return self.quantile(0.99)

    def share_within(self, low: float, high: float) -> float:
        """Share of calls inside [low, high] (buckets cut by the bounds count in proportion)."""
        if not self.count:
            return 0.0
        if self.exact:
            return sum(low <= x <= high for x in self.samples) / self.count
        lo_b, hi_b = self.bucket(low), self.bucket(high)
        inside = sum(n for b, n in self.buckets.items() if lo_b < b < hi_b)
        inside += 0.5 * sum(self.buckets.get(b, 0) for b in {lo_b, hi_b})
        return inside / self.count


def _opt(fn, a, b):
    return b if a is None else a if b is None else fn(a, b)


# -- run documents --------------------------------------------------------------------------------


@dataclass
class OpRecord:
    """One call on one rank."""

    rank: int
    rep: int
    op: str
    group: list[int]
    dtype: str
    numel: int
    bytes: int
    wire_bytes: int
    phase: str
    step: int
    site: str
    start_ns: int
    duration_s: float | None
    peer: int | None = None  # the other side of a send/recv (global rank); the root of a rooted op otherwise
    wait_s: float | None = None  # issue → the last peer's arrival (``arrival.split``)
    transfer_s: float | None = None  # the last peer's arrival → completion


@dataclass(frozen=True)
class CallClass:
    """What the calls of one class on one rank share."""

    op: str
    group: tuple[int, ...]  # global ranks of the group
    dtype: str
    numel: int
    bytes: int
    wire_bytes: int
    phase: str
    site: str
    peer: int | None  # global rank of a send/recv's other side, or of a rooted op's root


@dataclass
class RankOps:
    """One rank's calls, as the recorder hands them over: a class table and one row per call
    (numpy columns; ``duration_s`` NaN where the backend gave no completion).  Travels from the
    rank to the launcher by pickle, never into a report."""

    rank: int
    classes: list[CallClass]
    cls: Any  # int32 index into classes
    rep: Any  # int32
    step: Any  # int32
    start_ns: Any  # int64, the host monotonic clock at issue
    duration_s: Any  # float64
    device_timed: bool = False  # durations from CUDA events: not on the clock of start_ns

    def __len__(self) -> int:
        return len(self.cls)


@dataclass
class OpSummary:
    """Every call of one class, summed over ranks and repetitions.  ``ranks`` is the group (or the
    send/recv pair) the calls span; ``role`` tells a rooted op's root from its peers; ``waiting``
    says why the calls' time includes waiting for other ranks' compute (None: a transfer)."""

    op: str
    phase: str
    site: str
    ranks: list[int]
    bytes: int  # per call
    role: str
    waiting: str | None
    count: int
    total_bytes: int
    wire_bytes: int
    latency: LatencySummary | None  # issue → completion; None when the backend gave no durations
    wait: LatencySummary | None = None  # issue → the last peer's arrival
    transfer: LatencySummary | None = None  # the last peer's arrival → completion: what α-β describes

    @property
    def group_size(self) -> int:
        return len(self.ranks)

    @property
    def name(self) -> str:
        return f"{self.op} {self.phase} {self.site} /{'p2p' if self.op in ('send', 'recv') else len(self.ranks)}"


@dataclass
class VolumeRow:
    """Calls, bytes and wire bytes of one (op, phase, site class), summed over ranks."""

    op: str
    phase: str
    site: str
    count: int
    bytes: int
    wire_bytes: int

    @property
    def key(self) -> tuple[str, str, str]:
        return self.op, self.phase, self.site


@dataclass
class Distribution:
    """A metric per repetition (or per token for ITL): the samples and their summary."""

    samples: list[float] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def p50(self) -> float | None:
        return stats.percentile(self.samples, 50)

    @property
    def p99(self) -> float | None:
        return stats.percentile(self.samples, 99)

    @property
    def max(self) -> float | None:
        return max(self.samples) if self.samples else None


@dataclass
class LatencyMetrics:
    """vLLM's benchmark definitions, one sample per repetition; ITL one per token gap."""

    ttft: Distribution
    tpot: Distribution
    e2e: Distribution
    itl: Distribution
    tokens_per_s: float | None

    @property
    def repeats(self) -> int:
        return self.ttft.n


@dataclass
class CommMetrics:
    """Time inside communication calls (peers' lateness included), per token and as a share."""

    time_per_token: Distribution
    share: Distribution  # of E2E
    share_ttft: Distribution
    share_tpot: Distribution
    bytes_per_token: float
    wire_bytes_total: int
    wait_per_token: Distribution = field(default_factory=Distribution)  # waiting for late peers, per token
    wait_missing: str | None = None  # why wait_per_token lacks repetitions (calls without a split)


@dataclass
class CommTiming:
    """Where the calls' wait/transfer split came from and what it could not cover."""

    source: str  # "host clock", "kernels" (the profiler's device kernels or gloo events), "cuda events"
    timed_calls: int = 0  # calls with a time on the split's clock
    unsplit: str | None = None  # why calls have no split (shown on their latency rows)
    mismatches: list[str] = field(default_factory=list)  # kernel counts that differ from the recorder's


@dataclass
class CaseInfo:
    engine: dict[str, Any]
    tp: int
    pp: int
    batch: int
    prompt_len: int
    gen_len: int
    dtype: str
    backend: str
    world_size: int
    repeats: int
    warmup: int
    seed: int
    framework: str = "ours"


@dataclass
class RunDocument:
    """``metrics`` come from repetitions with the recorder off; ``recorded_metrics``, ``comm`` and
    ``ops`` from the recorded repetitions interleaved with them."""

    case: CaseInfo
    env: dict[str, Any]
    tokens: list[list[int]]
    metrics: LatencyMetrics
    comm: CommMetrics
    volume: list[VolumeRow]
    volume_stable: bool
    ops: list[OpSummary]
    recorded_metrics: Optional[LatencyMetrics] = None  # TTFT/TPOT/E2E of the recorded repetitions
    timeline: list[OpRecord] = field(default_factory=list)  # every rank's calls in one decode step
    records: Optional[list[OpRecord]] = None  # every call, only on request
    logits: Optional[list] = None
    cross_check: Optional[list[dict[str, Any]]] = None
    faults_fired: list[dict[str, int]] = field(default_factory=list)  # per rank: ops each planted fault matched
    no_completion: list[dict[str, int]] = field(default_factory=list)  # per rank: calls never completed, per class
    # Another engine (frameworks/): name, version, startup_s and, for transformers, the TP plan it
    # applied; its control-plane calls (vLLM's RPC messages, pickled metadata), out of the volume check.
    framework: Optional[dict[str, Any]] = None
    control: Optional[list[OpRecord]] = None
    comm_timing: Optional[CommTiming] = None
    schema: str = RUN_SCHEMA


# -- predictions ----------------------------------------------------------------------------------


@dataclass
class PredictedOpClass:
    """The analytic latency of one (op, phase, site class) on the critical path."""

    op: str
    phase: str
    site: str
    group_size: int
    tiers: str
    count: int
    time_s: float
    per_op_s: float
    lower_s: float
    upper_s: float


@dataclass
class PredictedMetrics:
    ttft_s: float
    tpot_s: float
    e2e_s: float
    comm_share: float
    compute_prefill_s: float
    compute_decode_per_token_s: float
    comm_prefill_s: float
    comm_decode_per_token_s: float
    comm_s: float
    comm_lower_s: float
    comm_upper_s: float
    algorithm: str


@dataclass
class Prediction:
    volume: list[VolumeRow]
    latency: list[PredictedOpClass] = field(default_factory=list)  # empty without a hardware profile
    metrics: Optional[PredictedMetrics] = None


# -- verdicts -------------------------------------------------------------------------------------


@dataclass
class VerdictRow:
    """One check.  ``unit`` says how to read the numbers: ``s``, ``B``, ``fraction``, ``change``
    (a relative change, bounds its confidence interval), ``count``."""

    check: str  # run | volume | latency | budget | baseline
    name: str
    verdict: str  # pass | fail | n/a
    unit: str = ""
    measured: float | None = None
    measured_tail: float | None = None  # the p99 beside a p50
    n: int | None = None
    model: float | None = None
    model_n: int | None = None  # volume rows: the model's call count …
    measured_wire: int | None = None  # … and the wire bytes on both sides
    model_wire: int | None = None
    low: float | None = None
    high: float | None = None
    budget: float | None = None
    budget_label: str = ""  # which statistic the budget bounds: "p99", "max", "change"
    detail: str = ""
    level: float | None = None  # the significance level (two-sided, or one-sided for a tail) it was judged at
    detectable: float | None = None  # the smallest relative slowdown it could have caught at that level


@dataclass
class Verdict:
    case_id: str
    rows: list[VerdictRow] = field(default_factory=list)

    @property
    def failed(self) -> list[VerdictRow]:
        return [r for r in self.rows if r.verdict == FAIL]

    @property
    def passed(self) -> bool:
        return not self.failed

    def count(self, verdict: str) -> int:
        return sum(r.verdict == verdict for r in self.rows)


@dataclass
class HostAnchor:
    """This host against the profile's calibration host (``calibration/anchor.py``): per (op, role)
    key (``send_recv/recv``, ``all_reduce``, ``gather/root``) the probe's median transfer / model,
    the fit's band, and the keys whose ratio fell outside it (their rows are n/a on this host).
    ``after``: this probe confirmed the failed rows of that case (the stricter rule: ``outside``
    holds every key not shown inside its calibration)."""

    profile: str
    ratios: dict[str, float]
    bands: dict[str, list[float]]
    outside: dict[str, float]  # key -> ratio, for the keys outside their band
    seconds: float
    probe: str  # what ran, in words
    error: str = ""  # the probe could not run: the profile stands as calibrated
    intervals: dict[str, list[float]] = field(default_factory=dict)  # 99 % interval of each ratio
    after: str = ""  # the case whose failed rows this probe re-ran to confirm ("": the session's probe)
    tails: dict[str, list[float]] = field(default_factory=dict)  # key -> [share under the tail allowance, it (x model), tail_q]

    def reason_for(self, op: str, role: str = "") -> str | None:
        """Why the rows of ``op`` (the model's op: ``send_recv`` for a send or a recv) with ``role``
        are n/a on this host, or None when the probe found that op where the profile puts it."""
        key = f"{op}/{role}" if role else op
        if key not in self.outside:
            return None
        lo, hi = self.bands[key]
        if self.after:
            share, allowance, q = self.tails.get(key, [1.0, 0.0, 0.0])
            return (f"not confirmed: the host anchor probe, re-run when this case failed, ran {key} at "
                    f"{self._ratio(key)} {self.profile}'s model (band {lo:.2f}-{hi:.2f}x), {share:.0%} of its calls "
                    f"under the tail allowance {allowance:.1f}x (need {q:.0%}): this host was not shown inside its "
                    f"calibration then, so the failure is no evidence against the engine")
        return (f"not this host's model: the host anchor probe ran {key} at {self._ratio(key)} "
                f"{self.profile}'s model, outside its calibrated band {lo:.2f}-{hi:.2f}x (this host or its "
                f"transport is not the one calibrated; recalibrate here: docs/calibration.md)")

    def _ratio(self, key: str) -> str:
        ci = self.intervals.get(key)
        return f"{self.ratios[key]:.2f}x" + (f" [99% CI {ci[0]:.2f}-{ci[1]:.2f}]" if ci else "")

    def describe(self) -> str:
        if self.error:
            if self.after:
                return f"host anchor re-run when {self.after} failed could not run ({self.error}): its failures stand"
            return f"host anchor failed ({self.error}): judged against {self.profile} as calibrated"
        inside = {k: v for k, v in self.ratios.items() if k not in self.outside}
        text = f"host anchor ({self.seconds:.1f} s probe{', re-run when ' + self.after + ' failed' if self.after else ''}): "
        if self.outside:
            text += (("NOT SHOWN inside the calibration of " + self.profile + ", their failed rows n/a: " if self.after
                      else "OUTSIDE the calibration of " + self.profile + ", their rows n/a: ")
                     + ", ".join(f"{k} {self._ratio(k)} (band {self.bands[k][0]:.2f}-{self.bands[k][1]:.2f})"
                                 for k in sorted(self.outside)) + "; ")
        return text + "within band: " + (", ".join(f"{k} {v:.2f}x" for k, v in sorted(inside.items())) or "none")


@dataclass
class CaseResult:
    spec: str
    path: str
    case_id: str
    hardware: str
    backend: str
    env: dict[str, Any]
    prediction: Prediction
    verdict: Verdict
    run: Optional[RunDocument] = None
    error: Optional[str] = None
    properties: list[tuple[str, str]] = field(default_factory=list)
    nodeid: str = ""
    ab: Optional[dict[str, Any]] = None  # the A/B gate's comparison (judging/ab/): no single run then
    hardware_how: str = ""  # how the profile was chosen: --llmcomm-hardware, the spec's hardware:, detected
    anchor: Optional[HostAnchor] = None  # this host against the profile's calibration host, when probed
    reprobe: Optional[HostAnchor] = None  # the anchor re-run to confirm this case's failed latency rows

    @property
    def passed(self) -> bool:
        return self.error is None and self.verdict.passed


@dataclass
class SessionReport:
    """A pytest session's cases, as ``llmcomm-report.json`` holds them and the HTML shows them."""

    env: dict[str, Any]
    backend: str
    hardware: str
    ranks: int
    options: dict[str, Any]
    items: list[CaseResult]
    complete: bool = True  # every selected case has a result (false while running, and after a stop)
    exitstatus: Optional[int] = None  # None: the session has not ended (still running, or killed)
    schema: str = "llmcomm.session/2"
    session_id: str = ""  # the items of this session in llmcomm-items.jsonl carry it
    selected: Optional[int] = None  # cases selected to run (None: not known)

    @property
    def passed(self) -> int:
        return sum(item.passed for item in self.items)

    @property
    def failed(self) -> int:
        return len(self.items) - self.passed
