"""The batch spread over a device mesh with ``jax.sharding``, partitioned by ``jax.jit``.

Batched inputs are placed with a ``NamedSharding`` that splits their batch axis over
every axis of the mesh, unbatched ones replicated; the batched function runs under
``jax.jit``, which partitions it (per-sample work needs no communication), and the
result is constrained to the same batch sharding, or replicated with ``gather=True``.
jax shards evenly only: a batch that does not divide by the mesh size is refused
unless ``gather=True`` (then it is padded with copies of its last sample, computed
sharded, and trimmed).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from crossgrad import errors, option_checks, pytree


def place(transform: str, devices: Any) -> Mesh:
    """The mesh ``devices`` names: ``"all"`` (every device jax sees, all hosts
    included), a ``Mesh``, or a sequence of jax devices; resolved once, when the
    transform is made."""
    if isinstance(devices, Mesh):
        return devices
    if devices == "all":
        return Mesh(np.array(jax.devices()), ("batch",))
    if isinstance(devices, Sequence) and devices and all(isinstance(d, jax.Device) for d in devices):
        return Mesh(np.array(list(devices)), ("batch",))
    raise option_checks.bad_devices(transform, devices)


def participants(devices: Any) -> int:
    """How many devices would share the batch."""
    return place("devices", devices).size


# jax's PartitionSpec constructor is unannotated: under a typed name.
_spec: Callable[..., PartitionSpec] = PartitionSpec


def _batch_spec(mesh: Mesh, axis: int | None) -> PartitionSpec:
    if axis is None:
        return _spec()
    names = tuple(mesh.axis_names)
    return _spec(*([None] * axis), names[0] if len(names) == 1 else names)


def _constrain(mesh: Mesh, x: Any, sharding: NamedSharding) -> Any:
    """``x`` laid out as ``sharding``: a constraint for the partitioner on an ``Auto``
    mesh, a ``reshard`` on an ``Explicit`` one (``jax.make_mesh``'s default)."""
    explicit = any(str(t).endswith("Explicit") for t in getattr(mesh, "axis_types", ()))
    reshard: Callable[..., Any] = jax.sharding.reshard  # jax's unannotated functions, under typed names
    constrain: Callable[..., Any] = jax.lax.with_sharding_constraint
    return reshard(x, sharding) if explicit else constrain(x, sharding)


def spread(transform: str, fn: Callable[..., Any], batch: pytree.Batch, where: Mesh,
           out_axes: Callable[[Any], list[int]], *, gather: bool, cache: dict[Any, Any]) -> Any:
    """``fn`` of the batch, its batch split over the mesh ``where`` (``place``'s)."""
    leaves, treedef, axes, size = batch
    mesh = where
    count = mesh.size
    pad = (-size) % count
    if pad and not gather:
        raise errors.AxisSizeError(
            transform, f"a batch size divisible by the {count} devices of the mesh (jax shards evenly)",
            f"a batch of {size}",
            f"Pad the batch to {size + pad} samples and drop the extra results, or pass gather=True "
            "to receive the whole result on every device.")
    placed = []
    for leaf, ax in zip(leaves, axes):
        if ax is not None and pad:
            last = jax.lax.slice_in_dim(leaf, size - 1, size, axis=ax)
            leaf = jnp.concatenate([leaf, jnp.repeat(last, pad, axis=ax)], axis=ax)
        placed.append(jax.device_put(leaf, NamedSharding(mesh, _batch_spec(mesh, ax))))
    key = (treedef, tuple(axes), size, gather, mesh)
    run = cache.get(key)
    if run is None:
        def partitioned(*batch: Any) -> Any:
            out = fn(*pytree.unflatten(treedef, list(batch)))
            out_leaves, out_def = pytree.flatten(out)
            kept = []
            for leaf, ax in zip(out_leaves, out_axes(out)):
                if pad:
                    leaf = jax.lax.slice_in_dim(leaf, 0, size, axis=ax)
                spec = _spec() if gather else _batch_spec(mesh, ax)
                kept.append(_constrain(mesh, leaf, NamedSharding(mesh, spec)))
            return pytree.unflatten(out_def, kept)

        if len(cache) >= 64:  # one compiled function per batch layout; many batch sizes must not pile up
            cache.clear()
        run = cache.setdefault(key, jax.jit(partitioned))
    return run(*placed)
