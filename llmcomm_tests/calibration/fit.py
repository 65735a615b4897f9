"""Fit a hardware profile's α, β per op from a communication size sweep (``llmcomm calibrate``).

    llmcomm calibrate --world-size 2[,4] [--out profile.yaml] [--sizes 1024,4096,...] [--repeats 20]
                      [--base cpu-loopback] [--name NAME] [--rows bench.json[,bench2.json]]
                      [--spread-from RUNS_DIR_OR_FILES] [--spread-quantile 0.999]

The sweep is ``llmcomm_tests.calibration.sweep.sweep`` (rows ``{op, world_size, bytes, times_s}``,
``bytes`` in nccl-tests' size convention = latency.py's ``msg_bytes``), or a saved
``llmcomm bench-comm --json`` file with ``--rows``.  The fit (``fit_profile``, pure, no torch):

* robust: per (op, group size, size) the *median* of the repetitions, then a straight line
  T = a + b·M through the medians minimising Σ |log(fit / median)| (least absolute error of the
  ratio, by reweighted least squares): ratios, so a 1 KiB point counts as much as a 16 MiB one;
  absolute, so sizes whose medians landed in another scheduling regime do not drag the line;
* a = n_α·α and b = n_β/β with the ring coefficients of latency.py (base_s stays 0: one group size
  cannot tell a launch cost from per-step latency); a < 0 is refitted through the origin;
* send_recv is one pair whatever the sweep's world size: several world sizes pool into one fit;
* spread: k_hi = the 0.99 quantile of sample / fit over every repetition (≥ 1; with few samples
  it is the maximum), so upper = fit × k_hi bounds what was seen;
* quality: R² of the medians, median relative error, point and sample counts (stored with the fit).
* ``--spread-from``: k_hi re-measured on the bounded op records of real engine runs instead
  (``analytic.accuracy.fit_spread``): a sweep times ops with ranks aligned by a barrier, the engine
  does not, and on an oversubscribed host the recorded durations carry the peers' lateness.

Engine conditions (``--engine-conditions``, ``fit_engine_conditions``): the model the latency check
holds the engine's *transfers* to (``runtime/arrival.py``: each call's time after the last peer arrived),
calibrated on its own data under the conditions the engine creates — the same ranks per core,
compute between calls, no barrier before each call (``bench_comm.engine_sweep``) — in ``--launches
K`` separate launches (fresh rank processes each), since the check must tolerate the drift between
sessions, not only the spread within one:

* α, β: ``fit_line`` through the per-size *median transfers* (pooled over launches, world sizes,
  ranks and roles), per (op, group size); send_recv is one pair and pools every configuration;
* band: per (launch, world size, role) the median of transfer / fit over that launch's samples
  of the op; ``band_lo`` = their minimum ÷ ``--margin``, ``band_hi`` = their maximum × margin,
  clipped to [1/3, 3] (a note says so when clipping bit: the host drifts more than a check may
  allow);
* tail: ``tail_k`` = the ``tail_q`` quantile of transfer / fit pooled over every sample × margin
  (at least ``band_hi``), ``tail_q`` the tier's (0.9);
* ``source`` and ``notes`` carry the command, compute-ms, world sizes, ranks per core, launches,
  margin and date; each fit's ``quality`` keeps the per-launch medians it rests on.

The fits land in the base profile's ``intra`` tier (one host: every rank is intra) under the group
size and as that op's ``default``; compute peaks and the ``inter`` tier are kept from the base.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import statistics
from collections import defaultdict
from dataclasses import replace

from llmcomm_tests.core.stats import percentile
from llmcomm_tests.core.text import text_table
from llmcomm_tests.analytic import latency
from llmcomm_tests.analytic.hardware import P2P_GROUP, HardwareProfile, OpFit, load_profile

PROFILE_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")  # as the spec schema's hardware names
DEFAULT_SIZES = [2 ** k for k in range(10, 25, 2)]  # 1 KiB … 16 MiB, ×4 (as bench-comm)


def _weighted_line(xs: list[float], ys: list[float], w: list[float]) -> tuple[float, float]:
    sw = sum(w)
    sx = sum(wi * x for wi, x in zip(w, xs))
    sy = sum(wi * y for wi, y in zip(w, ys))
    sxx = sum(wi * x * x for wi, x in zip(w, xs))
    sxy = sum(wi * x * y for wi, x, y in zip(w, xs, ys))
    det = sw * sxx - sx * sx
    if det <= 0:
        raise ValueError("need at least two distinct message sizes to fit α and β")
    a = (sxx * sy - sx * sxy) / det
    b = (sw * sxy - sx * sy) / det
    if a < 0:  # negative latency is noise at the small sizes: refit through the origin
        a, b = 0.0, sxy / sxx
    if b <= 0:  # time does not grow with size: bandwidth not measurable here, a flat line
        a, b = sy / sw, 0.0
    return a, b


def _log_l1(a: float, b: float, xs: list[float], ys: list[float]) -> float:
    return sum(abs(math.log(max(a + b * x, 1e-300) / y)) for x, y in zip(xs, ys))


def fit_line(xs: list[float], ys: list[float], iterations: int = 100) -> tuple[float, float]:
    """(a, b) ≥ 0 of y ≈ a + b·x minimising Σ |log((a + b·x) / y)|: least absolute error of the
    *ratio*, by iteratively reweighted least squares (weights 1 / (|r|·√(model·y)), since
    |log(m/y)| ≈ |m − y| / √(m·y)) from the 1/y²-weighted least-squares line, keeping whichever of
    the two scores better.  Ratios, so a 1 KiB point counts as much as a 16 MiB one and a factor
    of 2 weighs the same up or down; absolute (L1), so a few sizes whose medians landed in another
    scheduling regime (4 ranks over 2 cores: docs/calibration.md) do not drag the line — least
    squares would let them."""
    start = _weighted_line(xs, ys, [1.0 / (y * y) for y in ys])
    a, b = start
    for _ in range(iterations):
        w = []
        for x, y in zip(xs, ys):
            m = max(a + b * x, 1e-3 * y)
            w.append(1.0 / (max(abs(m - y), 1e-4 * y) * math.sqrt(m * y)))
        a2, b2 = _weighted_line(xs, ys, w)
        done = abs(a2 - a) <= 1e-12 + 1e-9 * abs(a) and abs(b2 - b) <= 1e-18 + 1e-9 * abs(b)
        a, b = a2, b2
        if done:
            break
    return min((start, (a, b)), key=lambda ab: _log_l1(ab[0], ab[1], xs, ys))


def fit_op(op: str, group_size: int, points: dict[int, list[float]]) -> OpFit:
    """One op's fit from ``{msg_bytes: [seconds per repetition]}``."""
    sizes = sorted(points)
    medians = [statistics.median(points[m]) for m in sizes]
    if min(medians) <= 0:
        raise ValueError(f"{op} over {group_size}: non-positive median time")
    a, b = fit_line([float(m) for m in sizes], medians)
    n_alpha, n_beta = latency.coefficients(op, group_size, "ring")
    if n_alpha == 0:
        raise ValueError(f"{op} over {group_size} rank(s) issues nothing: cannot fit")
    alpha = a / n_alpha
    beta = n_beta / b if b > 0 else float("inf")

    def model(m: float) -> float:
        return a + b * m

    mean = statistics.fmean(medians)
    ss_tot = sum((y - mean) ** 2 for y in medians)
    ss_res = sum((y - model(m)) ** 2 for m, y in zip(sizes, medians))
    ratios = [t / model(m) for m in sizes for t in points[m] if model(m) > 0]
    quality = {
        "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0,
        "median_rel_err": statistics.median(abs(model(m) - y) / y for m, y in zip(sizes, medians)),
        "points": len(sizes),
        "samples": sum(len(points[m]) for m in sizes),
        "k_lo": min(1.0, percentile(ratios, 1)),
    }
    return OpFit(alpha_s=alpha, beta_Bps=beta, k_hi=max(1.0, percentile(ratios, 99)), slack_s=0.0,
                 quality=quality)


