"""Where the engine is: phase, decode step and call site of the next communication op.

The engine sets these; the recorder reads them when an op is issued.  Kept as plain module state
(not a contextvar) because ranks are single-threaded and the recorder reads it on every op.
"""

from __future__ import annotations

from contextlib import contextmanager

phase: str = "none"  # "prefill" | "decode" | "none" (outside a generate call)
step: int = -1  # decode step (1..gen_len-1); 0 for prefill
site: str = ""  # e.g. "layer3.attn.o_proj", "embed", "lm_head", "pp.boundary1"


def set_phase(new_phase: str, new_step: int) -> None:
    global phase, step
    phase, step = new_phase, new_step


@contextmanager
def at_site(name: str):
    global site
    previous, site = site, name
    try:
        yield
    finally:
        site = previous
