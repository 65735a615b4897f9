"""One case through both arms: the A/B verdict rows.

``compare_arms`` is the loop (schedule → both arms → volume exactly → paired statistics →
stop?); ``gate_case`` is what the pytest pipeline calls for a case under ``--llmcomm-ab``:
arm A is this session's interpreter, arm B the one named by the option.  Planted faults
(``--llmcomm-inject``) go to arm B only: planted in both, an A/B comparison could not see them.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field

from llmcomm_tests.core.documents import FAIL, PASS, VerdictRow, to_json
from llmcomm_tests.judging.ab.arms import Arm, ArmEnv, ArmError, env_difference
from llmcomm_tests.judging.ab.observe import ArmRun
from llmcomm_tests.judging.ab.paired import (DEFAULT_THRESHOLD, FAMILY_LEVEL, MIN_PAIRS, LookPlan, PairedChange,
                                              paired_change, should_stop)
from llmcomm_tests.judging.ab.schedule import Schedule

DEFAULT_MAX_PAIRS = 40
MAX_FAILED_PAIRS = 3


@dataclass
class ABResult:
    rows: list[VerdictRow]
    env_a: ArmEnv
    env_b: ArmEnv
    schedule: dict
    changes: list[PairedChange] = field(default_factory=list)
    pairs: int = 0
    stopped: str = ""
    wall_s: float = 0.0
    error: str | None = None
    looks: int = 0  # how many times the intervals were computed (each spends part of the level)
    plan: LookPlan = field(default_factory=LookPlan)

    @property
    def failed(self) -> list[VerdictRow]:
        return [r for r in self.rows if r.verdict == FAIL]

    def report(self) -> dict:
        """What the JSON/HTML report keeps of the comparison."""
        return {"env_a": to_json(self.env_a), "env_b": to_json(self.env_b),
                "difference": env_difference(self.env_a, self.env_b), "schedule": self.schedule,
                "pairs": self.pairs, "stopped": self.stopped, "wall_s": self.wall_s,
                "changes": to_json(self.changes), "error": self.error, "looks": self.looks,
                "level": self.plan.level, "sequential": self.plan.sequential}


# -- arm servers, one per (role, interpreter), kept for the session ------------------------------

_arms: dict[tuple[str, str], Arm] = {}
_owners: list = []  # who closes the servers: a pytest session's resources (suite/resources.py)


def arm(name: str, python: str, owner=None) -> Arm:
    """The running server of this role and interpreter, started on first use.  ``owner`` (with a
    ``callback(close)`` method) closes every server when it closes; without one, the caller calls
    ``close_arms``."""
    if owner is not None and not any(o is owner for o in _owners):
        _owners.append(owner)
        owner.callback(close_arms)
    key = (name, python)
    if key not in _arms or _arms[key].proc.poll() is not None:
        _arms[key] = Arm(name, python)
    return _arms[key]


def close_arms() -> None:
    """Stop every arm server (and so its fork server and ranks)."""
    servers = list(_arms.values())
    _arms.clear()
    for server in servers:  # all quit at once, then each is waited for
        server.request_quit()
    for server in servers:
        server.close()


# -- the loop -------------------------------------------------------------------------------------


def compare_arms(cfg_a, cfg_b, arm_a: Arm, arm_b: Arm, *, threshold: float = DEFAULT_THRESHOLD,
                 max_pairs: int = DEFAULT_MAX_PAIRS, min_pairs: int = MIN_PAIRS, seed: int = 0,
                 backend: str = "gloo", timeout_s: float = 300.0, available_ranks: int | None = None,
                 level: float = FAMILY_LEVEL, sequential: bool = True) -> ABResult:
    """``level``: the case's share of the session's family-wise rate (two-sided), spent over the
    looks unless ``sequential`` is False (paired.LookPlan)."""
    t0 = time.perf_counter()
    schedule = Schedule(seed)
    arms, cfgs = {"A": arm_a, "B": arm_b}, {"A": cfg_a, "B": cfg_b}
    runs: dict[str, list[ArmRun]] = {"A": [], "B": []}
    changes: list[PairedChange] = []
    stopped, error = "", None
    min_pairs = max(min_pairs, 2)
    max_pairs = max(max_pairs, min_pairs)
    plan, looks = LookPlan(level, max_pairs, sequential), []
    volume_rows: list[VerdictRow] | None = None
    while len(schedule.kept) < max_pairs:
        pair = schedule.next()
        try:
            got = {name: arms[name].run(cfgs[name], backend, timeout_s, available_ranks) for name in pair.order}
        except ArmError as exc:
            schedule.drop(pair, f"arm failed: {exc}")
            if len(schedule.dropped) > MAX_FAILED_PAIRS:
                error = f"{len(schedule.dropped)} pairs had a failed arm; the last: {exc}"
                stopped = "too many failed pairs"
                break
            continue
        schedule.keep(pair)
        for name in "AB":
            runs[name].append(got[name])
        if volume_rows is None:
            volume_rows = compare_volume(runs["A"][0], runs["B"][0])
        n = len(schedule.kept)
        # Bytes and counts are exact: once both orders ran (an AB and a BA pair), a difference is the
        # verdict, and more pairs would only spend minutes on timing rows that cannot change it
        if schedule.balanced and any(r.verdict == FAIL for r in volume_rows):
            stopped = "bytes or counts differ between the arms"
            break
        if n < min_pairs or not schedule.balanced:
            continue
        looks.append(n)
        changes = paired_changes(runs["A"], runs["B"], plan, looks)
        stopped = should_stop(changes, threshold) or ""
        if stopped:
            break
    else:
        stopped = f"pair budget spent ({max_pairs})"
    if runs["A"] and not changes and len(schedule.kept) >= 2:  # never looked: this is the only look
        looks.append(len(schedule.kept))
        changes = paired_changes(runs["A"], runs["B"], plan, looks)
    result = ABResult([], arm_a.env, arm_b.env, schedule.to_dict(), changes, len(schedule.kept), stopped,
                      time.perf_counter() - t0, error, len(looks), plan)
    result.rows = verdict_rows(result, volume_rows or [], runs, threshold, schedule)
    return result


def paired_changes(runs_a: list[ArmRun], runs_b: list[ArmRun], plan: LookPlan | None = None,
                   looks: list[int] | None = None) -> list[PairedChange]:
    """Every metric's change at the last of ``looks`` (pair counts), at the level ``plan`` gives it."""
    plan = plan or LookPlan()
    metrics = [m for m in runs_a[0].centres
               if all(m in r.centres for r in runs_a) and all(m in r.centres for r in runs_b)]
    looks = looks or [len(runs_a)]
    level, share = plan.look_level(looks, len(metrics)), plan.metric_level(len(metrics))
    return [paired_change(m, [b.centres[m] - a.centres[m] for a, b in zip(runs_a, runs_b)], level=level,
                          futility_level=share)
            for m in metrics]


