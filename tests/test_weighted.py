"""Weighted Laplacians, trace(C H), on every backend against the dense Hessian.

Oracle: ``trace(C @ H)`` with ``H`` from crossgrad's dense ``hessian`` (float64), for
symmetric, indefinite, non-symmetric and low-rank ``C``; the batched form against the
per-sample one.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks

N = 5


def function(backend):
    o = frameworks.ops(backend.name)
    w = frameworks.convert(np.random.default_rng(4).standard_normal((3, N)), backend.name, "float64")
    return lambda x: o.sum(o.tanh(w @ x) ** 2) + o.sum(o.sin(x) * x[0])


def coefficient_matrices():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((N, N))
    low = rng.standard_normal((N, 2))
    return {"indefinite": a + a.T, "non-symmetric": a, "low rank": low @ low.T, "zero": np.zeros((N, N))}


@pytest.mark.parametrize("kind", list(coefficient_matrices()))
def test_weighted_laplacian_is_the_trace_of_c_h(backend, kind, rng):
    c = coefficient_matrices()[kind]
    f = function(backend)
    x = frameworks.convert(rng.standard_normal(N), backend.name, "float64")
    hessian = frameworks.to_numpy(frameworks.quick(backend, backend.hessian(f))(x))
    got = frameworks.quick(backend, backend.weighted_laplacian(f, c))(x)
    np.testing.assert_allclose(frameworks.to_numpy(got), np.trace(c @ hessian), **TOL["float64"]["same"])


def test_batched_weighted_laplacian_is_the_per_sample_one(backend, rng):
    c = coefficient_matrices()["indefinite"]
    f = function(backend)
    xs = frameworks.convert(rng.standard_normal((4, N)), backend.name, "float64")
    got = frameworks.to_numpy(frameworks.quick(backend, backend.batched_weighted_laplacian(f, c))(xs))
    one = frameworks.quick(backend, backend.weighted_laplacian(f, c))
    expected = [frameworks.to_numpy(one(xs[i])) for i in range(4)]
    np.testing.assert_allclose(got, expected, **TOL["float64"]["same"])


def test_the_estimator_is_unbiased_on_average(backend, rng):
    c = coefficient_matrices()["low rank"]
    f = function(backend)
    x = frameworks.convert(rng.standard_normal(N), backend.name, "float64")
    exact = float(frameworks.to_numpy(frameworks.quick(backend, backend.weighted_laplacian(f, c))(x)))
    estimates = [float(frameworks.to_numpy(frameworks.quick(backend, backend.weighted_laplacian(
        f, c, estimator="hutchinson", samples=64, key=s))(x))) for s in range(4)]
    assert abs(np.mean(estimates) - exact) <= 4 * np.std(estimates) / np.sqrt(4) + 1e-12


def test_bad_coefficients_are_named(backend, rng):
    f = function(backend)
    x = frameworks.convert(rng.standard_normal(N), backend.name, "float64")
    with pytest.raises(cg.OptionError, match="coefficients of shape"):
        backend.weighted_laplacian(f, np.eye(N + 1))(x)
    with pytest.raises(cg.OptionError, match="square coefficient matrix"):
        backend.weighted_laplacian(f, np.ones((N, 2)))
    with pytest.raises(cg.ArgnumsTypeError, match="an int argnums"):
        backend.weighted_laplacian(f, np.eye(N), argnums=(0,))


def array_module(backend):
    if backend.name == "torch":
        import torch

        return torch
    import jax.numpy

    return jax.numpy


def coefficient_function(backend):
    # A state-dependent diffusion, indefinite and non-symmetric: outer(sin x, x) + diag(x^2) - I/2.
    xp = array_module(backend)
    return lambda x: xp.sin(x)[:, None] * x[None, :] + xp.diag(x ** 2) - 0.5 * xp.eye(N, dtype=x.dtype)


def test_per_point_coefficients_are_traced_against_the_hessian_at_each_point(backend, rng):
    f, c = function(backend), coefficient_function(backend)
    xs = frameworks.convert(rng.standard_normal((3, N)), backend.name, "float64")
    one = frameworks.quick(backend, backend.weighted_laplacian(f, c))
    batched = frameworks.to_numpy(frameworks.quick(backend, backend.batched_weighted_laplacian(f, c))(xs))
    dense = frameworks.quick(backend, backend.hessian(f))
    for i in range(3):
        expected = np.trace(frameworks.to_numpy(c(xs[i])) @ frameworks.to_numpy(dense(xs[i])))
        np.testing.assert_allclose(frameworks.to_numpy(one(xs[i])), expected, **TOL["float64"]["same"])
        np.testing.assert_allclose(batched[i], expected, **TOL["float64"]["same"])
    given = np.stack([frameworks.to_numpy(c(xs[i])) for i in range(3)])
    from_array = frameworks.quick(backend, backend.batched_weighted_laplacian(
        f, frameworks.convert(given, backend.name, "float64")))(xs)
    np.testing.assert_allclose(frameworks.to_numpy(from_array), batched, **TOL["float64"]["same"])


def test_per_point_coefficients_of_the_wrong_shape_are_named(backend, rng):
    f = function(backend)
    x = frameworks.convert(rng.standard_normal(N), backend.name, "float64")
    xp = array_module(backend)
    with pytest.raises(cg.OptionError, match="coefficients of shape"):
        backend.weighted_laplacian(f, lambda x: xp.eye(N + 1, dtype=x.dtype))(x)
    xs = frameworks.convert(rng.standard_normal((3, N)), backend.name, "float64")
    with pytest.raises(cg.OptionError, match="one 5 x 5 coefficient matrix per sample"):
        backend.batched_weighted_laplacian(f, frameworks.convert(np.ones((2, N, N)), backend.name, "float64"))(xs)
