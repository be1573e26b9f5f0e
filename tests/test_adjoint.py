"""NOTE [adjoint check]: auto refuses a function whose forward and reverse derivatives
disagree, instead of an answer that depends on the mode it picks."""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg
from crossgrad.testing import frameworks

needs_torch = pytest.mark.skipif("torch" not in frameworks.selected(), reason="torch not selected")


def stopped_in_reverse():
    import torch

    def f(x):
        with torch.no_grad():  # stops reverse mode only
            y = x * 3.0
        return y + x ** 2

    return f


def wrong_jvp():
    import torch

    class Double(torch.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x):
            return x * 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            return g * 2

        @staticmethod
        def jvp(ctx, t):
            return t * 3  # wrong

    return Double.apply


@needs_torch
@pytest.mark.parametrize("make", [stopped_in_reverse, wrong_jvp])
@pytest.mark.parametrize("transform", ["jacobian", "hessian"])
def test_auto_refuses_modes_that_disagree(make, transform):
    import torch

    f = make()
    g = (lambda x: (f(x) ** 3).sum()) if transform == "hessian" else f
    x = torch.linspace(0.5, 2.0, 5, dtype=torch.float64)
    with pytest.raises(cg.GradientCheckError, match="forward and reverse mode to agree"):
        getattr(cg.torch, transform)(g)(x)
    # An explicit choice is the user's: no check.
    explicit = dict(mode="rev") if transform == "jacobian" else dict(strategy="rev-rev")
    assert getattr(cg.torch, transform)(g, **explicit)(x).shape[-1] == 5


def test_agreeing_modes_pass_and_traced_calls_are_not_checked(backend):
    x = frameworks.convert(np.linspace(0.5, 2.0, 5), backend.name, "float64")
    ops = frameworks.ops(backend.name)
    f = lambda v: ops.tanh(v) * ops.sin(v)  # noqa: E731
    assert backend.jacobian(f)(x).shape == (5, 5)
    assert backend.hessian(lambda v: ops.sum(f(v)))(x).shape == (5, 5)
    if backend.name == "jax":
        import jax

        assert jax.jit(backend.jacobian(f))(x).shape == (5, 5)  # abstract values: skipped, not failed


def test_a_float32_interior_of_a_float64_function_is_not_a_disagreement(backend):
    """float64 in and out, float32 inside: the two modes agree to float32's rounding, and
    the check's tolerance comes from the lowest precision computed."""
    if backend.name == "torch":
        import torch

        w = torch.linspace(-1.0, 1.0, 25).reshape(5, 5)
        f = lambda x: torch.tanh(w @ x.float()).double() * x.sum()  # noqa: E731
        x = torch.linspace(-0.5, 0.7, 5, dtype=torch.float64)
    else:
        import jax.numpy as jnp

        w = jnp.linspace(-1.0, 1.0, 25, dtype=jnp.float32).reshape(5, 5)
        f = lambda x: jnp.tanh(w @ x.astype(jnp.float32)).astype(jnp.float64) * x.sum()  # noqa: E731
        x = jnp.linspace(-0.5, 0.7, 5, dtype=jnp.float64)
    assert backend.jacobian(f)(x).shape == (5, 5)
    assert backend.hessian(lambda x: f(x).sum())(x).shape == (5, 5)


@needs_torch
def test_a_function_drawing_from_its_own_generator_is_not_judged():
    """f adds noise from a torch.Generator it closes over: each evaluation is another
    realization, so the check's jvp and vjp see two functions. The check then evaluates f
    once more, sees another value and does not judge (it raised GradientCheckError, saying
    f stops one mode). Oracle: the closed form; the Hessian of sum((x + c)^2) is 2 I for any
    noise c. The check still refuses a function whose modes disagree
    (test_auto_refuses_modes_that_disagree)."""
    import torch

    gen = torch.Generator().manual_seed(0)

    def f(x):
        h = x + 0.1 * torch.randn(4, generator=gen, dtype=x.dtype)
        return (h * h).sum()

    x = torch.tensor([0.5, -0.3, 0.8, 0.1], dtype=torch.float64)
    for _ in range(2):
        torch.testing.assert_close(cg.torch.hessian(f)(x), 2 * torch.eye(4, dtype=torch.float64))
