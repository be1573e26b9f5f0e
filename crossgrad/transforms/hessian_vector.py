"""hvp and the one Hessian-vector product builder (:func:`hessian_products`, over the
gradient: :func:`over_the_gradient`) that hvp, the curvature estimators, the operators,
the Gauss-Newton matrix and the sparse Hessian use."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import weakref
from collections.abc import Callable
from typing import Any

from crossgrad import option_checks, spec, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms.derivatives import DerivativePlan, gradient_of, planned_by

log = logging.getLogger("crossgrad")


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

