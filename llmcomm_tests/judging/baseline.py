"""Baselines: store a case's results before an upgrade, compare after it.

Layout on disk: ``<baseline_dir>/<hardware key>/<name>/<spec>/<case id>.json``.  The hardware key
(backend, device model and count) keeps an 8×H100 baseline from being compared with a CPU run.

A baseline holds one or more *runs* (each ``--llmcomm-baseline-save NAME`` adds one, up to
``MAX_RUNS``).  Why several: a time measured twice in one session scatters far less than the same
time measured in two sessions (process placement, clocks, neighbours:
docs/measurements.md#timing-noise-between-sessions).  A gate that ignores this run-to-run drift
raises false alarms that people learn to mute; one that measures it can say honestly what it can
detect.

Runs saved in one session count as one: drift is only measured between sessions (each run carries
its session's id).  Files are written atomically; a baseline name is a plain name, confined to the
baseline folder.  A spec's ``baseline.metrics`` limits the time rows compared (``ttft``, ``tpot``,
``e2e``, ``op_latency`` for the op classes); ``baseline.file`` names a folder, relative to the spec.

Comparison, per case:

* bytes and counts per (op, phase, site class) must match exactly;
* each time row — TTFT, TPOT, E2E, and each op class's durations (op, phase, group) — is reduced
  per run to a centre (the 10 %-trimmed mean of log times).  With k ≥ 2 baseline runs, the
  current run's centre is tested against the baseline runs' spread (a t prediction interval,
  k − 1 degrees of freedom: the drift between sessions, measured).  With one baseline session the
  drift is not measured: a run of *another* session gets n/a time rows saying so (an unchanged
  rerun must not fail on drift nobody measured; bytes and counts are still judged exactly); a run
  of the *same* session is compared against the within-run bootstrap spread.  Each case gets its
  share of the session's family-wise rate (``BaselineRequest.level``, suite/session.py), split
  over its time rows (Bonferroni); every row states its level.  A row fails when its interval excludes zero and the
  estimate passes the spec's ``threshold`` (slower: a regression; faster than twice the threshold:
  a stale baseline).  Every row states the smallest change it could have detected (95 % power); a
  spec's ``min_detectable`` turns an insensitive comparison into a failure instead of a quiet pass.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path

from llmcomm_tests.core import stats
from llmcomm_tests.core.private_files import write_text_atomically
from llmcomm_tests.judging.checks import volume_rows
from llmcomm_tests.core.documents import FAIL, NA, PASS, RunDocument, VerdictRow, VolumeRow, from_json, to_json

SCHEMA = "llmcomm.baseline/3"
DEFAULT_THRESHOLD = 0.10
MAX_RUNS = 10
TIME_METRICS = ("ttft", "tpot", "e2e")
OP_METRICS = "op_latency"  # the baseline.metrics entry that stands for every op class row
# Environment keys whose change is worth naming in a failure.
ENV_KEYS = ("torch", "nccl", "cuda", "driver", "python", "llmcomm_tests", "devices", "host", "backend", "world_size",
            "variables", "nccl_config")
BOOTSTRAP = 2000
FAMILY_CONFIDENCE = 0.95
POWER = 0.95
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def hardware_key(env: dict) -> str:
    devices = env.get("devices") or ["unknown"]
    model = re.sub(r"[^A-Za-z0-9.]+", "_", devices[0]).strip("_")
    return f"{env.get('backend', 'unknown')}-{len(devices)}x{model}"


def summarize(doc: RunDocument, session_env: dict, session_id: str, metrics: tuple[str, ...] = ()) -> dict:
    """One run as a baseline keeps it: volume, time samples per row, environment, session."""
    op_classes: dict[str, list[float]] = {}
    for s in doc.ops:
        # Calls that wait for other ranks' compute time the schedule, not the link (see
        # analytic/accuracy.py), and so do point-to-point calls, which rendezvous with their peer
        # (a send's time depends on whether the receiver was already scheduled:
        # docs/measurements.md#point-to-point-rendezvous).  TTFT/TPOT carry their effect.  One row
        # per (op, phase, group): sites of one op move together, and every row costs confidence
        # under the Bonferroni correction.
        if s.latency is not None and s.waiting is None and s.op not in ("send", "recv"):
            op_classes.setdefault(f"op {s.op} {s.phase} /{s.group_size}", []).extend(s.latency.samples)
    wanted = set(metrics) or set(TIME_METRICS) | {OP_METRICS}
    times = {name: getattr(doc.metrics, name).samples for name in TIME_METRICS if name in wanted}
    if OP_METRICS in wanted:
        times.update(sorted(op_classes.items()))
    return {"env": {**session_env, **doc.env, "llmcomm_tests": session_env.get("llmcomm_tests")},
            "session": session_id, "case": to_json(doc.case), "volume": to_json(doc.volume), "times": times}


def check_name(name: str) -> str:
    """A baseline name is a plain name: it must not reach outside the baseline folder."""
    if not _NAME.match(name) or ".." in name:
        raise ValueError(f"baseline name {name!r}: use letters, digits, '.', '_' and '-' (no paths)")
    return name


def path_for(root: str, name: str, env: dict, spec: str, case_id: str, spec_file: str | None = None,
             spec_dir: Path | None = None) -> Path:
    """``<root>/<hardware key>/<name>/<spec>/<case id>.json``, or under the spec's ``baseline.file``
    (a folder relative to the spec file) when it names one."""
    if spec_file and spec_dir is not None:
        base = (spec_dir / spec_file).resolve()
        if not base.is_relative_to(spec_dir.resolve()):  # the spec check refuses this; a symlink could still lead out
            raise BaselineFileError(f"baseline folder {spec_file!r} leaves the spec's folder {spec_dir}")
    else:
        base = Path(root) / hardware_key(env)
    return base / check_name(name) / spec / f"{case_id}.json"


class BaselineFileError(OSError):
    """A baseline file that cannot be read or written: ``str`` is one line (file and cause)."""


def load_baseline(path: Path) -> dict:
    """A stored baseline file: its case, volume and runs.  Raises BaselineFileError naming the file
    (unreadable, truncated, not a baseline)."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        raise BaselineFileError(f"cannot read baseline {path}: {why}") from None
    if not isinstance(stored, dict):
        raise BaselineFileError(f"baseline {path} is damaged: a JSON {type(stored).__name__}, not a baseline")
    if stored.get("schema") == SCHEMA and (not isinstance(stored.get("runs"), list) or "volume" not in stored
            or not all(isinstance(r, dict) and isinstance(r.get("times"), dict) for r in stored["runs"])):
        raise BaselineFileError(f"baseline {path} is damaged: its runs or volume are missing")
    return stored


