"""Which inputs each value of a program depends on: the rules both backends' program
walkers apply, in NumPy and ``scipy.sparse`` (no framework here).

NOTE [dependency propagation]
A value's dependencies are a boolean sparse matrix ``D`` (its elements, flattened in C
order, by the differentiated input's elements): ``D[i, j]`` says element ``i`` may change
with input element ``j``.  The input starts as the identity; every operation maps its
operands' matrices to its outputs' as ``D_out = sum_k R_k @ D_k``, where ``R_k`` (output
elements by operand ``k``'s elements) says which operand elements each output element
is computed from.  The pattern is global, valid for every value of the input: ``R_k``
depends only on shapes, on the operation's parameters and on constants the program holds
(a constant's zeros are structural: ``x * mask`` with a constant 0/1 mask keeps only the
masked-in elements).  The arguments that are not differentiated are unknown values, so
indices read from them make the pattern conservative (every element they might pick).

The walkers classify each operation into one of the shapes of ``R`` built here:

* elementwise (broadcasting): each output element from the same position of each operand;
* forward index maps (reshape, transpose, slice, pad, concatenate, gather with constant
  indices...): each output element from at most one operand element, found by running the
  operation itself on arrays of element codes (``1 + index``, ``0`` for none);
* backward index maps (sums, scatter-adds): each operand element into at most one output
  element, found by reducing by axes or by the operation's transpose run on codes;
* contractions (``dot_general``, matrix products), convolutions (from patches of codes),
  cumulative reductions and along-axis maps (softmax);
* zero: comparisons, rounding, integer casts, argmax: derivative zero wherever defined;
* anything else: every output element from every operand element (dense), and the
  operation is named in a warning: never silently dropped.

A derivative being zero on a set of measure zero (``relu`` at 0) is not a dependency:
the pattern is the derivative's almost everywhere, as the framework computes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

Matrix = Any  # a scipy.sparse CSR array, float32 data all ones


def identity(n: int) -> Matrix:
    """The differentiated input's dependencies: each element on itself."""
    return sp.identity(n, dtype=np.float32, format="csr")


def _normalized(d: Matrix) -> Matrix:
    d = sp.csr_array(d)
    d.sum_duplicates()
    d.eliminate_zeros()
    d.data[:] = 1.0
    return d


