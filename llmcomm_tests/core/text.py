"""Numbers and tables as a person reads them: one formatter per unit and one plain-text table, which
every CLI command, verdict table, detail and report uses."""

from __future__ import annotations


def seconds(x) -> str:
    """A duration in the unit a person reads it in (µs, ms, s)."""
    if x is None:
        return "-"
    if x < 1e-3:
        return f"{x * 1e6:.1f}us"
    if x < 1:
        return f"{x * 1e3:.3f}ms"
    return f"{x:.3f}s"


def nbytes(x) -> str:
    """Bytes in binary units (``1.50 MiB``)."""
    if x is None:
        return "-"
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(x) >= size:
            return f"{x / size:,.2f} {unit}"
    return f"{x:,.0f} B"


def fmt(value, unit: str) -> str:
    """``value`` in ``unit``: ``s`` → µs/ms/s, ``B`` → exact bytes, ``fraction`` → %, ``change`` → ±%."""
    if value is None:
        return "-"
    if unit == "s":
        return seconds(value)
    if unit == "B":
        return f"{value:,.0f}B"
    if unit == "fraction":
        return f"{value:.1%}"
    if unit == "change":
        return f"{value:+.1%}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def text_table(header, rows, left: int | None = None) -> str:
    """Columns under a dashed rule: the first ``left`` columns left-aligned (text), the rest right-aligned
    (numbers); all left-aligned when ``left`` is None."""
    left = len(header) if left is None else left
    cells = [[str(x) for x in header]] + [[str(x) for x in row] for row in rows]
    widths = [max(len(row[j]) for row in cells) for j in range(len(header))]

    def line(row):
        return "  ".join(x.ljust(w) if j < left else x.rjust(w) for j, (x, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths).rstrip()] + [line(r) for r in cells[1:]])
