"""Evaluations crossgrad adds to the user's function leave the caller's arrays, random
state and functions as they were (regressions of silent side effects)."""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg
from crossgrad.testing import frameworks
from crossgrad.transforms.common import Call


def test_the_shape_probe_runs_on_copies(backend):
    """auto's extra evaluation of f (to learn the output size) never writes into the
    caller's arrays, differentiated or not."""
    if backend.name == "torch":
        def f(x, y):
            y.add_(1.0)
            x.mul_(3.0)
            return x * 2
    else:
        def f(x, y):
            return x * 2
    x = frameworks.convert(np.ones(3), backend.name, "float64")
    y = frameworks.convert(np.zeros(3), backend.name, "float64")
    call = Call("jacobian", backend.backend, f, (x, y), {}, 0, False)
    assert call.output_shapes() == [((3,), 8, "float64")]
    np.testing.assert_array_equal(frameworks.to_numpy(x), np.ones(3))
    np.testing.assert_array_equal(frameworks.to_numpy(y), np.zeros(3))


def test_auto_draws_as_one_call():
    """torch's global generator (jax has none) advances as one evaluation of f does,
    although auto evaluates f once more to choose its mode.  (A Hessian vmaps f, where
    a global draw is refused: RandomnessError.)"""
    torch = pytest.importorskip("torch")

    def noisy(x):
        return (x * torch.rand(3, dtype=x.dtype)).sum() * x

    x = torch.ones(3, dtype=torch.float64)
    with torch.random.fork_rng():
        start = torch.get_rng_state()
        noisy(x)
        after_one = torch.get_rng_state()
        torch.set_rng_state(start)
        cg.torch.jacobian(noisy, impl="composed")(x)
        assert torch.equal(torch.get_rng_state(), after_one)


# -- complex outputs of real inputs: forward answers, reverse refuses, never the real part --

def _complex_case(backend):
    import importlib

    mod = importlib.import_module("torch" if backend.name == "torch" else "jax.numpy")
    v = np.array([0.3, 0.7, -1.1])
    x = frameworks.convert(v, backend.name, "float64")
    return mod, v, x


@pytest.mark.parametrize("route", ["jacfwd", "jacobian", "jacobian fwd composed", "batched_jacobian"])
def test_complex_jacobians_by_forward_mode(backend, route):
    mod, v, x = _complex_case(backend)

    def f(x):
        return mod.exp(1j * x)

    expected = np.diag(1j * np.exp(1j * v))
    if route == "jacfwd":
        got = backend.jacfwd(f)(x)
    elif route == "jacobian":
        got = backend.jacobian(f)(x)  # auto picks forward mode for complex outputs
    elif route == "jacobian fwd composed":
        got = backend.jacobian(f, mode="fwd", impl="composed")(x)
    else:
        got = backend.batched_jacobian(f)(x[None])[0]
    np.testing.assert_allclose(frameworks.to_numpy(got), expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("strategy", ["auto", "fwd-fwd"])
def test_complex_hessians_by_forward_over_forward(backend, strategy):
    mod, v, x = _complex_case(backend)
    got = backend.hessian(lambda x: mod.exp(1j * x).sum(), strategy=strategy)(x)
    np.testing.assert_allclose(frameworks.to_numpy(got), np.diag(-np.exp(1j * v)), rtol=1e-12, atol=1e-14)


def _reverse_route(backend, route):
    mod, _, x = _complex_case(backend)

    def f(x):
        return mod.exp(1j * x)

    def total(x):
        return mod.exp(1j * x).sum()

    calls = {
        "jacrev": lambda: backend.jacrev(f)(x),
        "jacrev builtin": lambda: backend.jacrev(f, impl="builtin")(x),
        "loop": lambda: backend.jacobian(f, mode="loop")(x),
        "hessian fwd-rev": lambda: backend.hessian(total, strategy="fwd-rev")(x),
        "hessian rev-rev": lambda: backend.hessian(total, strategy="rev-rev")(x),
        "hessian loop": lambda: backend.hessian(total, strategy="loop")(x),
        "grad": lambda: backend.grad(total)(x),
        "value_and_grad": lambda: backend.value_and_grad(total)(x),
        "hvp": lambda: backend.hvp(total, (x,), (x,)),
    }
    return calls[route]()


@pytest.mark.parametrize("route", ["jacrev", "jacrev builtin", "loop", "hessian fwd-rev", "hessian rev-rev",
                                   "hessian loop", "grad", "value_and_grad", "hvp"])
def test_complex_outputs_refused_by_reverse_routes_with_one_message(route):
    """The same named error with the same text on both backends (jax alone raises
    TypeError, torch a RuntimeError or nothing: crossgrad's loop kept the real part)."""
    messages = []
    for name in frameworks.selected():
        with pytest.raises(cg.ComplexOutputError) as err:
            _reverse_route(cg.backend(name), route)
        messages.append(str(err.value))
    assert len(set(messages)) == 1, messages
    assert "expected real outputs for reverse mode" in messages[0]
