"""The host anchor: is the host the suite runs on the host the profile was calibrated on?

A CPU profile (``cpu-loopback``) is calibrated on one host, and its bands cover that host's
launch-to-launch drift, not another machine's speed: a CI runner whose idle pipeline stage wakes
2–3× slower fails every point-to-point row of an unchanged run.  Before the first case is judged,
the session re-runs a slice of the profile's own calibration here (``Anchor``: the same engine
conditions and the same statistic, a few sizes, one launch, no planted fault) and compares each
(op, role) with the model:

* ratio = the median of transfer / model over every probed call of an (op, role), all sizes
  pooled: the statistic each launch of the calibration was held to when its band was drawn;
* its distribution-free 99 % interval overlapping the fit's band [band_lo, band_hi] — the rule a
  case's centre row is held to — the profile describes this host for that op, and its rows are
  judged as calibrated;
* the whole interval outside the band: the profile does not describe this host (or this torch's
  transport) for that op.
  Its latency rows say n/a with the probe's numbers (``HostAnchor.reason_for``), never pass or
  fail on a model that is not this host's; the remedy is a calibration here.

One probe at the session's start cannot see a host that slows later (a 2-core CI runner whose
neighbour wakes mid-session).  So a case whose latency rows fail is *confirmed*: the probe runs again
right after it (``measure(..., after=case)``) under the stricter rule a failure needs — the host
shown inside its calibration for that op: the 99 % interval wholly inside the band, and the tail
allowance holding for the probe's calls (not significantly fewer than ``tail_q`` of them under it).
A failed row whose op the re-probe does not show so becomes n/a with the re-probe's numbers
(``judging.checks.unconfirmed``); the others stand.

The probe times raw torch.distributed calls, not the engine: a regression in the engine or a
framework (or one planted with ``--llmcomm-inject``, which never reaches the probe) still fails its
rows.  A probe that cannot run leaves the profile as calibrated and says why.
"""

from __future__ import annotations

import statistics
import time
from collections import defaultdict

from llmcomm_tests.analytic import latency
from llmcomm_tests.analytic.hardware import HardwareProfile
from llmcomm_tests.calibration.sweep import engine_sweep
from llmcomm_tests.core.documents import HostAnchor
from llmcomm_tests.core.stats import binomial_cdf, median_ci
from llmcomm_tests.core.text import nbytes

CONFIDENCE = 0.99  # of the probe's median ratio: outside only when the whole interval is


def measure(profile: HardwareProfile, backend: str = "gloo", timeout_s: float = 120.0, after: str = "") -> HostAnchor:
    """Run ``profile.anchor``'s probe here and judge each (op, role) against the profile; ``after``:
    the case whose failed rows this probe confirms (the stricter rule, above)."""
    anchor = profile.anchor
    if anchor is None:
        raise ValueError(f"profile {profile.name!r} has no anchor: probe")
    started = time.monotonic()
    rows = []
    for index, probe in enumerate(anchor.probes):
        rows += engine_sweep(anchor.world_size, list(probe.ops), list(anchor.sizes), anchor.repeats,
                             compute_ms=probe.compute_ms, compute_mb=probe.compute_mb, backend=backend,
                             timeout_s=timeout_s, launch_id=index)
    return judge(profile, rows, time.monotonic() - started, after)


def judge(profile: HardwareProfile, rows: list[dict], seconds: float = 0.0, after: str = "") -> HostAnchor:
    """``engine_sweep`` rows → ratio, band and factor per (op, role).  Pure: the probe's numbers in,
    the decision out (unit-tested on known rows).  ``after``: a confirming probe (the rule above)."""
    world = profile.anchor.world_size if profile.anchor else 2
    scaled: dict = defaultdict(list)  # (op, role) -> [transfer / model, per call]
    for row in rows:
        for t, role in zip(row["transfer_s"], row["transfer_role"]):
            model = latency.op_time(profile, row["op"], row["group_size"], row["bytes"], "intra", role=role,
                                    world_size=world)
            if model > 0:
                scaled[(row["op"], role)].append(t / model)
    ratios, intervals, bands, outside, tails = {}, {}, {}, {}, {}
    for (op, role), values in sorted(scaled.items()):
        key = f"{op}/{role}" if role else op
        ratio = statistics.median(values)
        low, high = median_ci(values, CONFIDENCE) or (min(values), max(values))
        _, lo, hi, tail_q, tail_s = latency.transfer_band(profile, op, world, 1.0, "intra", role=role, world_size=world)
        model_1b = latency.op_time(profile, op, world, 1.0, "intra", role=role, world_size=world)
        band = (lo / model_1b, hi / model_1b)
        ratios[key], intervals[key], bands[key] = ratio, [low, high], list(band)
        under = sum(v <= tail_s / model_1b for v in values)
        tails[key] = [under / len(values), tail_s / model_1b, tail_q]
        if high < band[0] or low > band[1]:
            outside[key] = ratio
        elif after and (low < band[0] or high > band[1] or binomial_cdf(under, len(values), tail_q) < 1 - CONFIDENCE):
            outside[key] = ratio  # a failure's confirmation: not shown inside the calibration
    return HostAnchor(profile.name, ratios, bands, outside, seconds, probe_text(profile), intervals=intervals,
                      after=after, tails=tails)


def probe_text(profile: HardwareProfile) -> str:
    a = profile.anchor
    parts = [f"{'+'.join(p.ops)} after {p.compute_ms:g} ms compute" + (f" over {p.compute_mb:g} MiB" if p.compute_mb
                                                                       else "") for p in a.probes]
    return (f"{a.world_size} ranks, {'; '.join(parts)}; sizes {', '.join(nbytes(b) for b in a.sizes)}; "
            f"{a.repeats} calls each, one launch per probe")

