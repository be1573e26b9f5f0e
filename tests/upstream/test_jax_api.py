"""Ports of jax's ``tests/api_test.py`` (the ``APITest`` autodiff tests) and
``tests/batching_test.py``, run through crossgrad's jax backend.

Each test names the upstream test it ports and keeps its assertion's intent; where
crossgrad's spec deviates (named errors instead of TypeError, keyword arguments never
batched by vmap), the test says so.
"""

from __future__ import annotations

import numpy as np
import pytest

import crossgrad as cg

jax = pytest.importorskip("jax")
jnp = jax.numpy
ns = cg.jax


def close(a, b, tol=1e-10):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def normal(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape))


# -- APITest: grad --------------------------------------------------------------------------

def test_grad_item():
    """APITest.test_grad_item"""
    close(ns.grad(lambda x: x ** 2)(3.0 * jnp.ones(())), 6.0)


def test_grad_bad_input():
    """APITest.test_grad_bad_input: a string argument is an InputDtypeError, not a TypeError"""
    with pytest.raises(cg.InputDtypeError):
        ns.grad(lambda x: x)("foo")


def test_grad_argnums():
    """APITest.test_grad_argnums"""
    def f(x, y, z, flag=False):
        return 1.0 * x + 2.0 * y + 3.0 * z if not flag else 0.0

    x = y = z = jnp.asarray(1.0)
    close(ns.grad(f)(x, y, z), 1.0)
    close(ns.grad(f, argnums=1)(x, y, z), 2.0)
    close(ns.grad(f, argnums=(0, 1))(x, y, z)[1], 2.0)
    close(ns.grad(f, argnums=(-1,))(x, y, z)[0], 3.0)


def test_value_and_grad_argnums():
    """APITest.test_value_and_grad_argnums"""
    def f(x, y, z):
        return 1.0 * x + 2.0 * y + 3.0 * z

    x = y = z = jnp.asarray(1.0)
    value, g = ns.value_and_grad(f, argnums=(0, 2))(x, y, z)
    close(value, 6.0)
    close(g[0], 1.0)
    close(g[1], 3.0)


def test_grad_of_jit():
    """APITest.test_grad_of_jit"""
    close(ns.grad(jax.jit(lambda x: x ** 3))(jnp.asarray(2.0)), 12.0)


def test_jit_of_grad():
    """APITest.test_jit_of_grad"""
    close(jax.jit(ns.grad(lambda x: x ** 3))(jnp.asarray(2.0)), 12.0)


def test_grad_nonscalar_output_error():
    """APITest.test_grad_tuple_output / non-scalar output: NonScalarOutputError"""
    with pytest.raises(cg.NonScalarOutputError):
        ns.grad(lambda x: x)(jnp.ones(3))
    with pytest.raises(cg.NonScalarOutputError):
        ns.grad(lambda x: (x, x))(jnp.asarray(1.0))


def test_grad_of_int_errors():
    """APITest.test_grad_of_int_errors: InputDtypeError"""
    with pytest.raises(cg.InputDtypeError):
        ns.grad(lambda x: (x * 2).astype(jnp.float64))(jnp.asarray(1))


def test_grad_of_bool_errors():
    """APITest.test_grad_of_bool_errors"""
    with pytest.raises(cg.InputDtypeError):
        ns.grad(lambda x: jnp.where(x, 1.0, 0.0))(jnp.asarray(True))


def test_grad_pytree_input_output_structure():
    """APITest.test_grad_and_dict / pytree inputs: the gradient mirrors the input"""
    params = {"w": jnp.ones(3), "b": (jnp.asarray(2.0), [jnp.zeros(2)])}
    g = ns.grad(lambda p: (p["w"] ** 2).sum() + p["b"][0] * 3 + p["b"][1][0].sum())(params)
    close(g["w"], 2 * jnp.ones(3))
    close(g["b"][0], 3.0)
    close(g["b"][1][0], jnp.ones(2))


