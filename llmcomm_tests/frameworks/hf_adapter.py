"""Run a case in Hugging Face transformers: TP on ranks our launcher starts, our recorder on each.

transformers 5.x shards a model itself when loaded with ``from_pretrained(folder,
distributed_config=DistributedConfig(tp_size=N))`` on an initialised process group (CPU/gloo works).
Its collectives go through ``torch.distributed`` (eager and functional), so the existing
:class:`~llmcomm_tests.runtime.recorder.Recorder` sees all of them; the site comes from forward
hooks on the module that issues them (``model.layers.J.self_attn.o_proj`` → ``layerJ.attn.o_proj``,
…, ``lm_head``).  Generation is a greedy loop over ``model(...)`` with a KV cache, one forward per
token like our engine, so phase, step and per-token times are ours; ``logits_to_keep=1`` computes
the last position's logits only (what ``generate`` does).

Pipeline parallel is refused with a one-line reason: transformers' PP (``pp_size``) does not
combine with TP and is not wired here yet.
"""

from __future__ import annotations

import importlib.util
import time
from importlib.metadata import version

from llmcomm_tests.core import call_site
from llmcomm_tests.core.envinfo import Environment
from llmcomm_tests.engine.parallel import TORCH_DTYPES
from llmcomm_tests.frameworks.checkpoint import ensure_checkpoint
from llmcomm_tests.frameworks.sites import site_of
from llmcomm_tests.runtime import launch
from llmcomm_tests.runtime.faults import OVER_RECORDER, install_faults
from llmcomm_tests.runtime.measure import assemble
from llmcomm_tests.runtime.recorder import Recorder

INSTALL_HINT = "pip install 'llmcomm-tests[transformers]'  (transformers>=5.16)"
BACKEND_SUFFIX = "transformers"


def missing() -> str | None:
    if importlib.util.find_spec("transformers") is None:
        return f"transformers is not installed: {INSTALL_HINT}"

    major = int(version("transformers").split(".")[0])
    if major < 5:
        return f"transformers {version('transformers')} has no DistributedConfig TP loading: {INSTALL_HINT}"
    if importlib.util.find_spec("accelerate") is None:  # from_pretrained refuses a tp_plan without it
        return f"transformers' TP loading needs accelerate, which is not installed: {INSTALL_HINT}"
    return None


class Unsupported(ValueError):
    """A layout this adapter refuses before launch (one-line reason)."""


def run_in_transformers(cfg, *, backend: str = "auto", timeout_s: float = 300.0, available_ranks: int | None = None,
             checkpoint: str | None = None) -> dict:
    cfg.layout.validate(cfg.engine, available_ranks)
    if cfg.layout.pp > 1:
        raise Unsupported(f"transformers adapter: {cfg.layout} refused: pipeline parallel is not supported "
                          "(transformers' pp_size does not combine with TP, and its PP is not wired here)")
    folder = checkpoint or str(ensure_checkpoint(cfg.engine, cfg.seed, cfg.dtype))
    backend = launch.resolve_backend(backend, cfg.layout.world_size)
    per_rank = launch.launch(rank_run, (cfg, folder), world_size=cfg.layout.world_size, backend=backend,
                             timeout_s=timeout_s)
    doc = assemble(cfg, backend, per_rank)
    doc.case.framework = "transformers"
    doc.framework = {"name": "transformers", "version": per_rank[0]["env"]["transformers"],
                     "startup_s": per_rank[0]["startup_s"], "tp_plan": per_rank[0]["tp_plan"]}
    return doc


def _hook_sites(model) -> None:
    for name, module in model.named_modules():
        site = site_of(name) or ("lm_head" if name == "lm_head" else None)
        if site is None:
            continue
        saved: list[str] = []

        def pre(_m, _inputs, _site=site, _saved=saved):
            _saved.append(call_site.site)
            call_site.site = _site

        def post(_m, _inputs, _output, _saved=saved):
            call_site.site = _saved.pop()

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def _generate(model, prompt, gen_len: int) -> tuple[list[list[int]], list[float]]:
    """Greedy decoding, one forward per token; times from the request start until rank 0 holds
    token i (as our engine)."""
    from transformers import DynamicCache


    cache = DynamicCache()
    tokens, times = [], []
    ids = prompt.to(model.device)  # the prompt is drawn on the CPU; the model may sit on a GPU
    start = time.perf_counter()
    for step in range(gen_len):
        call_site.set_phase("prefill" if step == 0 else "decode", step)
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        next_ids = out.logits[:, -1].argmax(dim=-1)
        tokens.append(next_ids.tolist())
        times.append(time.perf_counter() - start)
        ids = next_ids[:, None]
    call_site.set_phase("none", -1)
    return [list(col) for col in zip(*tokens)], times


def rank_run(ctx, cfg, folder: str) -> dict:
    """Rank side: load the sharded model, record, warm up, time repetitions (as ``measure.rank_run``)."""
    import torch
    import torch.distributed as dist
    import transformers
    from transformers import AutoModelForCausalLM


    t0 = time.perf_counter()
    kwargs = {"dtype": TORCH_DTYPES[cfg.dtype]}
    if ctx.world_size > 1:
        from transformers.distributed import DistributedConfig

        kwargs["distributed_config"] = DistributedConfig(tp_size=ctx.world_size)  # places shards on ctx.device
    elif ctx.device != "cpu":
        kwargs["device_map"] = ctx.device  # one rank: nothing else moves the model to its GPU
    model = AutoModelForCausalLM.from_pretrained(folder, **kwargs).eval()
    startup_s = time.perf_counter() - t0
    _hook_sites(model)
    prompt = torch.randint(0, cfg.engine.vocab, (cfg.batch, cfg.prompt_len),
                           generator=torch.Generator().manual_seed(cfg.seed + 1))
    recorder = Recorder(cuda_events=ctx.backend == "nccl")
    faults = [install_faults([f for f in cfg.inject if f.kind not in OVER_RECORDER], recorder)]  # as runtime/measure.py
    recorder.install()
    faults.append(install_faults([f for f in cfg.inject if f.kind in OVER_RECORDER], recorder, held_by=recorder))
    generations = []
    with torch.inference_mode():
        for _ in range(cfg.warmup):
            _generate(model, prompt, cfg.gen_len)
        for rep in range(cfg.repeats):
            if ctx.world_size > 1:
                dist.barrier()
            recorder.rep, recorder.active = rep, True
            tokens, times = _generate(model, prompt, cfg.gen_len)
            recorder.active = False
            if ctx.rank == 0:
                generations.append({"tokens": tokens, "token_times_s": times})
    # The plan transformers applied (it differs between releases): the volume model reads its
    # embedding rule from it.
    plan = getattr(model, "tp_plan", None) or getattr(model, "_tp_plan", None) or {}
    result = {"rank": ctx.rank, "ops": recorder.finalize(ctx.rank), "generations": generations, "logits": None,
              "env": None, "startup_s": startup_s, "tp_plan": {str(k): str(v) for k, v in dict(plan).items()}}
    if ctx.rank == 0:
        result["env"] = dict(Environment.capture(ctx).rank_document(), transformers=transformers.__version__)
    faults[1].uninstall()  # in the reverse order of installation: each puts back what it found
    recorder.uninstall()
    faults[0].uninstall()
    return result
