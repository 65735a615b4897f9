"""A run document reduced to what an A/B pair compares: the volume rows (compared exactly) and one
centre per timed metric (compared by paired statistics).

The centre of a metric in one run: for TTFT, TPOT and E2E (one time per repetition, a handful)
the 10 %-trimmed mean of the log times (``stats.TRIM``); for an op class (hundreds of calls) the
log of its lower quartile.  Why the quartile: on a loaded 2-core host a large share of calls is
stretched by a rank being descheduled mid-op, and that share moves from run to run; the calls
that ran with both ranks on a core form the lower part of the distribution, and a slowdown of
the op itself shifts them like every other call.  Its per-pair log ratio scatters far less than
the median's or the trimmed mean's (docs/measurements.md#ab-centres).  Op classes are
(op, phase, group size) and split into *transfer* and *wait*: calls whose time includes waiting
for a peer's compute (the token broadcast waiting for sampling, the LM-head gather waiting for the
slowest slice) time the schedule, not the link, and get their own row (``runtime/arrival.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from llmcomm_tests.core import stats
from llmcomm_tests.core.documents import RunDocument, VolumeRow

LATENCY_METRICS = ("ttft", "tpot", "e2e")


@dataclass
class ArmRun:
    volume: list[VolumeRow]
    volume_stable: bool
    centres: dict[str, float] = field(default_factory=dict)  # metric -> trimmed mean of log seconds
    samples: dict[str, int] = field(default_factory=dict)  # metric -> how many times went in


def op_metric(op: str, phase: str, group_size: int, waiting: bool) -> str:
    return f"op {op} {phase} /{group_size} {'wait' if waiting else 'transfer'}"


def observe(doc: RunDocument) -> ArmRun:
    return _observe_typed(doc)


OP_QUANTILE = 25  # percentile of an op class's call times taken as its centre


def _centres(times: dict[str, list[float]]) -> tuple[dict[str, float], dict[str, int]]:
    centres, counts = {}, {}
    for name, values in times.items():
        logs = stats.positive_logs(values)
        if len(logs):
            centres[name] = float(stats.trimmed_mean(logs) if name in LATENCY_METRICS
                                  else stats.percentile(sorted(logs), OP_QUANTILE))
            counts[name] = len(logs)
    return centres, counts


def _observe_typed(doc: RunDocument) -> ArmRun:
    times: dict[str, list[float]] = {m: list(getattr(doc.metrics, m).samples) for m in LATENCY_METRICS}
    merged = {}
    for summary in doc.ops:  # merged per metric: each class's kept samples in proportion to its calls
        if summary.latency is not None and summary.latency.samples:
            key = op_metric(summary.op, summary.phase, summary.group_size, summary.waiting is not None)
            merged[key] = merged[key].merge(summary.latency) if key in merged else summary.latency
    times.update((key, latency.samples) for key, latency in sorted(merged.items()))
    centres, counts = _centres(times)
    return ArmRun([VolumeRow(r.op, r.phase, r.site, r.count, r.bytes, r.wire_bytes) for r in doc.volume],
                  bool(doc.volume_stable), centres, counts)
