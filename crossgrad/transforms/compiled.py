"""jit: the framework's compiler (``torch.compile``, ``jax.jit``) with an eager fallback.

NOTE [compile fallback]: a compiler can fail where eager execution works
(``torch.compile`` of ``vmap(hessian(f))`` raises "Tensor device mismatch" on torch
2.13 and "RuntimeError when making fake tensor call" on 2.11; ``jax.jit`` refuses
Python branches on array values).  :meth:`Compiled.jit` then warns once
(:class:`crossgrad.errors.CompileFallbackWarning`, naming the compiler's error) and
runs that argument signature eagerly from then on; an error that eager execution
raises too is the user's and propagates unchanged.  With ``check=True`` the first
compiled call of each signature is compared with an eager one (relative tolerance
per dtype, :data:`CHECK_RTOL`); a disagreement warns and falls back the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

from crossgrad import errors, pytree, spec
from crossgrad.backends.base import Backend
from crossgrad.transforms.common import Memo

# Compiled code may fuse and reorder floating-point operations: agreement with eager
# execution is judged relative to the largest eager magnitude of each leaf.
CHECK_RTOL = {"float64": 1e-9, "float32": 1e-4, "float16": 1e-2, "bfloat16": 2e-2}


def agree(backend: Backend, compiled_out: Any, eager_out: Any) -> str | None:
    """None when the two results agree, else what differs."""
    import numpy as np

    arrays = backend.arrays
    a_leaves, a_def = pytree.flatten(compiled_out)
    b_leaves, b_def = pytree.flatten(eager_out)
    if a_def != b_def:
        return "the output structure"
    for k, (a, b) in enumerate(zip(a_leaves, b_leaves)):
        if not (arrays.owns(a) and arrays.owns(b)):
            continue
        if arrays.shape(a) != arrays.shape(b):
            return f"output leaf {k}'s shape: {arrays.shape(a)} vs {arrays.shape(b)}"
        x, y = arrays.to_numpy(a).astype(np.float64), arrays.to_numpy(b).astype(np.float64)
        scale = max(float(np.max(np.abs(y), initial=0.0)), np.finfo(np.float64).tiny)
        err = float(np.max(np.abs(x - y), initial=0.0)) / scale
        if not err <= CHECK_RTOL.get(arrays.dtype_name(b), 1e-4):  # NaN fails too
            return f"output leaf {k}: relative difference {err:.2e}"
    return None


class Compiled:
    """jit."""

    backend: Backend

    def jit(self, f: Callable, check: bool = False, options: dict | None = None) -> Callable:
        """``f`` compiled by the framework (``torch.compile`` / ``jax.jit``), never worse than eager.

        Returns a function with ``f``'s arguments and results.  When compilation fails
        for an argument signature (shapes, dtypes, pytree structure), it warns once
        (:class:`crossgrad.errors.CompileFallbackWarning`) and runs ``f`` eagerly for that
        signature; errors that eager execution raises too propagate unchanged.
        ``check=True`` compares the first compiled result of each signature with an
        eager one and falls back the same way when they disagree.  ``options`` go to
        the compiler (e.g. ``{"backend": "aot_eager"}`` for torch,
        ``{"static_argnums": 1}`` for jax).  Compose it around any transform:
        ``cg.jit(cg.batched_hessian(f))``.

        Example:
            >>> import jax.numpy as jnp, crossgrad as cg
            >>> fast = cg.jax.jit(cg.jax.hessian(lambda x: jnp.sum(x ** 3)), check=True)
            >>> fast(jnp.array([1.0, 2.0])).tolist()
            [[6.0, 0.0], [0.0, 12.0]]
        """
        name = "jit"
        spec.check_callable(name, f)
        spec.validate_options(name, check=check, options=options)
        backend = self.backend
        compiled = backend.builtins.compile(f, dict(options or {}))
        eager_only: set = set()
        checked: set = set()
        warned: list[bool] = []

        def fall_back(key: Any, why: str) -> None:
            eager_only.add(key)
            if not warned:
                warned.append(True)
                warnings.warn(f"jit: {why}; running {getattr(f, '__name__', 'the function')} eagerly for these "
                              "argument shapes (the result is eager execution's).",
                              errors.CompileFallbackWarning, stacklevel=3)

        def jitted(*args: Any, **kwargs: Any) -> Any:
            key = Memo.key(args)
            if key in eager_only:
                return f(*args, **kwargs)
            try:
                out = compiled(*args, **kwargs)
            except Exception as exc:
                result = f(*args, **kwargs)  # raises here if eager fails too: the error is f's own
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                fall_back(key, f"{backend.name} compilation failed ({type(exc).__name__}: {first})")
                return result
            if check and key not in checked:
                checked.add(key)
                eager = f(*args, **kwargs)
                differs = agree(backend, out, eager)
                if differs is not None:
                    fall_back(key, f"the compiled result differs from eager execution in {differs}")
                    return eager
            return out

        return jitted
