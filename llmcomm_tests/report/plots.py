"""The HTML report's figures: matplotlib (Agg, no display) → PNG bytes, built from case results.

Each ``*_plot(items)`` takes the session's case results (``documents.CaseResult``) and returns a :class:`Plot`, or None when
the data cannot support that figure (no run, one point, no baseline rows...).  Titles say what was
chosen when the data left a choice (latency against prompt length, batch, or per layout).

Figures are built on ``matplotlib.figure.Figure`` directly (no pyplot): no global state, nothing
opens a window, and nothing leaks between reports.
"""

from __future__ import annotations

import io
from collections import defaultdict
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; a no-op if Agg is already in use

from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from llmcomm_tests.core.documents import CaseResult  # noqa: E402

DPI = 100
# One colour per op, stable across figures (ops not listed take the next free colour).
OP_COLOURS = {"all_reduce": "#1f77b4", "all_gather": "#ff7f0e", "reduce_scatter": "#2ca02c",
              "send": "#d62728", "recv": "#9467bd", "broadcast": "#8c564b", "all_to_all": "#e377c2",
              "barrier": "#7f7f7f", "gather": "#bcbd22", "scatter": "#17becf"}
_SPARE = ["#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d"]


@dataclass(frozen=True)
class Plot:
    key: str  # stable id, used as the HTML anchor
    title: str
    png: bytes
    caption: str = ""


_EXTRA: dict[str, str] = {}  # colours handed to ops outside OP_COLOURS, first come first served


def colour(op: str) -> str:
    if op in OP_COLOURS:
        return OP_COLOURS[op]
    if op not in _EXTRA:
        _EXTRA[op] = _SPARE[len(_EXTRA) % len(_SPARE)]
    return _EXTRA[op]


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _ran(items: list[CaseResult]) -> list[CaseResult]:
    return [it for it in items if it.run is not None]


def layout_of(item: CaseResult) -> str:
    if item.run is not None:
        return f"tp{item.run.case.tp}-pp{item.run.case.pp}"
    return item.case_id.split("-b")[0]


def short_label(item: CaseResult) -> str:
    """The case id (figures that mix specs prefix the spec themselves)."""
    return item.case_id


# -- volume ------------------------------------------------------------------------------------


def volume_plot(items: list[CaseResult]) -> Plot | None:
    ran = _ran(items)
    if not ran:
        return None
    specs = {it.spec for it in ran}
    labels = [(f"{it.spec}:" if len(specs) > 1 else "") + short_label(it) for it in ran]
    per_case = []
    ops: list[str] = []
    for it in ran:
        totals: dict[str, int] = defaultdict(int)
        for r in it.run.volume:
            totals[r.op] += r.wire_bytes
            if r.op not in ops:
                ops.append(r.op)
        per_case.append(totals)
    fig = Figure(figsize=(max(6.0, 0.55 * len(ran) + 2.5), 4.2))
    ax = fig.add_subplot()
    bottoms = [0.0] * len(ran)
    x = range(len(ran))
    for op in sorted(ops):
        heights = [t.get(op, 0) / 1024 for t in per_case]
        ax.bar(x, heights, bottom=bottoms, label=op, color=colour(op))
        bottoms = [b + h for b, h in zip(bottoms, heights)]
    ax.set_xticks(list(x), labels, rotation=35, ha="right", fontsize=8)
    ax.set_ylabel("wire bytes (KiB)")
    ax.set_title("Wire bytes per case, stacked by op (repetition 0, all ranks)", fontsize=10)
    if ops:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return Plot("volume", "Communication volume per layout", _png(fig),
                "Wire bytes are what crosses links (a ring all-reduce moves 2(t−1)/t of its buffer per rank); "
                "summed over ranks for one timed repetition.")


# -- latency -----------------------------------------------------------------------------------


def _workload(item: CaseResult) -> dict:
    case = item.run.case
    return {"batch": case.batch, "prompt_len": case.prompt_len, "gen_len": case.gen_len}


