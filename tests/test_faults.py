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
    the caller's own wait, on both ends of the pair.  all_reduce faults on a PP-only layout match
    nothing: counted as 0."""
    cfg = RunConfig(PRESETS["tiny"], Layout(1, 2), batch=1, prompt_len=8, gen_len=3, repeats=1, warmup=0,
                    inject=tuple(parse_faults(["send:delay=2ms", "all_reduce:delay=1ms"])))
    doc = run_engine(cfg, backend="gloo", timeout_s=120)
    pairs = [s for s in doc.ops if s.op in ("send", "recv")]
    assert pairs and min(s.latency.min_s for s in pairs) >= 2e-3, [s.latency.min_s for s in pairs]
    fired = doc.faults_fired
    # planted in the recorded repetition and in the clean one beside it: twice the recorded calls
    assert sum(f["send:delay=2ms"] for f in fired) == 2 * sum(s.count for s in pairs) > 0
    assert never_fired(cfg.inject, fired, "tp1-pp2") == ["fault all_reduce:delay=1ms never fired in tp1-pp2"]
    assert doc.no_completion == [{}, {}]


def _faulted_calls(monkeypatch, texts, calls, profile=None, issue_s: float = 0.0):
    """``calls`` (phase, site, numel) through a fake all-reduce on a fake group of ranks [0, 1]
    whose issue takes ``issue_s``; (what each fault fired, the seconds each planted slowdown spun)."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.analytic.hardware import load_profile
    from llmcomm_tests.core import call_site
    from llmcomm_tests.runtime import faults

    spin = faults._wait

    def issue(pg, tensors, *args, **kwargs):
        spin(issue_s)
        return dist.Work()

    monkeypatch.setattr(dist.ProcessGroup, "allreduce", issue)
    monkeypatch.setattr(dist.Work, "wait", lambda work, timeout=None: True)  # done when issued
    monkeypatch.setattr(dist, "get_process_group_ranks", lambda pg: [0, 1])
    installed = faults.install_faults(parse_faults(texts), profile=profile or load_profile("cpu-loopback"))
    planted = []
    monkeypatch.setattr(faults, "_wait", planted.append)
    try:
        for phase, site, numel in calls:
            monkeypatch.setattr(call_site, "phase", phase)
            monkeypatch.setattr(call_site, "site", site)
            dist.ProcessGroup.allreduce(None, [torch.zeros(numel)]).wait()
    finally:
        installed.uninstall()
    return installed.fired, planted


CALLS = [("prefill", "layer0.attn.o_proj", 16), ("prefill", "layer0.mlp.down_proj", 4096),
         ("decode", "layer0.attn.o_proj", 16), ("decode", "layer1.mlp.down_proj", 4096), ("none", "embed", 4096)]


@pytest.mark.parametrize("fault, fires", [
    ("all_reduce/decode:delay=1ms", 2),  # phase
    ("all_reduce/prefill:delay=1ms", 2),
    ("all_reduce/>=1KiB:delay=1ms", 2),  # size: 4096 floats = 16 KiB; 16 floats = 64 B
    ("all_reduce/<1KiB:delay=1ms", 2),
    ("all_reduce/>64B/<=16KiB:delay=1ms", 2),
    ("all_reduce@mlp:delay=1ms", 2),  # site
    ("all_reduce@attn/decode/<4KiB:delay=1ms", 1),  # combined
    ("all_reduce@mlp/prefill/>=1MiB:delay=1ms", 0),
])
def test_a_selector_fires_on_what_it_selects_and_not_on_the_rest(monkeypatch, fault, fires):
    """Five calls: prefill and decode, attn (64 B) and mlp (16 KiB), and one outside any phase."""
    fired, planted = _faulted_calls(monkeypatch, [fault], CALLS)
    assert fired == {fault: fires}
    assert planted == [1e-3] * fires


def test_a_relative_delay_is_the_models_transfer_not_the_callers_clock(monkeypatch):
    """``delay=50%`` of a 16 KiB all-reduce over 2 ranks plants half the cpu-loopback model's
    time for it, however long the call took on this rank.  Timed from the rank's own issue, it
    planted half of whatever the call took there (peers' lateness included): here 4 ms."""
    from llmcomm_tests.analytic.hardware import load_profile

    profile = load_profile("cpu-loopback")
    fit = profile.fit("all_reduce", 2)
    model = fit.alpha_s * 2 + 16384 / fit.beta_Bps  # ring over 2: n_alpha 2, n_beta 1
    fired, planted = _faulted_calls(monkeypatch, ["all_reduce:delay=50%"], CALLS[1:2], profile, issue_s=4e-3)
    assert fired == {"all_reduce:delay=50%": 1}
    assert planted == [pytest.approx(model / 2, rel=1e-9)] and planted[0] < 1e-3, planted


