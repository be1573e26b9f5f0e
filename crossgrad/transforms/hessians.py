"""hessian: the Jacobian of the Jacobian, with the composition chosen per backend.

The composition is chosen per backend by the measured rule of NOTE [hessian strategy]
in :mod:`crossgrad.transforms.policy`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from crossgrad import spec
from crossgrad.backends.base import Backend
from crossgrad.transforms import adjoint, policy
from crossgrad.transforms.builtin import builtin_serves, needs_composition, via_builtin
from crossgrad.transforms.call import Call, Memo
from crossgrad.transforms.jacobians import jacobian_of


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
    spec.check_callable("hessian", f)
    spec.validate_options("hessian", argnums=argnums, has_aux=has_aux, strategy=strategy, chunk_size=chunk_size,
                          impl=impl)
    return hessian_of(backend, "hessian", f, argnums, has_aux, strategy, chunk_size, impl)


def hessian_of(backend: Backend, name: str, f: Callable[..., Any], argnums: Any, has_aux: bool, strategy: str,
               chunk_size: int | str | None, impl: str) -> Callable[..., Any]:
    """The Hessian of ``f`` by ``strategy``, for the public transform ``name``, whose options
    are already validated."""
    built: dict[tuple[str, str], Callable[..., Any]] = {}
    chosen: dict[tuple[Any, ...], tuple[str, str | None]] = {}

    def for_strategy(s: str, how: str) -> Callable[..., Any]:
        if (s, how) not in built:
            if s == "fwd-rev" and builtin_serves(name, backend, how, "hessian", chunk_size=chunk_size):
                make = backend.builtins.hessian
                fn = via_builtin(backend, name, lambda g, nums: make(g, nums, has_aux, chunk_size), f,
                                       argnums, has_aux, scalar=False, real=True)
            else:
                outer, inner = ("loop", "loop") if s == "loop" else s.split("-")
                # Under the outer Jacobian's vmap the inner one cannot see how many rows
                # share its memory: "auto" chunks the outer one only.
                inner_chunks = None if chunk_size == "auto" else chunk_size
                inner_f = jacobian_of(backend, name, f, argnums, has_aux, inner, inner_chunks, how)
                fn = jacobian_of(backend, name, inner_f, argnums, has_aux, outer, chunk_size, how)
            built[(s, how)] = fn
        return built[(s, how)]

    memo = Memo()

    def hessian_f(*args: Any, **kwargs: Any) -> Any:
        # A call recorded for compilation (cg.jit's traced routes) may take another strategy
        # than an eager one (NOTE [hessian strategy]): both are remembered apart.
        compiled = strategy == "auto" and impl == "auto" and backend.taylor.being_compiled()
        shapes = Memo.key(args)
        key = None if shapes is None else (*shapes, compiled)
        picked = memo.get(key)
        if picked is None:
            call = Call(name, backend, f, args, kwargs, argnums, has_aux)
            if call.has_no_elements():
                # No elements, nothing to differentiate: the composition builds the
                # empty blocks (torch.func's built-ins fail on empty inputs).
                picked = (strategy if strategy != "auto" else "fwd-rev", "composed", True)
            elif needs_composition(backend, args):
                # torch.func refuses None leaves, both frameworks static leaves: the composition takes them.
                picked = (strategy if strategy != "auto" else "fwd-rev", "composed", True)
            elif strategy != "auto":
                picked = (strategy, None, False)
            else:
                sig = call.signature()
                if sig not in chosen:
                    adjoint.check(name, backend, call)  # NOTE [adjoint check]
                    outputs = call.output_shapes()
                    if any(dtype.startswith("complex") for _, _, dtype in outputs):
                        chosen[sig] = ("fwd-fwd", None)  # the only strategy that answers for complex outputs
                    else:
                        chosen[sig] = policy.hessian_strategy(backend.name, lambda: sum(
                            math.prod(shape) for shape, _, _ in outputs))
                picked = (*policy.compiled_hessian(backend.name, chosen[sig], compiled), False)
            memo.put(key, picked)
        s, picked_impl, forced = picked
        how = picked_impl if forced or (impl == "auto" and picked_impl) else impl
        return for_strategy(s, how)(*args, **kwargs)

    return hessian_f