def test_grad_and_aux_basic():
    """APITest.test_grad_and_aux_basic"""
    g, aux = ns.grad(lambda x: (x ** 3, [x ** 2]), has_aux=True)(jnp.asarray(3.0))
    close(g, 27.0)
    close(aux[0], 9.0)


def test_grad_and_aux_error():
    """APITest.test_grad_and_aux_error: HasAuxError"""
    with pytest.raises(cg.HasAuxError):
        ns.grad(lambda x: (1.0, 2.0, 3.0), has_aux=True)(jnp.asarray(1.0))
    with pytest.raises(cg.HasAuxError):
        ns.grad(lambda x: x, has_aux=True)(jnp.asarray(1.0))


def test_grad_and_aux_nested():
    """APITest.test_grad_and_aux_nested"""
    def f(x):
        _, aux = ns.grad(lambda x: (x ** 3, [x ** 3]), has_aux=True)(x)
        return aux[0]

    close(ns.grad(f)(jnp.asarray(4.0)), 3 * 4.0 ** 2)


def test_grad_and_aux_constant():
    """APITest.test_grad_and_aux_constant"""
    g, aux = ns.grad(lambda x: (x ** 3, [4.0]), has_aux=True)(jnp.asarray(4.0))
    close(g, 48.0)
    assert aux == [4.0]


def test_grad_and_aux_no_tracers():
    """APITest.test_grad_and_aux_no_tracers: the aux comes back concrete"""
    _, aux = ns.grad(lambda x: (x ** 2, x * 3), has_aux=True)(jnp.asarray(2.0))
    assert not isinstance(aux, jax.core.Tracer)
    close(aux, 6.0)


# -- APITest: jvp, vjp, linearize -------------------------------------------------------------

def test_jvp():
    """APITest.test_jvp"""
    y, t = ns.jvp(lambda x: x ** 3, (jnp.asarray(3.0),), (jnp.asarray(1.0),))
    close(y, 27.0)
    close(t, 27.0)


def test_jvp_mismatched_arguments():
    """APITest.test_jvp_mismatched_arguments: StructureError / InputDtypeError / OptionTypeError"""
    f = lambda x: x  # noqa: E731
    with pytest.raises(cg.StructureError):
        ns.jvp(f, (jnp.ones(2),), (jnp.ones(3),))
    with pytest.raises(cg.InputDtypeError):
        ns.jvp(f, (jnp.ones(2),), (jnp.ones(2, dtype=jnp.float32),))
    with pytest.raises(cg.OptionTypeError):
        ns.jvp(f, jnp.ones(2), (jnp.ones(2),))
    with pytest.raises(cg.StructureError):
        ns.jvp(f, (jnp.ones(2),), (jnp.ones(2), jnp.ones(2)))


def test_vjp_mismatched_arguments():
    """APITest.test_vjp_mismatched_arguments"""
    _, pullback = ns.vjp(lambda x, y: x * y, jnp.ones(2), jnp.ones(2))
    with pytest.raises(cg.StructureError):
        pullback((jnp.ones(2), jnp.ones(2)))
    with pytest.raises(cg.StructureError):
        pullback(jnp.ones(3))


def test_vjp_basic():
    """APITest.test_vjp (pullback of a product)"""
    x, y = normal(3), normal(3, seed=1)
    out, pullback = ns.vjp(lambda x, y: jnp.sin(x) * y, x, y)
    gx, gy = pullback(jnp.ones(3))
    close(out, jnp.sin(x) * y)
    close(gx, jnp.cos(x) * y)
    close(gy, jnp.sin(x))


def test_jvp_and_aux_basic():
    """APITest.test_jvp_and_aux_basic"""
    out, tangent, aux = ns.jvp(lambda x: (jnp.sin(x), jnp.cos(x) + 1), (jnp.asarray(1.0),), (jnp.asarray(2.0),),
                               has_aux=True)
    close(out, jnp.sin(1.0))
    close(tangent, 2 * jnp.cos(1.0))
    close(aux, jnp.cos(1.0) + 1)


