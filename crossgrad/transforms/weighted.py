"""Weighted Laplacians: ``trace(C H)`` for a constant or per-point coefficient matrix ``C``,
composed from the Laplacian.

NOTE [weighted laplacian]
General linear second-order operators (anisotropic diffusion, Fokker-Planck's
``sum_ij D_ij d2 f / dx_i dx_j``) are ``trace(C H)``.  Only the symmetric part of ``C`` counts
(``H`` is symmetric), and it splits by its eigenvalues into ``L+ L+^T - L- L-^T``; then
``trace(C H) = lap g+ - lap g-`` where ``g(y) = f(x + L y)`` at ``y = 0``: each part is an
ordinary Laplacian (the collapsed Taylor route, or its estimators) of ``f`` composed with a
linear map, pushing ``rank(C)`` directions in all instead of ``n``.  The factors are made
once, when the transform is made.

NOTE [per-point coefficients]
A coefficient matrix that changes with the point (``C(x)``: a state-dependent diffusion)
cannot be factored once, and an eigendecomposition per point under a trace has ranks that
change from point to point.  Polarization needs none: with ``L+- = (a I +- S / a) / 2``
(``S`` the symmetric part of ``C``, any ``a > 0``), ``tr(L+^T H L+) - tr(L-^T H L-) =
tr(S H)``, so ``trace(C H)`` is again two Laplacians of ``y -> f(x + L y)``, of ``n``
directions each, with ``L+-`` an argument computed from ``C`` at the point (not
differentiated).  ``a^2`` is ``C``'s root-mean-square entry times ``sqrt(n)`` so that both
parts are of ``S``'s scale: the difference then loses about as much as a Laplacian does.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from crossgrad import errors, option_checks, spec, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms import curvature


@dataclasses.dataclass(frozen=True)
class WeightedPlan:
    """What a weighted Laplacian does for one argument signature (NOTE [plans] in
    :mod:`crossgrad.transforms.jacobians`): how ``C`` is split (``"constant"``: by its
    eigenvalues, once, NOTE [weighted laplacian]; ``"per point"``: by polarization at each
    point, NOTE [per-point coefficients]; ``"zero"``), the Laplacians that are summed (each
    with its sign, its directions and its own plan), and why."""

    transform: str
    coefficients: str
    parts: tuple[tuple[float, int, Any], ...]
    why: str

    def __str__(self) -> str:
        terms = ", ".join(f"{'+' if sign > 0 else '-'} {rows} directions" for sign, rows, _ in self.parts) or "none"
        inner = "".join(f"; {'+' if sign > 0 else '-'} {plan}" for sign, _, plan in self.parts)
        return f"{self.transform}: {self.coefficients} coefficients, Laplacians {terms}; {self.why}{inner}"


def _factors(name: str, coefficients: Any) -> tuple[int, list[np.ndarray]]:
    """The size ``n`` and the factors ``L+``, ``L-`` (``n x r``) of ``C``'s symmetric part."""
    root = type(coefficients).__module__.partition(".")[0]
    if root == "torch":
        c = coefficients.detach().cpu().double().numpy()
    else:
        try:
            c = np.asarray(coefficients, dtype=np.float64)
        except (TypeError, ValueError):
            c = None
    if c is None or c.ndim != 2 or c.shape[0] != c.shape[1]:
        got = f"an array of shape {tuple(c.shape)}" if c is not None else f"a {type(coefficients).__name__}"
        raise errors.OptionError(name, "a square coefficient matrix C (n x n, n the differentiated argument's size)",
                                 got, "Pass the matrix of the operator sum_ij C_ij d2f/dx_i dx_j.")
    s, v = np.linalg.eigh((c + c.T) / 2)
    tol = max(c.shape[0], 1) * np.finfo(np.float64).eps * max(float(np.abs(s).max(initial=0.0)), 1e-300)
    parts = [v[:, s > tol] * np.sqrt(s[s > tol]), v[:, s < -tol] * np.sqrt(-s[s < -tol])]
    return c.shape[0], parts


