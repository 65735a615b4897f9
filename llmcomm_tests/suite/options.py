"""Plugin options, each resolved like pytest-timeout's: command line → environment → ini → default.

One small parser per option keeps bad values pointed at where they came from: values are parsed by
core/units, and a bad one reads ``--llmcomm-repeats: expected a whole number, got 'x'`` (the
source, then the parser's message, which names the value).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from llmcomm_tests.core.envinfo import cuda_device_count
from llmcomm_tests.core.units import parse_count, parse_flag, parse_positive_number, rate_bytes_per_s, split_list
from llmcomm_tests.judging.baseline import check_name


@dataclass(frozen=True)
class Option:
    name: str  # the attribute on LLMCommOptions
    flag: str  # command-line flag
    env: str | None
    ini: str
    default: object
    parse: object  # str -> value
    help: str


def _positive_int(text: str) -> int:
    return parse_count(text, minimum=1)


def _backend(text: str) -> str:
    if text not in ("auto", "gloo", "nccl"):
        raise ValueError(f"must be auto, gloo or nccl, got {text!r}")
    return text


def _anchor(text: str) -> str:
    if text not in ("auto", "off"):
        raise ValueError(f"must be auto or off, got {text!r}")
    return text


def _baseline_name(text: str) -> str | None:
    return check_name(text) if text else None


def _optional_str(text: str) -> str | None:
    return text or None


def _python(text: str) -> str | None:
    """An interpreter for the A/B gate's arm B: an executable file (a name is looked up on PATH)."""
    if not text:
        return None
    found = shutil.which(text)
    if found is None:
        raise ValueError(f"no executable Python interpreter at {text!r}")
    return os.path.abspath(found) if os.sep in text else found


def _names(text: str) -> tuple[str, ...]:
    return tuple(split_list(text))


def _rates(text: str) -> tuple[str, ...]:
    rates = _names(text)
    for rate in rates:
        rate_bytes_per_s(rate)  # raises ValueError naming the bad rate
    return rates


OPTIONS = (
    Option("gpus", "--gpus", "LLMCOMM_GPUS", "llmcomm_gpus", None, _positive_int,
           "ranks available to a case, >= 1 (default: the CUDA devices torch sees, else 4 CPU ranks on gloo)"),
    Option("backend", "--llmcomm-backend", "LLMCOMM_BACKEND", "llmcomm_backend", "auto", _backend,
           "auto (NCCL with one GPU per rank when there are enough devices, else gloo), gloo or nccl"),
    Option("hardware", "--llmcomm-hardware", "LLMCOMM_HARDWARE", "llmcomm_hardware", None, _optional_str,
           "hardware profile of this machine (name or YAML path); default cpu-loopback on gloo"),
    Option("report_dir", "--llmcomm-report-dir", "LLMCOMM_REPORT_DIR", "llmcomm_report_dir", "reports", str,
           "where JUnit, JSON and HTML reports go"),
    Option("repeats", "--llmcomm-repeats", "LLMCOMM_REPEATS", "llmcomm_repeats", None, _positive_int,
           "timed repetitions per case (overrides the specs)"),
    Option("timeout", "--llmcomm-timeout", "LLMCOMM_TIMEOUT", "llmcomm_timeout", 300.0, parse_positive_number,
           "seconds before a case's hung ranks are killed"),
    Option("baseline_save", "--llmcomm-baseline-save", "LLMCOMM_BASELINE_SAVE", "llmcomm_baseline_save", None,
           _baseline_name, "store each case's results as baseline NAME"),
    Option("baseline_compare", "--llmcomm-baseline-compare", "LLMCOMM_BASELINE_COMPARE",
           "llmcomm_baseline_compare", None, _baseline_name, "compare each case against baseline NAME"),
    Option("baseline_dir", "--llmcomm-baseline-dir", "LLMCOMM_BASELINE_DIR", "llmcomm_baseline_dir", ".llmcomm/baselines",
           str, "where baselines live (one folder per hardware key)"),
    Option("keep_records", "--llmcomm-keep-records", "LLMCOMM_KEEP_RECORDS", "llmcomm_keep_records", False, parse_flag,
           "keep every communication call in the reports (default: a bounded summary per op class)"),
    Option("trace", "--llmcomm-trace", "LLMCOMM_TRACE", "llmcomm_trace", False, parse_flag,
           "write each case's calls as a Chrome trace (Perfetto): <report dir>/traces/<spec>-<case>.json"),
    Option("ab", "--llmcomm-ab", "LLMCOMM_AB", "llmcomm_ab", None, _python,
           "A/B gate: run every case in this session's Python (A) and in PYTHON (B), interleaved in "
           "seeded AB/BA pairs; the same Python twice is an A/A calibration"),
    Option("ab_pairs", "--llmcomm-ab-pairs", "LLMCOMM_AB_PAIRS", "llmcomm_ab_pairs", 40, _positive_int,
           "A/B pair budget per case (sequential stopping may use fewer)"),
    Option("emulate_nodes", "--llmcomm-emulate-nodes", "LLMCOMM_EMULATE_NODES", "llmcomm_emulate_nodes", None,
           _positive_int, "run every case on N nodes emulated on this host (network namespaces, a shaped link; "
                          "needs CAP_NET_ADMIN), unless its spec has a topology:"),
    Option("ranks_per_node", "--llmcomm-ranks-per-node", "LLMCOMM_RANKS_PER_NODE", "llmcomm_ranks_per_node", None,
           _positive_int, "ranks on each node with --llmcomm-emulate-nodes / --llmcomm-node-cmd "
                          "(default: a spec's widest layout over the nodes)"),
    Option("inter_rate", "--llmcomm-inter-rate", "LLMCOMM_INTER_RATE", "llmcomm_inter_rate", (), _rates,
           "emulated inter-node link rate(s), comma-separated tc rates (e.g. 200mbit,1gbit): every case on "
           "emulated nodes runs once per rate (overrides a spec's inter_rates)"),
    Option("node_cmd", "--llmcomm-node-cmd", "LLMCOMM_NODE_CMD", "llmcomm_node_cmd", None, _optional_str,
           "real nodes: the template that starts torchrun on one node, e.g. 'ssh {host}' (with --llmcomm-hosts)"),
    Option("hosts", "--llmcomm-hosts", "LLMCOMM_HOSTS", "llmcomm_hosts", (), _names,
           "real nodes: comma-separated hosts, node 0 (the rendezvous host) first"),
    Option("results_dir", "--llmcomm-results-dir", "LLMCOMM_RESULTS_DIR", "llmcomm_results_dir", None, _optional_str,
           "real nodes: a folder every node sees, where the ranks leave their results"),
    Option("anchor", "--llmcomm-anchor", "LLMCOMM_ANCHOR", "llmcomm_anchor", "auto", _anchor,
           "auto: before the first case judged against a profile with an anchor probe (cpu-loopback), "
           "re-measure a slice of its calibration here: an op this host runs outside its band gets n/a latency "
           "rows, and a case whose latency rows fail probes again, its failures standing only where that probe "
           "shows the host inside its calibration (said in every report); off: judge against the profile as "
           "calibrated"),
    Option("ab_seed", "--llmcomm-ab-seed", "LLMCOMM_AB_SEED", "llmcomm_ab_seed", 0, parse_count,
           "seed of the A/B pair order"),
)


