"""Ports of torch's ``test/functorch/test_eager_transforms.py`` (and ``test_vmap.py``),
run through crossgrad's torch backend.

Each test names the upstream test it ports and keeps its assertion's intent; where
crossgrad's spec deviates (named errors instead of RuntimeError, static aux values
accepted, jax-style output nesting), the test says so.
"""

from __future__ import annotations

import math

import pytest

import crossgrad as cg

torch = pytest.importorskip("torch")
F = torch.nn.functional
ns = cg.torch


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=gen(seed), dtype=torch.float64)


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# -- TestGradTransform ---------------------------------------------------------------

def test_grad_primitive():
    """TestGradTransform.test_primitive"""
    x = randn()
    close(ns.grad(torch.sin)(x), torch.cos(x))


def test_grad_composite_simple():
    """TestGradTransform.test_composite_simple"""
    x = randn(2, 3, 4)
    close(ns.grad(lambda x: torch.flatten(x).sum())(x), torch.ones_like(x))


def test_grad_fn_with_kwargs():
    """TestGradTransform.test_fn_with_kwargs: keyword arguments are passed through, not differentiated"""
    x, y = randn(3, seed=1), randn(3, seed=2)
    foo = lambda x, y: (x * y).sum()  # noqa: E731
    close(ns.grad(foo)(x, y=y), ns.grad(foo)(x, y))


def test_grad_composite_complicated():
    """TestGradTransform.test_composite_complicated"""
    x, y = randn(3), randn(3, 5, seed=1)
    foo = lambda x, y: (x @ y).sum()  # noqa: E731
    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(foo(xr, y), xr)
    close(ns.grad(foo)(x, y), expected)


def test_grad_composite_two_ops():
    """TestGradTransform.test_composite_two_ops (cross entropy with integer targets)"""
    y = randn(2, 5)
    targets = torch.tensor([1, 3])
    foo = lambda y, t: F.cross_entropy(y, t)  # noqa: E731
    yr = y.clone().requires_grad_()
    (expected,) = torch.autograd.grad(foo(yr, targets), yr)
    close(ns.grad(foo)(y, targets), expected)


@pytest.mark.parametrize("attr", [lambda x: x.shape, lambda x: x.dtype, lambda x: x.is_cuda, lambda x: x.numel()])
def test_grad_attributes(attr):
    """TestGradTransform.test_shape / test_dtype / test_is_cuda / test_numel"""
    x = randn(2, 3, 5)
    seen = []
    ns.grad(lambda x: (seen.append(attr(x)), x.sum())[1])(x)
    assert seen[-1] == attr(x)


def test_grad_inplace_on_a_copy():
    """TestGradTransform.test_inplace: writing into a copy is fine"""
    x = randn()
    close(ns.grad(lambda x: x.clone().sin_())(x), x.cos())


def test_grad_inplace_on_view():
    """TestGradTransform.test_inplace_on_view"""
    x = randn(3)

    def foo(x):
        y = x.clone()
        y[0].sin_()
        return y.sum()

    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(foo(xr), xr)
    close(ns.grad(foo)(x), expected)


def test_grad_inplace_on_view_base():
    """TestGradTransform.test_inplace_on_view_base"""
    x = randn(3)

    def foo(x):
        y = x.clone()
        y0 = y[0]
        y.sin_()
        return y0

    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(foo(xr), xr)
    close(ns.grad(foo)(x), expected)


def test_grad_nesting_simple():
    """TestGradTransform.test_nesting_simple"""
    x = randn()
    close(ns.grad(ns.grad(torch.sin))(x), -torch.sin(x))


def test_grad_vjp():
    """TestGradTransform.test_vjp"""
    x, v = randn(), randn(seed=1)
    out, vjp_fn = ns.vjp(torch.sin, x)
    close(out, x.sin())
    close(vjp_fn(v)[0], v * x.cos())


def test_vjp_two_outputs():
    """TestGradTransform.test_vjp_two_outputs"""
    result, vjp_fn = ns.vjp(lambda x: (x, x), torch.tensor(1.0, dtype=torch.float64))
    close(vjp_fn(result)[0], torch.tensor(2.0, dtype=torch.float64))


def test_grad_composed_with_autograd():
    """TestGradTransform.test_composed_with_autograd"""
    x = randn().requires_grad_()
    y = ns.grad(torch.sin)(x)
    (result,) = torch.autograd.grad(y, x)
    close(result, -x.detach().sin())


def test_grad_of_vjp_composition():
    """TestGradTransform.test_grad_of_vjp_composition"""
    x, y = randn(), randn(seed=1)

    def foo(x, y):
        _, vjp_fn = ns.vjp(torch.sin, x)
        return ns.grad(lambda y: vjp_fn(y)[0])(y)

    close(foo(x, y), x.cos())


