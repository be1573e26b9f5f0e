"""Inputs without elements, empty batches and 0-d inputs, on every implementation: the
cases where the frameworks' built-ins fail (torch.func.jacfwd and the built-in Hessians
on inputs without elements, torch.func.vmap on empty batches), pinned down beside the fuzz suite."""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

from crossgrad.testing import frameworks

IMPLS = ["builtin", "composed", "auto"]


def _f(o):
    def f(x):
        return o.tanh(x) * (o.sum(o.sin(x)) + 1.0)

    return f


def _scalar(o):
    def g(x):
        return o.sum(o.sin(x) * x) + 1.0

    return g


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("shape", [(0,), (2, 0), ()])
def test_jacobians_and_hessians_of_odd_shapes(backend, impl, shape):
    o = frameworks.ops(backend.name)
    x = frameworks.convert(np.linspace(-0.5, 0.5, int(np.prod(shape))).reshape(shape), backend.name, "float64")
    jacobians = [backend.jacrev(_f(o), impl=impl)(x), backend.jacfwd(_f(o), impl=impl)(x),
                 backend.jacobian(_f(o), mode="loop")(x)]
    for jac in jacobians:
        assert tuple(jac.shape) == shape + shape
    for strategy in ("fwd-rev", "rev-rev", "rev-fwd", "fwd-fwd"):
        hess = backend.hessian(_scalar(o), strategy=strategy, impl=impl)(x)
        assert tuple(hess.shape) == shape + shape
        frameworks.assert_trees_close(hess, backend.hessian(_scalar(o), strategy="loop")(x), **TOL["float64"]["same"])
    frameworks.assert_trees_close(jacobians[0], jacobians[2], **TOL["float64"]["same"])
    frameworks.assert_trees_close(jacobians[1], jacobians[2], **TOL["float64"]["same"])


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("transform", ["vmap", "batched_jacobian", "batched_hessian"])
def test_empty_batches(backend, impl, transform):
    o = frameworks.ops(backend.name)
    x = frameworks.convert(np.zeros((0, 3)), backend.name, "float64")
    fn = _scalar(o) if transform == "batched_hessian" else _f(o)
    out = getattr(backend, transform)(fn, impl=impl)(x)
    expected = {"vmap": (0, 3), "batched_jacobian": (0, 3, 3), "batched_hessian": (0, 3, 3)}[transform]
    assert tuple(out.shape) == expected
    moved = backend.vmap(_f(o), out_axes=1, impl=impl)(x)
    assert tuple(moved.shape) == (3, 0)
