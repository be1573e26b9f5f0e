"""Transforms compose: with each other, with jax.jit, with torch.compile; and the loop
reference itself agrees with float64 finite differences."""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

from crossgrad import pytree
from crossgrad.testing import frameworks
from crossgrad.testing.problems import catalog, logsumexp, tanh_linear

SAME = TOL["float64"]["same"]


def test_jacobian_of_a_vmapped_function(backend, rng):
    ops = frameworks.ops(backend.name)
    x = frameworks.convert(rng.standard_normal((3, 2)), backend.name, "float64")
    jac = backend.jacrev(backend.vmap(lambda row: ops.sin(row) * ops.sum(row)))(x)
    xn = frameworks.to_numpy(x)
    expected = np.zeros((3, 2, 3, 2))
    for b in range(3):
        s = xn[b].sum()
        expected[b, :, b, :] = np.diag(np.cos(xn[b]) * s) + np.sin(xn[b])[:, None]
    frameworks.assert_trees_close(jac, expected, **SAME)


def test_vmap_of_hessian_equals_batched_hessian(backend, rng):
    problem = logsumexp(n=4, batch=3)
    f = problem.build(frameworks.ops(backend.name))
    (x,) = frameworks.convert(problem.inputs(rng), backend.name, "float64")
    frameworks.assert_trees_close(backend.vmap(backend.hessian(f))(x), backend.batched_hessian(f)(x), **SAME)
    frameworks.assert_trees_close(backend.vmap(backend.hessian(f))(x), problem.hessian(frameworks.to_numpy(x)), **SAME)


def test_hessian_of_grad_is_jacobian_of_grad(backend, rng):
    problem = catalog()[2]  # rosenbrock
    f = problem.build(frameworks.ops(backend.name))
    (x,) = frameworks.convert(problem.inputs(rng), backend.name, "float64")
    frameworks.assert_trees_close(backend.jacfwd(backend.grad(f))(x), problem.hessian(frameworks.to_numpy(x)), **SAME)


@pytest.mark.parametrize("impl", ["builtin", "composed"])
@pytest.mark.parametrize("transform", ["jacrev", "jacfwd", "hessian", "batched_hessian", "batched_jacobian", "vmap"])
def test_under_jax_jit(transform, impl):
    jax = pytest.importorskip("jax")
    import crossgrad as cg

    problem = tanh_linear(n_in=3, n_out=4, batch=5)
    f = problem.build(frameworks.ops("jax"))
    args = frameworks.convert(problem.inputs(np.random.default_rng(0)), "jax", "float64")
    ns = cg.jax
    if transform.startswith("batched"):
        fn = getattr(ns, transform)(f, 2, (None, None, 0), impl=impl)
    elif transform == "vmap":
        fn = ns.vmap(f, (None, None, 0), impl=impl, chunk_size=None if impl == "builtin" else 2)
    else:
        fn = ns.vmap(getattr(ns, transform)(f, 2, impl=impl), (None, None, 0))
    frameworks.assert_trees_close(jax.jit(fn)(*args), fn(*args), **SAME)


def test_under_torch_compile():
    torch = pytest.importorskip("torch")
    import crossgrad as cg

    problem = tanh_linear(n_in=3, n_out=4, batch=5)
    f = problem.build(frameworks.ops("torch"))
    args = frameworks.convert(problem.inputs(np.random.default_rng(0)), "torch", "float64")
    fn = cg.torch.batched_jacobian(f, 2, (None, None, 0), mode="fwd")
    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="aot_eager")
    frameworks.assert_trees_close(compiled(*args), fn(*args), **SAME)


def finite_difference_jacobian(f, args, argnums, backend, eps=1e-6):
    """Central differences in float64 NumPy space, through the framework's evaluation."""
    nums = argnums if isinstance(argnums, tuple) else (argnums,)
    base = frameworks.to_numpy(args)
    out0, _out_def = pytree.flatten(frameworks.to_numpy(f(*args)))
    blocks = [[] for _ in out0]
    for k in nums:
        leaves, arg_def = pytree.flatten(base[k])
        for li, leaf in enumerate(leaves):
            cols = []
            for idx in range(leaf.size):
                vals = []
                for sign in (1.0, -1.0):
                    moved = [x.copy() for x in leaves]
                    moved[li].reshape(-1)[idx] += sign * eps
                    new = list(base)
                    new[k] = pytree.unflatten(arg_def, moved)
                    vals.append(pytree.leaves(frameworks.to_numpy(f(*frameworks.convert(tuple(new), backend, "float64")))))
                cols.append([(a - b) / (2 * eps) for a, b in zip(*vals)])
            for o, o0 in enumerate(out0):
                blocks[o].append(np.stack([c[o] for c in cols], axis=-1).reshape(o0.shape + leaf.shape))
    return blocks


@pytest.mark.parametrize("problem", catalog(), ids=lambda p: p.name)
def test_loop_reference_matches_finite_differences(problem):
    """The oracle of the oracle: the loop reference (torch backend) against float64 FD."""
    import crossgrad as cg

    f = problem.build(frameworks.ops("torch"))
    args = frameworks.convert(problem.inputs(np.random.default_rng(3)), "torch", "float64")
    loop = cg.torch.jacobian(f, problem.argnums, mode="loop")(*args)
    fd = finite_difference_jacobian(f, args, problem.argnums, "torch")
    got = pytree.leaves(frameworks.to_numpy(loop))
    expected = [b for row in fd for b in row]
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **TOL["float64"]["fd"])
