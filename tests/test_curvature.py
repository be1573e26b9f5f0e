"""Laplacians, Hessian traces and diagonals, and the Hessian operator, on every backend.

Oracle: the dense Hessian (crossgrad's ``loop`` reference, read in NumPy) and closed
forms; torch against jax; estimators by their mean over seeds.
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad import pytree
from crossgrad.testing import frameworks
from crossgrad.testing.problems import batched_catalog, catalog

F64 = TOL["float64"]["same"]


def dense_trace_and_diagonal(hessian, shapes: list[tuple[int, ...]]):
    """Per output leaf: the trace, and the diagonal per input leaf (of per-sample shape
    ``shapes[i]``), from the nested Hessian."""
    flat = [np.asarray(x) for x in pytree.leaves(frameworks.to_numpy(hessian))]
    count = len(shapes)
    traces, diagonals = [], []
    for o in range(len(flat) // (count * count)):
        trace, diag = 0.0, []
        for i, shape in enumerate(shapes):
            block = flat[o * count * count + i * count + i]
            lead = block.shape[:block.ndim - 2 * len(shape)]
            size = int(np.prod(shape, dtype=int))
            d = np.diagonal(block.reshape((*lead, size, size)), axis1=-2, axis2=-1)
            diag.append(d.reshape(lead + tuple(shape)))
            trace = trace + d.sum(-1)
        traces.append(trace)
        diagonals.append(diag)
    return traces, diagonals


def leaf_shapes(problem, args):
    """Per-sample shapes of the differentiated leaves (a batch is on axis 0 in the catalog)."""
    nums = (problem.argnums,) if isinstance(problem.argnums, int) else problem.argnums
    out = []
    for k in nums:
        axes = problem.in_axes
        batched = axes is not None and (axes if isinstance(axes, int) else axes[k]) is not None
        out += [tuple(np.shape(leaf))[1 if batched else 0:] for leaf in pytree.leaves(args[k])]
    return out


@pytest.mark.parametrize("problem", catalog(), ids=lambda p: p.name)
def test_exact_trace_and_diagonal_match_the_dense_hessian(backend, problem):
    args = frameworks.convert(problem.inputs(np.random.default_rng(3)), backend.name, "float64")
    f = problem.build(frameworks.ops(backend.name))
    dense = backend.hessian(f, problem.argnums, strategy="loop")(*args)
    traces, diagonals = dense_trace_and_diagonal(dense, leaf_shapes(problem, args))
    for name in ("laplacian", "hessian_trace"):
        got = getattr(backend, name)(f, problem.argnums, impl="composed")(*args)
        for g, t in zip(pytree.leaves(frameworks.to_numpy(got)), traces):
            np.testing.assert_allclose(g, t, **F64, err_msg=f"{name} {problem.name}")
    got = backend.hessian_diagonal(f, problem.argnums, impl="composed")(*args)
    expected = [leaf for per_out in diagonals for leaf in per_out]
    for g, d in zip(pytree.leaves(frameworks.to_numpy(got)), expected):
        np.testing.assert_allclose(g, d, **F64, err_msg=f"hessian_diagonal {problem.name}")
    builtin = backend.laplacian(f, problem.argnums, impl="builtin")(*args)
    frameworks.assert_trees_close(builtin, backend.laplacian(f, problem.argnums, impl="composed")(*args), **F64)


@pytest.mark.parametrize("problem", batched_catalog(), ids=lambda p: p.name)
def test_batched_forms_match_the_batched_hessian(backend, problem):
    args = frameworks.convert(problem.inputs(np.random.default_rng(4)), backend.name, "float64")
    f = problem.build(frameworks.ops(backend.name))
    dense = backend.batched_hessian(f, problem.argnums, problem.in_axes, strategy="loop")(*args)
    traces, diagonals = dense_trace_and_diagonal(dense, leaf_shapes(problem, args))
    got = backend.batched_laplacian(f, problem.argnums, problem.in_axes, impl="composed")(*args)
    for g, t in zip(pytree.leaves(frameworks.to_numpy(got)), traces):
        np.testing.assert_allclose(g, t, **F64)
    got = backend.batched_hessian_diagonal(f, problem.argnums, problem.in_axes, impl="composed")(*args)
    for g, d in zip(pytree.leaves(frameworks.to_numpy(got)), [x for per in diagonals for x in per]):
        np.testing.assert_allclose(g, d, **F64)
    chunked = backend.batched_hessian_trace(f, problem.argnums, problem.in_axes, basis_chunk_size=2)(*args)
    frameworks.assert_trees_close(chunked, got_trace := backend.batched_hessian_trace(
        f, problem.argnums, problem.in_axes, impl="composed")(*args), **F64)
    auto = backend.batched_hessian_trace(f, problem.argnums, problem.in_axes, basis_chunk_size="auto")(*args)
    frameworks.assert_trees_close(auto, got_trace, **F64)


@pytest.mark.skipif(len(frameworks.selected()) < 2, reason="parity needs both backends")
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("problem", catalog() + batched_catalog(), ids=lambda p: p.name)
def test_torch_and_jax_agree(problem, dtype):
    inputs = problem.inputs(np.random.default_rng(5))
    got = {}
    for name in ("torch", "jax"):
        ns, args = cg.backend(name), frameworks.convert(inputs, name, dtype)
        f = problem.build(frameworks.ops(name))
        if problem.in_axes is None:
            pair = (ns.laplacian(f, problem.argnums, impl="composed"), ns.hessian_diagonal(f, problem.argnums, impl="composed"))
        else:
            pair = (ns.batched_laplacian(f, problem.argnums, problem.in_axes, impl="composed"),
                    ns.batched_hessian_diagonal(f, problem.argnums, problem.in_axes, impl="composed"))
        # float64 eager on both; float32 with jax compiled, the route its users time
        got[name] = tuple((t if dtype == "float64" else frameworks.quick(ns, t))(*args) for t in pair)
    frameworks.assert_trees_close(got["torch"], got["jax"], **TOL[dtype]["parity"])


def outside_the_benchmark(name: str) -> dict:
    """Operations beyond the catalog's tanh MLPs, each written per framework."""
    if name == "torch":
        import torch
        import torch.nn.functional as F

        return {
            "softplus": lambda x: F.softplus(x @ x.flip(0)).sum() + F.softplus(x).sum(),
            "exp_sin": lambda x: (torch.exp(torch.sin(x)) * x).sum(),
            "layer_norm": lambda x: (F.layer_norm(x, x.shape) ** 3).sum(),
            "softmax": lambda x: (torch.softmax(x, 0) * torch.arange(x.shape[0], dtype=x.dtype)).sum(),
            "vector_output": lambda x: torch.stack([torch.sin(x).prod(), (x ** 3).sum(), torch.tanh(x).sum()]),
        }
    import jax
    import jax.numpy as jnp

    def layer_norm(x):
        mu = x.mean()
        return (x - mu) / jnp.sqrt(((x - mu) ** 2).mean() + 1e-5)

    return {
        "softplus": lambda x: jax.nn.softplus(x @ x[::-1]).sum() + jax.nn.softplus(x).sum(),
        "exp_sin": lambda x: (jnp.exp(jnp.sin(x)) * x).sum(),
        "layer_norm": lambda x: (layer_norm(x) ** 3).sum(),
        "softmax": lambda x: (jax.nn.softmax(x) * jnp.arange(x.shape[0], dtype=x.dtype)).sum(),
        "vector_output": lambda x: jnp.stack([jnp.sin(x).prod(), (x ** 3).sum(), jnp.tanh(x).sum()]),
    }


