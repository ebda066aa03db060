"""Gating / expert load: how many tokens each source EP rank sends to each expert.

An :class:`ExpertLoad` answers, for one (iteration, layer, micro-batch)::

    expert_tokens(iteration, layer, micro_batch) -> int64[ep, n_experts]   # C[s, x]
    rank_tokens(iteration, layer, micro_batch)   -> int64[ep, ep]          # R[s, d]

``C[s, x]`` is the number of token copies that EP rank ``s`` routes to expert ``x``; ``R[s, d]``
folds ``C`` over the ``n_experts // ep`` experts that rank ``d`` holds (expert ``x`` lives on rank
``x // (n_experts // ep)``). Units are tokens (one token copy = one hidden-state vector). Both
arrays are **read-only** (they are cached; copy before modifying). ``layer`` is the MoE-layer index
``0 .. moe_layers - 1``; ``iteration`` and ``micro_batch`` are non-negative integers.

Invariants of the generated kinds (``reference`` and ``synthetic``): each token of a source rank
goes to ``top_k`` *distinct* experts, so every row of ``C`` sums to ``tokens_per_rank * top_k``
and no entry exceeds ``tokens_per_rank``. A ``trace`` returns what its file says (validated
non-negative).

Kinds (build one with :func:`make_expert_load`):

``reference``
    The released MixNet simulator's static 8 x 8 matrix :data:`REFERENCE_MATRIX` (reference
    section 6.4), the same for every layer, micro-batch and iteration. For comparison with the
    paper only; see :class:`ReferenceLoad`.
``synthetic``
    A seeded generator with expert-popularity skew, drift over training, correlation between
    layers and per-source-rank preferences; see :class:`SyntheticLoad` for the model, every
    parameter and its effect on the max/mean expert load.
``trace``
    Replays recorded counts from Parquet, Arrow IPC or HDF5; see :class:`TraceLoad` and
    :func:`write_trace` for the schema.

Errors in parameters or trace files raise :class:`fabricsim.errors.ConfigError` whose field is
``gating.<name>`` (``gating.path`` for everything about a trace file).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import OrderedDict

import numpy as np

from fabricsim.errors import ConfigError, require
from fabricsim.kernels import counts

__all__ = ["ExpertLoad", "ReferenceLoad", "SyntheticLoad", "TraceLoad", "REFERENCE_MATRIX",
           "TRACE_COLUMNS", "TRACE_FORMATS", "REFERENCE_SIZINGS", "REFERENCE_COUNTS", "HDF5_GROUP", "EXPERT_LOAD_KEY", "KINDS",
           "SYNTHETIC_DEFAULTS", "make_expert_load", "write_trace", "read_trace"]

#: The kinds :func:`make_expert_load` builds.
KINDS = ("reference", "synthetic", "trace")

#: How :class:`ReferenceLoad` sizes tiled rows, and what a row counts (see its docstring).
REFERENCE_SIZINGS = ("released", "renormalized")
REFERENCE_COUNTS = ("tokens", "copies")

#: Columns of an expert-load trace, in order (all integers; written as int64).
TRACE_COLUMNS = ("iteration", "layer", "micro_batch", "src_rank", "expert", "tokens")

#: File extension -> trace format.
TRACE_FORMATS = {".parquet": "parquet", ".arrow": "arrow", ".arrows": "arrow",
                 ".h5": "hdf5", ".hdf5": "hdf5"}

#: HDF5 traces keep one 1-D dataset per column in this group (reading also accepts the root).
HDF5_GROUP = "expert_load"

#: Metadata key (Arrow schema metadata / HDF5 attribute) holding the writer's ``describe()`` JSON.
EXPERT_LOAD_KEY = "fabricsim.expert_load"

#: The MixNet simulator's weight matrix W[src EP rank][dst EP rank]; every row sums to 32768
#: (= 4096 tokens x micro-batch 8). Reference section 6.4.
REFERENCE_MATRIX = np.array([
    [9810, 5338, 1231, 3042, 4452, 2004, 841, 6050],
    [9278, 6282, 839, 3722, 3821, 2903, 909, 5014],
    [10684, 5165, 1044, 2634, 4344, 3333, 675, 4889],
    [10897, 5629, 1086, 2114, 2762, 3463, 1059, 5758],
    [8684, 5666, 1046, 3955, 4334, 2952, 944, 5187],
    [8361, 5908, 777, 3043, 3984, 3422, 897, 6376],
    [10208, 5507, 1117, 4148, 3967, 3119, 904, 3798],
    [9781, 5211, 902, 3343, 4289, 2839, 1008, 5395],
], dtype=np.int64)
REFERENCE_MATRIX.setflags(write=False)

# Result caches, in bytes: enough for every rank_tokens of a DeepSeek-size iteration (58 layers x
# 16 micro-batches at ep 64 is 30 MB), so that the four a2a phases of a key share one result.
_CACHE_RANK_BYTES = 64 << 20
_CACHE_EXPERT_BYTES = 32 << 20


# ---------------------------------------------------------------------------------------------
# small helpers

def _int_param(value, field, *, minimum=0):
    require(isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= minimum,
            field, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _float_param(value, field, *, lo=0.0, hi=math.inf, lo_open=False, allow_inf=False):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    v = float(value) if ok else math.nan
    ok = ok and not math.isnan(v) and (allow_inf or math.isfinite(v))
    ok = ok and (v > lo if lo_open else v >= lo) and v <= hi
    lo_s = f"> {lo:g}" if lo_open else f">= {lo:g}"
    hi_s = "" if hi == math.inf else f" and <= {hi:g}"
    require(ok, field, f"must be a number {lo_s}{hi_s}, got {value!r}")
    return v


def _readonly(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


class _LRU:
    """A small least-recently-used cache (key -> value), at most ``size`` entries."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict = OrderedDict()

    def get(self, key):
        v = self._d.get(key)
        if v is not None:
            self._d.move_to_end(key)
        return v

    def put(self, key, value):
        self._d[key] = value
        if len(self._d) > self.size:
            self._d.popitem(last=False)
        return value


