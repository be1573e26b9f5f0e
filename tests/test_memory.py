"""chunk_size="auto": chunks sized from a memory budget, and out-of-memory chunks retried smaller."""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks, problems
from crossgrad.transforms import chunking

DTYPE = "float64"


@pytest.fixture
def chunk_sizes(monkeypatch):
    """Every chunk size ``chunk_size="auto"`` picks, in order."""
    picked: list[int] = []
    real = chunking._rows_within

    def spy(budget: int, row_bytes: int, n: int) -> int:
        picked.append(real(budget, row_bytes, n))
        return picked[-1]

    monkeypatch.setattr(chunking, "_rows_within", spy)
    return picked


def _problem(backend):
    prob = problems.tanh_linear(n_in=31, n_out=33, batch=8)
    f = prob.build(frameworks.ops(backend.name))
    args = frameworks.convert(prob.inputs(np.random.default_rng(0)), backend.name, DTYPE)
    return prob, f, args


@pytest.mark.parametrize("transform", ["jacrev", "jacfwd", "hessian", "batched_jacobian", "batched_hessian"])
def test_small_budget_chunks_and_agrees(backend, chunk_sizes, transform):
    _, f, args = _problem(backend)
    W, b, x = args
    batched = transform.startswith("batched")
    xs = x if batched else x[0]
    in_axes = {"in_axes": (None, None, 0)} if batched else {}
    make = getattr(backend, transform)
    expected = make(f, argnums=2, **in_axes)(W, b, xs)
    with cg.memory_budget(20_000):
        chunking = {"batch_chunk_size" if batched else "chunk_size": "auto"}
        got = make(f, argnums=2, **chunking, **in_axes)(W, b, xs)
    frameworks.assert_trees_close(got, expected, **TOL[DTYPE]["same"], what=transform)
    rows = 8 if batched else (31 if transform != "jacrev" else 33)
    assert chunk_sizes and all(1 <= c < rows for c in chunk_sizes), chunk_sizes


def test_large_budget_takes_everything_at_once(backend, chunk_sizes):
    _, f, (W, b, x) = _problem(backend)
    with cg.memory_budget(1 << 34):
        backend.batched_jacobian(f, argnums=2, in_axes=(None, None, 0), batch_chunk_size="auto")(W, b, x)
    assert chunk_sizes == [8]


def test_default_budget_comes_from_free_memory(backend, chunk_sizes):
    _, f, (W, b, x) = _problem(backend)
    got = backend.batched_hessian(f, argnums=2, in_axes=(None, None, 0), batch_chunk_size="auto")(W, b, x)
    assert chunk_sizes == [8]  # tiny next to the machine's free memory
    expected = backend.batched_hessian(f, argnums=2, in_axes=(None, None, 0))(W, b, x)
    frameworks.assert_trees_close(got, expected, **TOL[DTYPE]["same"])


def test_vmap_auto_chunks(backend, chunk_sizes):
    _, f, (W, b, x) = _problem(backend)
    with cg.memory_budget(2_000):
        got = backend.vmap(f, in_axes=(None, None, 0), chunk_size="auto")(W, b, x)
    frameworks.assert_trees_close(got, backend.vmap(f, in_axes=(None, None, 0))(W, b, x), **TOL[DTYPE]["same"])
    assert chunk_sizes and max(chunk_sizes) < 8


def _out_of_memory(name: str) -> Exception:
    """The exception each framework raises when an allocation fails."""
    if name == "torch":
        import torch

        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    import jax

    return jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 2147483648 bytes.")


def test_out_of_memory_chunks_are_retried_smaller(backend, monkeypatch):
    """An allocator that fails above 3 rows at once: the auto chunks halve until they fit."""
    _, f, (W, b, x) = _problem(backend)
    expected = backend.jacrev(f, argnums=2)(W, b, x[0])
    primitives = backend.backend.primitives
    real_vmap = primitives.vmap
    seen: list[int] = []

    def limited_vmap(fn, in_axes, out_axes):
        batched = real_vmap(fn, in_axes, out_axes)

        def run(*xs):
            rows = backend.backend.arrays.shape(xs[0])[0]
            seen.append(rows)
            if rows > 3:
                raise _out_of_memory(backend.name)
            return batched(*xs)

        return run

    monkeypatch.setattr(primitives, "vmap", limited_vmap)
    got = backend.jacrev(f, argnums=2, chunk_size="auto")(W, b, x[0])
    frameworks.assert_trees_close(got, expected, **TOL[DTYPE]["same"])
    assert max(seen) > 3 and sum(r for r in seen if r <= 3) == 33, seen


def test_other_errors_are_not_retried(backend, monkeypatch):
    _, f, (W, b, x) = _problem(backend)
    primitives = backend.backend.primitives
    calls: list[int] = []

    def broken_vmap(fn, in_axes, out_axes):
        def run(*xs):
            calls.append(1)
            raise RuntimeError("not a memory problem")

        return run

    monkeypatch.setattr(primitives, "vmap", broken_vmap)
    with pytest.raises(RuntimeError, match="not a memory problem"):
        backend.jacrev(f, argnums=2, chunk_size="auto")(W, b, x[0])
    assert len(calls) == 1


def test_one_row_that_does_not_fit_raises_the_frameworks_error(backend, monkeypatch):
    _, f, (W, b, x) = _problem(backend)
    primitives = backend.backend.primitives
    oom = _out_of_memory(backend.name)

    def no_memory(fn, in_axes, out_axes):
        def run(*xs):
            raise oom

        return run

    monkeypatch.setattr(primitives, "vmap", no_memory)
    with pytest.raises(type(oom)):
        backend.jacrev(f, argnums=2, chunk_size="auto")(W, b, x[0])


def test_auto_chunks_under_jax_jit(chunk_sizes):
    pytest.importorskip("jax")
    import jax

    ns = cg.backend("jax")
    _, f, (W, b, x) = _problem(ns)
    with cg.memory_budget(20_000):
        got = jax.jit(ns.batched_hessian(f, argnums=2, in_axes=(None, None, 0), batch_chunk_size="auto"))(W, b, x)
    assert chunk_sizes and chunk_sizes[0] < 8
    frameworks.assert_trees_close(got, ns.batched_hessian(f, argnums=2, in_axes=(None, None, 0))(W, b, x),
                                  **TOL[DTYPE]["same"])


@pytest.mark.parametrize("bad", [0, -5, 1.5, "64", True])
def test_memory_budget_rejects_non_positive_ints(bad):
    with pytest.raises(cg.OptionError, match="memory_budget: expected a positive number of bytes"):
        with cg.memory_budget(bad):
            pass


def test_budget_is_scoped():
    from crossgrad import memory

    with cg.memory_budget(123):
        with cg.memory_budget(456):
            assert memory._budget.get() == 456
        assert memory._budget.get() == 123
    assert memory._budget.get() is None


def test_builtin_has_no_auto_chunks(backend):
    with pytest.raises(cg.UnsupportedOptionError, match="chunk_size='auto'"):
        backend.jacrev(lambda x: x, chunk_size="auto", impl="builtin")
