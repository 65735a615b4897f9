"""Baselines: store a case's results before an upgrade, compare after it.

Layout on disk: ``<baseline_dir>/<hardware key>/<name>/<spec>/<case id>.json``.  The hardware key
(backend, device model and count) keeps an 8×H100 baseline from being compared with a CPU run.

Comparison:

* bytes and counts per (op, phase, site class) must match exactly;
* times (TTFT, TPOT, E2E and each op class's latency) are compared on the log scale with Welch's
  t-test over per-repetition statistics (the median of each repetition for op classes): the
  relative change is exp(mean difference) − 1 with a 95 % confidence interval.  A change is
  flagged when the interval excludes zero and the estimate passes the spec's ``threshold``
  (slower: a regression; much faster, beyond twice the threshold: a stale baseline).  Each row
  states the smallest change it could have detected (95 % confidence, 95 % power) at its repeats and
  noise; a spec's ``min_detectable`` turns an insensitive comparison into a failure.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

from .checks import FAIL, NA, PASS, row
from .tags import site_class

SCHEMA = "llmcomm.baseline/1"
DEFAULT_THRESHOLD = 0.10
TIME_METRICS = (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("e2e", "e2e_s"))
# Environment keys whose change is worth naming in a failure.
ENV_KEYS = ("torch", "nccl", "cuda", "driver", "python", "llmcomm_tests", "devices", "host", "backend", "world_size",
            "variables")


def hardware_key(env: dict) -> str:
    devices = env.get("devices") or ["unknown"]
    model = re.sub(r"[^A-Za-z0-9.]+", "_", devices[0]).strip("_")
    return f"{env.get('backend', 'unknown')}-{len(devices)}x{model}"


def summarize(doc: dict, session_env: dict) -> dict:
    """What a baseline keeps of a run: volume, per-repetition time statistics, environment."""
    op_classes: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for op in doc["ops"]:
        if op["duration_s"] is not None:
            key = f"{op['op']} {op['phase']} {site_class(op['site'])} /{len(op['group'])}"
            op_classes[key][op["rep"]].append(op["duration_s"])
    samples = doc["metrics"]["samples"]
    return {
        "schema": SCHEMA,
        "case": doc["case"],
        "env": {**session_env, **doc["env"], "llmcomm_tests": session_env.get("llmcomm_tests")},
        "volume": doc["volume"],
        "times": {name: samples[key] for name, key in TIME_METRICS},
        "op_latency": {k: [statistics.median(v[rep]) for rep in sorted(v)] for k, v in sorted(op_classes.items())},
    }


def path_for(root: str, name: str, env: dict, spec: str, case_id: str) -> Path:
    return Path(root) / hardware_key(env) / name / spec / f"{case_id}.json"


def save(summary: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, default=str))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# -- statistics -----------------------------------------------------------------------------------


def _t_quantile(p: float, df: float) -> float:
    """Student's t quantile (Cornish-Fisher expansion of the normal one; good to ~1 % for df ≥ 3)."""
    z = statistics.NormalDist().inv_cdf(p)
    g1 = (z ** 3 + z) / 4
    g2 = (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96
    g3 = (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384
    return z + g1 / df + g2 / df ** 2 + g3 / df ** 3


def compare_samples(baseline: list[float], current: list[float]) -> dict | None:
    """Relative change of current vs baseline (log-scale Welch), CI and minimum detectable change."""
    a = [math.log(x) for x in baseline if x and x > 0]
    b = [math.log(x) for x in current if x and x > 0]
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a), statistics.variance(b)
    se = math.sqrt(va / len(a) + vb / len(b))
    diff = statistics.fmean(b) - statistics.fmean(a)
    if se == 0:
        return {"change": math.exp(diff) - 1, "ci": [math.exp(diff) - 1] * 2, "mde": 0.0, "n": (len(a), len(b))}
    df = se ** 4 / ((va / len(a)) ** 2 / (len(a) - 1) + (vb / len(b)) ** 2 / (len(b) - 1)) if va + vb > 0 else 1e9
    df = max(df, 1.0)
    t = _t_quantile(0.975, df)
    power = _t_quantile(0.95, df)
    return {"change": math.exp(diff) - 1, "ci": [math.exp(diff - t * se) - 1, math.exp(diff + t * se) - 1],
            "mde": math.exp((t + power) * se) - 1, "n": (len(a), len(b))}


def judge(name: str, stats: dict | None, threshold: float, min_detectable: float | None) -> dict:
    if stats is None:
        return row("baseline", name, NA, detail="fewer than 2 repetitions on one side")
    change, (lo, hi), mde = stats["change"], stats["ci"], stats["mde"]
    text = f"{change:+.1%} [95% CI {lo:+.1%}, {hi:+.1%}]; detects >= {mde:.1%} at 95%"
    verdict = PASS
    if lo > 0 and change > threshold:
        verdict, text = FAIL, f"slower {text}"
    elif hi < 0 and change < -2 * threshold:
        verdict, text = FAIL, f"much faster, baseline stale? {text}"
    elif min_detectable is not None and mde > min_detectable:
        verdict, text = FAIL, f"too noisy to detect {min_detectable:.0%} (spec min_detectable): {text}"
    return row("baseline", name, verdict, {"change": change}, sum(stats["n"]), bound=[lo, hi],
               budget=f"|change| <= {threshold:.0%}", detail=text)


def env_changes(old: dict, new: dict) -> list[str]:
    changes = []
    for key in ENV_KEYS:
        a, b = old.get(key), new.get(key)
        if a != b:
            changes.append(f"{key} {a} → {b}" if not isinstance(a, dict) else f"{key} changed")
    return changes


def compare(stored: dict, current: dict, threshold: float, min_detectable: float | None) -> list[dict]:
    rows = []
    old_volume = {(r["op"], r["phase"], r["site"]): r for r in stored["volume"]}
    new_volume = {(r["op"], r["phase"], r["site"]): r for r in current["volume"]}
    for key in sorted(set(old_volume) | set(new_volume)):
        a, b = old_volume.get(key), new_volume.get(key)
        fields = ("count", "bytes", "wire_bytes")
        av = {f: a[f] for f in fields} if a else None
        bv = {f: b[f] for f in fields} if b else None
        if av != bv:
            rows.append(row("baseline", "volume " + " ".join(key), FAIL, bv, model=av,
                            detail="bytes or count changed since the baseline"))
    if not any(r["verdict"] == FAIL for r in rows):
        rows.append(row("baseline", "volume (all op classes)", PASS, detail="identical to the baseline"))
    for name, _ in TIME_METRICS:
        rows.append(judge(name, compare_samples(stored["times"][name], current["times"][name]), threshold,
                          min_detectable))
    for key in sorted(set(stored["op_latency"]) & set(current["op_latency"])):
        rows.append(judge(f"op {key}", compare_samples(stored["op_latency"][key], current["op_latency"][key]),
                          threshold, min_detectable))
    changed = env_changes(stored["env"], current["env"])
    if changed and any(r["verdict"] == FAIL for r in rows):
        rows.append(row("baseline", "environment", FAIL, detail="changed since the baseline: " + "; ".join(changed)))
    elif changed:
        rows.append(row("baseline", "environment", PASS, detail="changed, no effect found: " + "; ".join(changed)))
    return rows


def handle(case, doc: dict, state) -> list[dict]:
    """Save and/or compare one case (called by the runner when a baseline option is set)."""
    opts = state.options
    current = summarize(doc, state.env)
    rows = []
    if opts.baseline_compare:
        path = path_for(opts.baseline_dir, opts.baseline_compare, current["env"], case.spec_name, case.id)
        if not path.is_file():
            rows.append(row("baseline", f"baseline {opts.baseline_compare}", FAIL,
                            detail=f"no baseline at {path} (save one with --llmcomm-baseline-save)"))
        else:
            settings = case.baseline
            threshold = settings.threshold if settings else DEFAULT_THRESHOLD
            min_detectable = settings.min_detectable if settings else None
            rows += compare(load(path), current, threshold, min_detectable)
    if opts.baseline_save:
        save(current, path_for(opts.baseline_dir, opts.baseline_save, current["env"], case.spec_name, case.id))
    return rows
