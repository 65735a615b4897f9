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

The fits land in the base profile's ``intra`` tier (one host: every rank is intra) under the group
size and as that op's ``default``; compute peaks and the ``inter`` tier are kept from the base.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import statistics
import sys
from collections import defaultdict
from dataclasses import replace

from ..stats import percentile
from ..text import text_table
from ..analytic import latency
from ..analytic.hardware import P2P_GROUP, HardwareProfile, OpFit, load_profile
from .args import OneLineParser, byte_sizes, fraction, output_file, positive_float, positive_int, world_sizes

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
            group = P2P_GROUP if row["op"] == "send_recv" else int(row["world_size"])
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
    parser.add_argument("--name", default=None, help="profile name (default: calibrated-w<N>)")
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


def main(args: "argparse.Namespace | list[str] | None" = None) -> int:
    if not isinstance(args, argparse.Namespace):
        parser = OneLineParser(prog="llmcomm calibrate", description=__doc__.splitlines()[0])
        add_arguments(parser)
        args = parser.parse_args(args)
    worlds = args.world_size
    try:  # everything that can be refused is, before a sweep launches anything
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
        profile = fit_profile(rows, args.name or f"calibrated-w{'-'.join(map(str, worlds))}", base, source)
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
    print(f"wrote {args.out}")
    return 0
