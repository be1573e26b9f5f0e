"""The biharmonic lap(lap f) on every backend against closed forms.

Oracles (float64): ``|x|^4`` (``8 n (n + 2)``); ``sum_k c_k tanh(w_k . x) + exp(a . x)``
(``sum_k c_k |w_k|^4 tanh''''(w_k . x) + |a|^4 exp(a . x)``, with
``tanh'''' = 8 t (1 - t^2)(2 - 3 t^2)``); ``prod(exp(x))`` (an operation of the general
rule: ``n^2 exp(sum x)``); ``sum cos`` through a complex intermediate (the nested route);
the batched form against the per-sample closed form.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks
from crossgrad.transforms.biharmonics import exact_directions

N = 3
RNG = np.random.default_rng(11)
W = RNG.standard_normal((4, N))
C = RNG.standard_normal(4)
A = 0.3 * RNG.standard_normal(N)


def tanh4(s):
    t = np.tanh(s)
    return 8 * t * (1 - t ** 2) * (2 - 3 * t ** 2)


def mlp_like(backend):
    o = frameworks.ops(backend.name)
    w, c, a = (frameworks.convert(v, backend.name, "float64") for v in (W, C, A))
    return lambda x: o.sum(c * o.tanh(w @ x)) + o.exp(o.sum(a * x))


def mlp_like_truth(x):
    norms = (W ** 2).sum(1)
    return float((C * norms ** 2 * tanh4(W @ x)).sum() + (A ** 2).sum() ** 2 * np.exp(A @ x))


def test_the_directions_sum_to_the_biharmonic_of_a_quartic():
    # For f = sum_ijkl T_ijkl x_i x_j x_k x_l, D4[v] = 24 T(v, v, v, v): the weighted sum
    # over the directions must be 24 sum_ij T_iijj (T symmetric), for every T.
    rng = np.random.default_rng(3)
    t = rng.standard_normal((4, 4, 4, 4))
    t = sum(np.transpose(t, p) for p in __import__("itertools").permutations(range(4))) / 24
    m, w = exact_directions(4)
    got = sum(wk * 24 * np.einsum("ijkl,i,j,k,l->", t, v, v, v, v) for v, wk in zip(m, w))
    assert m.shape == (16, 4)
    np.testing.assert_allclose(got, 24 * np.einsum("iijj->", t), rtol=1e-12)


def test_closed_forms(backend, rng):
    o = frameworks.ops(backend.name)
    x = rng.standard_normal(N)
    xt = frameworks.convert(x, backend.name, "float64")
    quartic = frameworks.quick(backend, backend.biharmonic(lambda y: o.sum(y * y) ** 2))(xt)
    np.testing.assert_allclose(frameworks.to_numpy(quartic), 8 * N * (N + 2), **TOL["float64"]["same"])
    got = frameworks.quick(backend, backend.biharmonic(mlp_like(backend)))(xt)
    np.testing.assert_allclose(frameworks.to_numpy(got), mlp_like_truth(x), **TOL["float64"]["same"])


def test_an_operation_of_the_general_rule(backend, rng):
    x = rng.standard_normal(N)
    prod = (lambda y: y.prod()) if backend.name == "torch" else (lambda y: __import__("jax").numpy.prod(y))
    o = frameworks.ops(backend.name)
    got = frameworks.quick(backend, backend.biharmonic(lambda y: prod(o.exp(y))))(
        frameworks.convert(x, backend.name, "float64"))
    np.testing.assert_allclose(frameworks.to_numpy(got), N ** 2 * np.exp(x.sum()), **TOL["float64"]["same"])


def test_a_program_the_rules_refuse_takes_the_nested_route(backend, rng, caplog):
    if backend.name == "torch":
        import torch

        def f(y):
            return torch.exp(1j * y).real.sum()
    else:
        import jax.numpy as jnp

        def f(y):
            return jnp.real(jnp.exp(1j * y)).sum()
    x = rng.standard_normal(N)
    with caplog.at_level("INFO", logger="crossgrad"):
        got = backend.biharmonic(f)(frameworks.convert(x, backend.name, "float64"))
    np.testing.assert_allclose(frameworks.to_numpy(got), np.cos(x).sum(), **TOL["float64"]["same"])
    assert "nested" in caplog.text


def test_batched_is_per_sample_with_unbatched_arguments(backend, rng):
    o = frameworks.ops(backend.name)
    xs = rng.standard_normal((5, N))
    w = frameworks.convert(W, backend.name, "float64")

    def f(w, x):
        return o.sum(o.tanh(w @ x))

    got = frameworks.quick(backend, backend.batched_biharmonic(f, argnums=1, in_axes=(None, 0)))(
        w, frameworks.convert(xs, backend.name, "float64"))
    norms = (W ** 2).sum(1)
    expected = [(norms ** 2 * tanh4(W @ x)).sum() for x in xs]
    np.testing.assert_allclose(frameworks.to_numpy(got), expected, **TOL["float64"]["same"])


def test_vector_outputs_and_chunks(backend, rng):
    o = frameworks.ops(backend.name)
    x = rng.standard_normal(N)
    f = backend.biharmonic(lambda y: o.tanh(frameworks.convert(W, backend.name, "float64") @ y), chunk_size=2)
    got = frameworks.to_numpy(frameworks.quick(backend, f)(frameworks.convert(x, backend.name, "float64")))
    np.testing.assert_allclose(got, (W ** 2).sum(1) ** 2 * tanh4(W @ x), **TOL["float64"]["same"])


def test_the_estimator_is_unbiased(backend, rng):
    x = rng.standard_normal(N)
    xt = frameworks.convert(x, backend.name, "float64")
    f = mlp_like(backend)
    draws = 6
    estimates = [float(frameworks.to_numpy(frameworks.quick(backend, backend.biharmonic(
        f, estimator="hutchinson", samples=256, key=s))(xt))) for s in range(draws)]
    # Unbiased: the mean within 4 standard errors of the truth (the spread of the draws).
    assert abs(np.mean(estimates) - mlp_like_truth(x)) <= 4 * np.std(estimates, ddof=1) / np.sqrt(draws)


@pytest.mark.parametrize("options, error, message", [
    ({"estimator": "hutch++"}, cg.OptionError, "estimator to be one of 'exact', 'hutchinson'"),
    ({"estimator": "hutchinson"}, cg.OptionTypeError, "a random key"),
    ({"key": 0}, cg.OptionError, "no key for estimator='exact'"),
])
def test_options_are_refused_with_the_same_message(backend, options, error, message):
    with pytest.raises(error, match=message):
        backend.biharmonic(lambda x: x.sum(), **options)
