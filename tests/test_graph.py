"""crossgrad.graph, the notebook's graph-style API, against the element-by-element loop
of torch.autograd.grad (the old library's method)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import crossgrad as cg  # noqa: E402
from crossgrad.graph import gradient, hessian, jacobian  # noqa: E402


def loop_jacobian(outputs, inputs):
    """One backward call per output element: the reference."""
    outputs = [outputs] if isinstance(outputs, torch.Tensor) else outputs
    inputs = [inputs] if isinstance(inputs, torch.Tensor) else inputs
    flat = torch.cat([o.reshape(-1) for o in outputs])
    rows = []
    for i in range(flat.numel()):
        grads = torch.autograd.grad(flat[i], inputs, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(g if g is not None else torch.zeros_like(x)).reshape(-1) for g, x in zip(grads, inputs)]))
    return torch.stack(rows)


def loop_hessian(output, inputs):
    grads = torch.autograd.grad(output, inputs, create_graph=True, allow_unused=True)
    flat = torch.cat([(g if g is not None else torch.zeros_like(x)).reshape(-1) for g, x in zip(grads, inputs)])
    if not flat.requires_grad:
        return torch.zeros(flat.numel(), flat.numel(), dtype=flat.dtype)
    return loop_jacobian(flat, inputs)


def leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]


@pytest.mark.parametrize("shapes", [[(4,)], [(2, 3)], [(3,), (2, 2)], [(5,), (1,), (2, 1, 2)]])
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_jacobian_matches_the_loop(shapes, chunk_size):
    xs = leaves(*shapes)
    outs = [torch.tanh(xs[0].sum() * xs[-1]), (xs[0] ** 2).reshape(-1)[:2]]
    got = jacobian(outs, xs, chunk_size=chunk_size)
    assert got.shape == (sum(o.numel() for o in outs), sum(x.numel() for x in xs))
    torch.testing.assert_close(got, loop_jacobian(outs, xs), rtol=1e-12, atol=1e-12)


def test_jacobian_of_an_unused_input_is_zero():
    x, unused = leaves((3,), (2,))
    got = jacobian(torch.sin(x), [x, unused])
    assert torch.equal(got[:, 3:], torch.zeros(3, 2, dtype=torch.float64))


@pytest.mark.parametrize("shapes", [[(4,)], [(2, 3)], [(3,), (2, 2)]])
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_hessian_matches_the_loop(shapes, chunk_size):
    xs = leaves(*shapes)
    y = sum((torch.exp(-x) * x.sum() ** 2).sum() for x in xs) * xs[0].sum()
    got = hessian(y, xs, chunk_size=chunk_size)
    n = sum(x.numel() for x in xs)
    assert got.shape == (n, n) and got.dtype == y.dtype
    torch.testing.assert_close(got, loop_hessian(y, xs), rtol=1e-12, atol=1e-12)


def test_hessian_unused_inputs():
    x, unused = leaves((3,), (2,))
    y = (x ** 3).sum()
    with pytest.raises(cg.GraphInputError) as info:
        hessian(y, [x, unused])
    assert str(info.value) == (
        "graph.hessian: expected inputs the output depends on, but got input 1, which the output does not use. "
        "Pass allow_unused=True to get zero rows and columns for it, or drop it from inputs.")
    got = hessian(y, [x, unused], allow_unused=True)
    torch.testing.assert_close(got[:3, :3], torch.diag(6 * x.detach()))
    assert torch.equal(got[3:], torch.zeros(2, 5, dtype=torch.float64)) and torch.equal(got[:, 3:], torch.zeros(5, 2, dtype=torch.float64))


def test_hessian_of_a_linear_function_is_zero():
    (x,) = leaves((3,))
    assert torch.equal(hessian((2 * x).sum(), x), torch.zeros(3, 3, dtype=torch.float64))


def test_hessian_into_a_preallocated_out():
    (x,) = leaves((3,))
    out = torch.empty(3, 3, dtype=torch.float64)
    result = hessian((x ** 3).sum(), x, out=out)
    assert result is out
    torch.testing.assert_close(out, torch.diag(6 * x.detach()))
    with pytest.raises(cg.GraphInputError, match="out of shape"):
        hessian((x ** 3).sum(), x, out=torch.empty(2, 2, dtype=torch.float64))


def test_hessian_needs_a_scalar_output():
    (x,) = leaves((3,))
    with pytest.raises(cg.NonScalarOutputError) as info:
        hessian(x ** 2, x)
    assert str(info.value) == (
        "graph.hessian: expected a scalar output (one element), but got an output of shape (3,). "
        "Reduce the output to a scalar with output.sum(), or use graph.jacobian.")


def test_inputs_must_require_grad():
    x = torch.ones(3)
    with pytest.raises(cg.GraphInputError, match="input 0 with requires_grad=False"):
        jacobian(x * 2, x)


def test_create_graph_gives_a_differentiable_hessian():
    """A Hessian built with create_graph=True can be differentiated again: the gradient
    of sum(H) for sum(x^4) is 24 x."""
    (x,) = leaves((4,))
    h = hessian((x ** 4).sum(), x, create_graph=True)
    (third,) = torch.autograd.grad(h.sum(), x)
    torch.testing.assert_close(third, 24 * x.detach())
    g = gradient((x ** 3).sum(), x, create_graph=True)
    torch.testing.assert_close(jacobian(g, x), torch.diag(6 * x.detach()))


def test_gradient_is_a_flat_vector():
    a, b = leaves((2, 2), (3,))
    y = (a ** 2).sum() + (b ** 3).sum()
    torch.testing.assert_close(gradient(y, [a, b]), torch.cat([2 * a.detach().reshape(-1), 3 * b.detach() ** 2]))
    torch.testing.assert_close(gradient(a * 2, a, grad_outputs=torch.ones(2, 2, dtype=torch.float64)),
                               torch.full((4,), 2.0, dtype=torch.float64))


def test_the_notebooks_cells_run_unchanged():
    """The notebook's first cells, with crossgrad.graph in place of the old library."""
    import torch.nn.functional as F

    D = 16
    g = torch.Generator().manual_seed(0)  # the notebook used the global RNG; tests leave it alone
    weight, bias, x = torch.randn(D, D, generator=g), torch.randn(D, generator=g), torch.randn(D, generator=g)

    def f(weight, bias, x):
        return F.linear(x, weight, bias).tanh()

    xp = x.clone().requires_grad_()
    unit_vectors = torch.eye(xp.size(0))
    my_jacobian = torch.stack([torch.autograd.grad(f(weight, bias, xp), xp, vec)[0] for vec in unit_vectors])
    newxp = xp.clone().requires_grad_()
    outputs = f(weight, bias, newxp)
    lib_jacobian = jacobian(outputs, newxp)
    assert torch.isclose(my_jacobian, lib_jacobian).all()


