"""The project's Numba options point (fabricsim._jit): refcount=False kernels and prefetch_row."""

from __future__ import annotations

import numba
import numpy as np
import pytest

from fabricsim._jit import njit, prefetch_row


@njit
def _allocates(n):
    out = np.zeros(n)
    out[:] = 1.0
    return out.sum()


@njit(refcount=False)
def _calls_an_allocating_kernel(a):
    return _allocates(a.shape[0]) + a[0]


@njit(refcount=False)
def _prefetch_then_sum(a, rows):
    s = 0
    for i in range(rows.shape[0]):
        prefetch_row(a, rows[i])
        s += a[rows[i], 1]
    return s


def test_refcount_free_kernel_may_call_one_that_allocates():
    """The callee keeps Numba's runtime (the _nrt flag is explicit, not inherited)."""
    assert _calls_an_allocating_kernel(np.array([2.0, 0.0, 0.0])) == 5.0


def test_refcount_free_kernel_may_not_allocate():
    def allocating(n):
        return np.empty(n).shape[0]

    f = njit(refcount=False, cache=False)(allocating)
    with pytest.raises(numba.core.errors.TypingError):
        f(3)


def test_prefetch_row_is_only_a_hint():
    a = np.arange(40, dtype=np.int64).reshape(10, 4)
    before = a.copy()
    rows = np.array([9, 0, 3, 3], np.int64)
    assert _prefetch_then_sum(a, rows) == sum(a[r, 1] for r in rows)
    assert np.array_equal(a, before)


def test_prefetch_row_wants_a_2d_array():
    def one_d(a):
        prefetch_row(a, 0)

    f = njit(cache=False)(one_d)
    with pytest.raises(numba.core.errors.TypingError):
        f(np.zeros(3))