def test_vjp_of_grad_composition():
    """TestGradTransform.test_vjp_of_grad_composition"""
    x, y = randn(), randn(seed=1)
    _, vjp_fn = ns.vjp(ns.grad(torch.sin), x)
    close(vjp_fn(y)[0], -y * x.sin())


def test_grad_of_vjp_of_grad_composition():
    """TestGradTransform.test_grad_of_vjp_of_grad_composition"""
    x, y = randn(), randn(seed=1)
    _, vjp_fn = ns.vjp(ns.grad(lambda x: -torch.cos(x)), x)
    close(ns.grad(lambda y: vjp_fn(y)[0])(y), x.cos())


def test_grad_views():
    """TestGradTransform.test_views"""
    x, y = randn().requires_grad_(), randn(seed=1).requires_grad_()
    result = ns.grad(lambda x: x.view([]).sin())(x) + torch.cos(y)
    gx, gy = torch.autograd.grad(result, [x, y])
    close(gx, -x.detach().sin())
    close(gy, -y.detach().sin())


def test_grad_view_inplace_simple():
    """TestGradTransform.test_view_inplace_simple"""
    def foo(x):
        x = x.clone()
        x.view([]).sin_()
        return x

    x = randn()
    close(ns.grad(foo)(x), x.cos())


def test_grad_invalid_argnums():
    """TestGradTransform.test_invalid_argnums: crossgrad's named errors instead of RuntimeError"""
    x, y = randn(), randn(seed=1)
    with pytest.raises(cg.ArgnumsError):
        ns.grad(torch.mul, argnums=-3)(x, y)
    with pytest.raises(cg.ArgnumsError):
        ns.grad(torch.mul, argnums=2)(x, y)
    with pytest.raises(cg.ArgnumsTypeError):
        ns.grad(torch.mul, argnums=("0",))(x, y)
    with pytest.raises(cg.ArgnumsError):
        ns.grad(torch.mul, argnums=(0, 0))(x, y)
    with pytest.raises(cg.ArgnumsError):
        ns.grad(torch.mul, argnums=(0, -2))(x, y)


def test_grad_argnums():
    """TestGradTransform.test_argnums"""
    x, y = randn(), randn(seed=1)
    close(ns.grad(torch.mul, argnums=0)(x, y), y)
    close(ns.grad(torch.mul, argnums=1)(x, y), x)
    (gx,) = ns.grad(torch.mul, argnums=(0,))(x, y)
    close(gx, y)
    gx, gy = ns.grad(torch.mul, argnums=(0, 1))(x, y)
    close(gx, y)
    close(gy, x)


def test_grad_out_of_order_argnums():
    """TestGradTransform.test_out_of_order_argnums"""
    x, y = randn(), randn(seed=1)
    gy, gx = ns.grad(torch.mul, argnums=(1, 0))(x, y)
    close(gx, y)
    close(gy, x)


def test_grad_negative_argnums():
    """TestGradTransform.test_negative_argnums"""
    x, y = randn(), randn(seed=1)
    close(ns.grad(torch.mul, argnums=-2)(x, y), y)
    close(ns.grad(torch.mul, argnums=-1)(x, y), x)
    gx, gy = ns.grad(torch.mul, argnums=(-2, -1))(x, y)
    close(gx, y)
    close(gy, x)


def test_grad_pytree_inputs():
    """TestGradTransform.test_grad_pytree_inputs"""
    x = randn()
    f = lambda a, b: 1 * a[0] + 2 * a[1] + 3 * b["foo"]  # noqa: E731
    args = ((x, x), {"foo": x})
    gx, gy = ns.grad(f)(*args)
    close(gx, torch.tensor(1.0, dtype=torch.float64))
    close(gy, torch.tensor(2.0, dtype=torch.float64))
    (gx, gy), gz = ns.grad(f, argnums=(0, 1))(*args)
    close(gz["foo"], torch.tensor(3.0, dtype=torch.float64))


def test_grad_aux_tensor():
    """TestGradTransform.test_grad_aux_tensor: crossgrad raises HasAuxError for a non-pair"""
    x = randn(3)
    with pytest.raises(cg.HasAuxError):
        ns.grad(lambda t: [t.sum(), t, t], has_aux=True)(x)
    out, aux = ns.grad(lambda t: (t.sin().sum(), t.cos()), has_aux=True)(x)
    close(aux, x.cos())
    close(out, x.cos())


def test_grad_aux_pytree():
    """TestGradTransform.test_grad_aux_pytree: torch refuses non-tensor aux; crossgrad returns
    them unchanged (NOTE [static aux])"""
    x = randn(3)
    out, aux = ns.grad(lambda x: (x.sin().sum(), {"a": x.cos(), "b": [x.tan()]}), has_aux=True)(x)
    close(aux["a"], x.cos())
    close(aux["b"][0], x.tan())
    close(out, x.cos())
    for value in (1, 1.0, "abc"):
        assert ns.grad(lambda x, v=value: (x.sum(), [x, v]), has_aux=True)(x)[1][1] == value


