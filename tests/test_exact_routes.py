"""The Taylor route, the Hessian-vector products and the Hessian operator are exact where
the shortcut is not: operations torch's forward-over-forward formulas get wrong, complex
intermediates, powers at zero, lazy zero tangents, repeated eigenvalues.  The oracle is the
Hessian by double reverse mode (``strategy="rev-rev"``) of the same function, or the closed
form."""

from __future__ import annotations

import numpy as np
import pytest

from crossgrad.testing import frameworks


def _module(backend):
    if backend.name == "torch":
        import torch

        return torch
    import jax.numpy as jnp

    return jnp


def _x(backend, values):
    return frameworks.convert(np.asarray(values, dtype=np.float64), backend.name, "float64")


def _cases(m, name):
    """Scalar functions of a flat vector, written once for both frameworks (``m``: torch or
    jax.numpy), with a point where the shortcut used to fail."""
    linalg = m.linalg
    b = np.array([1.0, 2.0])
    if name == "det":  # a singular matrix: the torch shortcut gave 8.62 for 0
        return lambda x: linalg.det(x.reshape(2, 2)), [1.0, 2.0, 2.0, 4.0]
    if name == "slogdet":
        return lambda x: linalg.slogdet(x.reshape(2, 2))[1], [2.0, 1.0, 0.5, 3.0]
    if name == "solve":
        rhs = m.asarray(b) if m.__name__ != "torch" else m.tensor(b)
        return lambda x: (linalg.solve(x.reshape(2, 2), rhs) ** 2).sum(), [2.0, 1.0, 0.5, 3.0]
    if name == "powers at zero":
        return lambda x: (x ** 1).sum() + (x ** 0).sum() + (x ** 2).sum() + (x ** 3).sum(), [0.0, 0.0, 0.5]
    if name == "complex abs":  # a non-holomorphic operation on a complex intermediate
        return lambda x: m.abs(x[0] + 1j * x[1]) ** 2 * 2 + m.angle(x[0] + 1j * x[1]), [0.3, 0.5]
    raise AssertionError(name)


CASES = ["det", "slogdet", "solve", "powers at zero", "complex abs"]


def _nested_trace(backend, f, x):
    h = np.asarray(frameworks.to_numpy(backend.hessian(f, strategy="rev-rev")(x)), dtype=np.float64)
    n = int(np.prod(np.shape(frameworks.to_numpy(x))))
    return np.trace(h.reshape(n, n)), np.diag(h.reshape(n, n))


