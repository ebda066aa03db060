"""Gating / expert load (fabricsim.workload.gating): reference matrix, synthetic generator, traces."""

from __future__ import annotations

import json
import math
import os
import warnings
from fractions import Fraction

import h5py
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricsim.errors import ConfigError
from fabricsim.kernels import counts
from fabricsim.workload.gating import (REFERENCE_MATRIX, SYNTHETIC_DEFAULTS, TRACE_COLUMNS, ReferenceLoad,
                                       SyntheticLoad, TraceLoad, make_expert_load, read_trace,
                                       write_trace)

PAPER = dict(ep=8, n_experts=8, top_k=2, tokens_per_rank=8 * 4096, moe_layers=32)


def load(kind="synthetic", **kw):
    dims = dict(ep=4, n_experts=8, top_k=2, tokens_per_rank=256, moe_layers=4)
    dims.update(kw)
    return make_expert_load(kind, **dims)


def check_invariants(lo, key=(0, 0, 0)):
    """Row sums T * k, counts in [0, T], rank_tokens = fold of expert_tokens, int64 [ep, ...]."""
    c, r = lo.expert_tokens(*key), lo.rank_tokens(*key)
    t, k, m = lo.tokens_per_rank, lo.top_k, lo.experts_per_rank
    assert c.dtype == np.int64 and c.shape == (lo.ep, lo.n_experts)
    assert r.dtype == np.int64 and r.shape == (lo.ep, lo.ep)
    assert (c.sum(axis=1) == t * k).all()
    assert c.min() >= 0 and c.max() <= t
    assert (c.reshape(lo.ep, lo.ep, m).sum(axis=2) == r).all()


# ------------------------------------------------------------------------------------------------
# Plain reference implementations (independent of the module's kernels)
# ------------------------------------------------------------------------------------------------

def naive_apportion(weights, total, cap):
    """Largest remainder with water-filling, in exact fractions, one entry at a time."""
    n = len(weights)
    fixed = {}
    while True:
        free = [i for i in range(n) if i not in fixed]
        rest = total - cap * len(fixed)
        s = sum(weights[i] for i in free)
        share = {i: Fraction(rest * weights[i], s) for i in free}
        over = [i for i in free if share[i] > cap]
        if not over:
            break
        fixed.update({i: cap for i in over})
    out = [cap if i in fixed else math.floor(share[i]) for i in range(n)]
    short = total - sum(out)
    order = sorted(free, key=lambda i: (-(share[i] - math.floor(share[i])), i))
    for i in order[:short]:
        out[i] += 1
    return out


def naive_waterfill(w, total, cap):
    """Sort-based closed form: the j largest entries saturate, the rest scale by (total - j cap) / rest."""
    w = np.asarray(w, float)
    order = np.argsort(-w, kind="stable")
    for j in range(len(w) + 1):
        rest = w[order[j:]].sum()
        scale = (total - j * cap) / rest if rest > 0 else 0.0
        if j == len(w) or w[order[j]] * scale <= cap * (1 + 1e-12):
            out = w * scale
            out[order[:j]] = cap
            return out
    raise AssertionError("unreachable")


# ------------------------------------------------------------------------------------------------
# Reference matrix
# ------------------------------------------------------------------------------------------------

def test_reference_matrix_constant():
    assert REFERENCE_MATRIX.shape == (8, 8) and REFERENCE_MATRIX.dtype == np.int64
    assert (REFERENCE_MATRIX.sum(axis=1) == 32768).all()
    assert REFERENCE_MATRIX[3, 0] == 10897 and REFERENCE_MATRIX[7, 7] == 5395
    with pytest.raises(ValueError):
        REFERENCE_MATRIX[0, 0] = 1