def latency_axis(items: list[CaseResult]) -> tuple[str | None, list[str]]:
    """(x variable, other workload fields that vary and so split the series).

    The x variable is ``prompt_len`` when some layout ran several prompt lengths, else ``batch`` when
    some layout ran several batch sizes, else None (one bar per case)."""
    ran = _ran(items)
    for field in ("prompt_len", "batch", "gen_len"):
        by_layout: dict[str, set] = defaultdict(set)
        for it in ran:
            by_layout[(it.spec, layout_of(it))].add(_workload(it)[field])
        if any(len(v) > 1 for v in by_layout.values()):
            others = [f for f in ("prompt_len", "batch", "gen_len") if f != field
                      and len({_workload(it)[f] for it in ran}) > 1]
            return field, others
    return None, []


_NAMES = {"prompt_len": "prompt length (tokens)", "batch": "batch size", "gen_len": "generated tokens"}
_SHORT = {"prompt_len": "s", "batch": "b", "gen_len": "g"}


def latency_plot(items: list[CaseResult]) -> Plot | None:
    ran = [it for it in _ran(items) if it.run.metrics.ttft.n]
    if not ran:
        return None
    x_field, others = latency_axis(ran)
    specs = {it.spec for it in ran}
    fig = Figure(figsize=(11, 4.2))
    axes = [fig.add_subplot(1, 2, i + 1) for i in range(2)]
    metrics = (("ttft", "TTFT"), ("tpot", "TPOT"))
    if x_field is None:
        labels = [(f"{it.spec}:" if len(specs) > 1 else "") + short_label(it) for it in ran]
        for ax, (key, name) in zip(axes, metrics):
            p50 = [getattr(it.run.metrics, key).p50 * 1e3 for it in ran]
            p99 = [getattr(it.run.metrics, key).p99 * 1e3 for it in ran]
            ax.bar(range(len(ran)), p50, color="#1f77b4", label="p50")
            ax.scatter(range(len(ran)), p99, color="#d62728", marker="_", s=200, label="p99", zorder=3)
            ax.set_xticks(range(len(ran)), labels, rotation=35, ha="right", fontsize=8)
            ax.set_ylabel(f"{name} (ms)")
            ax.set_title(f"{name} per case (one workload per layout: bars, not a sweep)", fontsize=10)
            ax.legend(fontsize=8)
            ax.grid(axis="y", alpha=0.3)
        title = "Latency per layout"
    else:
        series: dict[str, list[tuple]] = defaultdict(list)
        for it in ran:
            w = _workload(it)
            name = (f"{it.spec}:" if len(specs) > 1 else "") + layout_of(it)
            name += "".join(f" {_SHORT[f]}{w[f]}" for f in others)
            series[name].append((w[x_field], it.run.metrics))
        for ax, (key, name) in zip(axes, metrics):
            for label, points in sorted(series.items()):
                points.sort(key=lambda p: p[0])
                xs = [p[0] for p in points]
                p50 = [getattr(p[1], key).p50 * 1e3 for p in points]
                p99 = [getattr(p[1], key).p99 * 1e3 for p in points]
                line = ax.plot(xs, p50, marker="o", label=label)[0]
                ax.fill_between(xs, p50, p99, color=line.get_color(), alpha=0.12)
            ax.set_xticks(sorted({p[0] for points in series.values() for p in points}))
            ax.set_xlabel(_NAMES[x_field])
            ax.set_ylabel(f"{name} p50 (ms), shaded to p99")
            ax.set_title(f"{name} vs {_NAMES[x_field]}, one line per layout", fontsize=10)
            ax.legend(fontsize=8)
            ax.grid(alpha=0.3)
        title = f"Latency vs {_NAMES[x_field].split(' (')[0]}"
    fig.tight_layout()
    return Plot("latency", title, _png(fig),
                "TTFT: prompt in → first token out; TPOT: (E2E − TTFT)/(gen_len − 1). Medians over the timed "
                "repetitions" + ("." if x_field else "; red ticks mark p99."))