def test_grad_zero_grad():
    """TestGradTransform.test_zero_grad"""
    inputs = {"a": randn(10) + 3, "b": randn(10, seed=1)}
    grads = ns.grad(lambda d: (d["a"] ** 2.0).sum())(inputs)
    assert grads["a"].sum() != 0.0
    assert grads["b"].sum() == 0.0


def test_grad_unrelated():
    """TestGradTransform.test_unrelated_grad"""
    x, y = torch.tensor(1.0), torch.tensor(2.0)
    close(ns.grad(lambda x: y)(x), torch.zeros_like(x))


def test_vjp_unrelated():
    """TestGradTransform.test_unrelated_vjp"""
    x, y, v = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(1.0)
    _, vjp_fn = ns.vjp(lambda x: y, x)
    close(vjp_fn(v)[0], torch.zeros_like(x))


def test_vjp_unrelated_multiple_inputs_outputs():
    """TestGradTransform.test_unrelated_vjp_multiple_inputs_outputs"""
    w, x, y, v = torch.tensor(3.0), torch.tensor(4.0), torch.tensor(2.0), torch.tensor(1.0)
    _, vjp_fn = ns.vjp(lambda w, x: (y, y, x), w, x)
    gw, gx = vjp_fn((v, v, v))
    close(gw, torch.zeros_like(x))
    close(gx, torch.ones_like(x))


def test_hessian_unrelated():
    """TestGradTransform.test_unrelated_hessian"""
    W = randn(5, 3)
    x = randn(3, seed=1)
    close(ns.jacrev(ns.jacrev(lambda x: W @ x))(x), torch.zeros(5, 3, 3, dtype=torch.float64))


def test_vjp_pytree_input():
    """TestGradTransform.test_vjp_pytree_input"""
    x, v = randn(), randn(seed=1)
    out, vjp_fn = ns.vjp(lambda x: x[0] * x[1][0], (x, (x, x)))
    close(out, x * x)
    ((a, (b, c)),) = vjp_fn(v)
    close(a, x * v)
    close(b, x * v)
    close(c, torch.zeros_like(x))


def test_vjp_pytree_output():
    """TestGradTransform.test_vjp_pytree_output"""
    x = randn()
    v1, v2, v3 = randn(seed=1), randn(seed=2), randn(seed=3)
    _, vjp_fn = ns.vjp(lambda x: (x, (x, x)), x)
    close(vjp_fn((v1, (v2, v3)))[0], v1 + v2 + v3)


def test_vjp_outputs_can_be_any_pytree():
    """TestGradTransform.test_vjp_outputs_can_any_pytree (None: OutputError; lists and dicts)"""
    x, t = randn(2, 3), randn(2, 3, seed=1)
    with pytest.raises(cg.OutputError):
        ns.vjp(lambda _: None, x)
    out, vjp_fn = ns.vjp(lambda x: [x, x.sum()], x)
    assert isinstance(out, list) and isinstance(vjp_fn([t, t.sum()])[0], torch.Tensor)
    out, vjp_fn = ns.vjp(lambda x: {"x": x, "xsum": x.sum()}, x)
    assert set(out) == {"x", "xsum"} and isinstance(vjp_fn({"x": t, "xsum": t.sum()})[0], torch.Tensor)


def test_vjp_pytree_error():
    """TestGradTransform.test_vjp_pytree_error: StructureError for a cotangent of another structure"""
    x = randn()
    _, vjp_fn = ns.vjp(lambda x: (x, (x, x)), x)
    with pytest.raises(cg.StructureError):
        vjp_fn(((x, (x, x)),))


def test_vjp_aux_tensor():
    """TestGradTransform.test_vjp_aux_tensor"""
    x, v = randn(3), randn(3, seed=1)
    with pytest.raises(cg.HasAuxError):
        ns.vjp(lambda t: (t, t + 2, t + 3), x, has_aux=True)
    out, vjp_fn, aux = ns.vjp(lambda t: (t.sin(), t.cos()), x, has_aux=True)
    close(aux, x.cos())
    close(out, x.sin())
    close(vjp_fn(v)[0], v * x.cos())


def test_vjp_aux_pytree():
    """TestGradTransform.test_vjp_aux_pytree"""
    x = randn(3)
    out, _, aux = ns.vjp(lambda x: (x.sin(), {"a": x.cos(), "b": [x.tan()]}), x, has_aux=True)
    close(out, x.sin())
    close(aux["b"][0], x.tan())


def test_grad_advanced_indexing():
    """TestGradTransform.test_advanced_indexing"""
    def f(value):
        log_prob = torch.ones((), dtype=torch.float64)
        val = torch.zeros(()) > 0
        log_prob[val] = 0
        return value

    close(ns.grad(f)(randn()), torch.tensor(1.0, dtype=torch.float64))


