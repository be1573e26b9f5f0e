"""How the tests hold arrays of each backend: to and from NumPy, and a tiny op namespace.

The test problems (``problems.py``) are written once against :class:`Ops`, so the same
function runs on torch and on jax.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossgrad import pytree

ALL = ("torch", "jax")


def selected() -> tuple[str, ...]:
    """Backends to test, from CROSSGRAD_BACKENDS (comma-separated); an unknown name is an error."""
    names = tuple(n.strip() for n in os.environ.get("CROSSGRAD_BACKENDS", ",".join(ALL)).split(",") if n.strip())
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise ValueError(f"CROSSGRAD_BACKENDS names unknown backends {unknown}; known: {ALL}")
    return names


@dataclass(frozen=True)
class Ops:
    """The handful of array functions the problems use, for one framework."""

    name: str
    tanh: Any
    exp: Any
    log: Any
    sum: Any  # sum(x) -> scalar, sum(x, axis)
    sin: Any

    def asarray(self, x: Any, dtype: str) -> Any:
        if self.name == "torch":
            import torch

            return torch.tensor(np.asarray(x), dtype=getattr(torch, dtype))
        import jax.numpy as jnp

        return jnp.asarray(np.asarray(x), dtype=dtype)


def ops(name: str) -> Ops:
    if name == "torch":
        import torch

        return Ops("torch", torch.tanh, torch.exp, torch.log, lambda x, axis=None: x.sum() if axis is None else x.sum(axis), torch.sin)
    import jax.numpy as jnp

    return Ops("jax", jnp.tanh, jnp.exp, jnp.log, lambda x, axis=None: jnp.sum(x, axis=axis), jnp.sin)


def quick(backend: Any, fn: Any) -> Any:
    """``fn`` as the tests run a transform many times: compiled on jax (an eager jax call
    compiles each primitive on its own, seconds per problem), eager on torch (compiling
    costs seconds there).  Tests of the eager path call ``fn`` itself."""
    return backend.jit(fn) if backend.name == "jax" else fn


def to_numpy(tree: Any) -> Any:
    """Every array leaf as a float64 NumPy array, complex128 where it is complex
    (structure kept; an imaginary part is never dropped)."""

    def convert(x: Any) -> Any:
        if type(x).__module__.startswith("torch"):
            import torch

            x = x.detach().cpu()
            return (x.to(torch.complex128) if x.is_complex() else x.double()).numpy()
        a = np.asarray(x)
        return a.astype(np.complex128 if np.iscomplexobj(a) else np.float64)

    return pytree.map_leaves(convert, tree)


def convert(tree: Any, backend: str, dtype: str) -> Any:
    """NumPy leaves as ``backend`` arrays of ``dtype``."""
    o = ops(backend)
    return pytree.map_leaves(lambda x: o.asarray(x, dtype), tree)


def assert_trees_close(actual: Any, expected: Any, rtol: float, atol: float, what: str = "") -> None:
    """Same pytree structure and every leaf close (relative to the leaf's scale)."""
    a_leaves, a_def = pytree.flatten(to_numpy(actual))
    e_leaves, e_def = pytree.flatten(to_numpy(expected))
    assert a_def == e_def, f"{what}: structure {a_def} != {e_def}"
    for k, (a, e) in enumerate(zip(a_leaves, e_leaves)):
        assert a.shape == e.shape, f"{what}: leaf {k} shape {a.shape} != {e.shape}"
        scale = max(1.0, float(np.max(np.abs(e)))) if e.size else 1.0
        np.testing.assert_allclose(a, e, rtol=rtol, atol=atol * scale, err_msg=f"{what}: leaf {k}")


def max_rel_diff(actual: Any, expected: Any) -> float:
    worst = 0.0
    for a, e in zip(pytree.leaves(to_numpy(actual)), pytree.leaves(to_numpy(expected))):
        if e.size:
            worst = max(worst, float(np.max(np.abs(a - e)) / max(1e-300, float(np.max(np.abs(e))))))
    return worst


def snapshot(tree: Any) -> list[tuple[Any, ...]]:
    """Bytes, and torch's version counter, of every array leaf: equal snapshots before
    and after a call mean the call did not modify its inputs."""
    out = []
    for x in pytree.leaves(tree):
        if type(x).__module__.startswith("torch"):
            out.append((x.detach().cpu().numpy().tobytes(), x._version))
        elif hasattr(x, "shape"):
            out.append((np.asarray(x).tobytes(), None))
    return out
