"""A planted delay on the GPU stream: ``torch.cuda._sleep`` spins a kernel for a number of GPU
clock cycles; this module finds cycles per second on the device in use, so a delay asked in
seconds lands on the stream that runs the collective (a host sleep would not delay an NCCL op: its
``wait`` does not block the host).

The clock is fitted, not read from the datasheet: boost clocks move.  Each size N is spun a few
times between CUDA events; T(N) = a + N / f by least squares over the medians gives the clock f
and the launch overhead a, and a delay of s seconds spins (s − a)·f cycles.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable

SIZES = (0, 100_000, 1_000_000, 4_000_000, 16_000_000)  # cycles: launch only, ~50 µs … ~10 ms at 1.5-2 GHz
REPEATS = 5


@dataclass(frozen=True)
class ClockFit:
    hz: float  # GPU cycles per second as _sleep spins them
    overhead_s: float  # what a zero-cycle _sleep costs on the stream
    points: tuple  # (cycles, median seconds)

    def cycles(self, seconds: float) -> int:
        return max(0, round((seconds - self.overhead_s) * self.hz))

    def predict(self, cycles: int) -> float:
        return self.overhead_s + cycles / self.hz


def fit_clock(measure: Callable[[int], float], sizes=SIZES, repeats: int = REPEATS) -> ClockFit:
    """``measure(cycles)`` → seconds one ``_sleep(cycles)`` took on the stream (CUDA events)."""
    points = tuple((n, statistics.median(measure(n) for _ in range(repeats))) for n in sizes)
    # Least squares on relative error (weights 1/T²): the launch-only point sets the overhead, the
    # long spins the clock; plain least squares would let the 10 ms point's jitter swamp a 5 µs intercept.
    w = [1.0 / max(y, 1e-12) ** 2 for _, y in points]
    sw = sum(w)
    mx = sum(wi * x for wi, (x, _) in zip(w, points)) / sw
    my = sum(wi * y for wi, (_, y) in zip(w, points)) / sw
    sxx = sum(wi * (x - mx) ** 2 for wi, (x, _) in zip(w, points))
    slope = sum(wi * (x - mx) * (y - my) for wi, (x, y) in zip(w, points)) / sxx if sxx else 0.0
    if slope <= 0:
        raise RuntimeError(f"torch.cuda._sleep did not take longer for more cycles: {points}")
    return ClockFit(hz=1.0 / slope, overhead_s=max(0.0, my - slope * mx), points=points)


def event_timer(torch) -> Callable[[int], float]:
    """Seconds one ``torch.cuda._sleep(n)`` takes between two events on the current stream."""

    def measure(n: int) -> float:
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        torch.cuda._sleep(int(n))
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    return measure


class GpuDelay:
    """``delay(seconds)`` enqueues a spin of that length on the current CUDA stream (no host wait)."""

    def __init__(self, torch, clock: ClockFit | None = None):
        self.torch = torch
        if clock is None:
            measure = event_timer(torch)
            measure(SIZES[0])  # first launch loads the kernel
            clock = fit_clock(measure)
        self.clock = clock

    def __call__(self, seconds: float) -> None:
        cycles = self.clock.cycles(seconds)
        if cycles > 0:
            self.torch.cuda._sleep(cycles)
