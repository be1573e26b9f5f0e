"""The biharmonic ``lap(lap f)``, by fourth-order Taylor coefficients pushed forward.

Exact: ``n**2`` directions (the coordinates and their pairwise sums and differences),
weighted, their fourth-order rows summed at every operation (NOTE [fourth-order
taylor], :mod:`crossgrad.transforms.taylor4`).  Estimated: Gaussian directions, ``E D4[v]
= 3 lap2 f``.  Batched forms as for the Laplacian (NOTE [batched curvature on jax]).

NOTE [biharmonic check]: as the Laplacian's Taylor check (NOTE [taylor check]), the first
call of each argument signature compares one pushed direction against four nested
reverse-mode derivatives of a random combination of the outputs; a disagreement sends
that signature to the nested route (logged).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from crossgrad import errors, option_checks, pytree, spec, tolerances, value_checks
from crossgrad.backends.base import Backend
from crossgrad.backends.recording import Unrecorded
from crossgrad.transforms import adjoint, policy, taylor, taylor4, taylor_check
from crossgrad.transforms.call import Call, Memo
from crossgrad.transforms.curvature import CurvaturePlan
from crossgrad.transforms.directions import DEFAULT_SAMPLES, Point
from crossgrad.transforms.vectorize import vmap_of

log = logging.getLogger("crossgrad")

ESTIMATORS = ("exact", "hutchinson")


def exact_directions(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n**2`` directions and weights whose weighted fourth derivatives sum to the
    biharmonic (NOTE [fourth-order taylor]): ``(rows, n)`` and ``(rows,)``, float64."""
    rows, weights = [np.eye(n)], [np.full(n, 1.0 - (n - 1) / 3.0)]
    i, j = np.triu_indices(n, 1)
    for sign in (1.0, -1.0):
        m = np.zeros((len(i), n))
        m[np.arange(len(i)), i] = 1.0
        m[np.arange(len(i)), j] = sign
        rows.append(m)
        weights.append(np.full(len(i), 1.0 / 6.0))
    return np.concatenate(rows), np.concatenate(weights)


def biharmonic(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, estimator: spec.ExactOrHutchinson = "exact",
               samples: int | None = None, key: Any = None, chunk_size: int | None = None) -> Callable[..., Any]:
    """The biharmonic of ``f``: ``sum_ij d4 f / dx_i2 dx_j2`` (the Laplacian of the
    Laplacian), without nesting Laplacians.

    Returns a function with ``f``'s arguments returning one value per output element (each
    output leaf's shape), over every element of the differentiated arguments together.
    ``estimator="exact"`` pushes ``n**2`` fourth-order directions (NOTE [fourth-order
    taylor]); ``"hutchinson"`` averages ``D4[v] / 3`` over ``samples`` Gaussian directions
    (unbiased; ``key`` as :func:`laplacian`'s).  ``chunk_size``: directions pushed at once.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.biharmonic(lambda x: (x ** 2).sum() ** 2)(torch.tensor([1.0, 2.0]))
        tensor(64.)
    """
    name = "biharmonic"
    _validate(backend, name, f, argnums, estimator, samples, key, chunk_size)
    return _biharmonic(backend, name, f, argnums, None, estimator, samples, key, chunk_size)


def batched_biharmonic(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0,
                       estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None, *,
                       basis_chunk_size: int | None = None) -> Callable[..., Any]:
    """Per-sample biharmonics: ``vmap(biharmonic(f, argnums, ...), in_axes)``, shape
    ``(B, *out)``; ``f`` written for one sample, ``in_axes`` as
    :func:`batched_laplacian`'s, ``basis_chunk_size`` the directions pushed at once.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.batched_biharmonic(lambda x: (x ** 4).sum())(torch.ones(3, 2))
        tensor([48., 48., 48.])
    """
    name = "batched_biharmonic"
    _validate(backend, name, f, argnums, estimator, samples, key, basis_chunk_size, in_axes)
    return _biharmonic(backend, name, f, argnums, in_axes, estimator, samples, key, basis_chunk_size)


def _validate(backend: Backend, name: str, f: Callable[..., Any], argnums: Any, estimator: str, samples: Any, key: Any,
              chunk_size: Any, in_axes: Any = None) -> None:
    option_checks.check_callable(name, f)
    option_checks.check_choice(name, "estimator", estimator, ESTIMATORS)
    option_checks.validate_options(name, argnums=argnums, samples=samples, **(
        {"in_axes": in_axes, "basis_chunk_size": chunk_size} if in_axes is not None else {"chunk_size": chunk_size}))
    if chunk_size == "auto":
        raise errors.OptionError(name, "an int or None for the directions pushed at once", "'auto'",
                                 "Pass an int (directions per pass) or None (all at once).")
    value_checks.check_estimator_key(name, estimator, key, backend.arrays.is_random_key(key))


