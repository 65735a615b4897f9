"""``llmcomm calibrate``: fit a hardware profile's α, β per op from a communication size sweep.

    llmcomm calibrate --world-size 2 [--out profile.yaml] [--sizes 1024,4096,...] [--repeats 20]
                      [--base cpu-loopback] [--name NAME] [--rows bench.json]

The sweep is ``llmcomm_tests.commands.bench_comm.sweep`` (rows ``{op, world_size, bytes, times_s}``,
``bytes`` in nccl-tests' size convention = latency.py's ``msg_bytes``), or a saved
``llmcomm bench-comm --json`` file with ``--rows``.  The fit (``fit_profile``, pure, no torch):

* robust: per (op, world size, size) the *median* of the repetitions, then a straight line
  T = a + b·M through the medians by least squares weighted 1/T² — relative error, so a 1 KiB
  point counts as much as a 16 MiB one (plain least squares would let the largest size decide a);
* a = n_α·α and b = n_β/β with the ring coefficients of latency.py (base_s stays 0: one group size
  cannot tell a launch cost from per-step latency); a < 0 is refitted through the origin;
* spread: k_hi = the 0.99 quantile of sample / fit over every repetition (≥ 1; with few samples
  it is the maximum), so upper = fit × k_hi bounds what was seen;
* quality: R² of the medians, median relative error, point and sample counts (stored with the fit).

The fits land in the base profile's ``intra`` tier (one host: every rank is intra) under the group
size and as that op's ``default``; compute peaks and the ``inter`` tier are kept from the base.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import replace

from . import latency
from .hardware import P2P_GROUP, HardwareProfile, OpFit, load_profile

DEFAULT_SIZES = [2 ** k for k in range(10, 25, 2)]  # 1 KiB … 16 MiB, ×4 (as bench-comm)


def _quantile(values: list[float], q: float) -> float:
    """Linear-interpolated quantile (numpy's default) without numpy."""
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(a, b) ≥ 0 of y ≈ a + b·x, least squares weighted 1/y² (relative residuals)."""
    w = [1.0 / (y * y) for y in ys]
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
    if b <= 0:  # time does not grow with size: bandwidth not measurable here
        b = 0.0
    return a, b


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
        "k_lo": min(1.0, _quantile(ratios, 0.01)),
    }
    return OpFit(alpha_s=alpha, beta_Bps=beta, k_hi=max(1.0, _quantile(ratios, 0.99)), slack_s=0.0,
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
    for row in rows:
        times = [float(t) for t in row["times_s"]]
        if times:
            grouped[(row["op"], int(row["world_size"]))][int(row["bytes"])].extend(times)
    if not grouped:
        raise ValueError("no sweep rows to fit")
    tier = base.tier("intra")
    ops = {op: dict(by_group) for op, by_group in tier.ops.items()}
    notes = [f"calibrated {_dt.date.today().isoformat()} from {len(rows)} sweep rows; base profile {base.name}"]
    fits: dict = {}
    for (op, world), points in sorted(grouped.items()):
        group = P2P_GROUP if op == "send_recv" else world
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
                      description=f"Calibrated on this host from a {sorted({w for _, w in grouped})}-rank sweep "
                                  f"(base: {base.name}).",
                      source=source or "llmcomm calibrate", notes=notes)
    profile.validate()
    return profile


def quality_table(profile: HardwareProfile) -> str:
    lines = [f"{'op':>15} {'group':>5} {'points':>6} {'alpha(us)':>10} {'beta(GB/s)':>11} {'R2':>7} "
             f"{'med.rel.err':>11} {'k_hi':>6}"]
    for op, by_group in sorted(profile.tier("intra").ops.items()):
        for group, fit in by_group.items():
            if group == "default" or not fit.quality:
                continue
            q = fit.quality
            lines.append(f"{op:>15} {group:>5} {q['points']:>6} {fit.alpha_s * 1e6:>10.1f} {fit.beta_Bps / 1e9:>11.3f} "
                         f"{q['r2']:>7.3f} {q['median_rel_err']:>11.3f} {fit.k_hi:>6.2f}")
    return "\n".join(lines)


def _sizes(text: str) -> list[int]:
    units = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}
    out = []
    for item in text.split(","):
        item = item.strip().lower().removesuffix("ib").removesuffix("b")
        if item:
            scale = units.get(item[-1], 1)
            out.append(int(float(item[:-1] if scale > 1 else item) * scale))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--world-size", type=int, default=2, help="ranks in the sweep (default 2)")
    parser.add_argument("--out", default="calibrated-profile.yaml", help="profile YAML to write")
    parser.add_argument("--name", default=None, help="profile name (default: calibrated-w<N>)")
    parser.add_argument("--base", default="cpu-loopback",
                        help="profile to start from: compute peaks, inter tier, other group sizes")
    parser.add_argument("--sizes", default=None, help="comma-separated sizes, K/M suffixes allowed (default 1K…16M ×4)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--ops", default=",".join(latency.OPS), help="comma-separated ops to sweep")
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--rows", default=None, help="fit a saved `llmcomm bench-comm --json` file instead of sweeping")


def main(args: "argparse.Namespace | list[str] | None" = None) -> int:
    if not isinstance(args, argparse.Namespace):
        parser = argparse.ArgumentParser(prog="llmcomm calibrate", description=__doc__.splitlines()[0])
        add_arguments(parser)
        args = parser.parse_args(args)
    if args.rows:
        with open(args.rows) as fh:
            data = json.load(fh)
        rows = data["rows"] if isinstance(data, dict) else data
        source = f"llmcomm calibrate --rows {args.rows}"
    else:
        from ..commands import bench_comm  # lazy: torch and the launcher only when sweeping

        ops = [o.strip() for o in args.ops.split(",") if o.strip()]
        if args.world_size < 2:
            ops = [o for o in ops if o != "send_recv"]
        sizes = _sizes(args.sizes) if args.sizes else DEFAULT_SIZES
        rows = bench_comm.sweep(args.world_size, ops, sizes, args.repeats, backend=args.backend,
                                timeout_s=args.timeout)
        source = (f"llmcomm calibrate --world-size {args.world_size} --repeats {args.repeats} "
                  f"--sizes {','.join(map(str, sizes))} --backend {args.backend}")
    try:
        profile = fit_profile(rows, args.name or f"calibrated-w{args.world_size}", args.base, source)
    except ValueError as exc:
        print(f"llmcomm calibrate: {exc}", file=sys.stderr)
        return 2
    print(f"# {profile.name}: {profile.description}")
    print(quality_table(profile))
    for note in profile.notes[1:]:
        print(f"note: {note}")
    profile.dump(args.out)
    print(f"wrote {args.out}")
    return 0
