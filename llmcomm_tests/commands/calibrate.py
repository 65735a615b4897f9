"""``llmcomm calibrate``: fit a hardware profile's α, β per op from a communication size sweep.

    llmcomm calibrate --world-size 2[,4] [--out profile.yaml] [--sizes 1024,4096,...] [--repeats 20]
                      [--base cpu-loopback] [--name NAME] [--rows bench.json[,bench2.json]]
                      [--spread-from RUNS_DIR_OR_FILES] [--spread-quantile 0.999]

The sweep is ``llmcomm_tests.commands.bench_comm.sweep`` (rows ``{op, world_size, bytes, times_s}``,
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
holds the engine's *transfers* to (``arrival.py``: each call's time after the last peer arrived),
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

import argparse
import datetime as _dt
import json
import math
import re
import statistics
import sys
from pathlib import Path
from collections import defaultdict
from dataclasses import replace

from ..stats import percentile
from ..text import text_table
from ..analytic import latency
from ..analytic.hardware import P2P_GROUP, HardwareProfile, OpFit, load_profile
from .args import OneLineParser, byte_sizes, fraction, output_file, positive_float, positive_int, world_sizes

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
    scheduling regime (seen on 4 ranks over 2 cores: 0.4–0.9 ms for the first sizes swept, 5 ms
    for the rest) do not drag the line — least squares would let them."""
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
BAND_LIMITS = (1 / 3, 3.0)  # the widest band a check may use (issue 10): the model is within 3×
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


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None


def _read_run_document(path: str):
    from ..documents import RunDocument, from_json

    data = _read_json(path)
    try:
        return from_json(RunDocument, data)
    except (TypeError, AttributeError, KeyError) as exc:  # not the fields of a run document
        raise ValueError(f"--spread-from {path}: not an `llmcomm run --json` document ({exc})") from None


ROW_FIELDS = {"op", "world_size", "bytes", "times_s"}


def _read_rows(path: str) -> list[dict]:
    """The sweep rows of a ``llmcomm bench-comm --json`` file (or a bare list of rows)."""
    data = _read_json(path)
    rows = data.get("rows") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) and ROW_FIELDS <= r.keys() for r in rows):
        raise ValueError(f"--rows {path}: not `llmcomm bench-comm --json` rows (each with "
                         f"{', '.join(sorted(ROW_FIELDS))})")
    return rows