def test_a_bandwidth_factor_adds_the_bytes_time_at_the_lower_bandwidth(monkeypatch):
    """``bw=0.5``: the bytes take twice their model time (n_beta M / beta), the alpha term is kept,
    so the call gains n_beta M / beta; ``bw=0.8`` gains a quarter of it."""
    from llmcomm_tests.analytic.hardware import load_profile

    profile = load_profile("cpu-loopback")
    beta = profile.fit("all_reduce", 2).beta_Bps
    numel = 1 << 18  # 1 MiB of floats
    _, planted = _faulted_calls(monkeypatch, ["all_reduce:bw=0.5", "all_reduce/decode:bw=0.8"],
                                [("prefill", "lm_head", numel), ("decode", "lm_head", numel)], profile)
    bytes_time = 4 * numel / beta  # n_beta = 2(t-1)/t = 1 over 2 ranks
    assert planted == pytest.approx([bytes_time, bytes_time * (1 + 0.25)], rel=1e-9)


@pytest.mark.parametrize("text, names", [
    ("all_reduce", "no KIND=VALUE"),
    ("all_reduce:slow=1", "unknown kind 'slow'"),
    ("all_rduce:delay=1ms", "unknown op 'all_rduce'"),
    ("all_reduce@Attn:delay=1ms", "bad OP[@SITE] 'all_reduce@Attn'"),
    ("all_reduce/warmup:delay=1ms", "bad selector 'warmup'"),
    ("all_reduce/>=1MQ:delay=1ms", "selector '>=1MQ'"),
    ("all_reduce/decode/prefill:delay=1ms", "selector 'prefill': a second phase"),
    ("all_reduce:delay=fast", "delay: expected a percentage such as 10% or a duration such as 2ms, got 'fast'"),
    ("all_reduce:bw=1.5", "bw: expected a bandwidth factor below 1"),
    ("send:extra=1", "extra=N needs op all_reduce"),
])
def test_a_parse_error_names_the_bad_part(text, names):
    with pytest.raises(ValueError) as err:
        parse_faults([text])
    assert names in str(err.value) and repr(text) in str(err.value), str(err.value)


@pytest.mark.parametrize("text", ["all_reduce:delay=10%", "all_reduce:delay=0%", "send@pp.boundary:delay=2ms",
                                  "all_reduce@mlp/decode/>=1MiB/<4MiB:bw=0.7", "all_reduce:extra=1",
                                  "broadcast:size=2", "send:hang=0", "all_reduce:delay=2.5%"])
def test_a_fault_reads_back_as_written(text):
    """Its name is its key in ``fired`` and what a node's command line carries."""
    (fault,) = parse_faults([text])
    assert str(fault) == text and parse_faults([str(fault)]) == [fault]