@dataclass(frozen=True)
class LLMCommOptions:
    gpus: int | None
    backend: str
    hardware: str | None
    report_dir: str
    repeats: int | None
    timeout: float
    baseline_save: str | None
    baseline_compare: str | None
    baseline_dir: str
    keep_records: bool = False
    trace: bool = False
    ab: str | None = None
    ab_pairs: int = 40
    ab_seed: int = 0
    emulate_nodes: int | None = None
    ranks_per_node: int | None = None
    inter_rate: tuple[str, ...] = ()
    node_cmd: str | None = None
    hosts: tuple[str, ...] = ()
    results_dir: str | None = None
    anchor: str = "auto"
    inject: tuple[str, ...] = ()


def add_options(parser) -> None:
    group = parser.getgroup("llmcomm", "llmcomm-tests: communication SLO specs")
    for opt in OPTIONS:
        if opt.parse is parse_flag:  # a switch on the command line, true/false in env and ini
            group.addoption(opt.flag, dest=f"llmcomm_{opt.name}", action="store_const", const="true", default=None,
                            help=opt.help)
        else:
            group.addoption(opt.flag, dest=f"llmcomm_{opt.name}", default=None, help=opt.help)
        parser.addini(opt.ini, opt.help, default=None)
    group.addoption("--llmcomm-inject", dest="llmcomm_inject", action="append", default=[],
                    help="plant a fault in every case, e.g. all_reduce:delay=10%% (gate self-test)")


def resolve(config) -> LLMCommOptions:
    """CLI → environment → ini → default, each value parsed by its option's parser."""
    values = {}
    for opt in OPTIONS:
        for source, raw in ((opt.flag, config.getoption(f"llmcomm_{opt.name}")),
                            (opt.env, os.environ.get(opt.env) if opt.env else None),
                            (f"ini {opt.ini}", config.getini(opt.ini))):
            if raw not in (None, ""):
                try:
                    values[opt.name] = opt.parse(str(raw))
                except ValueError as exc:
                    raise ValueError(f"{source}: {exc}") from None
                break
        else:
            values[opt.name] = opt.default
    options = LLMCommOptions(**values, inject=tuple(config.getoption("llmcomm_inject") or ()))
    if options.emulate_nodes and options.node_cmd:
        raise ValueError("--llmcomm-emulate-nodes and --llmcomm-node-cmd: give one (emulated nodes or real ones)")
    if options.node_cmd and not options.hosts:
        raise ValueError("--llmcomm-node-cmd needs --llmcomm-hosts (node 0, the rendezvous host, first)")
    return options


CPU_RANKS_DEFAULT = 4  # gloo ranks a CPU host offers when --gpus is not given


def available_ranks(options: LLMCommOptions) -> tuple[int, str]:
    """(ranks, why): --gpus wins; else CUDA devices; else CPU processes on gloo."""
    if options.gpus is not None:
        devices = cuda_device_count()
        if devices >= options.gpus:
            return options.gpus, f"--gpus {options.gpus} (CUDA devices: {devices})"
        return options.gpus, f"--gpus {options.gpus}: no {options.gpus} CUDA devices here, ranks are CPU processes on gloo"
    devices = cuda_device_count()
    if devices:
        return devices, f"{devices} CUDA devices"
    return CPU_RANKS_DEFAULT, f"no CUDA devices: up to {CPU_RANKS_DEFAULT} CPU ranks on gloo"