def _run_paths(items: list[str]) -> list[str]:
    """Run-document paths from comma-separated items; a directory stands for its *.json files."""
    from pathlib import Path

    paths = []
    for item in items:
        for part in item.split(","):
            part = part.strip()
            if not part:
                continue
            p = Path(part)
            paths.extend(sorted(str(x) for x in p.glob("*.json")) if p.is_dir() else [part])
    return paths


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world-size", type=world_sizes, default=[2],
                        help="ranks in the sweep, >= 2; several comma-separated, e.g. 2,4 "
                        "(one sweep each, fitted together; default 2)")
    parser.add_argument("--out", type=output_file, default="calibrated-profile.yaml", help="profile YAML to write")
    parser.add_argument("--name", default=None,
                        help="profile name, what a spec's `hardware:` and budgets' `hardware:` match "
                             "(lower-case letters, digits, '.', '_', '-'; default: the --out file's stem)")
    parser.add_argument("--base", default="cpu-loopback",
                        help="profile to start from: compute peaks, inter tier, other group sizes")
    parser.add_argument("--sizes", type=byte_sizes, default=None,
                        help="comma-separated sizes, K/M suffixes allowed (default 1K…16M ×4)")
    parser.add_argument("--repeats", type=positive_int, default=20)
    parser.add_argument("--ops", default=",".join(latency.OPS), help="comma-separated ops to sweep")
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    parser.add_argument("--timeout", type=positive_float, default=600.0)
    parser.add_argument("--rows", default=None,
                        help="fit saved `llmcomm bench-comm --json` file(s), comma-separated, instead of sweeping")
    parser.add_argument("--spread-from", action="append", default=[], metavar="RUNS",
                        help="run documents (`llmcomm run --json`; files or directories, comma-separated, "
                             "repeatable): re-measure each fit's k_hi on their bounded op records "
                             "(analytic.accuracy.fit_spread) — use runs you will not evaluate on")
    parser.add_argument("--spread-quantile", type=fraction, default=0.999,
                        help="quantile of recorded/fit that sets k_hi with --spread-from (default 0.999)")
    engine = parser.add_argument_group("engine conditions (the model of the transfer the latency check judges)")
    engine.add_argument("--engine-conditions", action="store_true",
                        help="sweep with compute between calls and no barrier per call, fit the transfer "
                             "(completion - last arrival), and set band_lo/band_hi/tail_k from --launches launches")
    engine.add_argument("--compute-ms", default="0.3",
                        help="compute each rank spins before every call, ms: one value, or per world size "
                             "(2:0.6,4:1.2) — the engine's own gap between calls, printed by "
                             "benchmarks/analytic_accuracy.py (default 0.3)")
    engine.add_argument("--compute-mb", type=float, default=0.0,
                        help="MiB of weights that compute reads each pass, as the engine's layers do: the calls "
                             "after it find the caches cold (default 0: a cache-resident matmul)")
    engine.add_argument("--launches", type=int, default=5, help="separate launches per configuration (default 5)")
    engine.add_argument("--group-sizes", default=None,
                        help="group sizes per world size, e.g. 2,4 (default: every divisor >= 2 of each world)")
    engine.add_argument("--configs", default=None,
                        help="explicit world:group pairs, e.g. 2:2,4:4 (overrides --world-size/--group-sizes); "
                             "W:G=op+op limits that configuration's ops (4:4=all_reduce+gather)")
    engine.add_argument("--order", default="burst", choices=("burst", "interleaved"),
                        help="each (op, size) repeated back to back as the engine's layers do (burst, default), "
                             "or every op and size visited in each repetition (interleaved)")
    engine.add_argument("--save-rows", default=None,
                        help="also write the sweep rows (every launch) here, to refit later with --rows")
    engine.add_argument("--no-variants", action="store_true",
                        help="one fit per (op, group): no per-role / per-world-size variants")
    engine.add_argument("--variants-for", default=None, metavar="OPS",
                        help="variants for these ops only (comma-separated, e.g. send_recv); the others get one fit")
    engine.add_argument("--margin", type=float, default=DEFAULT_MARGIN,
                        help=f"factor widening the band and the tail allowance (default {DEFAULT_MARGIN:g})")


def main(args: "argparse.Namespace | list[str] | None" = None) -> int:
    if not isinstance(args, argparse.Namespace):
        parser = OneLineParser(prog="llmcomm calibrate", description=__doc__.splitlines()[0])
        add_arguments(parser)
        args = parser.parse_args(args)
    worlds = args.world_size
    if args.engine_conditions:
        return _main_engine_conditions(args, worlds)
    name = args.name or Path(args.out).stem
    try:  # everything that can be refused is, before a sweep launches anything
        if not PROFILE_NAME.match(name):
            raise ValueError(f"--name {name!r}: a profile name is lower-case letters, digits, '.', '_' and '-' "
                             "(budgets and specs match it), such as 'h200-x8-lab3'")
        try:
            base = load_profile(args.base)
        except ValueError as exc:
            raise ValueError(f"--base: {exc}") from None
        ops = [o.strip() for o in args.ops.split(",") if o.strip()]
        unknown = sorted(set(ops) - set(latency.OPS))
        if unknown or not ops:
            raise ValueError(f"--ops: unknown op(s) {', '.join(unknown) or '(none given)'}; known: "
                             f"{', '.join(latency.OPS)}")
        docs = [_read_run_document(path) for path in _run_paths(args.spread_from)]
        if args.rows:
            rows = []
            for path in args.rows.split(","):
                rows.extend(_read_rows(path.strip()))
            worlds = sorted({int(r["world_size"]) for r in rows}) or worlds
            source = f"llmcomm calibrate --rows {args.rows}"
        else:
            from ..launch import resolve_backend

            for world in worlds:  # nccl without a GPU per rank
                resolve_backend(args.backend, world)
    except ValueError as exc:
        print(f"llmcomm calibrate: {exc}", file=sys.stderr)
        return 2
    if not args.rows:
        from . import bench_comm  # lazy: torch and the launcher only when sweeping

        sizes = args.sizes or DEFAULT_SIZES
        rows = []
        for world in worlds:
            rows += bench_comm.sweep(world, ops, sizes, args.repeats, backend=args.backend, timeout_s=args.timeout)
        source = (f"llmcomm calibrate --world-size {','.join(map(str, worlds))} --repeats {args.repeats} "
                  f"--sizes {','.join(map(str, sizes))} --backend {args.backend}")
    try:
        profile = fit_profile(rows, name, base, source)
        if docs:
            from ..analytic.accuracy import fit_spread

            profile, _ = fit_spread(profile, docs, args.spread_quantile)
            profile = replace(profile, source=f"{source}; k_hi from {len(docs)} run document(s) "
                                              f"(--spread-from, q{args.spread_quantile:g})")
    except (ValueError, OSError) as exc:
        print(f"llmcomm calibrate: {exc}", file=sys.stderr)
        return 2
    print(f"# {profile.name}: {profile.description}")
    print(quality_table(profile))
    for note in profile.notes[1:]:
        print(f"note: {note}")
    profile.dump(args.out)
    print(f"wrote {args.out} (profile {profile.name!r}): judge runs on it with --llmcomm-hardware {args.out}, or copy "
          f"it to .llmcomm/profiles/{profile.name}.yaml so specs naming `hardware: {profile.name}` find it; "
          f"budgets written with `hardware: {profile.name}` apply on it")
    return 0


