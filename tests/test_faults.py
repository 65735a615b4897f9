"""Planted faults must fire: delays on every op class (point-to-point included), a count of what
each fault matched that comes back from the ranks, and hang reports that show every rank's frames."""

import pytest

import rank_entries
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime.gpu_delay import fit_clock
from llmcomm_tests.runtime.faults import never_fired, parse_faults
from llmcomm_tests.runtime.launch import RankTimeout, launch
from llmcomm_tests.runtime.measure import run_engine
from llmcomm_tests.runtime.run_config import RunConfig


def test_never_fired_names_each_fault_that_matched_nothing_on_any_rank():
    faults = parse_faults(["send:delay=2ms", "all_reduce:delay=10%"])
    fired = [{"send:delay=2ms": 4, "all_reduce:delay=10%": 0}, {"send:delay=2ms": 0}]
    assert never_fired(faults, fired, "tp1-pp2-b1") == ["fault all_reduce:delay=10% never fired in tp1-pp2-b1"]
    assert never_fired(faults[:1], fired, "c") == []


def test_send_delay_on_pp2_plants_the_delay_and_counts_it():
    """`send:delay=2ms` on PP2 deadlocked: the fault waited the send's Work, and the caller's
    second wait on a gloo p2p Work blocks for a completion that never comes.  The delay now runs at
    the caller's own wait.  all_reduce faults on a PP-only layout match nothing: counted as 0."""
    cfg = RunConfig(PRESETS["tiny"], Layout(1, 2), batch=1, prompt_len=8, gen_len=3, repeats=1, warmup=0,
                    inject=tuple(parse_faults(["send:delay=2ms", "all_reduce:delay=1ms"])))
    doc = run_engine(cfg, backend="gloo", timeout_s=120)
    sends = [s for s in doc.ops if s.op == "send"]
    assert sends and min(s.latency.min_s for s in sends) >= 2e-3, [s.latency.min_s for s in sends]
    fired = doc.faults_fired
    # planted in the recorded repetition and in the clean one beside it: twice the recorded sends
    assert sum(f["send:delay=2ms"] for f in fired) == 2 * sum(s.count for s in sends) > 0
    assert never_fired(cfg.inject, fired, "tp1-pp2") == ["fault all_reduce:delay=1ms never fired in tp1-pp2"]
    assert doc.no_completion == [{}, {}]


def test_a_relative_delay_scales_the_call_from_its_issue(monkeypatch):
    """A gloo send writes its bytes while it is issued, and its Work is done almost at once.
    Timed from the returned Work, delay=100% planted a fraction of the call: a PP2 send's
    transfer went to 1.6x, not 2x.  Here the issue takes 2 ms and the wait nothing."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.runtime import faults
    from llmcomm_tests.core import call_site

    spin = faults._wait

    def send_issued_in_2ms(pg, tensors, dst, tag):
        spin(2e-3)
        return dist.Work()

    monkeypatch.setattr(dist.ProcessGroup, "send", send_issued_in_2ms)
    monkeypatch.setattr(dist.Work, "wait", lambda work, timeout=None: True)  # done when issued
    monkeypatch.setattr(call_site, "phase", "decode")
    installed = faults.install_faults(parse_faults(["send:delay=100%"]))
    planted = []
    monkeypatch.setattr(faults, "_wait", planted.append)
    try:
        work = dist.ProcessGroup.send(None, [torch.zeros(1)], 1, 0)
        work.wait()
    finally:
        installed.uninstall()
    assert len(planted) == 1 and 2e-3 <= planted[0] < 50e-3, planted
    assert installed.fired == {"send:delay=100%": 1}


def test_a_deadlock_report_shows_every_ranks_frames():
    with pytest.raises(RankTimeout) as err:
        launch(rank_entries.deadlock, world_size=2, timeout_s=4)
    message = str(err.value)
    first = message.splitlines()[0]  # what a verdict row or a JUnit message shows
    assert "ranks [0, 1] all wait in communication: a deadlock" in first, message
    assert "rank 0 in recv from deadlock (tests/rank_entries.py:" in first, first
    assert "rank 1 in recv from deadlock (tests/rank_entries.py:" in first, first
    for rank in (0, 1):
        block = message.split(f"--- rank {rank} stacks ---", 1)[1].split("--- rank", 1)[0]
        assert "Current thread" in block and "in deadlock" in block and "in recv" in block, block


def test_gpu_clock_fit_recovers_the_clock_and_plants_the_asked_delay():
    """The calibration of torch.cuda._sleep, against a mocked device clock (1.98 GHz, 6 µs launch
    overhead, 3 % jitter): the fitted clock plants 2 ms within 2 %."""
    import random

    rng = random.Random(1)
    hz, overhead = 1.98e9, 6e-6

    def measure(cycles: int) -> float:
        return (overhead + cycles / hz) * rng.uniform(0.97, 1.03)

    clock = fit_clock(measure)
    assert clock.hz == pytest.approx(hz, rel=0.03)
    planted = overhead + clock.cycles(2e-3) / hz
    assert planted == pytest.approx(2e-3, rel=0.02)
    assert clock.cycles(1e-6) == 0  # under the launch overhead: nothing to spin
    with pytest.raises(RuntimeError, match="did not take longer"):
        fit_clock(lambda n: 1e-3)


def test_cuda_delays_go_to_the_gpu_stream_sized_by_the_op_class_latest_duration(monkeypatch):
    """The NCCL path without a GPU: fake CUDA events whose op took 300 µs (the first read
    synchronises once, later ones only query), and a fake GPU delay that records what it was
    asked: delay=50% plants 150 µs on the stream, delay=2ms plants 2 ms, the host never sleeps."""
    import torch

    from llmcomm_tests.runtime import faults

    class Event:
        made = []

        def __init__(self, enable_timing=False):
            self.done, self.synced = False, 0
            Event.made.append(self)

        def record(self):
            pass

        def query(self):
            return self.done

        def synchronize(self):
            self.synced += 1
            self.done = True

        def elapsed_time(self, end):
            return 0.3  # ms

    asked = []
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(faults, "_wait", lambda s: pytest.fail("host wait on a CUDA op"))
    installed = faults.InstalledFaults(parse_faults(["all_reduce:delay=50%", "all_reduce:delay=2ms"]))
    installed.gpu_delay = asked.append
    key = ("allreduce", 1024)
    for _ in range(3):
        installed._delay_at_wait(object(), installed.faults, key, cuda=True, issued_ns=0)
        (entry,) = installed._delayed.values()
        installed._delayed.clear()
        installed._plant(*entry[1:])
        for e in Event.made:
            e.done = True  # the stream caught up
    assert asked == pytest.approx([150e-6, 2e-3] * 3)
    assert sum(e.synced for e in Event.made) == 1  # only the class's first call waits for its events


def test_a_fault_that_never_fires_fails_the_case(pytester):
    """all_reduce faults on a PP-only layout match no op: the case fails and says which fault."""
    pytester.makefile(".yaml", **{"slo_specs/pp": """\
name: pp
engine: {preset: tiny, n_layers: 2}
workload: {batch: 1, prompt_len: 4, gen_len: 2}
layouts: ["1x2"]
repeats: 1
warmup: 0
"""})
    pytester.makeini("[pytest]\nllmcomm_report_dir = reports\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--llmcomm-inject", "all_reduce:delay=1ms",
                                           "--llmcomm-inject", "send:delay=1ms")
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(["*run*inject*FAIL (fault all_reduce:delay=1ms never fired in tp1-pp2-b1-s4-g2)*"])
    assert "fault send:delay=1ms never fired" not in result.stdout.str()
