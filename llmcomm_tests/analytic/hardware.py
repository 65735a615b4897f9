"""Hardware profiles: what a fabric and a device can do, as typed data loaded from YAML.

A profile has two link *tiers* — ``intra`` (inside a node) and ``inter`` (between nodes; which one
an op uses follows from ``ranks_per_node``) — and per tier:

* ``peak_Bps`` / ``alpha_min_s`` – the physical floor (datasheet per-direction bandwidth, the
  smallest believable per-op latency) used for lower bounds;
* ``ops`` – α-β fits per op and per group size, ``default`` as fallback at both levels
  (``ops[op][t]`` → ``ops[op].default`` → ``ops.default[t]`` → ``ops.default.default``);
* ``k_hi`` / ``slack_s`` – spread for the upper bound of a whole call (a fit may carry its own);
* ``band_lo`` / ``band_hi`` – where the *median transfer* of an op class may sit, as multiples of
  the model, and ``tail_k`` – the multiple of the model the transfer's ``tail_q`` quantile stays
  under (a fit may carry its own).  From a calibration under the engine's conditions
  (``llmcomm calibrate --engine-conditions``) or, on datasheet presets, a stated assumption;
* a fit's ``variants`` – the same fields measured for one *role* of the call (``root`` / ``peer``
  of a broadcast or gather, ``send`` / ``recv`` of a p2p pair) and/or one world size (``w4``,
  ``w4/root``): under engine conditions a broadcast's root and its peer see different transfers,
  and so do the same 2-rank groups on a host with 2 or 4 ranks.  ``fit(..., role=, world_size=)``
  picks the most specific variant there is, else the fit itself.

``anchor`` (optional, on profiles calibrated on one host) – the short probe that re-measures a
slice of the calibration where the suite runs (``calibration/anchor.py``): an op this host runs
outside its fit's band is not described by the profile here, and its latency rows say n/a with the
probe's numbers instead of failing on a difference of hosts the band was never meant to cover.

``compute`` holds the device peaks for the what-if compute terms of e2e.py.  Shipped presets live
in ``analytic/profiles/*.yaml`` (datasheet / public numbers, never tuned to a published result);
``llmcomm calibrate`` writes the same format from a measured sweep.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from llmcomm_tests.analytic import latency

PROFILE_DIR = Path(__file__).parent / "profiles"
P2P_GROUP = 2  # send_recv fits are stored and looked up under group size 2


@dataclass(frozen=True)
class OpFit:
    """α-β fit of one op (see latency.py for the formula)."""

    alpha_s: float
    beta_Bps: float
    base_s: float = 0.0
    k_hi: float | None = None  # None: the tier's
    slack_s: float | None = None
    band_lo: float | None = None  # None: the tier's
    band_hi: float | None = None
    tail_k: float | None = None
    quality: dict | None = None  # calibration: r2, median_rel_err, points, samples
    variants: dict | None = None  # "root" | "w4" | "w4/root" ... -> OpFit (see the module docstring)

    def to_dict(self) -> dict:
        out = {k: v for k, v in asdict(self).items()
               if v is not None and k != "variants" and not (k == "base_s" and v == 0.0)}
        if self.variants:
            out["variants"] = {key: fit.to_dict() for key, fit in self.variants.items()}
        return out

    def variant(self, role: str = "", world_size: int | None = None) -> "OpFit":
        """The most specific variant for ``role`` in a world of ``world_size`` ranks, else this fit."""
        for key in variant_keys(role, world_size):
            if self.variants and key in self.variants:
                return self.variants[key]
        return self


def variant_keys(role: str = "", world_size: int | None = None) -> list[str]:
    """Variant keys from the most specific: ``w4/root``, ``w4``, ``root``."""
    keys = []
    if world_size is not None:
        keys += [f"w{world_size}/{role}"] if role else []
        keys.append(f"w{world_size}")
    if role:
        keys.append(role)
    return keys


@dataclass(frozen=True)
class Tier:
    link: str  # words: "NVLink 4 via NVSwitch", "InfiniBand NDR400, one NIC per GPU"
    peak_Bps: float
    alpha_min_s: float
    k_hi: float
    slack_s: float
    ops: dict  # op | "default" -> {group size | "default" -> OpFit}
    band_lo: float = 1 / 3  # median transfer / model: the widest band a check may use …
    band_hi: float = 3.0
    tail_q: float = 0.9  # … and the tail: this quantile of transfer / model stays under tail_k
    tail_k: float = 5.0

    def to_dict(self) -> dict:
        return {
            "link": self.link, "peak_Bps": self.peak_Bps, "alpha_min_s": self.alpha_min_s, "k_hi": self.k_hi,
            "slack_s": self.slack_s, "band_lo": self.band_lo, "band_hi": self.band_hi, "tail_q": self.tail_q,
            "tail_k": self.tail_k,
            "ops": {op: {g: f.to_dict() for g, f in by_group.items()} for op, by_group in self.ops.items()},
        }


@dataclass(frozen=True)
class Compute:
    device: str
    peak_flops: float  # dense, engine dtype
    hbm_Bps: float
    prefill_efficiency: float = 0.5  # achieved / peak FLOP/s in prefill (an assumption, stated)
    decode_efficiency: float = 0.7  # achieved / peak HBM bandwidth in decode


@dataclass(frozen=True)
class AnchorProbe:
    """One launch of the anchor probe: ``ops`` swept under engine conditions with ``compute_ms``
    of compute (reading ``compute_mb`` MiB) before each call, as the profile's calibration did."""

    ops: tuple[str, ...]
    compute_ms: float
    compute_mb: float = 0.0


