"""Baselines: store a case's results before an upgrade, compare after it.

Layout on disk: ``<baseline_dir>/<hardware key>/<name>/<spec>/<case id>.json``.  The hardware key
(backend, device model and count) keeps an 8×H100 baseline from being compared with a CPU run.

Comparison:

* bytes and counts per (op, phase, site class) must match exactly;
* times — TTFT, TPOT, E2E per repetition, and every op class's durations pooled over repetitions —
  are compared by the ratio of medians, with a bootstrap confidence interval.  The confidence level
  is Bonferroni-corrected over the case's time rows (95 % family-wise), so a case with twenty op
  classes does not raise twenty coin-flip alarms.  A row fails when its interval excludes zero and
  the estimate passes the spec's ``threshold`` (slower: a regression; faster than twice the
  threshold: a stale baseline).  Each row states the smallest change it could have detected
  (95 % power) at its samples and noise; a spec's ``min_detectable`` turns an insensitive
  comparison into a failure instead of a quiet pass.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

from .checks import FAIL, NA, PASS, row

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
    from .analytic.accuracy import waiting_reason

    op_classes: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for op in doc["ops"]:
        # Calls that wait for other ranks' compute time the schedule, not the link (see
        # analytic/accuracy.py), and so do point-to-point calls, which rendezvous with their peer
        # (on this host a send takes 40 µs or 1 ms depending on whether the receiver was already
        # scheduled).  TTFT/TPOT carry their effect.
        if op["duration_s"] is not None and waiting_reason(op) is None and op["op"] not in ("send", "recv"):
            # One row per (op, phase, group): fewer, larger classes than per call site — each row
            # costs confidence under the Bonferroni correction, and sites of one op move together.
            peers = "p2p" if op["op"] in ("send", "recv") else len(op["group"])
            key = f"{op['op']} {op['phase']} /{peers}"
            op_classes[key][op["rep"]].append(op["duration_s"])
    samples = doc["metrics"]["samples"]
    return {
        "schema": SCHEMA,
        "case": doc["case"],
        "env": {**session_env, **doc["env"], "llmcomm_tests": session_env.get("llmcomm_tests")},
        "volume": doc["volume"],
        "times": {name: samples[key] for name, key in TIME_METRICS},
        "op_latency": {k: [d for rep in sorted(v) for d in v[rep]] for k, v in sorted(op_classes.items())},
    }


def path_for(root: str, name: str, env: dict, spec: str, case_id: str) -> Path:
    return Path(root) / hardware_key(env) / name / spec / f"{case_id}.json"


def save(summary: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=1, default=str))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# -- statistics -----------------------------------------------------------------------------------

BOOTSTRAP = 2000
FAMILY_CONFIDENCE = 0.95
POWER = 0.95


TRIM = 0.1  # trimmed mean of log times: robust to the stragglers of a busy host, ~1.5× tighter than a median


def _center(samples, axis=-1):
    """10 %-trimmed mean along ``axis``."""
    import numpy as np

    x = np.sort(samples, axis=axis)
    k = int(x.shape[axis] * TRIM)
    x = x[..., k:x.shape[axis] - k] if k else x
    return x.mean(axis=axis)


def compare_samples(baseline: list[float], current: list[float], rows_in_family: int = 1, seed: int = 0) -> dict | None:
    """Relative change of the typical time (current vs baseline: trimmed mean of log times), its
    bootstrap CI at the Bonferroni-corrected level, and the minimum detectable change at 95 % power."""
    import numpy as np

    a = np.log([x for x in baseline if x and x > 0])
    b = np.log([x for x in current if x and x > 0])
    if len(a) < 3 or len(b) < 3:
        return None
    rng = np.random.default_rng(seed)
    diffs = _center(rng.choice(b, (BOOTSTRAP, len(b)))) - _center(rng.choice(a, (BOOTSTRAP, len(a))))
    alpha = (1 - FAMILY_CONFIDENCE) / max(1, rows_in_family)
    lo, hi = np.quantile(diffs, [alpha / 2, 1 - alpha / 2])
    se = float(np.std(diffs))
    z = statistics.NormalDist().inv_cdf
    mde = math.exp((z(1 - alpha / 2) + z(POWER)) * se) - 1
    change = math.exp(float(_center(b) - _center(a))) - 1
    return {"change": change, "ci": [math.exp(lo) - 1, math.exp(hi) - 1], "mde": mde, "n": (len(a), len(b)),
            "confidence": 1 - alpha}


def judge(name: str, stats: dict | None, threshold: float, min_detectable: float | None) -> dict:
    if stats is None:
        return row("baseline", name, NA, detail="fewer than 3 samples on one side")
    change, (lo, hi), mde = stats["change"], stats["ci"], stats["mde"]
    text = (f"{change:+.1%} [{stats['confidence']:.2%} CI {lo:+.1%}, {hi:+.1%}]; "
            f"detects >= {mde:.1%} at 95% power")
    verdict = PASS
    if lo > 0 and change > threshold:
        verdict, text = FAIL, f"slower {text}"
    elif hi < 0 and change < -2 * threshold:
        verdict, text = FAIL, f"much faster, baseline stale? {text}"
    elif min_detectable is not None and mde > min_detectable:
        verdict, text = FAIL, f"too noisy to detect {min_detectable:.0%} (spec min_detectable): {text}"
    return row("baseline", name, verdict, {"change": change}, sum(stats["n"]), bound=[lo, hi],
               budget=f"change <= {threshold:.0%}", detail=text)


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
    pairs = [(name, stored["times"][name], current["times"][name]) for name, _ in TIME_METRICS]
    pairs += [(f"op {key}", stored["op_latency"][key], current["op_latency"][key])
              for key in sorted(set(stored["op_latency"]) & set(current["op_latency"]))]
    for name, before, after in pairs:
        rows.append(judge(name, compare_samples(before, after, len(pairs)), threshold, min_detectable))
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