def _apportion(weights: np.ndarray, total: int, cap: int) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (int64[n], >= 0), none above ``cap``.

    Exact integer arithmetic. Water-filling: entries whose proportional share exceeds ``cap``
    get ``cap`` and the rest is re-split over the others. Rounding is largest remainder, ties to
    the lower index. Needs ``cap * n >= total``. Returns int64[n] summing to ``total``.
    """
    w = np.asarray(weights, np.int64)
    n = w.size
    sat = np.zeros(n, bool)
    while True:
        free = ~sat
        rest = total - cap * int(sat.sum())
        wf = np.where(free, w, 0)
        if wf.sum() == 0:                      # nothing left to weight by: split evenly
            wf = free.astype(np.int64)
        s = int(wf.sum())
        num = rest * wf                        # share of entry i = num[i] / s
        over = free & (num > cap * s)
        if not over.any():
            break
        sat |= over
    out = np.where(sat, cap, num // s)
    rem = np.where(free, num % s, -1)
    short = rest - int(out[free].sum())
    order = np.lexsort((np.arange(n), -rem))   # remainder descending, then index ascending
    out[order[:short]] += 1
    return out


def _split_even(rank_tokens: np.ndarray, per_rank: int) -> np.ndarray:
    """Split each ``R[s, d]`` (int64[ep, ep]) evenly over rank d's ``per_rank`` experts, the
    remainder one token each to the lowest expert ids. Returns int64[ep, ep * per_rank]."""
    base, rem = np.divmod(rank_tokens, per_rank)
    j = np.arange(per_rank)
    out = base[:, :, None] + (j[None, None, :] < rem[:, :, None])
    return out.reshape(rank_tokens.shape[0], -1).astype(np.int64)


# ---------------------------------------------------------------------------------------------
# base class

class ExpertLoad:
    """Tokens each source EP rank sends to each expert, per (iteration, layer, micro_batch).

    Attributes: ``kind``, ``ep`` (EP ranks), ``n_experts`` (routed experts, divisible by ep),
    ``top_k``, ``tokens_per_rank`` (tokens of one micro-batch on one EP rank = micro_batch *
    seq_len), ``moe_layers`` (valid ``layer`` values are ``0 .. moe_layers - 1``).
    Results are cached (read-only arrays).
    """

    kind = "base"

    def __init__(self, *, ep, n_experts, top_k, tokens_per_rank, moe_layers):
        self.ep = _int_param(ep, "gating.ep", minimum=1)
        self.n_experts = _int_param(n_experts, "gating.n_experts", minimum=1)
        require(self.n_experts % self.ep == 0, "gating.n_experts",
                f"must be divisible by ep={self.ep}, got {self.n_experts}")
        self.top_k = _int_param(top_k, "gating.top_k", minimum=1)
        require(self.top_k <= self.n_experts, "gating.top_k",
                f"must be <= n_experts={self.n_experts} (distinct experts per token), got {self.top_k}")
        self.tokens_per_rank = _int_param(tokens_per_rank, "gating.tokens_per_rank", minimum=1)
        self.moe_layers = _int_param(moe_layers, "gating.moe_layers", minimum=1)
        self._expert_cache = _LRU(max(8, _CACHE_EXPERT_BYTES // (8 * self.ep * self.n_experts)))
        self._rank_cache = _LRU(max(8, _CACHE_RANK_BYTES // (8 * self.ep * self.ep)))

    @property
    def experts_per_rank(self) -> int:
        """Experts held by one EP rank (``n_experts // ep``)."""
        return self.n_experts // self.ep

    @property
    def row_tokens(self) -> int:
        """Token copies one source rank sends per (iteration, layer, micro_batch): T * top_k."""
        return self.tokens_per_rank * self.top_k

    def _key(self, iteration, layer, micro_batch) -> tuple:
        it = _int_param(iteration, "gating.iteration")
        mb = _int_param(micro_batch, "gating.micro_batch")
        lay = _int_param(layer, "gating.layer")
        require(lay < self.moe_layers, "gating.layer",
                f"must be in [0, {self.moe_layers}) (MoE layers), got {lay}")
        return it, lay, mb

    def expert_tokens(self, iteration: int, layer: int, micro_batch: int) -> np.ndarray:
        """int64[ep, n_experts]: tokens that source rank s sends to expert x (read-only)."""
        return self._cached_experts(self._key(iteration, layer, micro_batch))

    def rank_tokens(self, iteration: int, layer: int, micro_batch: int) -> np.ndarray:
        """int64[ep, ep]: tokens that source rank s sends to the experts of rank d (read-only)."""
        key = self._key(iteration, layer, micro_batch)
        hit = self._rank_cache.get(key)
        if hit is None:
            hit = self._rank_cache.put(key, _readonly(self._rank_tokens(key)))
        return hit

    def _cached_experts(self, key: tuple) -> np.ndarray:
        hit = self._expert_cache.get(key)
        if hit is None:
            hit = self._expert_cache.put(key, _readonly(self._expert_tokens(*key)))
        return hit

    def _expert_tokens(self, iteration: int, layer: int, micro_batch: int) -> np.ndarray:
        """int64[ep, n_experts] for a validated key (subclasses implement it)."""
        raise NotImplementedError

    def _rank_tokens(self, key: tuple) -> np.ndarray:
        return counts.fold_ranks(self._cached_experts(key), self.experts_per_rank)

    def describe(self) -> dict:
        """The load's parameters (JSON-able)."""
        return {"kind": self.kind, "ep": self.ep, "n_experts": self.n_experts, "top_k": self.top_k,
                "tokens_per_rank": self.tokens_per_rank, "moe_layers": self.moe_layers}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({json.dumps(self.describe(), sort_keys=True)})"


# ---------------------------------------------------------------------------------------------
# reference

class ReferenceLoad(ExpertLoad):
    """The released MixNet simulator's static matrix, scaled and tiled (reference section 6.4).

    Rank level: ``R[s, d]`` is proportional to ``W[s % 8][d % 8]`` (``W`` = :data:`REFERENCE_MATRIX`;
    tiling modulo 8 for ep != 8 is the simulator's known quirk), each row scaled to
    ``tokens_per_rank * top_k`` with exact integer largest-remainder rounding (ties to the lower
    rank). For micro-batch 8, sequence 4096 (tokens_per_rank = 32768) and top-2 at ep = 8 the
    result is exactly ``2 * W``. Expert level: ``R[s, d]`` is split evenly over rank d's experts,
    the remainder one token each to the lowest expert ids.

    Two readings of the matrix (switches of :mod:`fabricsim.profiles`; the defaults are the
    released simulator's):

    - ``sizing="released"`` (default): ``R[s, d] = total * W[s % 8][d % 8] // 32768`` with
      ``total`` the rank's volume, rows not renormalized after tiling, as the released simulator
      sizes a flow (``total * W[e_src % 8][e_dst % 8] / 32768``, reference section 4.2): at ep 16
      a rank sends twice ``total``, at ep 32 four times, at ep 4 what its 4 x 4 corner holds. No
      per-expert cap. ``sizing="renormalized"``: every tiled row rescaled to exactly ``total``
      (below).
    - ``counts="tokens"`` (default): the 32,768 of a row are one micro-batch's tokens (4096
      sequence x micro-batch 8, reference section 6.4), each routed to ``top_k`` experts, so
      ``total = tokens_per_rank * top_k`` token copies. ``counts="copies"``: the row already
      counts the copies, ``total = tokens_per_rank``.

    Renormalized: per-expert cap: a rank can take at most ``experts_per_rank * tokens_per_rank`` tokens from
    one source (each token visits an expert at most once), i.e. the cap is exceeded where
    ``top_k * share > experts_per_rank``, ``share`` the entry's fraction of its tiled row. That
    never happens when ``top_k <= experts_per_rank``, nor in the paper's setting (ep 8, 8
    experts, top-2: the largest share is 10897 / 32768, so 2 * 0.333 < 1). It does happen e.g.
    for ep 8, 8 experts, top-4, or ep 4, 4 experts, top-2 (tiling gives rank 0 up to 55 % of a
    row). Then the overflowing entries are set to the cap and the excess is re-split over the
    row's other ranks in proportion to W (water-filling); a ``RuntimeWarning`` says so and
    ``describe()["redistributed_tokens"]`` counts the moved tokens over all rows (0 when the
    scaled matrix is used as is). Nothing is clipped silently.
    """

    kind = "reference"

    def __init__(self, *, ep, n_experts, top_k, tokens_per_rank, moe_layers, sizing="released",
                 counts="tokens"):
        super().__init__(ep=ep, n_experts=n_experts, top_k=top_k, tokens_per_rank=tokens_per_rank,
                         moe_layers=moe_layers)
        require(sizing in REFERENCE_SIZINGS, "a2a_sizing",
                f"must be one of {', '.join(REFERENCE_SIZINGS)}, got {sizing!r}")
        require(counts in REFERENCE_COUNTS, "a2a_counts",
                f"must be one of {', '.join(REFERENCE_COUNTS)}, got {counts!r}")
        self.sizing, self.counts = sizing, counts
        total = self.row_tokens if counts == "tokens" else self.tokens_per_rank
        cap = self.experts_per_rank * self.tokens_per_rank
        dst = np.arange(self.ep) % 8
        rows = {}
        moved = 0
        for r in range(min(self.ep, 8)):       # source rows repeat with period 8
            w = REFERENCE_MATRIX[r][dst]
            if sizing == "released":
                rows[r] = w * total // int(REFERENCE_MATRIX[r].sum())
                continue
            rows[r] = _apportion(w, total, cap)
            moved += int(np.maximum(_apportion(w, total, total) - rows[r], 0).sum()) \
                * len(range(r, self.ep, 8))
        self.redistributed_tokens = moved
        self._rank = _readonly(np.stack([rows[s % 8] for s in range(self.ep)]))
        self._experts = _readonly(_split_even(self._rank, self.experts_per_rank))
        if moved:
            warnings.warn(
                f"gating reference: the 8x8 matrix scaled to ep={self.ep}, n_experts={self.n_experts}, "
                f"top_k={self.top_k} sends some ranks more than experts_per_rank * tokens_per_rank "
                f"tokens; {moved} tokens were re-split over the other ranks (per-expert cap)",
                RuntimeWarning, stacklevel=3)

    def _expert_tokens(self, iteration, layer, micro_batch):
        return self._experts

    def _rank_tokens(self, key):
        return self._rank

    def describe(self) -> dict:
        return {**super().describe(), "sizing": self.sizing, "counts": self.counts,
                "redistributed_tokens": self.redistributed_tokens}


# ---------------------------------------------------------------------------------------------
# synthetic

#: Parameters of :class:`SyntheticLoad` and their defaults (see its docstring).
SYNTHETIC_DEFAULTS = {
    "skew": 0.2,
    "drift": 0.35,
    "drift_halflife": 1000.0,
    "layer_corr": 0.5,
    "spatial": 0.5,
    "noise": 1.0,
    "iteration_offset": 0,
}

# Stream tags of the seed sequence: one independent random stream per purpose.
_TAG_LAYER, _TAG_DRIFT, _TAG_SPATIAL, _TAG_RANK, _TAG_EXPERT = 1, 2, 3, 4, 5


class SyntheticLoad(ExpertLoad):
    """A seeded generator of expert loads with skew, drift, layer correlation and spatial structure.

    **Model.** Let ``t = iteration + iteration_offset`` be the training step, ``E = n_experts``,
    ``T = tokens_per_rank``, ``m = E // ep`` experts per rank.

    1. *Layer popularity* (log scale): ``a[l] = skew * z[l] + drift(t) * u[t, l]``, float[E], where
       ``z[l]`` (static) and ``u[t, l]`` (fresh at every step) are standard-normal vectors made an
       AR(1) chain over layers: ``z[l] = layer_corr * z[l-1] + sqrt(1 - layer_corr**2) * e[l]``
       (same for ``u``), so each layer's vector is standard normal and consecutive layers are
       correlated by ``layer_corr``. ``drift(t) = drift * 0.5 ** (t / drift_halflife)``.
    2. *Source-rank preference*: ``x[s] = a[l] + spatial * v[l, s]``, ``v`` standard normal
       float[ep, E], fixed per layer (it does not drift: the paper's Fig. 4b sparsity persists
       after per-expert totals converge), independent across layers.
    3. *Routing probabilities*: ``q[s] = softmax(x[s])``; inclusion probabilities
       ``p[s] = min(1, c * q[s])`` with ``c`` chosen so that ``sum(p[s]) = top_k`` (water-filling:
       the chance that one token picks expert x among its top_k distinct experts is <= 1).
    4. *Micro-batch sampling*, in two levels (so :meth:`rank_tokens` never needs the expert level):

       - ranks: ``R[s, d]`` near ``T * P[s, d]`` with ``P[s, d] = sum of p[s, x]`` over rank d's
         experts (``P <= m``), plus ``noise * sqrt(T P (1 - P / m)) * g``;
       - experts (only when :meth:`expert_tokens` is asked): ``R[s, d]`` split over rank d's
         experts near ``R[s, d] * f`` with ``f = p[s, x] / P[s, d]``, plus
         ``noise * sqrt(R f (1 - f)) * g`` (the multinomial spread inside the rank);

       ``g`` standard normals. Each level clips to [0, cap], water-fills back to the exact row
       total (``T * top_k`` per source rank, resp. ``R[s, d]``) with entries <= cap (``m * T``,
       resp. ``T``), and rounds cumulatively (every count is floor or ceil of its real value).

    So every row sums to exactly ``T * top_k``, every expert count is in ``[0, T]`` (a token
    visits an expert at most once) and ``expert_tokens`` folds exactly to ``rank_tokens``, for
    any parameters. Sampling costs O(ep * ep) (ranks) or O(ep * E) (experts) vectorized work per
    call, not per token: the spread is the binomial / multinomial one in the Gaussian
    approximation (accurate when the expected counts are >= ~10, i.e. real micro-batches of
    thousands of tokens; for tiny T the invariants hold but the spread is only indicative), and
    the negative correlation between the experts of one token enters only through the row sums.

    **Determinism.** ``(seed, layer)``, ``(seed, step)`` and ``(seed, step, layer, micro_batch)``
    seed independent NumPy generators (``SeedSequence``), so a result depends only on the seed,
    the parameters and its key, never on call order; layer ``l``'s result does not depend on
    ``moe_layers`` either.

    **Parameters** (defaults in :data:`SYNTHETIC_DEFAULTS`). "max/mean" is the busiest expert's
    tokens over the mean expert's tokens, summed over source ranks, in one (iteration, layer,
    micro-batch); it can never exceed ``n_experts / top_k``. It grows with the log-popularity
    spread ``sigma = sqrt(skew**2 + drift(t)**2)``, roughly as ``exp(sigma * m_E - sigma**2 / 2)``
    (``m_E`` the expected maximum of E standard normals: 1.4 for 8, 2.2 for 64, 2.8 for 256), plus
    a little from ``spatial`` and ``noise``. Measured with the defaults (T = 16384, averaged over
    layers and seeds), at step 0 / converged (``iteration_offset`` = 100000):

    ============================  =========  =========
    experts, ep, top_k            step 0     converged
    ============================  =========  =========
    8, 8, 2 (Mixtral)             1.7        1.4
    64, 8, 2                      2.6        1.8
    64, 16, 4 (Qwen-MoE)          2.6        1.7
    256, 64, 8 (DeepSeek)         2.8        1.8
    ============================  =========  =========

    ``skew`` (>= 0, default 0.2)
        Spread of the static log-popularity of experts: the imbalance training converges to.
        0: all experts equally popular. Raising it raises max/mean monotonically; converged, at
        64 experts, ep 8, top-2: 1.5 / 2.1 / 3.5 / 6.2 for skew 0 / 0.3 / 0.6 / 1.0 (with the
        other defaults).
    ``drift`` (>= 0, default 0.35)
        Spread of the per-step perturbation of log-popularity at step 0. An expert's load changes
        from one iteration to the next by a factor of about ``exp(+-sqrt(2) * drift(t))``, and
        max/mean is higher early (``sigma`` above); both shrink as ``drift(t)`` decays (paper
        Fig. 4a: the load-balancing loss makes loads vary less as training goes on). The
        perturbations of different steps are independent (no autocorrelation beyond ``skew``).
    ``drift_halflife`` (> 0 iterations, may be ``inf``; default 1000)
        Steps after which ``drift(t)`` has halved. ``inf``: loads never settle.
    ``layer_corr`` (in [0, 1], default 0.5)
        Correlation between the log-popularity vectors of consecutive MoE layers (both the
        static and the drifting part; layers ``l`` and ``l + j`` are correlated by
        ``layer_corr ** j``). 0: independent layers; 1: every layer has the same popularity
        (layers still differ through ``spatial`` and sampling noise). No effect on a single
        layer's max/mean.
    ``spatial`` (>= 0, default 0.5)
        Spread of each source rank's log-preference around the layer's popularity. 0: every
        source rank has the same expert distribution (rank-matrix rows alike up to noise);
        larger: a sparser, more non-uniform rank-to-rank matrix (paper Fig. 4b). It raises the
        max/mean of a single source rank's row strongly and the per-expert max/mean only a little
        (it averages out over the ep sources; noticeable when ep is small).
    ``noise`` (>= 0, default 1.0)
        Scale of the per-micro-batch sampling spread relative to binomial. 0: every micro-batch
        of an (iteration, layer) gets the same (expected) counts. It adds a few percent to
        max/mean at realistic T.
    ``iteration_offset`` (integer >= 0, default 0)
        Training step of iteration 0: e.g. 10000 simulates late training (converged loads).
    """

    kind = "synthetic"

    def __init__(self, *, ep, n_experts, top_k, tokens_per_rank, moe_layers, seed=0, **params):
        super().__init__(ep=ep, n_experts=n_experts, top_k=top_k, tokens_per_rank=tokens_per_rank,
                         moe_layers=moe_layers)
        self.seed = _int_param(seed, "gating.seed")
        unknown = sorted(set(params) - set(SYNTHETIC_DEFAULTS))
        require(not unknown, f"gating.{unknown[0]}" if unknown else "gating",
                f"unknown parameter of kind 'synthetic'; allowed: {', '.join(SYNTHETIC_DEFAULTS)}")
        p = {**SYNTHETIC_DEFAULTS, **params}
        self.skew = _float_param(p["skew"], "gating.skew")
        self.drift = _float_param(p["drift"], "gating.drift")
        self.drift_halflife = _float_param(p["drift_halflife"], "gating.drift_halflife",
                                           lo_open=True, allow_inf=True)
        self.layer_corr = _float_param(p["layer_corr"], "gating.layer_corr", hi=1.0)
        self.spatial = _float_param(p["spatial"], "gating.spatial")
        self.noise = _float_param(p["noise"], "gating.noise")
        self.iteration_offset = _int_param(p["iteration_offset"], "gating.iteration_offset")
        self._static = self._layer_chain(self._rng(_TAG_LAYER))        # float[L, E]
        self._drift_cache = _LRU(4)                                    # step -> float[L, E]
        self._prob_cache = _LRU(self.moe_layers)                       # see _routing

    def params(self) -> dict:
        """The generator's parameters (every one of :data:`SYNTHETIC_DEFAULTS`)."""
        return {name: getattr(self, name) for name in SYNTHETIC_DEFAULTS}

    def describe(self) -> dict:
        return {**super().describe(), "seed": self.seed, **self.params()}

    def drift_at(self, iteration: int) -> float:
        """``drift(t)``: the spread of the per-step log-popularity perturbation at an iteration."""
        return self.drift * 0.5 ** ((_int_param(iteration, "gating.iteration") + self.iteration_offset)
                                    / self.drift_halflife)

    def _rng(self, *key) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.seed, *key]))

    def _layer_chain(self, rng) -> np.ndarray:
        """float64[moe_layers, E]: standard-normal vectors, AR(1) over layers with layer_corr."""
        e = rng.standard_normal((self.moe_layers, self.n_experts))
        rho, fresh = self.layer_corr, math.sqrt(1.0 - self.layer_corr ** 2)
        for lay in range(1, self.moe_layers):
            e[lay] = rho * e[lay - 1] + fresh * e[lay]
        return e

    def log_popularity(self, iteration: int, layer: int) -> np.ndarray:
        """float64[E]: the layer's log-popularity ``a[l]`` at an iteration (model step 1)."""
        it, lay, _ = self._key(iteration, layer, 0)
        return self._log_popularity(it + self.iteration_offset, lay)

    def probabilities(self, iteration: int, layer: int) -> np.ndarray:
        """float64[ep, E]: inclusion probabilities ``p`` (model step 3); rows sum to top_k, <= 1."""
        it, lay, _ = self._key(iteration, layer, 0)
        return self._probabilities(it + self.iteration_offset, lay)

    def _log_popularity(self, step: int, layer: int) -> np.ndarray:
        a = self.skew * self._static[layer]
        d = self.drift * 0.5 ** (step / self.drift_halflife)
        if d > 0.0:
            u = self._drift_cache.get(step)
            if u is None:
                u = self._drift_cache.put(step, self._layer_chain(self._rng(_TAG_DRIFT, step)))
            a = a + d * u[layer]
        return a

    def _probabilities(self, step: int, layer: int) -> np.ndarray:
        return self._routing(step, layer)[0]

    def _routing(self, step: int, layer: int) -> tuple:
        """Cached per (step, layer): ``p`` float64[ep, E] (step 3), ``P`` float64[ep, ep] its sum
        over each rank's experts, ``f`` float64[ep * ep, m] = ``p / P`` (shares inside a rank)."""
        hit = self._prob_cache.get((step, layer))
        if hit is None:
            x = np.broadcast_to(self._log_popularity(step, layer), (self.ep, self.n_experts))
            if self.spatial > 0.0:
                x = x + self.spatial * self._rng(_TAG_SPATIAL, layer).standard_normal(x.shape)
            q = np.exp(x - x.max(axis=1, keepdims=True))
            p = counts.waterfill_rows(q, float(self.top_k), 1.0)
            m = self.experts_per_rank
            p3 = p.reshape(self.ep, self.ep, m)
            big_p = p3.sum(axis=2)
            f = np.divide(p3, big_p[:, :, None], out=np.full_like(p3, 1.0 / m),   # 1/m if P = 0
                          where=big_p[:, :, None] > 0).reshape(self.ep * self.ep, m)
            hit = self._prob_cache.put((step, layer), tuple(_readonly(a) for a in (p, big_p, f)))
        return hit

    def _normals(self, tag: int, step: int, layer: int, micro_batch: int, shape) -> np.ndarray:
        """float64[shape]: the sampling noise of one key (zeros when ``noise`` is 0)."""
        if self.noise == 0.0:
            return np.zeros(shape)
        return self._rng(tag, step, layer, micro_batch).standard_normal(shape)

    def _rank_tokens(self, key):
        """Rank level of step 4: ``R[s, d]`` near ``T * P[s, d]``, ``P[s, d]`` the sum of ``p[s, x]``
        over rank d's ``m`` experts (so ``P <= m``), spread ``noise * sqrt(T P (1 - P / m))``,
        rows of ``T * top_k``, entries <= ``m * T``."""
        iteration, layer, micro_batch = key
        step, t, m = iteration + self.iteration_offset, self.tokens_per_rank, self.experts_per_rank
        big_p = self._routing(step, layer)[1]
        mean = t * big_p
        sd = self.noise * np.sqrt(np.maximum(mean * (1.0 - big_p / m), 0.0))
        g = self._normals(_TAG_RANK, step, layer, micro_batch, mean.shape)
        totals = np.full(self.ep, t * self.top_k, np.int64)
        return counts.sample_rows(mean, sd, g, totals, m * t)

    def _expert_tokens(self, iteration, layer, micro_batch):
        """Expert level of step 4: each ``R[s, d]`` split over rank d's experts ``x`` near
        ``R[s, d] * f`` with ``f = p[s, x] / P[s, d]``, spread ``noise * sqrt(R f (1 - f))``
        (multinomial), entries <= T. Folds back exactly to :meth:`rank_tokens`."""
        ep, m, t = self.ep, self.experts_per_rank, self.tokens_per_rank
        rank = self.rank_tokens(iteration, layer, micro_batch)
        if m == 1:
            return rank.copy()
        step = iteration + self.iteration_offset
        f = self._routing(step, layer)[2]
        totals = rank.reshape(ep * ep)
        mean = totals[:, None] * f
        sd = self.noise * np.sqrt(mean * (1.0 - f))
        g = self._normals(_TAG_EXPERT, step, layer, micro_batch, mean.shape)
        return counts.sample_rows(mean, sd, g, totals, t).reshape(ep, ep * m)


