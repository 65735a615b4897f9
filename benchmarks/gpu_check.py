"""What one GPU can show about NCCL timing, as one table (run by benchmarks/gpu_check.sh).

1. A one-rank NCCL case end to end: ``llmcomm run --backend nccl`` (tiny engine, 1x1), tokens
   against the same case on gloo/CPU.
2. CUDA-event vs host timing of an all_reduce on a one-rank NCCL group, three sizes: the events
   time the op on the stream; a host clock around the call times the launch; host + synchronize
   times launch + op + sync.
3. The recorder on CUDA: events per op, synchronisations during the timed loop (must be 0), added
   host cost per op (recorded vs plain, interleaved rounds), and its durations vs direct events.
4. Planted GPU delays: ``torch.cuda._sleep`` on the fitted clock, asked vs measured by events;
   ``all_reduce:delay=2ms`` and ``delay=100%`` (the model's time for the call: nothing over one
   rank) through inject + recorder, extra time over clean against what was planted.
5. Several ranks on the one GPU, for function only (benchmarks/gpu_check_shared.py): TP2, PP2,
   TP2×PP2 against gloo/CPU and the analytic volume, kernel timing of every call, the profiler
   cross-check, a rank made late; and the 8-GPU suite's weight generation, predicted.

Every figure is measured here; the "expect" column says what a healthy result looks like and the
verdict (PASS, FAIL, n/a with its reason, info) is computed from the numbers, so the table can fail.
Cheap parts run first, each under its own time limit, all within ``BUDGET_S``: a part the budget
cannot fit is n/a.  ``--dry-run`` runs the parts a CPU can (gloo in place of NCCL) and marks the
others n/a: the probe's own test runs it (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import gpu_check_shared as shared
from gpu_check_shared import check_row

BUDGET_S = 540.0  # the shell script kills the probe at 570 s: its table must be written before
ROWS: list[tuple[str, str, str, str]] = []  # check, measured, expect, verdict


def row(check: str, measured: str, expect: str, ok: bool | None) -> None:
    ROWS.append(check_row(check, measured, expect, ok))


def not_applicable(check: str, why: str) -> None:
    ROWS.append((check, why, "-", "n/a"))


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def p50(xs) -> float:
    return statistics.median(xs)


def one_rank_case(tmp: str) -> None:
    out = {}
    for backend in ("nccl", "gloo"):
        path = os.path.join(tmp, f"run-{backend}.json")
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "llmcomm_tests.commands", "run", "--engine", "tiny",
                               "--backend", backend, "--repeats", "5", "--timeout", "120", "--json", path],
                              capture_output=True, text=True, timeout=240)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            row(f"llmcomm run --backend {backend} (tiny 1x1)", f"exit {proc.returncode}",
                "exit 0", False)
            print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
            continue
        with open(path) as f:
            out[backend] = json.load(f)
        m = out[backend]["metrics"]
        row(f"llmcomm run --backend {backend} (tiny 1x1)",
            f"TTFT {m['ttft']['p50'] * 1e3:.2f} ms, TPOT {m['tpot']['p50'] * 1e3:.2f} ms, {wall:.0f} s wall",
            "runs", True)
    if len(out) == 2:
        env = out["nccl"]["env"]
        same = out["nccl"]["tokens"] == out["gloo"]["tokens"]
        row("  tokens NCCL/CUDA == gloo/CPU", f"{'same' if same else 'differ'} ({', '.join(env.get('devices', []))})",
            "same (greedy, fp32)", same)


def event_vs_host(torch, dist) -> None:
    for nbytes in (4096, 1 << 20, 64 << 20):
        x = torch.ones(nbytes // 4, device="cuda")
        for _ in range(10):
            dist.all_reduce(x)
        torch.cuda.synchronize()
        ev, launch, synced = [], [], []
        for _ in range(50):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            t0 = time.perf_counter()
            s.record()
            dist.all_reduce(x)
            e.record()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            ev.append(s.elapsed_time(e) / 1e3)
            launch.append(t1 - t0)
            synced.append(t2 - t0)
        row(f"all_reduce {nbytes} B, 1 rank: events | host call | host+sync",
            f"{us(p50(ev))} | {us(p50(launch))} | {us(p50(synced))}",
            "events <= host+sync", p50(ev) <= p50(synced) * 1.05)


def recorder_cost(torch, dist) -> None:
    from llmcomm_tests.runtime.recorder import Recorder

    x = torch.ones(1024, device="cuda")
    n, rounds = 2000, 5
    recorder = Recorder(cuda_events=True).install()
    syncs = {"n": 0}
    saved = (torch.cuda.synchronize, torch.cuda.Event.synchronize, torch.cuda.Event.elapsed_time)

    def counting(fn):
        def wrapped(*a, **k):
            syncs["n"] += 1
            return fn(*a, **k)
        return wrapped

    def timed(active: bool) -> float:
        recorder.active = active
        torch.cuda.synchronize()
        torch.cuda.synchronize, torch.cuda.Event.synchronize, torch.cuda.Event.elapsed_time = map(counting, saved)
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                dist.all_reduce(x)
            t1 = time.perf_counter()
        finally:
            torch.cuda.synchronize, torch.cuda.Event.synchronize, torch.cuda.Event.elapsed_time = saved
        recorder.active = False
        torch.cuda.synchronize()
        return (t1 - t0) / n

    plain, recorded = [], []
    for _ in range(rounds):
        plain.append(timed(False))
        recorded.append(timed(True))
    records = recorder.records
    events = sum((r.start_event is not None) + (r.end_event is not None) for r in records) / len(records)
    ops = recorder.finalize(0)
    recorder.uninstall()
    row("recorder on CUDA: events per op", f"{events:g}", "2", events == 2)
    row("recorder on CUDA: syncs in the timed loop", f"{syncs['n']}", "0", syncs["n"] == 0)
    added = p50(recorded) - p50(plain)
    row("recorder on CUDA: added host cost per op", f"{us(added)} (plain {us(p50(plain))})", "< 20 µs",
        added < 20e-6)
    durations = [float(d) for d in ops.duration_s]  # RankOps: NaN where no completion was seen
    present = [d for d in durations if d == d]
    row("recorder durations (events), 4 KiB all_reduce", f"p50 {us(p50(present))}, {len(present)}/{len(durations)} ops",
        "all present", len(present) == len(durations))


def planted_delays(torch, dist) -> None:
    from llmcomm_tests.core import call_site
    from llmcomm_tests.runtime.gpu_delay import GpuDelay
    from llmcomm_tests.runtime.faults import install_faults, parse_faults
    from llmcomm_tests.runtime.recorder import Recorder

    delay = GpuDelay(torch)
    row("torch.cuda._sleep clock (fitted)", f"{delay.clock.hz / 1e9:.3f} GHz, launch {us(delay.clock.overhead_s)}",
        "~1-2 GHz", 0.5e9 < delay.clock.hz < 3e9)
    for asked in (50e-6, 500e-6, 2e-3, 10e-3):
        got = []
        for _ in range(10):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            delay(asked)
            e.record()
            e.synchronize()
            got.append(s.elapsed_time(e) / 1e3)
        err = p50(got) / asked - 1
        row(f"GPU delay asked {asked * 1e3:g} ms", f"{p50(got) * 1e3:.4f} ms ({err:+.1%})", "within ±5 %",
            abs(err) <= 0.05)

    x = torch.ones(1 << 18, device="cuda")  # 1 MiB

    def recorded(faults: list[str]) -> list[float]:
        installed = install_faults(parse_faults(faults), cuda=True)
        recorder = Recorder(cuda_events=True).install()
        call_site.set_phase("decode", 1)
        recorder.active = True
        for _ in range(100):
            dist.all_reduce(x)
        recorder.active = False
        call_site.set_phase("none", -1)
        ops = recorder.finalize(0)
        recorder.uninstall()
        installed.uninstall()
        fired = sum(installed.fired.values())
        if faults and fired != 100:
            row(f"  {faults[0]} fired", f"{fired}", "100", False)
        return [float(d) for d in ops.duration_s]

    clean = p50(recorded([]))
    fixed = p50(recorded(["all_reduce:delay=2ms"]))
    double = p50(recorded(["all_reduce:delay=100%"]))
    err = (fixed - clean) / 2e-3 - 1
    row("all_reduce:delay=2ms (1 MiB, recorded)", f"clean {us(clean)}, faulty {us(fixed)}: +{(fixed - clean) * 1e3:.3f} ms"
        f" ({err:+.1%})", "+2 ms ±5 %", abs(err) <= 0.05)
    from llmcomm_tests.runtime.fault_spec import default_profile

    # delay=100% plants the model's transfer time of the call (runtime/fault_spec.py): over this
    # one-rank group the model transfers nothing, so it must plant nothing, after finding this
    # GPU's profile and running the whole CUDA path
    profile = default_profile(True, torch.cuda.get_device_name(), torch.cuda.device_count())
    row(f"all_reduce:delay=100% (1 MiB, 1 rank, recorded; {profile.name})", f"{(double - clean) * 1e6:+.1f} us",
        "+0 ±5 % + 5 us (a group of one)", abs(double - clean) <= 0.05 * clean + 5e-6)


def versions_and_fork_server(torch, dry: bool = False) -> None:
    """Versions, and whether a rank from the fork server starts with CUDA uninitialised (a parent
    that initialised CUDA before forking leaves its children a broken context)."""
    import platform

    import gpu_check  # the rank entry must be importable by module name, not __main__
    from llmcomm_tests.runtime.launch import launch

    nccl = "-" if dry else ".".join(map(str, torch.cuda.nccl.version()))
    row("versions", f"python {platform.python_version()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"NCCL {nccl}", "-", None)
    started_initialised = launch(gpu_check.cuda_state_at_entry, world_size=1, timeout_s=120)[0]
    row("fork server: CUDA at rank entry", "initialised" if started_initialised else "uninitialised",
        "uninitialised", not started_initialised)


def cuda_state_at_entry(ctx) -> bool:
    import torch

    return torch.cuda.is_initialized()


def llama_8b_case(tmp: str) -> None:
    """The production shape at 1x1: ``llmcomm run --engine llama-3.1-8b --dtype bf16``."""
    path = os.path.join(tmp, "run-llama.json")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "llmcomm_tests.commands", "run", "--engine", "llama-3.1-8b",
                           "--dtype", "bf16", "--backend", "nccl", "--repeats", "2", "--timeout", "300",
                           "--json", path], capture_output=True, text=True, timeout=360)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        row("llmcomm run llama-3.1-8b bf16 1x1", f"exit {proc.returncode}", "exit 0", False)
        print(proc.stdout[-2000:], proc.stderr[-2000:], file=sys.stderr)
        return
    with open(path) as f:
        m = json.load(f)["metrics"]
    row("llmcomm run llama-3.1-8b bf16 1x1", f"TTFT {m['ttft']['p50'] * 1e3:.1f} ms, TPOT "
        f"{m['tpot']['p50'] * 1e3:.2f} ms, {wall:.0f} s wall (weights generated inside)", "exit 0", True)


def write_table(lines: list[str]) -> str:
    """The table under $OUT when set (the device machine's folder that comes back), else ./gpu-check/."""
    folder = os.environ.get("OUT") or "gpu-check"
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "gpu-check.txt")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def table(title: str) -> list[str]:
    header = ("check", "measured", "expect", "verdict")
    widths = [max(len(r[i]) for r in ROWS + [header]) for i in range(4)]
    counts = {v: sum(r[3] == v for r in ROWS) for v in ("PASS", "FAIL", "n/a", "info")}
    lines = [title, ", ".join(f"{n} {v}" for v, n in counts.items())]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths))
              for r in [header, tuple("-" * w for w in widths)] + ROWS]
    return lines


class PartTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float):
    """SIGALRM after ``seconds``: a part hung in Python (a launch waiting for its ranks, a
    subprocess) raises PartTimeout, and the launcher or subprocess kills what it started."""
    def expire(signum, frame):
        raise PartTimeout(f"over its limit of {seconds:.3g} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def run_part(name: str, part, least_s: float, most_s: float, t_start: float, title: str) -> None:
    """``part()`` under a limit of ``most_s`` (less where the budget has less left), n/a where the
    budget has under ``least_s`` left; an error is the part's FAIL row.  The table is rewritten
    after every part, so a probe killed from outside still leaves the rows it measured."""
    left = BUDGET_S - (time.perf_counter() - t_start)
    if left < least_s:
        not_applicable(name, f"not run: {left:.0f} s of the probe's {BUDGET_S:.0f} s left, it needs {least_s:.0f} s")
    else:
        t0 = time.perf_counter()
        try:
            with time_limit(min(most_s, left)):
                part()
        except Exception as exc:  # one broken part must not hide the others' rows
            row(name, f"{type(exc).__name__}: {exc}"[:160], "no error", False)
        print(f"gpu_check: {name}: {time.perf_counter() - t_start:.0f} s in, this part "
              f"{time.perf_counter() - t0:.0f} s", file=sys.stderr)
    write_table(table(title))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the one GPU probe: one table (see the module's docstring)")
    parser.add_argument("--dry-run", action="store_true",
                        help="no GPU: run the parts a CPU can on gloo, the others n/a (the probe's own test)")
    dry = parser.parse_args(argv).dry_run
    try:
        import torch
    except ImportError:
        print("gpu_check: torch is not installed here: this check needs a CUDA build of torch and one GPU",
              file=sys.stderr)
        return 2

    if not dry and not torch.cuda.is_available():
        print(f"gpu_check: no CUDA GPU here (torch {torch.__version__}, torch.cuda.is_available() is False): "
              "this check needs one NVIDIA GPU and a CUDA build of torch (--dry-run: the CPU parts on gloo)",
              file=sys.stderr)
        return 2
    import torch.distributed as dist

    t_start = time.perf_counter()
    backend = "gloo" if dry else "nccl"
    if dry:
        title = f"gpu_check --dry-run on CPU (gloo in place of NCCL), torch {torch.__version__}"
    else:
        title = (f"gpu_check on {torch.cuda.get_device_name(0)}, torch {torch.__version__}, "
                 f"NCCL {'.'.join(map(str, torch.cuda.nccl.version()))}")
    gpu_only = "dry run: needs a GPU"

    def one_rank_nccl_parts() -> None:
        torch.cuda.set_device(0)
        dist.init_process_group("nccl", init_method=f"file://{tmp}/store", rank=0, world_size=1)
        try:
            for part in (event_vs_host, recorder_cost, planted_delays):
                try:
                    part(torch, dist)
                except PartTimeout:
                    raise
                except Exception as exc:  # one broken part must not hide the others' rows
                    row(part.__name__, f"{type(exc).__name__}: {exc}"[:160], "no error", False)
        finally:
            dist.destroy_process_group()

    def extend(rows_of):
        return lambda: ROWS.extend(rows_of())

    with tempfile.TemporaryDirectory(prefix="llmcomm-gpu-check-") as tmp:
        # (name, part or None where a dry run cannot, least seconds, most seconds): cheap first
        parts = [
            ("versions, fork server", (lambda: versions_and_fork_server(torch, dry)), 30, 90),
            ("weight generation", extend(shared.weight_rows), 30, 90),
            ("one rank, NCCL vs gloo", None if dry else (lambda: one_rank_case(tmp)), 60, 150),
            ("one-rank NCCL group: events, recorder, GPU delays", None if dry else one_rank_nccl_parts, 60, 150),
            ("late rank", extend(lambda: shared.late_rank_rows(backend, 90)), 40, 100),
        ]
        parts += [(f"tiny tp{tp}×pp{pp} on one GPU", extend(lambda tp=tp, pp=pp: shared.layout_rows(tp, pp, backend, 120)),
                   60, 150) for tp, pp in shared.SHARED_LAYOUTS]
        # last: the longest, and it needs the GPU to itself
        parts.append(("llmcomm run llama-3.1-8b bf16 1x1", None if dry else (lambda: llama_8b_case(tmp)), 150, 400))
        for name, part, least_s, most_s in parts:
            if part is None:
                not_applicable(name, gpu_only)
                write_table(table(title))
            else:
                run_part(name, part, least_s, most_s, t_start, title)
    lines = table(f"{title}, {time.perf_counter() - t_start:.0f} s")
    print("\n".join(lines))
    print(f"table written to {write_table(lines)}")
    return 0 if all(r[3] != "FAIL" for r in ROWS) else 1


if __name__ == "__main__":
    sys.exit(main())
