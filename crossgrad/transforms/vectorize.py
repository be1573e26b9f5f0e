"""vmap, with chunking, one rule for keyword arguments, and the batch spread over devices.

NOTE [spreading the batch]: ``devices=`` hands the batch to the framework's own
distributed engine instead of a crossgrad one.  jax (single controller): batched
inputs are placed with a ``NamedSharding`` over a device ``Mesh``, ``jax.jit``
partitions the batched function, and the result comes back sharded along its batch
axis (``crossgrad.backends.jax.distributed``); with ``jax.distributed.initialize`` the
mesh spans hosts unchanged.  torch (one process per rank, SPMD): every rank of an
initialised ``torch.distributed`` group calls the same transform on the whole batch and
computes its contiguous slice (``crossgrad.backends.torch.distributed``).  Both keep
the result spread by default and give every participant the whole result with
``gather=True``.  Per-sample work needs no communication, so each sample's numbers
are those of one device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import partial
from typing import Any

from crossgrad import batch_axes, errors, option_checks, pytree, spec, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms import chunking
from crossgrad.transforms.builtin import builtin_serves, checked
from crossgrad.transforms.call import Memo, Route, call_user, check_leaves


def vmap(backend: Backend, f: Callable[..., Any], in_axes: Any = 0, out_axes: Any = 0, chunk_size: int | str | None = None, *,
         impl: spec.Impl = "auto", devices: Any = None, gather: bool = False, randomness: spec.Randomness = "error") -> Callable[..., Any]:
    """Vectorize ``f`` over a batch axis of its positional arguments.

    ``in_axes`` is an int, None (not batched) or a tuple with one entry per
    positional argument (each an int, None or a pytree prefix of the argument);
    ``out_axes`` an int or a pytree prefix of the output.  Keyword arguments are
    never batched: they are passed to every call unchanged, on both backends
    (jax alone would batch them along axis 0).  ``chunk_size`` bounds how many
    batch elements are vectorized at once; the result is the same.

    ``devices`` spreads the batch over several devices on the framework's own
    engine (NOTE [spreading the batch]): ``"all"`` means every jax device (a
    one-axis mesh) or every rank of torch's default process group; a
    ``jax.sharding.Mesh`` or a ``torch.distributed.ProcessGroup`` names them
    exactly.  The result keeps the batch spread (jax: an array sharded along the
    batch axis; torch: this rank's contiguous slice); ``gather=True`` gives every
    participant the whole result.

    ``randomness`` says what a random operation of the framework's global generator
    inside ``f`` does, as in ``torch.func.vmap``: ``"error"`` (refused,
    :class:`crossgrad.RandomnessError`), ``"different"`` (one draw per batch element,
    e.g. dropout masks per sample) or ``"same"`` (one draw for the whole batch).  jax
    has no global generator (random numbers come from explicit keys, batched or not
    through ``in_axes``): the option is validated and changes nothing.

    Returns the batched function; each output leaf gets the batch axis at
    ``out_axes``.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.vmap(torch.dot, in_axes=(0, None))(torch.ones(3, 2), torch.tensor([1.0, 2.0]))
        tensor([3., 3., 3.])
    """
    name = "vmap"
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, in_axes=in_axes, out_axes=out_axes, chunk_size=chunk_size, impl=impl,
                                   gather=gather, randomness=randomness)
    where = None if devices is None else backend.distributed.place(name, devices)
    return vmap_of(backend, name, f, in_axes, out_axes, chunk_size, impl, where=where, gather=gather,
                   randomness=randomness)


@dataclasses.dataclass(frozen=True)
class VmapPlan:
    """What a vmap does for one argument signature (NOTE [plans] in
    :mod:`crossgrad.transforms.jacobians`): the route (``"builtin"``: the framework's vmap;
    ``"composed"``: crossgrad's composition; ``"empty"``: a batch of size 0), the batch size,
    the chunks, why (a revision where the framework refused and the composition answered),
    each leaf's batch axis and the arguments' structure."""

    transform: str
    route: str
    batch: int
    chunks: int | str | None
    why: str
    axes: tuple[int | None, ...] = ()
    treedef: Any = dataclasses.field(default=None, repr=False, compare=False)

    def __str__(self) -> str:
        chunks = "" if self.chunks is None else f", chunks of {self.chunks}"
        return f"{self.transform}: {self.route} route, {self.batch} samples{chunks}; {self.why}"


def vmap_of(backend: Backend, name: str, f: Callable[..., Any], in_axes: Any, out_axes: Any, chunk_size: int | str | None,
            impl: str, *, where: Any = None, gather: bool = False, randomness: str = "error",
            prechecked: bool = False) -> Callable[..., Any]:
    """``f`` vectorized over the batch ``in_axes`` names, for the public transform ``name``,
    whose options are already validated (``where``: the devices ``distributed.place``
    resolved, or None).  A crossgrad transform that has a batched form of its own (the
    single-point curvature transforms, NOTE [vmap of curvature]) is given that instead.
    ``prechecked``: the transform this vmap is part of checks each signature's leaves first."""
    batched_form = getattr(f, "_crossgrad_batched", None)
    if batched_form is not None and where is None and chunk_size is None and out_axes == 0:
        own = batched_form(backend.name, in_axes)
        if own is not None:
            return own  # type: ignore[no-any-return]
    vm = _Vmap(backend, name, f, in_axes, out_axes, chunk_size, impl, randomness, prechecked)

    def batched(*args: Any, **kwargs: Any) -> Any:
        return vm(args, kwargs)

    def plan_of(*args: Any, **kwargs: Any) -> VmapPlan:
        """The plan a call with these arguments follows (NOTE [plans]); nothing is computed."""
        return vm.planned(args).plan  # type: ignore[no-any-return]

    reported = _shapes_named(backend, name, batched, lambda args: list(vm.planned(args).plan.axes))
    if where is None:
        reported.plan = plan_of  # type: ignore[attr-defined]
        return reported
    spread = _spread(backend, name, reported, vm.layout, out_axes, where, gather)
    spread.plan = plan_of  # type: ignore[attr-defined]
    return spread


class _Vmap:
    """One vectorized function: its validated options and its one cache, a :class:`Route`
    per argument signature (the plan, with each leaf's batch axis, and the framework's vmap
    made for it)."""

    def __init__(self, backend: Backend, name: str, f: Callable[..., Any], in_axes: Any, out_axes: Any,
                 chunk_size: int | str | None, impl: str, randomness: str, prechecked: bool = False):
        self.backend, self.name, self.f, self.out_axes = backend, name, f, out_axes
        self.chunk_size, self.randomness = chunk_size, randomness
        self.builtin, self.why = _framework_or_composition(backend, name, impl, chunk_size, out_axes)
        self.in_axes = batch_axes.in_axes_form(in_axes)
        self.known = Memo()
        self.prechecked = prechecked  # the transform this vmap is part of checks the leaves first

    def planned(self, args: tuple[Any, ...]) -> Route:
        """The signature's route: its checks once, each leaf's batch axis, the batch size."""
        key = Memo.key(args)
        known = self.known.get(key)
        if known is None:
            name, shape = self.name, self.backend.arrays.shape
            axes = batch_axes.leaf_axes(name, self.in_axes, args, shape)
            if not self.prechecked:
                check_leaves(name, self.backend, pytree.leaves(args))
            size = batch_axes.batch_size(name, args, axes, shape)
            route = "empty" if size == 0 else "builtin" if self.builtin else "composed"
            reason = "an empty batch: the output shapes from one abstract sample" if size == 0 else self.why
            plan = VmapPlan(name, route, size, self.chunk_size, reason, tuple(axes), pytree.flatten(args)[1])
            # Made for a kept signature only: arguments with no key are planned on every call.
            known = self.known.put(key, Route(plan, self._made(plan, self.f) if route == "builtin" and key is not None else None))
        return known  # type: ignore[no-any-return]

    def layout(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """``(axes, size, treedef)`` of the signature (the device spread reads them)."""
        plan = self.planned(args).plan
        return list(plan.axes), plan.batch, plan.treedef

    def _made(self, plan: VmapPlan, g: Callable[..., Any]) -> Callable[..., Any]:
        # The per-leaf axes in the arguments' own containers: a prefix crossgrad accepts (a
        # tuple for a list, a tuple for a namedtuple) means the same to the framework.
        return self.backend.builtins.vmap(checked(self.name, self.backend, g, False, False),  # type: ignore[no-any-return]
                                          tuple(pytree.unflatten(plan.treedef, list(plan.axes))), self.out_axes,
                                          self.chunk_size, self.randomness)

    def _composed(self, plan: VmapPlan, g: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        return _vmap_composed(self.backend, self.name, g, pytree.leaves(args), plan.treedef, list(plan.axes),
                              self.out_axes, self.chunk_size, self.randomness)

    def __call__(self, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Any:
        known = self.planned(args)
        plan = known.plan
        if kwargs:
            check_leaves(self.name, self.backend, pytree.leaves(kwargs))
        g = partial(self.f, **kwargs) if kwargs else self.f
        if plan.route == "empty":
            return _empty_batch(self.backend, self.name, g, pytree.leaves(args), plan.treedef, list(plan.axes),
                                self.out_axes)
        if plan.route == "composed":
            return self._composed(plan, g, args)
        run = known.run if not kwargs and known.run is not None else self._made(plan, g)
        try:
            return run(*args)
        except errors.CrossgradError:
            raise
        except Exception as exc:
            # The framework's own refusal: crossgrad's composition names the mistake (out_axes
            # out of range or not matching the output) where there is one, and answers where
            # crossgrad's spec accepts what the framework does not (a tuple out_axes prefix for
            # a list output): then the plan is revised, so later calls go to the composition.
            out = _composition_answers(exc, lambda: self._composed(plan, g, args))
            if not kwargs:
                self.known.put(Memo.key(args), Route(dataclasses.replace(plan, route="composed", why=(
                    f"revised: the framework's vmap refused ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}), "
                    "crossgrad's composition answers"))))
            return out


def _shapes_named(backend: Backend, name: str, batched: Callable[..., Any],
                  axes_of: Callable[[tuple[Any, ...]], list[Any]]) -> Callable[..., Any]:
    """``batched`` with a framework's shape failure on a sample of too few axes named
    (:class:`crossgrad.errors.SampleShapeError`)."""

    def reported(*args: Any, **kwargs: Any) -> Any:
        try:
            return batched(*args, **kwargs)
        except errors.CrossgradError:
            raise
        except Exception as exc:
            if backend.primitives.failure_cause(exc) != "shape":
                raise
            raise _sample_shape_error(name, args, axes_of(args), backend.arrays.shape, exc) from exc

    return reported


def _framework_or_composition(backend: Backend, name: str, impl: str, chunk_size: Any, out_axes: Any) -> tuple[bool, str]:
    """Whether the framework's vmap serves the options, and why (the plan's reason)."""
    builtin = builtin_serves(name, backend, impl, "vmap", chunk_size=chunk_size)
    why = f"impl={impl!r}: the framework's vmap" if builtin else (
        "impl='composed' given" if impl == "composed" else "the framework's vmap lacks an option given "
        f"(chunk_size={chunk_size!r})") + ": crossgrad's composition"
    negative = any(isinstance(a, int) and a < 0 for a in pytree.leaves(out_axes))
    if negative and not backend.builtins.NEGATIVE_OUT_AXES:
        # torch.func.vmap places a negative out_dims wrongly on an output that does not
        # depend on the batch; the composition moves each axis itself.
        return False, "a negative out_axes, which torch.func.vmap places wrongly: crossgrad's composition"
    return builtin, why


def _composition_answers(refusal: Exception, composition: Callable[[], Any]) -> Any:
    """The composition's result after the framework's ``refusal``; its named error where it
    names the mistake; the framework's own error where the composition fails too."""
    try:
        return composition()
    except errors.CrossgradError:
        raise
    except Exception:
        raise refusal from None


def _sample_shape_error(name: str, args: tuple[Any, ...], axes: list[Any], shape: Callable[[Any], tuple[int, ...]],
                        exc: BaseException) -> errors.SampleShapeError:
    """What f was given, per mapped argument: its shape, and the sample shape with the batch
    axis removed."""
    seen: list[str] = []
    leaves_at = [pytree.leaves(a) for a in args]
    k = 0
    for i, leaves in enumerate(leaves_at):
        for leaf in leaves:
            ax = axes[k] if k < len(axes) else None
            k += 1
            if ax is None or not hasattr(leaf, "shape"):
                continue
            full = tuple(shape(leaf))
            sample = full[:ax % len(full)] + full[ax % len(full) + 1:]
            seen.append(f"argument {i}{'' if len(leaves) == 1 else ' leaf'}: {full} -> one sample {sample} "
                        f"(axis {ax} removed)")
            if len(seen) >= 4:
                break
    first = str(exc).splitlines()[0][:200]
    return errors.SampleShapeError(
        name, "a function of one sample (each mapped argument with its batch axis removed)",
        f"a shape error inside it ({type(exc).__name__}: {first}) where it was given "
        + ("; ".join(seen) or "no mapped argument"),
        "Check the function on one sample, e.g. f(x[0]): the batch axis is not there inside it; "
        "a weight's shape must match the sample's feature size.")


def _spread(backend: Backend, name: str, batched: Callable[..., Any], layout: Callable[..., Any], out_axes: Any,
            where: Any, gather: bool) -> Callable[..., Any]:
    """``batched`` with its batch spread over ``where`` (``distributed.place``'s: NOTE
    [spreading the batch])."""
    compiled: dict[Any, Any] = {}

    def placed_axes(out: Any) -> list[int]:
        return [ax % len(backend.arrays.shape(o)) for ax, o in zip(batch_axes.out_axes_of(name, out_axes, out),
                                                                   pytree.leaves(out))]

    def spread(*args: Any, **kwargs: Any) -> Any:
        axes, size, treedef = layout(args)[:3]
        batch = pytree.Batch(pytree.leaves(args), treedef, axes, size)
        # Keyword arguments are closed over: a call with them gets its own partitioned function.
        fn = partial(batched, **kwargs) if kwargs else batched
        return backend.distributed.spread(name, fn, batch, where, placed_axes, gather=gather,
                                          cache={} if kwargs else compiled)

    return spread


def _empty_batch(backend: Backend, name: str, g: Callable[..., Any], leaves: list[Any], treedef: pytree.TreeDef,
                 axes: list[int | None], out_axes: Any) -> Any:
    """A batch of size 0: ``g``'s output shapes from one abstract sample (torch.func.vmap
    fails on empty batches; jax's does not, and both backends take this one path)."""
    arrays, primitives = backend.arrays, backend.primitives
    sample = [leaf if ax is None else arrays.zeros(arrays.shape(leaf)[:ax] + arrays.shape(leaf)[ax + 1:], leaf)
              for leaf, ax in zip(leaves, axes)]
    out = primitives.empty_map(lambda *xs: call_user(name, backend, g, *pytree.unflatten(treedef, list(xs))),
                               tuple(sample))
    return _place_out_axes(backend, name, out, out_axes)


def _place_out_axes(backend: Backend, name: str, out_tree: Any, out_axes: Any) -> Any:
    """Move every output leaf's batch axis from 0 to its entry of ``out_axes``."""
    arrays = backend.arrays
    outs, out_def = pytree.flatten(out_tree)
    oaxes = batch_axes.out_axes_of(name, out_axes, out_tree)
    for k, (o, ax) in enumerate(zip(outs, oaxes)):
        rank = len(arrays.shape(o))
        if not -rank <= ax < rank:
            raise errors.AxisError(name, f"an out_axes entry in [-{rank}, {rank - 1}] for output leaf {k}",
                                   f"out_axes entry {ax} for a batched output of shape {arrays.shape(o)}",
                                   "Pick an axis the batched output has (0 puts the batch first).")
    return pytree.unflatten(out_def, [arrays.moveaxis(o, 0, ax) if ax else o for o, ax in zip(outs, oaxes)])


def _vmap_composed(backend: Backend, name: str, g: Callable[..., Any], leaves: list[Any], treedef: pytree.TreeDef,
                   axes: list[int | None], out_axes: Any, chunk_size: int | str | None,
                   randomness: str = "error") -> Any:
    arrays, primitives = backend.arrays, backend.primitives
    mapped = [k for k, ax in enumerate(axes) if ax is not None]
    moved = tuple(arrays.moveaxis(leaves[k], axes[k], 0) if axes[k] else leaves[k] for k in mapped)
    out_def: list[pytree.TreeDef] = []

    def one(*mapped_leaves: Any) -> tuple[Any, ...]:
        full = list(leaves)
        for k, leaf in zip(mapped, mapped_leaves):
            full[k] = leaf
        out = call_user(name, backend, g, *pytree.unflatten(treedef, full))
        out_leaves, out_treedef = pytree.flatten(out)
        out_def[:] = [out_treedef]
        value_checks.check_output_leaves(name, out_leaves, arrays.is_array)
        return tuple(out_leaves)

    outs = chunking.map_chunks(backend, primitives.vmap(one, 0, 0, randomness), moved, chunk_size)
    return _place_out_axes(backend, name, pytree.unflatten(out_def[0], list(outs)), out_axes)