def test_vjp_and_aux_basic():
    """APITest.test_vjp_and_aux_basic"""
    _, pullback, aux = ns.vjp(lambda x: (jnp.sin(x), [x, {"s": "static"}]), jnp.asarray(1.0), has_aux=True)
    close(pullback(jnp.asarray(1.0))[0], jnp.cos(1.0))
    close(aux[0], 1.0)
    assert aux[1]["s"] == "static"  # crossgrad: non-array aux values pass through (NOTE [static aux])


def test_linearize():
    """APITest.test_linearize"""
    x, t = normal(4), normal(4, seed=1)
    out, f_jvp = ns.linearize(lambda x: jnp.sin(x) ** 2, x)
    close(out, jnp.sin(x) ** 2)
    close(f_jvp(t), 2 * jnp.sin(x) * jnp.cos(x) * t)


def test_linearize_multiple_inputs():
    """APITest.test_linearize (two primals)"""
    x, y = normal(3), normal(3, seed=1)
    _, f_jvp = ns.linearize(lambda x, y: x * y, x, y)
    close(f_jvp(jnp.ones(3), jnp.zeros(3)), y)


def test_vjp_of_jit():
    """APITest.test_vjp_of_jit"""
    _, pullback = ns.vjp(jax.jit(lambda x: x ** 2), jnp.asarray(3.0))
    close(pullback(jnp.asarray(1.0))[0], 6.0)


def test_jvp_of_jit():
    """APITest.test_jvp_of_jit"""
    _, t = ns.jvp(jax.jit(lambda x: x ** 2), (jnp.asarray(3.0),), (jnp.asarray(1.0),))
    close(t, 6.0)


# -- APITest: jacobians and hessians -----------------------------------------------------------

@pytest.mark.parametrize("jac", ["jacfwd", "jacrev", "jacobian"])
def test_jacobian(jac):
    """APITest.test_jacobian"""
    R = np.random.default_rng(0).standard_normal
    A, x = jnp.asarray(R((4, 3))), jnp.asarray(R(3))
    close(getattr(ns, jac)(lambda x: A @ x)(x), A)


def test_hessian():
    """APITest.test_hessian"""
    R = np.random.default_rng(0).standard_normal
    A, x = jnp.asarray(R((4, 4))), jnp.asarray(R(4))
    close(ns.hessian(lambda x: x @ A @ x)(x), A + A.T)


def test_std_basis():
    """APITest.test_std_basis (jacobians of pytree-to-pytree maps)"""
    x = {"a": jnp.ones(2), "b": jnp.ones(3)}
    J = ns.jacobian(lambda d: {"s": d["a"].sum() + 2 * d["b"].sum()})(x)
    close(J["s"]["a"], jnp.ones(2))
    close(J["s"]["b"], 2 * jnp.ones(3))


@pytest.mark.parametrize("jac", ["jacfwd", "jacrev"])
def test_jacobian_on_pytrees(jac):
    """APITest.test_jacobian_on_pytrees"""
    f = lambda x, y: (x * y, x + y)  # noqa: E731
    x, y = jnp.asarray(2.0), jnp.asarray(3.0)
    J = getattr(ns, jac)(f, argnums=(0, 1))(x, y)
    close(J[0][0], 3.0)
    close(J[0][1], 2.0)
    close(J[1][0], 1.0)
    close(J[1][1], 1.0)


def test_hessian_on_pytrees():
    """APITest.test_hessian_on_pytrees"""
    f = lambda x: x[0] ** 2 * x[1]  # noqa: E731
    H = ns.hessian(f)((jnp.asarray(2.0), jnp.asarray(3.0)))
    close(H[0][0], 6.0)
    close(H[0][1], 4.0)
    close(H[1][0], 4.0)
    close(H[1][1], 0.0)


def test_jacrev_of_complex_output_errors():
    """APITest.test_jacrev_of_complex_errors: ComplexOutputError (reverse mode on a complex output)"""
    with pytest.raises(cg.ComplexOutputError):
        ns.jacrev(lambda x: jnp.exp(1j * x))(jnp.ones(2))


