"""Second-order directional derivatives pushed forward through a recorded program.

NOTE [collapsed taylor]
For directions ``v_1 .. v_k`` and weights ``c_k``, ``sum_k c_k v_k' H v_k`` (a Laplacian
for the identity basis, a Hutchinson estimate for random directions, ``trace(C H)``
for ``C = sum_k c_k v_k v_k'``) needs neither the Hessian nor one second-order pass per
direction.  Each value ``y`` of the program carries its first-order coefficients
``T_k = Dy[v_k]`` (``k`` rows) and one second-order coefficient
``S = sum_k c_k D2y[v_k, v_k]`` (one row: the sum is taken at every operation, the
"collapse" of Dangel et al., NeurIPS 2025, and folx's forward Laplacian).  For
``y = g(x)``::

    T_k(y) = Dg[T_k(x)]                        one vectorized jvp of g, or g itself if g is linear
    S(y)   = Dg[S(x)] + sum_k c_k D2g[T_k(x), T_k(x)]

and the last term is zero for a linear ``g``, ``g''(x) * sum_k c_k T_k(x)**2`` for an
elementwise one (one second derivative, whatever ``k``), ``2 sum_k c_k g(Ta_k, Tb_k)``
for a product of two varying factors, and a vectorized jvp of a jvp otherwise (exact for
every operation the framework can differentiate forward twice).  Per operation the cost
is that of pushing ``k + 1`` tangents forward, against the ``k`` forward-over-reverse
passes of the nested Hessian trace.  With ``collapse=False`` the second-order rows stay
one per direction (``k`` rows): the Hessian diagonal for the identity basis.

NOTE [taylor coefficients]
The first- and second-order rows of a value are kept apart, ``(T, S)``, and ``S`` is
None while it is zero (from the inputs to the first nonlinear operation).  Kept in one
array, every elementwise rule would slice the rows apart and write them back (a copy of
the whole coefficient array per operation), and a linear operation before the first
nonlinearity would multiply zeros.  Apart, a batch-independent ``T`` stays batch
independent under an outer ``vmap``: the basis of a Laplacian does not depend on the
point, so a first layer's ``W @ T`` is computed once for the batch, not per point (a
concatenation with the per-point ``S`` broadcast it over the batch).

NOTE [rows-first products]
Coefficients keep their rows leading, ``(rows, *value)``.  A product ``W @ x`` mapped over
the rows of ``x``'s coefficients is ``dot_general(W, T)``, whose output puts ``W``'s free
dimension first, ``(h, rows)``: the map then transposes it to ``(rows, h)``, and under an
outer batch each layer's coefficients are copied twice (measured on XLA's CPU compiler, a
50-192-192-128-128-1 Laplacian at B16: ``W @ x`` 1.15 ms where the same MLP written
``x @ W.T`` takes 0.70).  The jax backend computes it as ``T @ W^T`` (``dot_general(T, W)``
contracting the same dimensions), rows first, with no transpose: the form the layer is
written in no longer matters.

NOTE [one summed row]
A linear operation maps the collapsed ``S`` (one row) by the operation itself, not by a
map over its unit row axis: mapped, the last layer's product keeps the unit dimension,
which XLA's CPU compiler strength-reduces into an unvectorized loop fused with its
producers.  Measured (one core, ``jax.jit`` of the batched Laplacian, best of five): a
16-64-64-1 MLP at B64 0.109 -> 0.097 ms; 50-192-192-128-128-1 and the PINN unchanged; on
torch no change.  With this the compiled program is folx's, operation for operation (its
optimized HLO differs in a bitcast and a fused add), and the two run at the same speed.

The program is recorded by the backend (``backend.taylor.record``: torch's dispatched
aten operations, jax's jaxpr), which also says how each operation is treated
(``backend.taylor.kind``).  A program the backend cannot record, or whose operations the
rules cannot propagate exactly (a torch function that writes into a tensor in place, a
call under an outer torch.func transform, an operation whose second derivatives torch's
forward-over-forward formulas get wrong, a complex intermediate that may meet a
non-holomorphic operation) raises :class:`Unrecorded`, and the caller takes the exact
nested route (:func:`nested`: Hessian-vector products, reverse over reverse).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from crossgrad.backends.base import Backend
from crossgrad.backends.recording import Entry, Recording


def push(backend: Backend, rec: Recording, primals: Sequence[Any], directions: Sequence[Any], rows: int,
         weights: Any = None, collapse: bool = True) -> tuple[list[Any], list[Any]]:
    """The outputs of ``rec`` at ``primals`` and their second-order coefficients.

    ``directions[i]`` has shape ``(rows, *primals[i].shape)``.  Returns ``(values,
    second)``: per output leaf its value and ``sum_k c_k D2 out[v_k, v_k]`` (shape of the
    leaf) with ``collapse``, else ``D2 out[v_k, v_k]`` for each ``k`` (shape
    ``(rows, *leaf)``).  NOTE [collapsed taylor], NOTE [taylor coefficients].
    """
    a = backend.arrays
    second_rows = 1 if collapse else rows

    def curvature_rows(c: Any) -> Any:
        """Per-direction curvature ``(rows, ...)`` as it enters the second-order rows."""
        if collapse:
            s = _weighted_sum(c, weights, rows)
            return a.reshape(s, (1, *a.shape(s)))
        return c

    def rule(e: Entry, kind: Any, vals: list[Any], live: list[int], floating: list[int],
             pairs: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return _rule(backend, e, kind, vals, live, floating, pairs, second_rows, curvature_rows)

    out_values, top = walk(backend, rec, primals, [(d, None) for d in directions], rule)
    second = []
    for v, s in zip(out_values, top):
        if s is not None:
            second.append(a.reshape(s, a.shape(v)) if collapse else s)
        elif backend.taylor.is_float(v):
            second.append(a.zeros(a.shape(v) if collapse else (second_rows, *a.shape(v)), v))
        else:
            second.append(None)
    return out_values, second


Rule = Callable[[Entry, Any, list[Any], list[int], list[int], list[tuple[Any, ...]]], list[tuple[Any, ...]]]


def walk(backend: Backend, rec: Recording, primals: Sequence[Any], seeds: Sequence[tuple[Any, ...]],
         rule: Rule) -> tuple[list[Any], list[Any]]:
    """``rec`` run at ``primals`` with each value's Taylor coefficients (a tuple, the
    inputs' ``seeds``) carried by ``rule(entry, kind, values, live, floating,
    coefficients)`` through every operation that has a varying floating output.
    Returns the output leaves' values and the last coefficient of each (None: zero, or
    not varying)."""
    taylor = backend.taylor
    values: dict[Any, Any] = {}
    coeffs: dict[Any, tuple[Any, ...]] = {}
    for key, x, seed in zip(rec.inputs, primals, seeds):
        values[key] = x
        coeffs[key] = seed
    for e in rec.entries:
        vals = [values[k] if k is not None and k in values else v for k, v in zip(e.keys, e.values)]
        outs = e.results if e.results is not None else e.call(*vals)
        if e.results is None:
            for k, o in zip(e.out_keys, outs):
                values[k] = o
        live = [i for i, k in enumerate(e.keys) if k is not None and k in coeffs]
        if not live:
            continue
        floating = [j for j, o in enumerate(outs) if taylor.is_float(o)]
        if not floating:
            continue
        kind = taylor.kind(e, tuple(live))
        if kind == "constant":
            continue
        for j, t in zip(floating, rule(e, kind, vals, live, floating, [coeffs[e.keys[i]] for i in live])):
            coeffs[e.out_keys[j]] = t
    out_values = [rec.values[i] if rec.values is not None else values[k] for i, k in enumerate(rec.outputs)]
    return out_values, [coeffs[k][-1] if k in coeffs else None for k in rec.outputs]


def zeros_for(backend: Backend, coefficients: list[Any], vals: list[Any], live: list[int], rows: int) -> tuple[Any, ...] | None:
    """One order's coefficients of the varying inputs, zeros filled in where an input's are
    zero (None); None where all are."""
    if all(c is None for c in coefficients):
        return None
    a = backend.arrays
    return tuple(c if c is not None else a.zeros((rows, *a.shape(vals[i])), vals[i]) for c, i in zip(coefficients, live))


def operation(e: Entry, vals: list[Any], live: list[int], floating: list[int]) -> Callable[..., tuple[Any, ...]]:
    """The operation as a function of its varying inputs, returning its floating outputs."""
    def g(*live_vals: Any) -> tuple[Any, ...]:
        substituted = list(vals)
        for i, v in zip(live, live_vals):
            substituted[i] = v
        result = e.call(*substituted)
        return tuple(result[j] for j in floating)

    return g


def _rule(backend: Backend, e: Entry, kind: Any, vals: list[Any], live: list[int], floating: list[int],
          pairs: list[tuple[Any, ...]], second_rows: int, curvature_rows: Callable[..., Any]) -> list[tuple[Any, ...]]:
    """One operation's output coefficients ``(first, second)`` from its varying inputs'."""
    p = backend.primitives
    g = operation(e, vals, live, floating)
    firsts = tuple(t for t, _ in pairs)
    seconds = zeros_for(backend, [s for _, s in pairs], vals, live, second_rows)
    if callable(kind) or kind == "linear":  # a linear map (written by the backend, or vectorized)
        linear = kind if callable(kind) else p.vmap(g, 0, 0)
        if seconds is None:
            return list(zip(linear(*firsts), [None] * len(floating)))
        if second_rows == 1 and not callable(kind):
            return list(zip(linear(*firsts), _one_row(backend, g, seconds)))
        return list(zip(linear(*firsts), linear(*seconds)))
    prim = tuple(vals[i] for i in live)
    if kind == "pointwise":
        return _pointwise(backend, g, prim[0], firsts[0], seconds[0] if seconds else None, curvature_rows,
                          backend.taylor.derivatives(e))
    return _general(backend, g, prim, firsts, seconds, curvature_rows, kind == "bilinear")


def _one_row(backend: Backend, g: Callable[..., Any], rows: tuple[Any, ...]) -> list[Any]:
    """A map ``g`` of inputs with one row (the collapsed second-order row) applied to the row
    itself (NOTE [one summed row])."""
    a = backend.arrays
    return [a.reshape(o, (1, *a.shape(o))) for o in g(*(r[0] for r in rows))]


def _weighted_sum(x: Any, weights: Any, rows: int) -> Any:
    """``sum_k c_k x[k]`` over the leading axis (``c = 1`` without weights)."""
    if weights is not None:
        x = x * weights.reshape((rows,) + (1,) * (x.ndim - 1))
    return x.sum(0)


def _pointwise(backend: Backend, g: Callable[..., Any], x: Any, t: Any, s: Any, curvature_rows: Callable[..., Any],
               closed: tuple[Any, ...] | None) -> list[tuple[Any, ...]]:
    """An elementwise ``g`` of one varying input: its first and second derivatives once
    (in closed form where the backend has it), then ``T' = g' T``,
    ``S' = g' S + g'' sum_k c_k T_k**2``."""
    a, p = backend.arrays, backend.primitives
    if closed is not None:
        d1, d2 = (closed[0],), (closed[1],)
    else:
        one = a.ones_like(x)
        d1, d2, _ = p.jvp(lambda y: p.jvp(g, (y,), (one,), False)[1], (x,), (one,), False)
    new = []
    for g1, g2 in zip(d1, d2):
        lift = (-1,) + (1,) * (g1.ndim - x.ndim) + tuple(a.shape(x))  # x broadcast against the output
        first = a.reshape(t, lift)
        # g'' does not depend on the direction: summed over directions first, so that a
        # batch-independent T (NOTE [taylor coefficients]) is squared and summed once.
        curv = g2 * curvature_rows(first * first)
        new.append((g1 * first, curv if s is None else g1 * a.reshape(s, lift) + curv))
    return new


def _general(backend: Backend, g: Callable[..., Any], prim: tuple[Any, ...], ts: tuple[Any, ...],
             ss: tuple[Any, ...] | None, curvature_rows: Callable[..., Any], bilinear: bool) -> list[tuple[Any, ...]]:
    """Any ``g``: a vectorized jvp for the first- and second-order rows, and for the
    curvature ``2 g(Ta_k, Tb_k)`` (a product of two varying factors) or a vectorized jvp
    of a jvp."""
    p = backend.primitives
    tangent = p.vmap(lambda *t: p.jvp(g, prim, t, False)[1], 0, 0)
    if bilinear:
        curv = tuple(2 * c for c in p.vmap(g, 0, 0)(*ts))
    else:
        curv = p.vmap(lambda *t: p.jvp(lambda *y: p.jvp(g, y, t, False)[1], prim, t, False)[1], 0, 0)(*ts)
    lin_s = tangent(*ss) if ss is not None else [None] * len(curv)
    return [(t, curvature_rows(c) if s is None else s + curvature_rows(c))
            for t, s, c in zip(tangent(*ts), lin_s, curv)]


def nested(backend: Backend, flat: Callable[..., Any], primals: tuple[Any, ...], directions: Sequence[Any], rows: int,
           weights: Any = None, collapse: bool = True) -> list[Any]:
    """The second-order coefficients of :func:`push` by nested differentiation, the exact
    route for programs the engine does not propagate (:class:`Unrecorded`): for each
    output element ``o`` and direction ``v``, ``v' H_o v`` from a Hessian-vector product
    by reverse over reverse (the framework's derivatives its most general way: torch's
    forward-mode formulas of ``det``, ``solve`` and ``scatter_reduce`` are wrong),
    vectorized over directions and output elements.  Outputs that are not floating point
    get None."""
    a, p = backend.arrays, backend.primitives
    outs = list(flat(*primals))
    floating, cotangents = output_basis(backend, outs)
    if cotangents is None:
        return [None if k not in floating else a.zeros(a.shape(outs[k]) if collapse else (rows, *a.shape(outs[k])),
                                                       outs[k]) for k in range(len(outs))]

    def second(*t: Any) -> Any:
        def along(*u: Any) -> Any:
            def grad(*y: Any) -> tuple[Any, ...]:
                _, vjp_fn, _ = p.vjp(lambda *z: tuple(flat(*z)[k] for k in floating), y, False)
                return tuple(vjp_fn(tuple(u)))

            _, hvp_fn, _ = p.vjp(grad, primals, False)  # reverse over reverse: H_u is symmetric
            hv = hvp_fn(tuple(t))
            return sum_of([(h * ti).sum() for h, ti in zip(hv, t)])

        return _mapped(p, along, tuple(cotangents))  # (total,): one value per output element

    per_direction = _mapped(p, second, tuple(directions))  # (rows, total)
    result: list[Any] = [None] * len(outs)
    for k, c in zip(floating, per_output(backend, per_direction, outs, floating, rows)):
        result[k] = _weighted_sum(c, weights, rows) if collapse else c
    return result


def output_basis(backend: Backend, outs: list[Any]) -> tuple[list[int], list[Any] | None]:
    """The floating output leaves' positions and, for the nested routes, the identity over
    all their elements as one cotangent array per leaf, ``(total, *leaf)``; None where
    they have no elements."""
    a = backend.arrays
    floating = [k for k, o in enumerate(outs) if backend.taylor.is_float(o)]
    total = sum(a.size(outs[k]) for k in floating)
    if not floating or total == 0:
        return floating, None
    eye = a.eye(total, outs[floating[0]])
    cotangents, lo = [], 0
    for k in floating:
        size = a.size(outs[k])
        cotangents.append(a.reshape(a.slice_axis(eye, lo, lo + size, 1), (total, *a.shape(outs[k]))))
        lo += size
    return floating, cotangents


def per_output(backend: Backend, per_direction: Any, outs: list[Any], floating: list[int], rows: int) -> list[Any]:
    """``(rows, total)`` values over the floating outputs' elements as ``(rows, *leaf)`` per leaf."""
    a, parts, lo = backend.arrays, [], 0
    for k in floating:
        size = a.size(outs[k])
        parts.append(a.reshape(a.slice_axis(per_direction, lo, lo + size, 1), (rows, *a.shape(outs[k]))))
        lo += size
    return parts