def fit_profile(rows: list[dict], name: str, base: "HardwareProfile | str | None" = "cpu-loopback",
                source: str = "") -> HardwareProfile:
    """A profile from sweep rows: the base profile with its ``intra`` fits replaced by the measured
    ones (per group size and as each op's default).  The tier's peak is raised to the fastest
    fitted β and alpha_min lowered to the smallest fitted latency when the measurement beats the
    base's guesses, so lower ≤ fit holds; a note records it."""
    if base is None or isinstance(base, str):
        base = load_profile(base or "cpu-loopback")
    grouped: dict = defaultdict(lambda: defaultdict(list))
    worlds = set()
    for row in rows:
        times = [float(t) for t in row["times_s"]]
        if times:
            # send_recv is one pair whatever the world size: sweeps of several sizes pool into one fit
            group = P2P_GROUP if row["op"] == "send_recv" else int(row.get("group_size", row["world_size"]))
            grouped[(row["op"], group)][int(row["bytes"])].extend(times)
            worlds.add(int(row["world_size"]))
    if not grouped:
        raise ValueError("no sweep rows to fit")
    tier = base.tier("intra")
    ops = {op: dict(by_group) for op, by_group in tier.ops.items()}
    notes = [f"calibrated {_dt.date.today().isoformat()} from {len(rows)} sweep rows; base profile {base.name}"]
    fits: dict = {}
    for (op, group), points in sorted(grouped.items()):  # the largest group becomes the op's default
        fit = fit_op(op, group, points)
        fits[(op, group)] = fit
        ops.setdefault(op, {})
        ops[op][group] = fit
        ops[op]["default"] = fit
    peak, alpha_min = tier.peak_Bps, tier.alpha_min_s
    for (op, group), fit in fits.items():
        if fit.beta_Bps == float("inf"):
            fits[(op, group)] = fit = replace(fit, beta_Bps=peak)
            ops[op][group] = ops[op]["default"] = fit
            notes.append(f"{op}[{group}]: time did not grow with size; beta set to the tier peak")
        if fit.beta_Bps > peak:
            notes.append(f"{op}[{group}]: fitted beta {fit.beta_Bps:.3g} B/s above peak {peak:.3g}; peak raised")
            peak = fit.beta_Bps
        if fit.alpha_s < alpha_min:  # per-step α against a per-op minimum: compare what a call costs
            alpha_min = min(alpha_min, max(fit.alpha_s, 0.0))
    intra = replace(tier, peak_Bps=peak, alpha_min_s=alpha_min, ops=ops)
    profile = replace(base.with_tier("intra", intra), name=name,
                      description=f"Calibrated on this host from {'/'.join(map(str, sorted(worlds)))}-rank sweeps "
                                  f"(base: {base.name}).",
                      source=source or "llmcomm calibrate", notes=notes)
    profile.validate()
    return profile


