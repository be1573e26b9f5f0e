"""Chunked vectorized mapping: fixed chunks, or chunks sized from a memory budget.

NOTE [auto chunks]: with ``chunk_size="auto"`` the first row is computed alone; the
bytes of its result and of one input row, times :data:`WORKING_FACTOR` for the
intermediates a vectorized vjp/jvp keeps alive, give the cost of a row, and the rest
goes through in chunks of ``budget // cost`` rows (:func:`crossgrad.memory.budget_bytes`).
A chunk that still runs out of memory (torch's ``OutOfMemoryError``, XLA's
``RESOURCE_EXHAUSTED``) is retried in halves, down to one row, so the estimate may be
wrong without the call failing.  Under ``jax.jit`` nothing runs while tracing: the
chunk size comes from the output's abstract shape, and no retry is possible.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from crossgrad import memory, pytree
from crossgrad.backends.base import Backend

WORKING_FACTOR = 4
# The decisions of chunk_size="auto" (chunk sizes, retries), for users tuning a budget:
# logging.getLogger("crossgrad").setLevel(logging.INFO).
log = logging.getLogger("crossgrad")


def map_chunks(backend: Backend, batched_f: Callable[..., Any], xs: tuple[Any, ...], chunk_size: int | str | None) -> Any:
    """``batched_f(*xs)`` with every leaf of ``xs`` and of the result batched on axis 0,
    computed ``chunk_size`` rows at a time (``"auto"``: NOTE [auto chunks])."""
    primitives = backend.primitives
    if chunk_size != "auto":
        return primitives.map_chunks(batched_f, xs, chunk_size)
    arrays = backend.arrays
    n = arrays.shape(xs[0])[0]
    if n <= 1:
        return batched_f(*xs)

    def rows(lo: int, hi: int) -> tuple[Any, ...]:
        return tuple(arrays.slice_axis(x, lo, hi, 0) for x in xs)

    in_row = sum(arrays.nbytes(x) for x in xs) // n
    budget = memory.budget_bytes(arrays, xs[0])
    if arrays.is_traced(xs[0]):
        out_row = sum(math.prod(shape) * item for shape, item, _ in primitives.output_shapes(batched_f, rows(0, 1)))
        size = _rows_within(budget, in_row + out_row, n)
        log.info("chunk_size='auto' (traced): %d of %d rows per chunk (%d bytes per row, budget %d)",
                 size, n, in_row + out_row, budget)
        return primitives.map_chunks(batched_f, xs, size)
    parts = [primitives.ready(batched_f(*rows(0, 1)))]
    out_row = sum(arrays.nbytes(leaf) for leaf in pytree.leaves(parts[0]))
    size, start = _rows_within(budget, in_row + out_row, n), 1
    log.info("chunk_size='auto': %d of %d rows per chunk (%d bytes per row, budget %d)", size, n,
             in_row + out_row, budget)
    while start < n:
        stop = min(start + size, n)
        try:
            # jax dispatches asynchronously: an allocation failure surfaces only when the
            # result is used, so wait for each chunk here, where a retry is possible.
            parts.append(primitives.ready(batched_f(*rows(start, stop))))
        except Exception as exc:
            if stop - start == 1 or not primitives.is_out_of_memory(exc):
                raise
            size = max(1, (stop - start) // 2)
            log.info("chunk_size='auto': out of memory at %d rows; retrying with %d", stop - start, size)
            continue
        start = stop
    treedef = pytree.flatten(parts[0])[1]
    return pytree.unflatten(treedef, [arrays.concat(col, 0) for col in zip(*(pytree.leaves(p) for p in parts))])


def _rows_within(budget: int, row_bytes: int, n: int) -> int:
    return max(1, min(n, budget // max(1, WORKING_FACTOR * row_bytes)))
