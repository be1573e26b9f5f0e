"""Sparse Jacobians and Hessians, sparsity detection and colorings, on every backend.

Oracles: the true pattern is the union of the dense derivative's non-zeros at three random
points (crossgrad's dense ``jacobian`` / ``hessian``); values against the dense transforms;
torch against jax for patterns, colors and values; colorings against random patterns in
NumPy (every entry read back exactly).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.sparsity import coloring as colorings
from crossgrad.sparsity.patterns import Pattern
from crossgrad.testing import frameworks
from crossgrad.testing import sparse_problems as sparse

PROBLEMS = sparse.catalog()


def _size(x) -> int:
    return int(np.prod(x.shape))


def transform_of(backend, problem, **options):
    f = problem.build(sparse.ops(backend.name))
    return (backend.sparse_jacobian if problem.order == 1 else backend.sparse_hessian)(f, **options)


@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_detected_pattern_is_the_true_one_and_the_values_the_dense_ones(backend, problem, rng):
    """The true pattern: the union of the dense derivative's non-zeros at three random points;
    the sparse values at the first point against the dense derivative there."""
    f = problem.build(sparse.ops(backend.name))
    dense = frameworks.quick(backend, backend.jacobian(f) if problem.order == 1 else backend.hessian(f))
    points = [frameworks.convert(problem.inputs(rng), backend.name, "float64") for _ in range(3)]
    matrices = [frameworks.to_numpy(dense(x)).reshape(-1, _size(x)) for x in points]
    expected = np.any([m != 0 for m in matrices], axis=0)
    detect = backend.jacobian_sparsity if problem.order == 1 else backend.hessian_sparsity
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.SparsityWarning)  # every operation here has a rule
        detected = detect(f)(points[0]).to_dense()
    assert detected.shape == expected.shape
    if problem.exact:
        assert (detected == expected).all(), f"{(detected != expected).sum()} entries differ"
    assert (detected | expected).sum() == detected.sum(), "the detected pattern misses entries"
    got = frameworks.quick(backend, transform_of(backend, problem, format="dense"))(points[0])
    frameworks.assert_trees_close(got, matrices[0], **TOL["float64"]["same"], what=problem.name)


@pytest.mark.parametrize("problem", [sparse.brusselator(), sparse.convolution(), sparse.rosenbrock()],
                         ids=lambda p: p.name)
def test_float32_values_equal_the_dense_transform(backend, problem, rng):
    f = problem.build(sparse.ops(backend.name))
    x = frameworks.convert(problem.inputs(rng), backend.name, "float32")
    dense = frameworks.quick(backend, backend.jacobian(f) if problem.order == 1 else backend.hessian(f))(x)
    got = frameworks.quick(backend, transform_of(backend, problem, format="dense"))(x)
    expected = frameworks.to_numpy(dense).reshape(frameworks.to_numpy(got).shape)
    frameworks.assert_trees_close(got, expected, **TOL["float32"]["same"], what=problem.name)


@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_forward_and_reverse_colorings_give_the_same_jacobian(backend, mode, rng):
    problem = sparse.gather_scatter()
    f = problem.build(sparse.ops(backend.name))
    x = frameworks.convert(problem.inputs(rng), backend.name, "float64")
    jac = backend.sparse_jacobian(f, mode=mode, format="dense")
    assert jac.plan(x).mode == mode
    frameworks.assert_trees_close(frameworks.quick(backend, jac)(x), frameworks.to_numpy(frameworks.quick(backend, backend.jacobian(f))(x)),
                                  **TOL["float64"]["same"])


@pytest.mark.parity
@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="compares both backends")
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_torch_and_jax_agree_on_patterns_colors_and_values(problem, rng):
    x = problem.inputs(rng)
    plans, values = {}, {}
    for name in ("torch", "jax"):
        backend = cg.backend(name)
        arg = frameworks.convert(x, name, "float64")
        transform = transform_of(backend, problem, format="values")
        plans[name], values[name] = transform.plan(arg), frameworks.quick(backend, transform)(arg)
    assert plans["torch"].pattern == plans["jax"].pattern
    assert plans["torch"].colors == plans["jax"].colors and plans["torch"].mode == plans["jax"].mode
    frameworks.assert_trees_close(values["torch"], values["jax"], **TOL["float64"]["parity"], what=problem.name)


def test_formats_hold_the_same_matrix(backend, rng):
    problem = sparse.stencil_1d(9)
    x = frameworks.convert(problem.inputs(rng), backend.name, "float64")
    dense = frameworks.to_numpy(transform_of(backend, problem, format="dense")(x))
    coo = transform_of(backend, problem, format="coo")(x)
    csr = transform_of(backend, problem, format="csr")(x)
    as_dense = (lambda m: m.to_dense()) if backend.name == "torch" else (lambda m: m.todense())
    np.testing.assert_array_equal(frameworks.to_numpy(as_dense(coo)), dense)
    np.testing.assert_array_equal(frameworks.to_numpy(as_dense(csr)), dense)
    np.testing.assert_array_equal(transform_of(backend, problem, format="scipy")(x).toarray(), dense)
    plan = transform_of(backend, problem).plan(x)
    values = frameworks.to_numpy(transform_of(backend, problem, format="values")(x))
    np.testing.assert_array_equal(values, dense[plan.pattern.rows, plan.pattern.cols])


def test_under_jit_the_plan_is_made_once_and_the_values_agree(backend, rng):
    problem = sparse.rosenbrock(16)
    x = frameworks.convert(problem.inputs(rng), backend.name, "float64")
    eager = transform_of(backend, problem, format="dense")
    jitted = backend.jit(eager)
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        first, second = jitted(x), jitted(x * 2)
    frameworks.assert_trees_close(first, eager(x), **TOL["float64"]["same"])
    frameworks.assert_trees_close(second, eager(x * 2), **TOL["float64"]["same"])
    assert eager.plan(x) is eager.plan(x * 3)


def test_sparse_results_under_jit(backend, rng):
    problem = sparse.banded(10)
    x = frameworks.convert(problem.inputs(rng), backend.name, "float64")
    jitted = backend.jit(transform_of(backend, problem))
    with warnings.catch_warnings():
        warnings.simplefilter("error", cg.CompileFallbackWarning)
        out = jitted(x)
    got = out.to_dense() if backend.name == "torch" else out.todense()
    frameworks.assert_trees_close(got, frameworks.to_numpy(backend.jacobian(problem.build(sparse.ops(backend.name)))(x)),
                                  **TOL["float64"]["same"])


@pytest.mark.parametrize("order", [1, 2])
def test_batched_sparse_transforms_match_per_sample_dense(backend, order, rng):
    problem = sparse.stencil_1d(7) if order == 1 else sparse.rosenbrock(7)
    f = problem.build(sparse.ops(backend.name))
    xs = frameworks.convert(rng.standard_normal((4, *problem.shape)), backend.name, "float64")
    batched = backend.batched_sparse_jacobian if order == 1 else backend.batched_sparse_hessian
    dense = backend.batched_jacobian if order == 1 else backend.batched_hessian
    got = frameworks.quick(backend, batched(f, format="dense"))(xs)
    frameworks.assert_trees_close(got, frameworks.to_numpy(frameworks.quick(backend, dense(f))(xs)), **TOL["float64"]["same"])
    values = batched(f, format="values")(xs)
    assert tuple(values.shape) == (4, batched(f).plan(xs).pattern.nnz)


def test_a_given_pattern_in_every_form(backend, rng):
    problem = sparse.stencil_1d(8)
    f = problem.build(sparse.ops(backend.name))
    x = frameworks.convert(problem.inputs(rng), backend.name, "float64")
    truth = backend.jacobian_sparsity(f)(x)
    import scipy.sparse as sps

    forms = [truth, truth.to_dense(), sps.csr_array(truth.to_dense()), frameworks.convert(truth.to_dense() * 1.0, backend.name, "float64")]
    for given in forms:
        plan = backend.sparse_jacobian(f, sparsity=given).plan(x)
        assert not plan.detected and plan.pattern == truth
    jac = backend.sparse_jacobian(f, sparsity=forms[-1], format="dense", check=True)
    frameworks.assert_trees_close(jac(x), frameworks.to_numpy(backend.jacobian(f)(x)), **TOL["float64"]["same"])


def test_a_wrong_pattern_is_caught_by_check(backend, rng):
    problem = sparse.stencil_1d(8)
    f = problem.build(sparse.ops(backend.name))
    x = frameworks.convert(problem.inputs(rng), backend.name, "float64")
    diagonal_only = np.eye(6, 8, k=1, dtype=bool)
    with pytest.raises(cg.SparsityCheckError, match="misses entries"):
        backend.sparse_jacobian(f, sparsity=diagonal_only, check=True)(x)


@pytest.mark.parametrize("bad", [np.ones((3, 3), bool), np.ones(48, bool), "dense"])
def test_a_pattern_of_the_wrong_shape_is_named(backend, bad, rng):
    f = sparse.stencil_1d(8).build(sparse.ops(backend.name))
    x = frameworks.convert(rng.standard_normal(8), backend.name, "float64")
    with pytest.raises(cg.SparsityPatternError, match="sparse_jacobian: expected a"):
        backend.sparse_jacobian(f, sparsity=bad)(x)


def test_unsupported_inputs_and_outputs_are_named(backend, rng):
    x = frameworks.convert(rng.standard_normal(5), backend.name, "float64")
    with pytest.raises(cg.SparsitySupportError, match="one array"):
        backend.sparse_jacobian(lambda x: (x, x))(x)
    with pytest.raises(cg.SparsitySupportError, match="an int argnums"):
        backend.sparse_jacobian(lambda x, y: x * y, argnums=(0, 1))
    with pytest.raises(cg.NonScalarOutputError):
        backend.sparse_hessian(lambda x: x ** 2)(x)
    with pytest.raises(cg.OutputError, match="floating-point outputs"):
        backend.sparse_jacobian(lambda x: x > 0)(x)
    with pytest.raises(cg.OptionError, match="format"):
        backend.sparse_jacobian(lambda x: x, format="bsr")
    with pytest.raises(cg.OptionError, match="mode"):
        backend.sparse_jacobian(lambda x: x, mode="loop")


def test_indices_from_an_argument_make_the_pattern_conservative(backend, rng):
    x = frameworks.convert(rng.standard_normal(6), backend.name, "float64")
    idx = np.array([0, 2, 4])
    index = frameworks.ops(backend.name).asarray(idx, "float64")
    index = index.long() if backend.name == "torch" else index.astype("int32")
    with pytest.warns(cg.SparsityWarning, match="indices not constant"):
        pattern = backend.jacobian_sparsity(lambda x, i: x[i] ** 2)(x, index)
    assert pattern.to_dense().all()  # valid for every index the argument may hold
    jac = backend.sparse_jacobian(lambda x, i: x[i] ** 2, format="dense")
    with pytest.warns(cg.SparsityWarning):
        got = jac(x, index)
    expected = np.zeros((3, 6))
    expected[np.arange(3), idx] = 2 * frameworks.to_numpy(x)[idx]
    np.testing.assert_allclose(frameworks.to_numpy(got), expected, rtol=1e-12)


def test_an_operation_without_a_rule_is_named_and_dense(backend, rng):
    x = frameworks.convert(rng.standard_normal((3, 3)), backend.name, "float64")
    solve = (lambda a: __import__("torch").linalg.inv(a)) if backend.name == "torch" else (
        lambda a: __import__("jax").numpy.linalg.inv(a))
    with pytest.warns(cg.SparsityWarning, match="no sparsity rule"):
        pattern = backend.jacobian_sparsity(solve)(x)
    assert pattern.nnz == 81


def test_the_plan_is_inspectable(backend, rng):
    x = frameworks.convert(rng.standard_normal(1000), backend.name, "float32")
    plan = transform_of(backend, sparse.rosenbrock(1000)).plan(x)
    assert plan.colors == 3 and plan.mode == "symmetric" and plan.detected
    assert plan.pattern.shape == (1000, 1000) and plan.pattern.nnz == 2998
    assert "3 colors" in repr(plan)


# -- colorings, framework-free --------------------------------------------------------------------

def _random_pattern(rng, m, n, density):
    mask = rng.random((m, n)) < density
    mask[rng.integers(0, m), :] |= rng.random(n) < 0.5  # a denser row
    return Pattern.from_dense(mask)


@pytest.mark.parametrize("seed", range(6))
def test_colorings_read_every_entry_back(seed):
    rng = np.random.default_rng(seed)
    p = _random_pattern(rng, 30, 25, 0.08)
    j = rng.standard_normal(p.shape) * p.to_dense()
    for mode in ("fwd", "rev"):
        c = colorings.coloring(p, mode)
        compressed = (j @ c.seeds.T).T if mode == "fwd" else c.seeds @ j
        np.testing.assert_array_equal(compressed.ravel()[c.reads], j[p.rows, p.cols])
    sym = Pattern.from_dense(p.to_dense()[:25, :25] | p.to_dense()[:25, :25].T | np.eye(25, dtype=bool))
    h = rng.standard_normal(sym.shape) * sym.to_dense()
    h = h + h.T
    c = colorings.coloring(sym, "symmetric")
    np.testing.assert_allclose((h @ c.seeds.T).T.ravel()[c.reads], h[sym.rows, sym.cols], rtol=1e-14)


def test_star_coloring_needs_two_colors_on_an_arrowhead():
    mask = np.eye(40, dtype=bool)
    mask[0, :] = mask[:, 0] = True
    arrow = Pattern.from_dense(mask)
    assert colorings.coloring(arrow, "symmetric").count == 2
    assert colorings.coloring(arrow, "fwd").count == 40


def test_a_coloring_that_cannot_read_an_entry_is_refused():
    p = Pattern.from_dense(np.ones((2, 2), bool))
    with pytest.raises(ValueError, match="share a row"):
        colorings.reads(p, "fwd", np.zeros(2, np.int64))


def test_a_convolution_in_its_kernel_and_in_other_layouts(backend, rng):
    """The convolution rule's kernel side, and jax's dimension numbers (HWIO kernel, NHWC output)."""
    u = rng.standard_normal((1, 2, 5, 5))
    k = rng.standard_normal((3, 2, 3, 3))
    if backend.name == "torch":
        import torch

        image = torch.tensor(u)
        f = lambda w: torch.nn.functional.conv2d(image, w, padding=1)  # noqa: E731
        w = torch.tensor(k)
    else:
        import jax
        import jax.numpy as jnp

        image = jnp.asarray(u)
        f = lambda w: jax.lax.conv_general_dilated(image, w, (1, 1), "SAME",  # noqa: E731
                                                   dimension_numbers=("NCHW", "HWIO", "NHWC"))
        w = jnp.asarray(np.transpose(k, (2, 3, 1, 0)))
    detected = backend.jacobian_sparsity(f)(w).to_dense()
    dense = frameworks.to_numpy(backend.jacobian(f)(w)).reshape(detected.shape)
    assert (detected == (dense != 0)).all()
