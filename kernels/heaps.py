"""Indexed binary min-heaps stored in flat arrays.

An indexed heap holds a subset of the ids ``0 .. n-1``; each id's key lives in a separate
``keys`` array that the caller owns, so a key can be changed in place and the heap repaired
with :func:`heap_update` (decrease- or increase-key) in O(log n). Ties are broken by id, which
makes every pop order deterministic.

Array layout (all owned by the caller):

- ``heap : int64[n]``  heap[0:size] are the ids in heap order
- ``pos  : int64[n]``  pos[id] is the id's index in ``heap``, or -1 when absent
- ``keys : float64[n] or int64[n]``  the key of every id (read, never written here)

``size`` is passed in and the new size returned, so the heap itself is plain arrays.
"""

from fabricsim._jit import njit


@njit(inline="always")
def _less(keys, a, b):
    ka = keys[a]
    kb = keys[b]
    return ka < kb or (ka == kb and a < b)


@njit
def _sift_up(heap, pos, keys, i):
    item = heap[i]
    while i > 0:
        parent = (i - 1) >> 1
        other = heap[parent]
        if _less(keys, item, other):
            heap[i] = other
            pos[other] = i
            i = parent
        else:
            break
    heap[i] = item
    pos[item] = i


@njit
def _sift_down(heap, pos, size, keys, i):
    item = heap[i]
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        right = child + 1
        if right < size and _less(keys, heap[right], heap[child]):
            child = right
        other = heap[child]
        if _less(keys, other, item):
            heap[i] = other
            pos[other] = i
            i = child
        else:
            break
    heap[i] = item
    pos[item] = i


@njit(inline="always")
def heap_push(heap, pos, size, keys, item):
    """Insert ``item`` (not already present); returns the new size."""
    heap[size] = item
    pos[item] = size
    _sift_up(heap, pos, keys, size)
    return size + 1


@njit(inline="always")
def heap_update(heap, pos, size, keys, item):
    """Restore heap order after ``keys[item]`` changed (item must be present)."""
    i = pos[item]
    _sift_up(heap, pos, keys, i)
    _sift_down(heap, pos, size, keys, pos[item])


@njit(inline="always")
def heap_remove(heap, pos, size, keys, item):
    """Remove ``item`` (must be present); returns the new size."""
    i = pos[item]
    last = size - 1
    pos[item] = -1
    if i != last:
        moved = heap[last]
        heap[i] = moved
        pos[moved] = i
        _sift_up(heap, pos, keys, i)
        _sift_down(heap, pos, last, keys, pos[moved])
    return last


@njit(inline="always")
def heap_pop(heap, pos, size, keys):
    """Remove and return the id with the smallest (key, id); returns (id, new size)."""
    top = heap[0]
    return top, heap_remove(heap, pos, size, keys, top)
