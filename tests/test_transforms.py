"""Every transform x implementation x backend on the problem catalog, against one oracle:
the closed form where the problem has one, crossgrad's ``loop`` reference otherwise
(itself checked against float64 finite differences in test_references.py)."""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

from crossgrad import pytree
from crossgrad.testing import frameworks
from crossgrad.testing.frameworks import assert_trees_close, snapshot
from crossgrad.testing.problems import batched_catalog, catalog

IMPLS = ("builtin", "composed")
PROBLEMS = catalog()
SCALAR = [p for p in PROBLEMS if p.scalar]
BATCHED = batched_catalog()


def setup(ns, problem, dtype="float64", seed=0):
    f = problem.build(frameworks.ops(ns.name))
    args = frameworks.convert(problem.inputs(np.random.default_rng(seed)), ns.name, dtype)
    return f, args


# The loop references, per (backend, problem, transform): every parametrization of a
# problem compares with the same one (its inputs are drawn from one seed), made once.
_ORACLES: dict[tuple[str, str, str], object] = {}


def _oracle(ns, problem, kind, make):
    key = (ns.name, problem.name, kind)
    if key not in _ORACLES:
        _ORACLES[key] = frameworks.to_numpy(make())
    return _ORACLES[key]


def expected_jacobian(ns, problem, f, args):
    if problem.jacobian is not None:
        return problem.jacobian(*frameworks.to_numpy(args))
    return _oracle(ns, problem, "jacobian", lambda: ns.jacobian(f, problem.argnums, mode="loop")(*args))


def expected_hessian(ns, problem, f, args):
    if problem.hessian is not None:
        return problem.hessian(*frameworks.to_numpy(args))
    return _oracle(ns, problem, "hessian", lambda: ns.hessian(f, problem.argnums, strategy="loop")(*args))


