"""Array operations on torch tensors, as the shared compositions need them."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import torch

from crossgrad import pytree

Array = torch.Tensor


def is_array(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def is_input(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


def shape(x: Array) -> tuple[int, ...]:
    return tuple(x.shape)


def size(x: Array) -> int:
    return x.numel()


def dtype_name(x: Array) -> str:
    return str(x.dtype).removeprefix("torch.")


def watch(trees: tuple[Any, ...]) -> list[tuple[int, Any, int]]:
    """``(argument index, tensor, version counter)`` for every tensor in ``trees``, taken
    outside any torch.func transform and compilation (inside one, the outermost
    crossgrad call is the one that watches)."""
    if torch._C._functorch.maybe_current_level() is not None or torch.compiler.is_compiling():
        return []
    found: list[tuple[int, Any, int]] = []
    for k, tree in enumerate(trees):
        leaves = (tree,) if isinstance(tree, torch.Tensor) else pytree.leaves(tree)
        # Inference tensors keep no version counter (and cannot be written outside
        # inference mode): nothing to watch.
        found.extend((k, leaf, leaf._version) for leaf in leaves
                     if isinstance(leaf, torch.Tensor) and not leaf.is_inference())
    return found


def written(watched: list[tuple[int, Any, int]]) -> list[int]:
    """The argument indices of the watched tensors (:func:`watch`) whose version counter moved."""
    return [k for k, leaf, version in watched if leaf._version != version]


def shield(args: tuple[Any, ...], kwargs: dict[Any, Any],
           copies: bool = True) -> tuple[tuple[Any, ...], dict[Any, Any], list[tuple[int, Any, int]]]:
    """``args`` and ``kwargs`` with every tensor replaced by a copy (autograd flows through
    to the original), and the :func:`watch` list of the copies: a function that writes
    into its input writes into the copy, so the caller's tensor never changes and the
    write is still reported.  Without ``copies``, the caller's tensors themselves are
    watched (a write is reported, not prevented: NOTE [input writes]).  Inside a torch.func
    transform or a compilation, unchanged (the outermost crossgrad call shielded them)."""
    if torch._C._functorch.maybe_current_level() is not None or torch.compiler.is_compiling():
        return args, kwargs, []
    if copies:
        def copy_of(leaf: Any) -> Any:
            return leaf.clone() if isinstance(leaf, torch.Tensor) and not leaf.is_inference() else leaf

        args = tuple(pytree.map_leaves(copy_of, a) for a in args)
        kwargs = {k: pytree.map_leaves(copy_of, v) for k, v in kwargs.items()}
    found: list[tuple[int, Any, int]] = []
    for k, tree in enumerate(args + tuple(kwargs.values())):
        leaves = (tree,) if isinstance(tree, torch.Tensor) else pytree.leaves(tree)
        found.extend((k, leaf, leaf._version) for leaf in leaves
                     if isinstance(leaf, torch.Tensor) and not leaf.is_inference())
    return args, kwargs, found


def unaliased(tree: Any, watched: list[tuple[int, Any, int]]) -> Any:
    """``tree`` with every tensor that shares memory with a watched input replaced by a
    copy: a result never aliases the caller's tensor (writing into it would write into the
    input)."""
    if not watched:
        return tree
    inputs = {leaf.untyped_storage().data_ptr() for _, leaf, _ in watched if not leaf.is_meta}

    def shares(x: Any) -> bool:
        return (isinstance(x, torch.Tensor) and not x.is_meta and x.layout == torch.strided
                and x.untyped_storage().data_ptr() in inputs)

    if isinstance(tree, torch.Tensor):
        return tree.clone() if shares(tree) else tree
    leaves, treedef = pytree.flatten(tree)
    if not any(shares(x) for x in leaves):
        return tree
    return pytree.unflatten(treedef, [x.clone() if shares(x) else x for x in leaves])


def as_array(x: Any) -> Any:
    """``x`` as it is: torch transforms take tensors only (others are refused by name)."""
    return x


def materialized(tree: Any) -> Any:
    """``tree`` with torch's ``ZeroTensor`` leaves (the forward-mode derivatives of a
    linear function: ``.numpy()`` and in-place writes refuse them) replaced by ordinary
    zeros, and broadcast views by copies: results leave crossgrad as ordinary tensors."""
    if isinstance(tree, torch.Tensor):
        return _ordinary(tree)
    leaves, treedef = pytree.flatten(tree)
    if not any(isinstance(x, torch.Tensor) and _lazy(x) for x in leaves):
        return tree
    return pytree.unflatten(treedef, [_ordinary(x) if isinstance(x, torch.Tensor) else x for x in leaves])


def _lazy(x: Array) -> bool:
    """A ZeroTensor, or a broadcast view (one element at several places: a write refuses it);
    never a sparse tensor (sparse results leave as they are)."""
    if x.layout != torch.strided:
        return False
    return x._is_zerotensor() or any(st == 0 and n > 1 for st, n in zip(x.stride(), x.shape))


def _ordinary(x: Array) -> Array:
    if not _lazy(x):
        return x
    if x._is_zerotensor():
        return torch.zeros(x.shape, dtype=x.dtype, device=x.device).requires_grad_(x.requires_grad)
    return x.contiguous()


def signature(x: Array) -> tuple[Any, ...]:
    """What a traced or compiled program depends on: type, shape, dtype, device, and
    whether autograd records through it."""
    return (type(x), tuple(x.shape), x.dtype, x.device, x.requires_grad)


def copy(x: Array) -> Array:
    """A copy of ``x`` that autograd treats alike (a leaf, requiring grad where ``x`` does)."""
    return x.detach().clone().requires_grad_(x.requires_grad)


# torch.func's forward-mode levels are process-global: two threads inside torch.func at
# once corrupt each other's dual tensors ("no level exists"; jacfwd, hessians and hvp
# failed in 5 of 5 runs with four threads).  crossgrad's transforms take this lock at
# their outermost call; the same thread may re-enter it (a transform inside f).
_EXCLUSIVE = threading.RLock()


def exclusive() -> Any:
    """The context in which one transform call runs: one thread at a time on torch."""
    return _EXCLUSIVE


def synchronize(tree: Any) -> Any:
    """``tree`` once the device has finished computing it (CUDA work is asynchronous)."""
    if any(isinstance(leaf, torch.Tensor) and leaf.is_cuda for leaf in pytree.leaves(tree)):
        torch.cuda.synchronize()
    return tree


def preserved_random_state(like: Any) -> Any:
    """A context that restores the global generators (CPU, and ``like``'s CUDA device)
    on exit: evaluations crossgrad adds leave the random state as one call would."""
    cuda = isinstance(like, torch.Tensor) and like.is_cuda
    return torch.random.fork_rng(devices=[like.device] if cuda else [])


def on_accelerator(x: Array) -> bool:
    return x.device.type != "cpu"


def nbytes(x: Array) -> int:
    return x.numel() * x.element_size()


def itemsize(x: Array) -> int:
    """Bytes per element."""
    return int(x.element_size())


def is_traced(x: Any) -> bool:
    """Whether ``x`` is being traced by ``torch.compile`` (nothing runs yet)."""
    return torch.compiler.is_compiling()


def free_memory(x: Array) -> int | None:
    """Bytes free on ``x``'s accelerator; None on a CPU."""
    if x.device.type == "cuda":
        return torch.cuda.mem_get_info(x.device)[0]
    return None


def float64_unavailable(x: Any) -> bool:
    """Whether ``x`` would lose precision on the way in (never, in torch)."""
    return False


def reshape(x: Array, shape: Sequence[int]) -> Array:
    return x.reshape(tuple(shape))


def transpose(x: Array, perm: Sequence[int]) -> Array:
    return x.permute(tuple(perm))


def moveaxis(x: Array, source: int, destination: int) -> Array:
    return torch.movedim(x, source, destination)


def concat(xs: Sequence[Array], axis: int) -> Array:
    return torch.cat(list(xs), dim=axis)


def broadcast_to(x: Array, shape: Sequence[int]) -> Array:
    """``x`` repeated along its axes of size 1 (a view where the framework has them)."""
    return x.expand(tuple(shape))


def slice_axis(x: Array, start: int, stop: int, axis: int) -> Array:
    return x.narrow(axis, start, stop - start)


def eye(n: int, like: Array) -> Array:
    return torch.eye(n, dtype=like.dtype, device=like.device)


def cast_like(x: Array, like: Array) -> Array:
    return x if x.dtype == like.dtype else x.to(like.dtype)


def zeros(shape: Sequence[int], like: Array) -> Array:
    return torch.zeros(tuple(shape), dtype=like.dtype, device=like.device)


def zeros_like(x: Array) -> Array:
    return torch.zeros_like(x)


def ones_like(x: Array) -> Array:
    return torch.ones_like(x)


def from_numpy(x: Any, like: Array | None) -> Array:
    """A NumPy array as a tensor on ``like``'s device (the default device without one)."""
    out = torch.from_numpy(x)
    return out.to(like.device) if like is not None else out


def to_numpy(x: Array) -> Any:
    """A NumPy copy (bfloat16 widened to float32, which NumPy lacks)."""
    x = x.detach().cpu()
    return (x.float() if x.dtype == torch.bfloat16 else x).numpy()


def random_signs(key: Any, shapes: Sequence[Sequence[int]], like: Array) -> list[Array]:
    """Independent Rademacher (+-1) arrays of the given shapes, from ``key``: a
    ``torch.Generator`` (advanced by the draws) or an int seed (a fresh generator);
    never the global generator."""
    if isinstance(key, torch.Generator):
        generator = key
    else:
        generator = torch.Generator(device=like.device).manual_seed(int(key))
    return [(torch.randint(0, 2, tuple(s), generator=generator, device=like.device) * 2 - 1).to(like.dtype)
            for s in shapes]


def random_normal(key: Any, shapes: Sequence[Sequence[int]], like: Array) -> list[Array]:
    """Independent standard normal arrays of the given shapes (``key`` as :func:`random_signs`)."""
    generator = key if isinstance(key, torch.Generator) else torch.Generator(device=like.device).manual_seed(int(key))
    return [torch.randn(tuple(s), generator=generator, device=like.device, dtype=like.dtype) for s in shapes]


def is_random_key(key: Any) -> bool:
    return isinstance(key, torch.Generator)


def qr(x: Array) -> Array:
    """The orthonormal factor of the reduced QR decomposition of each matrix in ``x``
    (half precision through float32: torch has no half-precision QR on a CPU)."""
    if x.dtype in (torch.float16, torch.bfloat16):
        half: Array = torch.linalg.qr(x.float()).Q.to(x.dtype)
        return half
    q: Array = torch.linalg.qr(x).Q
    return q


def under_transform(x: Any) -> bool:
    """Whether values are not concrete here: under a torch.func transform, a traced
    ``cg.jit`` (make_fx) or ``torch.compile``."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return (torch._C._functorch.maybe_current_level() is not None or get_proxy_mode() is not None
            or torch.compiler.is_compiling())