@pytest.mark.parametrize("case", ["softplus", "exp_sin", "layer_norm", "softmax", "vector_output"])
def test_operations_outside_the_benchmark(backend, case):
    f = outside_the_benchmark(backend.name)[case]
    x = frameworks.convert(np.random.default_rng(1).standard_normal(6), backend.name, "float64")
    dense = frameworks.to_numpy(backend.hessian(f, strategy="loop")(x))
    np.testing.assert_allclose(frameworks.to_numpy(backend.laplacian(f, impl="composed")(x)),
                               np.trace(dense, axis1=-2, axis2=-1), **F64)
    np.testing.assert_allclose(frameworks.to_numpy(backend.hessian_diagonal(f, impl="composed")(x)),
                               np.diagonal(dense, axis1=-2, axis2=-1), **F64)


def quadratic(backend, n: int = 12, seed: int = 0):
    """``0.5 x' A x`` with a known Hessian ``A`` (symmetric, decaying spectrum)."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = (q * (2.0 ** -np.arange(n))) @ q.T
    A = frameworks.convert(a, backend.name, "float64")
    x = frameworks.convert(rng.standard_normal(n), backend.name, "float64")
    return (lambda v: 0.5 * (v * (A @ v)).sum()), x, a


def key_for(backend, seed: int):
    if backend.name == "jax":
        import jax

        return jax.random.key(seed)
    import torch

    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("estimator", ["hutchinson", "hutch++"])
def test_trace_estimators_are_unbiased(backend, estimator):
    f, x, a = quadratic(backend)
    samples, seeds = 6, 300
    estimates = np.array([float(frameworks.to_numpy(backend.hessian_trace(
        f, estimator=estimator, samples=samples, key=key_for(backend, s))(x))) for s in range(seeds)])
    # Hutchinson's variance with +-1 directions: 2 sum_{i != j} a_ij^2 per direction.
    sd = np.sqrt(2 * ((a ** 2).sum() - (np.diag(a) ** 2).sum()) / samples / seeds)
    assert abs(estimates.mean() - np.trace(a)) < 5 * sd + 1e-12, (estimates.mean(), np.trace(a), sd)
    assert estimates.std() > 0  # random, not the exact route in disguise


def test_hutch_pp_is_exact_on_a_low_rank_hessian(backend):
    rng = np.random.default_rng(2)
    u = frameworks.convert(rng.standard_normal((10, 2)), backend.name, "float64")
    f = lambda v: ((u.T @ v) ** 2).sum()  # noqa: E731  (Hessian 2 u u', rank 2)
    x = frameworks.convert(rng.standard_normal(10), backend.name, "float64")
    got = backend.hessian_trace(f, estimator="hutch++", samples=9, key=0)(x)
    np.testing.assert_allclose(frameworks.to_numpy(got), 2 * (frameworks.to_numpy(u) ** 2).sum(), rtol=1e-9)


def test_diagonal_estimator_is_unbiased(backend):
    f, x, a = quadratic(backend, n=6)
    got = np.mean([frameworks.to_numpy(backend.hessian_diagonal(
        f, estimator="hutchinson", samples=8, key=s)(x)) for s in range(200)], axis=0)
    off = np.sqrt(((a ** 2).sum(1) - np.diag(a) ** 2) / 8 / 200)
    assert np.all(np.abs(got - np.diag(a)) < 5 * off + 1e-12)


def test_batched_estimators_draw_per_sample(backend):
    f, _, a = quadratic(backend, n=5)
    batch = frameworks.convert(np.random.default_rng(0).standard_normal((40, 5)), backend.name, "float64")
    got = frameworks.to_numpy(backend.batched_hessian_trace(f, estimator="hutchinson", samples=3, key=1)(batch))
    assert got.shape == (40,) and np.unique(np.round(got, 12)).size > 1  # each sample its own directions
    exact = frameworks.to_numpy(backend.batched_hessian_trace(f, estimator="hutch++", samples=15, key=1)(batch))
    np.testing.assert_allclose(exact, np.trace(a), rtol=1e-9)  # n <= samples / 3: the range is everything


def test_has_aux_tuple_argnums_and_pytrees(backend):
    f = lambda w, x: ((w["a"] * x ** 3).sum() + (w["b"] ** 2).sum(), {"norm": (x * x).sum()})  # noqa: E731
    w = {"a": frameworks.convert(np.array([1.0, 2.0]), backend.name, "float64"),
         "b": frameworks.convert(np.array([3.0]), backend.name, "float64")}
    x = frameworks.convert(np.array([0.5, -1.0]), backend.name, "float64")
    lap, aux = backend.laplacian(f, (0, 1), has_aux=True)(w, x)
    # d2/dx2 = 6 a x; d2/da2 = 0; d2/db2 = 2.
    np.testing.assert_allclose(float(frameworks.to_numpy(lap)), 6 * (1.0 * 0.5 + 2.0 * -1.0) + 2.0, rtol=1e-12)
    np.testing.assert_allclose(float(frameworks.to_numpy(aux["norm"])), 1.25)
    diag, _ = backend.hessian_diagonal(f, (0, 1), has_aux=True)(w, x)
    np.testing.assert_allclose(frameworks.to_numpy(diag[1]), [3.0, -12.0])
    np.testing.assert_allclose(frameworks.to_numpy(diag[0]["b"]), [2.0])


def test_jit_and_vmap_of_the_single_point_form(backend):
    f, _, a = quadratic(backend, n=4)
    xs = frameworks.convert(np.random.default_rng(0).standard_normal((3, 4)), backend.name, "float64")
    batched = backend.batched_laplacian(f, impl="composed")(xs)
    np.testing.assert_allclose(frameworks.to_numpy(batched), np.trace(a), rtol=1e-12)
    mapped = backend.vmap(backend.laplacian(f, impl="composed"))(xs)
    np.testing.assert_allclose(frameworks.to_numpy(mapped), np.trace(a), rtol=1e-12)
    compiled = cg.jit(backend.batched_laplacian(lambda v: (v ** 3).sum()))(xs)  # auto: the Taylor route, traced
    np.testing.assert_allclose(frameworks.to_numpy(compiled), 6 * frameworks.to_numpy(xs).sum(1), rtol=1e-12)


def test_gradient_through_the_laplacian_torch():
    """A PINN's loss holds Laplacians: autograd must flow through the Taylor route."""
    torch = pytest.importorskip("torch")
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 2, generator=g, dtype=torch.float64, requires_grad=True)
    x = torch.randn(16, 2, generator=g, dtype=torch.float64)
    u = lambda w, x: torch.tanh(w @ x).sum()  # noqa: E731
    loss = cg.torch.batched_laplacian(u, 1, (None, 0), impl="composed")(w, x).pow(2).sum()
    (got,) = torch.autograd.grad(loss, w)
    ref_loss = cg.torch.batched_laplacian(u, 1, (None, 0), impl="builtin")(w, x).pow(2).sum()
    (expected,) = torch.autograd.grad(ref_loss, w)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), **F64)


