"""``llmcomm predict``: analytic volume and TTFT/TPOT/E2E for one or more layouts, no engine run.

    llmcomm predict --engine llama-3.1-8b --tp 4 --pp 1 --batch 1 --prompt-len 128 --gen-len 128 \\
        --hardware h100-nvlink4 [--layouts 4x1,2x2,1x4] [--dtype bf16] [--json out.json]

One layout prints the per-op-class table (volume and critical-path time per phase); several print
side by side, the way the study compares TP, PP and hybrids.  ``--json`` writes schema
``llmcomm.predict/1``: ``{schema, case, volume, latency, metrics}`` for one layout,
``{schema, predictions: [{case, volume, latency, metrics}, ...]}`` for several.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict

from llmcomm_tests.engine.layout import Layout, LayoutError
from llmcomm_tests.analytic.e2e import predict_case
from llmcomm_tests.analytic.hardware import list_profiles, load_profile
from llmcomm_tests.core.text import nbytes, text_table
from llmcomm_tests.core.arguments import OneLineParser, output_file, positive_int
from llmcomm_tests.runtime.run_config import engine_shape

SCHEMA = "llmcomm.predict/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", default="llama-3.1-8b", type=engine_shape,
                        help="engine preset name, a shape mapping as in specs ('{preset: tiny, n_layers: 2}'), "
                             "or a YAML/JSON file holding one (default: llama-3.1-8b)")
    parser.add_argument("--tp", type=positive_int, default=1, help="tensor-parallel degree (default 1)")
    parser.add_argument("--pp", type=positive_int, default=1, help="pipeline-parallel degree (default 1)")
    parser.add_argument("--layouts", help="comma-separated TxP layouts, e.g. 4x1,2x2,1x4 (overrides --tp/--pp)")
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--prompt-len", type=positive_int, default=128)
    parser.add_argument("--gen-len", type=positive_int, default=128)
    parser.add_argument("--dtype", choices=("fp32", "bf16", "fp16"),
                        help="engine dtype (default: bf16 for public shapes, fp32 for tiny)")
    parser.add_argument("--hardware", default="h100-nvlink4",
                        help=f"hardware profile preset or YAML path (presets: {', '.join(list_profiles())})")
    parser.add_argument("--algorithm", choices=("ring", "tree"), help="collective algorithm (default: the profile's)")
    parser.add_argument("--json", metavar="PATH", type=output_file, help="also write the prediction as JSON")


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


def _headline(pred: dict) -> str:
    c = pred["case"]
    return (f"{c['name']}  tp{c['tp']}-pp{c['pp']}  batch {c['batch']}  prompt {c['prompt_len']}  gen {c['gen_len']}"
            f"  {c['dtype']}  hardware {c['hardware']} ({pred['metrics']['algorithm']})")


def format_single(pred: dict) -> str:
    """Per (op, site class, phase): calls, bytes, wire bytes (all ranks) and critical-path time."""
    lat = {(r["op"], r["phase"], r["site"]): r for r in pred["latency"]}
    merged = defaultdict(lambda: {"count": 0, "bytes": 0, "wire_bytes": 0})
    for r in pred["volume"]:  # send and recv rows fold into the send_recv latency row
        op = "send_recv" if r["op"] in ("send", "recv") else r["op"]
        acc = merged[(op, r["phase"], r["site"])]
        acc["count"] += r["count"]
        acc["bytes"] += r["bytes"]
        acc["wire_bytes"] += r["wire_bytes"]
    rows = []
    for key in sorted(merged, key=lambda k: (k[2], k[0], k[1] != "prefill")):
        op, phase, site = key
        v, t = merged[key], lat.get(key)
        rows.append([site, op, phase, str(v["count"]), str(t["count"]) if t else "-", nbytes(v["bytes"]),
                     nbytes(v["wire_bytes"]), t["tiers"] if t else "-", _ms(t["time_s"]) if t else "-",
                     f"{_ms(t['lower_s'])}-{_ms(t['upper_s'])}" if t else "-"])
    m, s = pred["metrics"], pred["volume_summary"]
    out = [_headline(pred)]
    if rows:
        out.append(text_table(["site", "op", "phase", "calls", "ops", "bytes", "wire", "tier", "time_ms",
                           "bounds_ms"], rows, left=3))
    else:
        out.append("(one rank: no communication)")
    out.append(f"volume: {nbytes(s['bytes'])} recorded, {nbytes(s['wire_bytes'])} on the wire, "
               f"{nbytes(s['wire_bytes_per_token'])} wire per generated token, {nbytes(s['wire_bytes_per_gpu'])} per GPU")
    out.append(f"TTFT {_ms(m['ttft_s'])} ms   TPOT {_ms(m['tpot_s'])} ms   E2E {_ms(m['e2e_s'])} ms   "
               f"comm share {100 * m['comm_share']:.1f} %  (comm {_ms(m['comm_lower_s'])}-{_ms(m['comm_upper_s'])} ms"
               f" bounds, model {_ms(m['comm_s'])} ms)")
    return "\n".join(out)


def format_side_by_side(preds: list[dict]) -> str:
    """Layouts as columns: wire bytes and critical-path time per (op, site class), then metrics."""
    names = [f"tp{p['case']['tp']}-pp{p['case']['pp']}" for p in preds]
    wire = [defaultdict(int) for _ in preds]
    time = [defaultdict(float) for _ in preds]
    keys = set()
    for i, p in enumerate(preds):
        for r in p["volume"]:
            op = "send_recv" if r["op"] in ("send", "recv") else r["op"]
            wire[i][(r["site"], op)] += r["wire_bytes"]
            keys.add((r["site"], op))
        for r in p["latency"]:
            time[i][(r["site"], r["op"])] += r["time_s"]
    c = preds[0]["case"]
    out = [f"{c['name']}  batch {c['batch']}  prompt {c['prompt_len']}  gen {c['gen_len']}  {c['dtype']}  "
           f"hardware {c['hardware']} ({preds[0]['metrics']['algorithm']})"]
    rows = [[f"{site} {op}"] + [f"{nbytes(w[(site, op)])} / {_ms(t[(site, op)])}" if (site, op) in w else "-"
                                for w, t in zip(wire, time)]
            for site, op in sorted(keys)]
    out.append(text_table(["wire (all ranks) / time_ms"] + names, rows))
    metric_rows = [
        ["wire bytes, all ranks"] + [nbytes(p["volume_summary"]["wire_bytes"]) for p in preds],
        ["wire bytes per GPU"] + [nbytes(p["volume_summary"]["wire_bytes_per_gpu"]) for p in preds],
        ["wire bytes per token"] + [nbytes(p["volume_summary"]["wire_bytes_per_token"]) for p in preds],
        ["calls per request"] + [str(p["volume_summary"]["calls"]) for p in preds],
        ["TTFT ms"] + [_ms(p["metrics"]["ttft_s"]) for p in preds],
        ["TPOT ms"] + [_ms(p["metrics"]["tpot_s"]) for p in preds],
        ["E2E ms"] + [_ms(p["metrics"]["e2e_s"]) for p in preds],
        ["comm ms (bounds)"] + [f"{_ms(p['metrics']['comm_s'])} ({_ms(p['metrics']['comm_lower_s'])}-"
                                f"{_ms(p['metrics']['comm_upper_s'])})" for p in preds],
        ["comm share %"] + [f"{100 * p['metrics']['comm_share']:.1f}" for p in preds],
    ]
    out.append(text_table(["metric"] + names, metric_rows))
    return "\n".join(out)


def _json_prediction(pred: dict) -> dict:
    return {key: pred[key] for key in ("case", "volume", "latency", "metrics", "volume_summary")}


def main(args: "argparse.Namespace | list[str] | None" = None) -> int:
    """Run the command; ``args`` from the ``llmcomm`` parser, or an argv list (tests, scripts)."""
    if not isinstance(args, argparse.Namespace):
        parser = OneLineParser(prog="llmcomm predict", description=__doc__.splitlines()[0])
        add_arguments(parser)
        args = parser.parse_args(args)
    try:
        shape = args.engine
        shape.check_request(args.prompt_len, args.gen_len)
        layouts = ([Layout.parse(x) for x in args.layouts.split(",") if x.strip()] if args.layouts
                   else [Layout(args.tp, args.pp)])
        profile = load_profile(args.hardware)
        dtype = args.dtype or ("fp32" if shape.name == "tiny" else "bf16")
        preds = [predict_case(shape, layout, args.batch, args.prompt_len, args.gen_len, dtype, profile,
                              args.algorithm) for layout in layouts]
    except (ValueError, LayoutError) as exc:
        print(f"llmcomm predict: {exc}", file=sys.stderr)
        return 2
    print(format_single(preds[0]) if len(preds) == 1 else format_side_by_side(preds))
    if args.json:
        if len(preds) == 1:
            doc = {"schema": SCHEMA, **_json_prediction(preds[0])}
        else:
            doc = {"schema": SCHEMA, "predictions": [_json_prediction(p) for p in preds]}
        with open(args.json, "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
    return 0
