"""Where torch and jax disagree by design: derivatives at non-smooth points.

Each row of the README's "known differences" table is recorded here as today's
behaviour of each framework (through crossgrad, which passes them through unchanged).
If a framework changes, this test fails and the table must be updated.  The parity
tests sample away from these points on purpose.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg
from crossgrad.testing import frameworks

pytestmark = pytest.mark.skipif(len(frameworks.selected()) < 2, reason="compares both backends")


def _abs(name):
    import jax.numpy as jnp
    import torch

    return torch.abs if name == "torch" else jnp.abs


def _norm(name):
    import jax.numpy as jnp
    import torch

    return torch.linalg.norm if name == "torch" else jnp.linalg.norm


CASES = {
    # name: (transform(backend name) -> value at the kink, recorded torch, recorded jax, the truth)
    "abs'(0)": (lambda n: cg.backend(n).grad(lambda x: _abs(n)(x))(frameworks.ops(n).asarray(0.0, "float64")),
                0.0, 1.0, "undefined (subgradient [-1, 1])"),
    "grad |x| at x = 0": (lambda n: cg.backend(n).grad(lambda x: _norm(n)(x))(frameworks.ops(n).asarray(np.zeros(3), "float64")),
                          0.0, float("nan"), "undefined (subgradient: the unit ball)"),
    # Forward over reverse, the frameworks' own hessian; reverse over reverse gives NaN on both.
    "hessian exp(-|a-b|^2) at a = b (fwd-rev)": (
        lambda n: cg.backend(n).hessian(lambda a, b: frameworks.ops(n).exp(-_norm(n)(a - b) ** 2), strategy="fwd-rev")(
            *(frameworks.ops(n).asarray(np.ones(2), "float64") for _ in range(2))),
        0.0, float("nan"), "-2 I (smooth: |a-b|^2 has no kink)"),
    "hessian exp(-|a-b|^2) at a = b (rev-rev)": (
        lambda n: cg.backend(n).hessian(lambda a, b: frameworks.ops(n).exp(-_norm(n)(a - b) ** 2), strategy="rev-rev")(
            *(frameworks.ops(n).asarray(np.ones(2), "float64") for _ in range(2))),
        float("nan"), float("nan"), "-2 I"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_recorded_behaviour_at_non_smooth_points(case):
    compute, torch_value, jax_value, _ = CASES[case]
    for name, recorded in (("torch", torch_value), ("jax", jax_value)):
        got = frameworks.to_numpy(compute(name))
        if np.isnan(recorded):
            assert np.isnan(got).all(), f"{name}: {got}"
        else:
            np.testing.assert_array_equal(got, np.full_like(got, recorded), err_msg=name)
