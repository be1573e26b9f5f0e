"""randomness= on vmap and the batched transforms: refused by default, one draw per sample
("different") or per batch ("same") across the batch, and one draw for all the basis vectors
of one sample's derivative (the derivative of one realization)."""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg
from crossgrad.testing import frameworks

needs_torch = pytest.mark.skipif("torch" not in frameworks.selected(), reason="torch not selected")


def dropout_problem():
    import torch

    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.5

    def f(v):
        y = torch.nn.functional.dropout(v, 0.5, training=True)
        return y * y.sum()

    return f, x


def check_one_realization(jac, x):
    """``J = diag(m) s + y m'`` for one mask ``m`` in {0, 2}, ``y = m x``, ``s = sum(y)``: every
    basis vector of the sample saw the same draw."""
    m = 2.0 * (np.abs(jac).sum(1) > 0)
    y = m * x
    expected = np.diag(m) * y.sum() + np.outer(y, m)
    np.testing.assert_allclose(jac, expected, rtol=1e-12, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("mode", ["rev", "fwd"])
def test_different_draws_per_sample_one_per_derivative(mode):
    import torch

    f, x = dropout_problem()
    with torch.random.fork_rng():
        torch.manual_seed(1)
        jac = cg.torch.batched_jacobian(f, mode=mode, randomness="different")(x).numpy()
    for b in range(x.shape[0]):
        check_one_realization(jac[b], x[b].numpy())
    masks = {tuple(np.abs(j).sum(1) > 0) for j in jac}
    assert len(masks) > 1  # one draw per sample


@needs_torch
def test_same_draw_for_the_batch():
    import torch

    f, x = dropout_problem()
    same_x = x[:1].expand(4, -1).clone()
    with torch.random.fork_rng():
        torch.manual_seed(2)
        jac = cg.torch.batched_jacobian(f, randomness="same")(same_x).numpy()
        h = cg.torch.batched_hessian(lambda v: (torch.nn.functional.dropout(v, 0.5) ** 3).sum(),
                                     randomness="same")(same_x).numpy()
        out = cg.torch.vmap(lambda v: torch.nn.functional.dropout(v, 0.5), randomness="same")(same_x).numpy()
    assert all(np.array_equal(jac[0], j) for j in jac) and all(np.array_equal(h[0], k) for k in h)
    assert all(np.array_equal(out[0], o) for o in out)
    check_one_realization(jac[0], same_x[0].numpy())


@needs_torch
@pytest.mark.parametrize("transform", ["vmap", "batched_jacobian", "batched_hessian"])
def test_random_operations_are_refused_by_default(transform):
    import torch

    _, x = dropout_problem()
    g = lambda v: (torch.nn.functional.dropout(v, 0.5) ** 2).sum()  # noqa: E731
    with torch.random.fork_rng(), pytest.raises(cg.RandomnessError, match="randomness='different'"):
        getattr(cg.torch, transform)(g)(x)


@pytest.mark.parametrize("transform", ["vmap", "batched_jacobian", "batched_hessian"])
def test_the_option_is_validated_alike_and_jax_results_do_not_change(transform):
    messages = set()
    for name in frameworks.selected():
        with pytest.raises(cg.OptionError) as info:
            getattr(cg.backend(name), transform)(lambda v: v, randomness="sometimes")
        messages.add(str(info.value))
    assert len(messages) == 1
    if "jax" in frameworks.selected():
        import jax

        x = jax.random.normal(jax.random.key(0), (3, 4))
        f = lambda v: (v ** 3).sum()  # noqa: E731
        plain = getattr(cg.jax, transform)(f)(x)
        for randomness in ("different", "same"):
            np.testing.assert_array_equal(getattr(cg.jax, transform)(f, randomness=randomness)(x), plain)