def test_in_place_writes_take_the_nested_route_torch():
    torch = pytest.importorskip("torch")

    def f(x):
        y = x.clone()
        y.add_(1.0)  # in place: not recorded, nested differentiation instead
        return (y ** 3).sum()

    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    assert float(cg.torch.laplacian(f, impl="composed")(x)) == pytest.approx(6.0 * (2.0 + 3.0 + 4.0))


def test_hessian_operator(backend):
    f, x, a = quadratic(backend, n=7)
    H = backend.hessian_operator(f, x)
    assert H.shape == (7, 7)
    np.testing.assert_allclose(frameworks.to_numpy(H.dense()), a, **F64)
    v = np.arange(7.0)
    np.testing.assert_allclose(frameworks.to_numpy(H @ frameworks.convert(v, backend.name, "float64")), a @ v, **F64)
    m = np.random.default_rng(0).standard_normal((7, 3))
    np.testing.assert_allclose(frameworks.to_numpy(H @ frameworks.convert(m, backend.name, "float64")), a @ m, **F64)
    np.testing.assert_allclose(float(frameworks.to_numpy(H.trace())), np.trace(a), **F64)
    np.testing.assert_allclose(frameworks.to_numpy(H.diagonal()), np.diag(a), **F64)
    top = np.sort(np.linalg.eigvalsh(a))[::-1][:3]
    np.testing.assert_allclose(frameworks.to_numpy(H.eigenvalues(k=3)), top, rtol=1e-8, atol=1e-12)
    with pytest.raises(cg.StructureError):
        H @ frameworks.convert(np.ones(3), backend.name, "float64")