def _check_argnums(name: str, argnums: Any) -> None:
    if not (isinstance(argnums, int) and not isinstance(argnums, bool)):
        raise errors.ArgnumsTypeError(name, "one differentiated argument (an int argnums)", f"argnums={argnums!r}",
                                      "Pass argnums=k; flatten several inputs into one array for their joint operator.")


def _axes(in_axes: Any, nargs: int) -> tuple[Any, ...]:
    return tuple(in_axes) if isinstance(in_axes, (tuple, list)) else (in_axes,) * nargs


def _check_size(name: str, size: int, got: tuple[int, ...]) -> None:
    if got[-2:] != (size, size):
        raise errors.OptionError(name, f"coefficients of shape ({size}, {size}) for an argument of {size} elements",
                                 f"coefficients of shape {got}", "Give C over the argument's elements, flattened.")


@dataclasses.dataclass(frozen=True)
class _Options:
    """A weighted Laplacian's validated options: what each summed Laplacian is made with."""

    name: str
    f: Callable[..., Any]
    argnums: int
    in_axes: Any  # None: one point; else the batched form's in_axes
    estimator: spec.ExactOrHutchinson
    samples: int | None
    key: Any
    chunk_size: Any

    def differentiated(self, arrays: Any, args: tuple[Any, ...]) -> tuple[Any, tuple[int, ...], int]:
        """The differentiated argument, the batch in front of it (``()`` at one point) and one
        sample's number of elements."""
        x = args[value_checks.normalize_argnums(self.name, self.argnums, len(args))[0][0]]
        lead = () if self.in_axes is None else (arrays.shape(x)[0],)
        return x, lead, arrays.size(x) // max(int(np.prod(lead)), 1)


def _moved_laplacian(backend: Backend, o: _Options, nargs: int, lin: Any = None) -> Callable[..., Any]:
    """The Laplacian in ``y`` of ``y -> f(x + L y)`` at each point (the batched form written
    per sample).  ``lin``: ``L``, fixed; None: ``L`` is the second argument of each call
    (NOTE [per-point coefficients])."""
    arrays, f = backend.arrays, o.f
    k = value_checks.normalize_argnums(o.name, o.argnums, nargs)[0][0]
    first = 1 if lin is None else 0  # where f's arguments start

    def g(y: Any, *rest: Any, **kwargs: Any) -> Any:
        m, args = (rest[0], rest[1:]) if lin is None else (lin, rest)
        x = args[k]
        return f(*args[:k], x + arrays.reshape(m @ y, arrays.shape(x)), *args[k + 1:], **kwargs)

    if o.in_axes is None:
        return curvature.laplacian(backend, g, 0, estimator=o.estimator, samples=o.samples, key=o.key,
                                   chunk_size=o.chunk_size)
    axes = (0, *(0,) * first, *_axes(o.in_axes, nargs))
    return curvature.batched_laplacian(backend, g, 0, axes, estimator=o.estimator, samples=o.samples, key=o.key,
                                       basis_chunk_size=o.chunk_size)


