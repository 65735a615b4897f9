"""An engine shape → a local Hugging Face Llama checkpoint holding our engine's seeded weights.

The folder holds ``config.json`` (``LlamaForCausalLM``) and ``model.safetensors`` with exactly the
tensors ``engine.weights.full_state_dict`` draws, so vLLM, transformers and our engine run the same
numbers.  No tokenizer: frameworks are driven with token ids.  Checkpoints are cached by (shape,
seed, dtype) under ``$LLMCOMM_CACHE`` (default ``~/.cache/llmcomm``)/checkpoints and written to a
temporary folder renamed into place, so concurrent writers never see a half-written one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from llmcomm_tests.engine.config import EngineShape
from llmcomm_tests.engine.parallel import TORCH_DTYPES
from llmcomm_tests.engine.weights import full_state_dict

TORCH_DTYPE_NAMES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
FORMAT = 2  # bump when the folder's content changes, so stale caches are not reused


def cache_root() -> Path:
    return Path(os.environ.get("LLMCOMM_CACHE") or Path.home() / ".cache" / "llmcomm") / "checkpoints"


def hf_config(shape: EngineShape, dtype: str = "fp32") -> dict:
    """Llama config.json of the shape (untied embeddings, as our engine)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": shape.vocab,
        "hidden_size": shape.hidden,
        "intermediate_size": shape.ffn,
        "num_hidden_layers": shape.n_layers,
        "num_attention_heads": shape.n_heads,
        "num_key_value_heads": shape.n_kv_heads,
        "head_dim": shape.head_dim,
        "hidden_act": "silu",
        "rms_norm_eps": shape.norm_eps,
        "rope_theta": shape.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": shape.rope_theta},
        "max_position_embeddings": shape.max_position,
        "tie_word_embeddings": False,
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": 0,
        "eos_token_id": None,  # random weights: no token may end generation early
        "pad_token_id": None,
        "torch_dtype": TORCH_DTYPE_NAMES[dtype],
        "dtype": TORCH_DTYPE_NAMES[dtype],
    }


def checkpoint_key(shape: EngineShape, seed: int, dtype: str) -> str:
    blob = json.dumps({"shape": shape.to_dict(), "seed": seed, "dtype": dtype, "format": FORMAT}, sort_keys=True)
    return f"{shape.name}-s{seed}-{dtype}-{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def write_checkpoint(shape: EngineShape, folder: Path, seed: int = 0, dtype: str = "fp32") -> Path:
    """Write the checkpoint into ``folder`` (created)."""
    from safetensors.torch import save_file


    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.to(TORCH_DTYPES[dtype]).contiguous() for k, v in full_state_dict(shape, seed).items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config(shape, dtype), indent=1))
    (folder / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    return folder


def ensure_checkpoint(shape: EngineShape, seed: int = 0, dtype: str = "fp32", root: Path | None = None) -> Path:
    """The cached checkpoint folder for (shape, seed, dtype), written on first use."""
    root = Path(root) if root is not None else cache_root()
    final = root / checkpoint_key(shape, seed, dtype)
    if (final / "config.json").exists() and (final / "model.safetensors").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".writing-", dir=root))
    try:
        write_checkpoint(shape, tmp, seed, dtype)
        try:
            tmp.rename(final)
        except OSError:  # another writer got there first: theirs is identical
            if not (final / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