# -- measured vs predicted --------------------------------------------------------------------


def op_class_points(item: CaseResult) -> list[dict]:
    """One point per op class of a case: measured per-op median, model, bound interval (or None).

    From the case's latency verdict rows with a band (the transfer centres) when the latency check ran
    (what was gated), else from the prediction's per-op-class latency and the run's op summaries."""
    rows = [r for r in item.verdict.rows if r.check == "latency" and r.model and r.measured and r.low is not None]
    if rows:
        return [{"op": r.name.split()[0], "name": r.name, "measured": r.measured, "model": r.model,
                 "bound": (r.low, r.high) if r.low is not None else None} for r in rows]
    if not item.prediction.latency or item.run is None:
        return []
    measured: dict[tuple, float] = {}
    for s in item.run.ops:
        if s.latency is not None:
            key = (s.op, s.phase, s.site)
            measured[key] = max(measured.get(key, 0.0), s.latency.p50)
    points = []
    for p in item.prediction.latency:
        m = measured.get((p.op, p.phase, p.site))
        if m and p.count:
            points.append({"op": p.op, "name": f"{p.op} {p.phase} {p.site}", "measured": m, "model": p.per_op_s,
                           "bound": (p.lower_s / p.count, p.upper_s / p.count)})
    return points


def accuracy_plot(items: list[CaseResult]) -> Plot | None:
    points = [pt for it in items for pt in op_class_points(it)
              if pt["measured"] > 0 and pt["model"] and pt["model"] > 0]
    if not points:
        return None
    fig = Figure(figsize=(6.5, 5.2))
    ax = fig.add_subplot()
    seen = set()
    for pt in points:
        c = colour(pt["op"])
        if pt["bound"]:
            lo, hi = pt["bound"]
            ax.errorbar([pt["model"]], [pt["model"]], yerr=[[max(pt["model"] - lo, 0)], [max(hi - pt["model"], 0)]],
                        fmt="none", ecolor=c, alpha=0.35, capsize=3, lw=1)
        ax.scatter([pt["model"]], [pt["measured"]], color=c, s=22, zorder=3,
                   label=None if pt["op"] in seen else pt["op"])
        seen.add(pt["op"])
    values = [v for pt in points for v in (pt["measured"], pt["model"], *(pt["bound"] or ())) if v and v > 0]
    lo, hi = min(values) / 2, max(values) * 2
    ax.plot([lo, hi], [lo, hi], color="black", lw=0.8, ls="--", label="measured = model")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("model time per op (s)")
    ax.set_ylabel("measured time per op, median (s)")
    ax.set_title(f"Measured vs predicted per op class ({len(points)} classes, all cases)", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3, which="both")
    return Plot("accuracy", "Measured vs predicted per op class", _png(fig),
                "One dot per (case, op, phase, site class). The faint vertical bar at each model value is the "
                "model's two-sided bound: a dot inside it is within the model.")


# -- wait versus transfer ----------------------------------------------------------------------

MAX_WAIT_PANELS = 4