# ---------------------------------------------------------------------------------------------
# trace

def _trace_error(path, message) -> ConfigError:
    return ConfigError("gating.path", f"{os.fspath(path)}: {message}")


def _trace_format(path) -> str:
    ext = os.path.splitext(os.fspath(path))[1].lower()
    if ext not in TRACE_FORMATS:
        raise _trace_error(path, f"unknown trace format {ext!r}; allowed extensions: "
                                 f"{', '.join(TRACE_FORMATS)}")
    return TRACE_FORMATS[ext]


def _read_arrow_table(path, fmt):
    import pyarrow as pa
    import pyarrow.parquet as pq
    try:
        if fmt == "parquet":
            return pq.read_table(path)
        try:                                   # .arrow / .arrows: accept either IPC flavour
            with pa.memory_map(os.fspath(path)) as src:
                return pa.ipc.open_file(src).read_all()
        except pa.ArrowInvalid:
            with pa.memory_map(os.fspath(path)) as src:
                return pa.ipc.open_stream(src).read_all()
    except (OSError, pa.ArrowException) as exc:
        raise _trace_error(path, f"not a readable {fmt} file ({exc})") from None


def _columns_from_arrow(path, table) -> tuple:
    import pyarrow as pa
    cols = {}
    for name in TRACE_COLUMNS:
        if name not in table.column_names:
            raise _trace_error(path, f"missing column {name!r}; a trace needs {', '.join(TRACE_COLUMNS)}")
        col = table.column(name)
        if not pa.types.is_integer(col.type):
            raise _trace_error(path, f"column {name!r} has type {col.type}; it must be an integer type")
        if col.null_count:
            raise _trace_error(path, f"column {name!r} has {col.null_count} null values")
        cols[name] = col.to_numpy().astype(np.int64, copy=False)
    meta = {k.decode(errors="replace"): v.decode(errors="replace")
            for k, v in (table.schema.metadata or {}).items()}
    return cols, meta


