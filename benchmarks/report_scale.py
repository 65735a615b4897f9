"""Report scale: a Llama-3.1-8B 8x1 case's calls through recorder columns → summaries → checks →
reports → baseline, with peak memory and file sizes.

    python benchmarks/report_scale.py [--repeats 10] [--gen-len 128] [--batch 8]

The calls are synthetic (no GPU here) but shaped like the real case: per rank and repetition, a
vocab-parallel embedding all-reduce, two row-parallel all-reduces per layer and the LM-head gather
per forward, the token broadcast per decode step; durations lognormal.  What runs on them is the
real code: ``metrics`` (columns → volume rows, op summaries, comm metrics, timeline), ``checks``
against the analytic model on the ``h100-nvlink4`` preset, ``report.json_report`` and the items
log, ``baseline`` save + compare.  Targets: ≤ 200 MB peak, ≤ 5 MB of reports per case.
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from llmcomm_tests.judging import baseline, checks
from llmcomm_tests.core import contract
from llmcomm_tests.runtime import metrics
from llmcomm_tests.core.documents import CallClass, CaseInfo, CaseResult, RankOps, RunDocument, SessionReport
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.suite.case_run import prediction
from llmcomm_tests.report import json_report
from llmcomm_tests.spec import Case

TP = 8


def rank_ops(rank: int, shape, batch: int, prompt_len: int, gen_len: int, repeats: int, rng) -> RankOps:
    """One rank's calls in the recorder's column layout."""
    group = tuple(range(TP))
    h, e = shape.hidden, 2  # bf16
    classes: list[CallClass] = []
    index: dict[tuple, int] = {}

    def cls(op, phase, site, numel, root=None):
        nbytes = numel * e
        key = (op, phase, site, numel)
        if key not in index:
            group_rank = rank
            wire = contract.wire_bytes(op, nbytes, TP, group_rank, root if root is not None else -1)
            index[key] = len(classes)
            classes.append(CallClass(op, group, "bfloat16", numel, nbytes, wire, phase, site, root))
        return index[key]

    rows = []  # (class, rep, step)
    for rep in range(repeats):
        for step in range(gen_len):
            phase, tokens = ("prefill", batch * prompt_len) if step == 0 else ("decode", batch)
            rows.append((cls("all_reduce", phase, contract.EMBED, tokens * h), rep, step))
            for layer in range(shape.n_layers):
                rows.append((cls("all_reduce", phase, contract.attn_out(layer), tokens * h), rep, step))
                rows.append((cls("all_reduce", phase, contract.mlp_out(layer), tokens * h), rep, step))
            rows.append((cls("gather", phase, contract.LM_HEAD, batch * shape.vocab // TP, root=0), rep, step))
            if step:
                rows.append((cls("broadcast", phase, contract.TOKENS_BROADCAST, batch * 4, root=0), rep, step))
    table = np.array(rows, dtype=np.int64)
    n = len(table)
    duration = rng.lognormal(np.log(20e-6), 0.4, n)
    start = np.cumsum(duration * 3 * 1e9).astype(np.int64)
    return RankOps(rank, classes, table[:, 0].astype(np.int32), table[:, 1].astype(np.int32),
                   table[:, 2].astype(np.int32), start, duration)


def generations(repeats: int, gen_len: int) -> list[dict]:
    return [{"tokens": [[1] * gen_len] * 8, "token_times_s": [0.05 + 0.01 * i for i in range(gen_len)]}
            for _ in range(repeats)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--gen-len", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=128)
    args = parser.parse_args()
    shape = PRESETS["llama-3.1-8b"]
    layout = Layout(TP, 1)
    tracemalloc.start()
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    per_rank = [rank_ops(r, shape, args.batch, args.prompt_len, args.gen_len, args.repeats, rng) for r in range(TP)]
    calls = sum(len(r) for r in per_rank)
    column_bytes = sum(a.nbytes for r in per_rank for a in (r.cls, r.rep, r.step, r.start_ns, r.duration_s))
    t_build = time.perf_counter() - t0
    gens = generations(args.repeats, args.gen_len)
    doc = RunDocument(
        CaseInfo(shape.to_dict(), TP, 1, args.batch, args.prompt_len, args.gen_len, "bf16", "nccl", TP, args.repeats,
                 1, 0), {"backend": "nccl", "devices": ["NVIDIA H100 80GB HBM3"] * TP}, gens[0]["tokens"],
        metrics.latency_metrics(gens, args.gen_len, args.batch),
        metrics.comm_metrics(per_rank, gens, args.batch, args.gen_len),
        metrics.volume(per_rank), metrics.volume_stable(per_rank, args.repeats), metrics.op_summaries(per_rank),
        metrics.timeline(per_rank))
    t_summarise = time.perf_counter() - t0 - t_build
    case = Case("report-scale", Path("report-scale.yaml"), shape, "bf16", layout, args.batch, args.prompt_len,
                args.gen_len)
    from llmcomm_tests.analytic.hardware import load_profile

    profile = load_profile("h100-nvlink4")
    predicted = prediction(case, profile)
    verdict = checks.evaluate(case, doc, predicted.volume, profile, profile.name)
    result = CaseResult(case.spec_name, str(case.path), case.id, profile.name, "nccl", {}, predicted, verdict, doc)
    with tempfile.TemporaryDirectory() as tmp:
        json_report.start(tmp)
        json_report.append_item(tmp, result)
        report = json_report.write(tmp, SessionReport({}, "nccl", profile.name, TP, {"report_dir": tmp}, [result],
                                                      complete=True, exitstatus=0))
        sizes = {"llmcomm-report.json": report.stat().st_size,
                 "llmcomm-items.jsonl": (Path(tmp) / json_report.ITEMS_FILENAME).stat().st_size}
        run = baseline.summarize(doc, {}, "session-1")
        path = Path(tmp) / "baseline.json"
        baseline.add_run(path, run)
        baseline.add_run(path, {**run, "session": "session-2"})
        rows = baseline.compare(baseline.load_baseline(path), run, 0.1, None)
        sizes["baseline (2 runs)"] = path.stat().st_size
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"case: llama-3.1-8b tp8 pp1, batch {args.batch}, prompt {args.prompt_len}, gen {args.gen_len}, "
          f"{args.repeats} repeats")
    print(f"calls recorded: {calls:,} ({calls // TP:,} per rank); recorder columns {column_bytes / 2**20:.1f} MiB")
    print(f"op summaries: {len(doc.ops)}; verdict rows: {len(verdict.rows)} ({verdict.count('fail')} fail); "
          f"baseline rows: {len(rows)}")
    print(f"time: build {t_build:.2f} s, summarise {t_summarise:.2f} s, total {elapsed:.2f} s")
    print(f"peak memory: {peak / 2**20:.1f} MiB traced (python + numpy), {rss:.0f} MiB max RSS of the process "
          f"(target <= 200 MB)")
    for name, size in sizes.items():
        print(f"  {name:<22} {size / 2**20:8.3f} MiB")
    report_total = sizes["llmcomm-report.json"] + sizes["llmcomm-items.jsonl"]
    print(f"reports per case: {report_total / 2**20:.3f} MiB (target <= 5 MiB)")
    ok = rss <= 200 and report_total <= 5 * 2**20
    print("targets met" if ok else "TARGETS MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
