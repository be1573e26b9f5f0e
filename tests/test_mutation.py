"""A function that writes into its inputs in place is reported, on every transform, and
the caller's tensor never changes.

Under torch.func's vmap and jacfwd such a write would reach the caller's tensor; under its
grad and jacrev torch refuses it.  crossgrad hands the function copies and raises
InputMutationError either way.  jax arrays are immutable: the same functions written for
jax cannot do it.
"""

from __future__ import annotations

import pytest

import crossgrad as cg

torch = pytest.importorskip("torch")


def mutating(x, *rest):
    x.mul_(2.0)
    return (x * x).sum()


def mutating_vector(x, *rest):
    x.mul_(2.0)
    return x * x


CALLS = {
    "grad": lambda ns, x: ns.grad(mutating)(x),
    "value_and_grad": lambda ns, x: ns.value_and_grad(mutating)(x),
    "vjp": lambda ns, x: ns.vjp(mutating_vector, x),
    "jvp": lambda ns, x: ns.jvp(mutating_vector, (x,), (torch.ones(3),)),
    "linearize": lambda ns, x: ns.linearize(mutating_vector, x),
    "vmap": lambda ns, x: ns.vmap(mutating_vector)(x[:, None]),
    "jacrev": lambda ns, x: ns.jacrev(mutating_vector)(x),
    "jacfwd": lambda ns, x: ns.jacfwd(mutating_vector)(x),
    "jacobian": lambda ns, x: ns.jacobian(mutating_vector)(x),
    "hessian": lambda ns, x: ns.hessian(mutating)(x),
    "hvp": lambda ns, x: ns.hvp(mutating, (x,), (torch.ones(3),)),
    "batched_jacobian": lambda ns, x: ns.batched_jacobian(mutating_vector)(x[:, None]),
    "batched_hessian": lambda ns, x: ns.batched_hessian(mutating)(x[:, None]),
}


@pytest.mark.parametrize("impl", ["builtin", "composed"])
@pytest.mark.parametrize("transform", list(CALLS))
def test_in_place_writes_to_inputs_are_reported(transform, impl):
    ns = cg.torch
    x = torch.ones(3)
    call = CALLS[transform]
    with pytest.raises(cg.InputMutationError) as info:
        call(_with_impl(ns, impl), x)
    assert torch.equal(x, torch.ones(3))  # prevented, not only detected
    assert str(info.value).startswith(f"{transform}: expected a function that leaves its inputs unchanged, but got ")
    assert str(info.value).endswith("Use out-of-place operations (y = x * 2 rather than x.mul_(2)), or work on a copy (x.clone()).")


class _with_impl:
    """The namespace with ``impl`` passed to every transform."""

    def __init__(self, ns, impl):
        self.ns, self.impl = ns, impl

    def __getattr__(self, name):
        method = getattr(self.ns, name)
        return lambda *a, **k: method(*a, impl=self.impl, **k)


def test_functions_that_do_not_write_are_untouched():
    x = torch.ones(3)
    before = x._version
    cg.torch.vmap(lambda v: v * 2.0)(x)
    cg.torch.jacfwd(lambda v: v * 2.0)(x)
    assert x._version == before
