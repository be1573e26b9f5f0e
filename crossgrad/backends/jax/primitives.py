"""vjp, jvp and vmap from ``jax`` on flat tuples of arrays, and chunked mapping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from crossgrad import pytree

# jax's own annotation-free function, under a typed name.
_block_until_ready: Callable[[Any], Any] = jax.block_until_ready


def vjp(f: Callable[..., Any], primals: tuple[Any, ...], has_aux: bool) -> tuple[Any, Callable[..., Any], Any]:
    """``(out, vjp_fn, aux)``; ``aux`` is None without ``has_aux``."""
    if has_aux:
        return jax.vjp(f, *primals, has_aux=True)
    out, fn = jax.vjp(f, *primals)
    return out, fn, None


def jvp(f: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...], has_aux: bool) -> tuple[Any, Any, Any]:
    """``(out, tangent_out, aux)``; ``aux`` is None without ``has_aux``."""
    if has_aux:
        return jax.jvp(f, primals, tangents, has_aux=True)
    out, tout = jax.jvp(f, primals, tangents)
    return out, tout, None


def vmap(f: Callable[..., Any], in_axes: Any, out_axes: Any, randomness: str = "same") -> Callable[..., Any]:
    """``f`` vectorized (jax draws from explicit keys: ``randomness`` changes nothing)."""
    return jax.vmap(f, in_axes=in_axes, out_axes=out_axes)


def map_chunks(batched_f: Callable[..., Any], xs: tuple[Any, ...], chunk_size: int | None) -> Any:
    """``batched_f(*xs)`` computed ``chunk_size`` rows of ``xs`` (batched on axis 0) at a
    time; every output leaf is batched on axis 0 and the chunks are concatenated.

    The full chunks go through one ``lax.map`` (one compiled body, a loop at run time);
    a shorter last chunk is computed on its own.
    """
    n = jnp.shape(xs[0])[0]
    if chunk_size is None or n <= chunk_size:
        return batched_f(*xs)
    full = (n // chunk_size) * chunk_size
    blocks = tuple(jnp.reshape(x[:full], (n // chunk_size, chunk_size, *jnp.shape(x)[1:])) for x in xs)
    mapped = jax.lax.map(lambda chunk: batched_f(*chunk), blocks)
    treedef = pytree.flatten(mapped)[1]
    leaves = [jnp.reshape(leaf, (full, *leaf.shape[2:])) for leaf in pytree.leaves(mapped)]
    if full < n:
        rest = pytree.leaves(batched_f(*(x[full:] for x in xs)))
        leaves = [jnp.concatenate([a, b]) for a, b in zip(leaves, rest)]
    return pytree.unflatten(treedef, leaves)


def map_rows(f: Callable[..., Any], xs: tuple[Any, ...]) -> tuple[Any, ...]:
    """``f(*row)`` for each row of the arrays ``xs`` in turn (``lax.map``: one traced
    body, a loop at run time, so the reference loop stays small under ``jax.jit``), stacked."""
    return tuple(jax.lax.map(lambda row: f(*row), xs))


# jax's (and XLA's) refusals of mismatched shapes.
_SHAPE_REFUSALS = ("requires contracting dimensions", "Incompatible shapes", "incompatible shapes", "cannot reshape",
                   "shape mismatch", "must have the same shape", "add got incompatible shapes",
                   "must have ndim at least")  # an operation given a sample with fewer axes than it needs


def failure_cause(exc: BaseException) -> str | None:
    """``"control flow"`` when ``exc`` is jax refusing a Python branch on a traced value,
    ``"dynamic shape"`` for a boolean mask on one, ``"value read"`` for a NumPy conversion
    of one, ``"no forward rule"`` for forward mode through a ``custom_vjp``, ``"shape"`` for
    mismatched shapes, ``"foreign function"`` / ``"foreign array"`` for torch's operations given
    jax values / a torch tensor the function holds (jax has no
    global random generator to refuse, nor in-place writes)."""
    text = str(exc)
    if isinstance(exc, TypeError):
        if "must be Tensor, not" in text and ("Tracer" in text or "Array" in text):
            return "foreign function"  # torch's operations refusing the jax values they were given
        if ("<class 'torch." in text and ("abstract array" in text or "JAX type" in text)) or (
                "unsupported operand type" in text and "'Tensor'" in text and "Tracer" in text):
            return "foreign array"  # jax's operations meeting a torch tensor the function holds
    if isinstance(exc, (TypeError, ValueError)) and any(p in text for p in _SHAPE_REFUSALS):
        return "shape"
    if isinstance(exc, jax.errors.ConcretizationTypeError | jax.errors.TracerBoolConversionError
                  | jax.errors.TracerIntegerConversionError):
        return "control flow"
    if isinstance(exc, jax.errors.NonConcreteBooleanIndexError):
        return "dynamic shape"
    if isinstance(exc, jax.errors.TracerArrayConversionError):
        return "value read"
    if isinstance(exc, TypeError) and "forward-mode autodiff (jvp) to a custom_vjp function" in str(exc):
        return "no forward rule"
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is XLA failing to allocate (``RESOURCE_EXHAUSTED``)."""
    return "RESOURCE_EXHAUSTED" in str(exc) and type(exc).__name__ in ("XlaRuntimeError", "JaxRuntimeError")


def ready(tree: Any) -> Any:
    """``tree`` once computed (``block_until_ready``), so that a failure of the
    asynchronous computation (out of memory) is raised here."""
    return _block_until_ready(tree)


def empty_map(f: Callable[..., Any], sample: tuple[Any, ...]) -> Any:
    """``f`` mapped over a batch of size 0: ``f(*sample)``'s leaves with a leading axis of
    size 0 (traced abstractly, nothing computed)."""
    return pytree.map_leaves(lambda o: jnp.zeros((0, *o.shape), o.dtype), jax.eval_shape(f, *sample))


def output_shapes(f: Callable[..., Any], args: tuple[Any, ...]) -> list[tuple[tuple[int, ...], int, str]]:
    """Shape, bytes per element and dtype name of each leaf ``f(*args)`` returns (traced
    abstractly, nothing computed)."""
    return [(tuple(o.shape), o.dtype.itemsize, str(o.dtype)) for o in pytree.leaves(jax.eval_shape(f, *args))]


def float_dtypes(f: Callable[..., Any], args: tuple[Any, ...]) -> set[str]:
    """The floating dtypes of every value ``f(*args)`` computes (its interior included),
    from its jaxpr (nested calls included; nothing computed)."""
    found: set[str] = set()

    def walk(jaxpr: Any) -> None:
        for eqn in jaxpr.eqns:
            for v in eqn.outvars:
                dtype = getattr(getattr(v, "aval", None), "dtype", None)
                if dtype is not None and jnp.issubdtype(dtype, jnp.floating):
                    found.add(str(dtype))
            for param in eqn.params.values():  # nested programs (jit, custom_jvp, scan bodies)
                for sub in param if isinstance(param, (list, tuple)) else (param,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        walk(inner)

    walk(jax.make_jaxpr(f)(*args).jaxpr)
    return found

