"""``llmcomm calibrate``: sweep (or read saved sweep rows), fit a hardware profile, write it.

The sweeps are ``calibration.sweep``, the fits ``calibration.fit`` (its docstring holds the method).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

from llmcomm_tests.analytic import latency
from llmcomm_tests.analytic.hardware import load_profile
from llmcomm_tests.calibration.fit import (DEFAULT_MARGIN, DEFAULT_SIZES, ENGINE_OPS, ENGINE_SIZES, PROFILE_NAME,
                                           band_table, fit_engine_conditions, fit_profile, quality_table)
from llmcomm_tests.core.arguments import (OneLineParser, byte_sizes, fraction, output_file, positive_float,
                                          positive_int, world_sizes)
from llmcomm_tests.core.documents import RunDocument, from_json


def _read_json(path: str):
    try:
        with open(path) as fh:
            return json.load(fh)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None


def _read_run_document(path: str):
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
            from llmcomm_tests.runtime.launch import resolve_backend

            for world in worlds:  # nccl without a GPU per rank
                resolve_backend(args.backend, world)
    except ValueError as exc:
        print(f"llmcomm calibrate: {exc}", file=sys.stderr)
        return 2
    if not args.rows:
        from llmcomm_tests.calibration import sweep  # lazy: torch and the launcher only when sweeping

        sizes = args.sizes or DEFAULT_SIZES
        rows = []
        for world in worlds:
            rows += sweep.sweep(world, ops, sizes, args.repeats, backend=args.backend, timeout_s=args.timeout)
        source = (f"llmcomm calibrate --world-size {','.join(map(str, worlds))} --repeats {args.repeats} "
                  f"--sizes {','.join(map(str, sizes))} --backend {args.backend}")
    try:
        profile = fit_profile(rows, name, base, source)
        if docs:
            from llmcomm_tests.analytic.accuracy import fit_spread

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
            from llmcomm_tests.calibration import sweep  # lazy: torch and the launcher only when sweeping

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
                    rows += sweep.engine_sweep(world, [o for o in ops if only is None or o in only], sizes,
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
