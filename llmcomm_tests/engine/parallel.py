"""The engine split over TP × PP ranks (vLLM / Megatron layout).

Which dim of each weight a TP rank holds (full tensors are [out, in], as in ``F.linear``):

    embed_tokens   rows  (vocab)      vocab-parallel: ids outside the slice give 0 → all_reduce
    q_proj         rows  (heads)      column-parallel: a/t heads
    k_proj, v_proj rows  (kv heads)   k/t heads, or the one KV head its q heads use if t > k
    o_proj         cols  (heads)      row-parallel: partial sums → all_reduce
    gate/up_proj   rows  (ffn)        column-parallel
    down_proj      cols  (ffn)        row-parallel: partial sums → all_reduce
    lm_head        rows  (vocab)      column-parallel: last position's logits gathered to the sampler
    norms          replicated

Pipeline stages hold contiguous layer ranges and pass (hidden_states, residual) to the next stage;
under TP each rank sends its 1/t slice to its peer, whose TP group all-gathers them.  Every op and
its order are fixed in docs/communication.md, which the analytic model counts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F

from llmcomm_tests.core import contract, call_site
from llmcomm_tests.engine.config import EngineShape
from llmcomm_tests.engine.layers import KVCache, apply_rotary, attention, rms_norm, rotary_tables, swiglu
from llmcomm_tests.engine.layout import Layout, kv_heads_of
from llmcomm_tests.engine.weights import rank_shard

TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Generation:
    """What one ``generate`` call returns on the driver (global rank 0)."""

    tokens: list[list[int]]  # [batch][gen_len]
    token_times_s: list[float]  # seconds from request start until the driver held token i
    logits: torch.Tensor | None  # [gen_len, batch, vocab] fp32 when kept, sampler rank only


class ParallelEngine:
    """One rank's part of the engine.  With tp = pp = 1 it is the single-process reference and
    needs no process group."""

    def __init__(self, shape: EngineShape, layout: Layout, rank: int, *, dtype: str = "fp32", seed: int = 0,
                 device: str | torch.device = "cpu", max_len: int = 4096):
        self.shape, self.layout, self.rank = shape, layout, rank
        self.dtype = TORCH_DTYPES[dtype]
        self.device = torch.device(device)
        self.max_len = max_len
        t = layout.tp
        self.stage = layout.stage_of(rank)
        self.tp_rank = layout.tp_rank_of(rank)
        self.first = self.stage == 0
        self.last = self.stage == layout.pp - 1
        self.layers = list(layout.stage_layers(shape.n_layers)[self.stage])
        self.tp_group = self._make_tp_groups() if t > 1 else None
        self.sampler = layout.rank_of(layout.pp - 1, 0)  # tp rank 0 of the last stage
        self.is_sampler = rank == self.sampler

        self.q_heads = shape.n_heads // t
        kv = kv_heads_of(shape, t, self.tp_rank)
        self.kv_heads = len(kv)
        group = shape.n_heads // shape.n_kv_heads
        q_global = range(self.tp_rank * self.q_heads, (self.tp_rank + 1) * self.q_heads)
        self.kv_index = torch.tensor([j // group - kv.start for j in q_global], device=self.device)
        self.vocab_slice = (self.tp_rank * shape.vocab // t, (self.tp_rank + 1) * shape.vocab // t)
        self.w = self._load_shard(seed)
        self.cos, self.sin = rotary_tables(shape.head_dim, max_len, shape.rope_theta, self.dtype, self.device)
        self.cache: dict[int, KVCache] = {}
        # On a GPU every rank waits for its stream once per token, at the same point: otherwise only
        # the driver (its .tolist()) does, the other ranks' hosts run ahead, and their CUDA-event
        # brackets time the driver's host work instead of the op (docs/measurements.md#rank-skew).
        self.sync_each_token = self.device.type == "cuda"

    # -- construction ---------------------------------------------------------------------------

    def _make_tp_groups(self):
        """Every rank must create every group, in the same order; keep our stage's."""
        mine = None
        for stage in range(self.layout.pp):
            group = dist.new_group(self.layout.tp_group(stage))
            if stage == self.stage:
                mine = group
        return mine

    def _load_shard(self, seed: int) -> dict[str, torch.Tensor]:
        fp32 = rank_shard(self.shape, self.layout, self.rank, seed)
        return {name: t.to(self.dtype).to(self.device).contiguous() for name, t in fp32.items()}

    # -- communication (every call names its site; see docs/communication.md) -------------------

    def _all_reduce(self, x: torch.Tensor, site: str) -> torch.Tensor:
        if self.tp_group is not None:
            with call_site.at_site(site):
                dist.all_reduce(x, group=self.tp_group)
        return x

    def _send_boundary(self, tensors: list[torch.Tensor], boundary: int) -> None:
        peer = self.layout.rank_of(self.stage + 1, self.tp_rank)
        with call_site.at_site(contract.pp_boundary(boundary)):
            for x in tensors:
                part = x.reshape(-1).chunk(self.layout.tp)[self.tp_rank] if self.tp_group else x
                dist.send(part.contiguous(), peer)

    def _recv_boundary(self, shape: tuple[int, ...], boundary: int) -> list[torch.Tensor]:
        peer = self.layout.rank_of(self.stage - 1, self.tp_rank)
        numel = shape[0] * shape[1] * shape[2]
        t = self.layout.tp
        with call_site.at_site(contract.pp_boundary(boundary)):
            parts = [torch.empty(numel // t, dtype=self.dtype, device=self.device) for _ in range(2)]
            for part in parts:
                dist.recv(part, peer)
            if self.tp_group is None:
                return [p.view(shape) for p in parts]
            full = []
            for part in parts:
                out = torch.empty(numel, dtype=self.dtype, device=self.device)
                dist.all_gather_into_tensor(out, part, group=self.tp_group)
                full.append(out.view(shape))
            return full

    # -- forward --------------------------------------------------------------------------------

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        lo, hi = self.vocab_slice
        local = ids - lo
        inside = (local >= 0) & (local < hi - lo)
        x = F.embedding(local.clamp(0, hi - lo - 1), self.w["model.embed_tokens.weight"])
        x = x * inside.unsqueeze(-1).to(x.dtype)
        return self._all_reduce(x, contract.EMBED)

    def _layer(self, j: int, x: torch.Tensor, residual: torch.Tensor | None, pos: int):
        w, p, s = self.w, f"model.layers.{j}.", x.shape[1]
        b, d = x.shape[0], self.shape.head_dim
        residual = x if residual is None else x + residual
        x = rms_norm(residual, w[p + "input_layernorm.weight"], self.shape.norm_eps)
        q = F.linear(x, w[p + "self_attn.q_proj.weight"]).view(b, s, self.q_heads, d).transpose(1, 2)
        k = F.linear(x, w[p + "self_attn.k_proj.weight"]).view(b, s, self.kv_heads, d).transpose(1, 2)
        v = F.linear(x, w[p + "self_attn.v_proj.weight"]).view(b, s, self.kv_heads, d).transpose(1, 2)
        cos, sin = self.cos[pos:pos + s], self.sin[pos:pos + s]
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        k, v = self.cache[j].update(pos, k, v)
        o = attention(q, k, v, self.kv_index, causal=s > 1).transpose(1, 2).reshape(b, s, self.q_heads * d)
        x = self._all_reduce(F.linear(o, w[p + "self_attn.o_proj.weight"]), contract.attn_out(j))
        residual = x + residual
        x = rms_norm(residual, w[p + "post_attention_layernorm.weight"], self.shape.norm_eps)
        x = swiglu(x, w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"], w[p + "mlp.down_proj.weight"])
        return self._all_reduce(x, contract.mlp_out(j)), residual

    def forward(self, ids: torch.Tensor | None, pos: int, batch: int, seq: int) -> torch.Tensor | None:
        """One forward of ``seq`` tokens per request; returns the full last-position logits on the
        sampler rank (None elsewhere)."""
        if self.first:
            x, residual = self._embed(ids), None
        else:
            x, residual = self._recv_boundary((batch, seq, self.shape.hidden), self.stage)
        for j in self.layers:
            x, residual = self._layer(j, x, residual, pos)
        if not self.last:
            self._send_boundary([x, residual], self.stage + 1)
            return None
        x = rms_norm(x + residual, self.w["model.norm.weight"], self.shape.norm_eps)
        local = F.linear(x[:, -1], self.w["lm_head.weight"])  # [b, v/t]
        if self.tp_group is None:
            return local
        with call_site.at_site(contract.LM_HEAD):
            parts = [torch.empty_like(local) for _ in range(self.layout.tp)] if self.is_sampler else None
            dist.gather(local, parts, group=self.tp_group, group_dst=0)
        return torch.cat(parts, dim=-1) if self.is_sampler else None

    # -- generation -----------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(self, prompt: torch.Tensor, gen_len: int, keep_logits: bool = False) -> Generation | None:
        """Greedy decoding of ``gen_len`` tokens for a [batch, prompt_len] prompt known to every
        rank.  Returns a Generation on the driver (rank 0), None elsewhere."""
        batch, prompt_len = prompt.shape
        if prompt_len + gen_len > self.max_len:
            raise ValueError(f"prompt_len + gen_len = {prompt_len + gen_len} exceeds max_len {self.max_len}")
        self.cache = {j: KVCache(batch, self.kv_heads, prompt_len + gen_len, self.shape.head_dim, self.dtype,
                                 self.device) for j in self.layers}
        driver = self.rank == 0
        tokens, times, logits = [], [], []
        next_ids = torch.zeros(batch, dtype=torch.int64, device=self.device)
        prompt = prompt.to(self.device)
        start = time.perf_counter()
        for step in range(gen_len):
            call_site.set_phase("prefill" if step == 0 else "decode", step)
            if step == 0:
                ids, pos, seq = prompt, 0, prompt_len
            else:
                if self.first and self.tp_group is not None:
                    with call_site.at_site(contract.TOKENS_BROADCAST):
                        dist.broadcast(next_ids, group=self.tp_group, group_src=0)
                ids, pos, seq = next_ids[:, None], prompt_len + step - 1, 1
            out = self.forward(ids if self.first else None, pos, batch, seq)
            if self.is_sampler:
                next_ids = out.argmax(dim=-1)
                if keep_logits:
                    logits.append(out.float().cpu())
            if self.layout.pp > 1 and (self.is_sampler or driver):
                with call_site.at_site(contract.PP_TOKENS):
                    if self.is_sampler:
                        dist.send(next_ids, 0)
                    else:
                        dist.recv(next_ids, self.sampler)
            if self.sync_each_token:
                torch.cuda.current_stream(self.device).synchronize()
            if driver:
                tokens.append(next_ids.tolist())  # .tolist() synchronises a GPU
                times.append(time.perf_counter() - start)
        call_site.set_phase("none", -1)
        if not (driver or self.is_sampler):
            return None
        per_request = [list(col) for col in zip(*tokens)] if driver else []
        return Generation(per_request, times, torch.stack(logits) if logits else None)