def test_reference_paper_setting_is_twice_w():
    """mb 8, seq 4096, top-2, ep 8: exactly 2W, for every iteration, layer and micro-batch."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lo = make_expert_load("reference", **PAPER)
    for key in [(0, 0, 0), (5, 31, 7)]:
        assert (lo.rank_tokens(*key) == 2 * REFERENCE_MATRIX).all()
        assert (lo.expert_tokens(*key) == 2 * REFERENCE_MATRIX).all()
    assert lo.describe()["redistributed_tokens"] == 0


@pytest.mark.parametrize("ep,m,k,t", [(8, 1, 2, 1000), (8, 4, 3, 777), (16, 2, 2, 32768), (12, 1, 4, 999),
                                      (3, 2, 1, 50), (1, 8, 2, 4096), (24, 1, 8, 123)])
def test_reference_scaling_and_tiling_exact(ep, m, k, t):
    lo = make_expert_load("reference", ep=ep, n_experts=ep * m, top_k=k, tokens_per_rank=t, moe_layers=1,
                      sizing="renormalized")
    r = lo.rank_tokens(0, 0, 0)
    for s in range(ep):
        w = [int(REFERENCE_MATRIX[s % 8][d % 8]) for d in range(ep)]
        assert list(r[s]) == naive_apportion(w, t * k, m * t)
    check_invariants(lo)


def test_reference_tiles_modulo_8():
    """Renormalized, ep 16: rows repeat with period 8; with 32768 tokens and top-2 the rows are W
    twice over (each row rescaled to the rank's 65,536 copies)."""
    lo = make_expert_load("reference", ep=16, n_experts=16, top_k=2, tokens_per_rank=32768, moe_layers=1,
                      sizing="renormalized")
    assert (lo.rank_tokens(0, 0, 0) == np.tile(REFERENCE_MATRIX, (2, 2))).all()
    lo = make_expert_load("reference", ep=16, n_experts=32, top_k=2, tokens_per_rank=1001, moe_layers=1,
                      sizing="renormalized")
    r = lo.rank_tokens(0, 0, 0)
    assert (r[:8] == r[8:]).all() and np.abs(r[:, :8] - r[:, 8:]).max() <= 1


def test_reference_expert_split_even_remainder_to_lowest():
    lo = make_expert_load("reference", ep=4, n_experts=12, top_k=2, tokens_per_rank=1001, moe_layers=1,
                      sizing="renormalized")
    c, r = lo.expert_tokens(0, 0, 0), lo.rank_tokens(0, 0, 0)
    for s in range(4):
        for d in range(4):
            part = c[s, 3 * d:3 * d + 3]
            q, rem = divmod(int(r[s, d]), 3)
            assert list(part) == [q + (j < rem) for j in range(3)]


@pytest.mark.parametrize("ep", [4, 8, 16, 32])
def test_reference_released_sizing_closed_form(ep):
    """Released sizing (reference 4.2): per pair total * W[s % 8][d % 8] / 32768 with total the
    rank's copies (32,768 tokens x top-2 = 65,536), rows not renormalized: at ep 8 a rank sends
    65,536 copies (2 W), at ep 16 twice that, at ep 32 four times, at ep 4 its 4 x 4 corner."""
    lo = make_expert_load("reference", ep=ep, n_experts=ep, top_k=2, tokens_per_rank=32768, moe_layers=1)
    r = lo.rank_tokens(0, 0, 0)
    expected = np.array([[2 * REFERENCE_MATRIX[s % 8, d % 8] for d in range(ep)] for s in range(ep)])
    assert (r == expected).all()
    sent = r.sum(axis=1)
    if ep >= 8:
        assert (sent == 65536 * ep // 8).all()
    else:  # ep 4: rank 0 sends 2 * (9810 + 5338 + 1231 + 3042)
        assert sent[0] == 2 * (9810 + 5338 + 1231 + 3042)
    assert lo.describe()["sizing"] == "released"


def test_reference_counts_copies_halves_a_top2_row():
    """counts = copies: the 32,768 of a row already count the copies, so a rank sends the row
    once (its tokens), not top_k times."""
    tokens = make_expert_load("reference", **PAPER)
    copies = make_expert_load("reference", **PAPER, counts="copies")
    assert (tokens.rank_tokens(0, 0, 0) == 2 * REFERENCE_MATRIX).all()
    assert (copies.rank_tokens(0, 0, 0) == REFERENCE_MATRIX).all()
    with pytest.raises(ConfigError, match="a2a_counts"):
        make_expert_load("reference", **PAPER, counts="bytes")
    with pytest.raises(ConfigError, match="a2a_sizing"):
        make_expert_load("reference", **PAPER, sizing="tiled")


@pytest.mark.parametrize("ep,n,k", [(8, 8, 4), (4, 4, 2), (2, 2, 2)])
def test_reference_cap_overflow_is_redistributed_with_warning(ep, n, k):
    with pytest.warns(RuntimeWarning, match="re-split"):
        lo = make_expert_load("reference", ep=ep, n_experts=n, top_k=k, tokens_per_rank=1000, moe_layers=1,
                      sizing="renormalized")
    assert lo.describe()["redistributed_tokens"] > 0
    check_invariants(lo)
    assert lo.rank_tokens(0, 0, 0).max() == 1000          # the overflowing ranks sit at the cap


@settings(max_examples=40)
@given(ep=st.integers(1, 20), m=st.integers(1, 4), k=st.integers(1, 8), t=st.integers(1, 3000))
def test_reference_invariants_property(ep, m, k, t):
    k = min(k, ep * m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        lo = make_expert_load("reference", ep=ep, n_experts=ep * m, top_k=k, tokens_per_rank=t, moe_layers=2,
                      sizing="renormalized")
    check_invariants(lo, (3, 1, 2))


# ------------------------------------------------------------------------------------------------
# Kernels against the plain implementations
# ------------------------------------------------------------------------------------------------

@settings(max_examples=60)
@given(st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=20), st.data())
def test_waterfill_matches_naive(w, data):
    n = len(w)
    k = data.draw(st.integers(1, n))
    got = counts.waterfill_rows(np.array([w]), float(k), 1.0)[0]
    assert np.allclose(got, naive_waterfill(w, k, 1.0), rtol=1e-9, atol=1e-9)
    assert got.max() <= 1.0 + 1e-12 and math.isclose(got.sum(), k, rel_tol=1e-12)


@settings(max_examples=60)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=20), st.integers(1, 1000), st.data())
def test_sample_rows_exact_row_totals_and_caps(w, cap, data):
    n = len(w)
    total = data.draw(st.integers(0, cap * n))
    mean = naive_waterfill(np.array(w) + 1e-6, total, cap)[None, :]
    g = np.array([data.draw(st.lists(st.floats(-5, 5), min_size=n, max_size=n))])
    for sd in (np.zeros_like(mean), np.sqrt(mean)):
        out = counts.sample_rows(mean, sd, g, np.array([total], np.int64), cap)
        assert out.sum() == total and out.min() >= 0 and out.max() <= cap
        if not sd.any():                                  # no noise: floor or ceil of the mean
            assert (np.abs(out - mean) < 1 + 1e-9).all()