def test_a_slowdown_moves_every_ranks_transfer_by_the_planted_time_not_the_wait():
    """A real 2-rank gloo group, all-reduces clean and with ``delay=2000%`` in turn, rank 1 arriving
    4 ms late to each.  Both ranks' median transfer grows by 20x the model's time for the call
    (about 7.4 ms) within -20 % - 0.1 ms and +50 % + 0.3 ms (the wait sleeps, and on a loaded
    host wakes late: it errs long), and rank 0's wait stays what it was.  Sized from each
    rank's own clock, rank 0 (which waits 4 ms) planted 20x its whole call: over 80 ms."""
    import numpy as np

    from llmcomm_tests.analytic import latency
    from llmcomm_tests.analytic.hardware import load_profile
    from llmcomm_tests.runtime import arrival

    fault = "all_reduce:delay=2000%"
    results = launch(rank_entries.interleaved_delay, (fault,), world_size=2, timeout_s=120)
    rank_ops = [r["ops"] for r in results]
    splits = arrival.split(rank_ops)
    planted = 20 * latency.op_time(load_profile("cpu-loopback"), "all_reduce", 2, 64)
    for r, (ops, (wait, transfer)) in enumerate(zip(rank_ops, splits)):
        rows = np.flatnonzero([ops.classes[c].op == "all_reduce" for c in ops.cls])
        armed = results[r]["armed"]
        assert len(rows) == len(armed)
        grew = np.median(transfer[rows[armed == 1]]) - np.median(transfer[rows[armed == 0]])
        assert 0.8 * planted - 0.1e-3 <= grew <= 1.5 * planted + 0.3e-3, (r, grew, planted)
        waited = np.median(wait[rows[armed == 1]]) - np.median(wait[rows[armed == 0]])
        assert abs(waited) <= 1e-3, (r, waited)
    assert sum(r["fired"][fault] for r in results) == 2 * (len(results[0]["armed"]) // 2 + 1)


def _armed_transfer_growth(results, quantile: float) -> list[float]:
    """Per rank of an ``rank_entries._armed_in_turn`` run: the ``quantile`` of its armed all-reduces'
    transfer (``runtime/arrival.py``) minus that of its clean ones, in seconds."""
    import numpy as np

    from llmcomm_tests.runtime import arrival

    rank_ops = [r["ops"] for r in results]
    growth = []
    for r, ops, (_, transfer) in zip(results, rank_ops, arrival.split(rank_ops)):
        rows = np.flatnonzero([ops.classes[c].op == "all_reduce" for c in ops.cls])
        armed = np.array(r["armed"])
        assert len(rows) == len(armed)
        growth.append(float(np.percentile(transfer[rows[armed]], quantile)
                            - np.percentile(transfer[rows[~armed]], quantile)))
    return growth


@pytest.mark.parametrize("over", [True, False])
def test_a_slowdowns_lookup_runs_before_the_recorders_clock(over):
    """The lookup that decides whether a call is slowed is not the fault's time: with the method
    patch over the recorder (as runtime/measure.py installs a slowdown), a lookup made 10 ms slow
    leaves ``delay=0%``'s transfers as long as the clean ones; under it (how faults sat before) it
    adds the 10 ms to every armed call: what made a PP2 send at ``delay=0%`` measure about 10 µs
    long.  10 ms, not less: on a loaded 2-core host a clean call's transfer varies by milliseconds."""
    results = launch(rank_entries.slow_lookup, (over,), world_size=2, timeout_s=120)
    # the transfer, not the duration: a rank whose slow lookup ends later makes its peer wait
    for r, grew in zip(results, _armed_transfer_growth(results, 50)):
        if over:
            assert grew < 2.5e-3, grew
        else:
            assert grew > 7.5e-3, grew
        assert r["fired"]["all_reduce:delay=0%"] == sum(r["armed"])  # counted at the issue
        assert r["restored"]  # each patch put back what it found, in the reverse order: the pybind methods


@pytest.mark.parametrize("fault, planted_s", [("all_reduce:delay=10ms", 10e-3), ("all_reduce:delay=0%", 0.0)])
def test_a_held_slowdown_adds_what_it_plants_and_no_more(fault, planted_s):
    """A slowdown held by the recorder is timed from when the caller's wait returned: 5 ms of
    bookkeeping before each plant (what cold bytecodes there cost, made large) is part of a 10 ms
    delay, not added to it, so the armed transfers grow 10 ms, not 15.  ``delay=0%`` holds nothing
    (it is counted at the issue), so its calls never reach that bookkeeping and grow by nothing."""
    results = launch(rank_entries.held_slowdown, (fault, 5e-3), world_size=2, timeout_s=120)
    # the lower quartile: a 64 B gloo all-reduce here takes 0.3 ms, or 2-8 ms in a third of calls
    for r, grew in zip(results, _armed_transfer_growth(results, 25)):
        assert planted_s - 2e-3 < grew < planted_s + 2.5e-3, (grew, planted_s)  # 5 ms more without `since`
        assert r["fired"][fault] == sum(r["armed"])
        assert r["held"] == 0  # every hold was planted, none left for a later call


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


def test_cuda_delays_go_to_the_gpu_stream_sized_by_the_model(monkeypatch):
    """The NCCL path without a GPU: an op on a (fake) CUDA tensor gets its slowdown as one spin on
    the stream (a fake GPU delay records what it was asked), the host never waits, and nothing
    reads the op's own device time: delay=50% plants half the model's time, plus delay=2ms,
    the same on every call.  It used to read the class's latest CUDA-event duration."""
    import torch
    import torch.distributed as dist

    from llmcomm_tests.analytic.hardware import load_profile
    from llmcomm_tests.core import call_site
    from llmcomm_tests.runtime import faults

    monkeypatch.setattr(dist.ProcessGroup, "allreduce", lambda pg, tensors, *a, **k: dist.Work())
    monkeypatch.setattr(dist.Work, "wait", lambda work, timeout=None: True)
    monkeypatch.setattr(dist, "get_process_group_ranks", lambda pg: [0, 1])
    monkeypatch.setattr(faults, "_first_tensor", lambda args: type("CudaTensor", (), {"is_cuda": True})())
    monkeypatch.setattr(torch.cuda, "Event", lambda *a, **k: pytest.fail("a CUDA event read"))
    monkeypatch.setattr(faults, "_wait", lambda s: pytest.fail("host wait on a CUDA op"))
    monkeypatch.setattr(call_site, "phase", "decode")
    profile = load_profile("h100-nvlink4")
    texts = ["all_reduce:delay=50%", "all_reduce:delay=2ms"]
    installed = faults.install_faults(parse_faults(texts), cuda=False, profile=profile)
    asked = []
    installed.gpu_delay = asked.append
    try:
        for _ in range(3):
            dist.ProcessGroup.allreduce(None, [torch.zeros(1024)]).wait()
    finally:
        installed.uninstall()
    model = faults.model_transfer(profile, "all_reduce", [0, 1], 4096)[0]
    assert asked == pytest.approx([model / 2 + 2e-3] * 3, rel=1e-9)
    assert installed.fired == {t: 3 for t in texts}


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