def test_jacfwd_of_complex_output():
    """APITest.test_jacfwd_of_complex_errors' complement: forward mode answers for complex outputs"""
    J = ns.jacfwd(lambda x: jnp.exp(1j * x))(jnp.ones(2))
    close(J, jnp.diag(1j * jnp.exp(1j * jnp.ones(2))))


@pytest.mark.parametrize("jac", ["jacfwd", "jacrev"])
def test_jacobian_and_aux_basic(jac):
    """APITest.test_jacfwd_and_aux_basic / test_jacrev_and_aux_basic"""
    J, aux = getattr(ns, jac)(lambda x: (x ** 3, [x ** 2]), has_aux=True)(jnp.asarray(3.0))
    close(J, 27.0)
    close(aux[0], 9.0)


@pytest.mark.parametrize("jac", ["jacfwd", "jacrev"])
def test_jacobian_and_aux_nested(jac):
    """APITest.test_jacfwd_and_aux_nested / test_jacrev_and_aux_nested"""
    def f(x):
        _, aux = getattr(ns, jac)(lambda x: (x ** 3, [x ** 3]), has_aux=True)(x)
        return aux[0]

    close(getattr(ns, jac)(f)(jnp.asarray(4.0)), 48.0)


def test_hessian_and_aux():
    """APITest (hessian with has_aux)"""
    H, aux = ns.hessian(lambda x: ((x ** 3).sum(), x * 2), has_aux=True)(jnp.arange(1.0, 4.0))
    close(H, jnp.diag(6 * jnp.arange(1.0, 4.0)))
    close(aux, 2 * jnp.arange(1.0, 4.0))


def test_jacobian_of_jit():
    """APITest (jacobian of a jitted function)"""
    x = normal(3)
    close(ns.jacobian(jax.jit(jnp.sin))(x), jnp.diag(jnp.cos(x)))


def test_hessian_of_jit_and_jit_of_hessian():
    """APITest (hessian under and over jit)"""
    x = normal(3)
    f = lambda x: jnp.sum(jnp.sin(x))  # noqa: E731
    close(ns.hessian(jax.jit(f))(x), jnp.diag(-jnp.sin(x)))
    close(jax.jit(ns.hessian(f))(x), jnp.diag(-jnp.sin(x)))


def test_grad_closure_over_traced_value():
    """APITest.test_grad_closure (a closure over a value of the outer trace)"""
    def outer(y):
        return ns.grad(lambda x: x * y)(jnp.asarray(1.0))

    close(jax.jit(outer)(jnp.asarray(3.0)), 3.0)


def test_argnums_errors():
    """APITest (argnums out of range, repeated): ArgnumsError"""
    with pytest.raises(cg.ArgnumsError):
        ns.grad(lambda x, y: x * y, argnums=2)(jnp.asarray(1.0), jnp.asarray(1.0))
    with pytest.raises(cg.ArgnumsError):
        ns.jacobian(lambda x, y: x * y, argnums=(0, 0))(jnp.asarray(1.0), jnp.asarray(1.0))


def test_float0_free_gradient_of_unused_argument():
    """APITest.test_grad_of_unused_arg: zero gradient for an argument f ignores"""
    close(ns.grad(lambda x, y: x ** 2, argnums=1)(jnp.asarray(1.0), jnp.asarray(2.0)), 0.0)


# -- BatchingTest -------------------------------------------------------------------------------

def test_constant_function():
    """BatchingTest.testConstantFunction"""
    out = ns.vmap(lambda x: 3.0 * jnp.ones(()), in_axes=0)(jnp.ones(3))
    close(out, 3.0 * jnp.ones(3))


def test_nested_batching_mat_mat():
    """BatchingTest.testNestedBatchingMatMat"""
    R = np.random.default_rng(0).standard_normal
    A, B = jnp.asarray(R((10, 3))), jnp.asarray(R((3, 4)))
    matvec = ns.vmap(jnp.vdot, in_axes=(0, None))
    matmat = ns.vmap(matvec, in_axes=(None, 1), out_axes=1)
    close(matmat(A, B), A @ B)