def _columns_from_hdf5(path) -> tuple:
    import h5py
    try:
        f = h5py.File(os.fspath(path), "r")
    except OSError as exc:
        raise _trace_error(path, f"not a readable hdf5 file ({exc})") from None
    with f:
        group = f[HDF5_GROUP] if HDF5_GROUP in f else f
        cols = {}
        for name in TRACE_COLUMNS:
            ds = group.get(name)
            if not isinstance(ds, h5py.Dataset):
                raise _trace_error(path, f"missing dataset {name!r} (looked in /{HDF5_GROUP} and /); "
                                         f"a trace needs {', '.join(TRACE_COLUMNS)}")
            if ds.dtype.kind not in "iu" or ds.ndim != 1:
                raise _trace_error(path, f"dataset {name!r} is {ds.dtype} with shape {ds.shape}; "
                                         "it must be a 1-D integer dataset")
            cols[name] = ds[()].astype(np.int64, copy=False)
        meta = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in group.attrs.items()}
    lengths = {len(c) for c in cols.values()}
    if len(lengths) > 1:
        raise _trace_error(path, f"datasets have different lengths "
                                 f"({', '.join(f'{n}={len(c)}' for n, c in cols.items())})")
    return cols, meta


def _read_columns(path) -> tuple:
    fmt = _trace_format(path)
    if not os.path.isfile(os.fspath(path)):
        raise _trace_error(path, "no such file")
    if fmt == "hdf5":
        return _columns_from_hdf5(path)
    return _columns_from_arrow(path, _read_arrow_table(path, fmt))