def test_round_row_repairs_float_ties():
    out = np.empty(3, np.int64)
    counts.round_row(np.array([0.5, 2.0, 0.5]), 3, 2, out)
    assert out.sum() == 3 and out.max() <= 2 and out.min() >= 0


# ------------------------------------------------------------------------------------------------
# Synthetic
# ------------------------------------------------------------------------------------------------

def test_synthetic_deterministic_and_order_independent():
    a = load(seed=7, moe_layers=4)
    b = load(seed=7, moe_layers=9)                        # layer l does not depend on moe_layers
    keys = [(i, l, mb) for i in range(3) for l in range(4) for mb in range(2)]
    first = {key: a.expert_tokens(*key).copy() for key in keys}
    for key in reversed(keys):
        assert (b.expert_tokens(*key) == first[key]).all()
        assert (b.rank_tokens(*key) == a.rank_tokens(*key)).all()
    c = load(seed=8)
    assert any((c.expert_tokens(*key) != first[key]).any() for key in keys)
    # the keys differ from one another as well
    assert (first[(0, 0, 0)] != first[(0, 0, 1)]).any() and (first[(0, 0, 0)] != first[(1, 0, 0)]).any()


def test_synthetic_rank_tokens_alone_match_expert_level():
    """rank_tokens computed before or without expert_tokens is the fold of expert_tokens."""
    a, b = load(seed=3, ep=8, n_experts=32), load(seed=3, ep=8, n_experts=32)
    r = a.rank_tokens(2, 1, 0).copy()
    c = b.expert_tokens(2, 1, 0)
    assert (c.reshape(8, 8, 4).sum(axis=2) == r).all()


params = st.fixed_dictionaries({
    "skew": st.floats(0, 3), "drift": st.floats(0, 3), "drift_halflife": st.floats(0.5, 1e4),
    "layer_corr": st.floats(0, 1), "spatial": st.floats(0, 3), "noise": st.floats(0, 3),
    "iteration_offset": st.integers(0, 10**6)})


