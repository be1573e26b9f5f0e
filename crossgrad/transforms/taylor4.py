"""Fourth-order directional derivatives pushed forward through a recorded program.

NOTE [fourth-order taylor]
The biharmonic ``sum_ij d4 f / dx_i2 dx_j2`` is a weighted sum of fourth directional
derivatives: with ``D4[v] = d4/dt4 f(x + t v)`` at ``t = 0``,
``D4[e_i + e_j] + D4[e_i - e_j] = 2 f_iiii + 12 f_iijj + 2 f_jjjj``, so over ``n``
coordinates::

    lap2 f = (1 - (n - 1) / 3) sum_i D4[e_i] + 1/6 sum_{i<j} (D4[e_i + e_j] + D4[e_i - e_j])

(``n**2`` directions), and for Gaussian ``v``, ``E D4[v] = 3 lap2 f`` (the estimator).  As
for the Laplacian (NOTE [collapsed taylor]) each value carries, per direction, its first
three Taylor coefficients ``x1, x2, x3`` (``x(t) = x + t x1 + t2/2 x2 + t3/6 x3 + ...``) and
one fourth-order row, the weighted sum over directions: every rule is linear in ``x4``, so
the sum is taken at every operation.  For an elementwise ``y = g(x)`` (Faa di Bruno)::

    y1 = g' x1
    y2 = g' x2 + g'' x1^2
    y3 = g' x3 + 3 g'' x1 x2 + g''' x1^3
    S4 = g' S4 + sum_k c_k (g'' (4 x1 x3 + 3 x2^2) + 6 g''' x1^2 x2 + g'''' x1^4)

for a product of two varying factors ``y_n = sum_m C(n, m) g(a_m, b_(n-m))``; a linear
operation maps every coefficient; any other operation takes ``d^n/dt^n g(x(t))`` by nested
forward derivatives along ``t``.  Zero coefficients are None (NOTE [taylor
coefficients]): the inputs start with ``x2 = x3 = S4 = 0``.  A program the backend cannot
record takes :func:`nested`: reverse over reverse, four deep.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from crossgrad.backends.base import Backend
from crossgrad.backends.recording import Entry, Recording
from crossgrad.transforms.taylor import (
    _mapped,
    _weighted_sum,
    operation,
    output_basis,
    per_output,
    sum_of,
    walk,
    zeros_for,
)


def push(backend: Backend, rec: Recording, primals: Sequence[Any], directions: Sequence[Any], rows: int,
         weights: Any) -> tuple[list[Any], list[Any]]:
    """The outputs of ``rec`` at ``primals`` and ``sum_k c_k D4 out[v_k]`` for each output
    leaf (its shape; None for a non-float output).  ``directions[i]``: ``(rows,
    *primals[i].shape)``; ``weights``: ``(rows,)``.  NOTE [fourth-order taylor]."""
    a = backend.arrays

    def summed(c: Any) -> Any:
        s = _weighted_sum(c, weights, rows)
        return a.reshape(s, (1, *a.shape(s)))

    def rule(e: Entry, kind: Any, vals: list[Any], live: list[int], floating: list[int],
             coefficients: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        return _rule(backend, e, kind, vals, live, floating, coefficients, rows, summed)

    out_values, top = walk(backend, rec, primals, [(d, None, None, None) for d in directions], rule)
    fourth = []
    for v, s in zip(out_values, top):
        if s is not None:
            fourth.append(a.reshape(s, a.shape(v)))
        else:
            fourth.append(a.zeros(a.shape(v), v) if backend.taylor.is_float(v) else None)
    return out_values, fourth


def _rule(backend: Backend, e: Entry, kind: Any, vals: list[Any], live: list[int], floating: list[int],
          coefficients: list[tuple[Any, ...]], rows: int, summed: Callable[..., Any]) -> list[tuple[Any, ...]]:
    p = backend.primitives
    g = operation(e, vals, live, floating)
    orders = [zeros_for(backend, [c[n] for c in coefficients], vals, live, rows if n < 3 else 1) for n in range(4)]
    if callable(kind) or kind == "linear":
        linear = kind if callable(kind) else p.vmap(g, 0, 0)
        mapped = [linear(*o) if o is not None else [None] * len(floating) for o in orders]
        return list(zip(*mapped))
    prim = tuple(vals[i] for i in live)
    if kind == "pointwise":
        return _pointwise(backend, g, prim[0], list(coefficients[0]), summed)
    if kind == "bilinear" and len(live) == 2:
        return _bilinear(backend, g, prim, coefficients, orders, summed)
    return _general(backend, g, prim, orders, summed)


def _pointwise(backend: Backend, g: Callable[..., Any], x: Any, coefficients: list[Any],
               summed: Callable[..., Any]) -> list[tuple[Any, ...]]:
    """Faa di Bruno's formula to fourth order, ``g``'s derivatives by nested jvps."""
    a, p = backend.arrays, backend.primitives
    one = a.ones_like(x)

    def derivative(h: Callable[..., Any]) -> Callable[..., Any]:
        return lambda y: p.jvp(h, (y,), (one,), False)[1]

    d1, d2, _ = p.jvp(derivative(g), (x,), (one,), False)
    d3, d4, _ = p.jvp(derivative(derivative(derivative(g))), (x,), (one,), False)
    x1, x2, x3, s4 = coefficients
    new = []
    for g1, g2, g3, g4 in zip(d1, d2, d3, d4):
        lift = (-1,) + (1,) * (g1.ndim - x.ndim) + tuple(a.shape(x))
        t1: Any = a.reshape(x1, lift)
        t2: Any = a.reshape(x2, lift) if x2 is not None else None
        t3: Any = a.reshape(x3, lift) if x3 is not None else None
        sq = t1 * t1
        y1 = g1 * t1
        y2 = g2 * sq if t2 is None else g1 * t2 + g2 * sq
        y3 = g3 * sq * t1 if t2 is None else 3 * g2 * t1 * t2 + g3 * sq * t1
        if t3 is not None:
            y3 = y3 + g1 * t3
        inner = g4 * summed(sq * sq)
        if t2 is not None:
            inner = inner + g2 * summed(3 * t2 * t2) + 6 * g3 * summed(sq * t2)
        if t3 is not None:
            inner = inner + g2 * summed(4 * t1 * t3)
        y4 = inner if s4 is None else g1 * a.reshape(s4, lift) + inner
        new.append((y1, y2, y3, y4))
    return new


def _bilinear(backend: Backend, g: Callable[..., Any], prim: tuple[Any, ...], coefficients: list[tuple[Any, ...]],
              orders: list[Any], summed: Callable[..., Any]) -> list[tuple[Any, ...]]:
    """``y_n = Dg[a_n, b_n] + sum_(0<m<n) C(n, m) g(a_m, b_(n-m))`` for a bilinear ``g``."""
    p = backend.primitives
    tangent = p.vmap(lambda *t: p.jvp(g, prim, t, False)[1], 0, 0)
    pair = p.vmap(g, 0, 0)
    (a1, a2, a3, _), (b1, b2, b3, _) = coefficients
    av, bv = [a1, a2, a3], [b1, b2, b3]

    def cross(n: int) -> list[Any] | None:
        terms = None
        for m, binom in {2: [(1, 2)], 3: [(1, 3), (2, 3)], 4: [(1, 4), (2, 6), (3, 4)]}[n]:
            left, right = av[m - 1], bv[n - m - 1]
            if left is None or right is None:
                continue
            part = [binom * y for y in pair(left, right)]
            terms = part if terms is None else [t + q for t, q in zip(terms, part)]
        return terms

    out: list[list[Any] | None] = []
    for n in range(4):
        lin = list(tangent(*orders[n])) if orders[n] is not None else None
        extra = cross(n + 1) if n > 0 else None
        if extra is not None and n == 3:
            extra = [summed(c) for c in extra]
        if lin is None and extra is None:
            out.append(None)
        elif extra is None:
            out.append(lin)
        else:
            out.append(extra if lin is None else [u + w for u, w in zip(lin, extra)])
    first = out[0]
    assert first is not None  # every varying input has first-order rows
    return [tuple(o[j] if o is not None else None for o in out) for j in range(len(first))]


def _general(backend: Backend, g: Callable[..., Any], prim: tuple[Any, ...], orders: list[Any],
             summed: Callable[..., Any]) -> list[tuple[Any, ...]]:
    """Any ``g``: ``d^n/dt^n g(x + t x1 + t2/2 x2 + t3/6 x3)`` at ``t = 0`` by nested jvps
    along ``t``, vectorized over directions; the fourth-order row adds ``Dg[S4]``."""
    a, p = backend.arrays, backend.primitives
    like = prim[0]
    t0, dt = a.zeros((), like), a.ones_like(a.zeros((), like))
    firsts = orders[0]
    rest = [o if o is not None else tuple(a.zeros_like(f) for f in firsts) for o in orders[1:3]]

    def along(x1: tuple[Any, ...], x2: tuple[Any, ...], x3: tuple[Any, ...]) -> Callable[..., Any]:
        def curve(t: Any) -> tuple[Any, ...]:
            return tuple(g(*[x + t * u + (t * t / 2) * v + (t * t * t / 6) * w for x, u, v, w in zip(prim, x1, x2, x3)]))
        return curve

    def derivatives(*rows: Any) -> tuple[Any, ...]:
        k = len(prim)
        h: Callable[..., Any] = along(rows[:k], rows[k:2 * k], rows[2 * k:])
        found = []
        for _ in range(4):
            h = (lambda inner: lambda t: p.jvp(inner, (t,), (dt,), False)[1])(h)
            found.append(h(t0))
        return tuple(y for order in found for y in order)

    flat = p.vmap(derivatives, 0, 0)(*firsts, *rest[0], *rest[1])
    m = len(flat) // 4
    per = [flat[n * m:(n + 1) * m] for n in range(4)]
    top = [summed(c) for c in per[3]]
    if orders[3] is not None:
        lin = p.vmap(lambda *t: p.jvp(g, prim, t, False)[1], 0, 0)(*orders[3])
        top = [u + w for u, w in zip(top, lin)]
    return [(per[0][j], per[1][j], per[2][j], top[j]) for j in range(m)]


def nested(backend: Backend, flat: Callable[..., Any], primals: tuple[Any, ...], directions: Sequence[Any], rows: int,
           weights: Any) -> list[Any]:
    """``sum_k c_k D4 out[v_k]`` by reverse over reverse four deep (the framework's
    derivatives their most general way), per output element and direction, vectorized:
    the exact route for programs :func:`push` cannot take.  Outputs that are not floating
    point get None."""
    a, p = backend.arrays, backend.primitives
    outs = list(flat(*primals))
    floating, cotangents = output_basis(backend, outs)
    result: list[Any] = [None] * len(outs)
    if cotangents is None:
        for k in floating:
            result[k] = a.zeros(a.shape(outs[k]), outs[k])
        return result

    def fourth(*v: Any) -> Any:
        def along(*u: Any) -> Any:
            def h1(*y: Any) -> Any:
                _, vjp_fn, _ = p.vjp(lambda *z: tuple(flat(*z)[k] for k in floating), y, False)
                return sum_of([(gi * vi).sum() for gi, vi in zip(vjp_fn(tuple(u)), v)])

            def along_gradient(inner: Callable[..., Any]) -> Callable[..., Any]:
                def h(*y: Any) -> Any:  # v . grad inner(y)
                    out, vjp_fn, _ = p.vjp(lambda *z: (inner(*z),), y, False)
                    return sum_of([(gi * vi).sum() for gi, vi in zip(vjp_fn((a.ones_like(out[0]),)), v)])
                return h

            return along_gradient(along_gradient(along_gradient(h1)))(*primals)

        return _mapped(p, along, tuple(cotangents))

    per_direction = _mapped(p, fourth, tuple(directions))  # (rows, total)
    for k, c in zip(floating, per_output(backend, per_direction, outs, floating, rows)):
        result[k] = _weighted_sum(c, weights, rows)
    return result
