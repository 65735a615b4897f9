"""Engine shapes and presets.

The engine is a Llama-style dense decoder.  Notation:
L layers, h hidden, a attention heads, k KV heads, d = h/a head dim, f FFN size, v vocabulary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from llmcomm_tests.core.yaml_loader import load_yaml

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_FIELD_TYPES = {"int": ((int,), "an integer"), "float": ((int, float), "a number"), "str": ((str,), "a string")}


@dataclass(frozen=True)
class EngineShape:
    name: str
    n_layers: int  # L
    hidden: int  # h
    n_heads: int  # a
    n_kv_heads: int  # k
    ffn: int  # f
    vocab: int  # v
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_position: int = 4096  # context length in tokens (config.json's max_position_embeddings)

    @property
    def head_dim(self) -> int:
        return self.hidden // self.n_heads

    def n_params(self) -> int:
        """Parameter count (untied embedding and LM head, as in Llama 3 8B+)."""
        h, d = self.hidden, self.head_dim
        attn = h * self.n_heads * d + 2 * h * self.n_kv_heads * d + self.n_heads * d * h
        mlp = 3 * h * self.ffn
        per_layer = attn + mlp + 2 * h
        return self.n_layers * per_layer + 2 * self.vocab * h + h

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "EngineShape":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown engine field(s): {', '.join(sorted(unknown))}")
        for f in fields(cls):  # annotations are strings here (postponed evaluation)
            value = data.get(f.name)
            wanted, what = _FIELD_TYPES[f.type]
            if f.name in data and (isinstance(value, bool) or not isinstance(value, wanted)):
                raise ValueError(f"engine field {f.name} must be {what}, got {value!r}")
        return cls(**data)

    def check_request(self, prompt_len: int, gen_len: int) -> None:
        """Refuse a request longer than the shape's context (the engine would allocate it all)."""
        if prompt_len + gen_len > self.max_position:
            raise ValueError(f"prompt_len + gen_len = {prompt_len} + {gen_len} exceeds the context of "
                             f"{self.name}: max_position {self.max_position} tokens")

    def validate(self) -> None:
        for name in ("n_layers", "hidden", "n_heads", "n_kv_heads", "ffn", "vocab", "max_position"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden % self.n_heads:
            raise ValueError(f"hidden {self.hidden} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary embeddings")


# Public shapes from each model's config.json on Hugging Face.
PRESETS: dict[str, EngineShape] = {
    s.name: s
    for s in (
        EngineShape("tiny", n_layers=4, hidden=256, n_heads=8, n_kv_heads=4, ffn=688, vocab=1024),
        # Not a public model: the emulated two-node cluster's CPU shape (runtime/netns.py,
        # benchmarks/two_tier_study.py) -- boundary and all-reduce tensors of 64 KiB at batch 16, so a
        # 200 mbit link costs milliseconds per token while 4 ranks still fit on 2 cores.
        EngineShape("cpu-link", n_layers=4, hidden=1024, n_heads=8, n_kv_heads=4, ffn=1024, vocab=2048),
        EngineShape("llama-3.2-1b", 16, 2048, 32, 8, 8192, 128256, rope_theta=500000.0, max_position=131072),
        EngineShape("llama-3.2-3b", 28, 3072, 24, 8, 8192, 128256, rope_theta=500000.0, max_position=131072),
        EngineShape("llama-3.1-8b", 32, 4096, 32, 8, 14336, 128256, rope_theta=500000.0, max_position=131072),
        EngineShape("llama-2-13b", 40, 5120, 40, 40, 13824, 32000, max_position=4096),
        EngineShape("llama-3.1-70b", 80, 8192, 64, 8, 28672, 128256, rope_theta=500000.0, max_position=131072),
    )
}


def resolve_engine(spec: "str | dict | EngineShape") -> EngineShape:
    """A preset name, a shape mapping (optionally ``{"preset": name, <overrides>}``) or a shape."""
    if isinstance(spec, EngineShape):
        shape = spec
    elif isinstance(spec, str):
        if spec not in PRESETS:
            raise ValueError(f"unknown engine preset {spec!r}; known: {', '.join(PRESETS)}")
        shape = PRESETS[spec]
    else:
        data = dict(spec)
        base = data.pop("preset", None)
        if base is not None:
            merged = resolve_engine(base).to_dict()
            merged.update(data)
            data = merged
        data.setdefault("name", "custom")
        shape = EngineShape.from_dict(data)
    shape.validate()
    return shape


def engine_from_text(text: str) -> EngineShape:
    """A shape from the command line, in the forms a spec's ``engine:`` takes: a preset name, a
    YAML (or JSON) mapping such as ``{preset: tiny, n_layers: 2}``, or a .yaml/.yml/.json file
    holding such a mapping."""
    text = text.strip()
    source = "engine mapping"
    if text.endswith((".yaml", ".yml", ".json")) and not text.startswith("{"):
        try:
            with open(text, encoding="utf-8") as f:
                text, source = f.read(), text
        except OSError as exc:
            raise ValueError(f"cannot read engine file {text}: {exc.strerror or exc}") from None
    elif not text.startswith("{"):
        return resolve_engine(text)
    import yaml  # late: presets need no YAML


    try:  # specs' rules: 1e-5 (and JSON's 1e-05) is a number
        data = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"{source} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{source} must be a mapping of shape fields, got {type(data).__name__}")
    try:
        return resolve_engine(data)
    except TypeError as exc:  # a field of the wrong type
        raise ValueError(f"{source}: {exc}") from None
