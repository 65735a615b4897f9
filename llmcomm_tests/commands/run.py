"""``llmcomm run``: launch the engine under one layout, print a summary, write the run document."""

from __future__ import annotations

import sys

from llmcomm_tests.core.documents import write_json
from llmcomm_tests.engine.layout import LayoutError
from llmcomm_tests.report.trace import write_trace
from llmcomm_tests.runtime.launch import LaunchError
from llmcomm_tests.runtime.measure import run_engine, run_summary
from llmcomm_tests.runtime.run_config import RunConfig, add_arguments

__all__ = ["add_arguments", "main"]  # the subcommand's arguments are the run's own


def main(args) -> int:
    try:
        cfg = RunConfig.from_arguments(args)
        cfg.layout.validate(cfg.engine, args.ranks)
    except (LayoutError, ValueError) as exc:
        print(f"llmcomm run: {exc}", file=sys.stderr)
        return 2
    try:
        doc = run_engine(cfg, backend=args.backend, timeout_s=args.timeout, available_ranks=args.ranks,
                       threads_per_rank=args.threads_per_rank)
    except ValueError as exc:  # refused before launch (e.g. nccl without enough GPUs)
        print(f"llmcomm run: {exc}", file=sys.stderr)
        return 2
    except LaunchError as exc:
        print(f"llmcomm run: {exc}", file=sys.stderr)
        return 1
    print(run_summary(doc))
    if args.trace_path:
        write_trace(doc, args.trace_path)
        print(f"wrote {args.trace_path}")
        if not args.keep_records:
            doc.records = None
    if args.json_path:
        write_json(doc, args.json_path)
        print(f"wrote {args.json_path}")
    return 0
