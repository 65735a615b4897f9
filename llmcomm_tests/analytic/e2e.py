"""TTFT, TPOT and E2E of one request batch: compute + communication on the critical path.

Critical path.  One request batch is one micro-batch: the p stages run strictly one after another
(PP serialisation, bubble (p−1)/p of the schedule) and every op the engine issues is blocking, so
the critical path is the sum of the compute of every stage and the time of every logical op
(volume.op_instances): a collective costs its α-β time once (its ranks work together), the t slice
transfers of a hybrid boundary run side by side and cost one transfer (one NIC per GPU: no sharing).

Compute (what-if, roofline per forward; stages in series, so the layer split p drops out and only
the t-way split of every weight matrix shortens it):

    time = max( 2·P·tokens / (t · peak_flops · prefill_efficiency),     compute-bound (prefill)
                P·e / (t · hbm_Bps · decode_efficiency) )               weight reads (decode)

with P = shape.n_params(), e = bytes per element, tokens = batch·s.  KV-cache reads, attention's
s² term and replicated KV heads (t > k) are left out: small next to the weights at these lengths.

Metrics (vLLM's benchmark definitions): TTFT = prefill forward + its comm, including the pp.tokens
transfer that brings the first token to the driver (global rank 0, where the engine stamps token times);
TPOT = one decode forward + its comm; E2E = TTFT + (gen_len − 1)·TPOT.  comm_share = comm / E2E.
"""

from __future__ import annotations

from collections import defaultdict

from llmcomm_tests.engine.config import DTYPE_BYTES, EngineShape
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.analytic import latency, volume
from llmcomm_tests.analytic.hardware import HardwareProfile, load_profile


def compute_times(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, dtype: str,
                  profile: HardwareProfile) -> tuple[float, float]:
    """(prefill forward, one decode forward) compute seconds on the critical path."""
    c, t = profile.compute, layout.tp
    params, elem = shape.n_params(), DTYPE_BYTES[dtype]
    weights = params * elem / (t * c.hbm_Bps * c.decode_efficiency)

    def forward(tokens: int) -> float:
        return max(2.0 * params * tokens / (t * c.peak_flops * c.prefill_efficiency), weights)

    return forward(batch * prompt_len), forward(batch)


def latency_rows(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int, dtype: str,
                 profile: HardwareProfile, algorithm: str | None = None) -> list[dict]:
    """Per (op, phase, site class): logical-op ``count`` and total ``time_s`` / ``lower_s`` /
    ``upper_s`` on the critical path, ``tiers`` the link tiers used, sorted by (op, phase, site)."""
    table: dict = defaultdict(lambda: {"count": 0, "time_s": 0.0, "lower_s": 0.0, "upper_s": 0.0,
                                       "tiers": set(), "group_size": 0})
    for inst in volume.op_instances(shape, layout, batch, prompt_len, gen_len, dtype):
        tier = profile.tier_of(inst["ranks"])
        args = (inst["op"], inst["group_size"], inst["msg_bytes"], tier)
        one = latency.op_time(profile, *args, algorithm=algorithm)
        lower, upper = latency.bounds(profile, *args, algorithm=algorithm)
        acc = table[(inst["op"], inst["phase"], inst["site"])]
        n = inst["count"]
        acc["count"] += n
        acc["time_s"] += n * one
        acc["lower_s"] += n * lower
        acc["upper_s"] += n * upper
        acc["tiers"].add(tier)
        acc["group_size"] = inst["group_size"]
    rows = []
    for (op, phase, site), acc in sorted(table.items()):
        rows.append({"op": op, "phase": phase, "site": site, "group_size": acc["group_size"],
                     "tiers": "+".join(sorted(acc["tiers"])), "count": acc["count"], "time_s": acc["time_s"],
                     "per_op_s": acc["time_s"] / acc["count"], "lower_s": acc["lower_s"], "upper_s": acc["upper_s"]})
    return rows


def predict_case(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int,
                 dtype: str = "bf16", profile: "HardwareProfile | str" = "h100-nvlink4",
                 algorithm: str | None = None) -> dict:
    """Volume, per-op-class latency and TTFT/TPOT/E2E of one request batch.

    Returns ``{"case", "volume", "volume_summary", "latency", "metrics"}``; ``metrics`` holds
    ttft_s, tpot_s, e2e_s, comm_share and their parts (compute_*, comm_*, comm bounds)."""
    if isinstance(profile, str):
        profile = load_profile(profile)
    rows = volume.predict_volume(shape, layout, batch, prompt_len, gen_len, dtype)
    lat = latency_rows(shape, layout, batch, prompt_len, gen_len, dtype, profile, algorithm)
    prefill_compute, decode_compute = compute_times(shape, layout, batch, prompt_len, dtype, profile)
    decodes = gen_len - 1

    def comm(phase: str, key: str = "time_s") -> float:
        return sum(r[key] for r in lat if r["phase"] == phase)

    comm_prefill, comm_decode = comm("prefill"), comm("decode")
    ttft = prefill_compute + comm_prefill
    tpot = decode_compute + comm_decode / decodes if decodes else 0.0
    e2e = ttft + decodes * tpot
    comm_total = comm_prefill + comm_decode
    metrics = {
        "ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e, "comm_share": comm_total / e2e if e2e else 0.0,
        "compute_prefill_s": prefill_compute, "compute_decode_per_token_s": decode_compute if decodes else 0.0,
        "comm_prefill_s": comm_prefill, "comm_decode_per_token_s": comm_decode / decodes if decodes else 0.0,
        "comm_s": comm_total,
        "comm_lower_s": comm("prefill", "lower_s") + comm("decode", "lower_s"),
        "comm_upper_s": comm("prefill", "upper_s") + comm("decode", "upper_s"),
        "algorithm": algorithm or profile.algorithm,
    }
    case = {**shape.to_dict(), "tp": layout.tp, "pp": layout.pp, "batch": batch, "prompt_len": prompt_len,
            "gen_len": gen_len, "dtype": dtype, "hardware": profile.name}
    return {"case": case, "volume": rows,
            "volume_summary": volume.summarize(rows, batch, gen_len, layout.world_size),
            "latency": lat, "metrics": metrics}