def read_trace(path) -> dict:
    """The columns of an expert-load trace: ``{name: int64[rows]}`` for every name of
    :data:`TRACE_COLUMNS`, in file order. Checks that the columns exist, are integers and have no
    nulls (ranges are checked by :class:`TraceLoad`, which knows ep and n_experts).

    Formats by extension: ``.parquet``; ``.arrow`` / ``.arrows`` (Arrow IPC file or stream, either
    accepted for both); ``.h5`` / ``.hdf5`` (one 1-D integer dataset per column in the group
    ``/expert_load``, or at the root).
    """
    return _read_columns(path)[0]


def _json_or_none(text):
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _span(values: np.ndarray) -> str:
    return f"{values.min()}..{values.max()}" if values.size else "none"


class TraceLoad(ExpertLoad):
    """Replays recorded counts from a trace file (see :func:`read_trace` for the formats).

    Schema: integer columns ``iteration, layer, micro_batch, src_rank, expert, tokens``, one row
    per (key, src_rank, expert) with key = (iteration, layer, micro_batch). (src_rank, expert)
    pairs absent from a present key count as 0 tokens; a key absent from the file is an error.
    Checked at construction (each failure is a :class:`ConfigError` on ``gating.path`` naming the
    file): columns present and integer, no nulls, tokens >= 0, iteration / layer / micro_batch
    >= 0, src_rank in [0, ep), expert in [0, n_experts), no duplicate (key, src_rank, expert).
    Other columns are ignored. ``tokens_per_rank`` and ``top_k`` are the caller's, for
    ``describe()`` only: rows are returned as recorded, without the row-sum or cap invariants of
    the generated kinds. ``describe()["source"]`` is the ``describe()`` of the load that
    :func:`write_trace` recorded (None for traces from elsewhere).
    """

    kind = "trace"

    def __init__(self, path, *, ep, n_experts, top_k, tokens_per_rank, moe_layers):
        super().__init__(ep=ep, n_experts=n_experts, top_k=top_k, tokens_per_rank=tokens_per_rank,
                         moe_layers=moe_layers)
        self.path = os.fspath(path)
        cols, meta = _read_columns(self.path)
        self.source = _json_or_none(meta.get(EXPERT_LOAD_KEY))    # the writer's describe()
        if isinstance(self.source, dict):  # recorded by write_trace: the shape must match
            for name in ("ep", "n_experts", "top_k", "tokens_per_rank"):
                want, got = getattr(self, name), self.source.get(name)
                if got is not None and got != want:
                    raise _trace_error(self.path, f"was recorded with {name} = {got}, but the "
                                       f"workload replays it with {name} = {want}")
        self._check_ranges(cols)
        over = cols["tokens"] > self.tokens_per_rank
        if over.any():
            raise _trace_error(self.path, f"row {int(np.argmax(over))}: {int(cols['tokens'][over][0])} "
                               f"tokens to one expert, more than the {self.tokens_per_rank} tokens "
                               "of a source rank's micro-batch (micro_batch * seq_len)")
        order = np.lexsort(tuple(cols[n] for n in reversed(TRACE_COLUMNS[:5])))
        c = {n: v[order] for n, v in cols.items()}
        same = np.ones(order.size, bool)
        same[0:1] = False
        for n in TRACE_COLUMNS[:5]:
            same[1:] &= c[n][1:] == c[n][:-1]
        if same.any():
            i = int(np.argmax(same))
            raise _trace_error(self.path, "duplicate row for " + ", ".join(
                f"{n} {c[n][i]}" for n in TRACE_COLUMNS[:5]))
        keys = np.stack([c[n] for n in TRACE_COLUMNS[:3]], axis=1)
        starts = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)]) if order.size \
            else np.zeros(0, np.int64)
        bounds = np.r_[starts, order.size]
        self._index = {tuple(int(v) for v in keys[a]): (int(a), int(b))
                       for a, b in zip(bounds[:-1], bounds[1:])}
        self._src, self._expert, self._tokens = c["src_rank"], c["expert"], c["tokens"]
        self._coverage = (f"iterations {_span(c['iteration'])}, layers {_span(c['layer'])}, "
                          f"micro_batches {_span(c['micro_batch'])} ({len(self._index)} keys)")

    def _check_ranges(self, cols):
        checks = [("tokens", 0, None), ("iteration", 0, None), ("layer", 0, None),
                  ("micro_batch", 0, None), ("src_rank", 0, self.ep), ("expert", 0, self.n_experts)]
        for name, lo, hi in checks:
            v = cols[name]
            bad = (v < lo) if hi is None else ((v < lo) | (v >= hi))
            if bad.any():
                i = int(np.argmax(bad))
                allowed = f">= {lo}" if hi is None else f"in [{lo}, {hi})"
                raise _trace_error(self.path, f"{name} must be {allowed}; row {i} has {v[i]} "
                                              f"({int(bad.sum())} bad rows)")

    def keys(self) -> list:
        """Sorted (iteration, layer, micro_batch) keys that the trace holds."""
        return sorted(self._index)

    def _expert_tokens(self, iteration, layer, micro_batch):
        span = self._index.get((iteration, layer, micro_batch))
        if span is None:
            raise _trace_error(self.path, f"has no rows for iteration {iteration}, layer {layer}, "
                                          f"micro_batch {micro_batch}; it covers {self._coverage}")
        a, b = span
        out = np.zeros((self.ep, self.n_experts), np.int64)
        out[self._src[a:b], self._expert[a:b]] = self._tokens[a:b]
        return out

    def describe(self) -> dict:
        return {**super().describe(), "path": self.path, "coverage": self._coverage,
                "source": self.source}