def test_lanczos_reports_its_progress_when_asked(backend, capsys):
    f, x, _ = quadratic(backend, n=7)
    H = backend.hessian_operator(f, x)
    H.eigenvalues(k=2, progress=True)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and lines[-1] == "hessian_operator.eigenvalues: 7/7 products"
    H.eigenvalues(k=2)
    assert capsys.readouterr().err == ""


def test_hessian_operator_products_follow_the_point_when_built_under_jit():
    """jax compiles the operator's products once (NOTE [operator products]); an operator
    built inside the user's jax.jit, at a traced point, gives that point's products."""
    pytest.importorskip("jax")
    import jax
    import jax.numpy as jnp

    if "jax" not in frameworks.selected():
        pytest.skip("jax not selected")
    f = lambda x: (jnp.sin(x) * x).sum()  # noqa: E731
    v = jnp.arange(4.0)

    @jax.jit
    def product_at(x):
        return cg.jax.hessian_operator(f, x) @ v

    for x in (jnp.linspace(0.0, 1.0, 4), jnp.linspace(-2.0, 1.0, 4)):
        expected = jax.hessian(f)(x) @ v
        np.testing.assert_allclose(product_at(x), expected, **F64)
        np.testing.assert_allclose(cg.jax.hessian_operator(f, x) @ v, expected, **F64)


def test_hessian_operator_to_scipy(backend):
    pytest.importorskip("scipy")
    from scipy.sparse.linalg import eigsh

    f, x, a = quadratic(backend, n=8)
    op = backend.hessian_operator(f, x).to_scipy()
    np.testing.assert_allclose(op @ np.ones(8), a @ np.ones(8), **F64)
    top = eigsh(op, k=1, which="LA", return_eigenvectors=False)
    np.testing.assert_allclose(top, np.linalg.eigvalsh(a)[-1:], rtol=1e-8)


