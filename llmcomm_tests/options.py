"""Plugin options, each resolved like pytest-timeout's: command line → environment → ini → default.

One small parser per option keeps bad values pointed at where they came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .envinfo import cuda_device_count


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
    value = int(text)
    if value < 1:
        raise ValueError("must be >= 1")
    return value


def _backend(text: str) -> str:
    if text not in ("auto", "gloo", "nccl"):
        raise ValueError("must be auto, gloo or nccl")
    return text


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise ValueError("must be > 0")
    return value


def _flag(text: str) -> bool:
    value = str(text).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {text!r}")


def _baseline_name(text: str) -> str | None:
    from .baseline import check_name

    return check_name(text) if text else None


def _optional_str(text: str) -> str | None:
    return text or None


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
    Option("timeout", "--llmcomm-timeout", "LLMCOMM_TIMEOUT", "llmcomm_timeout", 300.0, _positive_float,
           "seconds before a case's hung ranks are killed"),
    Option("baseline_save", "--llmcomm-baseline-save", "LLMCOMM_BASELINE_SAVE", "llmcomm_baseline_save", None,
           _baseline_name, "store each case's results as baseline NAME"),
    Option("baseline_compare", "--llmcomm-baseline-compare", "LLMCOMM_BASELINE_COMPARE",
           "llmcomm_baseline_compare", None, _baseline_name, "compare each case against baseline NAME"),
    Option("baseline_dir", "--llmcomm-baseline-dir", "LLMCOMM_BASELINE_DIR", "llmcomm_baseline_dir", ".llmcomm/baselines",
           str, "where baselines live (one folder per hardware key)"),
    Option("keep_records", "--llmcomm-keep-records", "LLMCOMM_KEEP_RECORDS", "llmcomm_keep_records", False, _flag,
           "keep every communication call in the reports (default: a bounded summary per op class)"),
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
    inject: tuple[str, ...] = ()


def add_options(parser) -> None:
    group = parser.getgroup("llmcomm", "llmcomm-tests: communication SLO specs")
    for opt in OPTIONS:
        if opt.parse is _flag:  # a switch on the command line, true/false in env and ini
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
                    raise ValueError(f"{source}={raw!r}: {exc}") from None
                break
        else:
            values[opt.name] = opt.default
    return LLMCommOptions(**values, inject=tuple(config.getoption("llmcomm_inject") or ()))


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
