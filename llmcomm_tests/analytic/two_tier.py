"""Two-tier TTFT/TPOT of one request batch, and the advisor's ranking of TP×PP layouts.

The critical path is e2e.py's (stages in series, every op blocking, compute + every logical op),
with each op timed on its tier (intra when its ranks share a node, inter otherwise, from
``ranks_per_node``) and two facts of a real deployment that e2e.py leaves to its defaults:

* ``nics_per_node`` — how many inter-node links a node has.  The t boundary-slice transfers of a
  hybrid run side by side; with one NIC per GPU (the study's testbed, e2e.py's assumption) they
  cost one transfer, with fewer NICs they queue: ⌈t / nics⌉ transfers.  The emulated cluster has
  one shaped egress per node.
* ``compute_parallelism`` — how many ranks can compute at once.  e2e.py divides every weight read
  by t (one device per rank); on the emulated cluster 4 ranks share 2 cores, so a TP4 stage is
  only 2× faster than one rank.  None = one device per rank.

No torch, nothing run: numbers from a profile (calibrated by calibration/two_tier.py on the emulated
cluster, or a preset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from llmcomm_tests.analytic import e2e, latency, volume
from llmcomm_tests.analytic.hardware import HardwareProfile
from llmcomm_tests.engine.config import EngineShape
from llmcomm_tests.engine.layout import Layout, LayoutError
from llmcomm_tests.analytic import tiers


@dataclass(frozen=True)
class LayoutPrediction:
    layout: Layout
    ttft_s: float
    tpot_s: float
    e2e_s: float
    parts: dict  # compute_prefill_s, compute_decode_s, comm_{prefill,decode}_{intra,inter}_s (per forward)
    bytes_per_token: dict  # tier -> wire bytes per generated token
    dominant_tpot: str  # the largest term of TPOT: compute | intra comm | inter comm
    dominant_ttft: str
    slo: dict = field(default_factory=dict)  # "ttft" / "tpot" -> bool (when budgets were given)

    def fits(self) -> bool:
        return all(self.slo.values())


def _dominant(terms: dict) -> str:
    return max(terms, key=terms.get)


def predict(shape: EngineShape, layout: Layout, batch: int, prompt_len: int, gen_len: int, dtype: str,
            profile: HardwareProfile, *, nics_per_node: int | None = None,
            compute_parallelism: int | None = None) -> LayoutPrediction:
    rpn = profile.ranks_per_node
    nics = nics_per_node or rpn
    comm = {(ph, t): 0.0 for ph in ("prefill", "decode") for t in latency.TIERS}
    for inst in volume.op_instances(shape, layout, batch, prompt_len, gen_len, dtype):
        tier = latency.tier_of(inst["ranks"], rpn)
        one = latency.op_time(profile, inst["op"], inst["group_size"], inst["msg_bytes"], tier)
        if inst["op"] == "send_recv" and tier == "inter" and inst["parallel"] > 1:
            # the parallel slices leave one node through its NICs: queue beyond one per NIC
            fit = profile.fit("send_recv", 2, "inter")
            queued = math.ceil(inst["parallel"] / nics)
            one += (queued - 1) * inst["msg_bytes"] / fit.beta_Bps
        comm[(inst["phase"], tier)] += inst["count"] * one
    t_eff = min(layout.tp, compute_parallelism or layout.tp)
    prefill_c, decode_c = e2e.compute_times(shape, Layout(t_eff, layout.pp), batch, prompt_len, dtype, profile)
    decodes = gen_len - 1
    parts = {"compute_prefill_s": prefill_c, "compute_decode_s": decode_c}
    for (phase, tier), seconds in comm.items():
        per = seconds / decodes if phase == "decode" and decodes else seconds
        parts[f"comm_{phase}_{tier}_s"] = per
    ttft = prefill_c + parts["comm_prefill_intra_s"] + parts["comm_prefill_inter_s"]
    tpot = decode_c + parts["comm_decode_intra_s"] + parts["comm_decode_inter_s"] if decodes else 0.0
    rows = tiers.predicted(shape, layout, batch, prompt_len, gen_len, dtype, rpn)
    totals = tiers.per_tier_totals(rows, batch * gen_len)
    return LayoutPrediction(
        layout, ttft, tpot, ttft + decodes * tpot, parts,
        {t: v["wire_bytes_per_token"] for t, v in totals.items()},
        _dominant({"compute": decode_c, "intra comm": parts["comm_decode_intra_s"],
                   "inter comm": parts["comm_decode_inter_s"]}),
        _dominant({"compute": prefill_c, "intra comm": parts["comm_prefill_intra_s"],
                   "inter comm": parts["comm_prefill_inter_s"]}),
    )


def feasible_layouts(shape: EngineShape, gpus: int) -> list[tuple[Layout, str | None]]:
    """Every TP×PP with tp·pp = gpus, with the reason when it cannot run this shape."""
    out = []
    for tp in range(1, gpus + 1):
        if gpus % tp:
            continue
        layout = Layout(tp, gpus // tp)
        try:
            layout.validate(shape)
            out.append((layout, None))
        except LayoutError as exc:
            out.append((layout, str(exc)))
    return out


def advise(shape: EngineShape, gpus: "int | list[int]", batch: int, prompt_len: int, gen_len: int, dtype: str,
           profile: HardwareProfile, *, ttft_s: float | None = None, tpot_s: float | None = None,
           nics_per_node: int | None = None, compute_parallelism: int | None = None,
           layouts: list[Layout] | None = None) -> tuple[list[LayoutPrediction], list[tuple[Layout, str]]]:
    """(ranked predictions, refused layouts with reasons).  Ranking: layouts that meet every given
    SLO first; then by TPOT, TTFT, and inter-node bytes per token (ties → less on the slow link)."""
    if layouts is None:
        sizes = [gpus] if isinstance(gpus, int) else list(gpus)
        candidates = [c for g in sizes for c in feasible_layouts(shape, g)]
    else:
        candidates = []
        for layout in layouts:
            try:
                layout.validate(shape)
                candidates.append((layout, None))
            except LayoutError as exc:
                candidates.append((layout, str(exc)))
    preds, refused = [], []
    for layout, why in candidates:
        if why:
            refused.append((layout, why))
            continue
        p = predict(shape, layout, batch, prompt_len, gen_len, dtype, profile, nics_per_node=nics_per_node,
                    compute_parallelism=compute_parallelism)
        slo = {}
        if ttft_s is not None:
            slo["ttft"] = p.ttft_s <= ttft_s
        if tpot_s is not None:
            slo["tpot"] = p.tpot_s <= tpot_s
        preds.append(replace(p, slo=slo))
    preds.sort(key=lambda p: (not p.fits(), p.tpot_s, p.ttft_s, p.bytes_per_token["inter"]))
    return preds, refused


def why_not(p: LayoutPrediction, ttft_s: float | None, tpot_s: float | None) -> str:
    """One line: which SLO a layout misses, by how much, and which term dominates it."""
    reasons = []
    if ttft_s is not None and not p.slo.get("ttft", True):
        reasons.append(f"TTFT {p.ttft_s * 1e3:.1f} ms > {ttft_s * 1e3:g} ms ({p.dominant_ttft} dominates)")
    if tpot_s is not None and not p.slo.get("tpot", True):
        reasons.append(f"TPOT {p.tpot_s * 1e3:.2f} ms > {tpot_s * 1e3:g} ms ({p.dominant_tpot} dominates)")
    return "; ".join(reasons) or "meets the SLOs"


def table(preds: list[LayoutPrediction], ttft_s: float | None, tpot_s: float | None) -> str:
    lines = [f"{'#':>2} {'layout':>9} {'TTFT(ms)':>9} {'TPOT(ms)':>9} {'inter B/tok':>12} {'intra B/tok':>12} "
             f"{'TPOT: compute/intra/inter (ms)':>31} {'SLO':>4}  why"]
    for i, p in enumerate(preds, 1):
        parts = p.parts
        split = (f"{parts['compute_decode_s'] * 1e3:.2f}/{parts['comm_decode_intra_s'] * 1e3:.2f}/"
                 f"{parts['comm_decode_inter_s'] * 1e3:.2f}")
        ok = "ok" if p.fits() else "miss"
        lines.append(f"{i:>2} {str(p.layout):>9} {p.ttft_s * 1e3:>9.2f} {p.tpot_s * 1e3:>9.3f} "
                     f"{p.bytes_per_token['inter']:>12.0f} {p.bytes_per_token['intra']:>12.0f} {split:>31} {ok:>4}  "
                     f"{why_not(p, ttft_s, tpot_s) if not p.fits() else 'dominated by ' + p.dominant_tpot}")
    return "\n".join(lines)