@dataclass(frozen=True)
class Anchor:
    """How to tell this host from the calibration host: ``probes`` over ``world_size`` ranks at
    ``sizes``, ``repeats`` calls each."""

    world_size: int
    sizes: tuple[int, ...]
    repeats: int
    probes: tuple[AnchorProbe, ...]

    def to_dict(self) -> dict:
        return {"world_size": self.world_size, "sizes": list(self.sizes), "repeats": self.repeats,
                "probes": [{"ops": list(p.ops), "compute_ms": p.compute_ms,
                            **({"compute_mb": p.compute_mb} if p.compute_mb else {})} for p in self.probes]}


@dataclass(frozen=True)
class HardwareProfile:
    name: str
    description: str
    ranks_per_node: int
    compute: Compute
    tiers: dict  # "intra" | "inter" -> Tier
    algorithm: str = "ring"
    source: str = ""  # provenance: datasheets, or the calibration run
    notes: list = field(default_factory=list)
    # Device model names this preset describes, as the driver and torch spell them, without the
    # "NVIDIA " prefix: how a CUDA run without --llmcomm-hardware finds its preset (match_preset).
    # Whole names, not substrings: "H200 NVL" (PCIe cards) must not pass for "H200" (SXM).
    devices: tuple = ()
    anchor: Anchor | None = None

    def describes(self, device: str) -> bool:
        return _model(device) in {_model(d) for d in self.devices}

    def tier(self, name: str) -> Tier:
        if name not in self.tiers:
            raise KeyError(f"profile {self.name!r} has no tier {name!r}")
        return self.tiers[name]

    def fit(self, op: str, group_size: int, tier: str = "intra", role: str = "",
            world_size: int | None = None) -> OpFit:
        """The α-β fit for ``op`` over ``group_size`` ranks on ``tier``, with fallbacks; with ``role``
        / ``world_size``, its most specific variant (``OpFit.variant``)."""
        ops = self.tier(tier).ops
        group = P2P_GROUP if op == "send_recv" else group_size
        for key in (op, "default"):
            by_group = ops.get(key)
            if by_group:
                for g in (group, "default"):
                    if g in by_group:
                        return by_group[g].variant(role, world_size)
        raise KeyError(f"profile {self.name!r}: no fit for {op} over {group_size} ranks on tier {tier}")

    def tier_of(self, ranks) -> str:
        return latency.tier_of(ranks, self.ranks_per_node)

    def time(self, op: str, group_size: int, nbytes: float, tier: str = "intra") -> float:
        return latency.op_time(self, op, group_size, nbytes, tier)

    def bounds(self, op: str, group_size: int, nbytes: float, tier: str = "intra") -> tuple[float, float]:
        return latency.bounds(self, op, group_size, nbytes, tier)

    def validate(self) -> None:
        """Refuse a profile whose fits beat its own physical floor (lower bound above the fit)."""
        if self.ranks_per_node < 1:
            raise ValueError(f"profile {self.name!r}: ranks_per_node must be >= 1")
        if self.algorithm not in latency.ALGORITHMS:
            raise ValueError(f"profile {self.name!r}: unknown algorithm {self.algorithm!r}")
        for tier_name in latency.TIERS:
            tier = self.tier(tier_name)
            if tier.k_hi < 1.0:
                raise ValueError(f"profile {self.name!r} {tier_name}: k_hi must be >= 1")
            for op, by_group in tier.ops.items():
                for g, fit in _with_variants(by_group):
                    where = f"profile {self.name!r} {tier_name} {op}[{g}]"
                    if fit.beta_Bps <= 0 or fit.alpha_s < 0 or fit.base_s < 0:
                        raise ValueError(f"{where}: alpha/base must be >= 0 and beta > 0")
                    if fit.beta_Bps > tier.peak_Bps * (1 + 1e-9):
                        raise ValueError(f"{where}: beta {fit.beta_Bps:.3g} B/s exceeds peak {tier.peak_Bps:.3g}")
                    if fit.base_s + fit.alpha_s < tier.alpha_min_s:
                        raise ValueError(f"{where}: base + alpha below alpha_min_s {tier.alpha_min_s:.3g} s")
                    if fit.k_hi is not None and fit.k_hi < 1.0:
                        raise ValueError(f"{where}: k_hi must be >= 1")
                    lo, hi = fit.band_lo or tier.band_lo, fit.band_hi or tier.band_hi
                    if not 0 < lo <= 1 <= hi:
                        raise ValueError(f"{where}: the transfer band [{lo:g}, {hi:g}] must hold 1 (the model)")

    def to_dict(self) -> dict:
        return {
            "name": self.name, "description": self.description, "source": self.source,
            "ranks_per_node": self.ranks_per_node, "algorithm": self.algorithm,
            "compute": asdict(self.compute),
            "tiers": {name: tier.to_dict() for name, tier in self.tiers.items()},
            "notes": list(self.notes),
            **({"devices": list(self.devices)} if self.devices else {}),
            **({"anchor": self.anchor.to_dict()} if self.anchor else {}),
        }

    def dump(self, path: "str | Path") -> None:
        import yaml

        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, width=100))

    def with_tier(self, name: str, tier: Tier) -> "HardwareProfile":
        return replace(self, tiers={**self.tiers, name: tier})


