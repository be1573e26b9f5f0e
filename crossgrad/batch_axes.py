"""``in_axes`` and ``out_axes`` against the arguments and outputs of a call: one axis per
leaf, the batch size, the axes of the outputs.  Array shapes come through a ``shape``
function: no framework is imported here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crossgrad import errors, pytree


def check_axis_sizes(transform: str, sizes: dict[str, int]) -> int:
    """The common size of the mapped axes, or an :class:`AxisSizeError`."""
    distinct = sorted(set(sizes.values()))
    if len(distinct) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in sizes.items())
        raise errors.AxisSizeError(
            transform,
            "all mapped axes to have the same size",
            f"sizes {listed}",
            "Make the batch sizes agree, or mark unbatched arguments with None in in_axes.",
        )
    if not distinct:
        raise errors.AxisError(
            transform,
            "at least one argument with a mapped axis",
            "in_axes that map no argument",
            "Give at least one argument an int axis in in_axes.",
        )
    return distinct[0]


def is_axis(a: Any) -> bool:
    return a is None or isinstance(a, int)


def in_axes_form(in_axes: Any) -> Any:
    """``in_axes`` as the frameworks take it: a list of per-argument entries as a tuple."""
    return tuple(in_axes) if isinstance(in_axes, list) else in_axes


def leaf_axes(transform: str, in_axes: Any, args: tuple[Any, ...], shape: Callable[..., Any]) -> list[int | None]:
    """One non-negative axis (or None) per leaf of ``args``, from JAX-style ``in_axes``."""
    fix = "Give in_axes one entry per positional argument (an int, None, or a pytree prefix of the argument)."
    if is_axis(in_axes):
        per_arg = [in_axes] * len(args)
    elif isinstance(in_axes, (tuple, list)) and len(in_axes) == len(args):
        per_arg = list(in_axes)
    else:
        got = f"{len(in_axes)} entries" if isinstance(in_axes, (tuple, list)) else f"a {type(in_axes).__name__}"
        raise errors.AxisError(transform, f"in_axes for {len(args)} positional argument(s)", got, fix)
    axes: list[int | None] = []
    for k, (prefix, arg) in enumerate(zip(per_arg, args)):
        try:
            expanded = pytree.broadcast_prefix(prefix, arg, is_axis)
        except ValueError as exc:
            raise errors.AxisError(transform, f"in_axes[{k}] to match argument {k}'s structure", str(exc), fix) from None
        for ax, leaf in zip(expanded, pytree.leaves(arg)):
            if ax is not None and not hasattr(leaf, "shape"):
                raise errors.AxisError(transform, f"None in in_axes for the non-array leaves of argument {k}",
                                       f"in_axes entry {ax} for a {type(leaf).__name__}",
                                       "Map arrays only: pass None for Python numbers and other objects.")
            if ax is not None:
                ndim = len(shape(leaf))
                if not -ndim <= ax < ndim:
                    raise errors.AxisError(transform, f"an axis in [-{ndim}, {ndim - 1}] for argument {k}",
                                           f"in_axes entry {ax} for an array of shape {tuple(shape(leaf))}",
                                           "Pick an axis the array has, or None for an unbatched argument.")
                ax %= ndim
            axes.append(ax)
    return axes


def out_axes_of(transform: str, out_axes: Any, out_tree: Any) -> list[int]:
    """One entry of ``out_axes`` per output leaf."""
    try:
        return pytree.broadcast_prefix(out_axes, out_tree, is_axis)
    except ValueError as exc:
        raise errors.AxisError(transform, "out_axes matching the output's structure", str(exc),
                               "Give out_axes as an int or a pytree prefix of the output.") from None


def batch_size(transform: str, args: tuple[Any, ...], axes: list[int | None], shape: Callable[..., Any]) -> int:
    """The one batch size of the mapped leaves (:func:`check_axis_sizes`)."""
    sizes: dict[str, int] = {}
    position = 0
    for k, arg in enumerate(args):
        arg_leaves = pytree.leaves(arg)
        for j, leaf in enumerate(arg_leaves):
            ax = axes[position + j]
            if ax is not None:
                label = f"argument {k}" + (f" leaf {j}" if len(arg_leaves) > 1 else "")
                sizes[label] = shape(leaf)[ax]
        position += len(arg_leaves)
    return check_axis_sizes(transform, sizes)