@settings(max_examples=80)
@given(ep=st.sampled_from([1, 2, 3, 4, 8, 16]), m=st.integers(1, 6), k=st.integers(1, 8),
       t=st.integers(1, 5000), seed=st.integers(0, 2**32), p=params,
       key=st.tuples(st.integers(0, 10**4), st.integers(0, 2), st.integers(0, 64)))
def test_synthetic_invariants_property(ep, m, k, t, seed, p, key):
    k = min(k, ep * m)
    lo = make_expert_load("synthetic", ep=ep, n_experts=ep * m, top_k=k, tokens_per_rank=t,
                          moe_layers=3, seed=seed, **p)
    check_invariants(lo, key)
    probs = lo.probabilities(key[0], key[1])
    assert np.allclose(probs.sum(axis=1), k) and probs.max() <= 1 + 1e-12


@pytest.mark.parametrize("skew,spatial", [(50.0, 50.0), (500.0, 0.0), (0.0, 800.0)])
def test_synthetic_invariants_under_extreme_skew(skew, spatial):
    """exp() underflows to 0 for most experts: rows still hold T * k tokens on >= k experts."""
    lo = load(seed=1, ep=8, n_experts=64, top_k=6, tokens_per_rank=100, skew=skew, spatial=spatial)
    for key in [(0, 0, 0), (3, 1, 2)]:
        check_invariants(lo, key)
        assert (np.count_nonzero(lo.expert_tokens(*key), axis=1) >= 6).all()
        assert not np.isnan(lo.probabilities(*key[:2])).any()


def max_over_mean(lo, iterations=(0,), layers=None, micro_batches=(0,)):
    out = []
    for it in iterations:
        for lay in range(lo.moe_layers) if layers is None else layers:
            for mb in micro_batches:
                e = lo.expert_tokens(it, lay, mb).sum(axis=0)
                out.append(e.max() / e.mean())
    return float(np.mean(out))


def test_skew_raises_max_over_mean_monotonically():
    late = dict(ep=8, n_experts=64, top_k=2, tokens_per_rank=4096, moe_layers=4, iteration_offset=10**6)
    ratios = [np.mean([max_over_mean(load(seed=s, skew=skew, **late)) for s in range(3)])
              for skew in (0.0, 0.3, 0.6, 1.0)]
    assert all(a < b for a, b in zip(ratios, ratios[1:])), ratios
    assert ratios[0] < 1.7 and ratios[-1] > 4, ratios      # documented: 1.5 / 2.1 / 3.5 / 6.2


def test_defaults_are_mildly_imbalanced_as_documented():
    dims = dict(ep=8, n_experts=64, top_k=2, tokens_per_rank=16384, moe_layers=6)
    early = np.mean([max_over_mean(load(seed=s, **dims)) for s in range(3)])
    late = np.mean([max_over_mean(load(seed=s, iteration_offset=10**5, **dims)) for s in range(3)])
    assert 2.0 < early < 3.2 and 1.4 < late < 2.3 and late < early, (early, late)


def test_drift_shrinks_over_training():
    lo = load(seed=1, n_experts=64, ep=8, tokens_per_rank=8192, moe_layers=2, spatial=0.0,
              drift=0.5, drift_halflife=20.0)
    assert lo.drift_at(0) == 0.5 and lo.drift_at(20) == 0.25 and lo.drift_at(40) == 0.125

    def variability(first):
        """Std over 8 consecutive iterations of each expert's log load, averaged over experts."""
        loads = np.array([lo.expert_tokens(it, 0, 0).sum(axis=0) for it in range(first, first + 8)])
        return float(np.log(loads).std(axis=0).mean())

    v = [variability(first) for first in (0, 40, 200)]
    assert v[0] > 1.5 * v[1] > 1.5 * v[2], v
    assert abs(v[0] - 0.5) < 0.15, v                      # about drift(t) early
    mm = [max_over_mean(lo, iterations=range(first, first + 8), layers=[0]) for first in (0, 200)]
    assert mm[0] > mm[1], mm


def test_iteration_offset_is_the_training_step():
    a, b = load(seed=2, iteration_offset=0), load(seed=2, iteration_offset=5)
    assert (a.expert_tokens(7, 1, 0) == b.expert_tokens(2, 1, 0)).all()


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9])
def test_layer_corr_is_the_correlation_of_consecutive_layers(rho):
    lo = load(seed=4, n_experts=256, ep=8, moe_layers=24, layer_corr=rho, drift=0.0)
    a = np.array([lo.log_popularity(0, l) for l in range(24)])
    r = np.mean([np.corrcoef(a[l], a[l + 1])[0, 1] for l in range(23)])
    assert abs(r - rho) < 0.08, r


