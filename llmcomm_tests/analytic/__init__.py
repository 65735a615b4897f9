"""Closed-form communication and latency model of the engine (no engine run, no torch import).

Vocabulary fixed here and used by every module of this package:

* *call*        – one communication op as one rank issues it (``all_reduce`` on rank 3): what the
  recorder sees.  Its ``bytes`` and ``wire_bytes`` follow docs/communication.md.
* *logical op*  – one collective over its whole group, or one send/recv pair (``send_recv``): what
  costs time.  A logical op is made of several calls (an all-reduce over t ranks is t calls).
* *site*        – where the engine issued a call (``layer3.attn.o_proj``); *site class* collapses it
  (``attn``, ``mlp``, ``embed``, ``lm_head``, ``pp.boundary``, ``pp.tokens``, ``tokens.broadcast``).
* *phase*       – ``prefill`` (one forward of prompt_len tokens) or ``decode`` (gen_len − 1 forwards
  of one token each).
* *volume row*  – calls keyed by (op, phase, site class) with ``count``, ``bytes``, ``wire_bytes``
  summed over ranks for one request batch (``volume.predict_volume``).
* *tier*        – the link class a logical op runs over: ``intra`` (inside a node) or ``inter``
  (crossing nodes), decided by the hardware profile's ``ranks_per_node``.
* *profile*     – a hardware description: per-op α-β fits per tier and group size, physical peaks,
  spread for upper bounds, and compute peaks (``hardware.HardwareProfile``).
* *msg_bytes*   – the message size the α-β formulas take, nccl-tests convention: the buffer for
  all_reduce / broadcast / send_recv, the *total* (all ranks) for all_gather, gather and
  reduce_scatter.

Modules: ``volume`` (bytes), ``latency`` (α-β formulas and bounds), ``hardware`` (profiles),
``e2e`` (TTFT / TPOT / E2E); their command lines are ``commands/predict.py`` and
``commands/calibrate.py`` (over ``calibration/fit.py``).
"""