def _configs(worlds: list[int], group_sizes: "str | None") -> list[tuple[int, int]]:
    """(world size, group size) pairs: the given group sizes that divide each world, or all its divisors >= 2."""
    wanted = [int(g) for g in group_sizes.split(",") if g.strip()] if group_sizes else None
    out = []
    for world in worlds:
        for g in range(2, world + 1):
            if world % g == 0 and (wanted is None or g in wanted):
                out.append((world, g))
    if not out:
        raise ValueError(f"no group size fits world sizes {worlds} (group sizes {group_sizes})")
    return out


def _parse_configs(text: str) -> list[tuple[int, int, "list[str] | None"]]:
    """``W:G[=op+op]`` items → (world, group, ops or None for every op)."""
    out = []
    for item in text.split(","):
        pair, _, ops = item.strip().partition("=")
        try:
            world, group = (int(x) for x in pair.split(":"))
        except ValueError:
            raise ValueError(f"--configs: {item.strip()!r} is not WORLD:GROUP[=op+op]") from None
        if group < 2 or world % group:
            raise ValueError(f"--configs: group {group} must be >= 2 and divide world {world}")
        out.append((world, group, [o for o in ops.split("+") if o] or None))
    return out


def _compute_per_world(text: "str | float") -> dict:
    """``0.6`` → {None: 0.6}; ``2:0.6,4:1.2`` → {2: 0.6, 4: 1.2}."""
    text = str(text)
    if ":" not in text:
        return {None: float(text)}
    out = {}
    for item in text.split(","):
        world, ms = item.split(":")
        out[int(world)] = float(ms)
    return out