def test_layer_corr_shows_in_the_counts():
    def corr(rho):
        lo = load(seed=5, n_experts=64, ep=8, tokens_per_rank=4096, moe_layers=12, layer_corr=rho,
                  skew=0.6)
        e = np.log([lo.expert_tokens(0, l, 0).sum(axis=0) for l in range(12)])
        return np.mean([np.corrcoef(e[l], e[l + 1])[0, 1] for l in range(11)])

    c = [corr(rho) for rho in (0.0, 0.5, 0.9)]
    assert c[0] < c[1] < c[2] and abs(c[0]) < 0.2, c
    same = load(seed=5, layer_corr=1.0, spatial=0.0, noise=0.0)
    assert (same.expert_tokens(3, 0, 0) == same.expert_tokens(3, 3, 0)).all()


def test_spatial_makes_rank_matrix_non_uniform():
    def row_spread(spatial):
        lo = load(seed=6, ep=16, n_experts=64, tokens_per_rank=8192, spatial=spatial, noise=0.0)
        r = lo.rank_tokens(0, 0, 0).astype(float)
        return float((r.std(axis=0) / r.mean(axis=0)).mean())  # how much sources differ per column

    s = [row_spread(x) for x in (0.0, 0.5, 1.0)]
    assert s[0] < 1e-3 < s[1] < s[2], s


def test_noise_zero_makes_micro_batches_identical():
    quiet = load(seed=9, noise=0.0)
    assert (quiet.expert_tokens(1, 2, 0) == quiet.expert_tokens(1, 2, 5)).all()
    loud = load(seed=9)
    assert (loud.expert_tokens(1, 2, 0) != loud.expert_tokens(1, 2, 5)).any()


def test_results_are_read_only_and_cached():
    lo = load()
    c = lo.expert_tokens(0, 0, 0)
    assert lo.expert_tokens(0, 0, 0) is c
    with pytest.raises(ValueError):
        c[0, 0] = 1
    with pytest.raises(ValueError):
        lo.rank_tokens(0, 0, 0)[0, 0] = 1


def test_describe_is_json():
    for lo in (load("reference"), load(seed=3, skew=0.5)):
        d = json.loads(json.dumps(lo.describe()))
        assert d["kind"] == lo.kind and d["ep"] == 4
    d = load(seed=3, skew=0.5).describe()
    assert d["skew"] == 0.5 and d["seed"] == 3 and set(SYNTHETIC_DEFAULTS) <= set(d)


# ------------------------------------------------------------------------------------------------
# Factory and parameter errors
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw,field,text", [
    (dict(kind="uniform"), "gating.kind", "reference, synthetic, trace"),
    (dict(skw=1.0), "gating.skw", "allowed: skew, drift"),
    (dict(kind="reference", skew=1.0), "gating.skew", "takes none"),
    (dict(skew=-1.0), "gating.skew", ">= 0"),
    (dict(skew=float("nan")), "gating.skew", ">= 0"),
    (dict(skew="high"), "gating.skew", ">= 0"),
    (dict(layer_corr=1.5), "gating.layer_corr", "<= 1"),
    (dict(drift_halflife=0), "gating.drift_halflife", "> 0"),
    (dict(iteration_offset=-1), "gating.iteration_offset", ">= 0"),
    (dict(iteration_offset=1.5), "gating.iteration_offset", "integer"),
    (dict(seed=-1), "gating.seed", ">= 0"),
    (dict(n_experts=6), "gating.n_experts", "divisible by ep=4"),
    (dict(top_k=9), "gating.top_k", "<= n_experts=8"),
    (dict(ep=0), "gating.ep", ">= 1"),
    (dict(tokens_per_rank=True), "gating.tokens_per_rank", "integer"),
    (dict(kind="trace"), "gating.path", "needs the path"),
    (dict(kind="reference", path="x.parquet"), "gating.path", "only kind 'trace'"),
])
def test_factory_errors(kw, field, text):
    kw = dict(kw)
    kind = kw.pop("kind", "synthetic")
    with pytest.raises(ConfigError) as ei:
        load(kind, **kw)
    assert ei.value.field == field and text in str(ei.value), str(ei.value)
    assert "\n" not in str(ei.value)


