"""What a planted slowdown adds per call, from the model, for the detection tables: the number to
read next to the change they measure (``runtime/fault_spec.py`` sizes it the same way).

    planted_text(parse_fault("all_reduce:delay=10%"), cfg) -> "us/call decode +37.2, prefill +39.3"
"""

from __future__ import annotations

from llmcomm_tests.analytic.hardware import load_profile
from llmcomm_tests.analytic.volume import op_instances
from llmcomm_tests.runtime.fault_spec import SLOWDOWNS, model_transfer


def planted_per_call(fault, cfg, profile=None) -> dict[str, list[float]]:
    """phase -> the seconds ``fault`` adds to each kind of call it selects in ``cfg``'s engine
    (cpu-loopback unless ``profile``); empty for a fault that is not a slowdown."""
    if fault.kind not in SLOWDOWNS:
        return {}
    profile = profile or load_profile("cpu-loopback")
    out: dict[str, list[float]] = {}
    for row in op_instances(cfg.engine, cfg.layout, cfg.batch, cfg.prompt_len, cfg.gen_len, cfg.dtype):
        op = "send" if row["op"] == "send_recv" else row["op"]
        if op not in fault.ops or not fault.selects(row["phase"], row["site"], row["bytes"]):
            continue
        span = list(row["ranks"])[:2] if op == "send" else list(row["ranks"])
        seconds = fault.seconds(model_transfer(profile, op, span, row["bytes"]))
        if seconds not in out.setdefault(row["phase"], []):
            out[row["phase"]].append(seconds)
    return out


def planted_text(fault, cfg, profile=None) -> str:
    """``us/call decode +37.2, prefill +39.3``; ``-`` for a fault that is not a slowdown."""
    if fault.kind not in SLOWDOWNS:
        return "-"
    per_phase = planted_per_call(fault, cfg, profile)
    if not per_phase:
        return "selects no call"
    parts = [f"{phase} " + "/".join(f"+{s * 1e6:.1f}" for s in sorted(v)) for phase, v in sorted(per_phase.items())]
    return "us/call " + ", ".join(parts)
