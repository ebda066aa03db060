"""Task-DAG kernels: topological order (acyclicity check) and the longest path.

A DAG of ``T`` tasks is given by its edges in CSR over predecessors:

- ``pred_ptr int64[T + 1]``, ``pred int64[E]``: the tasks that must finish before task ``t`` are
  ``pred[pred_ptr[t]:pred_ptr[t + 1]]``;
- ``duration_ps int64[T]``: how long each task takes once started.
"""

import numpy as np

from fabricsim._jit import njit


@njit
def successors(pred_ptr, pred):
    """The same edges as CSR over successors: ``(succ_ptr int64[T + 1], succ int64[E])``."""
    n = pred_ptr.size - 1
    succ_ptr = np.zeros(n + 1, np.int64)
    for e in range(pred.size):
        succ_ptr[pred[e] + 1] += 1
    for t in range(n):
        succ_ptr[t + 1] += succ_ptr[t]
    fill = succ_ptr[:-1].copy()
    succ = np.empty(pred.size, np.int64)
    for t in range(n):
        for e in range(pred_ptr[t], pred_ptr[t + 1]):
            p = pred[e]
            succ[fill[p]] = t
            fill[p] += 1
    return succ_ptr, succ


@njit
def topological_order(pred_ptr, pred):
    """Kahn's algorithm with a FIFO of ready tasks (sources in id order first).

    Returns ``int64[T]``; it is shorter than ``T`` exactly when the graph has a cycle.
    """
    n = pred_ptr.size - 1
    succ_ptr, succ = successors(pred_ptr, pred)
    waiting = np.empty(n, np.int64)
    order = np.empty(n, np.int64)
    head = 0
    tail = 0
    for t in range(n):
        waiting[t] = pred_ptr[t + 1] - pred_ptr[t]
        if waiting[t] == 0:
            order[tail] = t
            tail += 1
    while head < tail:
        t = order[head]
        head += 1
        for e in range(succ_ptr[t], succ_ptr[t + 1]):
            s = succ[e]
            waiting[s] -= 1
            if waiting[s] == 0:
                order[tail] = s
                tail += 1
    return order[:tail]


@njit
def earliest_finish(pred_ptr, pred, duration_ps, order):
    """Finish time of every task when each starts as soon as its predecessors finish (no resource
    limits): ``int64[T]``. ``order`` is a topological order; the critical path is the maximum."""
    finish = np.zeros(duration_ps.size, np.int64)
    for i in range(order.size):
        t = order[i]
        start = 0
        for e in range(pred_ptr[t], pred_ptr[t + 1]):
            if finish[pred[e]] > start:
                start = finish[pred[e]]
        finish[t] = start + duration_ps[t]
    return finish
