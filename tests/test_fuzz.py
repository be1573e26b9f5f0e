"""Property-based parity: drawn shapes (0-d inputs, size-0 axes), dtypes, pytrees,
argnums and in_axes; torch against jax, each against the ``loop`` reference, chunked
against unchunked.

Profiles (tests/conftest.py): ``ci`` (default, in ``make test``: few examples, a
fixed seed) and ``fuzz`` (``make fuzz``: many examples, random seeds).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from tolerances import TOL

from crossgrad import pytree
from crossgrad.testing import frameworks

BACKENDS = frameworks.selected()
pytestmark = pytest.mark.skipif(len(BACKENDS) < 2, reason="parity needs both backends")

DIM = st.integers(0, 3)
SHAPE = st.lists(DIM, min_size=0, max_size=2).map(tuple)


def trees(leaf: st.SearchStrategy) -> st.SearchStrategy:
    """Leaves, tuples, lists and dicts of them, up to two levels deep."""
    return st.recursive(
        leaf,
        lambda inner: st.one_of(
            st.lists(inner, min_size=1, max_size=2).map(tuple),
            st.lists(inner, min_size=1, max_size=2),
            st.dictionaries(st.sampled_from("abc"), inner, min_size=1, max_size=2),
        ),
        max_leaves=3,
    )


def smooth(o: frameworks.Ops):
    """A smooth function of any pytree arguments with a pytree output: every output
    element depends on every input element (through ``s``), so Jacobians are dense."""

    def f(*args):
        leaves = pytree.leaves(args)
        s = sum(o.sum(o.sin(leaf)) * (0.5 + 0.25 * k) for k, leaf in enumerate(leaves))
        out = {"first": o.tanh(leaves[0]) * s + leaves[0] * leaves[0], "total": s * s + 1.0}
        if len(leaves) > 1:
            out["last"] = (o.sin(leaves[-1]) * s,)
        return out

    return f


@st.composite
def jacobian_cases(draw):
    nargs = draw(st.integers(1, 3))
    shapes = tuple(draw(trees(SHAPE)) for _ in range(nargs))
    nums = draw(st.lists(st.integers(0, nargs - 1), min_size=1, max_size=nargs, unique=True))
    argnums = nums[0] if draw(st.booleans()) and len(nums) == 1 else tuple(nums)
    return dict(shapes=shapes, argnums=argnums, dtype=draw(st.sampled_from(["float64", "float32"])),
                chunk=draw(st.integers(1, 3)), seed=draw(st.integers(0, 2**16)))


def _is_shape(x):
    return isinstance(x, tuple) and all(isinstance(d, int) for d in x)


def _numpy_args(shapes, seed):
    rng = np.random.default_rng(seed)

    def build(tree):
        if _is_shape(tree):
            return rng.uniform(-0.7, 0.7, size=tree)
        if isinstance(tree, dict):
            return {k: build(v) for k, v in tree.items()}
        return type(tree)(build(v) for v in tree)

    return tuple(build(s) for s in shapes)


def _run(backend: str, transform: str, numpy_args, dtype: str, **options):
    import crossgrad as cg

    ns = cg.backend(backend)
    f = smooth(frameworks.ops(backend))
    args = frameworks.convert(numpy_args, backend, dtype)
    return getattr(ns, transform)(f, **options)(*args)


def _check(results: dict, dtype: str, what: str):
    """torch vs jax, and every result against the reference on its own backend."""
    tol = TOL[dtype]
    for backend in BACKENDS:
        ref = results[(backend, "reference")]
        for label, value in results.items():
            if label[0] == backend and label[1] != "reference":
                frameworks.assert_trees_close(value, ref, **tol["same"], what=f"{what} {label} vs loop")
    frameworks.assert_trees_close(results[("torch", "reference")], results[("jax", "reference")], **tol["parity"],
                                  what=f"{what} torch vs jax")


@given(jacobian_cases())
def test_jacobians(case):
    numpy_args = _numpy_args(case["shapes"], case["seed"])
    dtype, argnums, chunk = case["dtype"], case["argnums"], case["chunk"]
    results = {}
    for b in BACKENDS:
        results[(b, "reference")] = _run(b, "jacobian", numpy_args, dtype, argnums=argnums, mode="loop")
        results[(b, "jacrev")] = _run(b, "jacrev", numpy_args, dtype, argnums=argnums)
        results[(b, "jacfwd")] = _run(b, "jacfwd", numpy_args, dtype, argnums=argnums)
        results[(b, "composed rev, chunked")] = _run(b, "jacrev", numpy_args, dtype, argnums=argnums, chunk_size=chunk,
                                                     impl="composed")
        results[(b, "fwd, chunked")] = _run(b, "jacfwd", numpy_args, dtype, argnums=argnums, chunk_size=chunk)
    _check(results, dtype, f"jacobian of {case['shapes']} argnums={argnums}")


@st.composite
def vmap_cases(draw):
    """Per-argument in_axes (None or an axis every leaf of the argument has) and a batch size."""
    nargs = draw(st.integers(1, 3))
    batch = draw(st.integers(0, 3))
    shapes, axes = [], []
    for _ in range(nargs):
        tree = draw(trees(SHAPE))
        lowest = min(len(s) for s in _shapes_in(tree))
        ax = draw(st.one_of(st.none(), st.integers(0, lowest)))
        if ax is not None:
            tree = _map_shapes(tree, lambda s, ax=ax: (*s[:ax], batch, *s[ax:]))
        shapes.append(tree)
        axes.append(ax)
    if all(a is None for a in axes):
        axes[0] = 0
        shapes[0] = _map_shapes(shapes[0], lambda s: (batch, *s))
    return dict(shapes=tuple(shapes), in_axes=tuple(axes), dtype=draw(st.sampled_from(["float64", "float32"])),
                chunk=draw(st.integers(1, 3)), seed=draw(st.integers(0, 2**16)))


def _map_shapes(tree, fn):
    if _is_shape(tree):
        return fn(tree)
    if isinstance(tree, dict):
        return {k: _map_shapes(v, fn) for k, v in tree.items()}
    return type(tree)(_map_shapes(v, fn) for v in tree)


def _shapes_in(tree):
    if _is_shape(tree):
        return [tree]
    return [s for v in (tree.values() if isinstance(tree, dict) else tree) for s in _shapes_in(v)]


@given(vmap_cases())
def test_vmap_and_batched_jacobian(case):
    numpy_args = _numpy_args(case["shapes"], case["seed"])
    dtype, in_axes, chunk = case["dtype"], case["in_axes"], case["chunk"]
    results = {}
    mapped = next(k for k, a in enumerate(in_axes) if a is not None)
    for b in BACKENDS:
        results[(b, "reference")] = _run(b, "vmap", numpy_args, dtype, in_axes=in_axes, impl="composed")
        results[(b, "builtin")] = _run(b, "vmap", numpy_args, dtype, in_axes=in_axes, impl="auto")
        results[(b, "chunked")] = _run(b, "vmap", numpy_args, dtype, in_axes=in_axes, chunk_size=chunk)
    _check(results, dtype, f"vmap of {case['shapes']} in_axes={in_axes}")
    results = {}
    for b in BACKENDS:
        results[(b, "reference")] = _run(b, "batched_jacobian", numpy_args, dtype, argnums=mapped, in_axes=in_axes,
                                         mode="loop")
        results[(b, "auto")] = _run(b, "batched_jacobian", numpy_args, dtype, argnums=mapped, in_axes=in_axes)
        results[(b, "chunked")] = _run(b, "batched_jacobian", numpy_args, dtype, argnums=mapped, in_axes=in_axes,
                                       batch_chunk_size=chunk, basis_chunk_size=chunk)
    _check(results, dtype, f"batched_jacobian of {case['shapes']} in_axes={in_axes}")


@st.composite
def hessian_cases(draw):
    shape = draw(SHAPE)
    return dict(shape=shape, dtype=draw(st.sampled_from(["float64", "float32"])), chunk=draw(st.integers(1, 3)),
                strategy=draw(st.sampled_from(["fwd-rev", "rev-rev", "rev-fwd", "fwd-fwd"])),
                seed=draw(st.integers(0, 2**16)))


@given(hessian_cases())
def test_hessians_of_the_scalar_output(case):
    import crossgrad as cg

    x = np.random.default_rng(case["seed"]).uniform(-0.7, 0.7, size=case["shape"])
    dtype = case["dtype"]
    results = {}
    for b in BACKENDS:
        ns = cg.backend(b)
        o = frameworks.ops(b)
        f = smooth(o)

        def scalar(x, f=f):
            return f(x)["total"]

        xb = frameworks.convert(x, b, dtype)
        results[(b, "reference")] = ns.hessian(scalar, strategy="loop")(xb)
        results[(b, case["strategy"])] = ns.hessian(scalar, strategy=case["strategy"])(xb)
        results[(b, "chunked")] = ns.hessian(scalar, strategy=case["strategy"], chunk_size=case["chunk"])(xb)
        results[(b, "auto")] = ns.hessian(scalar)(xb)
    _check(results, dtype, f"hessian of shape {case['shape']} ({case['strategy']})")


@given(jacobian_cases())
def test_traced_routes(case):
    """jit's traced route (torch: the transform traced into a graph, simplified) against
    eager execution of the same transform, on drawn pytrees and argnums."""
    import crossgrad as cg

    if "torch" not in BACKENDS:
        return
    ns = cg.backend("torch")
    f = smooth(frameworks.ops("torch"))
    args = frameworks.convert(_numpy_args(case["shapes"], case["seed"]), "torch", case["dtype"])
    for transform in (ns.jacobian(f, argnums=case["argnums"]), ns.jacrev(f, argnums=case["argnums"], chunk_size=case["chunk"])):
        expected = transform(*args)
        got = ns.jit(transform, route="trace")(*args)
        frameworks.assert_trees_close(got, expected, **TOL[case["dtype"]]["same"], what=f"traced jacobian of {case['shapes']}")