def add_run(path: Path, run: dict) -> dict:
    """Append ``run`` to the baseline at ``path`` (a new one when absent or when its bytes changed);
    written atomically, so a crash never leaves half a baseline."""
    stored = load_baseline(path) if path.is_file() else None
    if stored is None or stored.get("schema") != SCHEMA or stored["volume"] != run["volume"]:
        stored = {"schema": SCHEMA, "case": run["case"], "volume": run["volume"], "runs": []}
    entry = {"env": run["env"], "session": run["session"], "times": run["times"]}
    stored["runs"] = (stored["runs"] + [entry])[-MAX_RUNS:]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, json.dumps(stored, indent=1, default=str), prefix=".baseline-")
    except OSError as exc:
        raise BaselineFileError(f"cannot write baseline {path}: {exc.strerror or exc}; the previous file is kept") \
            from None
    return stored


def sessions(runs: list[dict], name: str) -> list[list[float]]:
    """The samples of row ``name`` per session (runs of one session pooled: they share its drift)."""
    by_session: dict[str, list[float]] = {}
    for i, run in enumerate(runs):
        if name in run["times"]:
            by_session.setdefault(run.get("session") or f"run{i}", []).extend(run["times"][name])
    return list(by_session.values())


# -- statistics -----------------------------------------------------------------------------------