# ---------------------------------------------------------------------------------------------
# factory and writer

def make_expert_load(kind: str, *, ep, n_experts, top_k, tokens_per_rank, moe_layers, seed=0,
                     path=None, sizing="released", counts="tokens", **params) -> ExpertLoad:
    """Build an :class:`ExpertLoad` of ``kind`` (one of :data:`KINDS`).

    ``seed`` is used by ``synthetic`` only; ``path`` is required by ``trace`` and refused by the
    others; ``sizing`` and ``counts`` are the readings of the ``reference`` matrix (ignored by the
    other kinds, whose counts are token copies); ``params`` are the ``synthetic`` parameters
    (:data:`SYNTHETIC_DEFAULTS`) — the other kinds take none. Every problem is a
    :class:`ConfigError`.
    """
    require(kind in KINDS, "gating.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    dims = dict(ep=ep, n_experts=n_experts, top_k=top_k, tokens_per_rank=tokens_per_rank,
                moe_layers=moe_layers)
    if kind == "synthetic":
        require(path is None, "gating.path", "only kind 'trace' reads a file")
        return SyntheticLoad(seed=seed, **dims, **params)
    if params:
        name = sorted(params)[0]
        raise ConfigError(f"gating.{name}", f"unknown parameter of kind {kind!r}; it takes none "
                                            f"(parameters {', '.join(SYNTHETIC_DEFAULTS)} are for "
                                            "kind 'synthetic')")
    if kind == "reference":
        require(path is None, "gating.path", "only kind 'trace' reads a file")
        return ReferenceLoad(**dims, sizing=sizing, counts=counts)
    require(path is not None, "gating.path", "kind 'trace' needs the path of a trace file "
                                             f"({', '.join(TRACE_FORMATS)})")
    return TraceLoad(path, **dims)


