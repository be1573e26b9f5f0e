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


def test_a_write_on_a_later_call_is_still_reported():
    """After a call that wrote nothing, the caller's tensors are watched, not copied (NOTE
    [input writes]): a write on a later call is reported, and says the array changed."""
    calls = []

    def sometimes(x):
        calls.append(1)
        if len(calls) > 1:
            x.mul_(2.0)
        return x * x

    f = cg.torch.jacfwd(sometimes)
    x = torch.ones(3)
    f(x)
    with pytest.raises(cg.InputMutationError, match="the caller's array has been changed"):
        f(x)


def test_copies_only_until_a_call_wrote_nothing(monkeypatch):
    from crossgrad.backends import load

    backend = load("torch")
    seen = []
    original = backend.arrays.shield

    def recording(args, kwargs, copies=True):
        seen.append(copies)
        return original(args, kwargs, copies)

    monkeypatch.setattr(backend.arrays, "shield", recording)
    f = cg.torch.jacrev(lambda v: v.sin())
    x = torch.ones(3)
    for _ in range(3):
        f(x)

    def g(v):
        return (v * v).sum()

    for _ in range(2):
        cg.torch.vjp(g, x)

    def with_aux(v):
        return (v * v).sum(), v.sum()

    for _ in range(2):  # the aux is stripped per call; the function is still the one that wrote nothing
        cg.torch.vjp(with_aux, x, has_aux=True)
    assert seen == [True, False, False, True, False, True, False]


ALIASES = {"itself": lambda v: v, "view": lambda v: v.view(3), "slice": lambda v: v[0:2],
           "unbind": lambda v: v.unbind(0)[0], "detach": lambda v: v.detach()}


@pytest.mark.parametrize("calls", [1, 2])
@pytest.mark.parametrize("alias", list(ALIASES))
def test_results_never_alias_the_callers_tensor(calls, alias):
    f = cg.torch.vmap(ALIASES[alias])
    x = torch.ones(4, 3)
    for _ in range(calls):
        out = f(x)
    out.mul_(5.0)
    assert torch.equal(x, torch.ones(4, 3)), alias
