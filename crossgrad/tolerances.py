"""The tolerances of crossgrad's checks of its own results, one table per dtype.

Every check that compares two computations of one quantity reads it here: ``jit``'s
compiled result against eager execution, ``auto``'s forward against reverse mode
(``u . (J v) == (J^T u) . v``), the Taylor route against nested Hessian-vector products,
a sparse result against its dense check, and ``check_grads`` (which also compares against
central differences, with the step it takes).  A computation that mixes dtypes is held to
the tolerance of the lowest precision it uses (:func:`identity`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple


class Tolerance(NamedTuple):
    """Relative tolerances for one dtype."""

    identity: float
    """Two computations equal in exact arithmetic (different routes, or the two sides of an identity)."""
    finite_difference: float
    """A derivative against central differences of step :attr:`step`."""
    step: float
    """The central-difference step."""


TABLE: dict[str, Tolerance] = {
    "float64": Tolerance(identity=1e-9, finite_difference=1e-5, step=1e-5),
    "float32": Tolerance(identity=1e-4, finite_difference=2e-2, step=1e-2),
    "float16": Tolerance(identity=2e-2, finite_difference=1e-1, step=1e-1),
    "bfloat16": Tolerance(identity=5e-2, finite_difference=1e-1, step=1e-1),
}
FLOATING = tuple(TABLE)


def of(dtype: str) -> Tolerance:
    """The tolerances of ``dtype`` (a dtype name), float32's for one not in the table."""
    return TABLE.get(dtype, TABLE["float32"])


def identity(dtypes: Iterable[str]) -> float:
    """The identity tolerance of a computation using ``dtypes``: its lowest precision's
    (0 where none is floating)."""
    return max((TABLE[d].identity for d in dtypes if d in TABLE), default=0.0)
