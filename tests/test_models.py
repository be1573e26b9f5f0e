"""Real models as inputs: torch ``nn.Module`` parameters, Equinox modules, Flax NNX states,
registered classes; each checked against the framework's own transforms."""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, defaultdict

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks

F64 = TOL["float64"]["same"]
needs_torch = pytest.mark.skipif("torch" not in frameworks.selected(), reason="torch not selected")
needs_jax = pytest.mark.skipif("jax" not in frameworks.selected(), reason="jax not selected")


@needs_torch
def test_torch_module_per_sample_parameter_jacobians_keep_the_model_order():
    import torch
    from torch.func import functional_call, jacrev, vmap

    with torch.random.fork_rng():  # the test leaves the global generator as it found it
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
        x = torch.randn(7, 3, dtype=torch.float64)
    params = dict(model.named_parameters())

    def f(p, xi):
        return functional_call(model, p, (xi,))

    got = cg.torch.batched_jacobian(f, 0, (None, 0))(params, x)
    assert list(got) == list(params)  # the model's order, as torch.func and state_dict() give it
    expected = vmap(jacrev(f), in_dims=(None, 0))(params, x)
    for name in params:
        np.testing.assert_allclose(got[name].detach().numpy(), expected[name].detach().numpy(), **F64)
    # Input Hessians per sample, against torch.func.
    h = cg.torch.batched_hessian(lambda xi: f(params, xi).sum())(x)
    expected_h = vmap(torch.func.hessian(lambda xi: f(params, xi).sum()))(x)
    np.testing.assert_allclose(h.detach().numpy(), expected_h.detach().numpy(), **F64)


@needs_torch
def test_torch_dict_conventions():
    import torch

    f = lambda d: (d["a"] ** 2).sum() + 3 * d["b"].sum()  # noqa: E731
    plain = {"b": torch.ones(2, dtype=torch.float64), "a": torch.ones(3, dtype=torch.float64)}
    assert list(cg.torch.grad(f)(plain)) == ["b", "a"]  # insertion order, as torch.func
    assert list(cg.torch.grad(f, impl="composed")(plain)) == ["b", "a"]
    od = OrderedDict(plain)
    assert type(cg.torch.grad(f)(od)) is OrderedDict
    dd = defaultdict(list, plain)
    g = cg.torch.grad(f)(dd)
    assert type(g) is defaultdict and g.default_factory is list and list(g) == ["b", "a"]


@needs_jax
def test_jax_dict_conventions():
    import jax.numpy as jnp

    f = lambda d: (d["a"] ** 2).sum() + 3 * d["b"].sum()  # noqa: E731
    plain = {"b": jnp.ones(2), "a": jnp.ones(3)}
    assert list(cg.jax.grad(f)(plain)) == ["a", "b"]  # sorted, as jax.tree_util
    assert list(cg.jax.grad(f, impl="composed")(plain)) == ["a", "b"]
    od = OrderedDict(plain)
    g = cg.jax.grad(f)(od)
    assert type(g) is OrderedDict and list(g) == ["b", "a"]
    g = cg.jax.grad(f)(defaultdict(list, plain))
    assert type(g) is defaultdict and g.default_factory is list and list(g) == ["a", "b"]


@needs_jax
@pytest.mark.parametrize("impl", ["auto", "composed"])
def test_registered_class_with_a_static_leaf(impl):
    import jax
    import jax.numpy as jnp

    @jax.tree_util.register_dataclass
    @dataclasses.dataclass
    class Layer:
        w: jax.Array
        b: jax.Array
        act: object = dataclasses.field(default=jnp.tanh)

    layer = Layer(jnp.arange(6.0).reshape(2, 3) / 6, jnp.zeros(2))
    x = jnp.arange(3.0)
    loss = lambda m, x: m.act(m.w @ x + m.b).sum()  # noqa: E731
    g = cg.jax.grad(loss, impl=impl)(layer, x)
    assert type(g) is Layer and g.act is None  # static: None at its place, as equinox's filter_grad
    expected = jax.grad(lambda w, b: loss(Layer(w, b), x), argnums=(0, 1))(layer.w, layer.b)
    np.testing.assert_allclose(g.w, expected[0], **F64)
    np.testing.assert_allclose(g.b, expected[1], **F64)
    h = cg.jax.hessian(loss, impl=impl)(layer, x)
    expected_h = jax.hessian(lambda w: loss(Layer(w, layer.b), x))(layer.w)
    np.testing.assert_allclose(h.w.w, expected_h, **F64)


@needs_jax
def test_equinox_model_against_filter_grad():
    eqx = pytest.importorskip("equinox")
    import jax
    import jax.numpy as jnp

    model = eqx.nn.MLP(3, 2, 8, 2, activation=jax.nn.softplus, key=jax.random.key(0))
    x = jnp.linspace(-1.0, 1.0, 3)
    loss = lambda m, x: (m(x) ** 2).sum()  # noqa: E731
    got = cg.jax.grad(loss)(model, x)
    expected = eqx.filter_grad(loss)(model, x)
    got_leaves = jax.tree_util.tree_leaves(got)
    expected_leaves = jax.tree_util.tree_leaves(expected)
    assert len(got_leaves) == len(expected_leaves) > 0
    for a, b in zip(got_leaves, expected_leaves):
        np.testing.assert_allclose(a, b, **F64)
    # Input derivatives of the model, and its Laplacian, against jax's own.
    xs = jax.random.normal(jax.random.key(1), (5, 3))
    bj = cg.jax.batched_jacobian(lambda m, x: m(x), 1, (None, 0))(model, xs)
    np.testing.assert_allclose(bj, jax.vmap(jax.jacrev(model))(xs), **F64)
    lap = cg.jax.batched_laplacian(lambda m, x: m(x).sum(), 1, (None, 0))(model, xs)
    dense = jax.vmap(jax.hessian(lambda x: model(x).sum()))(xs)
    np.testing.assert_allclose(lap, jnp.trace(dense, axis1=-2, axis2=-1), **F64)


@needs_jax
def test_flax_nnx_state_against_nnx_grad():
    nnx = pytest.importorskip("flax.nnx")
    import jax
    import jax.numpy as jnp

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.a = nnx.Linear(3, 6, rngs=rngs, param_dtype=jnp.float64)
            self.b = nnx.Linear(6, 1, rngs=rngs, param_dtype=jnp.float64)

        def __call__(self, x):
            return self.b(jnp.tanh(self.a(x)))

    net = Net(nnx.Rngs(0))
    x = jnp.linspace(-1.0, 1.0, 3)
    graphdef, state = nnx.split(net)
    loss = lambda state, x: (nnx.merge(graphdef, state)(x) ** 2).sum()  # noqa: E731
    got = cg.jax.grad(loss)(state, x)
    expected = nnx.grad(lambda m: (m(x) ** 2).sum())(net)
    got_leaves, expected_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(expected)
    assert len(got_leaves) == len(expected_leaves) == 4
    for a, b in zip(got_leaves, expected_leaves):
        np.testing.assert_allclose(a, b, **F64)
