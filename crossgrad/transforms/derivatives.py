"""grad, value_and_grad, vjp, jvp and linearize, and the plans of the transforms that evaluate at once."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from crossgrad import option_checks, pytree, spec, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms.builtin import builtin_serves, check_output, checked, made, needs_composition
from crossgrad.transforms.call import Call, Memo, Route, check_leaves

log = logging.getLogger("crossgrad")


@dataclasses.dataclass(frozen=True)
class DerivativePlan:
    """What ``grad``, ``value_and_grad``, ``vjp``, ``jvp`` or ``linearize`` does for one call
    (NOTE [plans] in :mod:`crossgrad.transforms.jacobians`): the framework's own transform
    (``"builtin"``) or crossgrad's composition (``"composed"``), and why."""

    transform: str
    route: str
    why: str

    def __str__(self) -> str:
        return f"{self.transform}: {self.route} route; {self.why}"


_F = TypeVar("_F", bound=Callable[..., Any])


def planned_by(planner: Callable[..., Any]) -> Callable[[_F], _F]:
    """Marks a transform that evaluates at once with the function giving its plan (same
    arguments, nothing computed); the namespaces and the top level attach it as ``.plan``."""

    def mark(fn: _F) -> _F:
        fn.planner = planner  # type: ignore[attr-defined]
        return fn

    return mark


def builtin_or_composed(backend: Backend, name: str, impl: str, primals: Any, composed_is: str) -> DerivativePlan:
    """The plan of a transform with one framework built-in and one composition: the
    built-in where ``impl`` allows it (``"auto"``: unless NOTE [auto avoids] in
    :mod:`crossgrad.transforms.policy` says otherwise) and the arguments hold nothing the
    built-ins refuse (static or None leaves); ``composed_is`` says what the composition is."""
    if not builtin_serves(name, backend, impl):
        why = "impl='composed' given" if impl == "composed" else \
            f"auto: {backend.name}'s own {name} is avoided (NOTE [auto avoids])"
        return DerivativePlan(name, "composed", f"{why}: {composed_is}")
    if needs_composition(backend, primals):
        return DerivativePlan(name, "composed", f"static or None leaves, which the built-ins refuse: {composed_is}")
    return DerivativePlan(name, "builtin", f"impl={impl!r}: the framework's own {name}")


def gradient_of(backend: Backend, name: str, f: Callable[..., Any], argnums: Any, has_aux: bool, impl: str,
                with_value: bool) -> Callable[..., Any]:
    """The gradient (``with_value``: value and gradient) of a scalar ``f``, options already
    validated by the public transform ``name``: one cache, a :class:`Route` per argument
    signature (the plan, and the framework's grad made for it)."""
    known = Memo()
    make = backend.builtins.value_and_grad if with_value else backend.builtins.grad

    def builtin(nargs: int, kwargs: dict[Any, Any]) -> Callable[..., Any]:
        return made(name, backend, lambda g, nums: make(g, nums, has_aux), f, argnums, has_aux, True, nargs, kwargs)

    def planned(args: tuple[Any, ...], kwargs: dict[Any, Any]) -> tuple[Route, Call | None]:
        key = Memo.key(args)
        route = known.get(key)
        if route is not None:
            return route, None
        call = Call(name, backend, f, args, kwargs, argnums, has_aux)  # the signature's checks, once
        plan = builtin_or_composed(backend, name, impl, args, "one vjp with cotangent 1")
        made_now = builtin(len(args), kwargs) if plan.route == "builtin" and not kwargs else None
        return known.put(key, Route(plan, made_now)), call

    def gradient_f(*args: Any, **kwargs: Any) -> Any:
        route, call = planned(args, kwargs)
        if route.plan.route == "builtin":
            return (route.run or builtin(len(args), kwargs))(*args)
        if call is None:
            call = Call(name, backend, f, args, kwargs, argnums, has_aux, checked=True)
        out, vjp_fn, aux = backend.primitives.vjp(call.flat, call.primals, has_aux)
        value = pytree.unflatten(call.output_structure(), list(out))
        check_output(name, backend, value, scalar=True)
        value_checks.check_real_output(name, backend.arrays.dtype_name(out[0]), "output leaf 0")
        grads = call.per_argnum(list(vjp_fn((backend.arrays.ones_like(out[0]),))))
        if with_value:
            return ((value, aux) if has_aux else value), grads
        return (grads, aux) if has_aux else grads

    def plan(*args: Any, **kwargs: Any) -> DerivativePlan:
        """The plan a call with these arguments follows (NOTE [plans]); nothing is computed."""
        return planned(args, kwargs)[0].plan  # type: ignore[no-any-return]

    gradient_f.plan = plan  # type: ignore[attr-defined]
    return gradient_f


