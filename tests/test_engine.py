"""The engine: matches Hugging Face's Llama, and every layout generates what one process does."""

import numpy as np
import pytest
import torch

from llmcomm_tests.engine.config import PRESETS, EngineShape
from llmcomm_tests.engine.layout import Layout, LayoutError, kv_heads_of
from llmcomm_tests.engine.parallel import ParallelEngine
from llmcomm_tests.engine.weights import full_state_dict
from llmcomm_tests.runtime.measure import run_engine
from llmcomm_tests.runtime.run_config import RunConfig

LAYOUTS = [(1, 1), (2, 1), (4, 1), (1, 2), (1, 4), (2, 2)]


def hf_reference(shape: EngineShape, seed: int, tmp_path):
    """transformers' LlamaForCausalLM with our weights, saved to and loaded from a local folder."""
    transformers = pytest.importorskip("transformers")
    config = transformers.LlamaConfig(
        vocab_size=shape.vocab, hidden_size=shape.hidden, intermediate_size=shape.ffn,
        num_hidden_layers=shape.n_layers, num_attention_heads=shape.n_heads, num_key_value_heads=shape.n_kv_heads,
        rms_norm_eps=shape.norm_eps, rope_theta=shape.rope_theta, max_position_embeddings=256,
        tie_word_embeddings=False, attn_implementation="eager",
    )
    model = transformers.LlamaForCausalLM(config)
    missing, unexpected = model.load_state_dict(full_state_dict(shape, seed), strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    model.save_pretrained(tmp_path)
    return transformers.LlamaForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()


def test_single_process_engine_matches_transformers_llama(tiny, tmp_path):
    torch.manual_seed(0)
    prompt = torch.randint(0, tiny.vocab, (2, 16), generator=torch.Generator().manual_seed(3))
    ours = ParallelEngine(tiny, Layout(1, 1), 0, seed=7).generate(prompt, 6, keep_logits=True)
    ref = hf_reference(tiny, 7, tmp_path)
    ids, ref_tokens, ref_logits = prompt, [], []
    with torch.no_grad():  # greedy, full recompute: no cache involved on the reference side
        for _ in range(6):
            logits = ref(ids).logits[:, -1]
            ref_logits.append(logits)
            nxt = logits.argmax(-1)
            ref_tokens.append(nxt)
            ids = torch.cat([ids, nxt[:, None]], dim=1)
    assert ours.tokens == torch.stack(ref_tokens, 1).tolist()
    torch.testing.assert_close(ours.logits, torch.stack(ref_logits), rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def runs(tiny):
    cfg = dict(batch=2, prompt_len=16, gen_len=6, repeats=1, warmup=0, keep_logits=True)
    return {lay: run_engine(RunConfig(tiny, Layout(*lay), **cfg), timeout_s=120) for lay in LAYOUTS}


@pytest.mark.parametrize("layout", LAYOUTS[1:], ids=lambda lay: f"tp{lay[0]}-pp{lay[1]}")
def test_every_layout_generates_the_single_process_tokens(runs, layout):
    assert runs[layout].tokens == runs[(1, 1)].tokens
    np.testing.assert_allclose(runs[layout].logits, runs[(1, 1)].logits, rtol=1e-4, atol=1e-4)


def test_tokens_differ_with_the_seed(tiny):
    """Guards the layout test against an engine that ignores its weights."""
    prompt = torch.randint(0, tiny.vocab, (1, 8), generator=torch.Generator().manual_seed(1))
    a = ParallelEngine(tiny, Layout(), 0, seed=0).generate(prompt, 4).tokens
    b = ParallelEngine(tiny, Layout(), 0, seed=1).generate(prompt, 4).tokens
    assert a != b


def test_replicated_kv_heads_match_single_process():
    """tp = 4 > 2 KV heads: each rank keeps the KV head its q heads use (not silently dropped)."""
    shape = EngineShape("gqa", n_layers=2, hidden=128, n_heads=8, n_kv_heads=2, ffn=256, vocab=512)
    assert [list(kv_heads_of(shape, 4, r)) for r in range(4)] == [[0], [0], [1], [1]]
    cfg = dict(batch=1, prompt_len=8, gen_len=4, repeats=1, warmup=0, keep_logits=True)
    single = run_engine(RunConfig(shape, Layout(1, 1), **cfg))
    tp4 = run_engine(RunConfig(shape, Layout(4, 1), **cfg))
    assert tp4.tokens == single.tokens
    np.testing.assert_allclose(tp4.logits, single.logits, rtol=1e-4, atol=1e-4)


def test_uneven_stage_split_follows_vllm():
    assert [len(r) for r in Layout(1, 3).stage_layers(4)] == [1, 2, 1]
    assert [len(r) for r in Layout(1, 3).stage_layers(10)] == [3, 4, 3]
    assert [list(r) for r in Layout(1, 2).stage_layers(5)] == [[0, 1, 2], [3, 4]]


@pytest.mark.parametrize("layout, available, reason", [
    (Layout(3, 1), None, "tp=3 does not divide 8 attention heads"),
    (Layout(1, 5), None, "pp=5 exceeds 4 layers"),
    (Layout(2, 2), 2, "needs 4 ranks, only 2 available"),
    (Layout(16, 1), None, "tp=16 does not divide 8 attention heads"),
])
def test_impossible_layouts_are_refused_with_one_line(tiny, layout, available, reason):
    with pytest.raises(LayoutError) as info:
        layout.validate(tiny, available)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_vocab_not_divisible_is_refused():
    shape = EngineShape("odd", n_layers=2, hidden=64, n_heads=4, n_kv_heads=4, ffn=128, vocab=1001)
    with pytest.raises(LayoutError, match="does not divide vocab 1001"):
        Layout(2, 1).validate(shape)


def test_presets_hold_the_public_shapes():
    s = PRESETS["llama-3.1-8b"]
    assert (s.n_layers, s.hidden, s.n_heads, s.n_kv_heads, s.ffn, s.vocab) == (32, 4096, 32, 8, 14336, 128256)
    # 8.03 B parameters is Meta's published count for Llama-3.1-8B.
    assert abs(s.n_params() - 8.03e9) / 8.03e9 < 0.005