def compare_volume(a: ArmRun, b: ArmRun) -> list[VerdictRow]:
    """Calls and bytes per (op, phase, site class): exactly equal, or a row naming the difference."""
    rows_a, rows_b = {r.key: r for r in a.volume}, {r.key: r for r in b.volume}
    out = []
    for key in sorted(set(rows_a) | set(rows_b)):
        ra, rb = rows_a.get(key), rows_b.get(key)
        ca, cb = (ra.count if ra else 0), (rb.count if rb else 0)
        ba, bb = (ra.bytes if ra else 0), (rb.bytes if rb else 0)
        if (ca, ba) != (cb, bb):
            out.append(VerdictRow("ab", f"ab volume {' '.join(key)}", FAIL, unit="count", measured=cb, model=ca,
                                  detail=f"calls {ca} → {cb}, bytes {ba} → {bb} (A → B, one repetition, all ranks)"))
    if not out:
        total = sum(r.bytes for r in a.volume)
        out.append(VerdictRow("ab", "ab volume (all op classes)", PASS, unit="B", measured=total, model=total,
                              detail=f"identical in both arms: {len(a.volume)} classes"))
    for name, run in (("A", a), ("B", b)):
        if not run.volume_stable:
            out.append(VerdictRow("ab", f"ab volume stable in arm {name}", FAIL,
                                  detail="bytes or counts differ between repetitions of one run"))
    return out