def _main_engine_conditions(args, worlds: list[int]) -> int:
    import os

    cores = os.cpu_count() or 1
    today = _dt.date.today().isoformat()
    try:
        if args.rows:
            rows = []
            for index, path in enumerate(p.strip() for p in args.rows.split(",")):
                with open(path) as fh:
                    data = json.load(fh)
                for row in (data["rows"] if isinstance(data, dict) else data):
                    rows.append({**row, "launch": f"{index}.{row.get('launch', 0)}"})
            worlds = sorted({int(r["world_size"]) for r in rows})
            compute = sorted({r.get("compute_ms") for r in rows if r.get("compute_ms") is not None})
            reads = sorted({float(r.get("compute_mb") or 0) for r in rows})
            cores = max((int(r.get("cores", cores)) for r in rows), default=cores)
            launches = len({r["launch"] for r in rows})
            command = f"llmcomm calibrate --engine-conditions --rows {args.rows} --margin {args.margin:g}"
            by_world = sorted({(int(r["world_size"]), r["compute_ms"]) for r in rows if r.get("compute_ms") is not None})
            compute_text = (",".join(f"{c:g}" for c in compute) if len(compute) <= 1
                            else ",".join(f"{w}:{c:g}" for w, c in by_world)) or "?"
            configs = sorted({(int(r["world_size"]), int(r.get("group_size", r["world_size"]))) for r in rows})
        else:
            from . import bench_comm  # lazy: torch and the launcher only when sweeping

            if args.launches < 1:
                raise ValueError("--launches must be >= 1")
            ops = [o.strip() for o in (args.ops.split(",") if args.ops != ",".join(latency.OPS) else ENGINE_OPS)
                   if o.strip()]
            full = (_parse_configs(args.configs) if args.configs
                    else [(w, g, None) for w, g in _configs(worlds, args.group_sizes)])
            configs = [(w, g) for w, g, _ in full]
            worlds = sorted({w for w, _ in configs})
            compute = _compute_per_world(args.compute_ms)
            missing = [w for w in worlds if w not in compute and None not in compute]
            if missing:
                raise ValueError(f"--compute-ms gives no value for world size(s) {missing}")
            sizes = args.sizes or ENGINE_SIZES  # parsed by args.byte_sizes
            rows = []
            for k in range(args.launches):  # configurations interleaved: drift lands on all of them
                for world, group, only in full:
                    rows += bench_comm.engine_sweep(world, [o for o in ops if only is None or o in only], sizes,
                                                    args.repeats, group_size=group,
                                                    compute_ms=compute.get(world, compute.get(None)),
                                                    backend=args.backend, timeout_s=args.timeout, launch_id=k,
                                                    order=args.order, compute_mb=args.compute_mb)
                    print(f"  launch {k + 1}/{args.launches}: world {world}, groups of {group} done", file=sys.stderr)
            launches = args.launches
            compute_text = str(args.compute_ms)
            reads = [args.compute_mb]
            if args.save_rows:
                with open(args.save_rows, "w") as fh:
                    json.dump({"schema": "llmcomm.bench-comm/1", "engine_conditions": True, "rows": rows}, fh)
            command = (f"llmcomm calibrate --engine-conditions --world-size {','.join(map(str, worlds))} "
                       f"--compute-ms {args.compute_ms} --compute-mb {args.compute_mb:g} --launches {args.launches} "
                       f"--repeats {args.repeats} "
                       f"--sizes {','.join(map(str, sizes))} --ops {','.join(ops)} --order {args.order} "
                       f"--margin {args.margin:g}")
            if args.configs:
                command += f" --configs {args.configs}"
            elif args.group_sizes:
                command += f" --group-sizes {args.group_sizes}"
        per_core = ", ".join(f"{w} ranks/{cores} cores (groups of {g})" for w, g in configs)
        notes = [f"engine-conditions calibration {today}: {command}",
                 f"compute {compute_text} ms before every call, no barrier per call; world sizes "
                 f"{','.join(map(str, worlds))}; {per_core}; {launches} launch(es) per configuration; margin "
                 f"{args.margin:g}",
                 "alpha, beta: fit_line through the per-size median transfer (completion - last arrival); "
                 "band = [min, max] over (launch, world, role) of median(transfer/fit), / and x margin, clipped to "
                 "[1/3, 3]; tail_k = q(tail_q) of pooled transfer/fit x margin"]
        if any(reads):
            notes.append(f"compute read {' / '.join(f'{m:g}' for m in reads)} MiB of weights per pass (rows' "
                         "compute_mb): the calls found the caches cold, as after an engine's layers")
        variants = tuple(o.strip() for o in args.variants_for.split(",") if o.strip()) if args.variants_for else True
        if args.no_variants:
            command += " --no-variants"
            variants = False
        elif args.variants_for:
            command += f" --variants-for {args.variants_for}"
            notes.append(f"variants for {args.variants_for} only: per role, per world size (wN) and per (world, role)")
        else:
            notes.append("variants: per role (root/peer, send/recv), per world size (wN) and per (world, role), each "
                         "fitted the same way on its own samples")
        source = f"{command} ({today}, {cores} cores, compute {compute_text} ms, margin {args.margin:g})"
        profile = fit_engine_conditions(rows, args.name or "calibrated-engine", args.base, source, args.margin,
                                        notes=notes, variants=variants)
    except (ValueError, OSError) as exc:
        print(f"llmcomm calibrate: {exc}", file=sys.stderr)
        return 2
    profile = replace(profile, description=f"Calibrated on this host under engine conditions ({compute_text} ms "
                                           f"compute between calls, no barrier; {per_core}; {launches} launches).")
    print(f"# {profile.name}: {profile.description}")
    print(band_table(profile))
    for note in profile.notes[len(notes):]:
        print(f"note: {note}")
    profile.dump(args.out)
    print(f"wrote {args.out}")
    return 0
