"""No leaks: 1,000 calls of each transform keep no arrays or Python objects alive and
do not grow the process's resident memory."""

from __future__ import annotations

import gc
import weakref

import numpy as np
import psutil  # imported here: an import inside the measured loop would count its module's objects
import pytest

import crossgrad as cg
from crossgrad.testing import frameworks

CALLS = 400
# Room for what a first call legitimately creates once (memo entries, compiled
# kernels, allocator pools), below what one object retained per call would leave.
MAX_NEW_OBJECTS = 300
MAX_RSS_GROWTH = 48 * 2**20


def resident_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def python_objects() -> int:
    """Objects the garbage collector tracks, less dead weak references: jaxlib keeps
    those of nested transforms (jax.hessian, jacfwd of jacrev) in an LRU cache that
    stops at 4,096 entries (20,000 calls of jax.hessian: 4,028 and 13.7 MiB, flat
    after the first 5,000), a bounded cache of jax's rather than a leak."""
    return sum(1 for o in gc.get_objects() if not (issubclass(type(o), weakref.ref) and o() is None))


def live_arrays(name: str) -> int:
    if name == "jax":
        import jax

        return len(jax.live_arrays())
    import torch

    return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))


def workloads(name: str):
    """One small call per transform, each transformed function made once (the hot loop)."""
    ns = cg.backend(name)
    o = frameworks.ops(name)
    x = frameworks.convert(np.linspace(-1.0, 1.0, 64), name, "float32")
    xs = frameworks.convert(np.linspace(-1.0, 1.0, 3 * 64).reshape(3, 64), name, "float32")

    def scalar(x):
        return o.sum(o.sin(x) * x)

    def vector(x):
        return o.tanh(x) * o.sum(x)

    made = {
        "grad": ns.grad(scalar), "value_and_grad": ns.value_and_grad(scalar), "vmap": ns.vmap(vector),
        "jacrev": ns.jacrev(vector), "jacfwd": ns.jacfwd(vector), "jacobian": ns.jacobian(vector),
        "hessian": ns.hessian(scalar), "batched_jacobian": ns.batched_jacobian(vector),
        "batched_hessian": ns.batched_hessian(scalar),
    }
    calls = {k: (lambda fn=fn, k=k: fn(xs if k in ("vmap", "batched_jacobian", "batched_hessian") else x))
             for k, fn in made.items()}
    calls["vjp"] = lambda: ns.vjp(vector, x)[1](x)
    calls["jvp"] = lambda: ns.jvp(vector, (x,), (x,))
    calls["hvp"] = lambda: ns.hvp(scalar, (x,), (x,))
    calls["linearize"] = lambda: ns.linearize(vector, x)[1](x)
    return calls


TRANSFORMS = ["grad", "value_and_grad", "vjp", "jvp", "linearize", "vmap", "jacrev", "jacfwd", "jacobian", "hessian",
              "hvp", "batched_jacobian", "batched_hessian"]


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_repeated_calls_keep_nothing(backend, transform):
    calls = CALLS
    call = workloads(backend.name)[transform]
    for _ in range(20):
        call()
    gc.collect()
    objects, arrays, rss = python_objects(), live_arrays(backend.name), resident_bytes()
    for _ in range(calls):
        call()
    gc.collect()
    new_objects = python_objects() - objects
    new_arrays = live_arrays(backend.name) - arrays
    growth = resident_bytes() - rss
    assert new_arrays <= 0, f"{transform}: {new_arrays} more live arrays after {calls} calls"
    assert new_objects < MAX_NEW_OBJECTS, f"{transform}: {new_objects} more Python objects after {calls} calls"
    assert growth < MAX_RSS_GROWTH, f"{transform}: resident memory grew {growth / 2**20:.1f} MiB over {calls} calls"
