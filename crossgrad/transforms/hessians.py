"""hessian: the Jacobian of the Jacobian, with the composition chosen per backend.

The composition is chosen per backend by the measured rule of NOTE [hessian strategy]
in :mod:`crossgrad.transforms.policy`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from crossgrad import option_checks, spec
from crossgrad.backends.base import Backend
from crossgrad.transforms import adjoint, policy
from crossgrad.transforms.builtin import builtin_serves, needs_composition, via_builtin
from crossgrad.transforms.call import Call, Memo, Route, routed
from crossgrad.transforms.jacobians import jacobian_of


@dataclasses.dataclass(frozen=True)
class HessianPlan:
    """What a Hessian transform does for one argument signature (NOTE [plans] in
    :mod:`crossgrad.transforms.jacobians`): the strategy (outer-inner Jacobian modes), what
    the two Jacobians are built from (``"builtin"``: the framework's hessian for fwd-rev, else
    its jacrev/jacfwd; ``"composed"``: crossgrad's; ``"auto"``: each Jacobian's own plan),
    whether it was planned for a call being recorded for compilation (where that changed the
    choice, ``why`` says so), and why."""

    transform: str
    strategy: str
    impl: str
    compiled: bool
    why: str

    def __str__(self) -> str:
        return f"{self.transform}: strategy {self.strategy}, {self.impl} Jacobians; {self.why}"


def hessian(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, strategy: spec.Strategy = "auto",
            chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]:
    """Hessian: the Jacobian of the Jacobian.

    Returns a function with ``f``'s arguments returning, for each output leaf of
    shape ``out`` and input leaves of shapes ``in_i``, ``in_j``, arrays of shape
    ``out + in_i + in_j``, nested as output pytree, argnums ``i``, argument pytree,
    argnums ``j``, argument pytree (JAX's nesting: a tuple ``argnums`` gives blocks
    ``H[i][j]``).  A scalar output gives the usual ``in + in`` matrix; array outputs
    give one Hessian per output element, as ``jax.hessian`` and
    ``torch.func.hessian`` do.  ``(hessian, aux)`` with ``has_aux``.

    Args:
        strategy: ``"fwd-rev"``, ``"rev-rev"``, ``"rev-fwd"``, ``"fwd-fwd"`` (outer
            over inner mode), ``"loop"`` (the reference) or ``"auto"``: on torch
            ``"rev-rev"`` for a scalar output and ``"fwd-rev"`` otherwise; on jax
            ``"fwd-rev"`` for a scalar output and ``"fwd-fwd"`` otherwise
            (measurements in NOTE [hessian strategy],
            :mod:`crossgrad.transforms.policy`).
        chunk_size: bounds the basis vectors of each of the two Jacobians;
            ``"auto"`` sizes the outer Jacobian's chunks from the memory budget
            (:func:`crossgrad.memory_budget`).
        impl: ``"builtin"`` builds the strategy from the framework's jacrev/jacfwd
            (``"fwd-rev"`` is ``torch.func.hessian`` / ``jax.hessian``), ``"composed"``
            from crossgrad's.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.hessian(lambda x: (x ** 3).sum())(torch.tensor([1.0, 2.0]))
        tensor([[ 6.,  0.],
                [ 0., 12.]])
    """
    option_checks.check_callable("hessian", f)
    option_checks.validate_options("hessian", argnums=argnums, has_aux=has_aux, strategy=strategy, chunk_size=chunk_size,
                                   impl=impl)
    return hessian_of(backend, "hessian", f, argnums, has_aux, strategy, chunk_size, impl)


def hessian_of(backend: Backend, name: str, f: Callable[..., Any], argnums: Any, has_aux: bool, strategy: str,
               chunk_size: int | str | None, impl: str, *, prechecked: bool = False) -> Callable[..., Any]:
    """The Hessian of ``f`` by ``strategy``, for the public transform ``name``, whose options
    are already validated: a plan per argument signature, kept with the route it builds in
    one cache (:class:`Route`).  ``prechecked``: the transform it is part of checks each
    signature before calling it (as :func:`jacobian_of`'s)."""
    hess = _Hessian(backend, name, f, argnums, has_aux, strategy, chunk_size, impl, prechecked)

    return routed(hess.planned)


class _Hessian:
    """One transformed function: its validated options and its one cache, a :class:`Route`
    per argument signature (the plan, and the Jacobian of the Jacobian or the framework's
    hessian it runs)."""

    def __init__(self, backend: Backend, name: str, f: Callable[..., Any], argnums: Any, has_aux: bool, strategy: str,
                 chunk_size: int | str | None, impl: str, prechecked: bool = False):
        self.backend, self.name, self.f, self.argnums, self.has_aux = backend, name, f, argnums, has_aux
        self.strategy, self.chunk_size, self.impl, self.prechecked = strategy, chunk_size, impl, prechecked
        self.known = Memo()

    def planned(self, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Route:
        # A call recorded for compilation (cg.jit's traced routes) may take another strategy
        # than an eager one (NOTE [hessian strategy]): both are planned apart.
        compiled = self.strategy == "auto" and self.impl == "auto" and self.backend.taylor.being_compiled()
        shapes = Memo.key(args)
        key = None if shapes is None else (*shapes, compiled)
        known = self.known.get(key)
        if known is not None:
            return known  # type: ignore[no-any-return]
        call = Call(self.name, self.backend, self.f, args, kwargs, self.argnums, self.has_aux, checked=self.prechecked)
        if key is None:  # arguments that are not all arrays: the plan is kept by the primals' signature
            key = ("primals", len(args), Memo.key(tuple(call.primals)), compiled, needs_composition(self.backend, args))
            known = self.known.get(key)
            if known is not None:
                return known  # type: ignore[no-any-return]
        plan = self._decide(call, args, compiled)
        return self.known.put(key, Route(plan, self._route(plan.strategy, plan.impl)))  # type: ignore[no-any-return]

    def _decide(self, call: Call, args: tuple[Any, ...], compiled: bool) -> HessianPlan:
        name, strategy, impl, backend = self.name, self.strategy, self.impl, self.backend
        fallback = strategy if strategy != "auto" else "fwd-rev"
        if call.has_no_elements():
            # torch.func's built-ins fail on empty inputs: the composition builds the empty blocks.
            return HessianPlan(name, fallback, "composed", compiled, "no elements: the composition builds the empty blocks")
        if needs_composition(backend, args):
            return HessianPlan(name, fallback, "composed", compiled, "static or None leaves, which the built-ins refuse")
        if strategy != "auto":
            return HessianPlan(name, strategy, impl, compiled, f"strategy={strategy!r} given")
        adjoint.check(name, backend, call)  # NOTE [adjoint check]
        outputs = call.output_shapes()
        chosen: tuple[str, str | None]
        if any(dtype.startswith("complex") for _, _, dtype in outputs):
            chosen, why = ("fwd-fwd", None), "auto: complex outputs, which fwd-fwd alone answers"
        else:
            size = sum(math.prod(shape) for shape, _, _ in outputs)
            chosen = policy.hessian_strategy(backend.name, lambda: size)
            why = (f"auto: {'a scalar output' if size == 1 else f'{size} output elements'} on {backend.name} "
                   "(NOTE [hessian strategy])")
        s, measured = policy.compiled_hessian(backend.name, chosen, compiled)
        if compiled and (s, measured) != chosen:
            why += ", compiled: torch's own jacrev(jacrev) compiles faster"
        return HessianPlan(name, s, measured if impl == "auto" and measured else impl, compiled, why)

    def _route(self, s: str, how: str) -> Callable[..., Any]:
        """The function strategy ``s`` computes the Hessian with, its Jacobians by ``how``."""
        backend, name, f, argnums, has_aux, chunk_size = (self.backend, self.name, self.f, self.argnums,
                                                          self.has_aux, self.chunk_size)
        if s == "fwd-rev" and builtin_serves(name, backend, how, "hessian", chunk_size=chunk_size):
            make = backend.builtins.hessian
            return via_builtin(backend, name, lambda g, nums: make(g, nums, has_aux, chunk_size), f,
                               argnums, has_aux, scalar=False, real=True, prechecked=True)
        outer, inner = ("loop", "loop") if s == "loop" else s.split("-")
        # Under the outer Jacobian's vmap the inner one cannot see how many rows share its
        # memory: "auto" chunks the outer one only.
        inner_chunks = None if chunk_size == "auto" else chunk_size
        # The Hessian checked the signature its route is made for: its Jacobians do not again.
        inner_f = jacobian_of(backend, name, f, argnums, has_aux, inner, inner_chunks, how, prechecked=True)
        return jacobian_of(backend, name, inner_f, argnums, has_aux, outer, chunk_size, how, prechecked=True)
