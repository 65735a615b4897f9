"""The vLLM side of a case: ``python -m llmcomm_tests.frameworks.vllm_driver REQUEST.json RESULT.json``.

Runs in the vLLM environment (its own venv when its pins conflict with ours), in its own process:
vLLM starts its workers with spawn and keeps global state, so one case = one driver process.  It
builds the offline engine (``LLM``, vLLM's multiprocessing executor), runs the warm-up requests
(not recorded), then the timed repetitions named ``llmcomm-rep<K>-…`` (recorded by the plugin in
every worker), stepping the engine itself so that each generated token gets the time the driver
held it.  The result JSON holds tokens, per-token times, start-up time and the environment; the
op records are in the per-rank files the plugin wrote.
"""

from __future__ import annotations

import json
import platform
import sys
import time


def _prompts(request: dict) -> list[list[int]]:
    """The same prompts as our engine's run (``measure.rank_run``): seeded by ``seed + 1``."""
    import torch

    gen = torch.Generator().manual_seed(request["seed"] + 1)
    return torch.randint(0, request["vocab"], (request["batch"], request["prompt_len"]), generator=gen).tolist()


def _generate(engine, prompts, params, name: str) -> dict:
    from vllm.inputs import TokensPrompt

    ids = [f"{name}-b{i}" for i in range(len(prompts))]
    start = time.perf_counter()
    for rid, prompt in zip(ids, prompts):
        engine.add_request(rid, TokensPrompt(prompt_token_ids=prompt), params)
    tokens: dict[str, list[int]] = {rid: [] for rid in ids}
    arrival: dict[str, list[float]] = {rid: [] for rid in ids}
    while engine.has_unfinished_requests():
        outputs = engine.step()
        now = time.perf_counter() - start
        for out in outputs:
            key = next((rid for rid in ids if out.request_id.startswith(rid)), None)
            if key is None:
                continue
            got = list(out.outputs[0].token_ids)
            arrival[key] += [now] * (len(got) - len(tokens[key]))
            tokens[key] = got
    n = min(len(v) for v in tokens.values())
    times = [max(arrival[rid][i] for rid in ids) for i in range(n)]
    return {"tokens": [tokens[rid] for rid in ids], "token_times_s": times}


def main(argv: list[str]) -> int:
    request_path, result_path = argv
    with open(request_path) as f:
        request = json.load(f)
    import torch
    import vllm
    from vllm import LLM, SamplingParams

    if request["checkpoint"] is None:  # a shape: our engine's seeded weights as an HF checkpoint
        from llmcomm_tests.engine.config import EngineShape
        from llmcomm_tests.frameworks.checkpoint import ensure_checkpoint

        shape = EngineShape.from_dict(request["shape"])
        request["checkpoint"] = str(ensure_checkpoint(shape, request["seed"], request["dtype"]))
    world = request["tp"] * request["pp"]
    t0 = time.perf_counter()
    llm = LLM(
        model=request["checkpoint"], tensor_parallel_size=request["tp"], pipeline_parallel_size=request["pp"],
        # CPU: eager (see vllm_adapter); CUDA: as production runs, graphs and compilation on,
        # unless the case asks for eager.
        skip_tokenizer_init=True, enforce_eager=request.get("enforce_eager", True), dtype=request["torch_dtype"],
        max_model_len=request["max_model_len"], seed=request["seed"],
        distributed_executor_backend="mp" if world > 1 else None,
        # Every repetition must recompute its prompt: a prefix-cache hit would skip the prefill.
        enable_prefix_caching=False, async_scheduling=False, disable_log_stats=True,
    )
    startup_s = time.perf_counter() - t0
    params = SamplingParams(max_tokens=request["gen_len"], temperature=0.0, ignore_eos=True, detokenize=False)
    prompts = _prompts(request)
    engine = llm.llm_engine
    for k in range(request["warmup"]):
        _generate(engine, prompts, params, f"llmcomm-warmup{k}")
    generations = [_generate(engine, prompts, params, f"llmcomm-rep{k}") for k in range(request["repeats"])]
    result = {"startup_s": startup_s, "generations": generations,
              "env": {"framework": "vllm", "vllm": vllm.__version__, "torch": str(torch.__version__),
                      "python": platform.python_version(), "world_size": world,
                      "device": request.get("device", "cpu"), "enforce_eager": request.get("enforce_eager", True)}}
    with open(result_path, "w") as f:
        json.dump(result, f)
    del llm  # shut the workers down before the interpreter exits
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
