"""The compute-time model: per-operator FLOPs over a GPU profile's peak times achieved efficiency.

Every time is for **one GPU** (its 1/tp share of a tensor-parallel op), **one layer**, **one
micro-batch**, in int64 picoseconds (``*_ps``). ``T = micro_batch * seq_len`` tokens pass through
every EP rank (the EP ranks are data-parallel for attention); a multiply-add counts as 2 FLOPs.
With h = hidden, and SwiGLU FFNs (three h x f matrices):

- ``embedding``: 0 FLOPs (a lookup); memory-bound, ``2 * T * h * 2`` bytes over HBM (read the
  rows, write the output, bf16). Not TP-split.
- ``attention``: ``2 T P_whole + [2 T P_split + c * 2 b s^2 H (d_qk + d_v)] / tp``: every weight
  matrix of the block (:meth:`~fabricsim.workload.models.MoEModel.attention_matrices`) costs
  2 FLOPs per parameter per token, then scores (over ``d_qk`` per head) and the weighted sum of
  values (``d_v``); H heads, b micro_batch, s seq_len. ``P_split`` are the parameters split by
  tensor parallelism, ``P_whole`` those every TP rank runs whole (MLA's down-projections; none
  for MHA). MHA (``attention = "mha"``, K kv_heads, d head_dim = d_qk = d_v):
  ``[2 T h (H d + 2 K d) + 2 T (H d) h + c * 4 b s^2 H d] / tp``. MLA (``"mla"``, r_q
  q_lora_rank, r_kv kv_lora_rank, d_n / d_r / d_v the nope / rope / value head dims,
  d_qk = d_n + d_r): ``2 T [h r_q + h (r_kv + d_r)] + [2 T (r_q H d_qk + r_kv H (d_n + d_v)
  + H d_v h) + c * 2 b s^2 H (d_qk + d_v)] / tp`` (training form: keys and values are
  decompressed, not absorbed into the queries). ``c = 1`` by default (Megatron's FLOPs
  accounting: no causal halving), ``1/2`` with ``causal=True``. DeepSeek-R1 at s = 4096, tp 1:
  374.2 MFLOPs of projections + 335.5 MFLOPs of scores and values per token with MLA, against
  939.5 + 268.4 with 128 full heads of 128 (``deepseek-r1-mha``).
- ``gate``: ``2 T h E`` (E routed experts), with an HBM floor of ``T * h * 2`` bytes (reading the
  activations). Not TP-split (every TP rank routes; conservative and negligible).
- ``dense_ffn``: ``2 T * 3 h f_dense / tp``.
- ``shared_experts``: ``2 T * 3 h f_shared * shared_experts / tp``.
- ``experts``: ``2 n * 3 h f_expert / tp`` for the n routed token copies received by this GPU's EP
  rank (vectorized over n; the task graph lets the busiest rank set the pace).
- ``lm_head``: ``2 T h V / tp`` (V vocab, vocab-parallel; softmax and loss negligible).

Time of an op: ``max(FLOPs / (peak * efficiency[op]), bytes / (hbm * hbm_efficiency))``, rounded
to whole picoseconds. Backward = ``backward_factor`` (default 2.0: the data-gradient and the
weight-gradient GEMMs each cost one forward) x forward; use 3.0 to model full activation
recomputation. ``layer_time_ps`` adds up the ops of one transformer layer (see there).

**Expert efficiency curve.** A routed expert's GEMM is fed only the tokens routed to it, so with few
tokens it streams its weights from HBM for little work. The model is the roofline sum: expert time =
FLOPs / (peak * eff_max) + weight bytes / (hbm * hbm_efficiency), per expert holding tokens. That
is exactly ``eff(n) = eff_max * n / (n + t_half)`` with ``n`` the tokens per expert (the rank's
tokens over its ``routed_experts / ep`` experts, split evenly) and ``t_half = eff_max * peak /
(hbm * hbm_efficiency)`` tokens (bf16 weights: 2 FLOPs per weight per token over 2 bytes per
weight), e.g. 117 tokens on the A100 and 203 on the H100/H800 profiles. Time is affine and
increasing in n (``t_half`` tokens' worth of fixed cost per expert) and 0 for n = 0. At the paper's
shapes (tens of thousands of tokens per expert) the curve costs well under 1%; it matters for small
micro-batches and cold experts. ``GPUProfile.expert_half_tokens`` sets ``t_half`` directly.

**Efficiencies and their basis** (achieved fraction of dense bf16 peak; approximate, not fitted):

============== ====== ============= =========================================================
op             a100   h100 / h800   basis
============== ====== ============= =========================================================
attention      0.55   0.45          projections are large GEMMs (~0.7); the s^2 core under
                                    FlashAttention-2 runs at ~50-73% of A100 peak forward
                                    and less backward, ~35-50% of H100 peak (FA2 paper,
                                    Dao 2023); plus norms/rotary/softmax not in the FLOPs
gate           0.50   0.50          tiny GEMM (N = routed experts): set by the HBM floor
dense_ffn      0.70   0.65          large bf16 GEMMs: cuBLAS reaches ~80% of A100 peak on
shared_experts 0.70   0.65          such shapes; Megatron-LM reaches 52% *end-to-end* MFU
lm_head        0.70   0.65          on A100 with communication and bubbles included
                                    (Narayanan et al. SC'21: 163 of 312 TFLOPS for 1T
                                    params); H100 reaches a lower fraction of its higher peak
                                    (Llama 3: 38-43% bf16 MFU end to end; NVIDIA Megatron-Core
                                    reports up to ~47%)
experts        0.60   0.55          eff_max of grouped/block-sparse expert GEMMs: MegaBlocks
                                    (Gale et al. 2023) runs them near dense-GEMM throughput;
                                    minus token permute/un-permute and the activation
============== ====== ============= =========================================================

HBM: A100 SXM 2.0 TB/s, H100/H800 SXM 3.35 TB/s, at ``hbm_efficiency`` 0.8. Peaks (dense bf16):
A100 312 TFLOPS, H100 and H800 989 TFLOPS (the H800 cuts NVLink bandwidth, not compute). The
paper's simulator profiled operators on a real GPU, probably the A100 testbed
(``reference/mfabric.md`` section 6.5), so ``a100`` is the default for reproducing its runs.

**Measured overrides** replace the FLOPs model for the ops they name: a TOML file (or an equal
dict) with one table per model name; tables of other models are validated and ignored::

    [mixtral-8x7b]
    gpu = "h800"            # optional: must equal the profile name if given
    tp = 4                  # optional: shape the times were measured at; must match if given
    micro_batch = 8         # optional, must match
    seq_len = 4096          # optional, must match
    attention_fwd_ms = 5.1  # <op>_<fwd|bwd>_ms: per layer, per micro-batch, per GPU
    attention_bwd_ms = 10.2
    experts_fwd_ms_per_1k_tokens = 0.31   # experts: per 1000 routed token copies on the EP rank

Ops: every op of :data:`OPS`; experts only as ``experts_<phase>_ms_per_1k_tokens`` (linear in
tokens, 0 at 0), every other op only as ``<op>_<phase>_ms``. A given fwd without bwd gives bwd =
``backward_factor`` x the measured fwd; a bwd alone replaces only bwd. Values are non-negative
numbers; an unknown key, a wrong type or a negative value raises
:class:`~fabricsim.errors.ConfigError` naming ``overrides.<model>.<key>``.

**The paper check** (not used to set any default). The paper (sections 1.4-1.5, Appendix C) measures
Mixtral 8x7B on H800s, EP 8, TP 4, PP 4, seq 4096, micro-batch 8, and reports "expert computation
> 100 ms" at micro-batch 8 and 122 ms at batch size 16. This model (``h800``, ``ep=8``; T = 32768
tokens per EP rank, T * top_k = 65536 routed copies on the mean rank; the reference gating trace
gives the busiest expert 29.64% of the copies against the mean 12.5%, i.e. 155,406) gives for the
experts per GPU:

- one layer, forward: mean-loaded rank 10.6 ms, busiest rank 25.2 ms;
- one layer, forward + backward, busiest rank: 75.6 ms;
- the 8 layers of one pipeline stage, forward: mean rank 85 ms, busiest rank 202 ms
  (101 ms if the trace's 32768 copies per source rank are taken literally instead of T * top_k).

So one layer's expert FFN at a normal efficiency is far below 100 ms; the paper's figure fits the
expert compute of a whole pipeline stage (8 layers) in one forward pass of one micro-batch, paced by
the busiest expert (or about 100 ms on the mean rank). It would fit one layer only with an expert
efficiency ~4x lower than any published value (on the ``a100`` profile the busiest rank's single
layer takes 73 ms forward, 220 ms forward + backward). The two figures (> 100 ms at micro-batch 8,
122 ms at batch size 16) do not scale like any model linear in tokens; "batch size 16" probably
names another quantity. ``tests/test_compute.py`` pins these relations (busiest stage forward in
100-250 ms, one layer under 40 ms).
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from typing import Optional

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from fabricsim.errors import ConfigError, require
from fabricsim.workload.models import MoEModel, get_model

__all__ = ["GPUProfile", "PROFILES", "OPS", "PHASES", "ComputeModel", "get_profile",
           "load_overrides"]

OPS = ("embedding", "attention", "gate", "dense_ffn", "shared_experts", "experts", "lm_head")
PHASES = ("fwd", "bwd")
_PS_PER_MS = 1e9
_BYTES_PER_ELEMENT = 2  # bf16 activations and weights


def _is_number(v) -> bool:
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
            and math.isfinite(v))


@dataclass(frozen=True)
class GPUProfile:
    """One GPU type.

    - ``peak_tflops``: dense bf16 peak (TFLOP/s); ``hbm_tbps``: HBM bandwidth (TB/s).
    - ``efficiency``: op -> achieved fraction of peak, in (0, 1], for every op of :data:`OPS`
      except ``embedding`` (memory-bound; an entry for it is ignored). For ``experts`` it is the
      large-batch maximum of the efficiency curve (module docstring).
    - ``hbm_efficiency``: achieved fraction of the HBM bandwidth.
    - ``expert_half_tokens``: tokens per expert at which expert efficiency is half its maximum;
      None derives it from the roofline (``eff_max * peak / (hbm * hbm_efficiency)``).
    """

    name: str
    peak_tflops: float
    hbm_tbps: float
    efficiency: dict
    hbm_efficiency: float = 0.8
    expert_half_tokens: Optional[float] = None
    description: str = ""

    def __post_init__(self):
        p = f"profile {self.name!r}"
        for f in ("peak_tflops", "hbm_tbps"):
            v = getattr(self, f)
            require(_is_number(v) and v > 0, f"{p}.{f}", f"must be a positive number, got {v!r}")
        require(_is_number(self.hbm_efficiency) and 0 < self.hbm_efficiency <= 1,
                f"{p}.hbm_efficiency", f"must lie in (0, 1], got {self.hbm_efficiency!r}")
        require(self.expert_half_tokens is None or
                (_is_number(self.expert_half_tokens) and self.expert_half_tokens >= 0),
                f"{p}.expert_half_tokens",
                f"must be a non-negative number or None, got {self.expert_half_tokens!r}")
        require(isinstance(self.efficiency, dict), f"{p}.efficiency",
                f"must be a dict op -> fraction of peak, got {self.efficiency!r}")
        for op, v in self.efficiency.items():
            require(op in OPS, f"{p}.efficiency.{op}", f"unknown op; ops: {', '.join(OPS)}")
            require(_is_number(v) and 0 < v <= 1, f"{p}.efficiency.{op}",
                    f"must lie in (0, 1], got {v!r}")
        for op in OPS:
            if op != "embedding":
                require(op in self.efficiency, f"{p}.efficiency.{op}",
                        "is missing; every op except embedding needs an efficiency")
        object.__setattr__(self, "efficiency", dict(self.efficiency))

    @property
    def peak_flops(self) -> float:
        return self.peak_tflops * 1e12

    @property
    def hbm_bytes_per_s(self) -> float:
        """Achieved HBM bandwidth in bytes/s (``hbm_tbps * hbm_efficiency``)."""
        return self.hbm_tbps * 1e12 * self.hbm_efficiency

    @property
    def expert_t_half(self) -> float:
        """Tokens per expert at which expert efficiency is half its maximum."""
        if self.expert_half_tokens is not None:
            return float(self.expert_half_tokens)
        return self.efficiency["experts"] * self.peak_flops / self.hbm_bytes_per_s

    def with_efficiency(self, **efficiency) -> "GPUProfile":
        """A copy with some efficiencies replaced, e.g. ``with_efficiency(experts=0.5)``."""
        return dataclasses.replace(self, efficiency={**self.efficiency, **efficiency})

    def to_dict(self) -> dict:
        return {"name": self.name, "peak_tflops": self.peak_tflops, "hbm_tbps": self.hbm_tbps,
                "hbm_efficiency": self.hbm_efficiency, "efficiency": dict(self.efficiency),
                "expert_half_tokens": self.expert_t_half, "description": self.description}


_EFF_A100 = {"attention": 0.55, "gate": 0.50, "dense_ffn": 0.70, "shared_experts": 0.70,
             "experts": 0.60, "lm_head": 0.70}
_EFF_H100 = {"attention": 0.45, "gate": 0.50, "dense_ffn": 0.65, "shared_experts": 0.65,
             "experts": 0.55, "lm_head": 0.65}

PROFILES: dict = {
    "a100": GPUProfile("a100", peak_tflops=312.0, hbm_tbps=2.0, efficiency=_EFF_A100,
                       description="A100 SXM (the paper's testbed; default for reproducing its "
                       "simulations)"),
    "h100": GPUProfile("h100", peak_tflops=989.0, hbm_tbps=3.35, efficiency=_EFF_H100,
                       description="H100 SXM"),
    "h800": GPUProfile("h800", peak_tflops=989.0, hbm_tbps=3.35, efficiency=_EFF_H100,
                       description="H800 SXM (H100 compute, reduced NVLink; the paper's "
                       "production measurement)"),
}


def get_profile(profile) -> GPUProfile:
    """A profile name (``a100``, ``h100``, ``h800``; case-insensitive) or a :class:`GPUProfile`."""
    if isinstance(profile, GPUProfile):
        return profile
    if isinstance(profile, str) and profile.lower() in PROFILES:
        return PROFILES[profile.lower()]
    raise ConfigError("profile", f"unknown GPU profile {profile!r}; built in: "
                      f"{', '.join(PROFILES)} (or a GPUProfile)")


# ---------------------------------------------------------------------------------------------
# Overrides


_SHAPE_KEYS = ("tp", "micro_batch", "seq_len")


def _override_keys() -> dict:
    """Allowed time keys -> (op, phase, per_1k_tokens)."""
    keys = {}
    for op in OPS:
        for phase in PHASES:
            if op == "experts":
                keys[f"{op}_{phase}_ms_per_1k_tokens"] = (op, phase, True)
            else:
                keys[f"{op}_{phase}_ms"] = (op, phase, False)
    return keys


_OVERRIDE_KEYS = _override_keys()


def load_overrides(overrides) -> dict:
    """Read and validate an overrides TOML file (path) or dict (schema in the module docstring).

    Returns ``{model_name: {"gpu": str|None, "shape": {key: int}, "ms": {(op, phase): float}}}``
    where ``ms`` is per layer per micro-batch per GPU, or per 1000 tokens for ``experts``.
    """
    if overrides is None:
        return {}
    if isinstance(overrides, (str, os.PathLike)):
        path = os.fspath(overrides)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except OSError as e:
            raise ConfigError("overrides", f"cannot read overrides file {path!r}: "
                              f"{e.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise ConfigError("overrides", f"{path}: not valid TOML: {e}") from None
    elif isinstance(overrides, dict):
        data = overrides
    else:
        raise ConfigError("overrides", f"must be a path to a TOML file or a dict, got "
                          f"{type(overrides).__name__}")
    allowed = ", ".join(("gpu",) + _SHAPE_KEYS + tuple(_OVERRIDE_KEYS))
    out = {}
    for model_name, table in data.items():
        where = f"overrides.{model_name}"
        require(isinstance(table, dict), where,
                f"must be a table of operator times ([{model_name}]), got {table!r}")
        entry = {"gpu": None, "shape": {}, "ms": {}}
        for key, value in table.items():
            k = f"{where}.{key}"
            if key == "gpu":
                require(isinstance(value, str), k,
                        f"must be a GPU profile name (a string), got {value!r}")
                entry["gpu"] = value
            elif key in _SHAPE_KEYS:
                require(isinstance(value, int) and not isinstance(value, bool) and value >= 1, k,
                        f"must be a positive integer (the measured shape), got {value!r}")
                entry["shape"][key] = value
            elif key in _OVERRIDE_KEYS:
                require(_is_number(value) and value >= 0, k,
                        f"must be a non-negative number of milliseconds, got {value!r}")
                op, phase, _ = _OVERRIDE_KEYS[key]
                entry["ms"][(op, phase)] = float(value)
            else:
                hint = ""
                if key.startswith("experts_") and key.endswith("_ms"):
                    hint = " (experts scale with tokens: use experts_<phase>_ms_per_1k_tokens)"
                raise ConfigError(k, f"unknown key{hint}; allowed keys: {allowed}")
        out[model_name] = entry
    return out


# ---------------------------------------------------------------------------------------------
# The model


def _positive_int(value, name) -> int:
    require(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1,
            name, f"must be a positive integer, got {value!r}")
    return int(value)


class ComputeModel:
    """Compute times of one model at one shape on one GPU profile.

    Parameters
    ----------
    model : MoEModel or catalog name or model TOML path
    tp : tensor-parallel degree (divides ``heads``)
    micro_batch, seq_len : the shape; ``T = micro_batch * seq_len`` tokens per EP rank
    profile : GPU profile name (``a100`` default, ``h100``, ``h800``) or :class:`GPUProfile`
    overrides : measured op times, a TOML path or a dict (module docstring), or None
    backward_factor : bwd = factor x fwd for every op not measured in bwd (default 2.0)
    ep : expert-parallel degree (divides ``routed_experts``); it sets the experts per rank,
        ``routed_experts / ep``, over which the expert efficiency curve splits a rank's tokens.
        None (default) means one expert per rank.
    causal : halve the seq^2 attention terms (default False, as Megatron's FLOPs accounting)
    """

    def __init__(self, model, *, tp: int, micro_batch: int, seq_len: int, profile="a100",
                 overrides=None, backward_factor: float = 2.0, ep: Optional[int] = None,
                 causal: bool = False):
        self.model: MoEModel = get_model(model)
        m = self.model
        self.tp = _positive_int(tp, "tp")
        self.micro_batch = _positive_int(micro_batch, "micro_batch")
        self.seq_len = _positive_int(seq_len, "seq_len")
        require(m.heads % self.tp == 0, "tp",
                f"must divide the attention heads of {m.name} ({m.heads}), got {self.tp}")
        if ep is None:
            self.ep = None
            self.experts_per_rank = 1
        else:
            self.ep = _positive_int(ep, "ep")
            require(m.routed_experts % self.ep == 0, "ep",
                    f"must divide the routed experts of {m.name} ({m.routed_experts}), got {ep}")
            self.experts_per_rank = m.routed_experts // self.ep
        require(_is_number(backward_factor) and backward_factor > 0, "backward_factor",
                f"must be a positive number, got {backward_factor!r}")
        self.backward_factor = float(backward_factor)
        require(isinstance(causal, bool), "causal", f"must be true or false, got {causal!r}")
        self.causal = causal
        self.profile: GPUProfile = get_profile(profile)
        self.tokens = self.micro_batch * self.seq_len
        self._override_ms = {}
        entry = load_overrides(overrides).get(m.name)
        if entry is not None:
            if entry["gpu"] is not None:
                require(entry["gpu"].lower() == self.profile.name.lower(),
                        f"overrides.{m.name}.gpu",
                        f"the times were measured on {entry['gpu']!r} but the profile is "
                        f"{self.profile.name!r}; use that profile or remove the key")
            for key, v in entry["shape"].items():
                require(v == getattr(self, key), f"overrides.{m.name}.{key}",
                        f"the times were measured at {key} = {v} but the model is configured "
                        f"with {key} = {getattr(self, key)}")
            self._override_ms = dict(entry["ms"])

    # -- FLOPs and bytes ----------------------------------------------------------------------

    @property
    def mean_expert_tokens(self) -> int:
        """Routed token copies on the mean-loaded EP rank: ``T * top_k`` (every EP rank sends
        ``T * top_k`` copies, so ep ranks receive ``ep * T * top_k`` in all)."""
        return self.tokens * self.model.top_k

    def _check_op(self, op):
        require(op in OPS, "op", f"must be one of {', '.join(OPS)}, got {op!r}")

    def _expert_tokens(self, tokens):
        if tokens is None:
            return self.mean_expert_tokens, True
        arr = np.asarray(tokens)
        if arr.dtype.kind not in "iu":  # not require(): the message would format the array
            raise ConfigError("tokens", f"must be a non-negative integer or an integer array, "
                              f"got {tokens!r}")
        require(bool(np.all(arr >= 0)), "tokens", "must be non-negative")
        if arr.ndim == 0:
            return int(arr), True
        return arr.astype(np.int64), False

    def flops(self, op: str, tokens=None):
        """Forward FLOPs of ``op`` for one GPU, one layer, one micro-batch.

        ``tokens`` is for ``experts`` only: routed token copies received by this GPU's EP rank
        (int or int array; default the mean, ``T * top_k``); the result is then float or float64
        array of the same shape. ``embedding`` has 0 FLOPs (see :meth:`hbm_bytes`).
        """
        self._check_op(op)
        m, T, tp = self.model, self.tokens, self.tp
        h = m.hidden
        if op != "experts":
            require(tokens is None, "tokens", f"applies to the experts op only, not {op!r}")
        if op == "embedding":
            return 0.0
        if op == "attention":
            split, whole = m.attention_params_split()
            core = (2.0 * self.micro_batch * self.seq_len ** 2 * m.heads
                    * (m.qk_head_dim + m.value_head_dim))
            if self.causal:
                core *= 0.5
            return (2.0 * T * split + core) / tp + 2.0 * T * whole
        if op == "gate":
            return 2.0 * T * h * m.routed_experts
        if op == "dense_ffn":
            return 2.0 * T * 3 * h * m.dense_ffn / tp
        if op == "shared_experts":
            return 2.0 * T * 3 * h * m.shared_ffn * m.shared_experts / tp
        if op == "lm_head":
            return 2.0 * T * h * m.vocab / tp
        n, scalar = self._expert_tokens(tokens)
        per_token = 2.0 * 3 * h * m.expert_ffn / tp
        return float(n * per_token) if scalar else n.astype(np.float64) * per_token

    def hbm_bytes(self, op: str) -> float:
        """The HBM-traffic floor of ``op`` in bytes (0 for ops modelled as compute-bound):
        embedding ``2 * T * h * 2`` (read rows, write output), gate ``T * h * 2``."""
        self._check_op(op)
        th = float(self.tokens * self.model.hidden * _BYTES_PER_ELEMENT)
        return {"embedding": 2 * th, "gate": th}.get(op, 0.0)

    def expert_efficiency(self, tokens=None):
        """Achieved fraction of peak of the expert GEMMs for ``tokens`` routed copies on the rank:
        ``eff_max * n / (n + t_half)`` with n = tokens / experts_per_rank (0 where tokens = 0)."""
        n, scalar = self._expert_tokens(tokens)
        eff_max = self.profile.efficiency["experts"]
        per = np.asarray(n, dtype=np.float64) / self.experts_per_rank
        t_half = self.profile.expert_t_half
        with np.errstate(invalid="ignore", divide="ignore"):
            eff = np.where(per > 0, eff_max * per / (per + t_half), 0.0)
        return float(eff) if scalar else eff

    # -- times --------------------------------------------------------------------------------

    def _fwd_seconds(self, op, tokens):
        prof = self.profile
        if op == "experts":
            n, scalar = self._expert_tokens(tokens)
            flops = self.flops(op, n)
            eff_max = prof.efficiency["experts"]
            # roofline sum = eff curve: FLOPs / (peak eff_max) + t_half tokens' worth per expert
            fixed = np.where(np.asarray(n) > 0,
                             self.experts_per_rank * prof.expert_t_half, 0.0)
            per_token = self.flops(op, 1)
            s = (np.asarray(flops) + fixed * per_token) / (prof.peak_flops * eff_max)
            return float(s) if scalar else s
        flops = self.flops(op)
        compute = flops / (prof.peak_flops * prof.efficiency[op]) if flops else 0.0
        memory = self.hbm_bytes(op) / prof.hbm_bytes_per_s
        return max(compute, memory)

    def time_ps(self, op: str, phase: str, tokens=None):
        """Time of ``op`` in ``phase`` (``"fwd"`` or ``"bwd"``) for one GPU, one layer, one
        micro-batch, in ps: int, or int64 array for an array of expert ``tokens``.

        A measured override of (op, phase) wins; a measured fwd alone sets bwd =
        ``backward_factor`` x that fwd; otherwise bwd = ``backward_factor`` x the modelled fwd.
        """
        self._check_op(op)
        require(phase in PHASES, "phase", f"must be one of fwd, bwd, got {phase!r}")
        if op != "experts":
            require(tokens is None, "tokens", f"applies to the experts op only, not {op!r}")
            n, scalar = None, True
        else:
            n, scalar = self._expert_tokens(tokens)
        ms = self._override_ms.get((op, phase))
        factor = 1.0
        if ms is None and phase == "bwd":
            ms = self._override_ms.get((op, "fwd"))
            factor = self.backward_factor
        if ms is not None:
            if op == "experts":
                ps = np.asarray(n, dtype=np.float64) / 1000.0 * (ms * factor * _PS_PER_MS)
            else:
                ps = ms * factor * _PS_PER_MS
        else:
            factor = 1.0 if phase == "fwd" else self.backward_factor
            ps = np.asarray(self._fwd_seconds(op, n)) * (1e12 * factor)
        ps = np.rint(ps).astype(np.int64)
        return int(ps) if scalar else ps

    def layer_time_ps(self, moe: bool, phase: str, expert_tokens=None):
        """One transformer layer of one micro-batch on one GPU, in ps (sum of the ops' ps).

        - ``moe=False`` (dense layer): ``attention + dense_ffn``.
        - ``moe=True``: ``attention + gate + shared_experts + experts(expert_tokens)``
          (``shared_experts`` is 0 for models without them; ``expert_tokens`` as in
          :meth:`time_ps`, default the mean rank; an array gives an int64 array).

        Excludes ``embedding`` (first stage) and ``lm_head`` (last stage), and all communication;
        the task graph keeps attention and experts apart to put the all-to-alls between them.
        """
        require(isinstance(moe, (bool, np.bool_)), "moe", f"must be true or false, got {moe!r}")
        t = self.time_ps("attention", phase)
        if not moe:
            require(expert_tokens is None, "expert_tokens", "applies to MoE layers only")
            return t + self.time_ps("dense_ffn", phase)
        t += self.time_ps("gate", phase)
        if self.model.shared_experts:
            t += self.time_ps("shared_experts", phase)
        return self.time_ps("experts", phase, expert_tokens) + t

    @property
    def overridden(self) -> tuple:
        """(op, phase) pairs whose times come from measured overrides (fwd-derived bwd included)."""
        pairs = set(self._override_ms)
        pairs |= {(op, "bwd") for (op, ph) in self._override_ms if ph == "fwd"}
        return tuple(sorted(pairs, key=lambda p: (OPS.index(p[0]), PHASES.index(p[1]))))

    def describe(self) -> dict:
        """Profile, efficiencies and per-op times in ms at the configured shape (JSON-able).
        Expert times are for the mean-loaded rank (``T * top_k`` copies); ``dense_ffn`` and
        ``shared_experts`` are left out for models without dense layers / shared experts."""
        ops = [op for op in OPS if op != "shared_experts" or self.model.shared_experts]
        if not self.model.dense_layers:
            ops.remove("dense_ffn")
        return {
            "model": self.model.name,
            "profile": self.profile.to_dict(),
            "shape": {"tp": self.tp, "ep": self.ep, "experts_per_rank": self.experts_per_rank,
                      "micro_batch": self.micro_batch, "seq_len": self.seq_len,
                      "tokens": self.tokens, "mean_expert_tokens": self.mean_expert_tokens,
                      "causal": self.causal, "backward_factor": self.backward_factor},
            "gflops_fwd": {op: self.flops(op) / 1e9 for op in ops},
            "fwd_ms": {op: self.time_ps(op, "fwd") / _PS_PER_MS for op in ops},
            "bwd_ms": {op: self.time_ps(op, "bwd") / _PS_PER_MS for op in ops},
            "overridden": [f"{op}_{phase}" for op, phase in self.overridden],
        }
