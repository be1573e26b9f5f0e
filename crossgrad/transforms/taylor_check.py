"""The first-call check of the Taylor route.

NOTE [taylor check]: the Taylor route differentiates the operations a call dispatches by
its own rules, which can miss what the framework's derivatives know (a custom
``autograd.Function`` computing in NumPy contributes no operations; an operation whose
rule is wrong).  So with ``impl="auto"`` the first call of each argument signature pushes
two random directions ``v``, ``w`` (the rules vectorized over directions) and compares
``u . (D2 out[v, v] + D2 out[w, w])`` (``u`` random over the outputs) with ``v . (H_u v) +
w . (H_u w)``, two Hessian-vector products of ``u . out`` by the
framework's own derivatives (reverse over reverse); where they disagree beyond the
lowest precision's tolerance, that signature takes the exact nested route (logged).  As
the adjoint check, it runs where values are concrete (not while being traced or under an
outer transform), with the random generators restored.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable
from typing import Any

from crossgrad import tolerances
from crossgrad.backends.base import Backend
from crossgrad.transforms import taylor
from crossgrad.transforms.call import Call, Memo

log = logging.getLogger("crossgrad")


# The Taylor check's verdicts (NOTE [taylor check]) per function, kept while the function
# lives: they depend on the function, its argnums, batch axes and argument signature, not
# on the transform (an estimator made anew per key reuses them).
_VERDICTS: weakref.WeakKeyDictionary[Any, Memo] = weakref.WeakKeyDictionary()


def verdicts_of(f: Callable[..., Any]) -> Memo:
    try:
        memo = _VERDICTS.get(f)
        if memo is None:
            memo = _VERDICTS[f] = Memo()
        return memo
    except TypeError:  # not weak-referenceable, or unhashable: this transform's own
        return Memo()


def agrees(backend: Backend, rec: Any, call: Call, n_out: int) -> bool | None:
    """Whether the recorded program's Taylor propagation is exact here (NOTE [taylor check]): ``u . D2 out[v, v]`` by one push along a random ``v`` against ``v . (H_u v)``,
    ``H_u`` the Hessian of ``u . out`` by one Hessian-vector product (reverse over reverse:
the route every framework derivative, custom rules included, supports); None where it cannot
    tell (values abstract, the product not computable)."""
    from crossgrad.transforms import adjoint

    a, p = backend.arrays, backend.primitives
    primals = call.primals
    if any(a.under_transform(x) for x in primals):
        return None
    like = primals[0]
    # Two directions, so that the rules' vectorization over directions is checked too.
    v = adjoint.directions(a, 2, [a.shape(x) for x in primals], like)
    w = adjoint.directions(a, 4, [a.shape(x) for x in primals], like)
    try:
        with a.preserved_random_state(like):
            _, second = taylor.push(backend, rec, primals, [a.concat([a.reshape(d, (1, *a.shape(d))), a.reshape(
                e, (1, *a.shape(e)))], 0) for d, e in zip(v, w)], 2)
        second = [s for s in second[:n_out] if s is not None]
        if len(second) != n_out or not all(a.dtype_name(s) in tolerances.TABLE for s in second):
            return None  # complex or integer outputs
        u = adjoint.directions(a, 3, [a.shape(s) for s in second], second[0])

        def grad(*y: Any) -> tuple[Any, ...]:
            _, vjp_fn, _ = p.vjp(lambda *z: tuple(call.flat_output(*z)[:n_out]), y, False)
            return tuple(vjp_fn(tuple(u)))

        with a.preserved_random_state(like):  # reverse over reverse: the framework's most general route
            _, hvp_fn, _ = p.vjp(grad, primals, False)
            hv, hw = tuple(hvp_fn(tuple(v))), tuple(hvp_fn(tuple(w)))
    except Exception as exc:
        log.info("Taylor check skipped: %s: %s", type(exc).__name__, str(exc).splitlines()[:1])
        return None
    pushed = sum(float(a.to_numpy((ui * si).sum())) for ui, si in zip(u, second))
    terms = [h * vi for h, vi in zip(hv, v)] + [h * wi for h, wi in zip(hw, w)]
    exact = sum(float(a.to_numpy(t.sum())) for t in terms)
    scale = sum(float(a.to_numpy(abs(ui * si).sum())) for ui, si in zip(u, second)) + sum(
        float(a.to_numpy(abs(t).sum())) for t in terms)
    try:
        with a.preserved_random_state(like):
            inside = p.float_dtypes(call.flat_output, primals)
    except Exception:
        inside = set()
    tol = tolerances.identity({a.dtype_name(s) for s in second} | inside)
    return bool(abs(pushed - exact) <= 10 * tol * max(scale, 1e-30))


def remembered(verdict: tuple[Memo, Any], check: Callable[[], bool | None]) -> bool | None:
    """A signature's verdict (``verdict``: the memo and the signature's key): the memo's,
    or else ``check()``'s, kept where the check could tell (the Laplacian's NOTE [taylor
    check] and the biharmonic's NOTE [biharmonic check] both)."""
    memo, sig = verdict
    agrees: bool | None = memo.get(sig) if sig is not None else None
    if agrees is None:
        agrees = check()
        if agrees is not None and sig is not None:
            memo.put(sig, agrees)
    return agrees
