"""grad, value_and_grad, vjp, jvp, linearize and hvp."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from crossgrad import option_checks, pytree, spec, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms.builtin import Route, builtin_serves, check_output, checked, made, needs_composition
from crossgrad.transforms.call import Call, Memo, check_leaves

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


@dataclasses.dataclass(frozen=True)
class HvpPlan:
    """What ``hvp`` does for one call: the product as forward over reverse (``"fwd-rev"``:
    the jvp of the gradient) or reverse over reverse (``"rev-rev"``: the vjp of the
    gradient, ``H`` being symmetric; the revision kept per function once the framework could
    not push a tangent through the gradient), the gradient's own plan, and why."""

    transform: str
    route: str
    gradient: DerivativePlan
    why: str

    def __str__(self) -> str:
        return f"{self.transform}: {self.route} route; {self.why}; its gradient: {self.gradient.route} route"


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
            return (route.builtin or builtin(len(args), kwargs))(*args)
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
        return builtin_or_composed(backend, name, impl, args, "one vjp with cotangent 1")

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

@dataclasses.dataclass
class _HvpGradient:
    """hvp's gradient of one function, and the product's revision kept with it: why forward
    over reverse failed, once it has (then every later product is reverse over reverse)."""

    gradient: Callable[..., Any]
    reverse: list[str] = dataclasses.field(default_factory=list)


# hvp's gradients per backend, by the identity of the differentiated function: hvp evaluates
# at once, so what it learns about a function (its checks, the revision) is kept here.
_HVP_GRADIENTS: dict[str, dict[int, tuple[Any, ...]]] = {}


def _hvp_gradient(backend: Backend, f: Callable[..., Any], nums: tuple[int, ...], impl: str) -> _HvpGradient:
    """hvp's gradient of ``f``, kept per ``f`` so that repeated products with the same
    function reuse its remembered checks, built-ins and revision.

    Keyed by identity (two callables that compare equal are still two functions),
    and holding ``f`` weakly: the entry goes when ``f`` does, so a fresh closure per
    call keeps nothing alive.
    """
    store = _HVP_GRADIENTS.setdefault(backend.name, {})
    entry = store.get(id(f))
    if entry is None or entry[0]() is not f:
        try:
            # A bound method is a new object at every attribute access: nothing to reuse.
            if inspect.ismethod(f):
                raise TypeError
            ref = weakref.ref(f)
        except TypeError:  # not weak-referenceable: no reuse
            return _HvpGradient(gradient_of(backend, "hvp", f, nums, False, impl, with_value=False))

        def weakly_f(*args: Any, **kwargs: Any) -> Any:
            target = ref()
            assert target is not None  # alive: hvp holds f while it runs
            return target(*args, **kwargs)

        # The name only: functools.wraps would keep f alive through __wrapped__.
        weakly_f.__name__ = weakly_f.__qualname__ = getattr(f, "__name__", type(f).__name__)
        entry = store[id(f)] = (ref, weakly_f, {})
        weakref.finalize(f, store.pop, id(f), None)
    ref, weakly_f, per_f = entry
    if (nums, impl) not in per_f:
        per_f[(nums, impl)] = _HvpGradient(gradient_of(backend, "hvp", weakly_f, nums, False, impl, with_value=False))
    made: _HvpGradient = per_f[(nums, impl)]
    return made


def _hvp_checked(backend: Backend, f: Callable[..., Any], primals: Any, tangents: Any, argnums: Any,
                 impl: str) -> tuple[HvpPlan, _HvpGradient, tuple[Any, ...], tuple[Any, ...], tuple[int, ...], bool]:
    """hvp's checks and plan; the gradient it uses, the primals and tangents as tuples, and
    the differentiated positions (``single``: an int ``argnums``)."""
    name = "hvp"
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, argnums=argnums, impl=impl)
    primals = value_checks.as_tuple(name, "primals", primals)
    tangents = value_checks.as_tuple(name, "tangents", tangents)
    nums, single = value_checks.normalize_argnums(name, argnums, len(primals))
    value_checks.check_same_structure(name, "tangents", tangents, tuple(primals[k] for k in nums), "the differentiated primals")
    grad_f = _hvp_gradient(backend, f, nums, impl)
    gradient = grad_f.gradient.plan(*primals)  # type: ignore[attr-defined]
    if grad_f.reverse:
        plan = HvpPlan(name, "rev-rev", gradient, f"revised: forward over reverse failed on this function "
                       f"({grad_f.reverse[0]}); the vjp of the gradient, H being symmetric")
    else:
        plan = HvpPlan(name, "fwd-rev", gradient, "the jvp of the gradient (reverse over reverse where the framework "
                       "cannot push a tangent through it, a revision kept per function)")
    return plan, grad_f, primals, tangents, nums, single