def test_infinite_halflife_allowed():
    lo = load(drift_halflife=float("inf"))
    assert lo.drift_at(10**9) == lo.drift


@pytest.mark.parametrize("key,field", [((0, 4, 0), "gating.layer"), ((-1, 0, 0), "gating.iteration"),
                                       ((0, 0, 1.0), "gating.micro_batch")])
def test_bad_keys(key, field):
    for lo in (load(), load("reference")):
        with pytest.raises(ConfigError) as ei:
            lo.rank_tokens(*key)
        assert ei.value.field == field


# ------------------------------------------------------------------------------------------------
# Traces
# ------------------------------------------------------------------------------------------------

DIMS = dict(ep=4, n_experts=8, top_k=2, tokens_per_rank=64, moe_layers=3)


def trace_of(path, **kw):
    return make_expert_load("trace", path=path, **{**DIMS, **kw})


@pytest.mark.parametrize("ext", [".parquet", ".arrow", ".arrows", ".h5", ".hdf5"])
def test_trace_round_trip(tmp_path, ext):
    src = make_expert_load("synthetic", seed=11, **DIMS)
    path = tmp_path / f"load{ext}"
    rows = write_trace(path, src, iterations=2, micro_batches=2, layers=3, scenario={"name": "t"})
    assert not os.path.exists(str(path) + ".tmp")
    cols = read_trace(path)
    assert tuple(cols) == TRACE_COLUMNS and all(c.dtype == np.int64 for c in cols.values())
    keys = [(i, l, mb) for i in range(2) for l in range(3) for mb in range(2)]
    assert rows == len(cols["tokens"]) == sum(int(np.count_nonzero(src.expert_tokens(*k))) for k in keys)
    tr = trace_of(path)
    assert isinstance(tr, TraceLoad) and tr.keys() == keys
    for i, l, mb in keys:
        assert (tr.expert_tokens(i, l, mb) == src.expert_tokens(i, l, mb)).all()
        assert (tr.rank_tokens(i, l, mb) == src.rank_tokens(i, l, mb)).all()
    assert tr.describe()["source"] == src.describe()
    json.dumps(tr.describe())


def test_trace_keeps_all_zero_keys_and_missing_pairs_are_zero(tmp_path):
    path = tmp_path / "sparse.parquet"
    table = pa.table({"iteration": [0, 0], "layer": [0, 1], "micro_batch": [0, 0], "src_rank": [1, 0],
                      "expert": [5, 0], "tokens": [7, 0]})
    pq.write_table(table, path)
    tr = trace_of(path)
    c = tr.expert_tokens(0, 0, 0)
    assert c[1, 5] == 7 and c.sum() == 7
    assert tr.rank_tokens(0, 0, 0)[1, 2] == 7
    again = tmp_path / "again.arrows"
    write_trace(again, tr, iterations=1, micro_batches=1, layers=2)
    assert (trace_of(again).expert_tokens(0, 1, 0) == 0).all()


def test_trace_reads_other_integer_types_arrow_flavours_and_hdf5_root(tmp_path):
    cols = {"iteration": [0], "layer": [0], "micro_batch": [0], "src_rank": [3], "expert": [7], "tokens": [9]}
    table = pa.table({n: pa.array(v, pa.int32() if n != "tokens" else pa.uint16()) for n, v in cols.items()})
    stream = tmp_path / "stream_named.arrow"                  # a stream under the file extension
    with pa.ipc.new_stream(str(stream), table.schema) as w:
        w.write_table(table)
    with h5py.File(tmp_path / "root.h5", "w") as f:
        for n, v in cols.items():
            f[n] = np.array(v, np.int16)
    for path in (stream, tmp_path / "root.h5"):
        assert trace_of(path).expert_tokens(0, 0, 0)[3, 7] == 9


GOOD = {"iteration": [0, 0, 1], "layer": [0, 0, 0], "micro_batch": [0, 0, 0], "src_rank": [0, 1, 0],
        "expert": [0, 1, 0], "tokens": [5, 6, 7]}


def bad(**changes):
    cols = {**GOOD, **changes}
    return {n: v for n, v in cols.items() if v is not None}


