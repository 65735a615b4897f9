"""llmcomm command line: run | predict | calibrate | bench-comm | report | budgets | ab | cluster | advise.

Every subcommand is a module of this package with ``add_arguments(parser)`` and ``main(args)``;
this module only wires them together and keeps torch out of ``--help``.
"""

from __future__ import annotations

import importlib
import sys

from llmcomm_tests.core.arguments import OneLineParser

# name -> (module, help).  Each module defines add_arguments(parser) and main(args) -> int.
COMMANDS = {
    "run": ("llmcomm_tests.commands.run", "launch the engine under one layout and measure it"),
    "predict": ("llmcomm_tests.commands.predict", "analytic volume and TTFT/TPOT for layouts"),
    "calibrate": ("llmcomm_tests.commands.calibrate", "fit a hardware profile from a comm sweep"),
    "bench-comm": ("llmcomm_tests.commands.bench_comm", "nccl-tests-style size sweep over torch.distributed"),
    "report": ("llmcomm_tests.commands.report", "build the HTML report from a report directory"),
    "budgets": ("llmcomm_tests.commands.budgets", "suggest SLO budgets from a measured session (a stated margin)"),
    "ab": ("llmcomm_tests.commands.ab", "A/B gate: pytest with every case run in two Python environments"),
    "cluster": ("llmcomm_tests.commands.cluster", "emulated cluster: network namespaces with a shaped link"),
    "advise": ("llmcomm_tests.commands.advise", "rank TP x PP layouts by predicted TTFT/TPOT and inter-node bytes"),
}


def build_parser(command: str | None = None) -> OneLineParser:
    """Only the chosen subcommand's module is imported (``llmcomm --help`` stays instant).  Bad
    arguments are one line and exit 2 (:class:`OneLineParser`), before anything is launched."""
    parser = OneLineParser(prog="llmcomm", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            module = importlib.import_module(module_name)
            module.add_arguments(command_parser)
            command_parser.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        return int(args._module.main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130