def test_tall_jacobian_by_columns_keeps_the_graph():
    """More outputs than inputs goes through the column route; create_graph still works."""
    (x,) = leaves((2,))
    out = torch.stack([x[0] * x[1], x[0] ** 2, x[1] ** 3])
    j = jacobian(out, x, create_graph=True)
    torch.testing.assert_close(j, loop_jacobian(out, x))
    (d,) = torch.autograd.grad(j.sum(), x)
    torch.testing.assert_close(d, torch.stack([torch.tensor(3.0, dtype=torch.float64), 1 + 6 * x[1].detach()]))


def test_jacobian_through_a_backward_that_is_not_differentiable():
    """A custom Function whose backward runs in NumPy (or is once_differentiable): the
    column route (which differentiates the backward graph) would give its part as zeros;
    the columns are checked against one backward pass and the rows taken instead."""
    from torch.autograd.function import once_differentiable

    class NumpyCube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return torch.from_numpy(x.detach().numpy() ** 3)

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return torch.from_numpy(3 * x.detach().numpy() ** 2 * g.detach().numpy())

    class OnceCube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3

        @staticmethod
        @once_differentiable
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 3 * x ** 2 * g

    w = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x0 = torch.tensor([1.0, 2.0], dtype=torch.float64)
    expected = w * 3 * x0 ** 2 + 2 * (w @ x0)[:, None] * w
    for cube in (NumpyCube, OnceCube):
        x = x0.clone().requires_grad_()
        y = w @ cube.apply(x) + (w @ x) ** 2  # 2 inputs, 50 outputs: the column route's shape
        torch.testing.assert_close(jacobian(y, x), expected, rtol=1e-12, atol=1e-12)
