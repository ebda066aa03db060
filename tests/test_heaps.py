"""Indexed binary min-heaps (fabricsim.kernels.heaps) against a plain priority set (naive.RefHeap)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import naive
from fabricsim.kernels.heaps import heap_pop, heap_push, heap_remove, heap_update


def new_heap(n, dtype):
    return np.empty(n, np.int64), np.full(n, -1, np.int64), np.zeros(n, dtype)


def check_invariants(heap, pos, size, keys, ref):
    """Heap order by (key, id), pos is the inverse of heap, absent ids have pos -1."""
    assert size == len(ref)
    ids = heap[:size]
    assert sorted(ids.tolist()) == sorted(ref.keys)
    for i in range(size):
        assert pos[ids[i]] == i
        if i > 0:
            parent = ids[(i - 1) // 2]
            assert (keys[parent], parent) <= (keys[ids[i]], ids[i])
    absent = np.setdiff1d(np.arange(pos.shape[0]), ids)
    assert np.all(pos[absent] == -1)


int_keys = st.integers(-5, 5)  # few distinct values: many ties, broken by id
float_keys = st.one_of(st.sampled_from([0.0, -0.0, 1.5, -2.0, np.inf]),
                       st.floats(-1e6, 1e6, allow_nan=False))


@settings(max_examples=150)
@given(data=st.data(), n=st.integers(1, 40), use_float=st.booleans())
def test_random_operations_match_reference(data, n, use_float):
    dtype = np.float64 if use_float else np.int64
    key_st = float_keys if use_float else int_keys
    heap, pos, keys = new_heap(n, dtype)
    size = 0
    ref = naive.RefHeap()
    for _ in range(data.draw(st.integers(0, 120), label="n_ops")):
        absent = [i for i in range(n) if i not in ref]
        ops = (["push"] if absent else []) + (["pop", "update", "remove"] if len(ref) else [])
        op = data.draw(st.sampled_from(ops), label="op")
        if op == "push":
            item = data.draw(st.sampled_from(absent), label="item")
            keys[item] = data.draw(key_st, label="key")
            ref.push(item, keys[item])
            size = heap_push(heap, pos, size, keys, item)
        elif op == "pop":
            item, size = heap_pop(heap, pos, size, keys)
            assert item == ref.pop()
            assert pos[item] == -1
        elif op == "update":
            item = data.draw(st.sampled_from(sorted(ref.keys)), label="item")
            keys[item] = data.draw(key_st, label="key")
            ref.update(item, keys[item])
            heap_update(heap, pos, size, keys, item)
        else:
            item = data.draw(st.sampled_from(sorted(ref.keys)), label="item")
            size = heap_remove(heap, pos, size, keys, item)
            ref.remove(item)
        check_invariants(heap, pos, size, keys, ref)
    # Draining gives (key, id) order.
    out = []
    while size:
        item, size = heap_pop(heap, pos, size, keys)
        out.append(int(item))
    assert out == ref.sorted_ids()
    assert np.all(pos == -1)


@settings(max_examples=50)
@given(st.lists(st.floats(-1e9, 1e9, allow_nan=False), min_size=0, max_size=60))
def test_heapsort_is_sorted_by_key_then_id(values):
    n = len(values)
    heap, pos, keys = new_heap(max(n, 1), np.float64)
    keys[:n] = values
    size = 0
    for i in np.random.default_rng(n).permutation(n):
        size = heap_push(heap, pos, size, keys, int(i))
    out = []
    while size:
        item, size = heap_pop(heap, pos, size, keys)
        out.append(int(item))
    assert out == sorted(range(n), key=lambda i: (values[i], i))


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_ties_pop_in_id_order(dtype):
    n = 10
    heap, pos, keys = new_heap(n, dtype)
    size = 0
    for i in (7, 3, 9, 0, 5, 1, 8, 2, 6, 4):
        size = heap_push(heap, pos, size, keys, i)  # all keys equal (0)
    popped = []
    while size:
        item, size = heap_pop(heap, pos, size, keys)
        popped.append(int(item))
    assert popped == list(range(n))


def test_decrease_and_increase_key():
    heap, pos, keys = new_heap(5, np.float64)
    keys[:] = [5.0, 4.0, 3.0, 2.0, 1.0]
    size = 0
    for i in range(5):
        size = heap_push(heap, pos, size, keys, i)
    assert heap[0] == 4
    keys[0] = 0.5  # decrease: id 0 to the top
    heap_update(heap, pos, size, keys, 0)
    assert heap[0] == 0
    keys[0] = 10.0  # increase: id 0 to the bottom
    heap_update(heap, pos, size, keys, 0)
    assert heap[0] == 4
    size = heap_remove(heap, pos, size, keys, 4)
    assert pos[4] == -1 and size == 4
    order = []
    while size:
        item, size = heap_pop(heap, pos, size, keys)
        order.append(int(item))
    assert order == [3, 2, 1, 0]