def compare_samples(baseline_runs: list[list[float]], current: list[float], rows_in_family: int = 1,
                    seed: int = 0, family_level: float = 1 - FAMILY_CONFIDENCE) -> dict | None:
    """Relative change of the current run's centre against the baseline runs (one per session), its
    interval at ``family_level`` over ``rows_in_family`` (Bonferroni), and the minimum detectable
    change at 95 % power."""
    import numpy as np

    runs = [r for r in (stats.positive_logs(s) for s in baseline_runs) if len(r) >= 3]
    now = stats.positive_logs(current)
    if not runs or len(now) < 3:
        return None
    alpha = family_level / max(1, rows_in_family)
    centers = [float(stats.trimmed_mean(r)) for r in runs]
    diff = float(stats.trimmed_mean(now)) - statistics.fmean(centers)
    k = len(centers)
    if k >= 2:  # the baseline's own sessions measure the run-to-run spread (a t prediction interval)
        spread = statistics.stdev(centers) * math.sqrt(1 + 1 / k)
        q, power, drift = stats.t_quantile(1 - alpha / 2, k - 1), stats.t_quantile(POWER, k - 1), True
    else:  # one session: within-run bootstrap only
        boot = (stats.bootstrap(stats.trimmed_mean, now, BOOTSTRAP, seed)
                - stats.bootstrap(stats.trimmed_mean, runs[0], BOOTSTRAP, seed + 1))
        spread = float(np.std(boot))
        q, power, drift = stats.normal_quantile(1 - alpha / 2), stats.normal_quantile(POWER), False
    return {"change": math.exp(diff) - 1, "ci": [math.exp(diff - q * spread) - 1, math.exp(diff + q * spread) - 1],
            "mde": math.exp((q + power) * spread) - 1, "n": (sum(map(len, runs)), len(now)), "runs": k,
            "drift_measured": drift, "confidence": 1 - alpha, "level": alpha}


def judge(name: str, result: dict | None, threshold: float, min_detectable: float | None) -> VerdictRow:
    if result is None:
        return VerdictRow("baseline", name, NA, "change", detail="fewer than 3 samples on one side")
    change, (lo, hi), mde = result["change"], result["ci"], result["mde"]
    basis = (f"{result['runs']} baseline sessions" if result["drift_measured"]
             else "1 baseline session: run-to-run drift not measured")
    level = result.get("level", 1 - result["confidence"])
    text = (f"{change:+.1%} [{result['confidence']:.2%} CI {lo:+.1%}, {hi:+.1%}; {basis}]; "
            f"detects >= {mde:.1%} at 95% power at level {level:.2g}")
    verdict = PASS
    if lo > 0 and change > threshold:
        verdict, text = FAIL, f"slower {text}"
    elif hi < 0 and change < -2 * threshold:
        verdict, text = FAIL, f"much faster, baseline stale? {text}"
    elif min_detectable is not None and mde > min_detectable:
        verdict, text = FAIL, f"too noisy to detect {min_detectable:.0%} (spec min_detectable): {text}"
    return VerdictRow("baseline", name, verdict, "change", change, n=sum(result["n"]), low=lo, high=hi,
                      budget=threshold, budget_label="change", detail=text, level=level,
                      detectable=mde)


def env_changes(old: dict, new: dict) -> list[str]:
    changes = []
    for key in ENV_KEYS:
        a, b = old.get(key), new.get(key)
        if a != b:
            changes.append(f"{key} {a} → {b}" if not isinstance(a, dict) else f"{key} changed")
    return changes


def drift_unmeasured(stored: dict, current: dict) -> str | None:
    """Why the time rows cannot be judged: the baseline holds one session and this run is from
    another, so the drift between sessions, which moves every time, was never measured."""
    stored_sessions = {run.get("session") or f"run{i}" for i, run in enumerate(stored["runs"])}
    if len(stored_sessions) != 1 or current.get("session") in stored_sessions:
        return None
    return ("1 baseline session, this run from another: the drift between sessions is not measured "
            "(save the baseline in 2 or more sessions to judge times; bytes and counts are judged)")


