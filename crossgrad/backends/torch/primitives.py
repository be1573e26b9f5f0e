"""vjp, jvp and vmap from ``torch.func`` on flat tuples of tensors, and chunked mapping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.func as tf

from crossgrad import pytree
from crossgrad.backends.torch import arrays


def vjp(f: Callable[..., Any], primals: tuple[Any, ...], has_aux: bool) -> tuple[Any, Callable[..., Any], Any]:
    """``(out, vjp_fn, aux)``; ``aux`` is None without ``has_aux``."""
    if has_aux:
        result: Any = tf.vjp(f, *primals, has_aux=True)
        return result[0], result[1], result[2]
    out, fn = tf.vjp(f, *primals)  # type: ignore[misc]  # without has_aux: a pair
    return out, fn, None


def jvp(f: Callable[..., Any], primals: tuple[Any, ...], tangents: tuple[Any, ...], has_aux: bool) -> tuple[Any, Any, Any]:
    """``(out, tangent_out, aux)``; ``aux`` is None without ``has_aux``."""
    if has_aux:
        result: Any = tf.jvp(f, primals, tangents, has_aux=True)
        return result[0], result[1], result[2]
    out, tout = tf.jvp(f, primals, tangents)  # type: ignore[misc]  # without has_aux: a pair
    return out, tout, None


def vmap(f: Callable[..., Any], in_axes: Any, out_axes: Any, randomness: str = "same") -> Callable[..., Any]:
    """``f`` vectorized; a random operation inside draws once for the whole batch
    (``"same"``: the basis vectors of one derivative), once per element
    (``"different"``) or is refused (``"error"``)."""
    return tf.vmap(f, in_dims=in_axes, out_dims=out_axes, randomness=randomness)


def map_chunks(batched_f: Callable[..., Any], xs: tuple[Any, ...], chunk_size: int | None) -> Any:
    """``batched_f(*xs)`` computed ``chunk_size`` rows of ``xs`` (batched on axis 0) at a
    time; every output leaf is batched on axis 0 and the chunks are concatenated."""
    n = xs[0].shape[0]
    if chunk_size is None or n <= chunk_size:
        return batched_f(*xs)
    parts = [batched_f(*(x.narrow(0, s, min(chunk_size, n - s)) for x in xs)) for s in range(0, n, chunk_size)]
    treedef = pytree.flatten(parts[0])[1]
    columns = zip(*(pytree.leaves(p) for p in parts))
    return pytree.unflatten(treedef, [torch.cat(col) for col in columns])


def map_rows(f: Callable[..., Any], xs: tuple[Any, ...]) -> tuple[Any, ...]:
    """``f(*row)`` for each row of the arrays ``xs`` in turn (a Python loop), stacked."""
    rows = [f(*row) for row in zip(*(x.unbind(0) for x in xs))]
    return tuple(torch.stack([r[i] for r in rows]) for i in range(len(rows[0])))


# torch's refusals of mismatched shapes.
_SHAPE_REFUSALS = ("shapes cannot be multiplied", "must match the size of tensor", "size mismatch",
                   "is invalid for input of size", "Dimension out of range", "dimension out of range",
                   "need to be at least 1D")  # an operation given a sample with fewer axes than it needs


def failure_cause(exc: BaseException) -> str | None:
    """``"control flow"``, ``"dynamic shape"``, ``"randomness"``, ``"mutation"``,
    ``"unbatched write"`` (a batched value written in place into a tensor without the batch
    axis), ``"captured write"`` (a closed-over tensor, such as a model's buffer, written in place),
    ``"shape"`` (mismatched shapes), ``"foreign function"`` (jax's operations given torch tensors),
    ``"foreign array"`` (a jax array met by torch's operations), ``"value read"`` (``.tolist()``, ``.numpy()`` of a transformed tensor),
    ``"old-style function"`` (an ``autograd.Function`` without ``setup_context``), ``"no
    forward rule"`` (one without ``jvp``, in forward mode) or ``"forward over reverse"`` when
    ``exc`` is torch refusing one of them."""
    text = str(exc)
    if isinstance(exc, TypeError):
        if "<class 'torch." in text and ("abstract array" in text or "JAX type" in text):
            return "foreign function"  # jax's operations refusing the torch tensors they were given
        if ("must be Tensor, not" in text and ("Array" in text or "Tracer" in text)) or (
                "unsupported operand type" in text and "'Tensor'" in text and "ArrayImpl" in text):
            return "foreign array"  # torch's operations meeting a jax array the function holds
    if isinstance(exc, (RuntimeError, IndexError)) and any(p in text for p in _SHAPE_REFUSALS):
        return "shape"
    if isinstance(exc, RuntimeError) and ("data-dependent control flow" in text or "calling .item()" in text):
        return "control flow"
    if isinstance(exc, RuntimeError) and "batching operators that can support dynamic shape" in text:
        return "dynamic shape"
    if isinstance(exc, RuntimeError) and "random operation" in text and "randomness" in text:
        return "randomness"
    if isinstance(exc, RuntimeError) and "is being used in an in-place operation" in text:
        return "mutation"
    if isinstance(exc, RuntimeError) and "doesn't match the broadcast shape" in text and "output with shape" in text:
        return "unbatched write"
    if isinstance(exc, RuntimeError) and "would mutate a captured Tensor" in text:
        return "captured write"
    if isinstance(exc, RuntimeError) and ("Cannot access data pointer of Tensor" in text or ".tolist()" in text):
        return "value read"
    if isinstance(exc, RuntimeError) and "must override the setup_context staticmethod" in text:
        return "old-style function"
    if isinstance(exc, NotImplementedError) and "jvp function for custom autograd.Function" in text:
        return "no forward rule"
    if isinstance(exc, RuntimeError) and "ZeroTensors are immutable" in text:
        # torch's forward-mode formulas of some backward operations (mse_loss's) write
        # into the lazy zero tangent of a constant: forward over reverse fails there.
        return "forward over reverse"
    return None


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA's or the CPU allocator's)."""
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, oom) or (isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc))


def ready(tree: Any) -> Any:
    """``tree`` once computed; torch reports allocation failures when they happen, so
    nothing to wait for."""
    return tree


def empty_map(f: Callable[..., Any], sample: tuple[Any, ...]) -> Any:
    """``f`` mapped over a batch of size 0: ``f(*sample)``'s leaves with a leading axis of
    size 0 (one forward pass on the sample, without a graph, for the shapes)."""
    with torch.no_grad():
        out = f(*sample)
    return pytree.map_leaves(lambda o: o.new_zeros((0, *o.shape)), out)


def output_shapes(f: Callable[..., Any], args: tuple[Any, ...]) -> list[tuple[tuple[int, ...], int, str]]:
    """Shape, bytes per element and dtype name of each leaf ``f(*args)`` returns: one forward pass
    without a graph, on copies of ``args`` and with the random generators restored, so
    that the caller's arrays and random state are as before (torch has no abstract
    evaluation that keeps closed-over tensors untouched, as ``jax.eval_shape`` does)."""
    like = next((a for a in pytree.leaves(args) if isinstance(a, torch.Tensor)), None)
    copies = pytree.map_leaves(lambda a: a.clone() if isinstance(a, torch.Tensor) else a, args)
    with arrays.preserved_random_state(like), torch.no_grad():
        out = f(*copies)
    return [(tuple(o.shape), o.element_size(), str(o.dtype).removeprefix("torch.")) for o in pytree.leaves(out)]


def float_dtypes(f: Callable[..., Any], args: tuple[Any, ...]) -> set[str]:
    """The floating dtypes of every value ``f(*args)`` computes (its interior included),
    from one evaluation under a dispatch mode."""
    from torch.utils import _pytree as tree_util
    from torch.utils._python_dispatch import TorchDispatchMode

    found: set[str] = set()

    class Dtypes(TorchDispatchMode):  # type: ignore[no-untyped-call]  # torch's class is unannotated
        def __torch_dispatch__(self, func: Any, types: Any, a: tuple[Any, ...] = (), kw: dict[Any, Any] | None = None) -> Any:
            out = func(*a, **(kw or {}))
            found.update(str(t.dtype).removeprefix("torch.") for t in tree_util.tree_leaves(out)
                         if isinstance(t, torch.Tensor) and t.is_floating_point())
            return out

    with Dtypes():  # type: ignore[no-untyped-call]  # torch's mode constructor is unannotated
        f(*args)
    return found