@pytest.mark.parametrize("case", CASES)
def test_the_taylor_route_is_exact_where_the_shortcut_is_not(backend, case):
    if backend.name == "jax" and case in ("slogdet", "solve"):
        pytest.skip("torch's defects; det stands for the linear-algebra routing on jax (eager jax is slow)")
    f, point = _cases(_module(backend), case)
    x = _x(backend, point)
    trace, diag = _nested_trace(backend, f, x)
    np.testing.assert_allclose(frameworks.to_numpy(backend.laplacian(f)(x)), trace, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(frameworks.to_numpy(backend.hessian_diagonal(f)(x)), diag, rtol=1e-9, atol=1e-9)
    if case == "det":  # the batched route records the vmapped program: the same routing
        batched = backend.batched_laplacian(f)(_x(backend, [point, point]))
        np.testing.assert_allclose(frameworks.to_numpy(batched), [trace, trace], rtol=1e-9, atol=1e-9)


def test_linear_hessians_are_ordinary_tensors():
    """torch's forward mode returns lazy ZeroTensors for the derivatives of linear
    functions; results leave crossgrad as ordinary tensors (to NumPy, writable)."""
    torch = pytest.importorskip("torch")
    import crossgrad as cg

    w = torch.arange(3.0, dtype=torch.float64)
    for strategy in ("fwd-fwd", "rev-fwd", "fwd-rev", "rev-rev"):
        for f in (lambda x: x @ w, lambda x: (x * 0).sum(), lambda x: x * 2.0):
            h = cg.torch.hessian(f, strategy=strategy)(torch.ones(3, dtype=torch.float64))
            assert not h._is_zerotensor()
            assert h.numpy().sum() == 0.0
            h.add_(1.0)
        j = cg.torch.jacobian(lambda x: x.sum() * 0, mode="fwd")(torch.ones(3, dtype=torch.float64))
        assert not j._is_zerotensor()


def test_hessian_vector_products_through_a_loss_with_a_constant_target():
    """torch's forward-over-reverse writes into the lazy zero tangent of mse_loss's target
    ("ZeroTensors are immutable"); the products then go reverse over reverse."""
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    import crossgrad as cg

    gen = torch.Generator().manual_seed(0)
    x, t = torch.randn(4, generator=gen, dtype=torch.float64), torch.randn(4, generator=gen, dtype=torch.float64)
    loss = lambda w: F.mse_loss(w * x, t)  # noqa: E731
    w, v = torch.ones(4, dtype=torch.float64), torch.linspace(-1, 1, 4, dtype=torch.float64)
    expected = 2 * x * x / 4 * v  # the Hessian is diag(2 x^2 / n)
    assert cg.explain(cg.torch.hvp, loss, (w,), (v,)).route == "fwd-rev"  # not known before it fails
    torch.testing.assert_close(cg.torch.hvp(loss, (w,), (v,)), expected)
    revised = cg.explain(cg.hvp, loss, (w,), (v,))
    assert revised.route == "rev-rev" and revised.why.startswith("revised: forward over reverse failed")
    from crossgrad.backends.torch import primitives

    tried = []
    jvp = primitives.jvp
    primitives.jvp = lambda *a, **k: tried.append(1) or jvp(*a, **k)
    try:  # the revision is kept per function: the next product does not try forward mode again
        torch.testing.assert_close(cg.torch.hvp(loss, (w,), (2 * v,)), 2 * expected)
    finally:
        primitives.jvp = jvp
    assert not tried
    op = cg.torch.hessian_operator(loss, w)
    torch.testing.assert_close(op @ v, expected)
    torch.testing.assert_close(op.eigenvalues(2), torch.sort(2 * x * x / 4, descending=True).values[:2])


@pytest.mark.parametrize(("spectrum", "k"), [([5, 5, 1, 1, 1], 2), ([2, 2, 2, 2], 3), ([3, 3, 3, -1, 0.5, 0.5], 5),
                                             ([7, 1, 1, 1, 1, 1, 1, 1], 4)])
def test_eigenvalues_keep_their_multiplicity(backend, spectrum, k):
    """Repeated eigenvalues come out as often as they occur (a single Lanczos vector
    finds one copy, and stopped at breakdown)."""
    m = _module(backend)
    rng = np.random.default_rng(len(spectrum))
    q, _ = np.linalg.qr(rng.normal(size=(len(spectrum), len(spectrum))))
    h = _x(backend, q @ np.diag(spectrum) @ q.T)
    op = backend.hessian_operator(lambda x: 0.5 * m.sum(x * (h @ x)), _x(backend, np.ones(len(spectrum))))
    np.testing.assert_allclose(frameworks.to_numpy(op.eigenvalues(k)), np.sort(spectrum)[::-1][:k], atol=1e-8)


@pytest.mark.parametrize("which", ["largest", "smallest", "magnitude"])
def test_eigenvalues_from_either_end_with_their_vectors(backend, which):
    """``which`` picks the end of the spectrum; the Ritz vectors satisfy ``H v = lambda v``."""
    m = _module(backend)
    spectrum = np.array([4.0, 2.5, 1.0, 0.3, -0.2, -3.0, -6.0, 0.05])
    rng = np.random.default_rng(7)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    dense = q @ np.diag(spectrum) @ q.T
    h = _x(backend, dense)
    op = backend.hessian_operator(lambda x: 0.5 * m.sum(x * (h @ x)), _x(backend, np.ones(8)))
    values, vectors = op.eigenvalues(3, which=which, vectors=True)
    order = {"largest": np.argsort(-spectrum), "smallest": np.argsort(spectrum),
             "magnitude": np.argsort(-np.abs(spectrum))}[which][:3]
    np.testing.assert_allclose(frameworks.to_numpy(values), spectrum[order], atol=1e-8)
    v = frameworks.to_numpy(vectors)
    np.testing.assert_allclose(dense @ v, v * spectrum[order], atol=1e-7)
    np.testing.assert_allclose(np.linalg.norm(v, axis=0), 1.0, atol=1e-10)


def test_the_operator_refuses_arrays_of_another_kind(backend):
    import crossgrad as cg

    op = backend.hessian_operator(lambda x: (x * x).sum(), _x(backend, np.ones(3)))
    with pytest.raises(cg.InputDtypeError, match=r"^hessian_operator: expected a (torch|jax) array"):
        op @ np.ones(3)


def test_check_grads_fails_on_nan_derivatives(backend):
    """A derivative that is NaN (sqrt at zero through a custom path, 0/0) is not a pass."""
    import crossgrad as cg

    m = _module(backend)
    f = lambda x: m.sqrt(x * x * 0.0) * m.sum(x)  # noqa: E731  # derivative NaN at every point
    with pytest.raises(cg.GradientCheckError, match=r"^check_grads: expected"):
        backend.check_grads(f, (_x(backend, [1.0, 2.0]),))


def test_a_custom_function_computing_in_numpy_is_differentiated_by_its_own_rules():
    """Its forward leaves torch (no operations to record): the Taylor check sees the
    disagreement with the Function's own derivatives and takes the exact route."""
    torch = pytest.importorskip("torch")
    import crossgrad as cg

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return torch.from_numpy(np.asarray(x.detach().numpy()) ** 2)

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    f = lambda x: (Square.apply(x) ** 2).sum()  # noqa: E731  # sum x^4
    x = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(cg.torch.laplacian(f)(x), (12 * x * x).sum())
    torch.testing.assert_close(cg.torch.hessian_diagonal(f)(x), 12 * x * x)


def test_the_taylor_check_catches_a_wrong_propagation(backend, monkeypatch):
    """Whatever makes the propagated coefficients wrong, ``auto`` answers exactly: a push
    whose second-order coefficients are off is caught on the signature's first call."""
    from crossgrad.transforms import taylor

    real = taylor.push

    def off(*args, **kwargs):
        values, second = real(*args, **kwargs)
        return values, [None if s is None else s * 1.5 for s in second]

    monkeypatch.setattr(taylor, "push", off)
    m = _module(backend)
    f = lambda x: m.sum(m.tanh(x) ** 2) + x[0] * x[1] ** 3  # noqa: E731
    x = _x(backend, [0.3, -0.7, 1.1])
    trace, diag = _nested_trace(backend, f, x)
    np.testing.assert_allclose(frameworks.to_numpy(backend.laplacian(f)(x)), trace, rtol=1e-9)
    np.testing.assert_allclose(frameworks.to_numpy(backend.hessian_diagonal(f)(x)), diag, rtol=1e-9)


def test_scatter_reduce_products_take_the_exact_route():
    """torch's forward-mode formulas of scatter_reduce's product are wrong (the Laplacian
    of x0 x1 + x2 x3 came out 4.08, not 0): such a call takes reverse over reverse."""
    torch = pytest.importorskip("torch")
    import crossgrad as cg

    idx = torch.tensor([0, 0, 1, 1])

    def f(x):
        return torch.zeros(2, dtype=x.dtype).scatter_reduce(0, idx, x * x, "prod", include_self=False).sum() + x[0] * x[1]

    x = torch.tensor([1.5, 2.0, -0.5, 3.0], dtype=torch.float64)
    h = cg.torch.hessian(f, strategy="rev-rev")(x)
    torch.testing.assert_close(cg.torch.laplacian(f)(x), torch.trace(h))
    torch.testing.assert_close(cg.torch.hessian_diagonal(f)(x), torch.diagonal(h))