def _biharmonic(backend: Backend, name: str, f: Callable[..., Any], argnums: Any, in_axes: Any, estimator: str,
                samples: int | None, key: Any, chunk_size: int | None) -> Callable[..., Any]:
    bih = _Biharmonic(backend, name, f, argnums, in_axes, estimator, samples, key, chunk_size)

    def transformed(*args: Any, **kwargs: Any) -> Any:
        known, point, verdict = bih.where(args, kwargs)
        if point is None:
            return known.outside(*args, **kwargs)  # type: ignore[misc]
        fourth = _fourth(backend, name, point, estimator, samples, key, chunk_size, verdict)
        return pytree.unflatten(point.call.output_structure(), fourth)  # known once f has run

    def plan(*args: Any, **kwargs: Any) -> CurvaturePlan:
        """The plan a call with these arguments follows (NOTE [plans]): f evaluated once to
        record its program, the first call's check run where it has not been."""
        known, point, verdict = bih.where(args, kwargs)
        if point is None:
            return CurvaturePlan(name, "outside", estimator, known.batch, known.why)
        rec, why = fourth_route(backend, point.call, verdict if point.n else None)
        return CurvaturePlan(name, "taylor" if rec is not None else "nested", estimator, known.batch, why)

    transformed.plan = plan  # type: ignore[attr-defined]
    return transformed


@dataclasses.dataclass(frozen=True)
class _Where:
    """What a biharmonic knows of one argument signature: each differentiated leaf's batch
    axis and the batch size (None for one point), and, where the single-point form is mapped
    over the batch, that mapped function and why."""

    axes: tuple[int | None, ...] | None
    batch: int | None
    why: str = ""
    outside: Callable[..., Any] | None = None