def grad(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, *,
         impl: spec.Impl = "auto") -> Callable[..., Any]:
    """Gradient of a scalar-output function.

    Returns a function with ``f``'s arguments that returns the gradient with
    respect to ``args[argnums]``: one pytree shaped like that argument for an int
    ``argnums``, a tuple of them for a tuple; ``(grads, aux)`` with ``has_aux``.

    Args:
        f: function returning a scalar array (shape ``()``), or ``(scalar, aux)``.
        argnums: which positional argument(s) to differentiate.
        has_aux: ``f`` returns ``(output, aux)``; aux is returned unchanged.
        impl: ``"builtin"`` (``torch.func.grad`` / ``jax.grad``), ``"composed"``
            (a vjp with cotangent 1) or ``"auto"``.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.grad(lambda x: (x ** 2).sum())(torch.tensor([1.0, 2.0]))
        tensor([2., 4.])
    """
    option_checks.check_callable("grad", f)
    option_checks.validate_options("grad", argnums=argnums, has_aux=has_aux, impl=impl)
    return gradient_of(backend, "grad", f, argnums, has_aux, impl, with_value=False)


def value_and_grad(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, *,
                   impl: spec.Impl = "auto") -> Callable[..., Any]:
    """Value and gradient of a scalar-output function, in JAX's order.

    Returns a function returning ``(value, grads)``, or ``((value, aux), grads)``
    with ``has_aux``; ``grads`` is shaped as for :func:`grad`.  (torch's
    ``grad_and_value`` returns the other order; crossgrad returns this one on
    both backends.)

    Example:
        >>> import torch, crossgrad as cg
        >>> value, g = cg.torch.value_and_grad(lambda x: (x ** 2).sum())(torch.tensor([1.0, 2.0]))
        >>> value, g
        (tensor(5.), tensor([2., 4.]))
    """
    option_checks.check_callable("value_and_grad", f)
    option_checks.validate_options("value_and_grad", argnums=argnums, has_aux=has_aux, impl=impl)
    return gradient_of(backend, "value_and_grad", f, argnums, has_aux, impl, with_value=True)


def vjp_plan(backend: Backend, f: Callable[..., Any], *primals: Any, has_aux: bool = False,
             impl: spec.Impl = "auto") -> DerivativePlan:
    """The plan :func:`vjp` follows on these arguments (its checks included); nothing is computed."""
    name = "vjp"
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, has_aux=has_aux, impl=impl)
    value_checks.check_some_primals(name, primals)
    return builtin_or_composed(backend, name, impl, primals, "the framework's vjp behind crossgrad's flattening")