def _per_point(backend: Backend, o: _Options, coefficients: Any) -> Callable[..., Any]:
    """``trace(C H)`` with ``C`` a function of the arguments (or, batched, one matrix per
    sample): NOTE [per-point coefficients]."""
    arrays = backend.arrays
    made: dict[int, Callable[..., Any]] = {}  # the one cache: the Laplacian per number of arguments

    def laplacian_for(nargs: int) -> Callable[..., Any]:
        if nargs not in made:
            made[nargs] = _moved_laplacian(backend, o, nargs)
        return made[nargs]

    def transformed(*args: Any, **kwargs: Any) -> Any:
        x, lead, n = o.differentiated(arrays, args)
        c = _matrices(backend, o, coefficients, args, kwargs)
        _check_size(o.name, n, tuple(arrays.shape(c)))
        if tuple(arrays.shape(c)[:-2]) != lead:
            raise errors.OptionError(o.name, f"one {n} x {n} coefficient matrix per sample (shape {(*lead, n, n)})",
                                     f"coefficients of shape {tuple(arrays.shape(c))}",
                                     "Return C for one sample from the coefficient function, or pass a (B, n, n) array.")
        s = (c + arrays.transpose(c, (1, 0) if not lead else (0, 2, 1))) / 2
        rms = ((s * s).sum(axis=(-2, -1)) / n) ** 0.5
        a = (rms * n ** 0.5 + (rms == 0)) ** 0.5  # a^2 of S's scale; 1 where C is zero
        a = arrays.reshape(a, (*lead, 1, 1))
        eye, y = arrays.eye(n, x), arrays.zeros((*lead, n), x)
        lap = laplacian_for(len(args))
        return lap(y, (a * eye + s / a) / 2, *args, **kwargs) - lap(y, (a * eye - s / a) / 2, *args, **kwargs)

    def plan(*args: Any, **kwargs: Any) -> WeightedPlan:
        """The plan a call with these arguments follows (NOTE [plans]); C is not evaluated
        (the Laplacians' plans depend on the shapes only)."""
        x, lead, n = o.differentiated(arrays, args)
        inner = laplacian_for(len(args)).plan(arrays.zeros((*lead, n), x), arrays.zeros((*lead, n, n), x),  # type: ignore[attr-defined]
                                              *args, **kwargs)
        return WeightedPlan(o.name, "per point", ((1.0, n, inner), (-1.0, n, inner)),
                            "C given as a function (or one matrix per sample): two Laplacians of y -> f(x + L y), "
                            "L from C at the point (NOTE [per-point coefficients])")

    transformed.plan = plan  # type: ignore[attr-defined]
    return transformed


def _matrices(backend: Backend, o: _Options, coefficients: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``C`` at the point (one per sample, batched), a given array cast like the argument."""
    if not callable(coefficients):
        return backend.arrays.cast_like(backend.arrays.as_array(coefficients), args[o.argnums])
    if o.in_axes is None:
        return coefficients(*args, **kwargs)
    return backend.primitives.vmap(lambda *a: coefficients(*a, **kwargs), _axes(o.in_axes, len(args)), 0,
                                   "different")(*args)


@dataclasses.dataclass(frozen=True)
class _Parts:
    """The Laplacians a constant ``C`` sums, made for one number of arguments, dtype and
    device: ``(sign, rank, Laplacian of y -> f(x + L y))``; for ``C = 0`` none, and the
    Laplacian of ``f`` whose zeros give the output's shape."""

    parts: tuple[tuple[float, int, Callable[..., Any]], ...]
    zero: Callable[..., Any] | None


def _weighted(backend: Backend, o: _Options, coefficients: Any) -> Callable[..., Any]:
    _check_argnums(o.name, o.argnums)
    if callable(coefficients) or (o.in_axes is not None and len(getattr(coefficients, "shape", ())) == 3):
        return _per_point(backend, o, coefficients)
    n, factors = _factors(o.name, coefficients)
    arrays = backend.arrays
    made: dict[Any, _Parts] = {}  # the one cache

    def parts_for(nargs: int, like: Any) -> _Parts:
        key_ = (nargs, arrays.dtype_name(like), str(getattr(like, "device", "")))
        if key_ not in made:
            # Each factor keeps its sign (L+ adds, L- subtracts); an empty one adds nothing.
            parts = tuple((sign, factor.shape[1], _moved_laplacian(backend, o, nargs, arrays.cast_like(
                arrays.from_numpy(np.ascontiguousarray(factor), like), like)))
                for sign, factor in zip((1.0, -1.0), factors) if factor.shape[1])
            zero = None if parts else curvature.laplacian(backend, o.f, o.argnums) if o.in_axes is None else \
                curvature.batched_laplacian(backend, o.f, o.argnums, o.in_axes)
            made[key_] = _Parts(parts, zero)
        return made[key_]

    def transformed(*args: Any, **kwargs: Any) -> Any:
        x, lead, size = o.differentiated(arrays, args)
        _check_size(o.name, size, (n, n))
        known = parts_for(len(args), x)
        if known.zero is not None:  # C = 0: a zero operator, shaped like the Laplacian
            return known.zero(*args, **kwargs) * 0.0
        total = None
        for sign, rank, lap in known.parts:
            value = lap(arrays.zeros((*lead, rank), x), *args, **kwargs)
            total = value * sign if total is None else total + sign * value
        return total

    def plan(*args: Any, **kwargs: Any) -> WeightedPlan:
        """The plan a call with these arguments follows (NOTE [plans])."""
        x, lead, _ = o.differentiated(arrays, args)
        parts = tuple((sign, rank, lap.plan(arrays.zeros((*lead, rank), x), *args, **kwargs))  # type: ignore[attr-defined]
                      for sign, rank, lap in parts_for(len(args), x).parts)
        if not parts:
            return WeightedPlan(o.name, "zero", (), "C = 0: zeros shaped like the Laplacian")
        ranks = " and ".join(str(r) for _, r, _ in parts)
        return WeightedPlan(o.name, "constant", parts, f"C factored once by its eigenvalues: Laplacians of "
                            f"y -> f(x + L y) over rank {ranks} directions of {n} (NOTE [weighted laplacian])")

    transformed.plan = plan  # type: ignore[attr-defined]
    return transformed


def weighted_laplacian(backend: Backend, f: Callable[..., Any], coefficients: Any, argnums: int = 0,
                       estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None,
                       chunk_size: int | str | None = None) -> Callable[..., Any]:
    """``trace(C H)``: the second-order operator ``sum_ij C_ij d2 f / dx_i dx_j`` of ``f`` in
    argument ``argnums`` (one array; ``C``: ``n x n`` over its elements, flattened), one value
    per output element.  ``coefficients`` is a constant matrix (exact by collapsed Taylor over
    ``rank(C)`` directions: NOTE [weighted laplacian]) or a function of ``f``'s arguments
    returning the matrix at the point (a state-dependent diffusion; ``2n`` directions, ``C``
    not differentiated: NOTE [per-point coefficients]).  Estimated with
    ``estimator="hutchinson"``, ``samples``, ``key``, as :func:`laplacian`.

    Example:
        >>> import torch, crossgrad as cg
        >>> C = torch.tensor([[2.0, 1.0], [1.0, 0.0]])
        >>> cg.torch.weighted_laplacian(lambda x: x[0] ** 2 * x[1], C)(torch.tensor([1.0, 3.0]))
        tensor(16.)
    """
    name = "weighted_laplacian"
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, estimator=estimator, samples=samples, chunk_size=chunk_size)
    value_checks.check_estimator_key(name, estimator, key, backend.arrays.is_random_key(key))
    return _weighted(backend, _Options(name, f, argnums, None, estimator, samples, key, chunk_size), coefficients)


