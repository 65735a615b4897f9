"""The order the two arms run in: seeded, balanced AB/BA pairs.

Each block of two pairs holds one AB and one BA, in a seeded random order (Chromium Pinpoint's
pairwise mode; Abedi & Brecht's randomized multiple interleaved trials): whatever favours the
first (or second) run of a pair — a warm page cache, a neighbour's burst — falls on A as often as
on B.  A pair with a failed arm is dropped and a pair of the same orientation is queued in its
place, so the kept pairs stay balanced.  The schedule (seed, every pair's order, dropped pairs) is
part of the report.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

AB, BA = "AB", "BA"


@dataclass
class Pair:
    index: int  # position in the schedule (0-based), replacements included
    order: str  # "AB" or "BA"
    kept: bool | None = None  # None until both arms ran; False when an arm failed
    error: str = ""


@dataclass
class Schedule:
    seed: int
    pairs: list[Pair] = field(default_factory=list)
    _queue: list[str] = field(default_factory=list)
    _rng: random.Random | None = None

    def __post_init__(self):
        self._rng = random.Random(self.seed)

    def next(self) -> Pair:
        """The next pair to run: a queued replacement first, else the next of a fresh block."""
        if not self._queue:
            block = [AB, BA]
            self._rng.shuffle(block)
            self._queue = block
        pair = Pair(len(self.pairs), self._queue.pop(0))
        self.pairs.append(pair)
        return pair

    def keep(self, pair: Pair) -> None:
        pair.kept = True

    def drop(self, pair: Pair, error: str) -> None:
        """An arm of ``pair`` failed: forget its times and queue a pair of the same order."""
        pair.kept, pair.error = False, error.splitlines()[0][:300] if error else "failed"
        self._queue.insert(0, pair.order)

    @property
    def kept(self) -> list[Pair]:
        return [p for p in self.pairs if p.kept]

    @property
    def dropped(self) -> list[Pair]:
        return [p for p in self.pairs if p.kept is False]

    @property
    def balanced(self) -> bool:
        kept = self.kept
        return sum(p.order == AB for p in kept) * 2 == len(kept)

    def describe(self) -> str:
        orders = " ".join(p.order if p.kept else f"({p.order} dropped)" for p in self.pairs)
        return f"seed {self.seed}: {orders}"

    def to_dict(self) -> dict:
        return {"seed": self.seed, "pairs": [{"order": p.order, "kept": p.kept, "error": p.error}
                                              for p in self.pairs],
                "kept": len(self.kept), "dropped": len(self.dropped)}
