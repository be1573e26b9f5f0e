"""Moving arrays between torch and jax: DLPack, zero-copy where the device allows it."""

from __future__ import annotations

from typing import Any

from crossgrad import errors, pytree
from crossgrad.backends import framework_of


def _outside_int32(x: Any) -> bool:
    """Whether an int64 array (NumPy or torch) holds a value int32 cannot."""
    if not int(x.numel() if hasattr(x, "numel") else x.size):
        return False
    low, high = (int(x.min()), int(x.max()))
    return low < -(2**31) or high >= 2**31


def to_jax(tree: Any, *, copy: bool = False) -> Any:
    """Every torch tensor (and NumPy array) in ``tree`` as a jax array.

    Torch tensors are detached and shared through DLPack without a copy where the
    device allows it (``copy=True`` forces one).  A float64 input while jax's x64
    mode is off raises :class:`crossgrad.errors.X64DisabledError` instead of
    turning into float32.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.to_jax(torch.ones(2)).dtype
        dtype('float32')
    """
    from crossgrad.backends import load

    jax_backend = load("jax", "to_jax")  # a missing jax is a named error, not a raw ImportError
    import jax.numpy as jnp
    import numpy as np

    # Through the backend contract: whether jax would truncate a float64 (x64 off).
    x64 = not jax_backend.arrays.float64_unavailable(np.float64(0.0))

    def convert(x: Any) -> Any:
        owner = framework_of(x)
        if owner == "jax":
            return x
        if owner != "torch" and not isinstance(x, np.ndarray):
            return x
        dtype = str(x.dtype).removeprefix("torch.")
        if dtype in ("float64", "complex128", "int64") and not x64:
            # int64 becomes int32: exact inside int32's range, wrapped outside it.
            wraps = dtype == "int64" and _outside_int32(x)
            if dtype != "int64" or wraps:
                what = "an int64 array with values outside int32's range" if wraps else f"a {dtype} array"
                raise errors.X64DisabledError(
                    "to_jax", "arrays jax can hold without losing precision",
                    f"{what} while jax's x64 mode is off",
                    "Enable 64-bit jax (JAX_ENABLE_X64=1 or `with jax.enable_x64(True):`), or convert to float32 "
                    "(int32) first.")
        if owner == "torch":
            t = x.detach()
            t = t.clone() if copy else t.contiguous()
            return jnp.from_dlpack(t)
        return jnp.array(x) if copy else jnp.asarray(x)

    return pytree.map_leaves(convert, tree)


def to_torch(tree: Any, *, copy: bool = False) -> Any:
    """Every jax array (and NumPy array) in ``tree`` as a torch tensor.

    Shared through DLPack without a copy where the device allows it: jax arrays are
    immutable, so do not modify the result in place unless ``copy=True``.

    Example:
        >>> import jax.numpy as jnp, crossgrad as cg
        >>> cg.to_torch(jnp.ones(2, dtype=jnp.float32)).dtype
        torch.float32
    """
    from crossgrad.backends import load

    load("torch", "to_torch")  # a missing torch is a named error, not a raw ImportError
    import numpy as np
    import torch

    def convert(x: Any) -> Any:
        owner = framework_of(x)
        if owner == "torch":
            return x
        if owner == "jax":
            t = torch.utils.dlpack.from_dlpack(x)
            return t.clone() if copy else t
        if isinstance(x, np.ndarray):
            return torch.tensor(x) if copy else torch.as_tensor(x)
        return x

    return pytree.map_leaves(convert, tree)
