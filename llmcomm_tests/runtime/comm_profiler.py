"""Rank side of kernel timing: the recorded repetitions under ``torch.profiler``, each rank's trace
exported and read back by ``kernel_timing`` (the parser a user's own traces go through too).

NCCL: device activity only (``ProfilerActivity.CUDA``), so the trace holds kernels and stays small.
gloo: the ``gloo:*`` events are CPU ops.  Only the recorded repetitions are profiled, one profiler
session each, so the kernels of the barrier between repetitions and of the clean repetitions
never enter the count.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from llmcomm_tests.runtime import kernel_timing

def wanted(mode: str, backend: str) -> bool:
    """``auto``: the kernels on NCCL (the host clock sees launches), the host clock on gloo."""
    return mode == "profiler" or (mode == "auto" and backend == "nccl")


class CommProfiler:
    """``with profiler.repetition(): ...`` once per recorded repetition; ``kernels`` then holds the
    rank's communication kernels of all of them, in launch order."""

    def __init__(self, backend: str, keep_dir: str | None = None, rank: int = 0):
        self.backend = backend
        self.keep_dir = keep_dir  # where the traces stay (else a temporary folder, removed)
        self.rank = rank
        self.kernels: list[kernel_timing.CommKernel] = []
        self._count = 0

    @contextlib.contextmanager
    def repetition(self):
        from torch.profiler import ProfilerActivity, profile

        activities = [ProfilerActivity.CUDA] if self.backend == "nccl" else [ProfilerActivity.CPU]
        with profile(activities=activities) as prof:
            yield
        with contextlib.ExitStack() as stack:
            folder = self.keep_dir or stack.enter_context(tempfile.TemporaryDirectory())
            path = os.path.join(folder, f"rank{self.rank}-rep{self._count}.json")
            prof.export_chrome_trace(path)
            self.kernels += kernel_timing.comm_kernels(kernel_timing.load_trace(path))
        self._count += 1