def compare(stored: dict, current: dict, threshold: float, min_detectable: float | None,
            level: float = 1 - FAMILY_CONFIDENCE) -> list[VerdictRow]:
    """Volume exactly, then each time row at ``level`` (this case's share, split over its rows)."""
    rows = []
    old_volume = from_json(list[VolumeRow], stored["volume"])
    for diff in volume_rows(from_json(list[VolumeRow], current["volume"]), old_volume):  # the baseline as model
        if diff.verdict == FAIL:
            rows.append(VerdictRow("baseline", "volume " + diff.name, FAIL, "B", diff.measured, n=diff.n,
                                   model=diff.model, model_n=diff.model_n, measured_wire=diff.measured_wire,
                                   model_wire=diff.model_wire,
                                   detail=f"bytes or count changed since the baseline: {diff.detail}"))
    if not any(r.verdict == FAIL for r in rows):
        rows.append(VerdictRow("baseline", "volume (all op classes)", PASS, detail="identical to the baseline"))
    names = [n for n in current["times"] if all(n in run["times"] for run in stored["runs"])]
    unmeasured = drift_unmeasured(stored, current)
    for name in names:
        if unmeasured:
            rows.append(VerdictRow("baseline", name, NA, "change", detail=unmeasured))
            continue
        result = compare_samples(sessions(stored["runs"], name), current["times"][name], len(names),
                                 family_level=level)
        rows.append(judge(name, result, threshold, min_detectable))
    changed = env_changes(stored["runs"][-1]["env"], current["env"])
    if changed and any(r.verdict == FAIL for r in rows):
        rows.append(VerdictRow("baseline", "environment", FAIL, detail="changed since the baseline: " + "; ".join(changed)))
    elif changed:
        rows.append(VerdictRow("baseline", "environment", PASS, detail="changed, no effect found: " + "; ".join(changed)))
    return rows


@dataclass(frozen=True)
class BaselineRequest:
    """What a session asks of the baselines: compare against ``compare`` and/or add this run to
    ``save`` (names), under ``directory``; ``env`` and ``session_id`` tie the stored run to the
    environment and session it came from."""

    directory: str
    compare: str | None
    save: str | None
    env: dict
    session_id: str
    level: float = 1 - FAMILY_CONFIDENCE  # each case's share of the session's family-wise rate

    @property
    def wanted(self) -> bool:
        return bool(self.compare or self.save)


def handle(case, doc: RunDocument, request: BaselineRequest) -> list[VerdictRow]:
    """Compare one case and/or add it to a baseline (the pipeline calls this when a name is set)."""
    settings = case.baseline
    current = summarize(doc, request.env, request.session_id, settings.metrics if settings else ())
    spec_file = settings.file if settings else None

    rows = []

    def where(name: str, label: str) -> Path | None:
        try:
            return path_for(request.directory, name, current["env"], case.spec_name, case.id, spec_file,
                            Path(case.path).parent)
        except BaselineFileError as exc:  # a folder outside the spec's: neither read nor written
            rows.append(VerdictRow("baseline", label, FAIL, detail=str(exc)))
            return None

    if request.compare and (path := where(request.compare, f"baseline {request.compare}")) is not None:
        if not path.is_file():
            rows.append(VerdictRow("baseline", f"baseline {request.compare}", FAIL,
                                   detail=f"no baseline at {path} (save one with --llmcomm-baseline-save)"))
        else:
            threshold = settings.threshold if settings else DEFAULT_THRESHOLD
            min_detectable = settings.min_detectable if settings else None
            try:
                stored = load_baseline(path)
                if stored.get("schema") != SCHEMA:
                    raise BaselineFileError(f"baseline {path} has schema {stored.get('schema')!r}, expected "
                                            f"{SCHEMA!r}: save it again")
                rows += compare(stored, current, threshold, min_detectable, request.level)
            except BaselineFileError as exc:  # the case keeps its other rows; this one says why
                rows.append(VerdictRow("baseline", f"baseline {request.compare}", NA, detail=str(exc)))
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                rows.append(VerdictRow("baseline", f"baseline {request.compare}", NA,
                                       detail=f"baseline {path} is damaged: {type(exc).__name__}: {exc}"))
    if request.save and (path := where(request.save, f"saved to {request.save}")) is not None:
        try:
            stored = add_run(path, current)
        except BaselineFileError as exc:  # a damaged file is not overwritten: someone should look at it
            rows.append(VerdictRow("baseline", f"saved to {request.save}", FAIL, detail=f"not saved: {exc}"))
        else:
            rows.append(VerdictRow("baseline", f"saved to {request.save}", PASS,
                                   detail=f"{len(stored['runs'])} run(s) in {path}"))
    return rows
