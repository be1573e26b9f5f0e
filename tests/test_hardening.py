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
    assert call.output_shapes() == [((3,), 8)]
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
