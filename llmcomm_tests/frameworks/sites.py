"""Our call-site names for the module names of other frameworks' models (vLLM and transformers
name their modules alike: ``model.layers.J.self_attn.o_proj``).  Both adapters hook the same
modules, so the mapping lives here, apart from either.  No torch."""

from __future__ import annotations

import re

_SITE_PATTERNS = [
    (re.compile(r"(^|\.)embed_tokens$"), lambda m: "embed"),
    (re.compile(r"(^|\.)layers\.(\d+)\.self_attn\.o_proj$"), lambda m: f"layer{m.group(2)}.attn.o_proj"),
    (re.compile(r"(^|\.)layers\.(\d+)\.mlp\.down_proj$"), lambda m: f"layer{m.group(2)}.mlp.down_proj"),
    (re.compile(r"(^|\.)logits_processor$"), lambda m: "lm_head"),
]


def site_of(module_name: str) -> str | None:
    """Our site name for a framework's module name (None: not a communication site)."""
    for pattern, name in _SITE_PATTERNS:
        m = pattern.search(module_name)
        if m:
            return name(m)
    return None