class _Biharmonic:
    """One biharmonic transform: its options and its one cache, a :class:`_Where` per argument
    signature and, under its own key, the signature's first-call verdict (NOTE [biharmonic
    check])."""

    def __init__(self, backend: Backend, name: str, f: Callable[..., Any], argnums: Any, in_axes: Any, estimator: str,
                 samples: int | None, key: Any, chunk_size: int | None):
        self.backend, self.name, self.f, self.argnums, self.in_axes = backend, name, f, argnums, in_axes
        self.estimator, self.samples, self.key, self.chunk_size = estimator, samples, key, chunk_size
        inside = in_axes is None or policy.batched_curvature_inside(backend.name, estimator)
        self.batched_f = vmap_of(backend, name, f, in_axes, 0, None, "auto") if in_axes is not None and inside else None
        self.known = Memo()

    def where(self, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> tuple[_Where, Point | None, tuple[Memo, Any]]:
        """The signature's record, the point the directions are pushed at (None where the
        single-point form is mapped over the batch) and the verdict's memo and key."""
        sig = Memo.key(args)
        known: _Where | None = self.known.get(sig)
        verdict = (self.known, None if sig is None else ("biharmonic check", sig))
        if known is None:
            known = self.known.put(sig, self._decide(Call(self.name, self.backend, self.f, args, kwargs, self.argnums,
                                                          False)))
        if known.outside is not None:
            return known, None, verdict
        g = self.f if self.batched_f is None else self.batched_f
        call = Call(self.name, self.backend, g, args, kwargs, self.argnums, False, checked=True)
        axes = list(known.axes) if known.axes is not None else [None] * len(call.primals)
        return known, Point(self.backend, call, axes, known.batch), verdict

    def _decide(self, call: Call) -> _Where:
        if self.in_axes is None:
            return _Where(None, None)
        axes, batch = call.batch_layout(self.in_axes)
        why = ("a differentiated argument shared by the batch" if None in axes else "an empty batch" if batch == 0
               else f"policy.batched_curvature_inside: the {self.estimator} estimator on {self.backend.name}"
               if self.batched_f is None else None)
        if why is None:
            return _Where(tuple(axes), batch)
        one = _biharmonic(self.backend, self.name, self.f, self.argnums, None, self.estimator, self.samples, self.key,
                          self.chunk_size)
        return _Where(tuple(axes), batch, f"{why}: vmap of the single-point form",
                      vmap_of(self.backend, self.name, one, self.in_axes, 0, None, "auto"))


def fourth_route(backend: Backend, call: Call, verdict: tuple[Memo, Any] | None) -> tuple[Any, str]:
    """The recorded program where this call takes the fourth-order Taylor route (None: the
    nested route), and why; with a verdict memo the first call's check (NOTE [biharmonic
    check]) decides, and the memo keeps its verdict for the signature's later calls and plans."""
    try:
        rec = backend.taylor.record(call.flat, call.primals)
    except Unrecorded as why:
        return None, f"nested reverse-mode derivatives, the exact route: the program cannot be recorded ({why})"
    if verdict is None:
        return rec, "fourth-order Taylor coefficients through the recorded program (NOTE [fourth-order taylor])"
    agrees = taylor_check.remembered(verdict, lambda: _agrees(backend, rec, call))
    if agrees is False:
        return None, "nested reverse-mode derivatives: the Taylor route disagreed with them (NOTE [biharmonic check])"
    checked = "checked against nested derivatives" if agrees else "not checkable here (abstract values)"
    return rec, f"fourth-order Taylor coefficients through the recorded program, {checked} (NOTE [biharmonic check])"


def _directions(backend: Backend, point: Point, estimator: str, samples: int | None, key: Any) -> tuple[Any, Any, int]:
    """The directions (one array per differentiated leaf), their weights and count."""
    a, like = backend.arrays, point.like
    if estimator == "exact":
        m, w = exact_directions(point.n)
        rows = m.shape[0]
        mat = a.cast_like(a.from_numpy(m, like), like)
        if point.batch is not None:
            mat = a.broadcast_to(a.reshape(mat, (rows, 1, point.n)), (rows, point.batch, point.n))
    else:
        rows = samples or DEFAULT_SAMPLES
        shape = (rows, point.n) if point.batch is None else (rows, point.batch, point.n)
        mat = a.random_normal(key, [shape], like)[0]
        w = np.full(rows, 1.0 / (3.0 * rows))
    return point.from_matrix(mat), a.cast_like(a.from_numpy(w, like), like), rows


def _fourth(backend: Backend, name: str, point: Point, estimator: str, samples: int | None, key: Any,
            chunk_size: int | None, verdict: tuple[Memo, Any]) -> list[Any]:
    """The weighted fourth-order coefficients of the output leaves at ``point``."""
    a, call = backend.arrays, point.call
    # No coordinate: nothing to check, the result is zero.
    rec, why = fourth_route(backend, call, verdict if point.n else None)
    if rec is None:
        log.info("%s: %s", name, why)
    values = rec.values if rec is not None else None
    if values is not None:
        shapes = [(tuple(a.shape(v)), a.dtype_name(v)) for v in values]
    elif rec is not None and rec.types is not None:  # jax records without computing, and knows the types
        shapes = list(rec.types)
    else:
        shapes = [(tuple(s), d) for s, _, d in backend.primitives.output_shapes(call.flat, call.primals)]
    value_checks.check_float_outputs(name, [d for _, d in shapes])
    if point.n == 0:
        return [a.zeros(s, point.like) for s, _ in shapes]
    directions, weights, rows = _directions(backend, point, estimator, samples, key)
    size = chunk_size or rows
    parts = []
    for lo in range(0, rows, size):
        hi = min(rows, lo + size)
        d = [a.slice_axis(x, lo, hi, 0) for x in directions]
        w = a.slice_axis(weights, lo, hi, 0)
        if rec is not None:
            parts.append(taylor4.push(backend, rec, call.primals, d, hi - lo, w)[1])
        else:
            parts.append(taylor4.nested(backend, call.flat, call.primals, d, hi - lo, w))
    return [taylor.sum_of(list(col)) for col in zip(*parts)]


def _agrees(backend: Backend, rec: Any, call: Call) -> bool | None:
    """NOTE [biharmonic check]: one random direction pushed against nested derivatives of
    a random combination of the outputs; None where it cannot tell."""
    a = backend.arrays
    primals = call.primals
    if any(a.under_transform(x) for x in primals):
        return None
    like = primals[0]
    v = adjoint.directions(a, 5, [a.shape(x) for x in primals], like)
    try:
        with a.preserved_random_state(like):
            one = a.ones_like(a.zeros((1,), like))
            _, pushed = taylor4.push(backend, rec, primals, [a.reshape(x, (1, *a.shape(x))) for x in v], 1, one)
            if any(p is None or a.dtype_name(p) not in tolerances.TABLE for p in pushed):
                return None
            u = adjoint.directions(a, 6, [a.shape(p) for p in pushed], pushed[0])

            def combined(*z: Any) -> tuple[Any, ...]:
                return (taylor.sum_of([(ui * o).sum() for ui, o in zip(u, call.flat(*z))]),)

            exact = taylor4.nested(backend, combined, primals, [a.reshape(x, (1, *a.shape(x))) for x in v], 1, one)[0]
    except Exception as exc:
        log.info("biharmonic check skipped: %s: %s", type(exc).__name__, str(exc).splitlines()[:1])
        return None
    got = sum(float(a.to_numpy((ui * p).sum())) for ui, p in zip(u, pushed))
    want = float(a.to_numpy(exact))
    scale = sum(float(a.to_numpy(abs(ui * p).sum())) for ui, p in zip(u, pushed)) + abs(want)
    tol = tolerances.identity({a.dtype_name(p) for p in pushed})
    return bool(abs(got - want) <= 100 * tol * max(scale, 1e-30))
