"""The differentiated leaves of one call as rows of directions: coordinate and random
directions for the curvature transforms (Laplacians, traces, diagonals, the biharmonic),
each sample of a batch with its own, and the matrix form the estimators work in.
"""

from __future__ import annotations

import math
from typing import Any

from crossgrad.backends.base import Backend
from crossgrad.transforms.call import Call

# Random directions per estimate when ``samples`` is None.
DEFAULT_SAMPLES = 64


class Point:
    """The differentiated leaves of one call, as rows of directions: leaf ``i`` has the
    per-sample shape ``shapes[i]`` and its batch (if any) on ``axes[i]``."""

    def __init__(self, backend: Backend, call: Call, axes: list[int | None], batch: int | None):
        a = backend.arrays
        self.a, self.call, self.axes, self.batch = a, call, axes, batch
        self.shapes = []
        for p, ax in zip(call.primals, axes):
            s = list(a.shape(p))
            if ax is not None:
                del s[ax]
            self.shapes.append(tuple(s))
        self.sizes = [math.prod(s) for s in self.shapes]
        self.n = sum(self.sizes)
        self.like = call.primals[0]

    def from_matrix(self, m: Any) -> list[Any]:
        """``m`` of shape ``(rows, B, n)`` (``(rows, n)`` without a batch) as one direction
        array per leaf, shaped ``(rows, *leaf)``."""
        a, out, lo = self.a, [], 0
        rows = a.shape(m)[0]
        for size, shape, ax in zip(self.sizes, self.shapes, self.axes):
            piece = a.slice_axis(m, lo, lo + size, -1)
            lo += size
            if self.batch is None:
                out.append(a.reshape(piece, (rows, *shape)))
            else:
                assert ax is not None
                piece = a.reshape(piece, (rows, self.batch, *shape))
                out.append(a.moveaxis(piece, 1, 1 + ax))
        return out

    def to_matrix(self, leaves: list[Any]) -> Any:
        """The inverse of :meth:`from_matrix`."""
        a, parts = self.a, []
        for leaf, size, ax in zip(leaves, self.sizes, self.axes):
            rows = a.shape(leaf)[0]
            if self.batch is None:
                parts.append(a.reshape(leaf, (rows, size)))
            else:
                assert ax is not None
                parts.append(a.reshape(a.moveaxis(leaf, 1 + ax, 1), (rows, self.batch, size)))
        return a.concat(parts, -1)

    def basis(self, lo: int, hi: int) -> list[Any]:
        """Coordinate directions ``lo .. hi-1`` (the same for every sample)."""
        a = self.a
        e = a.slice_axis(a.eye(self.n, self.like), lo, hi, 0)
        if self.batch is not None:
            e = a.broadcast_to(a.reshape(e, (hi - lo, 1, self.n)), (hi - lo, self.batch, self.n))
        return self.from_matrix(e)

    def signs(self, key: Any, rows: int, draws: int = 1) -> list[list[Any]]:
        """``draws`` independent sets of ``rows`` Rademacher directions (each sample its own)."""
        shape = (rows, self.n) if self.batch is None else (rows, self.batch, self.n)
        return [self.from_matrix(m) for m in self.a.random_signs(key, [shape] * draws, self.like)]

