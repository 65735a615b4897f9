"""``llmcomm run``: launch the engine under one layout, print a summary, write the run document."""

from __future__ import annotations

import json
import sys

from ..engine.layout import Layout, LayoutError
from .args import engine_shape, non_negative_int, output_file, positive_float, positive_int


def add_arguments(parser) -> None:
    parser.add_argument("--engine", default="tiny", type=engine_shape,
                        help="preset name (tiny, llama-3.1-8b, …), a shape mapping as in specs "
                             "('{preset: tiny, n_layers: 2}'), or a YAML/JSON file holding one")
    parser.add_argument("--tp", type=positive_int, default=1)
    parser.add_argument("--pp", type=positive_int, default=1)
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--prompt-len", type=positive_int, default=32)
    parser.add_argument("--gen-len", type=positive_int, default=8)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed repetitions")
    parser.add_argument("--warmup", type=non_negative_int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    parser.add_argument("--ranks", type=positive_int, default=None, help="ranks available (default: any)")
    parser.add_argument("--timeout", type=positive_float, default=300.0, help="seconds before hung ranks are killed")
    parser.add_argument("--threads-per-rank", type=positive_int, default=1, help="intra-op threads of each rank")
    parser.add_argument("--cross-check", action="store_true", help="count ops with torch.profiler too")
    parser.add_argument("--keep-records", action="store_true",
                        help="every call in the run document (default: a bounded summary per op class)")
    parser.add_argument("--inject", action="append", default=[], help="planted fault, e.g. all_reduce:delay=10%%")
    parser.add_argument("--json", dest="json_path", type=output_file, default=None,
                        help="write the run document here (its folder must exist)")


def config_from_args(args):
    from ..measure import RunConfig
    from ..inject import parse_faults

    args.engine.check_request(args.prompt_len, args.gen_len)
    return RunConfig(args.engine, Layout(args.tp, args.pp), batch=args.batch,
                     prompt_len=args.prompt_len, gen_len=args.gen_len, dtype=args.dtype, repeats=args.repeats,
                     warmup=args.warmup, seed=args.seed, cross_check=args.cross_check, keep_records=args.keep_records,
                     inject=tuple(parse_faults(args.inject)))


def main(args) -> int:
    from ..measure import run_case
    from ..launch import LaunchError

    try:
        cfg = config_from_args(args)
        cfg.layout.validate(cfg.engine, args.ranks)
    except (LayoutError, ValueError) as exc:
        print(f"llmcomm run: {exc}", file=sys.stderr)
        return 2
    try:
        doc = run_case(cfg, backend=args.backend, timeout_s=args.timeout, available_ranks=args.ranks,
                       threads_per_rank=args.threads_per_rank)
    except ValueError as exc:  # refused before launch (e.g. nccl without enough GPUs)
        print(f"llmcomm run: {exc}", file=sys.stderr)
        return 2
    except LaunchError as exc:
        print(f"llmcomm run: {exc}", file=sys.stderr)
        return 1
    print(summary(doc))
    if args.json_path:
        write_document(doc, args.json_path)
        print(f"wrote {args.json_path}")
    return 0


def write_document(doc, path: str) -> None:
    from ..documents import to_json

    with open(path, "w") as f:
        json.dump(to_json(doc), f, indent=1)


def summary(doc) -> str:
    c, m, comm = doc.case, doc.metrics, doc.comm
    lines = [
        f"layout tp={c.tp} pp={c.pp} ({c.world_size} ranks, {c.backend})  engine={c.engine['name']}  "
        f"batch={c.batch} prompt={c.prompt_len} gen={c.gen_len} {c.dtype}",
        f"  TTFT {m.ttft.p50 * 1e3:.2f} ms   TPOT {m.tpot.p50 * 1e3:.2f} ms   E2E {m.e2e.p50 * 1e3:.2f} ms   "
        f"{m.tokens_per_s:.1f} tok/s   (p50 of {m.repeats} repetitions)",
        f"  comm {comm.time_per_token.p50 * 1e3:.2f} ms/token   share of TTFT {comm.share_ttft.p50:.0%}  "
        f"of TPOT {(comm.share_tpot.p50 or 0):.0%}   {comm.bytes_per_token / 1024:.1f} KiB on the wire per token",
    ]
    for row in doc.volume:
        lines.append(f"    {row.op:>10} {row.phase:>7} {row.site:>16}  x{row.count:<5} "
                     f"{row.bytes:>12} B  wire {row.wire_bytes:>12} B")
    return "\n".join(lines)