ENGINE_SIZES = [2 ** k for k in range(3, 19)]  # 8 B … 256 KiB, ×2: the tiny engine's messages
ENGINE_OPS = ["all_reduce", "all_gather", "gather", "broadcast", "send_recv"]  # what the engine issues
BAND_LIMITS = (1 / 3, 3.0)  # the widest band a check may use: the model is within 3×
DEFAULT_MARGIN = 1.25


def _fit_group(row: dict) -> int:
    return P2P_GROUP if row["op"] == "send_recv" else int(row.get("group_size", row["world_size"]))


def _transfer_fit(op: str, group: int, samples: list[tuple], margin: float, q: float) -> tuple[OpFit, list[str]]:
    """One transfer fit from ``samples`` = [(launch, world, role, msg_bytes, seconds)]: α-β through
    the per-size medians (``fit_op``), band from the per-(launch, world, role) medians of
    transfer / fit, tail from the pooled ratios (module docstring).  Returns (fit, clip notes)."""
    points: dict = defaultdict(list)
    for _, _, _, size, t in samples:
        points[size].append(t)
    fit = fit_op(op, group, points)
    n_alpha, n_beta = latency.coefficients(op, group, "ring")
    per_launch: dict = defaultdict(list)
    pooled = []
    for launch, world, role, size, t in samples:
        model = n_alpha * fit.alpha_s + (n_beta * size / fit.beta_Bps if fit.beta_Bps != float("inf") else 0.0)
        ratio = t / model
        per_launch[(launch, world, role)].append(ratio)
        pooled.append(ratio)
    medians = {key: statistics.median(v) for key, v in per_launch.items()}
    lo_raw, hi_raw = min(medians.values()), max(medians.values())
    band_lo, band_hi = lo_raw / margin, hi_raw * margin
    clipped = []
    if band_lo < BAND_LIMITS[0]:
        clipped.append(f"band_lo {band_lo:.3g} -> {BAND_LIMITS[0]:.3g}")
        band_lo = BAND_LIMITS[0]
    if band_hi > BAND_LIMITS[1]:
        clipped.append(f"band_hi {band_hi:.3g} -> {BAND_LIMITS[1]:.3g}")
        band_hi = BAND_LIMITS[1]
    band_lo, band_hi = min(band_lo, 1.0), max(band_hi, 1.0)  # the band holds the model itself
    tail_raw = percentile(pooled, 100 * q)
    notes = [f"clipped to the widest band allowed ({'; '.join(clipped)}): the per-launch medians span "
             f"{lo_raw:.2f}x-{hi_raw:.2f}x the fit, so a check may fail an unchanged run"] if clipped else []
    quality = dict(fit.quality or {})
    quality.update(
        what="transfer (completion - last arrival) under engine conditions",
        launches=len({k[0] for k in medians}), worlds=sorted({k[1] for k in medians}),
        launch_median_ratio=[round(lo_raw, 4), round(hi_raw, 4)],
        launch_medians={f"{launch}/w{world}{'/' + role if role else ''}": round(v, 4)
                        for (launch, world, role), v in sorted(medians.items())},
        tail_ratio=round(tail_raw, 4), tail_q=q, margin=margin)
    return replace(fit, band_lo=band_lo, band_hi=band_hi, tail_k=max(tail_raw * margin, band_hi),
                   quality=quality), notes