@pytest.mark.parametrize(("options", "error"), [
    (dict(estimator="hutchinson"), cg.OptionTypeError),
    (dict(estimator="exact", key=0), cg.OptionError),
    (dict(estimator="sketch"), cg.OptionError),
    (dict(estimator="hutchinson", samples=0, key=0), cg.OptionError),
    (dict(estimator="hutchinson", key=0, impl="builtin"), cg.UnsupportedOptionError),
])
def test_option_errors_are_the_same_on_every_backend(options, error):
    messages = set()
    for name in frameworks.selected():
        with pytest.raises(error) as info:
            cg.backend(name).hessian_trace(lambda x: (x ** 2).sum(), **options)
        messages.add(str(info.value))
    assert len(messages) == 1


def test_hutch_pp_needs_a_scalar_output(backend):
    x = frameworks.convert(np.ones(3), backend.name, "float64")
    with pytest.raises(cg.NonScalarOutputError, match="hutch\\+\\+"):
        backend.hessian_trace(lambda v: v ** 3, estimator="hutch++", key=0)(x)
    with pytest.raises(cg.NonScalarOutputError):
        backend.hessian_operator(lambda v: v ** 3, x)


@pytest.mark.parametrize("transform", ["laplacian", "hessian_trace", "hessian_diagonal"])
def test_vmap_of_the_single_point_form_takes_the_batched_route(backend, transform, caplog):
    """NOTE [vmap of curvature]: on torch, crossgrad's vmap of a single-point curvature
    transform is its batched form (the Taylor route, not nested products under vmap); on
    every backend the numbers are vmap's."""
    import logging

    ops = frameworks.ops(backend.name)
    w = ops.asarray(np.random.default_rng(0).standard_normal((6, 3)), "float64")
    f = lambda x, w: ops.sum(ops.tanh(w @ x))  # noqa: E731
    xs = ops.asarray(np.random.default_rng(1).standard_normal((4, 3)), "float64")
    single = getattr(backend, transform)(f)
    with caplog.at_level(logging.INFO, logger="crossgrad"):
        got = backend.vmap(single, in_axes=(0, None))(xs, w)
    expected = [frameworks.to_numpy(single(xs[k], w)) for k in range(4)]
    np.testing.assert_allclose(frameworks.to_numpy(got), np.stack(expected), **F64)
    if backend.name == "torch":
        assert not [r for r in caplog.records if "called under a torch.func transform" in r.getMessage()]


PRODUCT_FORMS = {  # one layer's product of an 8-vector x, written as users write it: (W's shape, product)
    "W @ x": ((6, 8), lambda w, x, xp: w @ x),
    "x @ W.T": ((6, 8), lambda w, x, xp: x @ w.T),
    "einsum": ((6, 8), lambda w, x, xp: xp.einsum("oi,i->o", w, x)),
    "W @ X (a matrix input)": ((6, 4), lambda w, x, xp: (w @ x.reshape(4, 2)).reshape(-1)),
    "batched W @ x": ((2, 3, 4), lambda w, x, xp: (w @ x.reshape(2, 4, 1)).reshape(-1)),
}


@pytest.mark.parametrize("form", list(PRODUCT_FORMS))
def test_every_form_of_a_product_gives_the_laplacian_of_the_nested_hessian(backend, form, rng):
    # NOTE [rows-first products]: the jax rule for W @ x, and where it does not apply.
    if backend.name == "torch":
        import torch as xp
    else:
        import jax.numpy as xp
    shape, product = PRODUCT_FORMS[form]
    w = frameworks.convert(rng.standard_normal(shape), backend.name, "float64")
    v = frameworks.convert(rng.standard_normal(12 if len(shape) == 2 and shape[1] == 4 else 6), backend.name,
                           "float64")

    def f(x):
        return (v * xp.tanh(product(w, x, xp))).sum()

    xs = frameworks.convert(rng.standard_normal((3, 8)), backend.name, "float64")
    nested = frameworks.to_numpy(backend.batched_laplacian(f, impl="builtin")(xs))
    got = frameworks.to_numpy(frameworks.quick(backend, backend.batched_laplacian(f))(xs))
    np.testing.assert_allclose(got, nested, **F64)
    one = frameworks.quick(backend, backend.laplacian(f))
    np.testing.assert_allclose(frameworks.to_numpy(one(xs[0])), nested[0], **F64)
