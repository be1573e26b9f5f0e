"""A sparsity pattern: where a Jacobian or a Hessian may be non-zero (framework-free).

Patterns are 2-D, ``(outputs, inputs)`` with both sides flattened in C order: the Jacobian
of ``f: R^{shape_in} -> R^{shape_out}`` has ``size(out)`` rows and ``size(in)`` columns, a
Hessian ``size(in)`` of each.  Entries are kept in row-major order (sorted by row, then
column), the order :class:`crossgrad.sparsity.coloring.Coloring` reads values in and the
order the sparse results list their values in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from crossgrad import errors


@dataclass(frozen=True, eq=False)
class Pattern:
    """Where a matrix may be non-zero.

    >>> p = Pattern.from_dense(np.eye(3, dtype=bool))
    >>> p
    Pattern(shape=(3, 3), nnz=3, density=33.3%)
    >>> p.rows.tolist(), p.cols.tolist()
    ([0, 1, 2], [0, 1, 2])
    """

    shape: tuple[int, int]
    rows: np.ndarray
    cols: np.ndarray

    @staticmethod
    def from_pairs(rows: Any, cols: Any, shape: tuple[int, int]) -> Pattern:
        """The pattern with entries at ``(rows, cols)`` (duplicates merged, sorted row-major)."""
        rows = np.asarray(rows, np.int64).ravel()
        cols = np.asarray(cols, np.int64).ravel()
        key = np.unique(rows * max(shape[1], 1) + cols)
        r, c = np.divmod(key, max(shape[1], 1))
        r.setflags(write=False)
        c.setflags(write=False)
        return Pattern((int(shape[0]), int(shape[1])), r, c)

    @staticmethod
    def from_dense(mask: Any) -> Pattern:
        mask = np.asarray(mask)
        r, c = np.nonzero(mask)
        return Pattern.from_pairs(r, c, (mask.shape[0], mask.shape[1]))

    @staticmethod
    def from_scipy(matrix: Any) -> Pattern:
        coo = sp.coo_array(matrix)
        keep = coo.data != 0
        return Pattern.from_pairs(coo.row[keep], coo.col[keep], (coo.shape[0], coo.shape[1]))

    @property
    def nnz(self) -> int:
        return int(self.rows.size)

    @property
    def density(self) -> float:
        total = self.shape[0] * self.shape[1]
        return self.nnz / total if total else 0.0

    def to_scipy(self) -> Any:
        """The pattern as a ``scipy.sparse`` CSR array of booleans."""
        return sp.csr_array((np.ones(self.nnz, bool), (self.rows, self.cols)), shape=self.shape)

    def to_dense(self) -> np.ndarray:
        """The pattern as a dense NumPy array of booleans."""
        out = np.zeros(self.shape, bool)
        out[self.rows, self.cols] = True
        return out

    def symmetrized(self) -> Pattern:
        return Pattern.from_pairs(np.concatenate([self.rows, self.cols]), np.concatenate([self.cols, self.rows]), self.shape)

    def issuperset(self, other: Pattern) -> bool:
        """Whether every entry of ``other`` is an entry of this pattern."""
        mine = set((self.rows * self.shape[1] + self.cols).tolist())
        return self.shape == other.shape and all(k in mine for k in (other.rows * other.shape[1] + other.cols).tolist())

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Pattern) and self.shape == other.shape and np.array_equal(self.rows, other.rows)
                and np.array_equal(self.cols, other.cols))

    def __hash__(self) -> int:
        return hash((self.shape, self.rows.tobytes(), self.cols.tobytes()))

    def __repr__(self) -> str:
        return f"Pattern(shape={self.shape}, nnz={self.nnz}, density={100 * self.density:.3g}%)"


def _framework_dense(x: Any) -> np.ndarray | None:
    """A torch tensor or jax array (dense or sparse) as a NumPy array, without importing a framework."""
    root = type(x).__module__.partition(".")[0]
    if root == "torch":
        if getattr(x, "is_sparse", False) or str(getattr(x, "layout", "")) != "torch.strided":
            x = x.to_dense()
        return np.asarray(x.detach().cpu().numpy())
    if root in ("jax", "jaxlib"):
        if hasattr(x, "todense"):
            x = x.todense()
        return np.asarray(x)
    return None


def as_pattern(transform: str, given: Any, shape: tuple[int, int]) -> Pattern:
    """A pattern the user passed (a :class:`Pattern`, a dense array of booleans or 0/1, a
    ``scipy.sparse`` matrix, a torch sparse or dense tensor, a jax BCOO or array), checked
    against the shape the function gives."""
    if isinstance(given, Pattern):
        pattern = given
    elif sp.issparse(given):
        pattern = Pattern.from_scipy(given)
    else:
        dense = _framework_dense(given)
        if dense is None:
            try:
                dense = np.asarray(given)
            except Exception:  # anything NumPy cannot read is named below
                dense = None
        if dense is None or dense.dtype == object or dense.ndim != 2:
            received = (f"an array of shape {tuple(dense.shape)}" if dense is not None and dense.dtype != object
                        else f"{type(given).__name__}")
            raise errors.SparsityPatternError(
                transform, f"a 2-D pattern of shape {shape} (outputs x inputs, both flattened)", received,
                "Pass a crossgrad Pattern, a boolean array, a scipy.sparse matrix, a torch sparse tensor or a jax BCOO, "
                "or sparsity=None to detect it from the function.")
        pattern = Pattern.from_dense(dense != 0)
    if pattern.shape != tuple(shape):
        raise errors.SparsityPatternError(
            transform, f"a pattern of shape {tuple(shape)} (outputs x inputs, both flattened)",
            f"a pattern of shape {pattern.shape}",
            "Give the pattern of this function at these arguments, or sparsity=None to detect it.")
    return pattern
