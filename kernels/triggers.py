"""Triggers: flows that start when other flows finish (htsim's connection-matrix triggers).

A trigger ``k`` is activated by the completion of the flows that name it (``send_done`` or
``recv_done``) and then starts its target flows, which have no start time of their own:

- ``oneshot`` (kind 0): the first activation starts every target;
- ``multishot`` (kind 1): each activation starts the next target, in order;
- ``barrier`` (kind 2): the ``need``-th activation starts every target.

Arrays (``K`` triggers, ``F`` flows):

- ``trig_kind int64[K]``, ``trig_need int64[K]`` (barrier size), ``trig_ptr int64[K + 1]`` and
  ``trig_targets int64[nt]`` (CSR of target flows), ``trig_state int64[K, 2]`` (activations so far,
  next multishot target), ``flow_send_trig``/``flow_recv_trig int64[F]`` (-1: none).
"""

import numpy as np

from fabricsim._jit import njit

ONESHOT, MULTISHOT, BARRIER = 0, 1, 2
TRIGGER_KINDS = ("oneshot", "multishot", "barrier")


@njit
def fire(k, trig_kind, trig_need, trig_ptr, trig_targets, trig_state, out, n_out):
    """Activate trigger ``k``; append the flows it starts to ``out[n_out:]``, return the new count."""
    trig_state[k, 0] += 1
    count = trig_state[k, 0]
    kind = trig_kind[k]
    first, last = trig_ptr[k], trig_ptr[k + 1]
    if kind == MULTISHOT:
        i = first + trig_state[k, 1]
        if i < last:
            out[n_out] = trig_targets[i]
            n_out += 1
            trig_state[k, 1] += 1
        return n_out
    if (kind == ONESHOT and count == 1) or (kind == BARRIER and count == trig_need[k]):
        for i in range(first, last):
            out[n_out] = trig_targets[i]
            n_out += 1
    return n_out


def no_triggers(n_flows: int):
    """The trigger arrays ``(kind, need, ptr, targets, flow_trig)`` of a run without triggers."""
    return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(1, np.int64),
            np.zeros(0, np.int64), np.full((n_flows, 2), -1, np.int64))
