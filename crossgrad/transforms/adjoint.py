"""The check that forward and reverse mode agree, once per argument signature.

NOTE [adjoint check]
``auto`` picks forward or reverse mode by the shapes (NOTE [jacobian auto mode], NOTE
[hessian strategy]), so a function on which the two modes disagree would change meaning
with its sizes: ``torch.no_grad()`` or ``detach()`` inside ``f`` stops reverse mode but not
forward mode; a custom autograd Function may lack a correct ``jvp``.  The first call of
each signature compares ``u . (J v)`` (one jvp) with ``(J' u) . v`` (one vjp) for random
directions ``u``, ``v``; a disagreement beyond the tolerance of the lowest precision the
computation uses (its outputs' dtypes and every floating dtype computed inside) raises
:class:`crossgrad.errors.GradientCheckError` instead of an answer that depends on the mode.
The check runs only where values are concrete: under an outer ``jax.jit``, ``jax.vmap``,
a ``torch.func`` transform or a traced ``cg.jit``/``torch.compile`` it is skipped (as for
the batched transforms, which map the per-sample transform), and it is never applied
to a function declared random (``randomness=``).  It costs one jvp and one vjp per new
signature, on the caller's arrays with the random generators restored.  A function that
gives another value on each evaluation (it draws from a ``torch.Generator`` of its own,
which no restore reaches) is not judged: where the modes disagree, f is evaluated once
more, and an output that differs means the two modes saw two realizations.
"""

from __future__ import annotations

import logging
from typing import Any

from crossgrad import errors, tolerances
from crossgrad.backends.base import Backend

log = logging.getLogger("crossgrad")


def directions(a: Any, seed: int, shapes: list[Any], like: Any) -> tuple[Any, ...]:
    """Seeded random directions with many distinct values (sums of +-2^-j): +-1 directions
    alone are often orthogonal in a few dimensions, which would hide a disagreement."""
    draws = [a.random_signs(seed * 8 + j, shapes, like) for j in range(6)]
    return tuple(sum(d[i] * 2.0 ** -j for j, d in enumerate(draws)) for i in range(len(shapes)))


def check(transform: str, backend: Backend, call: Any) -> None:
    """Raise :class:`GradientCheckError` when ``call``'s function has forward and reverse
    derivatives that disagree (NOTE [adjoint check]); do nothing where it cannot tell."""
    a, p = backend.arrays, backend.primitives
    primals = call.primals
    if not primals or call.has_no_elements() or any(a.under_transform(x) for x in primals):
        return
    like = primals[0]
    try:
        # Each evaluation starts from the caller's random state and leaves it as it was:
        # a function drawing from torch's global generator sees the same draws in both.
        v = directions(a, 0, [a.shape(x) for x in primals], like)
        with a.preserved_random_state(like):
            out, jv, _ = p.jvp(call.flat_output, primals, v, False)
        call.outputs_seen(out)  # the plan reads the output shapes from these, without evaluating f again
        floating = [o for o in out if a.dtype_name(o) in tolerances.TABLE]
        if len(floating) != len(out):
            return  # complex or integer outputs: reverse mode answers differently by design
        u = directions(a, 1, [a.shape(o) for o in out], out[0])
        with a.preserved_random_state(like):
            _, vjp_fn, _ = p.vjp(call.flat_output, primals, False)
            ju = vjp_fn(u)
    except Exception:
        return  # one mode cannot run at all: the transform itself reports it
    forward = sum(float(a.to_numpy((ui * t).sum())) for ui, t in zip(u, jv))
    reverse = sum(float(a.to_numpy((g * vi).sum())) for g, vi in zip(ju, v))
    scale = sum(float(a.to_numpy((abs(t)).sum())) for t in jv) + sum(float(a.to_numpy(abs(g).sum())) for g in ju)
    # The computation's lowest precision sets the tolerance: a float64 function may compute
    # in float32 inside (its two modes then agree to float32's rounding only).
    try:
        with a.preserved_random_state(like):
            inside = p.float_dtypes(call.flat_output, primals)
    except Exception:
        inside = set()
    tol = tolerances.identity({a.dtype_name(o) for o in out} | inside) * max(scale, 1e-30)
    if abs(forward - reverse) > tol:
        if not _repeats(backend, call, out):
            # f draws from a generator of its own (or reads state that moves): the two modes saw
            # two realizations, so their disagreement says nothing about f's derivatives.
            log.info("%s: the adjoint check cannot tell: f gives another value on each evaluation", transform)
            return
        raise errors.GradientCheckError(
            transform,
            "forward and reverse mode to agree on f (u . (J v) == (J^T u) . v for random u, v), since mode='auto' "
            "picks one of them by the shapes",
            f"u . (J v) = {forward:.6g} by forward mode against (J^T u) . v = {reverse:.6g} by reverse mode",
            "Something in f stops one mode: torch.no_grad() or .detach() inside f stops reverse mode only, a custom "
            "autograd.Function may lack a correct jvp. Fix f, or pick the mode you trust explicitly (mode='rev' or "
            "'fwd'; strategy= for Hessians).")


def _repeats(backend: Backend, call: Any, out: Any) -> bool:
    """Whether evaluating the call again gives the outputs ``out`` (NOTE [adjoint check]:
    asked only where the two modes disagree, to tell a function that draws from a generator
    of its own from one whose derivatives disagree)."""
    a = backend.arrays
    try:
        with a.preserved_random_state(call.primals[0]):
            again = call.flat_output(*call.primals)
        return all(bool(a.to_numpy((x == y).all())) for x, y in zip(out, again))
    except Exception:
        return True  # it cannot tell either: the disagreement stands