def test_grad_tensor_ccode_bug():
    """TestGradTransform.test_tensor_ccode_bug (a constant tensor built inside f)"""
    def wrapper_fn(x):
        return (x * torch.tensor(2.0, dtype=x.dtype)).sum()

    close(ns.grad(wrapper_fn)(randn(3)), torch.full((3,), 2.0, dtype=torch.float64))


def test_grad_and_value():
    """TestGradTransform grad_and_value tests: crossgrad's value_and_grad returns (value, grad)"""
    x = randn(3)
    value, g = ns.value_and_grad(lambda x: (x.sin()).sum())(x)
    close(value, x.sin().sum())
    close(g, x.cos())


def test_grad_and_value_aux():
    """TestGradTransform.test_grad_and_value_aux"""
    x = randn(3)
    (value, aux), g = ns.value_and_grad(lambda x: (x.sin().sum(), x.cos()), has_aux=True)(x)
    close(aux, x.cos())
    close(g, x.cos())
    close(value, x.sin().sum())


def test_grad_non_scalar_output_errors():
    """TestGradTransform (grad of a non-scalar output): NonScalarOutputError"""
    with pytest.raises(cg.NonScalarOutputError):
        ns.grad(lambda x: x * 2)(randn(3))


def test_grad_int_input_errors():
    """TestGradTransform (grad with respect to an integer tensor): InputDtypeError"""
    with pytest.raises(cg.InputDtypeError):
        ns.grad(lambda x: x.sum())(torch.arange(3))


# -- TestJac ---------------------------------------------------------------------------

