"""Baselines: store a case's results before an upgrade, compare after it.

Layout on disk: ``<baseline_dir>/<hardware key>/<name>/<spec>/<case id>.json``.  The hardware key
(backend, device model and count) keeps an 8×H100 baseline from being compared with a CPU run.

A baseline holds one or more *runs* (each ``--llmcomm-baseline-save NAME`` adds one, up to
``MAX_RUNS``).  Why several: a time measured twice in one session scatters far less than the same
time measured in two sessions (process placement, clocks, neighbours: on a shared 2-core host
the typical all-reduce moves ±20-50 % between sessions).  A gate that ignores this run-to-run drift
raises false alarms that people learn to mute; one that measures it can say honestly what it can
detect.

Comparison, per case:

* bytes and counts per (op, phase, site class) must match exactly;
* each time row — TTFT, TPOT, E2E, and each op class's durations (op, phase, group) — is reduced
  per run to a centre (the 10 %-trimmed mean of log times).  With k ≥ 2 baseline runs, the
  current run's centre is tested against the baseline runs' spread (a t prediction interval,
  k − 1 degrees of freedom); with one baseline run, against the within-run bootstrap spread only,
  and the row says that drift was not measured.  Intervals are Bonferroni-corrected over the
  case's time rows (95 % family-wise).  A row fails when its interval excludes zero and the
  estimate passes the spec's ``threshold`` (slower: a regression; faster than twice the threshold:
  a stale baseline).  Every row states the smallest change it could have detected (95 % power); a
  spec's ``min_detectable`` turns an insensitive comparison into a failure instead of a quiet pass.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import defaultdict
from pathlib import Path

from .checks import FAIL, NA, PASS, row, volume_rows

SCHEMA = "llmcomm.baseline/2"
DEFAULT_THRESHOLD = 0.10
MAX_RUNS = 10
TIME_METRICS = (("ttft", "ttft_s"), ("tpot", "tpot_s"), ("e2e", "e2e_s"))
# Environment keys whose change is worth naming in a failure.
ENV_KEYS = ("torch", "nccl", "cuda", "driver", "python", "llmcomm_tests", "devices", "host", "backend", "world_size",
            "variables")
BOOTSTRAP = 2000
FAMILY_CONFIDENCE = 0.95
POWER = 0.95
TRIM = 0.1  # trimmed mean of log times: robust to a busy host's stragglers, tighter than a median


def hardware_key(env: dict) -> str:
    devices = env.get("devices") or ["unknown"]
    model = re.sub(r"[^A-Za-z0-9.]+", "_", devices[0]).strip("_")
    return f"{env.get('backend', 'unknown')}-{len(devices)}x{model}"


def summarize(doc: dict, session_env: dict) -> dict:
    """One run as a baseline keeps it: volume, time samples per row, environment."""
    from .analytic.accuracy import waiting_reason

    op_classes: dict[str, list[float]] = defaultdict(list)
    for op in doc["ops"]:
        # Calls that wait for other ranks' compute time the schedule, not the link (see
        # analytic/accuracy.py), and so do point-to-point calls, which rendezvous with their peer
        # (on this host a send takes 40 µs or 1 ms depending on whether the receiver was already
        # scheduled).  TTFT/TPOT carry their effect.  One row per (op, phase, group): sites of
        # one op move together, and every row costs confidence under the Bonferroni correction.
        if op["duration_s"] is not None and waiting_reason(op) is None and op["op"] not in ("send", "recv"):
            op_classes[f"op {op['op']} {op['phase']} /{len(op['group'])}"].append(op["duration_s"])
    samples = doc["metrics"]["samples"]
    times = {name: samples[key] for name, key in TIME_METRICS}
    times.update(sorted(op_classes.items()))
    return {"env": {**session_env, **doc["env"], "llmcomm_tests": session_env.get("llmcomm_tests")},
            "case": doc["case"], "volume": doc["volume"], "times": times}


def path_for(root: str, name: str, env: dict, spec: str, case_id: str) -> Path:
    return Path(root) / hardware_key(env) / name / spec / f"{case_id}.json"


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def add_run(path: Path, run: dict) -> dict:
    """Append ``run`` to the baseline at ``path`` (a new one when absent or when its bytes changed)."""
    stored = load(path) if path.is_file() else None
    if stored is None or stored.get("schema") != SCHEMA or stored["volume"] != run["volume"]:
        stored = {"schema": SCHEMA, "case": run["case"], "volume": run["volume"], "runs": []}
    stored["runs"] = (stored["runs"] + [{"env": run["env"], "times": run["times"]}])[-MAX_RUNS:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(stored, indent=1, default=str))
    return stored


# -- statistics -----------------------------------------------------------------------------------


def _center(samples, axis=-1):
    """10 %-trimmed mean along ``axis``."""
    import numpy as np

    x = np.sort(samples, axis=axis)
    k = int(x.shape[axis] * TRIM)
    x = x[..., k:x.shape[axis] - k] if k else x
    return x.mean(axis=axis)


def _logs(samples: list[float]):
    import numpy as np

    return np.log([x for x in samples if x and x > 0])


def _t(p: float, df: float) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal one; ~1 % for df >= 3)."""
    z = statistics.NormalDist().inv_cdf(p)
    return (z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)
            + (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / (384 * df ** 3))


