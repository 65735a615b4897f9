"""The gate's loop with scripted arms (no processes): stopping, balance after a failed arm, exact
volume rows, the environment heading the rows.  The real arms are in test_ab_gate.py."""

import math
import random
from dataclasses import replace

import pytest

from llmcomm_tests.core.envinfo import Environment
from llmcomm_tests.judging.ab.arms import ArmEnv, ArmError
from llmcomm_tests.judging.ab.gate import compare_arms
from llmcomm_tests.judging.ab.observe import ArmRun
from llmcomm_tests.core.documents import VolumeRow

VOLUME = [VolumeRow("all_reduce", "decode", "attn", 56, 57344, 57344)]


class ScriptedArm:
    def __init__(self, name, slowdown=0.0, extra=False, fail_on=(), seed=0):
        server = replace(Environment.capture(), executable=f"/envs/{name}/python", python="3.11.7",
                         packages={"torch": "2.13.0" if name == "A" else "2.14.1"})
        self.env = ArmEnv(f"/envs/{name}/python", server, rank_executable=f"/envs/{name}/python", rank_torch="2.13.0")
        self.slowdown, self.extra, self.fail_on = slowdown, extra, set(fail_on)
        self.rng, self.calls = random.Random(seed), 0
        self.drift = 0.0

    def run(self, cfg, backend, timeout_s, ranks):
        self.calls += 1
        if self.calls in self.fail_on:
            raise ArmError("rank 1 failed: planted")
        noise = lambda: self.rng.gauss(0, 0.03)
        volume = [VolumeRow("all_reduce", "decode", "attn", 112, 114688, 114688)] if self.extra else VOLUME
        return ArmRun(volume, True, {"tpot": math.log(0.012) + noise(),
                                     "op all_reduce decode /2 transfer": math.log(4e-4 * (1 + self.slowdown)) + noise()})


def test_unchanged_arms_pass_and_stop_when_settled():
    res = compare_arms(None, None, ScriptedArm("A", seed=1), ScriptedArm("B", seed=2), threshold=0.05)
    assert not res.failed and res.pairs == 10 and res.stopped.startswith("every interval settled")
    assert res.rows[0].name == "ab environment" and res.rows[0].detail.startswith("torch 2.13.0 → 2.14.1")
    assert "seed 0:" in res.rows[1].detail


def test_slower_arm_b_fails_the_op_row_with_change_and_interval():
    res = compare_arms(None, None, ScriptedArm("A", seed=1), ScriptedArm("B", slowdown=0.2, seed=2), threshold=0.05)
    failed = {r.name: r for r in res.failed}
    row = failed["ab op all_reduce decode /2 transfer"]
    assert row.measured == pytest.approx(0.2, abs=0.04) and 0.05 < row.low < row.measured < row.high
    assert row.unit == "change" and row.n == res.pairs and "slower in B" in row.detail
    assert "ab tpot" not in failed and "ab environment" in failed  # the environment heads the failure


def test_extra_collective_fails_the_volume_row_exactly():
    res = compare_arms(None, None, ScriptedArm("A"), ScriptedArm("B", extra=True), threshold=0.05)
    (row,) = [r for r in res.failed if r.name.startswith("ab volume")]
    assert row.name == "ab volume all_reduce decode attn" and row.detail.startswith("calls 56 → 112, bytes 57344 → 114688")
    assert res.stopped == "bytes or counts differ between the arms"


def test_a_failed_arm_drops_the_pair_and_keeps_the_balance():
    res = compare_arms(None, None, ScriptedArm("A", seed=1), ScriptedArm("B", fail_on={3}, seed=2), threshold=0.05)
    kept = [p for p in res.schedule["pairs"] if p["kept"]]
    dropped = [p for p in res.schedule["pairs"] if p["kept"] is False]
    assert len(dropped) == 1 and "planted" in dropped[0]["error"]
    assert sum(p["order"] == "AB" for p in kept) * 2 == len(kept) == res.pairs
    assert not res.failed


def test_an_arm_that_always_fails_fails_the_case():
    res = compare_arms(None, None, ScriptedArm("A"), ScriptedArm("B", fail_on=range(1, 100)), threshold=0.05)
    assert any(r.name == "ab run" for r in res.failed) and res.pairs == 0
