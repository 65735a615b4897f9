"""α-β (Hockney) time of one communication op, and two-sided bounds on it.

One formula shape for every op:   T = base + n_α(op, t)·α + n_β(op, t)·M/β

* α      – latency of one step/hop of the algorithm (s); β – bandwidth per direction (B/s), i.e.
  nccl-tests' *bus* bandwidth, so one β is comparable across ops and group sizes.
* base   – a constant per-op launch cost (s).  Datasheet presets use it for NCCL's published base
  latency; a calibration fit leaves it 0 (for one group size it cannot be told apart from α).
* M      – ``msg_bytes``: the buffer for all_reduce / broadcast / send_recv, the total over all
  ranks for all_gather / reduce_scatter / gather (nccl-tests' size convention).
* t      – group size.  A group of one rank issues nothing: T = 0.

Coefficients (n_α, n_β) — ring is the default algorithm, tree the alternative:

| op             | ring                  | tree (⌈log2 t⌉ = λ)   | why                                       |
|----------------|-----------------------|-----------------------|-------------------------------------------|
| send_recv      | 1, 1                  | 1, 1                  | one message                               |
| all_reduce     | 2(t−1), 2(t−1)/t      | 2λ, 2                 | reduce-scatter + all-gather / up + down   |
| all_gather     | t−1, (t−1)/t          | λ, (t−1)/t            | ring / recursive doubling                 |
| reduce_scatter | t−1, (t−1)/t          | λ, (t−1)/t            | same data movement as all_gather          |
| gather         | t−1, (t−1)/t          | λ, (t−1)/t            | root takes t−1 messages of M/t: its link  |
| broadcast      | t−1, 1                | λ, 1                  | pipelined chain / pipelined tree          |

Bounds (``bounds``): lower = the physical floor — one minimal latency ``alpha_min`` plus the
ring's n_β·M (the least any algorithm must put through one rank's link) at the tier's *peak*
bandwidth; nothing real is faster, so a measurement below it was timed wrongly (an asynchronous op
timed without synchronisation).  In-network reduction (NVLS / SHARP) would beat the all-reduce floor;
profiles here assume it off.  Upper = fit × k_hi + slack, with the spread from calibration
residuals (or a deliberately wide default on uncalibrated presets).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Iterable

from llmcomm_tests.core.contract import LATENCY_OPS

if TYPE_CHECKING:  # hardware imports this module; keep the import one-way at run time
    from llmcomm_tests.analytic.hardware import HardwareProfile

OPS = LATENCY_OPS
ALGORITHMS = ("ring", "tree")
TIERS = ("intra", "inter")


def coefficients(op: str, group_size: int, algorithm: str = "ring") -> tuple[float, float]:
    """(n_α, n_β) of ``op`` over ``group_size`` ranks; (0, 0) for a group of one."""
    t = group_size
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; known: {', '.join(OPS)}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    if op == "send_recv":
        return 1.0, 1.0
    if t < 1:
        raise ValueError(f"group size must be >= 1, got {t}")
    if t == 1:
        return 0.0, 0.0
    share = (t - 1) / t
    if algorithm == "ring":
        return {
            "all_reduce": (2.0 * (t - 1), 2.0 * share),
            "all_gather": (t - 1.0, share),
            "reduce_scatter": (t - 1.0, share),
            "gather": (t - 1.0, share),
            "broadcast": (t - 1.0, 1.0),
        }[op]
    hops = float(math.ceil(math.log2(t)))
    return {
        "all_reduce": (2.0 * hops, 2.0),
        "all_gather": (hops, share),
        "reduce_scatter": (hops, share),
        "gather": (hops, share),
        "broadcast": (hops, 1.0),
    }[op]


def hockney_time(op: str, group_size: int, nbytes: float, alpha_s: float, beta_Bps: float,
                 algorithm: str = "ring", base_s: float = 0.0) -> float:
    """T = base + n_α·α + n_β·M/β (seconds); 0 for a collective over one rank."""
    n_alpha, n_beta = coefficients(op, group_size, algorithm)
    if n_alpha == 0.0 and n_beta == 0.0:
        return 0.0
    return base_s + n_alpha * alpha_s + n_beta * nbytes / beta_Bps


def floor_time(op: str, group_size: int, nbytes: float, alpha_min_s: float, peak_Bps: float) -> float:
    """Physical floor: one minimal latency + the ring's (least) bytes through one link at peak."""
    n_alpha, n_beta = coefficients(op, group_size, "ring")
    if n_alpha == 0.0 and n_beta == 0.0:
        return 0.0
    return alpha_min_s + n_beta * nbytes / peak_Bps


def tier_of(ranks: Iterable[int], ranks_per_node: int) -> str:
    """``intra`` when every rank sits on one node (global rank // ranks_per_node), else ``inter``:
    a ring step waits for its slowest link, so one node crossing sets the whole op's pace."""
    nodes = {r // ranks_per_node for r in ranks}
    return "intra" if len(nodes) <= 1 else "inter"


def op_time(profile: "HardwareProfile", op: str, group_size: int, nbytes: float, tier: str = "intra",
            algorithm: str | None = None, role: str = "", world_size: int | None = None) -> float:
    """Calibrated (or preset) α-β time of one op (``role`` / ``world_size``: a fit's variant)."""
    fit = profile.fit(op, group_size, tier, role, world_size)
    return hockney_time(op, group_size, nbytes, fit.alpha_s, fit.beta_Bps, algorithm or profile.algorithm,
                        fit.base_s)


def bounds(profile: "HardwareProfile", op: str, group_size: int, nbytes: float, tier: str = "intra",
           algorithm: str | None = None) -> tuple[float, float]:
    """(lower_s, upper_s): lower = physical floor, upper = fit × k_hi + slack."""
    tier_params = profile.tier(tier)
    fit = profile.fit(op, group_size, tier)
    lower = floor_time(op, group_size, nbytes, tier_params.alpha_min_s, tier_params.peak_Bps)
    estimate = op_time(profile, op, group_size, nbytes, tier, algorithm)
    if estimate == 0.0:
        return 0.0, 0.0
    k_hi = fit.k_hi if fit.k_hi is not None else tier_params.k_hi
    slack = fit.slack_s if fit.slack_s is not None else tier_params.slack_s
    return lower, estimate * k_hi + slack


def transfer_role(op: str, role: str = "") -> str:
    """The variant role of a recorded call: ``send`` / ``recv`` for p2p, else its role (``root`` /
    ``peer`` of a rooted op, ``""``)."""
    return op if op in ("send", "recv") else role


def transfer_band(profile: "HardwareProfile", op: str, group_size: int, nbytes: float, tier: str = "intra",
                  algorithm: str | None = None, role: str = "", world_size: int | None = None
                  ) -> tuple[float, float, float, float, float]:
    """``(model_s, low_s, high_s, tail_q, tail_s)`` of one op's *transfer* (after the last peer
    arrived): the band its median may sit in, and the time its ``tail_q`` quantile stays under.
    ``role`` (``transfer_role``) and ``world_size`` pick a calibrated variant where there is one."""
    tier_params = profile.tier(tier)
    fit = profile.fit(op, group_size, tier, role, world_size)
    model = op_time(profile, op, group_size, nbytes, tier, algorithm, role, world_size)
    lo = fit.band_lo if fit.band_lo is not None else tier_params.band_lo
    hi = fit.band_hi if fit.band_hi is not None else tier_params.band_hi
    k = fit.tail_k if fit.tail_k is not None else tier_params.tail_k
    return model, model * lo, model * hi, tier_params.tail_q, model * k
