"""pytest-benchmark where it fits: the recorder's own hot path, in one process.

    pytest benchmarks/test_recorder_hook.py --benchmark-only [--benchmark-autosave | --benchmark-compare]

pytest-benchmark cannot time the SLO cases (their latencies are measured inside rank processes, and
it disables itself under xdist), but the cost the recorder adds to every op is a single-process
loop — exactly what it calibrates, summarises and compares across saved runs, so an upgrade that
slows our own hook shows up here.  A one-rank gloo group makes the all-reduce itself almost free.
"""

import tempfile

import pytest
import torch
import torch.distributed as dist

from llmcomm_tests.runtime.recorder import Recorder


@pytest.fixture(scope="module")
def group():
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tempfile.mktemp()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.fixture
def recorder(group):
    rec = Recorder().install()
    yield rec
    rec.uninstall()


def test_all_reduce_plain(benchmark, group):
    x = torch.ones(16)
    benchmark(dist.all_reduce, x)


def test_all_reduce_recorder_installed_inactive(benchmark, recorder):
    x = torch.ones(16)
    benchmark(dist.all_reduce, x)


def test_all_reduce_recorded(benchmark, recorder):
    x = torch.ones(16)
    recorder.active = True
    benchmark(dist.all_reduce, x)
    assert recorder.records and recorder.records[-1].op == "all_reduce"


def test_finalize_per_record(benchmark, recorder):
    """Turning calls into columns happens after the step, off the timed path — but it should stay cheap."""
    x = torch.ones(16)
    recorder.active = True
    for _ in range(1000):
        dist.all_reduce(x)
    recorder.active = False
    out = benchmark(recorder.finalize, 0)
    assert len(out) == 1000 and out.classes[0].wire_bytes == 0