def _model(device: str) -> str:
    name = " ".join(device.split()).lower()
    return name[len("nvidia "):] if name.startswith("nvidia ") else name


def _anchor_from(data: dict | None) -> Anchor | None:
    if not data:
        return None
    probes = tuple(AnchorProbe(tuple(p["ops"]), float(p["compute_ms"]), float(p.get("compute_mb", 0.0)))
                   for p in data["probes"])
    for probe in probes:
        unknown = set(probe.ops) - set(latency.OPS)
        if unknown:
            raise ValueError(f"anchor: unknown op(s) {', '.join(sorted(unknown))}; known: {', '.join(latency.OPS)}")
    return Anchor(int(data.get("world_size", 2)), tuple(int(b) for b in data["sizes"]), int(data.get("repeats", 20)),
                  probes)


def _with_variants(by_group: dict):
    """(label, fit) for every fit of an op and each of its variants (``2/root``)."""
    for g, fit in by_group.items():
        yield g, fit
        for key, variant in (fit.variants or {}).items():
            yield f"{g}/{key}", variant


def _fit_from(data: dict) -> OpFit:
    known = {"alpha_s", "beta_Bps", "base_s", "k_hi", "slack_s", "band_lo", "band_hi", "tail_k", "quality",
             "variants"}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown op-fit field(s): {', '.join(sorted(unknown))}")
    return OpFit(
        alpha_s=float(data["alpha_s"]), beta_Bps=float(data["beta_Bps"]), base_s=float(data.get("base_s", 0.0)),
        k_hi=None if data.get("k_hi") is None else float(data["k_hi"]),
        slack_s=None if data.get("slack_s") is None else float(data["slack_s"]),
        band_lo=_optional(data, "band_lo"), band_hi=_optional(data, "band_hi"), tail_k=_optional(data, "tail_k"),
        quality=data.get("quality"),
        variants={str(k): _fit_from(v) for k, v in data["variants"].items()} if data.get("variants") else None,
    )