def from_pairs(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> Matrix:
    """``R`` with ones at ``(rows, cols)`` (duplicates merged)."""
    data = np.ones(len(rows), dtype=np.float32)
    return _normalized(sp.coo_array((data, (np.asarray(rows, np.int64), np.asarray(cols, np.int64))), shape=shape).tocsr())


def combine(out_size: int, n: int, terms: Sequence[tuple[Matrix | None, Matrix]]) -> Matrix | None:
    """``sum_k R_k @ D_k`` (``R_k`` None: the identity), or None where nothing depends on the input."""
    total = None
    for r, d in terms:
        part = d if r is None else r @ d
        total = part if total is None else total + part
    if total is None:
        return None
    assert total.shape == (out_size, n), (total.shape, out_size, n)
    return _normalized(total)


def forward_map(codes: np.ndarray, offset: int, size: int) -> Matrix:
    """``R`` of one operand from the codes an operation produced on codes: output element ``i``
    is operand element ``codes[i] - 1 - offset`` where that lies in ``[0, size)``."""
    flat = np.asarray(codes, np.int64).ravel()
    src = flat - 1 - offset
    keep = (src >= 0) & (src < size)
    return from_pairs(np.nonzero(keep)[0], src[keep], (flat.size, size))


def backward_map(targets: np.ndarray, out_size: int) -> Matrix:
    """``R`` of one operand whose element ``j`` goes into output element ``targets[j] - 1``
    (``0``: nowhere)."""
    flat = np.asarray(np.rint(targets), np.int64).ravel()
    keep = flat > 0
    return from_pairs(flat[keep] - 1, np.nonzero(keep)[0], (out_size, flat.size))


def broadcast_map(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> Matrix | None:
    """``R`` of an operand broadcast to ``out_shape`` (NumPy's rules); None when the shapes match."""
    if tuple(in_shape) == tuple(out_shape):
        return None
    size = int(np.prod(in_shape, dtype=np.int64))
    codes = np.broadcast_to(np.arange(1, size + 1).reshape(in_shape), out_shape)
    return forward_map(codes, 0, size)


def masked(r: Matrix | None, out_size: int, keep: np.ndarray) -> Matrix:
    """``R`` restricted to the output elements where ``keep`` holds."""
    diag = sp.diags_array(np.asarray(keep, np.float32).ravel(), format="csr")
    return _normalized(diag if r is None else diag @ r)


def reduce_map(in_shape: tuple[int, ...], axes: Sequence[int]) -> Matrix:
    """``R`` of a reduction over ``axes`` (sum, max, product, norm...): each output element
    from every operand element along the reduced axes (the output keeps the other axes in order)."""
    axes = sorted(a % max(len(in_shape), 1) for a in axes) if in_shape else []
    kept = [d for i, d in enumerate(in_shape) if i not in axes]
    grid = np.indices(in_shape).reshape(len(in_shape), -1) if in_shape else np.zeros((0, 1), np.int64)
    kept_rows = [grid[i] for i in range(len(in_shape)) if i not in axes]
    out = np.ravel_multi_index(kept_rows, kept) if kept else np.zeros(grid.shape[1], np.int64)
    size = int(np.prod(in_shape, dtype=np.int64))
    return from_pairs(out, np.arange(size), (int(np.prod(kept, dtype=np.int64)), size))


def along_axis_map(shape: tuple[int, ...], axis: int, kind: str = "all", reverse: bool = False) -> Matrix:
    """``R`` of an operation along one axis keeping the shape: ``"all"`` (softmax,
    normalisation, sort: each element from the whole line) or ``"prefix"`` (cumulative sums,
    products, maxima: from the elements up to it; ``reverse``: from it on)."""
    axis %= len(shape)
    size = int(np.prod(shape, dtype=np.int64))
    length = shape[axis]
    idx = np.arange(size).reshape(shape)
    lines = np.moveaxis(idx, axis, -1).reshape(-1, length)  # each row: one line's element indices
    i, j = np.meshgrid(np.arange(length), np.arange(length), indexing="ij")
    if kind == "prefix":
        keep = (j >= i) if reverse else (j <= i)
        i, j = i[keep], j[keep]
    rows = lines[:, i.ravel()].ravel()
    cols = lines[:, j.ravel()].ravel()
    return from_pairs(rows, cols, (size, size))


def contraction_maps(a_shape: tuple[int, ...], b_shape: tuple[int, ...], contract: tuple[Sequence[int], Sequence[int]],
                     batch: tuple[Sequence[int], Sequence[int]], a_value: np.ndarray | None = None,
                     b_value: np.ndarray | None = None) -> tuple[Matrix, Matrix]:
    """``R_a`` and ``R_b`` of a tensor contraction with ``dot_general``'s layout (output: batch
    axes, then ``a``'s free axes, then ``b``'s): output ``(batch, i, j)`` is from ``a[batch, i, k]``
    and ``b[batch, k, j]`` for every contracted ``k`` (only where the other operand, when it is
    a known constant, is non-zero)."""
    (ac, bc), (ab, bb) = contract, batch
    af = [d for d in range(len(a_shape)) if d not in ac and d not in ab]
    bf = [d for d in range(len(b_shape)) if d not in bc and d not in bb]
    a_idx = np.transpose(np.arange(int(np.prod(a_shape, dtype=np.int64))).reshape(a_shape), [*ab, *af, *ac])
    b_idx = np.transpose(np.arange(int(np.prod(b_shape, dtype=np.int64))).reshape(b_shape), [*bb, *bc, *bf])
    nb, naf, nbf = len(ab), len(af), len(bf)
    bs = a_idx.shape[:nb]
    afs, ks = a_idx.shape[nb:nb + naf], a_idx.shape[nb + naf:]
    bfs = b_idx.shape[nb + len(ks):]
    # Common layout [batch, a_free, b_free, contracted].
    full = (*bs, *afs, *bfs, *ks)
    a_full = np.broadcast_to(a_idx.reshape((*bs, *afs, *([1] * nbf), *ks)), full)
    b_lead = np.moveaxis(b_idx.reshape((*bs, int(np.prod(ks, dtype=np.int64)), *bfs)), nb, -1)
    b_full = np.broadcast_to(b_lead.reshape((*bs, *([1] * naf), *bfs, *ks)), full)
    out_idx = np.broadcast_to(np.arange(int(np.prod((*bs, *afs, *bfs), dtype=np.int64))).reshape(
        (*bs, *afs, *bfs, *([1] * len(ks)))), full)
    out_size = int(np.prod((*bs, *afs, *bfs), dtype=np.int64))
    keep_a = np.ones(full, bool) if b_value is None else (np.asarray(b_value).ravel()[b_full] != 0)
    keep_b = np.ones(full, bool) if a_value is None else (np.asarray(a_value).ravel()[a_full] != 0)
    r_a = from_pairs(out_idx[keep_a], a_full[keep_a], (out_size, int(np.prod(a_shape, dtype=np.int64))))
    r_b = from_pairs(out_idx[keep_b], b_full[keep_b], (out_size, int(np.prod(b_shape, dtype=np.int64))))
    return r_a, r_b


def dense_terms(out_size: int, n: int, deps: Sequence[Matrix]) -> Matrix:
    """Every output element depends on everything any operand depends on (no rule)."""
    union = None
    for d in deps:
        row = sp.csr_array(np.asarray(d.sum(axis=0)).reshape(1, -1))
        union = row if union is None else union + row
    assert union is not None
    return _normalized(sp.csr_array(np.ones((out_size, 1), np.float32)) @ _normalized(union))


@dataclass
class Value:
    """What the walk knows of one value: its shape, its dependencies on the input (None:
    none) and its value where the program fixes it (a constant), else None."""

    shape: tuple[int, ...]
    deps: Matrix | None = None
    const: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Walk:
    """State shared by one walk: the input's size and the operations met without a rule."""

    n: int
    unruled: set[str] = field(default_factory=set)


def gathered(shape: tuple[int, ...], n: int, operands: Sequence[tuple[Value, np.ndarray | None]]) -> Matrix | None:
    """Each output element from the same position of each operand (broadcast), where that
    operand's ``keep`` mask (None: everywhere) holds: elementwise operations, ``x * mask``
    with a constant mask, ``where`` with a constant condition."""
    size = int(np.prod(shape, dtype=np.int64))
    terms = []
    for value, keep in operands:
        if value.deps is None:
            continue
        r = broadcast_map(value.shape, shape)
        if keep is not None:
            r = masked(r, size, np.broadcast_to(keep, shape))
        terms.append((r, value.deps))
    return combine(size, n, terms)


def inputs(shapes: Sequence[tuple[int, ...]], position: int) -> list[Value]:
    """The program's inputs: the differentiated one (at ``position``) depends on itself."""
    values = [Value(tuple(s)) for s in shapes]
    values[position] = Value(values[position].shape, identity(values[position].size))
    return values


def pattern_of(result: Value, n: int) -> tuple[tuple[int, int], np.ndarray, np.ndarray]:
    """The output's pattern: its shape (outputs x inputs), rows and columns."""
    m = result.size
    if result.deps is None:
        return (m, n), np.zeros(0, np.int64), np.zeros(0, np.int64)
    coo = result.deps.tocoo()
    return (m, n), coo.row.astype(np.int64), coo.col.astype(np.int64)


def patch_kernel(channels: int, window: Sequence[int]) -> np.ndarray:
    """A convolution kernel ``[channels * taps, channels, *window]`` whose output channel
    ``c * taps + t`` picks input channel ``c`` at tap ``t``: run on element codes, the
    convolution gives each output position's patch of input codes (``0``: padding)."""
    taps = int(np.prod(window, dtype=np.int64))
    eye = np.zeros((channels * taps, channels, taps), np.float64)
    for c in range(channels):
        eye[c * taps + np.arange(taps), c, np.arange(taps)] = 1.0
    return eye.reshape(channels * taps, channels, *window)


def convolution_maps(patches: np.ndarray, out_index: np.ndarray, kernel_shape: tuple[int, ...],
                     kernel: np.ndarray | None, in_size: int) -> tuple[Matrix, Matrix]:
    """``R`` of a convolution's input and kernel, in the standard layout: ``patches``
    ``[n, c * taps, *spatial]`` (input codes under each output position's window, ``0``:
    padding), ``out_index`` ``[n, o, *spatial]`` (flat output indices), the kernel's shape
    ``(o, c, *window)`` and its value where it is a known constant (its zeros are structural).
    Output ``(n, o, p)`` is from the input elements under the window at ``p`` whose kernel
    entry ``(o, c, tap)`` is not a known zero, and from every kernel entry of channel ``o``
    over a real element."""
    outs, channels = kernel_shape[0], kernel_shape[1]
    taps = int(np.prod(kernel_shape[2:], dtype=np.int64))
    nb, spatial = out_index.shape[0], out_index.shape[2:]
    ones = (1,) * len(spatial)
    full = (nb, outs, channels, taps, *spatial)
    o_b = np.broadcast_to(out_index.reshape(nb, outs, 1, 1, *spatial), full)
    p_b = np.broadcast_to(patches.reshape(nb, 1, channels, taps, *spatial), full)
    live = np.ones((outs, channels, taps), bool) if kernel is None else kernel.reshape(outs, channels, taps) != 0
    live_b = np.broadcast_to(live.reshape(1, outs, channels, taps, *ones), full)
    kernel_size = outs * channels * taps
    k_b = np.broadcast_to(np.arange(kernel_size).reshape(1, outs, channels, taps, *ones), full)
    size = int(np.prod(out_index.shape, dtype=np.int64))
    real = p_b > 0
    keep = real & live_b
    return (from_pairs(o_b[keep], p_b[keep] - 1, (size, in_size)),
            from_pairs(o_b[real], k_b[real], (size, kernel_size)))
