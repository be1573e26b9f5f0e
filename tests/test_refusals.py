"""Inputs and mistakes that used to reach the framework raw, or pass silently: a right
answer (empty inputs give empty or zero results) or a named crossgrad error with the same
text on both backends."""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg
from crossgrad.testing import frameworks


def _x(backend, values, dtype="float64"):
    return frameworks.convert(np.asarray(values, dtype=np.float64), backend.name, dtype)


def _key(backend):
    if backend.name == "torch":
        return 0
    import jax

    return jax.random.PRNGKey(0)


@pytest.mark.parametrize("n", [0, 1, 3, 7])
def test_hutch_pp_with_more_samples_than_the_space_is_exact(backend, n):
    """With ``samples / 3 >= n`` (the default 64 for any n < 21, a 0-d input) the sketch
    spans the space: the estimate is the trace."""
    rng = np.random.default_rng(n)
    a = rng.normal(size=(max(n, 1), max(n, 1)))
    h = _x(backend, a @ a.T)
    x = _x(backend, rng.normal(size=n)) if n else _x(backend, 0.5)
    f = (lambda x: 0.5 * (x * (h @ x)).sum()) if n else (lambda x: 0.5 * h[0, 0] * x * x)
    got = backend.hessian_trace(f, estimator="hutch++", key=_key(backend))(x)
    np.testing.assert_allclose(frameworks.to_numpy(got), np.trace(a @ a.T), rtol=1e-8)


@pytest.mark.parametrize("transform", ["laplacian", "hessian_trace", "hessian_diagonal", "batched_laplacian"])
def test_inputs_without_elements_give_empty_results(backend, transform):
    """No coordinate: a zero trace of each output's shape, a diagonal with no elements."""
    batched = transform.startswith("batched")
    x = _x(backend, np.zeros((2, 0)) if batched else np.zeros(0))
    out = getattr(backend, transform)(lambda x: (x ** 3).sum() + 1.0)(x)
    expected = {"laplacian": (), "hessian_trace": (), "hessian_diagonal": (0,), "batched_laplacian": (2,)}[transform]
    assert tuple(np.shape(frameworks.to_numpy(out))) == expected
    assert not np.any(frameworks.to_numpy(out))


def test_hutchinson_on_an_empty_input_is_zero(backend):
    out = backend.hessian_trace(lambda x: (x ** 3).sum(), estimator="hutchinson", key=_key(backend))(_x(backend, []))
    assert float(frameworks.to_numpy(out)) == 0.0


def test_a_python_number_is_a_point_on_jax():
    """jax takes Python numbers where arrays go, and so do its curvature transforms."""
    pytest.importorskip("jax")
    assert float(cg.jax.laplacian(lambda x: x ** 3)(2.0)) == pytest.approx(12.0)
    assert float(cg.jax.hessian_diagonal(lambda x: x ** 3)(2.0)) == pytest.approx(12.0)


def test_half_precision_hutch_pp():
    torch = pytest.importorskip("torch")
    x = torch.ones(4, dtype=torch.float16)
    out = cg.torch.hessian_trace(lambda x: (x ** 2).sum(), estimator="hutch++", samples=12, key=0)(x)
    assert out.dtype == torch.float16 and float(out) == pytest.approx(8.0, rel=1e-2)


def test_batched_curvature_with_in_axes_mapping_nothing_is_refused(backend):
    """As batched_hessian: in_axes=None maps no argument (it used to compute one point)."""
    for transform in ("batched_laplacian", "batched_hessian_trace", "batched_hessian_diagonal", "batched_hessian"):
        with pytest.raises(cg.AxisError, match=rf"^{transform}: expected at least one argument with a mapped axis"):
            getattr(backend, transform)(lambda x: (x ** 2).sum(), in_axes=None)(_x(backend, [1.0, 2.0]))


@pytest.mark.parametrize("transform", ["laplacian", "hessian_trace", "hessian_diagonal"])
def test_an_integer_output_is_refused(backend, transform):
    """An integer output has no second derivatives (laplacian used to return None)."""
    with pytest.raises(cg.OutputError, match=rf"^{transform}: expected floating-point outputs"):
        getattr(backend, transform)(lambda x: (x > 0).sum())(_x(backend, [1.0, -2.0]))


def test_a_write_into_an_unbatched_buffer_under_vmap_is_named():
    torch = pytest.importorskip("torch")
    buf = torch.zeros(3)

    def accumulate(x):
        buf.add_(x)
        return x.sum()

    with pytest.raises(cg.InputMutationError, match=r"^vmap: expected a function that writes in place only"):
        cg.torch.vmap(accumulate)(torch.ones(2, 3))


def test_reading_values_under_vmap_is_named(backend):
    with pytest.raises(cg.ControlFlowError, match=r"^vmap: expected a function"):
        backend.vmap(lambda x: np.asarray(x).sum() * x)(_x(backend, np.ones((2, 3))))


def test_the_randomness_hint_names_an_option_the_transform_has():
    torch = pytest.importorskip("torch")
    noisy = lambda x: (x * torch.rand(3, dtype=x.dtype)).sum()  # noqa: E731
    with pytest.raises(cg.RandomnessError, match="batched_laplacian has no randomness option"), \
            torch.random.fork_rng():
        cg.torch.batched_laplacian(noisy)(torch.ones(2, 3))
    with pytest.raises(cg.RandomnessError, match="Pass randomness='different'"), torch.random.fork_rng():
        cg.torch.vmap(noisy)(torch.ones(2, 3))


def test_check_grads_checks_a_reverse_only_function_in_reverse(backend):
    """A custom rule with a backward only (a torch Function without jvp, a jax custom_vjp)
    is checked in reverse against finite differences (it used to raise from forward mode)."""
    from test_hardening import _reverse_only_cube

    x = (_x(backend, [0.5, 1.0, -2.0]),)
    assert backend.check_grads(lambda x: _reverse_only_cube(backend)(x).sum(), x) is None
    with pytest.raises(cg.GradientCheckError, match=r"^check_grads: expected reverse mode to agree"):
        backend.check_grads(lambda x: _reverse_only_cube(backend, k=2)(x).sum(), x)


def test_an_old_style_function_is_named():
    torch = pytest.importorskip("torch")

    class Old(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return 2 * g

    with pytest.raises(cg.CustomRuleError, match=r"^grad: expected an autograd.Function written for torch.func"):
        cg.torch.grad(lambda x: Old.apply(x).sum())(torch.ones(2))


def test_check_grads_holds_a_models_static_leaves():
    """An Equinox module's activation functions are static: no direction is drawn for them."""
    eqx = pytest.importorskip("equinox")
    import jax

    model = eqx.nn.MLP(2, 1, 4, 1, key=jax.random.PRNGKey(0))
    x = jax.numpy.ones(2)
    assert cg.jax.check_grads(lambda m, x: m(x).sum(), (model, x), rtol=1e-2) is None