def _optional(data: dict, key: str) -> float | None:
    return None if data.get(key) is None else float(data[key])


def _group_key(key) -> "int | str":
    # YAML gives ints for `2:` and strings for `default:`; accept "2" too.
    if key == "default":
        return key
    return int(key)


def _tier_from(data: dict) -> Tier:
    ops = {}
    for op, by_group in (data.get("ops") or {}).items():
        if op != "default" and op not in latency.OPS:
            raise ValueError(f"unknown op {op!r} in profile; known: {', '.join(latency.OPS)}")
        ops[op] = {_group_key(g): _fit_from(f) for g, f in by_group.items()}
    return Tier(link=str(data.get("link", "")), peak_Bps=float(data["peak_Bps"]),
                alpha_min_s=float(data["alpha_min_s"]), k_hi=float(data.get("k_hi", 2.0)),
                slack_s=float(data.get("slack_s", 0.0)), ops=ops, band_lo=float(data.get("band_lo", 1 / 3)),
                band_hi=float(data.get("band_hi", 3.0)), tail_q=float(data.get("tail_q", 0.9)),
                tail_k=float(data.get("tail_k", 5.0)))


def profile_from_dict(data: dict) -> HardwareProfile:
    c = data["compute"]
    compute = Compute(device=str(c.get("device", "")), peak_flops=float(c["peak_flops"]),
                      hbm_Bps=float(c["hbm_Bps"]), prefill_efficiency=float(c.get("prefill_efficiency", 0.5)),
                      decode_efficiency=float(c.get("decode_efficiency", 0.7)))
    profile = HardwareProfile(
        name=str(data["name"]), description=str(data.get("description", "")).strip(),
        ranks_per_node=int(data["ranks_per_node"]), compute=compute,
        tiers={name: _tier_from(t) for name, t in data["tiers"].items()},
        algorithm=str(data.get("algorithm", "ring")), source=str(data.get("source", "")).strip(),
        notes=list(data.get("notes") or []),
        devices=tuple(str(d) for d in data.get("devices") or ()),
        anchor=_anchor_from(data.get("anchor")),
    )
    profile.validate()
    return profile


def list_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


USER_PROFILE_DIR = Path(".llmcomm") / "profiles"  # calibrated profiles a spec's `hardware: NAME` finds


def load_profile(name_or_path: "str | Path", search: tuple = (USER_PROFILE_DIR,)) -> HardwareProfile:
    """A YAML file path, a shipped preset by name (``h100-nvlink4``), or ``NAME.yaml`` in one of
    the ``search`` folders (where ``llmcomm calibrate --name NAME`` profiles can be kept)."""
    import yaml

    path = Path(name_or_path)
    if not path.is_file():
        found = [d / f"{name_or_path}.yaml" for d in (PROFILE_DIR, *map(Path, search))
                 if (Path(d) / f"{name_or_path}.yaml").is_file()]
        if "/" in str(name_or_path) or not found:
            raise ValueError(f"unknown hardware profile {str(name_or_path)!r}; presets: {', '.join(list_profiles())}"
                             f" (or give a YAML path, or put NAME.yaml in {USER_PROFILE_DIR}/)")
        path = found[0]
    return profile_from_dict(yaml.safe_load(path.read_text()))


def match_preset(device: str, devices_per_node: int, search: tuple = (USER_PROFILE_DIR,)) -> "HardwareProfile | None":
    """The profile for ``devices_per_node`` GPUs of model ``device`` (its ``devices`` names the
    model, its ``ranks_per_node`` the node size), or None.  Profiles in ``search`` (calibrated on
    this machine) come before the shipped presets."""
    paths = [p for d in map(Path, search) for p in sorted(d.glob("*.yaml"))] + sorted(PROFILE_DIR.glob("*.yaml"))
    for path in paths:
        profile = load_profile(path)
        if profile.describes(device) and profile.ranks_per_node == devices_per_node:
            return profile
    return None