def test_per_example_gradients():
    """BatchingTest.testPerExampleGradients"""
    R = np.random.default_rng(0).standard_normal
    W, b = jnp.asarray(R((5, 4))), jnp.asarray(R(5))
    xs, ys = jnp.asarray(R((10, 4))), jnp.asarray(R((10, 5)))

    def loss(params, x, y):
        W, b = params
        return jnp.sum((jnp.tanh(W @ x + b) - y) ** 2)

    per_example = ns.vmap(ns.grad(loss), in_axes=(None, 0, 0))((W, b), xs, ys)
    for i in range(10):
        gw, gb = jax.grad(loss)((W, b), xs[i], ys[i])
        close(per_example[0][i], gw)
        close(per_example[1][i], gb)


def test_jacobians_batched():
    """BatchingTest.testJacobians"""
    R = np.random.default_rng(0).standard_normal
    A, xs = jnp.asarray(R((4, 3))), jnp.asarray(R((5, 3)))
    f = lambda x: jnp.tanh(A @ x)  # noqa: E731
    close(ns.batched_jacobian(f)(xs), jax.vmap(jax.jacfwd(f))(xs))
    close(ns.vmap(ns.jacrev(f))(xs), jax.vmap(jax.jacrev(f))(xs))


def test_batched_hessians():
    """BatchingTest (vmap of hessian)"""
    xs = normal(4, 3)
    f = lambda x: jnp.sum(jnp.sin(x) * x)  # noqa: E731
    close(ns.batched_hessian(f)(xs), jax.vmap(jax.hessian(f))(xs))


def test_jvp_of_vmap():
    """BatchingTest.testJvpOfVmap (jvp through vmap)"""
    xs, ts = normal(5, 3), normal(5, 3, seed=1)
    _, t = ns.jvp(ns.vmap(jnp.sin), (xs,), (ts,))
    close(t, jnp.cos(xs) * ts)


def test_vjp_of_vmap():
    """BatchingTest (vjp of a vmapped function)"""
    xs = normal(5, 3)
    _, pullback = ns.vjp(ns.vmap(lambda x: jnp.sum(x ** 2)), xs)
    close(pullback(jnp.ones(5))[0], 2 * xs)


def test_vmap_of_jvp():
    """BatchingTest.testVmapOfJvp"""
    xs, ts = normal(5, 3), normal(5, 3, seed=1)
    t = ns.vmap(lambda x, t: ns.jvp(jnp.sin, (x,), (t,))[1])(xs, ts)
    close(t, jnp.cos(xs) * ts)


def test_np_maximum():
    """BatchingTest.testNpMaximum"""
    x, y = normal(4, 3), normal(3, seed=1)
    close(ns.vmap(jnp.maximum, in_axes=(0, None))(x, y), jnp.maximum(x, y))


def test_transpose_out_axes():
    """BatchingTest.testTranspose"""
    x = normal(2, 3, 4)
    close(ns.vmap(lambda x: x.T, in_axes=1, out_axes=2)(x), jnp.transpose(x, (2, 0, 1)))


def test_dynamic_slice():
    """BatchingTest.testDynamicSlice (batched indices)"""
    x = jnp.arange(30.0).reshape(10, 3)
    idx = jnp.array([0, 1, 2, 1, 0, 0, 1, 2, 2, 0])
    out = ns.vmap(lambda row, i: jax.lax.dynamic_slice(row, (i,), (1,)))(x, idx)
    close(out[:, 0], x[jnp.arange(10), idx])


def test_indexing():
    """BatchingTest.testIndexing"""
    x = normal(4, 5)
    close(ns.vmap(lambda row: row[2])(x), x[:, 2])


def test_reductions():
    """BatchingTest (reductions under vmap)"""
    x = normal(4, 5)
    close(ns.vmap(jnp.sum)(x), x.sum(1))
    close(ns.vmap(jnp.max)(x), x.max(1))