def fit_engine_conditions(rows: list[dict], name: str, base: "HardwareProfile | str | None" = "cpu-loopback",
                          source: str = "", margin: float = DEFAULT_MARGIN, tail_q: float | None = None,
                          notes: list[str] | None = None, variants: "bool | tuple[str, ...]" = True) -> HardwareProfile:
    """A profile whose ``intra`` fits model the *transfer* under engine conditions (module
    docstring): α-β through the median transfers, ``band_lo``/``band_hi`` from the spread of the
    per-launch medians, ``tail_k`` from the pooled ``tail_q`` quantile, both widened by ``margin``.
    With ``variants``, each fit also carries one per role (when the op has several: root / peer,
    send / recv), per world size (when the group ran in several) and per (world, role), each fitted
    the same way on its own samples (``OpFit.variants``); a tuple of op names: those ops only.  ``rows`` are
    ``bench_comm.engine_sweep`` rows (``transfer_s``, ``transfer_role``, ``launch``; rows from
    separate files must carry distinct ``launch`` keys).  Pure: no torch."""
    if margin < 1:
        raise ValueError(f"margin must be >= 1, got {margin:g}")
    rows = [r for r in rows if r.get("transfer_s")]
    if not rows:
        raise ValueError("no engine-conditions rows (with transfer_s): run bench-comm with --compute-ms")
    base = load_profile(base or "cpu-loopback") if base is None or isinstance(base, str) else base
    tier = base.tier("intra")
    q = tail_q if tail_q is not None else tier.tail_q
    samples: dict = defaultdict(list)  # (op, group) -> [(launch, world, role, size, t)]
    for r in rows:
        roles = r.get("transfer_role") or [""] * len(r["transfer_s"])
        for t, role in zip(r["transfer_s"], roles):
            samples[(r["op"], _fit_group(r))].append((str(r.get("launch", 0)), int(r["world_size"]), role,
                                                      int(r["bytes"]), float(t)))
    ops = {op: dict(by_group) for op, by_group in tier.ops.items()}
    out_notes = []
    peak, alpha_min = tier.peak_Bps, tier.alpha_min_s
    for (op, group), items in sorted(samples.items()):  # the largest group becomes the op's default
        fit, clip = _transfer_fit(op, group, items, margin, q)
        out_notes += [f"{op}[{group}]: {n}" for n in clip]
        found = {}
        roles, worlds = sorted({i[2] for i in items}), sorted({i[1] for i in items})
        if variants is True or (variants and op in variants):
            subsets = {}
            if len(roles) > 1:
                subsets.update({role: [i for i in items if i[2] == role] for role in roles})
            if len(worlds) > 1:
                subsets.update({f"w{w}": [i for i in items if i[1] == w] for w in worlds})
                if len(roles) > 1:
                    subsets.update({f"w{w}/{role}": [i for i in items if i[1] == w and i[2] == role]
                                    for w in worlds for role in roles})
            for key, subset in subsets.items():
                if len({i[3] for i in subset}) >= 2:
                    found[key], clip = _transfer_fit(op, group, subset, margin, q)
                    out_notes += [f"{op}[{group}] {key}: {n}" for n in clip]
        fit = replace(fit, variants=found or None)
        for key, f in [("", fit)] + sorted(found.items()):
            label = f"{op}[{group}]{' ' + key if key else ''}"
            if f.beta_Bps == float("inf"):
                out_notes.append(f"{label}: transfer did not grow with size; beta set to the tier peak")
            elif f.beta_Bps > peak:
                out_notes.append(f"{label}: fitted beta {f.beta_Bps:.3g} B/s above peak {peak:.3g}; peak raised")
                peak = f.beta_Bps
            alpha_min = min(alpha_min, max(f.alpha_s, 0.0))
        ops.setdefault(op, {})
        ops[op][group] = ops[op]["default"] = fit
    ops = {op: {g: _finite(f, peak) for g, f in by_group.items()} for op, by_group in ops.items()}
    if alpha_min < tier.alpha_min_s:
        out_notes.append(f"alpha_min_s lowered {tier.alpha_min_s:.3g} -> {alpha_min:.3g} s: a fit beats it")
    intra = replace(tier, ops=ops, tail_q=q, peak_Bps=peak, alpha_min_s=alpha_min)
    worlds = sorted({int(r["world_size"]) for r in rows})
    profile = replace(base.with_tier("intra", intra), name=name,
                      description=f"Calibrated under engine conditions on this host ({'/'.join(map(str, worlds))} ranks; "
                                  f"base: {base.name}).",
                      source=source or "llmcomm calibrate --engine-conditions", notes=list(notes or []) + out_notes)
    profile.validate()
    return profile