def batched_weighted_laplacian(backend: Backend, f: Callable[..., Any], coefficients: Any, argnums: int = 0,
                               in_axes: Any = 0, estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None,
                               *, basis_chunk_size: int | None = None) -> Callable[..., Any]:
    """Per-sample ``trace(C H)`` of a batch, shape ``(B, *out)``: one ``n x n`` ``C`` for all
    samples, a ``(B, n, n)`` array (one per sample), or a function of one sample's arguments
    returning its ``C`` (as :func:`weighted_laplacian`'s).  ``f`` is written for one sample,
    ``in_axes`` as :func:`batched_laplacian`'s; the differentiated argument batched on axis 0.

    Example:
        >>> import torch, crossgrad as cg
        >>> C = torch.eye(2)
        >>> cg.torch.batched_weighted_laplacian(lambda x: (x ** 3).sum(), C)(torch.ones(4, 2))
        tensor([12., 12., 12., 12.])
        >>> D = lambda x: torch.diag(x ** 2)                  # a diffusion that varies in space
        >>> cg.torch.batched_weighted_laplacian(lambda x: (x ** 3).sum(), D)(torch.ones(4, 2)).round(decimals=4)
        tensor([12., 12., 12., 12.])
    """
    name = "batched_weighted_laplacian"
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, in_axes=in_axes, estimator=estimator, samples=samples, basis_chunk_size=basis_chunk_size)
    value_checks.check_estimator_key(name, estimator, key, backend.arrays.is_random_key(key))
    return _weighted(backend, _Options(name, f, argnums, in_axes, estimator, samples, key, basis_chunk_size),
                     coefficients)
