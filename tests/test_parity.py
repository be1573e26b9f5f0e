"""torch against jax on the shared catalog, float64 and float32 (``make parity``).

Each case computes one transform with both backends from the same NumPy inputs and
compares them with each other and with the reference (the closed form where the
problem has one, else the float64 ``loop`` reference of the torch backend).  The
largest relative differences are collected and printed as a table at the end of the
run (see conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from tolerances import TOL

import crossgrad as cg
from crossgrad.testing import frameworks
from crossgrad.testing.problems import batched_catalog, catalog

pytestmark = [
    pytest.mark.parity,
    pytest.mark.skipif(len(frameworks.selected()) < 2, reason="parity needs both backends"),
]

SUMMARY: list[dict] = []

TRANSFORMS = {
    "jacobian": lambda ns, p: ns.jacobian(p.build(frameworks.ops(ns.name)), p.argnums),
    "hessian": lambda ns, p: ns.hessian(p.build(frameworks.ops(ns.name)), p.argnums),
    "grad": lambda ns, p: ns.grad(p.build(frameworks.ops(ns.name)), p.argnums),
    "batched_jacobian": lambda ns, p: ns.batched_jacobian(p.build(frameworks.ops(ns.name)), p.argnums, p.in_axes),
    "batched_hessian": lambda ns, p: ns.batched_hessian(p.build(frameworks.ops(ns.name)), p.argnums, p.in_axes),
}
REFERENCE = {
    "jacobian": lambda p: ("jacobian", dict(mode="loop")),
    "hessian": lambda p: ("hessian", dict(strategy="loop")),
    "grad": lambda p: ("jacobian", dict(mode="loop")),
}
CASES = [(t, p) for t in ("jacobian", "hessian") for p in catalog()]
CASES += [("grad", p) for p in catalog() if p.scalar]
CASES += [(t, p) for t in ("batched_jacobian", "batched_hessian") for p in batched_catalog()
          if not (t == "batched_hessian" and p.hessian is None and "two_heads" in p.tags)]


def reference(transform, problem, args64):
    closed = problem.hessian if "hessian" in transform else problem.jacobian
    if closed is not None:
        return closed(*frameworks.to_numpy(args64))
    ns = cg.backend("torch")
    f = problem.build(frameworks.ops("torch"))
    if transform.startswith("batched"):
        kind = transform.removeprefix("batched_")
        loop = dict(mode="loop") if kind == "jacobian" else dict(strategy="loop")
        return getattr(ns, "batched_" + kind)(f, problem.argnums, problem.in_axes, **loop)(*args64)
    name, opts = REFERENCE[transform](problem)
    return getattr(ns, name)(f, problem.argnums, **opts)(*args64)


_REFERENCES: dict[tuple[str, str], object] = {}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("transform", "problem"), CASES, ids=[f"{t}-{p.name}" for t, p in CASES])
def test_torch_and_jax_agree(transform, problem, dtype):
    inputs = problem.inputs(np.random.default_rng(7))
    got = {}
    for name in ("torch", "jax"):
        args = frameworks.convert(inputs, name, dtype)
        fn = TRANSFORMS[transform](cg.backend(name), problem)
        # float64 eager on both; float32 with jax compiled, the route its users time
        got[name] = (fn if dtype == "float64" else frameworks.quick(cg.backend(name), fn))(*args)
    key = (transform, problem.name)
    if key not in _REFERENCES:  # one float64 reference for both dtypes
        _REFERENCES[key] = frameworks.to_numpy(reference(transform, problem, frameworks.convert(inputs, "torch",
                                                                                               "float64")))
    ref = _REFERENCES[key]
    row = {
        "transform": transform, "problem": problem.name, "dtype": dtype,
        "torch vs jax": frameworks.max_rel_diff(got["torch"], got["jax"]),
        "torch vs ref": frameworks.max_rel_diff(got["torch"], ref),
        "jax vs ref": frameworks.max_rel_diff(got["jax"], ref),
    }
    SUMMARY.append(row)
    frameworks.assert_trees_close(got["torch"], got["jax"], **TOL[dtype]["parity"], what="torch vs jax")
    for name in ("torch", "jax"):
        frameworks.assert_trees_close(got[name], ref, **TOL[dtype]["same" if dtype == "float64" else "parity"],
                                      what=f"{name} vs reference")
