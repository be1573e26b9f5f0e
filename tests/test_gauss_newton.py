"""The Gauss-Newton operator and the spectral density, on every backend.

Oracles: ``J^T H_l J`` from crossgrad's dense ``jacobian`` of the model and ``hessian`` of
the loss (float64); for the spectral density, the eigenvalues of a matrix with a known
spectrum (its traces of functions, and where its mass lies).
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks

N_IN, C = 4, 3


def problem(backend):
    o = frameworks.ops(backend.name)
    rng = np.random.default_rng(7)
    x = frameworks.convert(rng.standard_normal((C, N_IN)), backend.name, "float64")
    y = frameworks.convert(rng.standard_normal(C), backend.name, "float64")
    w = frameworks.convert(rng.standard_normal(N_IN), backend.name, "float64")
    b = frameworks.convert(rng.standard_normal(C), backend.name, "float64")

    def model(w, b):
        return {"z": o.tanh(x @ w + b), "scale": o.sum(w * w)}

    def loss(out):  # convex in the output: a softplus fit plus a quadratic penalty
        return o.sum(o.log(1 + o.exp(out["z"] - y))) + 0.5 * out["scale"] ** 2

    return model, loss, w, b


def oracle(backend, model, loss, w, b):
    """J^T H_l J over the output (z, scale), flattened, and the input (w, b)."""
    jac = frameworks.quick(backend, backend.jacobian(model, argnums=(0, 1)))(w, b)
    rows = [np.concatenate([frameworks.to_numpy(block) .reshape(size, -1) for block in jac[name]], axis=1)
            for name, size in (("z", C), ("scale", 1))]
    j = np.concatenate(rows, axis=0)  # (C + 1, N_IN + C)
    out = model(w, b)

    def flat_loss(v):
        return loss({"z": v[:C], "scale": v[C]})

    z = frameworks.convert(np.concatenate([frameworks.to_numpy(out["z"]), [frameworks.to_numpy(out["scale"])]]),
                           backend.name, "float64")
    h = frameworks.to_numpy(frameworks.quick(backend, backend.hessian(flat_loss))(z))
    return j.T @ h @ j


def test_the_gauss_newton_operator_is_j_transpose_h_j(backend):
    model, loss, w, b = problem(backend)
    expected = oracle(backend, model, loss, w, b)
    g = backend.ggn_operator(model, loss, w, b, argnums=(0, 1))
    assert g.shape == (N_IN + C, N_IN + C)
    close = TOL["float64"]["same"]
    np.testing.assert_allclose(frameworks.to_numpy(g.dense()), expected, **close)
    v = np.random.default_rng(1).standard_normal((N_IN + C, 2))
    got = frameworks.to_numpy(g @ frameworks.convert(v, backend.name, "float64"))
    np.testing.assert_allclose(got, expected @ v, **close)
    np.testing.assert_allclose(frameworks.to_numpy(g @ frameworks.convert(v[:, 0], backend.name, "float64")),
                               expected @ v[:, 0], **close)
    np.testing.assert_allclose(frameworks.to_numpy(g.trace()), np.trace(expected), **close)
    np.testing.assert_allclose(frameworks.to_numpy(g.diagonal()), np.diag(expected), **close)
    # The model is nonlinear: the Gauss-Newton matrix is not the loss's Hessian.
    full = backend.hessian_operator(lambda w, b: loss(model(w, b)), w, b, argnums=(0, 1)).dense()
    assert np.abs(frameworks.to_numpy(full) - expected).max() > 1e-3
    # Positive semi-definite for a convex loss; the eigenvalues are the dense ones.
    top = frameworks.to_numpy(g.eigenvalues(2))
    np.testing.assert_allclose(top, np.sort(np.linalg.eigvalsh(expected))[::-1][:2], **close)
    assert np.linalg.eigvalsh(expected).min() > -1e-10


def test_the_gauss_newton_estimators_are_those_of_its_products(backend):
    model, loss, w, b = problem(backend)
    expected = oracle(backend, model, loss, w, b)
    g = backend.ggn_operator(model, loss, w, b, argnums=(0, 1))
    got = g.estimate_trace("xnystrace", samples=N_IN + C, key=3)  # as many directions as the size: exact
    assert got.estimate == pytest.approx(np.trace(expected), rel=1e-8)
    estimates = [float(frameworks.to_numpy(g.trace("hutchinson", samples=32, key=s))) for s in range(6)]
    assert abs(np.mean(estimates) - np.trace(expected)) <= 5 * np.std(estimates) / np.sqrt(6) + 1e-12
    with pytest.raises(cg.OptionError, match="estimator"):
        g.trace("hutch++")


def test_bad_gauss_newton_arguments_are_named(backend):
    model, loss, w, b = problem(backend)
    with pytest.raises(cg.OptionTypeError, match="callable"):
        backend.ggn_operator(model, 3, w, b)
    with pytest.raises(cg.OptionError, match="at least one primal"):
        backend.ggn_operator(model, loss)
    g = backend.ggn_operator(model, loss, w, b)
    assert repr(g).startswith("<GaussNewtonOperator 4x4")


def test_the_spectral_density_puts_its_mass_on_the_spectrum(backend):
    rng = np.random.default_rng(0)
    n = 60
    u, _ = np.linalg.qr(rng.standard_normal((n, n)))
    lam = np.concatenate([np.full(40, 1.0), np.full(20, 5.0)])  # two clusters, 2:1

    def operator(values):
        a = frameworks.convert((u * values) @ u.T, backend.name, "float64")
        x = frameworks.convert(np.zeros(n), backend.name, "float64")
        return backend.hessian_operator(lambda x: 0.5 * (x @ (a @ x)), x)

    h = operator(lam)
    sd = h.spectral_density(steps=10, samples=4, key=2)
    assert sd.nodes.shape == (4, 10) and sd.n == n
    np.testing.assert_allclose(sd.weights.sum(axis=1), 1.0, rtol=1e-10)
    # Two eigenvalues: each vector's Krylov space closes after two steps and its quadrature
    # is exact for every g: the estimate of tr g(A) is Hutchinson's on g(A) with the same vectors.
    for g in (lambda t: t, lambda t: t ** 3, np.log):
        same_vectors = operator(g(lam)).estimate_trace("hutchinson", samples=4, key=2).estimate
        assert sd.trace_of(g) == pytest.approx(same_vectors, rel=1e-8)
    grid = np.linspace(0, 6, 601)
    density = sd.density(grid, width=0.05)
    assert np.trapezoid(density, grid) == pytest.approx(1.0, rel=1e-3)
    near = [np.trapezoid(density[(grid > c - 0.5) & (grid < c + 0.5)], grid[(grid > c - 0.5) & (grid < c + 0.5)])
            for c in (1.0, 5.0)]
    assert sum(near) == pytest.approx(1.0, rel=1e-3)
    assert abs(near[1] - 1 / 3) < 0.15  # four vectors' share of the upper cluster: sd about 0.04
    with pytest.raises(cg.OptionError, match="positive int steps"):
        h.spectral_density(steps=0)