def _mapped(p: Any, fn: Callable[..., Any], xs: tuple[Any, ...]) -> Any:
    """``fn`` over the rows of ``xs``, vectorized, or row by row where the function cannot
    be vectorized (a custom ``autograd.Function`` without a vmap rule)."""
    try:
        return p.vmap(fn, 0, 0)(*xs)
    except Exception:
        return p.map_rows(lambda *row: (fn(*row),), xs)[0]


def sum_of(xs: list[Any]) -> Any:
    """The sum of the arrays ``xs`` (at least one), in order."""
    out = xs[0]
    for x in xs[1:]:
        out = out + x
    return out


def bytes_per_direction(backend: Backend, rec: Recording, primals: Sequence[Any]) -> int:
    """About the memory one more direction costs :func:`push`: every floating value of
    the program once more (its first-order coefficient), twice over for the temporaries
    of the rules."""
    a = backend.arrays
    itemsize = a.nbytes(primals[0]) // max(a.size(primals[0]), 1) if primals else 4
    total = sum(a.nbytes(p) for p in primals)
    for e in rec.entries:
        if e.results is not None:
            total += sum(a.nbytes(r) for r in e.results if backend.taylor.is_float(r))
        elif getattr(e.info, "shape", None) is not None:  # a jax primitive's record: its output shape
            total += itemsize * math.prod(e.info.shape)
    return int(2 * total)

