"""The failure table: check, name, measured, model, bound, budget, verdict — plain text."""

from __future__ import annotations

HEADER = ("check", "op / metric", "measured (p50 / p99, n)", "model", "bound", "budget", "verdict")


def seconds(x) -> str:
    """A duration in the unit a person reads it in (µs, ms, s)."""
    if x is None:
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.1f}us"
    if x < 1:
        return f"{x * 1e3:.3f}ms"
    return f"{x:.3f}s"


def _value(check: str, name: str, v) -> str:
    if v is None:
        return "-"
    if isinstance(v, dict) and "change" in v:
        return f"{v['change']:+.1%}"
    if isinstance(v, dict) and "count" in v:
        return f"x{v['count']} {v['bytes']:,}B wire {v['wire_bytes']:,}B"
    if isinstance(v, dict):
        return " / ".join(_scalar(name, v.get(q)) for q in ("p50", "p99") if q in v)
    return _scalar(name, v)


def _scalar(name: str, v) -> str:
    if v is None:
        return "-"
    if name.startswith("comm_share"):
        return f"{v:.1%}"
    if name.startswith("bytes_per_token"):
        return f"{v:,.0f}B"
    return seconds(v) if isinstance(v, float) else str(v)


def cells(r: dict) -> tuple[str, ...]:
    measured = _value(r["check"], r["name"], r["measured"])
    if r.get("n"):
        measured += f" (n={r['n']})"
    if not r.get("bound"):
        bound = "-"
    elif r["check"] == "baseline":  # a confidence interval of the relative change
        bound = f"[{r['bound'][0]:+.1%}, {r['bound'][1]:+.1%}]"
    else:
        bound = f"[{seconds(r['bound'][0])}, {seconds(r['bound'][1])}]"
    return (r["check"], r["name"], measured, _value(r["check"], r["name"], r["model"]), bound,
            r.get("budget") or "-", r["verdict"].upper() + (f" ({r['detail']})" if r.get("detail") else ""))


def format_table(rows: list[dict], only_failed: bool = False) -> str:
    body = [cells(r) for r in rows if not only_failed or r["verdict"] == "fail"]
    widths = [max(len(c[i]) for c in [HEADER] + body) for i in range(len(HEADER))]
    line = lambda c: "  ".join(x.ljust(w) for x, w in zip(c, widths)).rstrip()  # noqa: E731
    return "\n".join([line(HEADER), line(tuple("-" * w for w in widths))] + [line(c) for c in body])