def wait_plot(items: list[CaseResult]) -> Plot | None:
    """Per layout (its first case), per (op, phase, site class): the mean wait for the last peer
    and the mean transfer after it, stacked: stragglers and the pipeline bubble against the link."""
    chosen: dict[str, CaseResult] = {}
    for it in _ran(items):
        if any(s.wait is not None for s in it.run.ops):
            chosen.setdefault(f"{it.spec}:{layout_of(it)}", it)
    panels = list(chosen.values())[:MAX_WAIT_PANELS]
    if not panels:
        return None
    fig = Figure(figsize=(11, 1.2 + sum(0.28 * _wait_rows(it) + 0.8 for it in panels)))
    grid = fig.add_gridspec(len(panels), 1, height_ratios=[_wait_rows(it) + 2 for it in panels])
    for i, it in enumerate(panels):
        ax = fig.add_subplot(grid[i])
        per_site: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])  # name -> wait, transfer, calls
        for s in it.run.ops:
            if s.wait is None or s.transfer is None:
                continue
            acc = per_site[f"{s.op} {s.phase} {s.site}" + (f" ({s.role})" if s.role else "")]
            acc[0] += s.wait.total_s
            acc[1] += s.transfer.total_s
            acc[2] += s.wait.count
        names = sorted(per_site)
        wait = [per_site[n][0] / per_site[n][2] * 1e3 for n in names]
        transfer = [per_site[n][1] / per_site[n][2] * 1e3 for n in names]
        y = range(len(names))
        ax.barh(y, wait, color="#ff7f0e", label="wait for the last peer")
        ax.barh(y, transfer, left=wait, color="#1f77b4", label="transfer after it")
        ax.set_yticks(list(y), names, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{short_label(it)}: mean per call", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8, loc="lower right")
        if i == len(panels) - 1:
            ax.set_xlabel("ms per call")
    fig.tight_layout()
    return Plot("wait", "Wait versus transfer per site", _png(fig),
                "Each call's time split at the last peer's arrival (ranks share the host's monotonic clock): the "
                "wait is the schedule — stragglers, the pipeline bubble — and the transfer is what the α-β model "
                "describes and the latency check judges.")


def _wait_rows(item: CaseResult) -> int:
    return len({(s.op, s.phase, s.site, s.role) for s in item.run.ops if s.wait is not None})


# -- timeline ----------------------------------------------------------------------------------

MAX_TIMELINES = 6


def timeline_step(item: CaseResult) -> tuple[int, int] | None:
    """(repetition, decode step) the run document's timeline holds."""
    timeline = item.run.timeline if item.run is not None else []
    return (timeline[0].rep, timeline[0].step) if timeline else None


def timeline_plot(items: list[CaseResult]) -> Plot | None:
    """One panel per layout (its first case with decode ops): one row per rank, a bar per op."""
    chosen: dict[str, CaseResult] = {}
    for it in _ran(items):
        key = f"{it.spec}:{layout_of(it)}"
        if key not in chosen and timeline_step(it) is not None:
            chosen[key] = it
    chosen_items = list(chosen.values())[:MAX_TIMELINES]
    if not chosen_items:
        return None
    heights = [max(1, it.run.case.world_size) * 0.45 + 1.0 for it in chosen_items]
    fig = Figure(figsize=(11, sum(heights) + 0.4))
    grid = fig.add_gridspec(len(chosen_items), 1, height_ratios=heights)
    seen = set()
    for i, it in enumerate(chosen_items):
        ax = fig.add_subplot(grid[i])
        rep, step = timeline_step(it)
        ops = it.run.timeline
        t0 = min(op.start_ns for op in ops)
        ranks = sorted({op.rank for op in ops} | set(range(it.run.case.world_size)))
        bars: dict[tuple[str, int], list[tuple[float, float]]] = defaultdict(list)  # (op, rank) -> (left, width)
        for op in ops:
            width = max((op.duration_s or 0.0) * 1e3, 1e-3)  # an op that never ended: a hairline
            bars[(op.op, op.rank)].append(((op.start_ns - t0) / 1e6, width))
        for (name, rank), spans in sorted(bars.items()):
            ax.barh([rank] * len(spans), [w for _, w in spans], left=[x for x, _ in spans], height=0.6,
                    color=colour(name), edgecolor="black", linewidth=0.3, label=None if name in seen else name)
            seen.add(name)
        ax.set_yticks(ranks, [f"rank {r}" for r in ranks], fontsize=8)
        ax.set_ylim(max(ranks) + 0.6, min(ranks) - 0.6)
        ax.set_title(f"{short_label(it)}: decode step {step}, repetition {rep} ({len(ops)} ops)", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        if i == len(chosen_items) - 1:
            ax.set_xlabel("ms since the step's first op (host monotonic clock)")
    handles, labels = [], []
    for ax in fig.axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if handles:
        fig.axes[0].legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    fig.tight_layout()
    return Plot("timeline", "Per-rank timeline of one decode step", _png(fig),
                "Bars span each op's recorded start to end on its rank; gaps are compute. Ranks share the host's "
                "monotonic clock only when they run on one host.")


# -- baseline ----------------------------------------------------------------------------------


_VERDICT_COLOURS = {"pass": "#2ca02c", "fail": "#d62728", "n/a": "#7f7f7f"}
HEADLINE = ("ttft", "tpot", "e2e")


def baseline_plot(items: list[CaseResult]) -> Plot | None:
    """Current / baseline ratio with its confidence interval (log axis): TTFT, TPOT, E2E of every case and
    every failing row (op classes included); the full list is the report's baseline table."""
    points = []
    for it in items:
        for r in it.verdict.rows:
            if r.check != "baseline" or r.unit != "change" or r.measured is None or r.measured <= -1 \
                    or (r.name not in HEADLINE and r.verdict != "fail"):
                continue
            ci = (r.low, r.high) if r.low is not None else None
            points.append((f"{short_label(it)}  {r.name}", r.measured, ci, r.verdict, r.budget))
    if not points:
        return None
    fig = Figure(figsize=(9.5, max(2.6, 0.3 * len(points) + 1.3)))
    ax = fig.add_subplot()
    clip = lambda x: min(max(x, 1e-2), 1e2)  # noqa: E731  (a CI past 100x says nothing more)
    for y, (_, change, ci, verdict, _) in enumerate(points):
        c = _VERDICT_COLOURS.get(verdict, "#7f7f7f")
        ratio = clip(1 + change)
        if ci:
            lo, hi = clip(1 + ci[0]), clip(1 + ci[1])
            ax.errorbar([ratio], [y], xerr=[[max(ratio - lo, 0)], [max(hi - ratio, 0)]], fmt="none", ecolor=c,
                        alpha=0.5, capsize=3)
        ax.scatter([ratio], [y], color=c, s=30, zorder=3)
    thresholds = {p[4] for p in points if p[4] is not None}
    ax.axvline(1, color="black", lw=0.8)
    if len(thresholds) == 1:
        t = thresholds.pop()
        ax.axvline(1 + t, color="#d62728", lw=0.8, ls="--", label=f"slower by {t:.0%}: regression")
        ax.axvline(max(1 - 2 * t, 1e-2), color="#7f7f7f", lw=0.8, ls=":", label=f"faster by {2 * t:.0%}: stale?")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ratio_text = FuncFormatter(lambda x, _: f"{x:g}×")
    ax.xaxis.set_major_formatter(ratio_text)
    ax.xaxis.set_minor_formatter(ratio_text)
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_yticks(range(len(points)), [p[0] for p in points], fontsize=8)
    ax.set_ylim(len(points) - 0.5, -0.5)
    ax.set_xlabel("current / baseline (log scale); bars: the comparison's confidence interval")
    ax.set_title("Baseline vs current: TTFT, TPOT, E2E per case and every failing row "
                 "(green pass, red fail, grey n/a)", fontsize=10)
    ax.grid(axis="x", alpha=0.3, which="both")
    fig.tight_layout()
    return Plot("baseline", "Baseline vs current", _png(fig),
                "Ratio of this run to the stored baseline, with the interval the baseline gate computed. "
                "Every compared row, op classes included, is in the baseline table above.")


def all_plots(items: list[CaseResult]) -> list[Plot]:
    """Every figure the data supports, in report order.  A figure that fails to build is left out
    (the report must still be written), with its error as the caption of an empty placeholder."""
    out = []
    for build in (volume_plot, latency_plot, accuracy_plot, wait_plot, timeline_plot, baseline_plot):
        try:
            plot = build(items)
        except Exception as exc:  # noqa: BLE001 - a figure must never cost the whole report
            plot = Plot(build.__name__.removesuffix("_plot"), f"{build.__name__} failed", b"",
                        f"could not draw this figure: {type(exc).__name__}: {exc}")
        if plot is not None:
            out.append(plot)
    return out