def hvp_plan(backend: Backend, f: Callable[..., Any], primals: Any, tangents: Any, argnums: spec.Argnums = 0, *,
             impl: spec.Impl = "auto") -> HvpPlan:
    """The plan :func:`hvp` follows on these arguments (its checks included); nothing is computed."""
    return _hvp_checked(backend, f, primals, tangents, argnums, impl)[0]


@planned_by(hvp_plan)
def hvp(backend: Backend, f: Callable[..., Any], primals: Any, tangents: Any, argnums: spec.Argnums = 0, *,
        impl: spec.Impl = "auto") -> Any:
    """Hessian-vector product of a scalar function, without forming the Hessian.

    ``primals`` holds every argument of ``f``; ``tangents`` one entry per
    differentiated argument (``argnums``), each shaped like that argument.
    Returns ``H @ tangents`` shaped like the gradient: one pytree for an int
    ``argnums``, a tuple for a tuple.  Computed forward-over-reverse: the
    framework's jvp of the gradient (``"builtin"``: the framework's grad,
    ``"composed"``: crossgrad's vjp-based grad).

    Example:
        >>> import torch, crossgrad as cg
        >>> x = torch.tensor([1.0, 2.0])
        >>> cg.torch.hvp(lambda x: (x ** 3).sum(), (x,), (torch.ones(2),))
        tensor([ 6., 12.])
    """
    _, grad_f, primals, tangents, nums, single = _hvp_checked(backend, f, primals, tangents, argnums, impl)

    def grad_of_differentiated(*diff: Any) -> tuple[Any, ...]:
        args = list(primals)
        for k, d in zip(nums, diff):
            args[k] = d
        return tuple(grad_f.gradient(*args))

    tout = over_the_gradient(backend, grad_of_differentiated, tuple(primals[k] for k in nums), grad_f.reverse)(*tangents)
    return tout[0] if single else tout


def over_the_gradient(backend: Backend, grad: Callable[..., Any], primals: tuple[Any, ...],
                      reverse: list[str] | None = None) -> Callable[..., Any]:
    """``t -> H t`` from ``grad`` (a function of the primals returning a tuple): the jvp of
    the gradient, or, once the framework cannot push a tangent through it (a forward-mode
    formula writing into torch's lazy zero tangent, ``failure_cause`` ``"forward over
    reverse"``; a custom ``autograd.Function`` without a jvp rule), the vjp of the gradient
    (``H`` is symmetric) from then on.  ``reverse``, where given, keeps that revision
    beyond this product function (hvp keeps it per function: later calls go to reverse
    over reverse without trying forward mode again)."""
    p = backend.primitives
    reverse = [] if reverse is None else reverse

    def product(*tangents: Any) -> Any:
        if not reverse:
            try:
                return p.jvp(grad, primals, tangents, False)[1]
            except Exception as exc:
                try:  # a custom autograd.Function without a jvp rule, torch's lazy zero tangent
                    out = by_reverse(tangents)
                except Exception:
                    raise exc from None
                first = (str(exc).splitlines() or [type(exc).__name__])[0]
                log.info("Hessian-vector products by reverse over reverse: %s", first)
                reverse.append(first)
                return out
        return by_reverse(tangents)

    def by_reverse(tangents: tuple[Any, ...]) -> tuple[Any, ...]:
        _, vjp_fn, _ = p.vjp(grad, primals, False)
        return tuple(vjp_fn(tuple(tangents)))

    return product


def hessian_products(backend: Backend, scalar: Callable[..., Any], primals: tuple[Any, ...],
                     reverse: list[str] | None = None) -> Callable[..., Any]:
    """``t -> H t`` for the Hessian of the scalar function ``scalar`` at ``primals``
    (forward over reverse: the jvp of the vjp-based gradient), ``t`` one array per primal.
    Where the framework cannot push a tangent through the gradient (torch's
    ``"forward over reverse"`` failure: :func:`over_the_gradient`), reverse over reverse;
    ``reverse`` keeps that revision (and why) for its owner."""
    p = backend.primitives

    def grad(*leaves: Any) -> tuple[Any, ...]:
        out, vjp_fn, _ = p.vjp(scalar, leaves, False)
        return tuple(vjp_fn(backend.arrays.ones_like(out)))

    return over_the_gradient(backend, grad, primals, reverse)

