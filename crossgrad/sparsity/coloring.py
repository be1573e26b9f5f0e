"""Colorings of a sparsity pattern, and where each entry is read from the compressed
products (framework-free).

NOTE [colorings]
A coloring groups the columns (forward mode: one JVP per color, seeded with the sum of
the color's basis vectors), the rows (reverse mode: one VJP per color) or, for a Hessian,
the columns of a symmetric matrix (one HVP per color).  The products are stacked
``compressed[color, position]`` (a JVP's output position, a VJP's input position, an
HVP's position); every entry of the pattern is then read from exactly one place of it,
a gather with indices prepared once (:attr:`Coloring.reads`):

* columns: ``J[i, j] = compressed[color(j), i]``, valid when no other column of
  ``color(j)`` has an entry in row ``i`` (a distance-1 coloring of the columns'
  intersection graph); rows likewise;
* symmetric (star coloring: no path on four vertices uses two colors, Gebremedhin, Manne
  and Pothen 2005): ``H[i, j] = compressed[color(j), i]`` where column ``j`` is the only
  one of its color in row ``i``, else ``compressed[color(i), j]`` (the star condition
  says one of the two holds).  It needs no more colors than a column coloring of ``H``
  and far fewer on an arrowhead (2 against ``n``).

The colorings are greedy, tried in two vertex orders (natural, largest degree first);
the fewer colors win.  :func:`reads` is the validity check: it raises where an entry
cannot be read directly, so a coloring that is wrong never returns numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from crossgrad.sparsity.patterns import Pattern

MODES = ("auto", "fwd", "rev", "symmetric")


@dataclass(frozen=True, eq=False)
class Coloring:
    """A coloring of a pattern and where each entry of it is read.

    ``mode``: ``"fwd"`` (columns: JVPs), ``"rev"`` (rows: VJPs) or ``"symmetric"`` (a
    Hessian's columns: HVPs); ``colors``: the color of each column (row, for ``"rev"``);
    ``seeds``: ``[count, n]`` 0/1 seed vectors, one per color; ``reads``: for each entry of
    the pattern, its flat index into the compressed products ``[count, size]``.
    """

    mode: str
    colors: np.ndarray
    count: int
    seeds: np.ndarray
    reads: np.ndarray
    size: int

    def __repr__(self) -> str:
        return f"Coloring(mode={self.mode!r}, colors={self.count}, of {self.colors.size})"


def _adjacency(matrix: sp.csr_array) -> tuple[np.ndarray, np.ndarray]:
    m = sp.csr_array(matrix)
    m.setdiag(0)
    m.eliminate_zeros()
    m.sort_indices()
    return m.indptr, m.indices


def _greedy(indptr: np.ndarray, indices: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Distance-1 greedy coloring of a graph in ``order`` (Python lists: a NumPy slice per
    vertex costs more than the few neighbours it holds)."""
    n = len(indptr) - 1
    colors = [-1] * n
    mark = [-1] * (n + 1)  # mark[c] == v: color c is taken by a neighbour of v
    starts, adjacent = indptr.tolist(), indices.tolist()
    for v in order.tolist():
        for w in adjacent[starts[v]:starts[v + 1]]:
            c = colors[w]
            if c >= 0:
                mark[c] = v
        c = 0
        while mark[c] == v:
            c += 1
        colors[v] = c
    return np.asarray(colors, np.int64)


def _star(indptr: np.ndarray, indices: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Greedy star coloring: distance-1, and no path on four vertices in two colors."""
    n = len(indptr) - 1
    colors = np.full(n, -1, np.int64)
    adj = [indices[indptr[v]:indptr[v + 1]].tolist() for v in range(n)]
    for v in order.tolist():
        forbidden: set[int] = set()
        by_color: dict[int, list[int]] = {}
        for w in adj[v]:
            cw = colors[w]
            if cw < 0:
                continue
            forbidden.add(int(cw))
            by_color.setdefault(int(cw), []).append(w)
            for x in adj[w]:  # v - w - x - y with c(y) == c(w): v may not take c(x)
                cx = colors[x]
                if x == v or cx < 0 or cx in forbidden:
                    continue
                if any(colors[y] == cw for y in adj[x] if y != w):
                    forbidden.add(int(cx))
        for group in by_color.values():  # w - v - x - y with c(w) == c(x): v may not take c(y)
            if len(group) > 1:
                for x in group:
                    for y in adj[x]:
                        if y != v and colors[y] >= 0:
                            forbidden.add(int(colors[y]))
        c = 0
        while c in forbidden:
            c += 1
        colors[v] = c
    return colors


def _orders(indptr: np.ndarray) -> list[np.ndarray]:
    degree = np.diff(indptr)
    return [np.arange(len(degree)), np.argsort(-degree, kind="stable")]


def _best(colorings: list[np.ndarray]) -> np.ndarray:
    best: np.ndarray = min(colorings, key=lambda c: (int(c.max(initial=-1)) + 1))
    return best


def _count(colors: np.ndarray) -> int:
    return int(colors.max(initial=-1)) + 1


def color_columns(pattern: Pattern) -> np.ndarray:
    """A distance-1 coloring of the columns' intersection graph (columns sharing a row differ),
    the better of two vertex orders; the second is skipped where the first reaches the lower
    bound (the most entries of one row: those columns all differ)."""
    m = pattern.to_scipy().astype(np.float32)
    indptr, indices = _adjacency((m.T @ m).tocsr())
    first, second = _orders(indptr)
    natural = _greedy(indptr, indices, first)
    bound = int(np.diff(m.indptr).max(initial=0))
    if _count(natural) <= bound:
        return natural
    return _best([natural, _greedy(indptr, indices, second)])


def color_symmetric(pattern: Pattern) -> np.ndarray:
    """A star coloring of a symmetric pattern's adjacency graph."""
    indptr, indices = _adjacency(pattern.symmetrized().to_scipy().astype(np.float32))
    return _best([_star(indptr, indices, o) for o in _orders(indptr)])


def _seeds(colors: np.ndarray, count: int) -> np.ndarray:
    seeds = np.zeros((count, colors.size), np.float32)
    seeds[colors, np.arange(colors.size)] = 1.0
    return seeds


def reads(pattern: Pattern, mode: str, colors: np.ndarray) -> np.ndarray:
    """For each entry of ``pattern`` (row-major), its flat index into the compressed products
    ``[count, size]``; ``ValueError`` where a coloring does not let an entry be read directly."""
    rows, cols = pattern.rows, pattern.cols
    count = int(colors.max(initial=-1)) + 1
    if mode == "rev":  # compressed[color(i), j]: VJPs over the inputs
        size = pattern.shape[1]
        key = colors[rows] * size + cols
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
        if np.any(counts[inverse] > 1):
            raise ValueError("row coloring: two rows of one color share a column")
        return np.asarray(key, np.int64)
    size = pattern.shape[0]
    key = colors[cols] * size + rows  # compressed[color(j), i]
    _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    direct = counts[inverse] == 1
    if mode == "fwd":
        if not direct.all():
            raise ValueError("column coloring: two columns of one color share a row")
        return np.asarray(key, np.int64)
    # symmetric: where row i holds two columns of color(j), read H[j, i] = compressed[color(i), j].
    mirrored = colors[rows] * size + cols
    ok = np.isin(mirrored, key[direct])
    if not np.all(direct | ok):
        raise ValueError("star coloring: an entry can be read from neither side")
    return np.asarray(np.where(direct, key, mirrored) if count else key, np.int64)


def coloring(pattern: Pattern, mode: str = "auto") -> Coloring:
    """The coloring of ``pattern`` in ``mode`` (``"auto"``: forward or reverse, whichever needs
    fewer colors, forward on a tie), with its reads checked."""
    if mode == "symmetric":
        colors = color_symmetric(pattern)
        by_columns = color_columns(pattern)
        if by_columns.max(initial=-1) < colors.max(initial=-1):
            colors = by_columns  # a column coloring of a symmetric matrix reads symmetric too
    elif mode == "fwd":
        colors = color_columns(pattern)
    elif mode == "rev":
        colors = color_columns(Pattern.from_pairs(pattern.cols, pattern.rows, (pattern.shape[1], pattern.shape[0])))
    else:
        fwd, rev = coloring(pattern, "fwd"), coloring(pattern, "rev")
        return fwd if fwd.count <= rev.count else rev
    count = int(colors.max(initial=-1)) + 1
    where = reads(pattern, mode, colors)
    size = pattern.shape[1] if mode == "rev" else pattern.shape[0]
    for a in (colors, where):
        a.setflags(write=False)
    return Coloring(mode, colors, count, _seeds(colors, count), where, size)