def _finite(fit: OpFit, peak: float) -> OpFit:
    """β = ∞ (no growth with size) → the tier's peak, in the fit and its variants."""
    variants = {k: _finite(v, peak) for k, v in fit.variants.items()} if fit.variants else fit.variants
    return replace(fit, beta_Bps=peak if fit.beta_Bps == float("inf") else fit.beta_Bps, variants=variants)


def band_table(profile: HardwareProfile) -> str:
    """Per engine-conditions fit and variant: α, β, the per-launch median ratios, band and tail allowance."""
    tier = profile.tier("intra")
    fits = [(op, f"{group}{' ' + key if key else ''}", fit)
            for op, by_group in sorted(tier.ops.items()) for group, top in by_group.items() if group != "default"
            for key, fit in [("", top)] + sorted((top.variants or {}).items())]
    rows = []
    for op, label, fit in fits:
        q = fit.quality or {}
        if "launch_median_ratio" not in q:
            continue
        lo, hi = q["launch_median_ratio"]
        rows.append((op, label, q.get("launches", "-"), q.get("samples", "-"), f"{fit.alpha_s * 1e6:.1f}",
                     f"{fit.beta_Bps / 1e9:.3f}", f"{q['median_rel_err']:.1%}", f"{lo:.2f}-{hi:.2f}",
                     f"{fit.band_lo:.2f}-{fit.band_hi:.2f}", f"{q['tail_ratio']:.2f}", f"{fit.tail_k:.2f}"))
    return text_table(("op", "group", "launches", "samples", "alpha(us)", "beta(GB/s)", "med.rel.err",
                       "launch med/fit", "band", f"q{tier.tail_q:g}/fit", "tail_k"), rows, left=1)


def quality_table(profile: HardwareProfile) -> str:
    """Per measured (op, group): points, α, β, R² and median relative error of the medians, k_hi
    (and, after ``--spread-from``, the sweep's k_hi and the engine records it rests on)."""
    rows = []
    for op, by_group in sorted(profile.tier("intra").ops.items()):
        for group, fit in by_group.items():
            if group == "default" or not fit.quality or "points" not in fit.quality:
                continue
            q = fit.quality
            sweep = q.get("k_hi_sweep")
            rows.append((op, group, q["points"], q.get("samples", 0), f"{fit.alpha_s * 1e6:.1f}",
                         f"{fit.beta_Bps / 1e9:.3f}", f"{q['r2']:.3f}", f"{q['median_rel_err']:.3f}", f"{fit.k_hi:.2f}",
                         "-" if sweep is None else f"{sweep:.2f}", q.get("k_hi_records", "-")))
    return text_table(("op", "group", "points", "samples", "alpha(us)", "beta(GB/s)", "R2", "med.rel.err", "k_hi",
                       "k_hi_sweep", "records"), rows, left=1)
