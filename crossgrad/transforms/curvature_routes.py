"""The curvature transforms' routes for one call: the Taylor route (second-order
coefficients pushed through the recorded program, NOTE [collapsed taylor]) with its
first-call check, the exact nested route where it cannot serve, the estimators (Hutchinson,
Hutch++) and the baseline through the framework's own Hessian.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from crossgrad import memory, pytree, value_checks
from crossgrad.backends.base import Backend
from crossgrad.backends.recording import Unrecorded
from crossgrad.transforms import taylor, taylor_check
from crossgrad.transforms.call import Call, Memo
from crossgrad.transforms.directions import Point
from crossgrad.transforms.hessian_vector import hessian_products

log = logging.getLogger("crossgrad")


def outputs_then_aux(call: Call, found: dict[str, Any]) -> Callable[..., list[Any]]:
    """The call as a function of its leaves returning the output leaves, then the aux's;
    ``found`` gets their count (``"outputs"``) and the aux's structure (``"aux"``)."""

    def flat(*leaves: Any) -> list[Any]:
        out = call.flat(*leaves)
        if not call.has_aux:
            found["outputs"] = len(out)
            return list(out)
        aux_leaves, found["aux"] = pytree.flatten(out[1])
        found["outputs"] = len(out[0])
        return [*out[0], *aux_leaves]

    return flat


def taylor_route(backend: Backend, call: Call, verdict: tuple[Memo, Any] | None,
                 flat: Callable[..., list[Any]] | None = None, found: dict[str, Any] | None = None) -> tuple[Any, str]:
    """The recorded program where this call takes the Taylor route (None: the nested
    route), and why.  The program is recorded (one evaluation of f, no derivative); with a
    verdict memo (``impl="auto"``) the first call's check (NOTE [taylor check]) decides, and
    the memo keeps its verdict for every later call and plan of the signature.  The plan and
    the route both ask here, so they cannot decide apart."""
    found = {} if found is None else found
    flat = outputs_then_aux(call, found) if flat is None else flat
    try:
        rec = backend.taylor.record(flat, call.primals)
    except Unrecorded as why:
        return None, f"nested Hessian-vector products, the exact route: the program cannot be recorded ({why})"
    if verdict is None:
        return rec, "second-order Taylor coefficients through the recorded program (unchecked: impl='composed')"
    agrees = taylor_check.remembered(verdict, lambda: taylor_check.agrees(backend, rec, call, found["outputs"]))
    if agrees is False:
        return None, "nested Hessian-vector products: the Taylor route disagreed with them (NOTE [taylor check])"
    checked = "checked against Hessian-vector products" if agrees else "not checkable here (abstract values)"
    return rec, f"second-order Taylor coefficients through the recorded program, {checked} (NOTE [taylor check])"


def composed(backend: Backend, name: str, call: Call, point: Point, what: str, estimator: str, rows: int,
             key: Any, chunk_size: Any, verdict: tuple[Memo, Any] | None = None) -> Any:
    """The trace (``what="trace"``) or diagonal of each output's Hessian at one call, by the
    Taylor route or, where it cannot serve, nested Hessian-vector products; ``estimator``
    ``"exact"`` (``point.n`` basis directions), ``"hutchinson"`` or ``"hutch++"`` (``rows``
    random ones).  With the call's aux as ``(result, aux)``."""
    ev = _Evaluation(backend, call, point, chunk_size, verdict)
    value_checks.check_float_outputs(name, [d for _, d in ev.outputs()])
    if point.n == 0:  # no coordinate: a zero trace, an empty diagonal
        if ev.values is None and call.has_aux:
            ev.values = ev.flat(*call.primals)
        return _without_coordinates(backend, call, what, [s for s, _ in ev.outputs()], ev.values, ev.found)
    a = backend.arrays
    if what == "trace":
        if estimator == "exact":
            second = ev.push(point.basis(0, point.n), point.n, None, True)
        elif estimator == "hutchinson":
            second = ev.push(point.signs(key, rows)[0], rows, _constant(a, 1.0 / rows, rows, point.like), True)
        else:
            value_checks.check_scalar_estimator(name, estimator, ev.sample_shapes())
            second = [_hutch_pp(backend, call, point, ev.push, key, rows)]
        result = pytree.unflatten(call.output_structure(), second)
    else:
        if estimator == "exact":
            per_direction = ev.push(point.basis(0, point.n), point.n, None, False)
            blocks = [[_diagonal_block(a, d, point, i) for i in range(len(point.sizes))] for d in per_direction]
        else:
            value_checks.check_scalar_estimator(name, estimator, ev.sample_shapes())
            blocks = [_hutchinson_diagonal(backend, call, point, key, rows)]
        result = call.assemble(blocks)
    if not call.has_aux:
        return result
    if ev.values is None:
        ev.values = ev.flat(*call.primals)
    return result, pytree.unflatten(ev.found["aux"], list(ev.values[ev.n_out:]))


