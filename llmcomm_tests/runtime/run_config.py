"""What one run of the engine is (``RunConfig``; a spec's case gives it with ``RunConfig.for_case``),
and its round trip through a command line.

``llmcomm run`` and the torchrun entry on every node (``runtime.torchrun_entry``) read the same
arguments (``add_arguments`` → ``RunConfig.from_arguments``); the node launcher writes them
(``RunConfig.to_arguments``).  One definition, so what a node runs is what the parent asked for.
No torch here (``llmcomm --help`` stays instant).
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmcomm_tests.core.arguments import non_negative_int, output_file, positive_float, positive_int
from llmcomm_tests.core.documents import CaseInfo
from llmcomm_tests.engine.config import EngineShape, engine_from_text
from llmcomm_tests.engine.layout import Layout
from llmcomm_tests.runtime.faults import parse_faults

if TYPE_CHECKING:
    from llmcomm_tests.spec.types import Case


@dataclass(frozen=True)
class RunConfig:
    engine: EngineShape
    layout: Layout
    batch: int = 1
    prompt_len: int = 32
    gen_len: int = 8
    dtype: str = "fp32"
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    keep_logits: bool = False
    cross_check: bool = False  # also count ops with torch.profiler, an independent source
    keep_records: bool = False  # every call in the run document (large: a summary per class is kept anyway)
    inject: tuple = field(default_factory=tuple)  # planted faults (llmcomm_tests.runtime.faults)
    # where each call's wait/transfer split comes from: "host" clock, the backend's own kernels or
    # events under the "profiler" (runtime/kernel_timing.py), or "auto" (kernels on NCCL only)
    comm_timing: str = "auto"

    @classmethod
    def for_case(cls, case: "Case", *, repeats: int | None = None, keep_records: bool = False,
                 inject: tuple = ()) -> "RunConfig":
        """The run of a spec's case: ``repeats`` (None: the spec's) overrides the case's count,
        ``inject`` holds planted faults (``faults.Fault``)."""
        return cls(case.engine, case.layout, batch=case.batch, prompt_len=case.prompt_len, gen_len=case.gen_len,
                   dtype=case.dtype, repeats=max(1, case.repeats if repeats is None else repeats),
                   warmup=case.warmup,
                   # the tier volume check classifies every call by the nodes it spans
                   keep_records=keep_records or case.topology is not None, inject=tuple(inject))

    def case_info(self, backend: str) -> CaseInfo:
        return CaseInfo(self.engine.to_dict(), self.layout.tp, self.layout.pp, self.batch, self.prompt_len,
                        self.gen_len, self.dtype, backend, self.layout.world_size, self.repeats, self.warmup,
                        self.seed)

    def to_arguments(self, backend: str, timeout_s: float) -> list[str]:
        """This run as arguments of ``add_arguments`` (``from_arguments`` reads them back)."""
        args = ["--engine", json.dumps(self.engine.to_dict()), "--tp", str(self.layout.tp),
                "--pp", str(self.layout.pp), "--batch", str(self.batch), "--prompt-len", str(self.prompt_len),
                "--gen-len", str(self.gen_len), "--dtype", self.dtype, "--repeats", str(self.repeats),
                "--warmup", str(self.warmup), "--seed", str(self.seed), "--backend", backend,
                "--timeout", f"{timeout_s:g}"]
        args += ["--keep-records"] * self.keep_records + ["--cross-check"] * self.cross_check
        args += ["--comm-timing", self.comm_timing]
        for fault in self.inject:
            args += ["--inject", str(fault)]
        return args

    @classmethod
    def from_arguments(cls, args: argparse.Namespace) -> "RunConfig":
        """The run ``add_arguments`` parsed; ValueError for a request the engine cannot serve."""
        args.engine.check_request(args.prompt_len, args.gen_len)
        return cls(args.engine, Layout(args.tp, args.pp), batch=args.batch,
                   prompt_len=args.prompt_len, gen_len=args.gen_len, dtype=args.dtype, repeats=args.repeats,
                   warmup=args.warmup, seed=args.seed, cross_check=args.cross_check,
                   keep_records=args.keep_records or bool(args.trace_path),
                   inject=tuple(parse_faults(args.inject)), comm_timing=args.comm_timing)


def engine_shape(text: str) -> EngineShape:
    """An engine shape as specs give it: a preset name, a YAML/JSON mapping (``{preset: tiny,
    n_layers: 2}``), or a YAML/JSON file holding one."""
    try:
        return engine_from_text(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_arguments(parser) -> None:
    parser.add_argument("--engine", default="tiny", type=engine_shape,
                        help="preset name (tiny, llama-3.1-8b, …), a shape mapping as in specs "
                             "('{preset: tiny, n_layers: 2}'), or a YAML/JSON file holding one")
    parser.add_argument("--tp", type=positive_int, default=1)
    parser.add_argument("--pp", type=positive_int, default=1)
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--prompt-len", type=positive_int, default=32)
    parser.add_argument("--gen-len", type=positive_int, default=8)
    parser.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed repetitions")
    parser.add_argument("--warmup", type=non_negative_int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="auto", choices=["auto", "gloo", "nccl"])
    parser.add_argument("--ranks", type=positive_int, default=None, help="ranks available (default: any)")
    parser.add_argument("--timeout", type=positive_float, default=300.0, help="seconds before hung ranks are killed")
    parser.add_argument("--threads-per-rank", type=positive_int, default=1, help="intra-op threads of each rank")
    parser.add_argument("--cross-check", action="store_true", help="count ops with torch.profiler too")
    parser.add_argument("--keep-records", action="store_true",
                        help="every call in the run document (default: a bounded summary per op class)")
    parser.add_argument("--comm-timing", default="auto", choices=["auto", "host", "profiler"],
                        help="wait/transfer split from the host clock or from the backend's kernels under "
                             "torch.profiler (auto: kernels on NCCL)")
    parser.add_argument("--inject", action="append", default=[], help="planted fault, e.g. all_reduce:delay=10%%")
    parser.add_argument("--json", dest="json_path", type=output_file, default=None,
                        help="write the run document here (its folder must exist)")
    parser.add_argument("--trace", dest="trace_path", type=output_file, default=None,
                        help="write the calls as a Chrome trace here (opens in Perfetto; its folder must exist)")
