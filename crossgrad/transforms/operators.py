"""hessian_operator: the Hessian of a scalar function as a linear operator, never formed.

Why one module of ~390 lines: the operator's methods (products, dense, trace, diagonal, the
estimators, eigenvalues, the spectral density, the SciPy operator) and its plan share its
flat layout and its product functions; the Gauss-Newton operator subclasses them all.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

from crossgrad import errors, option_checks, pytree, spec, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms import curvature, estimators, policy, spectra
from crossgrad.transforms.call import Call
from crossgrad.transforms.derivatives import planned_by
from crossgrad.transforms.hessian_vector import hessian_products


def split(a: Any, v: Any, shapes: list[tuple[int, ...]]) -> list[Any]:
    """A flat vector ``v`` as one piece per leaf of ``shapes``, in order."""
    pieces, lo = [], 0
    for shape in shapes:
        size = math.prod(shape)
        pieces.append(a.reshape(a.slice_axis(v, lo, lo + size, 0), shape))
        lo += size
    return pieces


def joined(a: Any, pieces: Any) -> Any:
    """The pieces, flattened and concatenated: ``split``'s inverse."""
    return a.concat([a.reshape(o, (-1,)) for o in pieces], 0)


@dataclasses.dataclass(frozen=True)
class OperatorPlan:
    """What an operator's products run (NOTE [plans] in :mod:`crossgrad.transforms.jacobians`):
    its size and dtype, the product route (``"fwd-rev"``: the jvp of the gradient;
    ``"rev-rev"``: its vjp, once forward over reverse failed on this operator's function;
    ``"jvp-hvp-vjp"``: the Gauss-Newton operator's ``J^T (H_l (J v))``), whether the products
    are compiled once (NOTE [operator products]), and why."""

    transform: str
    size: int
    dtype: str
    products: str
    compiled: bool
    why: str

    def __str__(self) -> str:
        how = "compiled once" if self.compiled else "eager"
        return f"{self.transform}: {self.size} x {self.size} {self.dtype}, {self.products} products ({how}); {self.why}"


