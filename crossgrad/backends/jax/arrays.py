"""Array operations on jax arrays, as the shared compositions need them."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
# jax's own annotation-free function, under a typed name.
_block_until_ready: Callable[[Any], Any] = jax.block_until_ready


def is_array(x: Any) -> bool:
    return isinstance(x, jax.Array)


def is_input(x: Any) -> bool:
    # jax functions take NumPy arrays and Python numbers as well as jax arrays.
    return isinstance(x, (jax.Array, np.ndarray, np.generic, float, int, complex))


def as_array(x: Any) -> Any:
    """``x`` as a jax array (a Python number or NumPy array converted as jax converts it)."""
    return x if isinstance(x, jax.Array) or not is_input(x) else jnp.asarray(x)


def shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def size(x: Any) -> int:
    return int(np.prod(np.shape(x), dtype=np.int64))


def dtype_name(x: Any) -> str:
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return str(x.dtype)
    return str(jnp.result_type(x))


def watch(trees: tuple[Any, ...]) -> list[tuple[int, Any, int]]:
    """jax arrays are immutable: nothing to watch."""
    return []


def written(watched: list[tuple[int, Any, int]]) -> list[int]:
    """jax arrays are immutable: none was written."""
    return []


def shield(args: tuple[Any, ...], kwargs: dict[Any, Any],
           copies: bool = True) -> tuple[tuple[Any, ...], dict[Any, Any], list[tuple[int, Any, int]]]:
    """jax arrays are immutable: the arguments as they are, nothing to watch."""
    return args, kwargs, []


def unaliased(tree: Any, watched: list[tuple[int, Any, int]]) -> Any:
    """``tree`` as it is: an immutable array may be shared."""
    return tree


def materialized(tree: Any) -> Any:
    """``tree`` as it is: jax has no lazy zero arrays to replace (torch's ``ZeroTensor``)."""
    return tree


def signature(x: Any) -> tuple[Any, ...]:
    """What a traced or compiled program depends on: type, shape, dtype (placement is
    ``jax.jit``'s own business)."""
    return (type(x), tuple(x.shape), x.dtype)


def copy(x: Array) -> Array:
    """``x`` itself: jax arrays are immutable, nothing can write into them."""
    return x


def exclusive() -> Any:
    """The context in which one transform call runs: jax's transforms keep no global state,
    so threads run concurrently."""
    return contextlib.nullcontext()


def synchronize(tree: Any) -> Any:
    """``tree`` once computed (jax dispatches asynchronously)."""
    return _block_until_ready(tree)


def preserved_random_state(like: Any) -> Any:
    """A context that restores the global random state on exit: jax has none (keys are
    explicit), so nothing to restore."""
    return contextlib.nullcontext()


def on_accelerator(x: Any) -> bool:
    # Tracers carry no device: the default backend is where jax runs them.
    return jax.default_backend() != "cpu"


def nbytes(x: Any) -> int:
    return int(np.prod(jnp.shape(x), dtype=np.int64)) * itemsize(x)


def itemsize(x: Any) -> int:
    """Bytes per element."""
    return int(jnp.dtype(x.dtype).itemsize)


def is_traced(x: Any) -> bool:
    """Whether ``x`` is abstract (under ``jax.jit`` or another transform's trace)."""
    return isinstance(x, jax.core.Tracer)


def free_memory(x: Any) -> int | None:
    """Bytes free on ``x``'s device as its allocator reports them; None on a CPU."""
    devices = getattr(x, "devices", None)
    device = next(iter(devices()), None) if callable(devices) and not is_traced(x) else jax.devices()[0]
    stats = device.memory_stats() if device is not None and device.platform != "cpu" else None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"] - stats.get("bytes_in_use", 0))


def x64_enabled() -> bool:
    """Whether jax keeps 64-bit values (its x64 mode), read without changing it."""
    return jax.dtypes.canonicalize_dtype(np.float64) == np.float64


def float64_unavailable(x: Any) -> bool:
    """A 64-bit NumPy input that jax would silently truncate because x64 is off."""
    return isinstance(x, (np.ndarray, np.generic)) and x.dtype in (np.float64, np.complex128) and not x64_enabled()


def reshape(x: Array, shape: Sequence[int]) -> Array:
    return jnp.reshape(x, tuple(shape))


def transpose(x: Array, perm: Sequence[int]) -> Array:
    return jnp.transpose(x, tuple(perm))


def moveaxis(x: Array, source: int, destination: int) -> Array:
    return jnp.moveaxis(x, source, destination)


def concat(xs: Sequence[Array], axis: int) -> Array:
    return jnp.concatenate(list(xs), axis=axis)


def broadcast_to(x: Array, shape: Sequence[int]) -> Array:
    """``x`` repeated along its axes of size 1 (a view where the framework has them)."""
    return jnp.broadcast_to(x, tuple(shape))


def slice_axis(x: Array, start: int, stop: int, axis: int) -> Array:
    return jax.lax.slice_in_dim(x, start, stop, axis=axis)


def eye(n: int, like: Array) -> Array:
    return jnp.eye(n, dtype=jnp.result_type(like))


def cast_like(x: Array, like: Array) -> Array:
    dtype = jnp.result_type(like)
    return x if x.dtype == dtype else x.astype(dtype)


def zeros(shape: Sequence[int], like: Array) -> Array:
    return jnp.zeros(tuple(shape), dtype=jnp.result_type(like))


def zeros_like(x: Array) -> Array:
    return jnp.zeros_like(x)


def ones_like(x: Array) -> Array:
    return jnp.ones_like(x)


def from_numpy(x: Any, like: Array | None) -> Array:
    """A NumPy array as a jax array on ``like``'s device (the default device without one)."""
    if like is not None and not is_traced(like):
        placed: Array = jax.device_put(x, next(iter(like.devices())))
        return placed
    return jnp.asarray(x)


def to_numpy(x: Array) -> Any:
    """A NumPy copy (bfloat16 widened to float32)."""
    return np.asarray(x.astype(jnp.float32) if x.dtype == jnp.bfloat16 else x)


def random_signs(key: Any, shapes: Sequence[Sequence[int]], like: Array) -> list[Array]:
    """Independent Rademacher (+-1) arrays of the given shapes from ``key`` (a jax PRNG
    key, or an int seed made into one), split once per array."""
    if not is_random_key(key):
        key = jax.random.key(int(key))
    keys = jax.random.split(key, len(shapes))
    return [jax.random.rademacher(k, tuple(s), dtype=like.dtype) for k, s in zip(keys, shapes)]


def random_normal(key: Any, shapes: Sequence[Sequence[int]], like: Array) -> list[Array]:
    """Independent standard normal arrays of the given shapes from ``key`` (as
    :func:`random_signs`)."""
    if not is_random_key(key):
        key = jax.random.key(int(key))
    keys = jax.random.split(key, len(shapes))
    return [jax.random.normal(k, tuple(s), dtype=like.dtype) for k, s in zip(keys, shapes)]


def is_random_key(key: Any) -> bool:
    return isinstance(key, jax.Array) and (jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
                                           or (key.dtype == jnp.uint32 and key.shape == (2,)))


def qr(x: Array) -> Array:
    """The orthonormal factor of the reduced QR decomposition of each matrix in ``x``."""
    return jnp.linalg.qr(x)[0]


def under_transform(x: Any) -> bool:
    """Whether ``x`` is abstract (under ``jax.jit``, ``jax.vmap`` or another trace)."""
    return is_traced(x)
