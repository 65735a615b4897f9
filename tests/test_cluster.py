"""Two nodes on one host (issue 13): the node launcher, the emulated cluster, volume per tier, the advisor.

Without namespaces (any host): the node launcher with a plain local template runs a two-node case
(same tokens as one host) and reports a killed rank by rank and node, leaving no process; the
analytic model's per-tier volume equals the recorded ops classified by node, for the four layouts.
With namespaces (CAP_NET_ADMIN; skipped with the reason otherwise): the shaped link really runs at
its rate, TP2×PP2 across two namespaces gives one host's tokens with the tier volumes exact, a rank
killed on node 2 is named with its node and nothing — namespace, veth, process — is left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import pytest

from llmcomm_tests.analytic.hardware import load_profile
from llmcomm_tests.core import units
from llmcomm_tests.runtime import netns, node_launch
from llmcomm_tests.analytic import tiers, two_tier
from llmcomm_tests.engine.config import PRESETS
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime.measure import run_engine
from llmcomm_tests.runtime.run_config import RunConfig

TINY = PRESETS["tiny"]
RPN = 2  # ranks per node in every case here
STUDY_LAYOUTS = [Layout(4, 1), Layout(2, 2), Layout(1, 4), Layout(2, 1)]


def _ns_ok() -> tuple[bool, str]:
    try:
        return netns.can_create_namespaces()
    except Exception as exc:  # noqa: BLE001 - any failure means: skip with the reason
        return False, str(exc)


NS_OK, NS_WHY = _ns_ok()
needs_netns = pytest.mark.skipif(not NS_OK, reason=f"network namespaces unavailable: {NS_WHY}")


def _rank_args(layout: Layout, extra: list[str] = ()) -> list[str]:
    return ["--engine", "tiny", "--tp", str(layout.tp), "--pp", str(layout.pp), "--repeats", "1", "--warmup", "0",
            "--keep-records", "--json", "{results}/run.json", *extra]


def _ours_alive(pids) -> list[int]:
    return [pid for pid in pids if netns.pid_alive(pid)]


def _torchrun_processes(marker: str) -> list[str]:
    """Process-table lines that belong to one launch (its results folder is in every rank's argv)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [ln for ln in out.splitlines() if marker in ln and "ps -eo" not in ln]


# -- volume per tier (no namespaces needed: the node map is rank // ranks_per_node) ---------------


@pytest.fixture(scope="module")
def tiny_runs():
    return {layout: run_engine(RunConfig(TINY, layout, batch=2, prompt_len=8, gen_len=3, repeats=1, warmup=0,
                                       keep_records=True))
            for layout in STUDY_LAYOUTS}


@pytest.mark.parametrize("layout", STUDY_LAYOUTS, ids=str)
def test_tier_volume_matches_model(tiny_runs, layout):
    doc = tiny_runs[layout]
    predicted = tiers.predicted(TINY, layout, 2, 8, 3, "fp32", RPN)
    measured = tiers.measured(doc.records, RPN)
    assert tiers.diff(predicted, measured) == []
    inter = {(r["op"], r["site"]) for r in measured if r["tier"] == "inter"}
    expected_inter = {  # what crosses the node boundary in each layout (2 ranks per node)
        Layout(4, 1): {("all_reduce", "embed"), ("all_reduce", "attn"), ("all_reduce", "mlp"), ("gather", "lm_head"),
                       ("broadcast", "tokens.broadcast")},
        Layout(2, 2): {("send", "pp.boundary"), ("recv", "pp.boundary"), ("send", "pp.tokens"), ("recv", "pp.tokens")},
        Layout(1, 4): {("send", "pp.boundary"), ("recv", "pp.boundary"), ("send", "pp.tokens"), ("recv", "pp.tokens")},
        Layout(2, 1): set(),
    }[layout]
    assert inter == expected_inter


def test_tier_volume_check_fails_on_planted_faults(tiny_runs):
    """A wrong node map (everything on one node) and a larger message crossing nodes both show as
    diffs, and only on the tier where they are."""
    from llmcomm_tests.runtime.faults import parse_faults

    doc = tiny_runs[Layout(2, 2)]
    predicted = tiers.predicted(TINY, Layout(2, 2), 2, 8, 3, "fp32", RPN)
    assert tiers.diff(predicted, tiers.measured(doc.records, 4))
    fault = run_engine(RunConfig(TINY, Layout(4, 1), batch=2, prompt_len=8, gen_len=3, repeats=1, warmup=0,
                               keep_records=True, inject=tuple(parse_faults(["all_reduce@mlp:size=2"]))))
    lines = tiers.diff(tiers.predicted(TINY, Layout(4, 1), 2, 8, 3, "fp32", RPN), tiers.measured(fault.records, RPN))
    assert lines and all(ln.startswith("inter/all_reduce/") and "/mlp:" in ln for ln in lines)


# -- node launcher with a plain local template (no namespaces) -------------------------------------


def test_local_template_two_nodes_same_tokens_as_one_host():
    layout = Layout(2, 2)
    run = node_launch.run_on_nodes(node_launch.local_nodes(2, RPN, timeout_s=120), "llmcomm_tests.runtime.torchrun_entry:main",
                                   _rank_args(layout))
    assert run.rank_nodes == {0: "local0", 1: "local0", 2: "local1", 3: "local1"}
    ref = run_engine(RunConfig(TINY, layout, repeats=1, warmup=0))
    assert run.document()["tokens"] == ref.tokens
    assert not run.results.exists()  # the temporary shared folder is gone


def _kill_rank_when_started(results: Path, rank: int, delay_s: float, done: dict) -> None:
    deadline = time.monotonic() + 60
    start = results / f"rank{rank}.start.json"
    while time.monotonic() < deadline and not start.exists():
        time.sleep(0.05)
    time.sleep(delay_s)
    try:
        pid = json.loads(start.read_text())["pid"]
        os.kill(pid, signal.SIGKILL)
        done["pid"] = pid
    except (OSError, ValueError) as exc:
        done["error"] = repr(exc)


def _kill_case(launch: node_launch.NodeLaunch, tmp_path: Path) -> tuple[node_launch.NodeRankFailed, dict, list]:
    """TP2×PP2 with rank 0 hanging (planted) so the run cannot end first; rank 3 (node 2) is SIGKILLed."""
    results = tmp_path / "shared"
    done: dict = {}
    killer = threading.Thread(target=_kill_rank_when_started, args=(results, 3, 3.0, done), daemon=True)
    killer.start()
    with pytest.raises(node_launch.NodeRankFailed) as info:
        node_launch.run_on_nodes(launch, "llmcomm_tests.runtime.torchrun_entry:main",
                                 _rank_args(Layout(2, 2), ["--inject", "send:hang=0"]), results=results)
    killer.join(10)
    assert "pid" in done, done
    pids = [json.loads(p.read_text())["pid"] for p in results.glob("rank*.start.json")]
    return info.value, done, pids


def test_local_template_killed_rank_named_with_node_nothing_left(tmp_path):
    launch = node_launch.local_nodes(2, RPN, timeout_s=120)
    exc, done, pids = _kill_case(launch, tmp_path)
    first_line = str(exc).splitlines()[0]
    assert first_line.startswith("rank 3 on node local1 failed"), first_line
    assert "killed by signal 9" in str(exc)
    assert 3 in exc.ranks and "local1" in exc.nodes
    assert len(pids) == 4 and _ours_alive(pids) == []
    assert _torchrun_processes(str(tmp_path)) == []


# -- emulated cluster (namespaces) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    if not NS_OK:
        pytest.skip(f"network namespaces unavailable: {NS_WHY}")
    c = netns.up_owned(2, RPN, "200mbit")
    yield c
    netns.release(c)
    assert not set(c.namespaces) & set(netns.existing_namespaces())


def _bulk_rate(c: netns.Cluster, megabytes: int) -> float:
    """Bytes/s of one TCP stream from node 0 to node 1 (receiver's clock), plus the kernel's count."""
    code = ("import socket,sys,time\n"
            "s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind((sys.argv[1],5999));"
            "s.listen(1);print('ready',flush=True);c,_=s.accept();n=0;t0=None\n"
            "while True:\n d=c.recv(1<<20)\n if not d: break\n t0=t0 or time.perf_counter();n+=len(d)\n"
            "print(n/(time.perf_counter()-t0))\n")
    send = ("import socket,sys\nc=socket.create_connection((sys.argv[1],5999));b=b'x'*(1<<20)\n"
            f"for _ in range({megabytes}): c.sendall(b)\nc.close()\n")
    srv = subprocess.Popen(["ip", "netns", "exec", c.nodes[1].name, sys.executable, "-c", code, c.nodes[1].addr],
                           stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout.readline().strip() == "ready"
        subprocess.run(["ip", "netns", "exec", c.nodes[0].name, sys.executable, "-c", send, c.nodes[1].addr],
                       check=True, timeout=60)
        return float(srv.communicate(timeout=60)[0].strip())
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


@needs_netns
def test_shaped_link_runs_at_its_rate(cluster):
    """Bound from tc's rate alone: 85–102 % of it (tbf gave 96 % here).  The planted fault — the
    same stream with shaping removed — must fall outside it."""
    for rate in ("200mbit", "1gbit"):
        netns.set_rate(cluster, rate)
        nominal = units.rate_bytes_per_s(rate)
        measured = _bulk_rate(cluster, 30 if rate == "200mbit" else 120)
        assert 0.85 * nominal <= measured <= 1.02 * nominal, (rate, measured / nominal)
    for node in cluster.nodes:  # planted: no shaping
        netns._ip("netns", "exec", node.name, "tc", "qdisc", "del", "dev", cluster.ifname, "root")
    try:
        assert _bulk_rate(cluster, 120) > 1.02 * units.rate_bytes_per_s("1gbit")
    finally:
        netns.set_rate(cluster, "200mbit")


@needs_netns
def test_emulated_tp2_pp2_same_tokens_and_exact_tier_volume(cluster):
    layout = Layout(2, 2)
    before = netns.link_tx_bytes(cluster)
    run = node_launch.run_on_nodes(node_launch.emulated_nodes(cluster, 120), "llmcomm_tests.runtime.torchrun_entry:main",
                                   _rank_args(layout))
    sent = sum(v - before[k] for k, v in netns.link_tx_bytes(cluster).items())
    doc = run.document()
    assert run.rank_nodes == {r: cluster.nodes[r // RPN].name for r in range(4)}
    assert doc["tokens"] == run_engine(RunConfig(TINY, layout, repeats=1, warmup=0)).tokens
    measured = tiers.measured(doc["records"], RPN)
    assert tiers.diff(tiers.predicted(TINY, layout, 1, 32, 8, "fp32", RPN), measured) == []
    # The kernel saw at least the payload the model puts on the link (headers and rendezvous on top).
    inter_payload = sum(r["wire_bytes"] for r in measured if r["tier"] == "inter")
    assert sent >= inter_payload > 0


@needs_netns
def test_emulated_killed_rank_on_node_2_named_nothing_left(tmp_path):
    c = netns.up_owned(2, RPN, "1gbit")
    try:
        exc, done, pids = _kill_case(node_launch.emulated_nodes(c, 120), tmp_path)
    finally:
        netns.release(c)
    first_line = str(exc).splitlines()[0]
    assert first_line.startswith(f"rank 3 on node {c.nodes[1].name} failed"), first_line
    assert c.nodes[1].name in exc.nodes
    assert not [ns for ns in netns.existing_namespaces() if ns.startswith(f"{netns.PREFIX}{c.id}")]
    assert not (netns.registry_dir() / f"{c.id}.json").exists()  # veths die with their namespaces
    assert _ours_alive(pids) == [] and _torchrun_processes(str(tmp_path)) == []


@needs_netns
def test_crashed_owner_is_reaped():
    """A session SIGKILLed with its cluster up leaves it registered; the next start removes it."""
    code = ("import os,signal\nfrom llmcomm_tests.runtime import netns\n"
            "c=netns.up_owned(2,1,'200mbit');print(c.id,flush=True);os.kill(os.getpid(),signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=str(Path(__file__).resolve().parents[1]))
    cid = proc.stdout.strip()
    assert cid and any(ns.startswith(f"{netns.PREFIX}{cid}") for ns in netns.existing_namespaces())
    removed = netns.reap_stale()
    assert any(cid in ns for ns in removed)
    assert not any(cid in ns for ns in netns.existing_namespaces())


# -- advisor ----------------------------------------------------------------------------------------


def test_advise_ranks_by_prediction_and_explains_misses():
    profile = load_profile("h100-nvlink4-ib-4gpu")
    shape = PRESETS["llama-3.1-8b"]
    preds, refused = two_tier.advise(shape, 8, 1, 128, 128, "bf16", profile, ttft_s=0.2, tpot_s=0.0035)
    assert [str(p.layout) for p in preds][:1] == ["tp4-pp2"]  # TP inside the node, PP across
    tp8 = next(p for p in preds if p.layout == Layout(8, 1))
    assert tp8.bytes_per_token["inter"] > 100 * preds[0].bytes_per_token["inter"]
    assert not tp8.fits() and tp8.dominant_tpot == "inter comm"
    assert "inter comm dominates" in two_tier.why_not(tp8, 0.2, 0.0035)
    assert refused == []


def test_nics_per_node_queues_parallel_boundary_slices():
    """One NIC per node (the emulated cluster): the t slices of a hybrid boundary queue on it."""
    profile = replace(load_profile("cpu-loopback"), ranks_per_node=2)
    one = two_tier.predict(TINY, Layout(2, 2), 16, 16, 8, "fp32", profile, nics_per_node=1)
    two = two_tier.predict(TINY, Layout(2, 2), 16, 16, 8, "fp32", profile, nics_per_node=2)
    assert one.parts["comm_decode_inter_s"] > two.parts["comm_decode_inter_s"]
    assert one.parts["comm_decode_intra_s"] == two.parts["comm_decode_intra_s"]


# -- the study's shape on the emulated cluster: order of TPOT and inter bytes, advisor -------------

# A predicted order is asserted only between layouts the model separates by more than this factor:
# the A/A spread of TPOT on this host (σ of per-pair log ratios 0.15–0.25, i.e. ±25 %:
# docs/measurements.md#timing-noise-between-sessions) -- from repeated identical runs, not from the
# layouts compared here.
ORDER_MARGIN = 1.25


# Measured TPOT order on a shared 2-core host moves with the host's load (another test process is
# enough to swap two layouts 20 % apart): a timed assertion, run on a quiet host only.  The table
# is benchmarks/two_tier_study.py's.
quiet_host_only = pytest.mark.skipif(not os.environ.get("LLMCOMM_TIMING_TESTS"),
                                     reason="timing-order test: run alone on a quiet host with LLMCOMM_TIMING_TESTS=1 "
                                            "(benchmarks/two_tier_study.py prints the table)")


@pytest.fixture(scope="module")
def study_200mbit():
    if not NS_OK:
        pytest.skip(f"network namespaces unavailable: {NS_WHY}")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import cluster_study as study
    from llmcomm_tests.engine.config import resolve_engine

    # Tier volumes are exact at any repetition count; only the timing-order test (quiet hosts,
    # LLMCOMM_TIMING_TESTS) needs the study's repetitions and its calibration's.
    timing = bool(os.environ.get("LLMCOMM_TIMING_TESTS"))
    w = study.StudySettings() if timing else replace(study.StudySettings(), repeats=1, warmup=0)
    shape = resolve_engine(w.engine)
    compute_doc = run_engine(RunConfig(shape, Layout(1, 1), batch=w.batch, prompt_len=w.prompt_len,
                                     gen_len=w.gen_len, dtype=w.dtype, repeats=w.repeats, warmup=w.warmup))
    c = netns.up_owned(2, RPN, "200mbit")
    try:
        profile, _ = study.calibrated_profile(c, shape, compute_doc, **({} if timing else {"repeats": 2}))
        docs = {layout: study.run_layout(c, layout, w) for layout in STUDY_LAYOUTS}
    finally:
        netns.release(c)
    cores = os.cpu_count() or 1
    results = {layout: study.compare(docs[layout], profile, shape, layout, w, cores) for layout in STUDY_LAYOUTS}
    return {"w": w, "shape": shape, "profile": profile, "docs": docs, "results": results, "cores": cores}


def ordered_pairs(pred: dict, margin: float) -> list[tuple]:
    """(faster, slower) pairs the prediction separates by more than ``margin``."""
    return [(a, b) for a in pred for b in pred if pred[b] > margin * pred[a]]


@needs_netns
def test_study_tier_volumes_exact_and_inter_bytes_order(study_200mbit):
    results = study_200mbit["results"]
    for layout, r in results.items():
        assert r["tier_volume_diff"] == [], (layout, r["tier_volume_diff"])
    measured = {l: r["inter_bytes_per_token_measured"] for l, r in results.items()}
    predicted = {l: r["inter_bytes_per_token_predicted"] for l, r in results.items()}
    assert sorted(measured, key=lambda l: (measured[l], str(l))) == sorted(predicted, key=lambda l: (predicted[l], str(l)))
    assert predicted[Layout(4, 1)] > 10 * predicted[Layout(2, 2)] > 0 == predicted[Layout(2, 1)]


@needs_netns
@quiet_host_only
def test_study_tpot_order_matches_prediction(study_200mbit):
    results = study_200mbit["results"]
    pred = {l: r["tpot_predicted_s"] for l, r in results.items()}
    meas = {l: r["tpot_measured_s"] for l, r in results.items()}
    pairs = ordered_pairs(pred, ORDER_MARGIN)
    assert (Layout(2, 1), Layout(4, 1)) in pairs  # the model does separate the extremes
    wrong = [(str(a), str(b), meas[a], meas[b]) for a, b in pairs if not meas[a] < meas[b]]
    assert wrong == [], f"measured order differs from predicted: {wrong}; measured {meas}, predicted {pred}"


def test_order_check_fails_on_a_planted_inversion():
    pred = {"a": 1.0, "b": 2.0, "c": 2.1}
    pairs = ordered_pairs(pred, ORDER_MARGIN)
    assert ("a", "b") in pairs and ("b", "c") not in pairs  # b and c: a tie under the margin
    meas = {"a": 3.0, "b": 2.0, "c": 2.5}  # planted: the fast layout measured slowest
    assert [(x, y) for x, y in pairs if not meas[x] < meas[y]] == [("a", "b"), ("a", "c")]


@needs_netns
@quiet_host_only
def test_advisor_first_choice_is_measured_fastest(study_200mbit):
    s = study_200mbit
    w = s["w"]
    preds, refused = two_tier.advise(s["shape"], [2, 4], w.batch, w.prompt_len, w.gen_len, w.dtype, s["profile"],
                                    nics_per_node=1, compute_parallelism=s["cores"], layouts=STUDY_LAYOUTS)
    assert refused == []
    fastest = min(s["results"], key=lambda l: s["results"][l]["tpot_measured_s"])
    assert preds[0].layout == fastest, [(str(p.layout), p.tpot_s) for p in preds]


# -- topology section, templates, command line ------------------------------------------------------


def test_topology_section_parses_and_refuses_bad_input():
    import yaml

    from llmcomm_tests.spec import topology

    spec = Path(__file__).resolve().parents[1] / "slo_specs" / "emulated-2node.yaml"
    topo = topology.parse(yaml.safe_load(spec.read_text())["topology"], str(spec))
    assert (topo.nodes, topo.ranks_per_node, topo.emulate, topo.inter_rates) == (2, 2, True, ("200mbit", "1gbit"))
    for bad, words in [({"nodes": 2, "ranks_per_node": 2}, "needs emulate: true"),
                       ({"nodes": 2, "ranks_per_node": 2, "emulate": True, "inter_rates": ["fast"]}, "bad link rate"),
                       ({"nodes": 2, "ranks_per_node": 2, "emulate": True, "colour": 1}, "unknown field"),
                       ({"nodes": 2, "ranks_per_node": 2, "node_cmd": "ssh {host}", "hosts": ["a"]},
                        "topology.hosts: a spec is data and cannot set hosts; give --llmcomm-hosts")]:
        with pytest.raises(topology.TopologyError, match=words) as info:
            topology.parse(bad, "x.yaml")
        assert str(info.value).startswith("x.yaml: ") and "\n" not in str(info.value)


def test_slurm_template_runs_two_nodes_with_a_stand_in_srun(tmp_path):
    """The sbatch script as written, with `scontrol` and `srun` replaced by stand-ins that list two
    local hosts and run the node command here: the launcher line, its template and the results
    folder work end to end (tiny, TP2×PP2, 2 nodes × 2 ranks on gloo)."""
    root = Path(__file__).resolve().parents[1]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf '127.0.0.1\\n127.0.0.1\\n'\n")
    # srun OPTIONS... env K=V ... python ...: drop srun's own options, run the rest
    (bin_dir / "srun").write_text('#!/bin/sh\nwhile [ "$1" != "env" ]; do shift; done\nexec "$@"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    (tmp_path / "results").mkdir()
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "stand-in[1-2]",
           "SLURM_GPUS_PER_NODE": "2", "SLURM_JOB_ID": "42", "ENGINE": "tiny", "TP": "2", "PP": "2",
           "PROMPT_LEN": "8", "GEN_LEN": "3", "RESULTS_DIR": str(tmp_path / "results"), "LLMCOMM_PYTHON": sys.executable,
           "PYTHONPATH": str(root), "GLOO_SOCKET_IFNAME": "lo"}
    proc = subprocess.run(["bash", str(root / "ci" / "slurm" / "llmcomm-multinode.sbatch")], env=env, cwd=root,
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [run_json] = (tmp_path / "results").glob("llmcomm-nodes-*/run.json")  # the launch's own private folder
    assert run_json.parent.stat().st_mode & 0o777 == 0o700
    doc = json.loads(run_json.read_text())
    assert (doc["case"]["tp"], doc["case"]["pp"], doc["case"]["world_size"]) == (2, 2, 4)
    assert doc["tokens"] == run_engine(RunConfig(TINY, Layout(2, 2), prompt_len=8, gen_len=3, repeats=1)).tokens


def test_kubernetes_template_is_a_pytorchjob_running_the_rank_wrapper():
    import yaml

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "ci" / "kubernetes" / "pytorchjob.yaml").read_text())
    assert doc["kind"] == "PyTorchJob" and doc["apiVersion"] == "kubeflow.org/v1"
    spec = doc["spec"]
    assert spec["elasticPolicy"]["rdzvBackend"] == "c10d" and spec["runPolicy"]["backoffLimit"] == 0
    for role in ("Master", "Worker"):
        container = spec["pytorchReplicaSpecs"][role]["template"]["spec"]["containers"][0]
        script = container["args"][0]
        assert "-m llmcomm_tests.runtime.node_rank --results /results" in script
        assert "--target llmcomm_tests.runtime.torchrun_entry:main" in script and "--json /results/run.json" in script
        assert {"name": "results", "mountPath": "/results"} in container["volumeMounts"]


@needs_netns
def test_cluster_command_up_status_down():
    root = Path(__file__).resolve().parents[1]

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "llmcomm_tests.commands", "cluster", *args], cwd=root,
                              capture_output=True, text=True, timeout=60)

    up = cli("up", "--nodes", "2", "--ranks-per-node", "1", "--inter-rate", "1gbit", "--json")
    assert up.returncode == 0, up.stderr
    cid = json.loads(up.stdout)["id"]
    try:
        assert {f"{netns.PREFIX}{cid}-n0", f"{netns.PREFIX}{cid}-n1"} <= set(netns.existing_namespaces())
        assert cid in cli("status").stdout
        bad = cli("rate", "--id", cid, "--inter-rate", "fast")
        assert bad.returncode == 2 and "bad link rate 'fast'" in bad.stderr
    finally:
        down = cli("down", "--id", cid)
    assert down.returncode == 0 and "removed 3 namespace(s)" in down.stdout
    assert not [ns for ns in netns.existing_namespaces() if cid in ns]


# -- the plugin: a spec's topology, the session's node options ----------------------------------------

TOPO_SPEC = """\
name: two-node
engine: {preset: tiny, n_layers: 2}
workload: {batch: 1, prompt_len: 8, gen_len: 3}
layouts: ["2x2", "2x1"]
repeats: 2
warmup: 0
"""
QUIET = ("-p", "no:cacheprovider", "-p", "no:hypothesispytest")


def _rows(pytester) -> dict:
    report = json.loads((pytester.path / "reports" / "llmcomm-report.json").read_text())
    return {item["case_id"]: {(r["check"], r["name"]): r for r in item["verdict"]["rows"]} for item in report["items"]}


def test_topology_spec_gives_one_case_per_rate_and_located_errors(tmp_path):
    from llmcomm_tests.spec import SpecError, load_spec

    path = tmp_path / "t.yaml"
    path.write_text(TOPO_SPEC + "topology: {nodes: 2, ranks_per_node: 2, emulate: true, inter_rates: [200mbit, 1gbit]}\n")
    cases = load_spec(path).cases()
    assert [c.id for c in cases] == ["tp2-pp2-b1-s8-g3-200mbit", "tp2-pp2-b1-s8-g3-1gbit",
                                     "tp2-pp1-b1-s8-g3-200mbit", "tp2-pp1-b1-s8-g3-1gbit"]
    assert [c.multi_node for c in cases] == [True, True, False, False]
    for topo, line, words in [("{nodes: 2, ranks_per_node: 1, emulate: true}", 4, "layouts[0]: tp2-pp2 needs 4 ranks"),
                              ("{nodes: 2, ranks_per_node: 2, emulate: true, inter_rates: fast}", 7,
                               "topology.inter_rates: a link rate is"),
                              ("{nodes: 2, ranks_per_node: 2, emulate: true, results_dir: /shared}", 7,
                               "topology.results_dir: a spec is data and cannot set a folder")]:
        path.write_text(TOPO_SPEC + f"topology: {topo}\n")
        with pytest.raises(SpecError) as info:
            load_spec(path)
        assert info.value.line == line and words in str(info.value), str(info.value)
    path.write_text(TOPO_SPEC + "framework: vllm\ntopology: {nodes: 2, ranks_per_node: 2, emulate: true}\n")
    with pytest.raises(SpecError, match="several nodes need framework: ours"):
        load_spec(path)


def test_session_options_give_a_topology_and_a_spec_keeps_its_own():
    from llmcomm_tests.spec.topology import Topology, for_session

    emulated = for_session(None, 4, 2, None, ("1gbit",), None, (), None)
    assert (emulated.nodes, emulated.ranks_per_node, emulated.emulate, emulated.inter_rates) == (2, 2, True, ("1gbit",))
    real = for_session(None, 4, None, 1, (), "ssh {host}", ("a", "b"), "/shared")
    assert (real.nodes, real.ranks_per_node, real.node_cmd, real.hosts, real.results_dir) == \
        (2, 1, "ssh {host}", ("a", "b"), "/shared")
    own = Topology(2, 2, emulate=True, inter_rates=("200mbit",))
    assert for_session(own, 4, 3, None, (), None, (), None) == own  # the spec's own wins
    assert for_session(own, 4, None, None, ("5mbit",), None, (), None).inter_rates == ("5mbit",)
    assert for_session(None, 4, None, None, ("5mbit",), None, (), None) is None


@pytest.mark.parametrize("args, words", [
    (["--llmcomm-emulate-nodes", "2", "--llmcomm-node-cmd", "ssh {host}"], "give one"),
    (["--llmcomm-node-cmd", "ssh {host}"], "needs --llmcomm-hosts"),
    (["--llmcomm-inter-rate", "fast"], "--llmcomm-inter-rate: bad link rate 'fast'"),
])
def test_bad_node_options_are_usage_errors(pytester, args, words):
    pytester.makefile(".yaml", **{"slo_specs/two-node": TOPO_SPEC})
    result = pytester.runpytest_inprocess(*QUIET, "--collect-only", "-q", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert words in result.stderr.str()


def test_plugin_runs_cases_on_two_nodes_through_a_node_command(pytester):
    """--llmcomm-node-cmd with a plain local command (no namespaces): rank r on node r // 2, the
    volume per tier exact, latency n/a with the reason (cpu-loopback has no inter-node tier); a
    larger all-reduce (planted) fails the intra-node tier row and nothing else's tier."""
    pytester.makefile(".yaml", **{"slo_specs/two-node": TOPO_SPEC})
    nodes = ("--llmcomm-node-cmd", "env", "--llmcomm-hosts", "127.0.0.1,127.0.0.1")
    result = pytester.runpytest_subprocess(*QUIET, *nodes, "-k", "tp2-pp2")
    result.assert_outcomes(passed=1, deselected=1)
    rows = _rows(pytester)["tp2-pp2-b1-s8-g3"]
    intra, inter = rows[("volume", "intra-node tier (2 ranks per node)")], rows[("volume", "inter-node tier (2 ranks per node)")]
    assert intra["verdict"] == inter["verdict"] == "pass"
    assert intra["n"] == intra["model_n"] > 0 and inter["n"] == inter["model_n"] > 0  # TP inside, PP across
    # bytes as called and wire bytes apart (the LM-head gather puts (n-1)/n of its bytes on the wire)
    assert intra["measured"] == intra["model"] != intra["measured_wire"] == intra["model_wire"]
    assert rows[("latency", "all op classes")]["verdict"] == "n/a"
    assert "not calibrated on this cluster" in rows[("latency", "all op classes")]["detail"]

    result = pytester.runpytest_subprocess(*QUIET, *nodes, "-k", "tp2-pp2", "--llmcomm-inject", "all_reduce@mlp:size=2")
    result.assert_outcomes(failed=1, deselected=1)
    rows = _rows(pytester)["tp2-pp2-b1-s8-g3"]
    assert rows[("volume", "intra-node tier (2 ranks per node)")]["verdict"] == "fail"
    assert "intra/all_reduce/decode/mlp" in rows[("volume", "intra-node tier (2 ranks per node)")]["detail"]
    assert rows[("volume", "inter-node tier (2 ranks per node)")]["verdict"] == "pass"


def test_emulated_cases_skip_with_the_reason_where_namespaces_are_unavailable(pytester, monkeypatch):
    import importlib

    # from sys.modules: an earlier in-process pytester run may have left a stale package attribute
    pytest_items = importlib.import_module("llmcomm_tests.suite.items")
    monkeypatch.setattr(pytest_items, "_namespaces_here", lambda: (False, "cannot create a network namespace: EPERM"))
    pytester.makefile(".yaml", **{"slo_specs/two-node": TOPO_SPEC})
    result = pytester.runpytest_inprocess(*QUIET, "-rs", "--llmcomm-emulate-nodes", "2")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*emulated nodes need network namespaces, unavailable here: cannot create*EPERM*"])


@needs_netns
def test_emulated_spec_runs_through_the_plugin_and_leaves_no_namespace(pytester):
    before = set(netns.existing_namespaces())
    pytester.makefile(".yaml", **{"slo_specs/two-node": TOPO_SPEC + "topology: {nodes: 2, ranks_per_node: 2, "
                                                                 "emulate: true, inter_rates: 1gbit}\n"})
    result = pytester.runpytest_subprocess(*QUIET, "-k", "tp2-pp2")
    result.assert_outcomes(passed=1, deselected=1)
    rows = _rows(pytester)["tp2-pp2-b1-s8-g3-1gbit"]
    assert rows[("volume", "inter-node tier (2 ranks per node)")]["verdict"] == "pass"
    assert set(netns.existing_namespaces()) == before  # the session's cluster went with it
