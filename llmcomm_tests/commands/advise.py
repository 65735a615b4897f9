"""``llmcomm advise``: rank every feasible TP×PP layout by predicted TPOT/TTFT and inter-node bytes.

    llmcomm advise --engine llama-3.1-8b --gpus 8 --ranks-per-node 4 --hardware h100-nvlink4-ib-4gpu \\
        --ttft 200ms --tpot 30ms [--prompt-len 128 --gen-len 128 --batch 1] [--nics-per-node N]

Layouts that meet every SLO come first, then by TPOT, TTFT and bytes on the inter-node link.  For
each layout: TTFT, TPOT, the wire bytes per token on each tier, TPOT split into compute / intra /
inter communication, and for a miss which SLO and which term dominates.  The model is
analytic/two_tier.py (two tiers from ``--ranks-per-node``; refused layouts are listed with why).
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from llmcomm_tests.analytic.hardware import load_profile
from llmcomm_tests.analytic.two_tier import advise, table, why_not
from llmcomm_tests.core.units import parse_count, parse_duration, parse_list
from llmcomm_tests.engine.config import resolve_engine
from llmcomm_tests.engine.layout import Layout, LayoutError


def _duration(option: str, text: str | None) -> float | None:
    """An SLO budget in seconds: ``200ms``, or a bare number of seconds."""
    if text is None:
        return None
    try:
        return parse_duration(text, unitless="s")
    except ValueError as exc:
        raise ValueError(f"{option}: {exc}") from None


def _rank_counts(text: str) -> list[int]:
    try:
        return parse_list(text, lambda item: parse_count(item, minimum=1))
    except ValueError as exc:
        raise ValueError(f"--gpus: {exc}") from None


def add_arguments(parser) -> None:
    parser.add_argument("--engine", default="llama-3.1-8b", help="engine preset or a JSON shape mapping")
    parser.add_argument("--gpus", default="8", help="ranks to use; several comma-separated (e.g. 2,4)")
    parser.add_argument("--layouts", default=None, help="only these TxP layouts, comma-separated (e.g. 4x1,2x2)")
    parser.add_argument("--ranks-per-node", type=int, default=None, help="default: the profile's")
    parser.add_argument("--nics-per-node", type=int, default=None,
                        help="inter-node links per node (default: one per rank, as in the profile presets)")
    parser.add_argument("--compute-parallelism", type=int, default=None,
                        help="ranks that can compute at once (default: one device per rank; on an emulated "
                             "cluster: the host's cores)")
    parser.add_argument("--hardware", default="h100-nvlink4-ib-4gpu", help="profile preset or YAML path")
    parser.add_argument("--ttft", default=None, help="TTFT budget, e.g. 200ms")
    parser.add_argument("--tpot", default=None, help="TPOT budget, e.g. 30ms")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--gen-len", type=int, default=128)
    parser.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"],
                        help="default: fp32 for CPU shapes (tiny, cpu-link), bf16 otherwise")
    parser.add_argument("--json", dest="json_path", default=None)


def main(args) -> int:
    try:
        text = args.engine.strip()
        shape = resolve_engine(json.loads(text) if text.startswith("{") else text)
        profile = load_profile(args.hardware)
        if args.ranks_per_node:
            profile = replace(profile, ranks_per_node=args.ranks_per_node)
        gpus = _rank_counts(str(args.gpus))
        layouts = [Layout.parse(x) for x in args.layouts.split(",")] if args.layouts else None
        ttft, tpot = _duration("--ttft", args.ttft), _duration("--tpot", args.tpot)
    except (ValueError, LayoutError) as exc:
        print(f"llmcomm advise: {exc}", file=sys.stderr)
        return 2
    dtype = args.dtype or ("fp32" if shape.name in ("tiny", "cpu-link") else "bf16")
    preds, refused = advise(shape, gpus, args.batch, args.prompt_len, args.gen_len, dtype, profile, ttft_s=ttft,
                            tpot_s=tpot, nics_per_node=args.nics_per_node,
                            compute_parallelism=args.compute_parallelism, layouts=layouts)
    print(f"# {shape.name} on {profile.name} ({profile.ranks_per_node} ranks per node), batch {args.batch}, "
          f"prompt {args.prompt_len}, gen {args.gen_len}, {dtype}; SLO TTFT {args.ttft or '-'} TPOT {args.tpot or '-'}")
    print(table(preds, ttft, tpot))
    for layout, why in refused:
        print(f"   {str(layout):>9} refused: {why}")
    if preds:
        best = preds[0]
        verdict = "meets the SLOs" if best.fits() else "no layout meets the SLOs; closest"
        print(f"first choice: {best.layout} ({verdict}; TPOT dominated by {best.dominant_tpot})")
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump({"schema": "llmcomm.advise/1", "hardware": profile.name, "ranks_per_node": profile.ranks_per_node,
                       "ranking": [{"layout": str(p.layout), "tp": p.layout.tp, "pp": p.layout.pp,
                                    "ttft_s": p.ttft_s, "tpot_s": p.tpot_s, "e2e_s": p.e2e_s, "parts": p.parts,
                                    "bytes_per_token": p.bytes_per_token, "slo": p.slo,
                                    "dominant_tpot": p.dominant_tpot, "dominant_ttft": p.dominant_ttft,
                                    "why": why_not(p, ttft, tpot)} for p in preds],
                       "refused": [{"layout": str(l), "why": w} for l, w in refused]}, f, indent=1)
    return 0