def compare_samples(baseline_runs: list[list[float]], current: list[float], rows_in_family: int = 1,
                    seed: int = 0) -> dict | None:
    """Relative change of the current run's centre against the baseline runs, its interval at the
    Bonferroni-corrected level, and the minimum detectable change at 95 % power."""
    import numpy as np

    runs = [r for r in (_logs(s) for s in baseline_runs) if len(r) >= 3]
    now = _logs(current)
    if not runs or len(now) < 3:
        return None
    alpha = (1 - FAMILY_CONFIDENCE) / max(1, rows_in_family)
    centers = [float(_center(r)) for r in runs]
    diff = float(_center(now)) - statistics.fmean(centers)
    k = len(centers)
    if k >= 2:  # the baseline's own runs measure the run-to-run spread
        spread = statistics.stdev(centers) * math.sqrt(1 + 1 / k)
        q, power, drift = _t(1 - alpha / 2, k - 1), _t(POWER, k - 1), True
    else:  # one run: within-run bootstrap only
        rng = np.random.default_rng(seed)
        boot = (_center(rng.choice(now, (BOOTSTRAP, len(now)))) - _center(rng.choice(runs[0], (BOOTSTRAP, len(runs[0])))))
        spread = float(np.std(boot))
        z = statistics.NormalDist().inv_cdf
        q, power, drift = z(1 - alpha / 2), z(POWER), False
    return {"change": math.exp(diff) - 1, "ci": [math.exp(diff - q * spread) - 1, math.exp(diff + q * spread) - 1],
            "mde": math.exp((q + power) * spread) - 1, "n": (sum(map(len, runs)), len(now)), "runs": k,
            "drift_measured": drift, "confidence": 1 - alpha}


def judge(name: str, stats: dict | None, threshold: float, min_detectable: float | None) -> dict:
    if stats is None:
        return row("baseline", name, NA, detail="fewer than 3 samples on one side")
    change, (lo, hi), mde = stats["change"], stats["ci"], stats["mde"]
    basis = (f"{stats['runs']} baseline runs" if stats["drift_measured"]
             else "1 baseline run: run-to-run drift not measured")
    text = (f"{change:+.1%} [{stats['confidence']:.2%} CI {lo:+.1%}, {hi:+.1%}; {basis}]; "
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
    for diff in volume_rows(current["volume"], stored["volume"]):  # the model check, baseline as model
        if diff["verdict"] == FAIL:
            rows.append(row("baseline", "volume " + diff["name"], FAIL, diff["measured"], model=diff["model"],
                            detail=f"bytes or count changed since the baseline: {diff['detail']}"))
    if not any(r["verdict"] == FAIL for r in rows):
        rows.append(row("baseline", "volume (all op classes)", PASS, detail="identical to the baseline"))
    names = [n for n in current["times"] if all(n in run["times"] for run in stored["runs"])]
    for name in names:
        stats = compare_samples([run["times"][name] for run in stored["runs"]], current["times"][name], len(names))
        rows.append(judge(name, stats, threshold, min_detectable))
    changed = env_changes(stored["runs"][-1]["env"], current["env"])
    if changed and any(r["verdict"] == FAIL for r in rows):
        rows.append(row("baseline", "environment", FAIL, detail="changed since the baseline: " + "; ".join(changed)))
    elif changed:
        rows.append(row("baseline", "environment", PASS, detail="changed, no effect found: " + "; ".join(changed)))
    return rows


def handle(case, doc: dict, state) -> list[dict]:
    """Compare one case and/or add it to a baseline (the runner calls this when an option is set)."""
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
        path = path_for(opts.baseline_dir, opts.baseline_save, current["env"], case.spec_name, case.id)
        stored = add_run(path, current)
        rows.append(row("baseline", f"saved to {opts.baseline_save}", PASS,
                        detail=f"{len(stored['runs'])} run(s) in {path}"))
    return rows
