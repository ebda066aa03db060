"""Task-DAG kernels (fabricsim.kernels.dag) against plain recursion."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from fabricsim.kernels import dag


def csr(preds):
    ptr = np.zeros(len(preds) + 1, np.int64)
    ptr[1:] = np.cumsum([len(p) for p in preds])
    flat = np.array([x for p in preds for x in p], np.int64)
    return ptr, flat


@st.composite
def graphs(draw, acyclic=True):
    n = draw(st.integers(1, 30))
    preds = []
    for t in range(n):
        pool = list(range(t)) if acyclic else list(range(n))
        preds.append(draw(st.lists(st.sampled_from(pool), max_size=4, unique=True)) if pool else [])
    duration = draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n))
    # relabel tasks so that ids are not already a topological order
    perm = draw(st.permutations(range(n)))
    inv = {old: new for new, old in enumerate(perm)}
    new_preds = [None] * n
    new_dur = [None] * n
    for old in range(n):
        new_preds[inv[old]] = [inv[p] for p in preds[old]]
        new_dur[inv[old]] = duration[old]
    return new_preds, new_dur


@settings(max_examples=200)
@given(graphs())
def test_topological_order_and_longest_path(g):
    preds, duration = g
    ptr, flat = csr(preds)
    order = dag.topological_order(ptr, flat)
    assert sorted(order.tolist()) == list(range(len(preds)))
    position = np.empty(len(preds), np.int64)
    position[order] = np.arange(len(preds))
    for t, ps in enumerate(preds):
        assert all(position[p] < position[t] for p in ps)
    finish = dag.earliest_finish(ptr, flat, np.array(duration, np.int64), order)
    assert finish.tolist() == naive.dag_earliest_finish_naive(preds, duration)
    succ_ptr, succ = dag.successors(ptr, flat)
    assert sorted((p, t) for t, ps in enumerate(preds) for p in ps) == \
        sorted((p, int(succ[e])) for p in range(len(preds)) for e in range(succ_ptr[p], succ_ptr[p + 1]))


@settings(max_examples=200)
@given(graphs(acyclic=False))
def test_cycles_are_detected(g):
    preds, duration = g
    ptr, flat = csr(preds)
    cyclic = naive.dag_earliest_finish_naive(preds, duration) is None
    assert (dag.topological_order(ptr, flat).size < len(preds)) == cyclic