def _trace_batches(load: ExpertLoad, iterations: int, micro_batches: int, layers: int):
    """Yield one dict of int64 columns per iteration: the non-zero counts of every key (a key
    whose counts are all zero gets one explicit zero row, so that it stays present)."""
    for it in range(iterations):
        parts = []
        for lay in range(layers):
            for mb in range(micro_batches):
                c = load.expert_tokens(it, lay, mb)
                s, x = np.nonzero(c)
                if s.size == 0:
                    s, x = np.zeros(1, np.int64), np.zeros(1, np.int64)
                key = np.array([it, lay, mb], np.int64)
                parts.append((np.broadcast_to(key, (s.size, 3)), s, x, c[s, x]))
        yield {"iteration": np.concatenate([p[0][:, 0] for p in parts]),
               "layer": np.concatenate([p[0][:, 1] for p in parts]),
               "micro_batch": np.concatenate([p[0][:, 2] for p in parts]),
               "src_rank": np.concatenate([p[1] for p in parts]).astype(np.int64),
               "expert": np.concatenate([p[2] for p in parts]).astype(np.int64),
               "tokens": np.concatenate([p[3] for p in parts]).astype(np.int64)}


def write_trace(path, load: ExpertLoad, *, iterations: int, micro_batches: int, layers: int,
                scenario: dict | None = None) -> int:
    """Record ``load`` for iterations ``0..iterations-1``, layers ``0..layers-1`` and micro-batches
    ``0..micro_batches-1`` as a trace (:data:`TRACE_COLUMNS`, int64, zero counts left out).

    Format by extension (:data:`TRACE_FORMATS`): Parquet; Arrow IPC file (``.arrow``) or stream
    (``.arrows``); HDF5 (datasets in ``/expert_load``). Metadata (Arrow schema metadata / HDF5
    attributes): ``fabricsim.schema_version``, ``fabricsim.scenario`` (``scenario`` as JSON) and
    ``fabricsim.expert_load`` (``load.describe()`` as JSON). Written to ``path + ".tmp"``, then
    renamed. Returns the number of rows written.
    """
    from fabricsim.traces.schema import metadata, replaced_on_success

    fmt = _trace_format(path)
    iterations = _int_param(iterations, "gating.iterations", minimum=1)
    micro_batches = _int_param(micro_batches, "gating.micro_batches", minimum=1)
    layers = _int_param(layers, "gating.layers", minimum=1)
    meta = {**metadata(scenario), EXPERT_LOAD_KEY: json.dumps(load.describe(), sort_keys=True)}
    path = os.fspath(path)
    rows = 0
    batches = _trace_batches(load, iterations, micro_batches, layers)
    with replaced_on_success(path) as tmp:
        if fmt == "hdf5":
            import h5py
            with h5py.File(tmp, "w") as f:
                g = f.create_group(HDF5_GROUP)
                g.attrs.update(meta)
                ds = {n: g.create_dataset(n, shape=(0,), maxshape=(None,), dtype=np.int64,
                                          chunks=(65536,)) for n in TRACE_COLUMNS}
                for b in batches:
                    n = b["tokens"].size
                    for name in TRACE_COLUMNS:
                        ds[name].resize((rows + n,))
                        ds[name][rows:] = b[name]
                    rows += n
        else:
            import pyarrow as pa
            import pyarrow.parquet as pq
            schema = pa.schema([(n, pa.int64()) for n in TRACE_COLUMNS], metadata=meta)
            if fmt == "parquet":
                writer = pq.ParquetWriter(tmp, schema)
            elif path.lower().endswith(".arrows"):
                writer = pa.ipc.new_stream(tmp, schema)
            else:
                writer = pa.ipc.new_file(tmp, schema)
            with writer:
                for b in batches:
                    writer.write_batch(pa.record_batch([b[n] for n in TRACE_COLUMNS], schema=schema))
                    rows += b["tokens"].size
    return rows
