"""jax's own transforms behind crossgrad's signatures.

``LACKS`` lists the options a built-in does not have; with ``impl="auto"`` crossgrad
then uses its own composition, with ``impl="builtin"`` it raises
:class:`crossgrad.errors.UnsupportedOptionError`.  jax has no ``chunk_size`` anywhere
(crossgrad's compositions chunk with ``lax.map``).  ``hvp`` has no built-in in jax: its
built-in is the documented recipe ``jvp(grad(f))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

# jax.jacfwd returns the complex Jacobian of complex outputs of real inputs.
COMPLEX_FORWARD = True

# jax's transforms take None leaves (empty subtrees).
NONE_LEAVES = True

# jax.vmap places negative out_axes on every output.
NEGATIVE_OUT_AXES = True

LACKS: dict[str, tuple[str, ...]] = {
    "vmap": ("chunk_size",),
    "jacrev": ("chunk_size",),
    "jacfwd": ("chunk_size",),
    "hessian": ("chunk_size",),
}


def grad(f: Callable[..., Any], argnums: Any, has_aux: bool) -> Callable[..., Any]:
    return jax.grad(f, argnums=argnums, has_aux=has_aux)


def value_and_grad(f: Callable[..., Any], argnums: Any, has_aux: bool) -> Callable[..., Any]:
    return jax.value_and_grad(f, argnums=argnums, has_aux=has_aux)


def vjp(f: Callable[..., Any], primals: tuple[Any, ...], has_aux: bool) -> tuple[Any, ...]:
    if has_aux:
        return tuple(jax.vjp(f, *primals, has_aux=True))
    return tuple(jax.vjp(f, *primals))


def jvp(f: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...], has_aux: bool) -> tuple[Any, ...]:
    return jax.jvp(f, primals, tangents, has_aux=has_aux)


def linearize(f: Callable[..., Any], primals: tuple[Any, ...]) -> tuple[Any, Callable[..., Any]]:
    return jax.linearize(f, *primals)


def vmap(f: Callable[..., Any], in_axes: Any, out_axes: Any, chunk_size: int | None, randomness: str = "error") -> Callable[..., Any]:
    return jax.vmap(f, in_axes=in_axes, out_axes=out_axes)


def jacrev(f: Callable[..., Any], argnums: Any, has_aux: bool, chunk_size: int | None) -> Callable[..., Any]:
    return jax.jacrev(f, argnums=argnums, has_aux=has_aux)


def jacfwd(f: Callable[..., Any], argnums: Any, has_aux: bool, chunk_size: int | None) -> Callable[..., Any]:
    return jax.jacfwd(f, argnums=argnums, has_aux=has_aux)


def hessian(f: Callable[..., Any], argnums: Any, has_aux: bool, chunk_size: int | None) -> Callable[..., Any]:
    return jax.hessian(f, argnums=argnums, has_aux=has_aux)


# The routes jit has on jax: jax.jit traces and compiles in one step.
JIT_ROUTES = ("auto", "measure", "compile")  # measure: jax.jit is the one route


def compile(f: Callable[..., Any], options: dict[Any, Any]) -> Callable[..., Any]:
    return jax.jit(f, **options)


def is_model(x: Any) -> bool:
    """jax models (Equinox modules, Flax NNX states) are pytrees: taken as they are."""
    return False


def parameters_of(model: Any) -> dict[str, Any]:
    raise TypeError("jax models are pytrees, taken as they are")


def stateless(f: Callable[..., Any], models: dict[int, Any], statistics: str = "read") -> Callable[..., Any]:
    raise TypeError("jax models are pytrees, taken as they are")


def updates_statistics(models: tuple[Any, ...]) -> bool:
    """jax models hold no state a call updates (their state is an argument and a result)."""
    return False


def without_gradients(run: Callable[[], Any]) -> Any:
    """``run()``: jax records no graph outside a transform."""
    return run()
