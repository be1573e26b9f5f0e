"""Aux values that are not arrays (ints, strings, flags), through every transform.

NOTE [static aux]
The frameworks carry ``has_aux`` values through their transforms as arrays: torch.func
refuses anything else ("Expected tensors"), and jax's nested and batched transforms refuse
a string.  The user's function is wrapped once, where the transform is made: its aux goes
through the transforms as the tuple of its array leaves, and the other leaves are held
aside (from the latest evaluation of the function: they must not depend on array values,
as a traced function's Python values do not) and put back at their places in the result.
Under the batched transforms the array leaves are batched; the others are returned once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossgrad import pytree
from crossgrad.backends.base import Backend

# Where the aux sits in each transform's result (indices into nested tuples); (1,) otherwise.
AUX_AT = {"value_and_grad": (0, 1), "vjp": (2,), "jvp": (2,)}


def strip(backend: Backend, f: Callable[..., Any], held: dict[Any, Any]) -> Callable[..., Any]:
    """``f`` returning ``(output, tuple of the aux's array leaves)``; the aux's structure and
    other leaves go into ``held``."""
    is_array = backend.arrays.is_array

    def stripped(*args: Any, **kwargs: Any) -> Any:
        out = f(*args, **kwargs)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            return out  # not a pair: the transform names the mistake (HasAuxError)
        value, aux = out
        leaves, treedef = pytree.flatten(aux)
        keep = [is_array(leaf) for leaf in leaves]
        held.update(treedef=treedef, leaves=leaves, keep=keep)
        return value, tuple(leaf for leaf, k in zip(leaves, keep) if k)

    return stripped


def restore(name: str, result: Any, held: dict[Any, Any]) -> Any:
    """``result`` with the transform's aux (the tuple :func:`strip` made, transformed) rebuilt
    into the function's own aux."""
    if "treedef" not in held:
        return result
    path = AUX_AT.get(name, (1,))

    def rebuilt(arrays: Any) -> Any:
        it = iter(arrays)
        full = [next(it) if k else leaf for leaf, k in zip(held["leaves"], held["keep"])]
        return pytree.unflatten(held["treedef"], full)

    def replace(node: Any, depth: int) -> Any:
        i = path[depth]
        parts = list(node)
        parts[i] = rebuilt(parts[i]) if depth == len(path) - 1 else replace(parts[i], depth + 1)
        return tuple(parts)

    return replace(result, 0)
