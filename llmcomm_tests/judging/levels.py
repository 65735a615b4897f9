"""One family-wise false-alarm rate per session, divided among the session's timed checks.

An unchanged suite should fail at most :data:`SESSION_LEVEL` of its runs, however many cases and
rows it holds.  The rate is split equally among the kinds of timed checks that run (latency rows
against the model; stored-baseline time rows; under ``--llmcomm-ab`` only the A/B rows), each
kind's share equally over the session's cases of that kind, and each case's share over its rows
(Bonferroni: valid whatever the rows' dependence).  A/B rows further spend their share over the
looks (judging/ab/paired.py).  Bytes and counts are exact and take no share.
"""

from __future__ import annotations

from dataclasses import dataclass

SESSION_LEVEL = 0.05


@dataclass(frozen=True)
class SessionLevels:
    """Each kind's share of the session's rate (0 when the kind does not run) and the cases it
    is shared over."""

    latency: float
    baseline: float
    ab: float
    timed_cases: int = 1  # cases with latency rows against the model
    judged_cases: int = 1  # cases that run here at all (stored-baseline and A/B rows)

    @property
    def baseline_case(self) -> float:
        return self.baseline / max(1, self.judged_cases)

    @property
    def ab_case(self) -> float:
        return self.ab / max(1, self.judged_cases)


def divide(*, ab: bool, baseline_compare: bool, timed_cases: int = 1, judged_cases: int = 1,
           session_level: float = SESSION_LEVEL) -> SessionLevels:
    """The session's shares: under A/B only A/B rows are timed; else the latency rows, and the
    stored-baseline rows when a baseline is compared, halve the rate between them."""
    if ab:
        return SessionLevels(0.0, 0.0, session_level, timed_cases, judged_cases)
    kinds = 2 if baseline_compare else 1
    return SessionLevels(session_level / kinds, session_level / kinds if baseline_compare else 0.0, 0.0,
                         timed_cases, judged_cases)