class _Evaluation:
    """One call's evaluation on the route the plan chose: the recorded program (None: the
    nested route, logged with why), the output values once computed, and the pushes of
    directions through either."""

    def __init__(self, backend: Backend, call: Call, point: Point, chunk_size: Any, verdict: tuple[Memo, Any] | None):
        self.backend, self.call, self.point, self.chunk_size = backend, call, point, chunk_size
        self.found: dict[str, Any] = {}
        self.flat = outputs_then_aux(call, self.found)
        # No coordinate (point.n == 0): nothing to check, the result is zero or empty.
        self.rec, why = taylor_route(backend, call, verdict if point.n else None, self.flat, self.found)
        if self.rec is None:
            log.info("%s: %s", call.transform, why)
            self.values = self.flat(*call.primals)
        else:
            self.values = self.rec.values
        self.n_out: int = self.found["outputs"]

    def outputs(self) -> list[tuple[tuple[int, ...], str]]:
        """Each output's shape and dtype, from the values, the record's types (jax records
        without computing) or abstractly."""
        a, n_out = self.backend.arrays, self.n_out
        if self.values is not None:
            return [(tuple(a.shape(v)), a.dtype_name(v)) for v in self.values[:n_out]]
        if self.rec is not None and self.rec.types is not None:
            return self.rec.types[:n_out]
        return [(s, d) for s, _, d in self.backend.primitives.output_shapes(self._outputs_only, self.call.primals)]

    def sample_shapes(self) -> list[Any]:
        """Each output's shape for one sample."""
        shapes = [tuple(s) for s, _, _ in self.backend.primitives.output_shapes(self._outputs_only, self.call.primals)]
        return [s[1:] for s in shapes] if self.point.batch is not None else shapes

    def _outputs_only(self, *primals: Any) -> tuple[Any, ...]:
        return tuple(self.flat(*primals)[:self.n_out])

    def push(self, directions: list[Any], count: int, weights: Any, collapse: bool) -> list[Any]:
        """Second-order coefficients of the outputs along ``directions`` (``count`` rows),
        in chunks of ``chunk_size`` rows."""
        a, rec, primals = self.backend.arrays, self.rec, self.call.primals
        size = _chunk_rows(self.backend, rec, self.point, count, self.chunk_size)
        parts = []
        for lo in range(0, count, size):
            hi = min(count, lo + size)
            d = [a.slice_axis(x, lo, hi, 0) for x in directions]
            w = None if weights is None else a.slice_axis(weights, lo, hi, 0)
            if rec is not None:
                values, second = taylor.push(self.backend, rec, primals, d, hi - lo, w, collapse)
                self.values = values if self.values is None else self.values
                parts.append(second[:self.n_out])
            else:
                parts.append(taylor.nested(self.backend, self._outputs_only, primals, d, hi - lo, w, collapse))
        if collapse:
            return [taylor.sum_of(list(col)) for col in zip(*parts)]
        return [a.concat(list(col), 0) for col in zip(*parts)]


def _without_coordinates(backend: Backend, call: Call, what: str, shapes: list[tuple[int, ...]], values: Any,
                         found: dict[str, Any]) -> Any:
    """The result for differentiated arguments with no elements: zero traces (each output's
    shape), diagonals with no elements."""
    a, like = backend.arrays, call.primals[0]
    if what == "trace":
        result = pytree.unflatten(call.output_structure(), [a.zeros(s, like) for s in shapes])
    else:
        result = call.assemble([[a.zeros((*s, *shape), like) for shape in _shapes(call)] for s in shapes])
    if not call.has_aux:
        return result
    return result, pytree.unflatten(found["aux"], list(values[len(shapes):]))


def _shapes(call: Call) -> list[tuple[int, ...]]:
    return [tuple(call.backend.arrays.shape(p)) for p in call.primals]


def _constant(a: Any, value: float, rows: int, like: Any) -> Any:
    return a.ones_like(a.zeros((rows,), like)) * value


