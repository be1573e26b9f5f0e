"""The batch spread over the ranks of a ``torch.distributed`` process group.

Every rank calls the transform with the whole batch (SPMD, as under ``torchrun``) and
computes its own contiguous slice: rank ``r`` of ``W`` takes ``B // W`` samples, plus
one for the first ``B % W`` ranks (``torch.tensor_split``'s split), so uneven batches
need no padding.  Results stay on their rank; with ``gather=True`` every rank
receives the whole batch (``all_gather``, rows padded to the largest slice and trimmed).
The backend (gloo, NCCL) is the group's: with NCCL, inputs live on the rank's GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from crossgrad import errors, option_checks, pytree

# devices="all": torch's default process group, which may be initialised after the
# transform is made (it is looked up when the transform runs).
_DEFAULT_GROUP = "the default process group"


def place(transform: str, devices: Any) -> Any:
    """The process group ``devices`` names: :data:`_DEFAULT_GROUP` for ``"all"``, or the
    ``ProcessGroup`` given; resolved once, when the transform is made."""
    import torch.distributed as dist

    if devices != "all" and not (dist.is_available() and isinstance(devices, dist.ProcessGroup)):
        raise option_checks.bad_devices(transform, devices)
    return _DEFAULT_GROUP if devices == "all" else devices


def _initialised(transform: str, group: Any) -> Any:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise errors.OptionError(
            transform, "an initialised torch.distributed process group to spread the batch over",
            "no process group (torch.distributed is not initialised)",
            "Call torch.distributed.init_process_group(...) in every process first (torchrun sets the "
            "environment it reads), or leave devices=None.")
    return None if group is _DEFAULT_GROUP else group


def participants(devices: Any) -> int:
    """How many ranks would share the batch: 1 for ``"all"`` in a process without a
    process group."""
    import torch.distributed as dist

    if devices == "all" and not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(_initialised("devices", place("devices", devices)))


def rows_of(rank: int, world: int, size: int) -> tuple[int, int]:
    """The ``[start, stop)`` samples of ``rank``: ``torch.tensor_split``'s uneven split."""
    base, extra = divmod(size, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (rank < extra)


def spread(transform: str, fn: Callable[..., Any], batch: pytree.Batch, where: Any,
           out_axes: Callable[[Any], list[int]], *, gather: bool, cache: dict[Any, Any]) -> Any:
    """``fn`` of this rank's slice of the batch over the process group ``where`` (``place``'s);
    the whole batch with ``gather``.  Nothing is compiled per layout here: ``cache`` is unused."""
    import torch.distributed as dist

    leaves, treedef, axes, size = batch
    group = _initialised(transform, where)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    start, stop = rows_of(rank, world, size)
    local = [leaf if ax is None else leaf.narrow(ax, start, stop - start) for leaf, ax in zip(leaves, axes)]
    out = fn(*pytree.unflatten(treedef, local))
    if not gather:
        return out
    counts = [rows_of(r, world, size)[1] - rows_of(r, world, size)[0] for r in range(world)]
    out_leaves, out_def = pytree.flatten(out)
    whole = []
    for leaf, ax in zip(out_leaves, out_axes(out)):
        padded = list(leaf.shape)
        padded[ax] = max(counts)
        buffer = leaf.new_zeros(padded)
        buffer.narrow(ax, 0, leaf.shape[ax]).copy_(leaf)
        parts = [torch.empty_like(buffer) for _ in range(world)]
        dist.all_gather(parts, buffer.contiguous(), group=group)
        whole.append(torch.cat([p.narrow(ax, 0, n) for p, n in zip(parts, counts)], dim=ax))
    return pytree.unflatten(out_def, whole)