def test_random_keys_batched():
    """BatchingTest.testRandom: batched keys, one draw per key"""
    keys = jax.random.split(jax.random.key(0), 4)
    draws = ns.vmap(lambda k: jax.random.normal(k, (3,)))(keys)
    assert draws.shape == (4, 3) and len({tuple(np.asarray(d)) for d in draws}) == 4


def test_vmap_in_axes_list():
    """APITest.test_vmap_in_axes_list"""
    x, y = normal(3, 2), normal(2, seed=1)
    close(ns.vmap(lambda x, y: x * y, in_axes=[0, None])(x, y), x * y)


def test_vmap_out_axes_list():
    """APITest.test_vmap_out_axes_list (a list output, a tuple prefix)"""
    x = normal(3, 2)
    a, b = ns.vmap(lambda x: [x, x * 2], out_axes=(0, 1))(x)
    close(a, x)
    close(b, 2 * x.T)


def test_vmap_unbatched_object_passthrough():
    """APITest.test_vmap_unbatched_object_passthrough_issue_183"""
    fun = lambda f, x: f(x)  # noqa: E731
    close(ns.vmap(fun, in_axes=(None, 0))(jnp.sin, jnp.ones(3)), jnp.sin(1.0) * jnp.ones(3))


def test_vmap_mismatched_axis_sizes_error():
    """APITest.test_vmap_mismatched_axis_sizes_error_message: AxisSizeError"""
    with pytest.raises(cg.AxisSizeError):
        ns.vmap(lambda x, y: x + y)(jnp.ones((3, 2)), jnp.ones((4, 2)))


def test_vmap_in_axes_tree_prefix_error():
    """APITest.test_vmap_in_axes_tree_prefix_error: AxisError"""
    with pytest.raises(cg.AxisError):
        ns.vmap(lambda x: x, in_axes=((0, 0),))(jnp.ones(3))


def test_vmap_structured_in_axes():
    """APITest.test_vmap_structured_in_axes"""
    a, b, c = jnp.ones((2, 3)), jnp.ones((3, 2)), jnp.ones(2)
    out = ns.vmap(lambda t: t[0].sum() + t[1][0].sum() + t[1][1], in_axes=((0, (1, 0)),))((a, (b, c)))
    close(out, 7.0 * jnp.ones(2))


def test_vmap_kwargs_are_not_batched():
    """APITest.test_vmap_kwargs: jax batches keyword arguments along axis 0; crossgrad passes them
    to every call unchanged (its documented spec, the same on both backends)"""
    x, y = jnp.ones((3, 2)), jnp.arange(2.0)
    close(ns.vmap(lambda x, y: x * y)(x, y=y), x * y)


def test_vmap_out_axes_error():
    """APITest.test_vmap_out_axes_leaf_types: out_axes made of ints (AxisError)"""
    with pytest.raises(cg.AxisError):
        ns.vmap(lambda x: x, out_axes="x")(jnp.ones(3))


def test_vmap_negative_axes():
    """APITest.test_vmap_negative_axes"""
    x = normal(2, 3)
    close(ns.vmap(lambda x: x * 2, in_axes=-1, out_axes=-1)(x), 2 * x)


def test_vmap_chunked_equals_unchunked():
    """BatchingTest (lax.map chunks): chunk_size gives the same result"""
    x = normal(7, 3)
    close(ns.vmap(jnp.sin, chunk_size=3)(x), jnp.sin(x))


def test_grad_of_vmap_sum():
    """BatchingTest.testGradOfVmap"""
    xs = normal(5, 3)
    close(ns.grad(lambda xs: jnp.sum(ns.vmap(lambda x: jnp.sum(x ** 3))(xs)))(xs), 3 * xs ** 2)


def test_hessian_vector_product():
    """APITest (hvp: jvp of grad)"""
    R = np.random.default_rng(0).standard_normal
    A, x, v = jnp.asarray(R((4, 4))), jnp.asarray(R(4)), jnp.asarray(R(4))
    close(ns.hvp(lambda x: x @ A @ x, (x,), (v,)), (A + A.T) @ v)