class HessianOperator:
    """The ``n x n`` Hessian of a scalar function at one point, as a linear operator
    on flat vectors (``n``: the elements of the differentiated arguments, in the order of
    their leaves).

    Products are Hessian-vector products (forward over reverse), never the matrix:
    ``H @ v`` (``v`` of shape ``(n,)``) or ``H @ V`` (``(n, m)``, the columns mapped at
    once).  ``dense()`` forms it (``n`` products); ``trace`` and ``diagonal`` take the
    routes of :func:`hessian_trace` / :func:`hessian_diagonal`; ``eigenvalues`` the
    largest ones by Lanczos; ``spectral_density`` by stochastic Lanczos quadrature; ``to_scipy()`` a ``scipy.sparse.linalg.LinearOperator``.

    Example:
        >>> import torch, crossgrad as cg
        >>> H = cg.torch.hessian_operator(lambda x: (x ** 3).sum(), torch.tensor([1.0, 2.0]))
        >>> H.shape, H @ torch.tensor([1.0, 1.0])
        ((2, 2), tensor([ 6., 12.]))
    """

    name = "hessian_operator"

    def __init__(self, backend: Backend, f: Callable[..., Any], primals: tuple[Any, ...], argnums: Any):
        name = self.name
        self._f, self._primals, self._argnums = f, primals, argnums
        self._backend = backend
        self._call = Call(name, backend, f, primals, {}, argnums, False)
        shapes = [tuple(s) for s, _, _ in self._call.output_shapes()]
        if len(shapes) != 1 or shapes[0] != ():
            value_checks.check_scalar(name, shapes[0] if len(shapes) == 1 else (len(shapes),))
        a = backend.arrays
        self._shapes = [a.shape(p) for p in self._call.primals]
        self._sizes = [math.prod(s) for s in self._shapes]
        n = sum(self._sizes)
        self.shape = (n, n)
        self.dtype = self._call.primals[0].dtype
        self._reverse: list[str] = []  # why forward over reverse failed, once it has (NOTE [plans])
        self._compiled = policy.compiled_operator_products(backend.name)

        def hvp_at(primals: tuple[Any, ...], v: Any) -> Any:
            return joined(a, self._products_at(primals)(*split(a, v, self._shapes)))

        def columns_at(primals: tuple[Any, ...], v: Any) -> Any:
            return backend.primitives.vmap(lambda u: hvp_at(primals, u), 1, 1)(v)

        if self._compiled:  # NOTE [operator products]
            one, many = (backend.builtins.compile(g, {}) for g in (hvp_at, columns_at))
        else:
            one, many = hvp_at, columns_at
        call = self._call
        self._hvp: Callable[[Any], Any] = lambda v: one(call.primals, v)
        self._hvp_columns: Callable[[Any], Any] = lambda v: many(call.primals, v)

    def _products_at(self, primals: tuple[Any, ...]) -> Callable[..., Any]:
        """``t -> H t`` at ``primals`` (one piece per differentiated leaf): the operator's
        product, which a subclass replaces (the Gauss-Newton operator's ``J^T H_l J``)."""
        call = self._call
        return hessian_products(self._backend, lambda *x: call.flat_output(*x)[0], primals, self._reverse)

    def _product_route(self) -> tuple[str, str]:
        """The products' route and why (a subclass with other products says its own)."""
        if self._reverse:
            return "rev-rev", (f"revised: forward over reverse failed on this function ({self._reverse[0]}); the vjp "
                               "of the gradient, H being symmetric")
        return "fwd-rev", "Hessian-vector products (the jvp of the gradient), never the matrix"

    def plan(self) -> OperatorPlan:
        """What this operator's products run, and why (NOTE [plans]); nothing is computed.

        Example:
            >>> import torch, crossgrad as cg
            >>> cg.torch.hessian_operator(lambda x: (x ** 3).sum(), torch.ones(2)).plan().products
            'fwd-rev'
        """
        route, why = self._product_route()
        how = "compiled once per operator" if self._compiled else "eager"
        return OperatorPlan(self.name, self.shape[0], self._backend.arrays.dtype_name(self._call.primals[0]), route,
                            self._compiled, f"{why}; {how} (NOTE [operator products])")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.shape[0]}x{self.shape[1]} {self.dtype} ({self._backend.name})>"

    def _check_vector(self, v: Any, what: str) -> None:
        if not self._backend.arrays.is_array(v):
            raise errors.InputDtypeError(
                self.name, f"a {self._backend.name} array (the operator's framework)",
                f"{what} of type {type(v).__module__}.{type(v).__name__}",
                f"Convert it first, e.g. crossgrad.to_{self._backend.name}(v).")
        shape = self._backend.arrays.shape(v)
        if len(shape) not in (1, 2) or shape[0] != self.shape[1]:
            raise errors.StructureError(
                self.name, f"a vector of shape ({self.shape[1]},) or a matrix with {self.shape[1]} rows",
                f"{what} of shape {shape}", "Flatten the direction into one vector over the differentiated "
                "leaves, in order.")

    def matvec(self, v: Any) -> Any:
        """``H v`` for a vector ``v`` of shape ``(n,)``."""
        self._check_vector(v, "a vector")
        return self._hvp(v)

    def matmat(self, v: Any) -> Any:
        """``H V`` for ``V`` of shape ``(n, m)`` (the columns as one vectorized product)."""
        self._check_vector(v, "a matrix")
        return self._hvp_columns(v)

    def __matmul__(self, v: Any) -> Any:
        return self.matvec(v) if len(self._backend.arrays.shape(v)) == 1 else self.matmat(v)

    def dense(self) -> Any:
        """The matrix, ``(n, n)``, by ``n`` Hessian-vector products."""
        return self.matmat(self._backend.arrays.eye(self.shape[0], self._call.primals[0]))

    def _flat(self, leaves: Any) -> Any:
        a = self._backend.arrays
        return a.concat([a.reshape(x, (-1,)) for x in pytree.leaves(leaves)], 0)

    def trace(self, estimator: spec.Estimator = "exact", samples: int | None = None, key: Any = None) -> Any:
        """The trace (a scalar array), as :func:`hessian_trace` computes it."""
        with pytree.dict_order(self._backend.name):
            return curvature.hessian_trace(self._backend, self._f, self._argnums, estimator=estimator, samples=samples,
                                           key=key)(*self._primals)

    def diagonal(self, estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None) -> Any:
        """The diagonal, ``(n,)``, as :func:`hessian_diagonal` computes it."""
        with pytree.dict_order(self._backend.name):
            return self._flat(curvature.hessian_diagonal(self._backend, self._f, self._argnums, estimator=estimator,
                                                         samples=samples, key=key)(*self._primals))

    def estimate_trace(self, estimator: estimators.TraceEstimator = "xtrace", samples: int = 24, key: Any = 0) -> estimators.TraceEstimate:
        """The trace estimated from ``samples`` Hessian-vector products, with its standard error:
        ``"xtrace"`` (XTrace: every direction both builds a low-rank part and corrects it,
        NOTE [exchangeable trace estimators] in :mod:`crossgrad.transforms.estimators`),
        ``"xnystrace"`` (XNysTrace, for a positive semi-definite Hessian: the Nystrom part, one
        product per direction) or ``"hutchinson"``.  Random +-1 directions from ``key`` (an int
        seed, a jax key or a torch Generator; never a global generator).

        Returns ``TraceEstimate(estimate, standard_error, products)`` (Python floats).

        Example:
            >>> import torch, crossgrad as cg
            >>> H = cg.torch.hessian_operator(lambda x: (x ** 2).sum(), torch.ones(10))
            >>> round(H.estimate_trace("xtrace", samples=24).estimate, 6)
            20.0
        """
        name = f"{self.name}.estimate_trace"
        option_checks.check_choice(name, "estimator", estimator, estimators.ESTIMATORS)
        return estimators.estimate(estimator, *self._random_products(name, estimator, samples, key))

    def estimate_diagonal(self, estimator: estimators.DiagonalEstimator = "xdiag", samples: int = 24, key: Any = 0) -> estimators.DiagonalEstimate:
        """The diagonal, ``(n,)``, estimated from ``samples`` Hessian-vector products, with the
        standard error of each entry: ``"xdiag"`` (XDiag, the exchange of NOTE [exchangeable
        trace estimators] for diagonals) or ``"hutchinson"`` (the mean of ``v * (H v)``).

        Returns ``DiagonalEstimate(estimate, standard_error, products)``, the two arrays of the
        operator's framework and dtype.

        Example:
            >>> import torch, crossgrad as cg
            >>> H = cg.torch.hessian_operator(lambda x: (x ** 3).sum(), torch.tensor([1.0, 2.0]))
            >>> H.estimate_diagonal("xdiag", samples=8).estimate.round(decimals=4)
            tensor([ 6., 12.])
        """
        name = f"{self.name}.estimate_diagonal"
        option_checks.check_choice(name, "estimator", estimator, estimators.DIAGONAL_ESTIMATORS)
        mean, error, products = estimators.estimate_diagonal(estimator, *self._random_products(name, estimator,
                                                                                                samples, key))
        return estimators.DiagonalEstimate(self._array(mean), self._array(error), products)

    def _array(self, x: np.ndarray) -> Any:
        """A NumPy result as an array of the operator's framework and dtype, its shape kept
        (``ascontiguousarray`` makes a 0-d array 1-d)."""
        a, like = self._backend.arrays, self._call.primals[0]
        return a.reshape(a.cast_like(a.from_numpy(np.ascontiguousarray(x), like), like), np.shape(x))

    def _random_products(self, name: str, estimator: str, samples: int, key: Any
                         ) -> tuple[Callable[[np.ndarray], np.ndarray], np.ndarray]:
        """The products on NumPy matrices and the random +-1 directions ``samples`` buys."""
        option_checks.check_samples(name, samples)
        a = self._backend.arrays
        like = self._call.primals[0]
        value_checks.check_estimator_key(name, estimator, key, a.is_random_key(key))
        m = estimators.directions(estimator, samples)
        omega = np.asarray(a.to_numpy(a.random_signs(key, [(self.shape[0], m)], like)[0]), np.float64)
        apply = estimators.as_numpy_products(self.matmat, a.to_numpy, self._array)
        return apply, omega

    def spectral_density(self, steps: int = 30, samples: int = 8, key: Any = 0) -> spectra.SpectralDensity:
        """The spectral density by stochastic Lanczos quadrature (NOTE [stochastic lanczos
        quadrature] in :mod:`crossgrad.transforms.spectra`): ``steps`` Lanczos steps from each of
        ``samples`` random +-1 vectors drawn from ``key``, ``steps * samples`` products in all.

        Returns a :class:`~crossgrad.transforms.spectra.SpectralDensity`: ``nodes`` and
        ``weights`` (NumPy, ``(samples, steps)``), ``density(grid, width)`` and ``trace_of(g)``
        (``tr g(H)``: the trace, ``log det``...).

        Example:
            >>> import torch, crossgrad as cg
            >>> H = cg.torch.hessian_operator(lambda x: (x ** 4).sum(), torch.ones(50, dtype=torch.float64))
            >>> round(H.spectral_density(steps=5, samples=2).trace_of(lambda t: t), 6)
            600.0
        """
        name = f"{self.name}.spectral_density"
        for option, value in (("steps", steps), ("samples", samples)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise errors.OptionError(name, f"a positive int {option}", f"{option}={value!r}",
                                         f"Pass {option}=30 or so; more {option} resolve the density finer.")
        apply, omega = self._random_products(name, "hutchinson", samples, key)
        return spectra.lanczos_quadrature(apply, omega[:, :samples], steps)

    def eigenvalues(self, k: int = 6, iterations: int | None = None, key: Any = 0, *, which: str = "largest",
                    vectors: bool = False, progress: bool = False) -> Any:
        """``k`` eigenvalues, repeated ones as often as they occur (up to ``k``): ``which="largest"``
        (algebraic, descending), ``"smallest"`` (ascending) or ``"magnitude"`` (the largest
        absolute values, descending by them).  With ``vectors=True``, ``(values, vectors)``: the
        Ritz vectors, ``(n, k)``, one unit column per value.

        Block Lanczos with full reorthogonalization and a Rayleigh-Ritz step on the basis
        built: blocks of ``k`` directions (a single-vector Krylov space holds one copy of
        a repeated eigenvalue), started from random +-1 vectors drawn from ``key``; where
        a block falls into the space already spanned (an invariant subspace: breakdown),
        the basis restarts from coordinate directions orthogonal to it.  ``iterations``
        products in all (default ``max(2k + 20, 40)``, at most ``n``: exact at ``n``).  With
        ``progress=True`` the products done so far are printed to stderr after each block.
        """
        import numpy as np

        a = self._backend.arrays
        n = self.shape[0]
        if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
            raise errors.OptionError(self.name, f"1 <= k <= {n}", f"k={k!r}", "Ask for fewer eigenvalues.")
        option_checks.check_choice(f"{self.name}.eigenvalues", "which", which, ("largest", "smallest", "magnitude"))
        option_checks.check_bool(f"{self.name}.eigenvalues", "vectors", vectors)
        option_checks.check_bool(f"{self.name}.eigenvalues", "progress", progress)
        steps = min(n, iterations or max(2 * k + 20, 40))
        like = self._call.primals[0]
        dtype = a.to_numpy(like).dtype
        # A direction is new where reorthogonalization leaves this much of its norm.
        keep = 1e-8 if dtype == np.float64 else 1e-4
        block = a.random_signs(key, [(n, k)], like)[0]
        basis: list[Any] = []
        products: list[Any] = []
        restart = 0
        while len(basis) < steps:
            fresh: list[Any] = []
            for c in (block[:, i] for i in range(a.shape(block)[1])):
                before = float(a.to_numpy((c * c).sum())) ** 0.5
                for _ in range(2):  # twice: Lanczos loses orthogonality fast
                    for b in basis + fresh:
                        c = c - (c * b).sum() * b
                norm = float(a.to_numpy((c * c).sum())) ** 0.5
                if norm > keep * max(before, np.finfo(np.float64).tiny):
                    fresh.append(c / norm)
                if len(basis) + len(fresh) == steps:
                    break
            if not fresh:  # breakdown: the basis spans an invariant subspace
                rows = np.zeros((n, min(k, n)), dtype=dtype)
                for col in range(rows.shape[1]):
                    rows[(restart + col) % n, col] = 1.0
                restart += rows.shape[1]
                if restart > 2 * n:
                    break
                block = a.from_numpy(rows, like)
                continue
            columns = a.concat([a.reshape(q, (n, 1)) for q in fresh], 1)
            block = self._hvp_columns(columns)
            basis += fresh
            products += [block[:, i] for i in range(len(fresh))]
            if progress:
                print(f"{self.name}.eigenvalues: {len(basis)}/{steps} products", file=sys.stderr, flush=True)
        q = a.to_numpy(a.concat([a.reshape(v, (n, 1)) for v in basis], 1)).astype(np.float64)
        hq = a.to_numpy(a.concat([a.reshape(v, (n, 1)) for v in products], 1)).astype(np.float64)
        t = q.T @ hq
        ritz, coordinates = np.linalg.eigh((t + t.T) / 2)
        # Lanczos converges at both ends of the spectrum: the extremes are read from one basis.
        order = {"largest": np.argsort(-ritz), "smallest": np.argsort(ritz),
                 "magnitude": np.argsort(-np.abs(ritz))}[which][:k]
        values = a.from_numpy(np.ascontiguousarray(ritz[order]).astype(dtype), like)
        if not vectors:
            return values
        return values, a.from_numpy(np.ascontiguousarray(q @ coordinates[:, order]).astype(dtype), like)

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` on NumPy vectors (CPU), for scipy's
        solvers and eigensolvers."""
        try:
            from scipy.sparse.linalg import LinearOperator
        except ImportError as exc:
            raise errors.BackendUnavailableError(
                self.name, "scipy to be importable for to_scipy()", f"ImportError: {exc}",
                "Install it with: pip install scipy") from exc
        a = self._backend.arrays
        like = self._call.primals[0]

        def matvec(v: Any) -> Any:
            import numpy as np

            x = a.from_numpy(np.ascontiguousarray(v, dtype=a.to_numpy(like).dtype).reshape(-1), like)
            return a.to_numpy(self._hvp(x))

        def matmat(v: Any) -> Any:
            import numpy as np

            x = a.from_numpy(np.ascontiguousarray(v, dtype=a.to_numpy(like).dtype), like)
            return a.to_numpy(self._hvp_columns(x))

        return LinearOperator(self.shape, matvec=matvec, rmatvec=matvec, matmat=matmat,
                              dtype=a.to_numpy(like).dtype)


def hessian_operator_plan(backend: Backend, f: Callable[..., Any], *primals: Any,
                          argnums: spec.Argnums = 0) -> OperatorPlan:
    """The plan of :func:`hessian_operator`'s products on these arguments (its checks
    included); no product is computed."""
    return hessian_operator(backend, f, *primals, argnums=argnums).plan()


@planned_by(hessian_operator_plan)
def hessian_operator(backend: Backend, f: Callable[..., Any], *primals: Any, argnums: spec.Argnums = 0) -> HessianOperator:
    """The Hessian of a scalar ``f`` at ``primals`` as a :class:`HessianOperator`
    (``shape``, ``dtype``, ``@``, ``matvec``, ``matmat``, ``dense()``, ``trace()``,
    ``diagonal()``, ``eigenvalues()``, ``to_scipy()``), never formed.

    Example:
        >>> import torch, crossgrad as cg
        >>> H = cg.torch.hessian_operator(lambda x: (x ** 3).sum(), torch.tensor([1.0, 2.0]))
        >>> H.dense()
        tensor([[ 6.,  0.],
                [ 0., 12.]])
    """
    option_checks.check_callable("hessian_operator", f)
    option_checks.validate_options("hessian_operator", argnums=argnums)
    if not primals:
        raise errors.OptionError("hessian_operator", "at least one primal (the point)", "no primals",
                                 "Pass the point: hessian_operator(f, x).")
    return HessianOperator(backend, f, primals, argnums)