def checked_call(fn, args, backend=None, eager=True):
    """Call and check that no input changed (bytes and torch version counters).  With
    ``eager=False`` the call runs compiled on jax (``frameworks.quick``: an eager jax call
    compiles each operation alone, seconds per problem): the tests keep the default
    (``"auto"``) of each option eager and compile the others, so both paths are held to
    the oracle on every problem."""
    if backend is not None and not eager:
        fn = frameworks.quick(backend, fn)
    before = snapshot(args)
    out = fn(*args)
    assert snapshot(args) == before, "the transform modified its inputs"
    return out


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("how", ["jacrev", "jacfwd", "rev", "fwd", "loop", "auto"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_jacobian(backend, problem, how, impl):
    f, args = setup(backend, problem)
    if how in ("jacrev", "jacfwd"):
        fn = getattr(backend, how)(f, problem.argnums, impl=impl)
    else:
        fn = backend.jacobian(f, problem.argnums, mode=how, impl=impl)
    got = checked_call(fn, args, backend, eager=how == "auto")
    assert_trees_close(got, expected_jacobian(backend, problem, f, args), **TOL["float64"]["same"], what=problem.name)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("strategy", ["fwd-rev", "rev-rev", "rev-fwd", "fwd-fwd", "loop", "auto"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_hessian(backend, problem, strategy, impl):
    f, args = setup(backend, problem)
    got = checked_call(backend.hessian(f, problem.argnums, strategy=strategy, impl=impl), args, backend,
                       eager=strategy == "auto")
    assert_trees_close(got, expected_hessian(backend, problem, f, args), **TOL["float64"]["same"], what=problem.name)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("impl", ["auto", "composed"])
@pytest.mark.parametrize("problem", [p for p in PROBLEMS if p.hessian is not None], ids=lambda p: p.name)
def test_closed_forms_per_dtype(backend, problem, impl, dtype):
    f, args = setup(backend, problem, dtype)
    tol = TOL[dtype]["same"]
    jac = backend.jacobian(f, problem.argnums, impl=impl)(*args)
    hess = backend.hessian(f, problem.argnums, impl=impl)(*args)
    assert frameworks.to_numpy(jac).dtype == np.float64  # converted for comparison
    assert_trees_close(jac, problem.jacobian(*frameworks.to_numpy(args)), **tol, what="jacobian")
    assert_trees_close(hess, problem.hessian(*frameworks.to_numpy(args)), **tol, what="hessian")
    assert backend.backend.arrays.dtype_name(pytree.leaves(hess)[0]) == dtype


@pytest.mark.parametrize("chunk_size", [1, 2, 7])
@pytest.mark.parametrize("transform", ["jacrev", "jacfwd", "hessian"])
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_chunked_equals_unchunked(backend, problem, transform, chunk_size):
    f, args = setup(backend, problem)
    whole = _oracle(backend, problem, f"{transform} unchunked",
                    lambda: frameworks.quick(backend, getattr(backend, transform)(f, problem.argnums))(*args))
    chunked = frameworks.quick(backend, getattr(backend, transform)(f, problem.argnums, chunk_size=chunk_size))(*args)
    assert_trees_close(chunked, whole, **TOL["float64"]["same"], what=f"{transform} chunk_size={chunk_size}")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("problem", SCALAR, ids=lambda p: p.name)
def test_grad_and_value_and_grad(backend, problem, impl):
    f, args = setup(backend, problem)
    expected = expected_jacobian(backend, problem, f, args)
    g = checked_call(backend.grad(f, problem.argnums, impl=impl), args)
    value, g2 = checked_call(backend.value_and_grad(f, problem.argnums, impl=impl), args)
    assert_trees_close(g, expected, **TOL["float64"]["same"], what="grad")
    assert_trees_close(g2, expected, **TOL["float64"]["same"], what="value_and_grad")
    assert_trees_close(value, f(*args), **TOL["float64"]["same"], what="value")




def flat_matrix(jac, out, inputs):
    """The Jacobian pytree as one (M, N) NumPy matrix, rows = output leaves, cols = input leaves."""
    out_leaves = pytree.leaves(frameworks.to_numpy(out))
    in_leaves = pytree.leaves(frameworks.to_numpy(inputs))
    blocks = pytree.leaves(frameworks.to_numpy(jac))
    rows = []
    k = 0
    for o in out_leaves:
        row = []
        for i in in_leaves:
            row.append(blocks[k].reshape(o.size, i.size))
            k += 1
        rows.append(np.concatenate(row, axis=1))
    return np.concatenate(rows, axis=0)


def _flat(tree):
    leaves = pytree.leaves(frameworks.to_numpy(tree))
    return np.concatenate([x.reshape(-1) for x in leaves]) if leaves else np.zeros(0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("problem", PROBLEMS, ids=lambda p: p.name)
def test_vjp_jvp_linearize(backend, problem, impl):
    f, args = setup(backend, problem)
    n = len(args)
    jac = backend.jacobian(f, tuple(range(n)), mode="loop")(*args)
    out = f(*args)
    J = flat_matrix(jac, out, args)
    rng = np.random.default_rng(1)
    tangents = frameworks.convert(pytree.map_leaves(lambda x: rng.standard_normal(np.shape(x)), frameworks.to_numpy(args)), backend.name, "float64")
    cotangent = frameworks.convert(pytree.map_leaves(lambda x: rng.standard_normal(np.shape(x)), frameworks.to_numpy(out)), backend.name, "float64")
    tol = TOL["float64"]["same"]

    value, vjp_fn = backend.vjp(f, *args, impl=impl)
    assert_trees_close(value, out, **tol, what="vjp value")
    grads = vjp_fn(cotangent)
    assert isinstance(grads, tuple) and len(grads) == n
    np.testing.assert_allclose(_flat(grads), _flat(cotangent) @ J, **tol)

    value, tout = backend.jvp(f, args, tangents, impl=impl)
    assert_trees_close(value, out, **tol, what="jvp value")
    np.testing.assert_allclose(_flat(tout), J @ _flat(tangents), **tol)

    value, jvp_fn = backend.linearize(f, *args, impl=impl)
    assert_trees_close(value, out, **tol, what="linearize value")
    np.testing.assert_allclose(_flat(jvp_fn(*tangents)), J @ _flat(tangents), **tol)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("problem", SCALAR, ids=lambda p: p.name)
def test_hvp(backend, problem, impl):
    f, args = setup(backend, problem)
    rng = np.random.default_rng(2)
    nums = problem.argnums if isinstance(problem.argnums, tuple) else (problem.argnums,)
    v = frameworks.convert(tuple(pytree.map_leaves(lambda x: rng.standard_normal(np.shape(x)), frameworks.to_numpy(args[k])) for k in nums), backend.name, "float64")
    got = checked_call(lambda *a: backend.hvp(f, a, v, problem.argnums, impl=impl), args)
    hess = backend.hessian(f, tuple(nums), strategy="loop")(*args)
    H = flat_matrix(hess, tuple(args[k] for k in nums), tuple(args[k] for k in nums))
    np.testing.assert_allclose(_flat(got), H @ _flat(v), **TOL["float64"]["same"])
    assert pytree.flatten(frameworks.to_numpy(got))[1] == pytree.flatten(frameworks.to_numpy(args[nums[0]]))[1]


def per_sample(problem, args, fn):
    """``fn`` applied sample by sample (a Python loop over the batch), stacked."""
    axes = problem.in_axes if isinstance(problem.in_axes, tuple) else (problem.in_axes,) * len(args)
    size = next(np.shape(a)[0] for a, ax in zip(frameworks.to_numpy(args), axes) if ax is not None)
    results = []
    for b in range(size):
        sample = [a if ax is None else a[b] for a, ax in zip(args, axes)]
        results.append(frameworks.to_numpy(fn(*sample)))
    leaves = [pytree.leaves(r) for r in results]
    return pytree.unflatten(pytree.flatten(results[0])[1], [np.stack(col) for col in zip(*leaves)])


BATCHED_OPTIONS = [("jacobian", {"mode": m}) for m in ("rev", "fwd", "loop", "auto")] + [
    ("hessian", {"strategy": s}) for s in ("fwd-rev", "rev-rev", "rev-fwd", "fwd-fwd", "loop", "auto")]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("kind", "options"), BATCHED_OPTIONS, ids=[f"{k}-{next(iter(o.values()))}" for k, o in BATCHED_OPTIONS])
@pytest.mark.parametrize("problem", BATCHED, ids=lambda p: p.name)
def test_batched(backend, problem, kind, options, impl):
    """batched_jacobian / batched_hessian against the closed form, or the per-sample loop reference."""
    f, args = setup(backend, problem)
    transform = getattr(backend, "batched_" + kind)
    got = checked_call(transform(f, problem.argnums, problem.in_axes, impl=impl, **options), args, backend,
                       eager="auto" in options.values())
    closed = getattr(problem, kind)
    if closed is not None:
        expected = closed(*frameworks.to_numpy(args))
    else:
        loop = {"mode": "loop"} if kind == "jacobian" else {"strategy": "loop"}
        expected = _oracle(backend, problem, "batched_" + kind,
                           lambda: per_sample(problem, args, getattr(backend, kind)(f, problem.argnums, **loop)))
    assert_trees_close(got, expected, **TOL["float64"]["same"], what=problem.name)


def test_batched_never_forms_cross_sample_blocks(backend):
    """The notebook's critic: per-sample Jacobians of both heads, (B, 1, D) each."""
    from crossgrad.testing.problems import critic_td_err

    problem = critic_td_err(dim=4, batch=3)
    f, args = setup(backend, problem)
    heads = backend.batched_jacobian(f, argnums=1)(*args)
    assert isinstance(heads, tuple) and len(heads) == 2
    assert all(tuple(h.shape) == (3, 1, 4) for h in heads)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("chunk_size", [None, 2])
def test_vmap(backend, impl, chunk_size, rng):
    ops = frameworks.ops(backend.name)
    w, x, y = frameworks.convert((rng.standard_normal(3), rng.standard_normal((4, 3)), rng.standard_normal((3, 4))), backend.name, "float64")

    def f(w, x, y, scale=1.0):
        return {"dot": ops.sum(w * x) * scale, "pair": (x * 2.0, y)}

    kwargs = {} if impl == "builtin" and chunk_size and backend.name == "jax" else {"impl": impl}
    out = backend.vmap(f, in_axes=(None, 0, 1), out_axes={"dot": 0, "pair": (1, 0)}, chunk_size=chunk_size, **kwargs)(w, x, y, scale=3.0)
    wn, xn, yn = frameworks.to_numpy((w, x, y))
    assert list(out) == ["dot", "pair"]
    np.testing.assert_allclose(frameworks.to_numpy(out["dot"]), 3.0 * xn @ wn, rtol=1e-12)
    np.testing.assert_allclose(frameworks.to_numpy(out["pair"][0]), 2.0 * xn.T, rtol=1e-12)
    np.testing.assert_allclose(frameworks.to_numpy(out["pair"][1]), yn.T, rtol=1e-12)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("transform", ["grad", "value_and_grad", "jacrev", "jacfwd", "jacobian", "hessian",
                                       "batched_jacobian", "batched_hessian", "vjp", "jvp"])
def test_has_aux(backend, transform, impl, rng):
    """aux comes back unchanged (batched for the batched transforms), the derivative as without it."""
    problem = catalog()[3]  # rosenbrock: scalar, closed forms
    f, (x,) = setup(backend, problem)
    ops = frameworks.ops(backend.name)

    def with_aux(x):
        return f(x), {"b": ops.sin(x), "a": x * 2.0}

    if transform in ("vjp", "jvp"):
        if transform == "vjp":
            out, _fn, aux = backend.vjp(with_aux, x, has_aux=True, impl=impl)
        else:
            out, _, aux = backend.jvp(with_aux, (x,), (x,), has_aux=True, impl=impl)
        assert_trees_close(out, f(x), **TOL["float64"]["same"])
    else:
        xs = x
        if transform.startswith("batched"):
            xs = ops.asarray(np.stack([frameworks.to_numpy(x)] * 2), "float64")
        result, aux = getattr(backend, transform)(with_aux, has_aux=True, impl=impl)(xs)
        if transform == "value_and_grad":
            (value, aux), grads = result, aux
            result = (value, grads)
        plain = getattr(backend, transform)(f, impl=impl)(xs)
        assert_trees_close(result, plain, **TOL["float64"]["same"])
        if transform.startswith("batched"):
            aux = {k: v[1] for k, v in aux.items()}
    # Each framework's dict order (NOTE [pytree conventions]): jax sorts keys, torch keeps insertion order.
    assert list(aux) == (["a", "b"] if backend.name == "jax" else ["b", "a"])
    assert_trees_close(aux, {"a": x * 2.0, "b": ops.sin(x)}, **TOL["float64"]["same"])