@planned_by(vjp_plan)
def vjp(backend: Backend, f: Callable[..., Any], *primals: Any, has_aux: bool = False, impl: spec.Impl = "auto") -> tuple[Any, ...]:
    """Evaluate ``f(*primals)`` and its vector-Jacobian product function.

    Returns ``(out, vjp_fn)``, or ``(out, vjp_fn, aux)`` with ``has_aux``.
    ``vjp_fn(cotangent)`` takes a pytree shaped like ``out`` and returns a tuple
    with one entry per primal, each shaped like that primal.  ``vjp`` is a
    primitive: both implementations use the framework's vjp; ``"composed"`` only
    routes the pytrees through crossgrad's own flattening.

    Example:
        >>> import torch, crossgrad as cg
        >>> out, vjp_fn = cg.torch.vjp(torch.sin, torch.tensor([0.0, 1.0]))
        >>> vjp_fn(torch.ones(2))[0]
        tensor([1.0000, 0.5403])
    """
    name = "vjp"
    argnums = tuple(range(len(primals)))
    if vjp_plan(backend, f, *primals, has_aux=has_aux, impl=impl).route == "builtin":
        Call(name, backend, f, primals, {}, argnums, has_aux)
        g = checked(name, backend, f, has_aux, scalar=False)
        out, builtin_vjp, *aux = backend.builtins.vjp(g, primals, has_aux)

        def builtin_vjp_fn(cotangent: Any) -> tuple[Any, ...]:
            # The output's dicts come back in crossgrad's key order; a cotangent in the
            # function's own order is the same pytree (torch.func alone would refuse it).
            value_checks.check_same_structure(name, "cotangents", cotangent, out, "the output")
            return tuple(builtin_vjp(pytree.ordered_like(cotangent, out)))

        return (out, builtin_vjp_fn, *aux)
    call = Call(name, backend, f, primals, {}, argnums, has_aux)
    out_leaves, flat_vjp, aux = backend.primitives.vjp(call.flat, call.primals, has_aux)
    out = pytree.unflatten(call.output_structure(), list(out_leaves))

    def vjp_fn(cotangent: Any) -> tuple[Any, ...]:
        value_checks.check_same_structure(name, "cotangents", cotangent, out, "the output")
        per: tuple[Any, ...] = call.per_argnum(list(flat_vjp(tuple(pytree.leaves(cotangent)))))
        return per

    return (out, vjp_fn, aux) if has_aux else (out, vjp_fn)


def _transposed_vjp(backend: Backend, call: Call) -> tuple[Any, Callable[..., Any], Any]:
    """``(out leaves, push, aux)``, where ``push(tangent leaves)`` is the Jacobian-vector
    product obtained as the vjp of the (linear) vjp function: reverse mode only."""
    primitives, arrays = backend.primitives, backend.arrays
    out, vjp_fn, aux = primitives.vjp(call.flat, call.primals, call.has_aux)
    zeros = tuple(arrays.zeros_like(o) for o in out)
    _, transpose_fn, _ = primitives.vjp(lambda *u: tuple(vjp_fn(u)), zeros, False)
    return out, lambda tangents: tuple(transpose_fn(tuple(tangents))), aux


def _jvp_checked(backend: Backend, f: Callable[..., Any], primals: Any, tangents: Any, has_aux: bool,
                 impl: str) -> tuple[DerivativePlan, tuple[Any, ...], tuple[Any, ...]]:
    """jvp's checks and plan, and its primals and tangents as tuples."""
    name = "jvp"
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, has_aux=has_aux, impl=impl)
    primals = value_checks.as_tuple(name, "primals", primals)
    value_checks.check_some_primals(name, primals)
    tangents = value_checks.as_tuple(name, "tangents", tangents)
    value_checks.check_same_structure(name, "tangents", tangents, primals, "primals")
    plan = builtin_or_composed(backend, name, impl, primals, "the transpose of the vjp (two reverse passes)")
    return plan, primals, tangents


def jvp_plan(backend: Backend, f: Callable[..., Any], primals: Any, tangents: Any, has_aux: bool = False, *,
             impl: spec.Impl = "auto") -> DerivativePlan:
    """The plan :func:`jvp` follows on these arguments (its checks included); nothing is computed."""
    return _jvp_checked(backend, f, primals, tangents, has_aux, impl)[0]