@pytest.mark.parametrize("cols,text", [
    (bad(tokens=None), "missing column 'tokens'"),
    (bad(tokens=[5.0, 6.0, 7.0]), "column 'tokens' has type double"),
    (bad(expert=["a", "b", "c"]), "column 'expert' has type string"),
    (bad(tokens=[5, None, 7]), "column 'tokens' has 1 null values"),
    (bad(tokens=[5, -6, 7]), "tokens must be >= 0; row 1 has -6"),
    (bad(src_rank=[0, 4, 0]), "src_rank must be in [0, 4); row 1 has 4"),
    (bad(expert=[0, 8, 0]), "expert must be in [0, 8); row 1 has 8"),
    (bad(layer=[0, -1, 0]), "layer must be >= 0"),
    (bad(src_rank=[0, 0, 0], expert=[1, 1, 0]), "duplicate row for iteration 0, layer 0, micro_batch 0, "
                                                "src_rank 0, expert 1"),
])
@pytest.mark.parametrize("ext", [".parquet", ".arrows"])
def test_malformed_arrow_traces(tmp_path, cols, text, ext):
    path = tmp_path / f"bad{ext}"
    table = pa.table(cols)
    if ext == ".parquet":
        pq.write_table(table, path)
    else:
        with pa.ipc.new_stream(str(path), table.schema) as w:
            w.write_table(table)
    with pytest.raises(ConfigError) as ei:
        trace_of(path)
    msg = str(ei.value)
    assert ei.value.field == "gating.path" and str(path) in msg and text in msg, msg


@pytest.mark.parametrize("datasets,text", [
    ({n: np.array(v, np.int64) for n, v in GOOD.items() if n != "expert"}, "missing dataset 'expert'"),
    ({**{n: np.array(v, np.int64) for n, v in GOOD.items()}, "tokens": np.array([1.0, 2, 3])},
     "dataset 'tokens' is float64"),
    ({**{n: np.array(v, np.int64) for n, v in GOOD.items()}, "layer": np.zeros((3, 1), np.int64)},
     "1-D integer dataset"),
    ({**{n: np.array(v, np.int64) for n, v in GOOD.items()}, "layer": np.zeros(2, np.int64)},
     "different lengths"),
])
def test_malformed_hdf5_traces(tmp_path, datasets, text):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        g = f.create_group("expert_load")
        for n, v in datasets.items():
            g[n] = v
    with pytest.raises(ConfigError) as ei:
        trace_of(path)
    assert str(path) in str(ei.value) and text in str(ei.value), str(ei.value)


@pytest.mark.parametrize("name,text", [("load.csv", "unknown trace format '.csv'"),
                                       ("absent.parquet", "no such file"),
                                       ("garbage.parquet", "not a readable parquet file"),
                                       ("garbage.arrow", "not a readable arrow file"),
                                       ("garbage.h5", "not a readable hdf5 file")])
def test_unreadable_trace_files(tmp_path, name, text):
    path = tmp_path / name
    if name.startswith("garbage"):
        path.write_bytes(b"this is not a trace" * 10)
    with pytest.raises(ConfigError) as ei:
        trace_of(path)
    assert ei.value.field == "gating.path" and text in str(ei.value), str(ei.value)


def test_trace_missing_key_names_its_coverage(tmp_path):
    path = tmp_path / "t.parquet"
    write_trace(path, make_expert_load("synthetic", **DIMS), iterations=2, micro_batches=3, layers=2)
    tr = trace_of(path)
    with pytest.raises(ConfigError) as ei:
        tr.rank_tokens(2, 0, 0)
    msg = str(ei.value)
    assert ("no rows for iteration 2, layer 0, micro_batch 0" in msg
            and "iterations 0..1, layers 0..1, micro_batches 0..2 (12 keys)" in msg), msg


def test_write_trace_rejects_unknown_extension_and_leaves_nothing(tmp_path):
    with pytest.raises(ConfigError, match="allowed extensions: .parquet, .arrow, .arrows, .h5, .hdf5"):
        write_trace(tmp_path / "x.csv", load(), iterations=1, micro_batches=1, layers=1)
    assert os.listdir(tmp_path) == []


def test_reference_and_trace_classes_exported():
    assert isinstance(load("reference"), ReferenceLoad) and isinstance(load(), SyntheticLoad)