def _chunk_rows(backend: Backend, rec: Any, point: Point, count: int, chunk_size: Any) -> int:
    if chunk_size is None:
        return max(count, 1)
    if chunk_size != "auto":
        return int(chunk_size)
    per_row = taylor.bytes_per_direction(backend, rec, point.call.primals) if rec is not None else sum(
        backend.arrays.nbytes(p) for p in point.call.primals) * 8
    budget = memory.budget_bytes(backend.arrays, point.like)
    return max(1, min(count, budget // max(per_row, 1)))


def _diagonal_block(a: Any, second: Any, point: Point, i: int) -> Any:
    """Rows of ``second`` (``(n, *out)``) for leaf ``i``, as ``(*out, *leaf)``."""
    lo = sum(point.sizes[:i])
    piece = a.slice_axis(second, lo, lo + point.sizes[i], 0)
    out_shape = a.shape(piece)[1:]
    moved = a.moveaxis(piece, 0, -1)
    return a.reshape(moved, (*out_shape, *point.shapes[i]))


def _hvp_rows(backend: Backend, call: Call, directions: list[Any]) -> list[Any]:
    """``H v`` for each row of ``directions``, where ``H`` is the Hessian of the sum of the
    (one, scalar per sample) output: per sample, that sample's Hessian-vector product."""
    product = hessian_products(backend, lambda *leaves: call.flat_output(*leaves)[0].sum(), call.primals)
    return list(backend.primitives.vmap(product, 0, 0)(*directions))


def _hutch_pp(backend: Backend, call: Call, point: Point, push: Callable[..., Any], key: Any, rows: int) -> Any:
    """Hutch++: the exact trace on the range of ``H S`` (``S``: ``rows/3`` random
    directions), Hutchinson on its orthogonal complement (Meyer, Musco, Musco and
    Woodruff, 2021): about ``rows`` products in all."""
    a = backend.arrays
    third = min(max(1, rows // 3), point.n)  # n directions already span the space: the trace is exact
    s, g = point.signs(key, third, draws=2)
    y = point.to_matrix(_hvp_rows(backend, call, s))          # (third, [B,] n)
    q = a.qr(a.moveaxis(y, 0, -1))                            # ([B,] n, third): each sample's range
    g_cols = a.moveaxis(point.to_matrix(g), 0, -1)            # ([B,] n, third)
    rest = g_cols - q @ (a.moveaxis(q, -1, -2) @ g_cols)      # off the range: g - Q (Q' g)
    low_rank = push(point.from_matrix(a.moveaxis(q, -1, 0)), third, None, True)[0]
    residual = push(point.from_matrix(a.moveaxis(rest, -1, 0)), third,
                    _constant(a, 1.0 / third, third, point.like), True)[0]
    return low_rank + residual


def _hutchinson_diagonal(backend: Backend, call: Call, point: Point, key: Any, rows: int) -> list[Any]:
    """``mean(v * (H v))`` over random +-1 directions, per differentiated leaf."""
    a = backend.arrays
    v = point.signs(key, rows)[0]
    out = []
    for vi, hi, ax in zip(v, _hvp_rows(backend, call, v), point.axes):
        d = (vi * hi).sum(0) / rows
        out.append(a.moveaxis(d, ax, 0) if ax is not None else d)
    return out


def via_hessian(backend: Backend, hessian: Callable[..., Any], has_aux: bool, args: tuple[Any, ...],
                 kwargs: dict[Any, Any], what: str, point: Point) -> Any:
    """The nested baseline: the trace or diagonal of the framework's own Hessian (``hessian``,
    per sample for a batch)."""
    a = backend.arrays
    h = hessian(*args, **kwargs)
    hess, aux = h if has_aux else (h, None)
    call = point.call
    flat_h = pytree.leaves(hess)
    count = len(point.sizes)
    traces, diagonals = [], []
    for o in range(len(flat_h) // (count * count)):
        trace, diag = None, []
        for i in range(count):
            block = flat_h[o * count * count + i * count + i]
            shape = a.shape(block)
            out_shape = shape[:len(shape) - 2 * len(point.shapes[i])]
            d = _take_diagonal(a, a.reshape(block, (*out_shape, point.sizes[i], point.sizes[i])))
            diag.append(a.reshape(d, (*out_shape, *point.shapes[i])))
            t = d.sum(-1)
            trace = t if trace is None else trace + t
        traces.append(trace)
        diagonals.append(diag)
    result = pytree.unflatten(call.output_structure(), traces) if what == "trace" else call.assemble(diagonals)
    return (result, aux) if has_aux else result


def _take_diagonal(a: Any, m: Any) -> Any:
    n = a.shape(m)[-1]
    eye = a.eye(n, m)
    return (m * eye).sum(-1)