@planned_by(jvp_plan)
def jvp(backend: Backend, f: Callable[..., Any], primals: Any, tangents: Any, has_aux: bool = False, *,
        impl: spec.Impl = "auto") -> tuple[Any, ...]:
    """Evaluate ``f(*primals)`` and the Jacobian-vector product along ``tangents``.

    ``primals`` and ``tangents`` are tuples with one entry per argument, of equal
    structure.  Returns ``(out, tangent_out)`` or ``(out, tangent_out, aux)``,
    ``tangent_out`` shaped like ``out``.  ``"builtin"`` is forward mode
    (``torch.func.jvp`` / ``jax.jvp``); ``"composed"`` transposes the vjp (two
    reverse passes), the way forward mode is obtained from reverse mode alone.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.jvp(torch.sin, (torch.tensor([0.0]),), (torch.tensor([2.0]),))
        (tensor([0.]), tensor([2.]))
    """
    name = "jvp"
    plan, primals, tangents = _jvp_checked(backend, f, primals, tangents, has_aux, impl)
    call = Call(name, backend, f, primals, {}, tuple(range(len(primals))), has_aux)
    check_leaves(name, backend, pytree.leaves(tangents))
    if plan.route == "builtin":
        g = checked(name, backend, f, has_aux, scalar=False)
        return tuple(backend.builtins.jvp(g, primals, tangents, has_aux))
    out, push, aux = _transposed_vjp(backend, call)
    tout = push(call.kept_of(pytree.leaves(tangents)))  # static leaves (a model's functions) carry no tangent
    result = (pytree.unflatten(call.output_structure(), list(out)), pytree.unflatten(call.output_structure(), list(tout)))
    return (*result, aux) if has_aux else result


def linearize_plan(backend: Backend, f: Callable[..., Any], *primals: Any, impl: spec.Impl = "auto") -> DerivativePlan:
    """The plan :func:`linearize` follows on these arguments (its checks included); nothing is computed."""
    name = "linearize"
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, impl=impl)
    value_checks.check_some_primals(name, primals)
    return builtin_or_composed(backend, name, impl, primals, "the transpose of the vjp, built once")


@planned_by(linearize_plan)
def linearize(backend: Backend, f: Callable[..., Any], *primals: Any, impl: spec.Impl = "auto") -> tuple[Any, Callable[..., Any]]:
    """Evaluate ``f(*primals)`` and a function computing Jacobian-vector products there.

    Returns ``(out, jvp_fn)``; ``jvp_fn(*tangents)`` (one tangent per primal)
    returns ``J @ tangents`` shaped like ``out``, without re-running ``f``.
    ``"builtin"`` is ``torch.func.linearize`` / ``jax.linearize``; ``"composed"`` is
    the transpose of the vjp, which ``"auto"`` picks on torch (``torch.func.linearize``
    traces the function on every call: 100x slower to build, see
    NOTE [auto avoids] in :mod:`crossgrad.transforms.policy`).

    Example:
        >>> import torch, crossgrad as cg
        >>> out, jvp_fn = cg.torch.linearize(torch.sin, torch.tensor([0.0]))
        >>> jvp_fn(torch.tensor([3.0]))
        tensor([3.])
    """
    name = "linearize"
    plan = linearize_plan(backend, f, *primals, impl=impl)
    call = Call(name, backend, f, primals, {}, tuple(range(len(primals))), False)
    if plan.route == "builtin":
        out_and_fn: tuple[Any, Callable[..., Any]] = backend.builtins.linearize(
            checked(name, backend, f, False, False), primals)
        return out_and_fn
    out, push, _ = _transposed_vjp(backend, call)
    out_def = call.output_structure()

    def jvp_fn(*tangents: Any) -> Any:
        value_checks.check_same_structure(name, "tangents", tangents, primals, "primals")
        return pytree.unflatten(out_def, list(push(pytree.leaves(tangents))))

    return pytree.unflatten(out_def, list(out)), jvp_fn
