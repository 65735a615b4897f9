"""TP/PP layouts: which rank holds what, and which layouts are impossible.

Ranks follow vLLM: global rank = stage * tp + tp_rank.  Stage 0 holds the embedding, the last
stage the final norm and LM head.  Layers are split into contiguous ranges; when L % pp != 0 the
extra layers go to the stages before the last (vLLM's ``get_pp_indices``), because the last stage
already carries the LM head.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmcomm_tests.engine.config import EngineShape


class LayoutError(ValueError):
    """A layout that cannot run this engine shape; the message is one line."""


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1

    @property
    def world_size(self) -> int:
        return self.tp * self.pp

    @property
    def kind(self) -> str:
        if self.tp > 1 and self.pp > 1:
            return "hybrid"
        if self.pp > 1:
            return "pp"
        return "tp" if self.tp > 1 else "single"

    def __str__(self) -> str:
        return f"tp{self.tp}-pp{self.pp}"

    @classmethod
    def parse(cls, text: str) -> "Layout":
        """``"4x2"`` (tp x pp) or ``"tp4-pp2"``."""
        s = text.strip().lower()
        try:
            if "x" in s:
                tp, pp = s.split("x")
                return cls(int(tp), int(pp))
            if s.startswith("tp") and "-pp" in s:
                tp, pp = s[2:].split("-pp")
                return cls(int(tp), int(pp))
        except ValueError:
            pass
        raise LayoutError(f"cannot parse layout {text!r}: expected 'TxP' such as '2x2'")

    def stage_of(self, rank: int) -> int:
        return rank // self.tp

    def tp_rank_of(self, rank: int) -> int:
        return rank % self.tp

    def rank_of(self, stage: int, tp_rank: int) -> int:
        return stage * self.tp + tp_rank

    def tp_group(self, stage: int) -> list[int]:
        return [self.rank_of(stage, r) for r in range(self.tp)]

    def stage_layers(self, n_layers: int) -> list[range]:
        """Contiguous layer ranges per stage (vLLM's split, extra layers before the last stage)."""
        base, extra = divmod(n_layers, self.pp)
        sizes = [base] * self.pp
        for i in range(2, extra + 2):
            sizes[-i] += 1
        ranges, start = [], 0
        for size in sizes:
            ranges.append(range(start, start + size))
            start += size
        return ranges

    def validate(self, shape: EngineShape, available_ranks: int | None = None) -> None:
        """Refuse a layout before launch, with a one-line reason."""
        t, p = self.tp, self.pp
        if t < 1 or p < 1:
            raise LayoutError(f"{self}: tp and pp must be >= 1")
        if shape.n_heads % t:
            raise LayoutError(f"{self}: tp={t} does not divide {shape.n_heads} attention heads")
        if shape.vocab % t:
            raise LayoutError(f"{self}: tp={t} does not divide vocab {shape.vocab} (vocab-parallel embedding)")
        if shape.ffn % t:
            raise LayoutError(f"{self}: tp={t} does not divide ffn {shape.ffn}")
        if t > shape.n_kv_heads and t % shape.n_kv_heads:
            raise LayoutError(
                f"{self}: tp={t} > {shape.n_kv_heads} KV heads and not a multiple of them (cannot replicate evenly)"
            )
        if p > shape.n_layers:
            raise LayoutError(f"{self}: pp={p} exceeds {shape.n_layers} layers")
        if available_ranks is not None and self.world_size > available_ranks:
            raise LayoutError(f"{self}: needs {self.world_size} ranks, only {available_ranks} available")


def kv_heads_of(shape: EngineShape, tp: int, tp_rank: int) -> range:
    """KV heads a TP rank holds: its q heads' KV heads (k/t each, or one replicated head if t > k)."""
    q_per_rank = shape.n_heads // tp
    group = shape.n_heads // shape.n_kv_heads  # q heads per KV head
    q_lo = tp_rank * q_per_rank
    q_hi = q_lo + q_per_rank
    return range(q_lo // group, (q_hi - 1) // group + 1)