@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_simple(jac):
    """TestJac.test_simple"""
    x = randn(3)
    close(getattr(ns, jac)(torch.sin)(x), torch.diagflat(x.cos()))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_simple_not_flat(jac):
    """TestJac.test_simple_not_flat"""
    x = randn(2, 3)
    close(getattr(ns, jac)(torch.sin)(x), torch.diagflat(x.view(-1).cos()).view(2, 3, 2, 3))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_diff_numel(jac):
    """TestJac.test_diff_numel"""
    x = randn(2, 4)

    def f(x):
        return x[0, 1:].unsqueeze(-1)

    y = getattr(ns, jac)(f)(x)
    expected = torch.zeros(3, 1, 2, 4, dtype=torch.float64)
    expected[0, 0, 0, 1] = 1
    expected[1, 0, 0, 2] = 1
    expected[2, 0, 0, 3] = 1
    close(y, expected)


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_vmap_on_jac_simple(jac):
    """TestJac.test_vmap_on_jac_simple"""
    x = randn(2, 3)
    y = ns.vmap(getattr(ns, jac)(torch.sin))(x)
    close(y, torch.stack([torch.diagflat(x[i].cos()) for i in range(2)]))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_nested_jac_simple(jac):
    """TestJac.test_nested_jac_simple"""
    j = getattr(ns, jac)
    x = randn(3)
    y = j(j(lambda x: x.sin().sum()))(x)
    close(y, torch.diagflat(-x.sin()))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_multiple_args(jac):
    """TestJac.test_multiple_args"""
    x, y = randn(3), randn(3, seed=1)
    z = getattr(ns, jac)(torch.multiply, argnums=1)(x, y)
    close(z, torch.diagflat(x))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_multiple_outputs_multiple_argnums(jac):
    """TestJac.test_multiple_outputs_multiple_argnums"""
    def f(x, y):
        return 2 * x + 3 * y, 4 * x + 5 * y

    x, y = randn(3), randn(3, seed=1)
    z = getattr(ns, jac)(f, argnums=(0, 1))(x, y)
    eye = torch.eye(3, dtype=torch.float64)
    close(z[0][0], 2 * eye)
    close(z[0][1], 3 * eye)
    close(z[1][0], 4 * eye)
    close(z[1][1], 5 * eye)


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_multiple_outputs_single_argnums(jac):
    """TestJac.test_multiple_outputs_single_argnums"""
    def f(x, y):
        return 2 * x + 3 * y, 4 * x + 5 * y

    x, y = randn(3), randn(3, seed=1)
    z = getattr(ns, jac)(f, argnums=0)(x, y)
    eye = torch.eye(3, dtype=torch.float64)
    close(z[0], 2 * eye)
    close(z[1], 4 * eye)
    z = getattr(ns, jac)(f, argnums=(0,))(x, y)
    close(z[0][0], 2 * eye)


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_multiple_inputs_pytree(jac):
    """TestJac.test_multiple_inputs_pytree"""
    def f(a, b, c):
        a0, a1 = a
        return a0 + a1 * 2 + b * 3 + c * 4

    x = torch.tensor(1.0, dtype=torch.float64)
    args = ((x, x), x, x)
    result = getattr(ns, jac)(f, argnums=(0, 1, 2))(*args)
    close(result[0][0], torch.tensor(1.0, dtype=torch.float64))
    close(result[0][1], torch.tensor(2.0, dtype=torch.float64))
    close(result[1], torch.tensor(3.0, dtype=torch.float64))
    close(result[2], torch.tensor(4.0, dtype=torch.float64))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_dimensionality(jac):
    """TestJac.test_dimensionality"""
    x = randn()
    assert getattr(ns, jac)(lambda x: x)(x).dim() == 0
    x = randn(1)
    assert getattr(ns, jac)(lambda x: x)(x).dim() == 2


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_aux_tensor(jac):
    """TestJac.test_aux_tensor"""
    x = randn(3)
    z, aux = getattr(ns, jac)(lambda x: (x.sin(), x.cos()), has_aux=True)(x)
    close(z, torch.diagflat(x.cos()))
    close(aux, x.cos())


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_aux_pytree(jac):
    """TestJac.test_aux_pytree: non-tensor aux values pass through (NOTE [static aux])"""
    x = randn(3)
    z, aux = getattr(ns, jac)(lambda x: (x.sin(), {"a": x.cos(), "b": [x.tan(), 1, "s"]}), has_aux=True)(x)
    close(z, torch.diagflat(x.cos()))
    close(aux["a"], x.cos())
    assert aux["b"][1:] == [1, "s"]


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_outputs_can_be_any_pytree(jac):
    """TestJac.test_outputs_can_any_pytree"""
    x = randn(10)
    out = getattr(ns, jac)(lambda x: {"a": x.sin(), "b": [x.cos()]})(x)
    close(out["a"], torch.diagflat(x.cos()))
    close(out["b"][0], torch.diagflat(-x.sin()))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_unrelated_input(jac):
    """TestJac.test_unrelated_input"""
    x, y = randn(2, 3), randn(2, 3, seed=1)
    result = getattr(ns, jac)(lambda x, y: x, argnums=(0, 1))(x, y)
    close(result[0], torch.eye(6, dtype=torch.float64).view(2, 3, 2, 3))
    close(result[1], torch.zeros(2, 3, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_unrelated_output(jac):
    """TestJac.test_unrelated_outputs"""
    y = randn(2, 3, seed=1)
    x = randn(2, 3)
    close(getattr(ns, jac)(lambda x: y)(x), torch.zeros(2, 3, 2, 3, dtype=torch.float64))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_empty_output(jac):
    """TestJac.test_empty_output: an output with no arrays is an OutputError"""
    with pytest.raises(cg.OutputError):
        getattr(ns, jac)(lambda x: ())(randn(2, 3))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_argnums_tuple(jac):
    """TestJac.test_argnums_tuple"""
    x, y = randn(3), randn(3, seed=1)
    z = getattr(ns, jac)(torch.multiply, argnums=(0, 1))(x, y)
    close(z[0], torch.diagflat(y))
    close(z[1], torch.diagflat(x))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_argnums_effect_on_return(jac):
    """TestJac.test_argnums_effect_on_return"""
    x, y = randn(3), randn(3, seed=1)
    z = getattr(ns, jac)(torch.multiply, argnums=(0,))(x, y)
    assert isinstance(z, tuple) and len(z) == 1
    close(z[0], torch.diagflat(y))
    z = getattr(ns, jac)(torch.multiply, argnums=0)(x, y)
    assert isinstance(z, torch.Tensor)


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_argnums_defaults_to_zero(jac):
    """TestJac.test_argnums_defaults_to_zero"""
    x, y = randn(3), randn(3, seed=1)
    close(getattr(ns, jac)(lambda x, y: x * 2 + y * 3)(x, y), torch.diagflat(torch.full_like(x, 2)))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_empty_argnums(jac):
    """TestJac.test_empty_argnums: ArgnumsError"""
    with pytest.raises(cg.ArgnumsError):
        getattr(ns, jac)(torch.sin, argnums=())(randn(3))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_out_of_bounds_argnums(jac):
    """TestJac.test_out_of_bounds_argnums"""
    with pytest.raises(cg.ArgnumsError):
        getattr(ns, jac)(torch.sin, argnums=2)(randn(3))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_negative_argnums(jac):
    """TestJac.test_negative_argnums"""
    with pytest.raises(cg.ArgnumsError):
        getattr(ns, jac)(torch.sin, argnums=-2)(randn(3))
    close(getattr(ns, jac)(torch.sin, argnums=-1)(x := randn(3)), torch.diagflat(x.cos()))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_repeated_argnums(jac):
    """TestJac.test_repeated_argnums"""
    with pytest.raises(cg.ArgnumsError):
        getattr(ns, jac)(torch.sin, argnums=(0, 0))(randn(3))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_float_argnums(jac):
    """TestJac.test_float_argnums"""
    with pytest.raises(cg.ArgnumsTypeError):
        getattr(ns, jac)(torch.sin, argnums=0.0)(randn(3))


@pytest.mark.parametrize("jac", ["jacrev", "jacfwd"])
def test_jac_chunk_size(jac):
    """TestJac.test_chunk_jacrev (chunk sizes give the same Jacobian)"""
    x = randn(5)
    full = getattr(ns, jac)(torch.sin)(x)
    for chunk in (1, 2, 3):
        close(getattr(ns, jac)(torch.sin, chunk_size=chunk)(x), full)


def test_jacrev_jvp_composition():
    """TestJac.test_jac_jvp (jacrev of a jvp)"""
    x = randn(3)
    f = lambda x: ns.jvp(torch.sin, (x,), (torch.ones_like(x),))[1]  # noqa: E731
    close(ns.jacrev(f)(x), torch.diagflat(-x.sin()))


# -- TestHessian -------------------------------------------------------------------------

def test_hessian_vectorize_correctness_simple():
    """TestHessian.test_hessian_vectorize_correctness_simple"""
    x = randn(2, 3)
    f = lambda x: (x ** 3).sum()  # noqa: E731
    expected = torch.autograd.functional.hessian(f, x)
    close(ns.hessian(f)(x), expected)


def test_hessian_vectorize_correctness_multi_input():
    """TestHessian.test_hessian_vectorize_correctness_multi_input"""
    x, y, z = randn(2), randn(3, seed=1), randn(5, seed=2)
    f = lambda x, y, z: ((x.relu() * x) @ y.sin() @ z).sum()  # noqa: E731
    f = lambda x, y, z: (x.sin().sum() * y.cos().sum() * z.exp().sum())  # noqa: E731
    expected = torch.autograd.functional.hessian(f, (x, y, z))
    result = ns.hessian(f, argnums=(0, 1, 2))(x, y, z)
    for i in range(3):
        for j in range(3):
            close(result[i][j], expected[i][j])


def test_hessian_jacfwd_jacrev_consistency():
    """TestHessian.test_jacfwd_different_levels / strategies agree"""
    x = randn(4)
    f = lambda x: (x.sin() * x.cos()).sum()  # noqa: E731
    reference = ns.hessian(f, strategy="loop")(x)
    for strategy in ("fwd-rev", "rev-rev", "rev-fwd", "fwd-fwd"):
        close(ns.hessian(f, strategy=strategy)(x), reference)


def test_hessian_has_aux():
    """TestHessian.test_hessian_has_aux (torch.func.hessian has none: jacfwd(jacrev) in crossgrad)"""
    x = randn(3)
    h, aux = ns.hessian(lambda x: ((x ** 3).sum(), x.cos()), has_aux=True)(x)
    close(h, torch.diagflat(6 * x))
    close(aux, x.cos())


# -- TestJvp / TestLinearize --------------------------------------------------------------

def test_jvp_inplace_on_a_copy():
    """TestJvp.test_inplace_on_view (on a copy of the input)"""
    x, t = randn(3), randn(3, seed=1)

    def f(x):
        y = x.clone()
        y[0].sin_()
        return y

    _, out = ns.jvp(f, (x,), (t,))
    expected = t.clone()
    expected[0] = t[0] * x[0].cos()
    close(out, expected)


def test_jvp_basic():
    """TestJvp.test_simple"""
    x, t = randn(3), randn(3, seed=1)
    out, tangent = ns.jvp(torch.sin, (x,), (t,))
    close(out, x.sin())
    close(tangent, x.cos() * t)


def test_jvp_multiple_inputs():
    """TestJvp.test_multiple_inputs"""
    x, y, tx, ty = randn(3), randn(3, seed=1), randn(3, seed=2), randn(3, seed=3)
    out, tangent = ns.jvp(torch.mul, (x, y), (tx, ty))
    close(out, x * y)
    close(tangent, x * ty + y * tx)


def test_jvp_multiple_outputs():
    """TestJvp.test_multiple_outputs"""
    x, t = randn(3), randn(3, seed=1)
    _, tangent = ns.jvp(lambda x: (x.sin(), x.cos()), (x,), (t,))
    close(tangent[0], x.cos() * t)
    close(tangent[1], -x.sin() * t)


def test_jvp_pytree_inputs():
    """TestJvp.test_pytree_inputs"""
    x, y, t = randn(3), randn(3, seed=1), randn(3, seed=2)
    f = lambda p: p["x"] * p["y"]  # noqa: E731
    _, tangent = ns.jvp(f, ({"x": x, "y": y},), ({"x": t, "y": torch.zeros_like(t)},))
    close(tangent, y * t)


def test_jvp_mismatched_tangent_shape():
    """TestJvp.test_mismatched_shapes: StructureError"""
    with pytest.raises(cg.StructureError):
        ns.jvp(torch.sin, (randn(3),), (randn(4),))


def test_jvp_mismatched_tangent_dtype():
    """TestJvp (tangent dtype differs from the primal's): InputDtypeError, where torch accepts it"""
    with pytest.raises(cg.InputDtypeError):
        ns.jvp(torch.sin, (randn(3),), (torch.ones(3, dtype=torch.float32),))


def test_jvp_non_tuple_primals():
    """TestJvp.test_non_tuple_primals: OptionTypeError"""
    with pytest.raises(cg.OptionTypeError):
        ns.jvp(torch.sin, randn(3), (randn(3),))


def test_jvp_has_aux():
    """TestJvp.test_jvp_aux_tensor"""
    x, t = randn(3), randn(3, seed=1)
    out, tangent, aux = ns.jvp(lambda x: (x.sin(), x.cos()), (x,), (t,), has_aux=True)
    close(out, x.sin())
    close(tangent, x.cos() * t)
    close(aux, x.cos())


def test_linearize_basic():
    """TestLinearize.test_basic"""
    x, t = randn(3), randn(3, seed=1)
    out, jvp_fn = ns.linearize(torch.sin, x)
    close(out, x.sin())
    close(jvp_fn(t), x.cos() * t)


def test_linearize_return():
    """TestLinearize.test_return (pytree output)"""
    x, t = randn(3), randn(3, seed=1)
    _, jvp_fn = ns.linearize(lambda x: (x.sin(), {"c": x.cos()}), x)
    tangent = jvp_fn(t)
    close(tangent[0], x.cos() * t)
    close(tangent[1]["c"], -x.sin() * t)


def test_linearize_composition_with_vmap():
    """TestLinearize.test_composition_vmap"""
    x = randn(3)
    _, jvp_fn = ns.linearize(torch.sin, x)
    ts = randn(4, 3, seed=1)
    close(ns.vmap(jvp_fn)(ts), x.cos() * ts)


def test_linearize_nested_input_output():
    """TestLinearize.test_nested_input_output"""
    x, y = randn(3), randn(3, seed=1)
    _, jvp_fn = ns.linearize(lambda a, b: (a * b, {"s": a + b}), x, y)
    tx, ty = randn(3, seed=2), randn(3, seed=3)
    out = jvp_fn(tx, ty)
    close(out[0], tx * y + x * ty)
    close(out[1]["s"], tx + ty)


# -- TestVmap (test_vmap.py) ---------------------------------------------------------------

def test_vmap_unsupported_op_err_msg_free_function():
    """TestVmapAPI: a function that returns a non-tensor is an OutputError"""
    with pytest.raises(cg.OutputError):
        ns.vmap(lambda x: "abc")(randn(3))


def test_vmap_nonzero_out_dims():
    """TestVmapAPI.test_nonzero_out_dims"""
    x = randn(2, 3)
    close(ns.vmap(lambda x: x, out_axes=1)(x), x.permute(1, 0))


def test_vmap_multiple_out_dims():
    """TestVmapAPI.test_multiple_out_dims"""
    x, y = randn(2, 3), randn(2, 5, seed=1)
    a, b = ns.vmap(lambda x, y: (x, y), out_axes=(0, 1))(x, y)
    close(a, x)
    close(b, y.permute(1, 0))


def test_vmap_nested_out_dims():
    """TestVmapAPI.test_nested_out_dims"""
    y = randn(2, 3, 5)
    result = ns.vmap(ns.vmap(lambda y: y, out_axes=1), out_axes=1)(y)
    close(result, y.permute(2, 0, 1))  # result[a, i, j] = y[i, j, a]


def test_vmap_out_dims_none_is_error():
    """TestVmapAPI.test_out_dims_none (crossgrad: out_axes must be ints: AxisError)"""
    with pytest.raises(cg.AxisError):
        ns.vmap(lambda x: x, out_axes=None)(randn(2, 3))


def test_vmap_in_dims_none():
    """TestVmapAPI.test_in_dims_none (an unbatched argument)"""
    x, y = randn(2, 3), randn(3, seed=1)
    close(ns.vmap(torch.mul, in_axes=(0, None))(x, y), x * y)


def test_vmap_in_dims_nested_tuple():
    """TestVmapAPI.test_nested_in_dims"""
    x, y = randn(2, 3), randn(3, 2, seed=1)
    result = ns.vmap(lambda t: t[0] + t[1], in_axes=((0, 1),))((x, y))
    close(result, x + y.permute(1, 0))


def test_vmap_non_default_in_dims_out_dims():
    """TestVmapAPI.test_non_default_in_dims_out_dims"""
    x = randn(2, 3, 5)
    close(ns.vmap(lambda x: x, in_axes=1, out_axes=1)(x), x)
    close(ns.vmap(lambda x: x, in_axes=2, out_axes=0)(x), x.permute(2, 0, 1))


def test_vmap_mismatched_batch_sizes():
    """TestVmapAPI.test_mismatched_in_dims (different sizes on the mapped axes): AxisSizeError"""
    with pytest.raises(cg.AxisSizeError):
        ns.vmap(torch.mul)(randn(2, 3), randn(3, 3, seed=1))


def test_vmap_no_mapped_inputs():
    """TestVmapAPI.test_none_in_dims (every in_dim None): AxisError"""
    with pytest.raises(cg.AxisError):
        ns.vmap(torch.mul, in_axes=(None, None))(randn(2), randn(2, seed=1))


def test_vmap_in_dims_out_of_range():
    """TestVmapAPI.test_in_dim_not_in_tensor_err_msg: AxisError"""
    with pytest.raises(cg.AxisError):
        ns.vmap(lambda x: x, in_axes=3)(randn(2, 3))


def test_vmap_wrong_in_dims_length():
    """TestVmapAPI.test_in_dims_wrong_type_err_msg / wrong number of entries: AxisError"""
    with pytest.raises(cg.AxisError):
        ns.vmap(torch.mul, in_axes=(0, 0, 0))(randn(2), randn(2, seed=1))


def test_vmap_kwargs_not_batched():
    """TestVmapAPI.test_fallback_with_undefined_grad / kwargs: keyword arguments are not batched"""
    x, y = randn(2, 3), randn(3, seed=1)
    close(ns.vmap(lambda x, y: x * y)(x, y=y), x * y)


def test_vmap_chunk_size():
    """TestVmapAPI.test_chunk_vmap"""
    x = randn(7, 3)
    for chunk in (1, 2, 3, 7):
        close(ns.vmap(torch.sin, chunk_size=chunk)(x), x.sin())


def test_vmap_randomness_error_default():
    """TestRandomness.test_randomness_error: global random draws refused by default"""
    with torch.random.fork_rng(), pytest.raises(cg.RandomnessError):
        ns.vmap(lambda x: x * torch.rand(()))(randn(3))


def test_vmap_randomness_same_and_different():
    """TestRandomness.test_random_unary_out / same vs different"""
    x = torch.zeros(4, 3, dtype=torch.float64)
    with torch.random.fork_rng():
        same = ns.vmap(lambda x: x + torch.rand(3, dtype=x.dtype), randomness="same")(x)
        different = ns.vmap(lambda x: x + torch.rand(3, dtype=x.dtype), randomness="different")(x)
    assert all(torch.equal(same[0], s) for s in same)
    assert not all(torch.equal(different[0], d) for d in different)


def test_vmap_of_grad_per_sample():
    """TestVmapOfGrad.test_per_sample_grads_inplace_view / simple per-sample gradients"""
    w = randn(3)
    xs = randn(5, 3, seed=1)
    grads = ns.vmap(ns.grad(lambda w, x: (w * x).sum().sin()), in_axes=(None, 0))(w, xs)
    expected = torch.stack([((w * x).sum()).cos() * x for x in xs])
    close(grads, expected)


def test_vmap_of_jacrev_batched_jacobian():
    """TestVmapJvpInplaceView / batched Jacobians: batched_jacobian equals vmap(jacrev)"""
    xs = randn(4, 3)
    close(ns.batched_jacobian(torch.sin)(xs), ns.vmap(ns.jacrev(torch.sin))(xs))


def test_functional_call_per_sample_grads():
    """TestFunctionalize / TestComposability: per-sample grads of a module through functional_call"""
    with torch.random.fork_rng():  # the module's initialisation draws from the global generator
        model = torch.nn.Linear(3, 2).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    xs = randn(4, 3)

    def loss(p, x):
        return torch.func.functional_call(model, p, (x,)).pow(2).sum()

    grads = ns.vmap(ns.grad(loss), in_axes=(None, 0))(params, xs)
    for i in range(4):
        expected = torch.func.grad(loss)(params, xs[i])
        for k in params:
            close(grads[k][i], expected[k])


def test_grad_of_math_functions():
    """TestGradTransform over elementwise primitives (sin, exp, log, tanh, sigmoid)"""
    x = randn(5).abs() + 0.5
    for f, d in [(torch.sin, torch.cos), (torch.exp, torch.exp), (torch.log, lambda x: 1 / x),
                 (torch.tanh, lambda x: 1 - torch.tanh(x) ** 2),
                 (torch.sigmoid, lambda x: torch.sigmoid(x) * (1 - torch.sigmoid(x)))]:
        close(ns.grad(lambda x, f=f: f(x).sum())(x), d(x))


def test_hessian_of_softmax_cross_entropy_is_psd():
    """TestHessian (a classification loss): symmetric, positive semidefinite"""
    logits = randn(5)
    target = torch.tensor(2)
    h = ns.hessian(lambda z: F.cross_entropy(z[None], target[None]))(logits)
    close(h, h.T)
    assert torch.linalg.eigvalsh(h).min() > -1e-12
    assert math.isclose(float(h.sum()), 0.0, abs_tol=1e-12)  # rows of the softmax Jacobian sum to zero