def verdict_rows(result: ABResult, volume_rows: list[VerdictRow], runs, threshold: float,
                 schedule: Schedule) -> list[VerdictRow]:
    rows: list[VerdictRow] = []
    for name, env in (("A", result.env_a), ("B", result.env_b)):
        if env.rank_executable != env.executable:
            rows.append(VerdictRow("ab", f"ab arm {name} interpreter", FAIL,
                                   detail=f"ranks ran {env.rank_executable}, not the arm's {env.executable}"))
    if result.error:
        rows.append(VerdictRow("ab", "ab run", FAIL, detail=result.error))
    # An unstable volume inside an arm makes run 0 unrepresentative: compare every run with its arm's first.
    for name in "AB":
        first = runs[name][0].volume if runs[name] else None
        if first is not None and any(r.volume != first for r in runs[name][1:]):
            rows.append(VerdictRow("ab", f"ab volume arm {name} between runs", FAIL,
                                   detail="bytes or counts differ between runs of one environment"))
    rows += volume_rows
    for c in result.changes:
        verdict = FAIL if c.slower(threshold) else PASS
        text = c.describe()
        if verdict == FAIL:
            text = f"slower in B: {text}"
        elif c.high < 0 and c.change < -threshold:
            text = f"faster in B: {text}"
        rows.append(VerdictRow("ab", f"ab {c.metric}", verdict, unit="change", measured=c.change, n=c.n,
                               low=c.low, high=c.high, budget=threshold, budget_label="change", detail=text,
                               level=c.level, detectable=c.mdc))
    failed = any(r.verdict == FAIL for r in rows)
    sched = (f"{schedule.describe()}; {result.pairs} pairs kept, {len(schedule.dropped)} dropped; "
             f"stopped: {result.stopped}; {result.plan.describe(result.looks)}; {result.wall_s:.0f} s")
    head = [VerdictRow("ab", "ab environment", FAIL if failed else PASS,
                       detail=f"{env_difference(result.env_a, result.env_b)}"),
            VerdictRow("ab", "ab schedule", PASS, n=result.pairs, detail=sched)]
    return head + rows


# -- the pytest pipeline's entry ------------------------------------------------------------------


@dataclass(frozen=True)
class ABRequest:
    """How a session gates its cases: arm B's interpreter (arm A is this one), at most ``pairs``
    seeded AB/BA pairs, and how each arm launches a run."""

    arm_b: str
    pairs: int
    seed: int
    backend: str
    timeout_s: float
    available_ranks: int
    owner: object = None
    level: float = FAMILY_LEVEL  # each case's share of the session's family-wise rate (suite/session.py)  # closes the arm servers with the session (``callback(close)``); None: close_arms()


def gate_case(case, cfg, request: ABRequest) -> ABResult:
    """The A/B comparison of one spec case (``cfg``: its run config, as the pipeline builds it):
    arm A this interpreter, arm B ``request.arm_b``."""
    cfg_b = cfg
    cfg_a = dataclasses.replace(cfg_b, inject=())  # planted faults: arm B only
    settings = getattr(case, "baseline", None)
    threshold = settings.threshold if settings is not None and settings.threshold else DEFAULT_THRESHOLD
    try:
        arm_a, arm_b = arm("A", sys.executable, request.owner), arm("B", request.arm_b, request.owner)
    except ArmError as exc:
        return ABResult([VerdictRow("ab", "ab arms", FAIL, detail=str(exc).splitlines()[0])], ArmEnv(sys.executable),
                        ArmEnv(request.arm_b), {}, error=str(exc))
    return compare_arms(cfg_a, cfg_b, arm_a, arm_b, threshold=threshold, max_pairs=request.pairs,
                        seed=request.seed, backend=request.backend, timeout_s=request.timeout_s,
                        available_ranks=request.available_ranks, level=request.level)
