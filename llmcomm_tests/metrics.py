"""Records and token times → metrics (vLLM's definitions, DOMAIN.md §6) and volume rows."""

from __future__ import annotations

from collections import defaultdict

from .contract import site_class


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile; with n samples p99 of n < 100 is close to the maximum."""
    if not values:
        return None
    xs = sorted(values)
    k = (len(xs) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def summary(values: list[float]) -> dict:
    return {"p50": percentile(values, 50), "p99": percentile(values, 99), "n": len(values),
            "min": min(values) if values else None, "max": max(values) if values else None}


def latency_metrics(generations: list[dict], gen_len: int, batch: int) -> dict:
    """TTFT, TPOT, E2E per repetition (p50 headline, samples kept), ITL over all repetitions."""
    ttft, tpot, e2e, itl = [], [], [], []
    for gen in generations:
        times = gen["token_times_s"]
        ttft.append(times[0])
        e2e.append(times[-1])
        tpot.append((times[-1] - times[0]) / (gen_len - 1) if gen_len > 1 else 0.0)
        itl.extend(b - a for a, b in zip(times, times[1:]))
    p50_e2e = percentile(e2e, 50)
    return {
        "ttft_s": percentile(ttft, 50), "tpot_s": percentile(tpot, 50), "e2e_s": p50_e2e, "itl_s": itl,
        "tokens_per_s": batch * gen_len / p50_e2e if p50_e2e else None,
        "samples": {"ttft_s": ttft, "tpot_s": tpot, "e2e_s": e2e},
        "ttft": summary(ttft), "tpot": summary(tpot), "e2e": summary(e2e), "repeats": len(generations),
    }


def volume(ops: list[dict], rep: int = 0) -> list[dict]:
    """Rows (op, phase, site class) → count, bytes, wire_bytes summed over ranks, one repetition."""
    rows: dict[tuple, list[int]] = defaultdict(lambda: [0, 0, 0])
    for op in ops:
        if op["rep"] != rep:
            continue
        row = rows[(op["op"], op["phase"], site_class(op["site"]))]
        row[0] += 1
        row[1] += op["bytes"]
        row[2] += op["wire_bytes"]
    return [{"op": k[0], "phase": k[1], "site": k[2], "count": v[0], "bytes": v[1], "wire_bytes": v[2]}
            for k, v in sorted(rows.items())]


def volume_stable(ops: list[dict], repeats: int) -> bool:
    """Every repetition moved the same ops and bytes (a deterministic engine must)."""
    first = volume(ops, 0)
    return all(volume(ops, rep) == first for rep in range(1, repeats))


def busy_time(intervals: list[tuple[int, int]]) -> float:
    """Seconds covered by the union of [start_ns, end_ns) intervals: overlapping ops (async p2p, an
    op issued while another is in flight) count once."""
    total, cur_start, cur_end = 0, None, None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total / 1e9


def comm_metrics(ops: list[dict], generations: list[dict], batch: int, gen_len: int, world_size: int) -> dict:
    """Time spent inside comm calls (peers' lateness included: what a rank waited), per token and as a
    share of TTFT/TPOT, plus bytes per generated token.  Medians over repetitions, max over ranks."""
    spans: dict[tuple[int, int, str], list[tuple[int, int]]] = defaultdict(list)
    wire = defaultdict(int)
    for op in ops:
        if op["duration_s"] is not None:
            start = op["start_ns"]
            spans[(op["rep"], op["rank"], op["phase"])].append((start, start + int(op["duration_s"] * 1e9)))
        wire[op["rep"]] += op["wire_bytes"]
    per_token, ttft_share, tpot_share, e2e_share = [], [], [], []
    for rep, gen in enumerate(generations):
        ranks = range(world_size)
        prefill = max(busy_time(spans[(rep, r, "prefill")]) for r in ranks)
        decode = max(busy_time(spans[(rep, r, "decode")]) for r in ranks)
        total = max(busy_time(spans[(rep, r, "prefill")] + spans[(rep, r, "decode")]) for r in ranks)
        times = gen["token_times_s"]
        per_token.append(total / gen_len)
        e2e_share.append(total / times[-1] if times[-1] else 0.0)
        ttft_share.append(prefill / times[0] if times[0] else 0.0)
        if gen_len > 1 and times[-1] > times[0]:
            tpot_share.append(decode / (times[-1] - times[0]))
    tokens = batch * gen_len
    return {
        "comm_time_per_token_s": percentile(per_token, 50),
        "comm_share_ttft": percentile(ttft_share, 50),
        "comm_share_tpot": percentile(tpot_share, 50),
        "comm_share": percentile(e2e_share, 50),  # of the whole request (E2E)
        "bytes_per_token": wire.get(0, 0) / tokens,
        "wire_bytes_total": wire.get(0, 0),
        "samples": {"comm_time_per_token_s": per_token, "comm_share": e2e_share,
                    "comm_share_ttft": ttft_share, "comm_share_tpot": tpot_share},
    }
