"""batched_jacobian and batched_hessian: per-sample derivatives, vmap outside.

Mapping the per-sample transform (rather than differentiating the batched
function) computes only the diagonal blocks: sample ``b``'s output against sample
``b``'s input.  The cross-sample blocks, zero for independent samples, are never
formed.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from collections.abc import Callable
from typing import Any

from crossgrad import batch_axes, option_checks, pytree, spec
from crossgrad.backends.base import Backend
from crossgrad.transforms import policy
from crossgrad.transforms.call import Call, Memo, Route, routed
from crossgrad.transforms.hessians import hessian_of
from crossgrad.transforms.jacobians import JacobianPlan, inside_blocks, jacobian_of
from crossgrad.transforms.vectorize import vmap_of

log = logging.getLogger("crossgrad")


def batched_jacobian(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0,
                     has_aux: bool = False, mode: spec.Mode = "auto", chunk_size: None = None, *, impl: spec.Impl = "auto",
                     devices: Any = None, gather: bool = False, randomness: spec.Randomness = "error",
                     batch_chunk_size: int | str | None = None,
                     basis_chunk_size: int | None = None) -> Callable[..., Any]:
    """Per-sample Jacobians: ``vmap(jacobian(f, argnums, ...), in_axes)``.

    ``f`` is written for one sample; ``in_axes`` says which arguments carry the
    batch (None for shared ones, such as weights).  For output leaves of
    per-sample shape ``out`` and inputs of per-sample shape ``in`` the result has
    shape ``(B, *out, *in)``; aux, with ``has_aux``, is batched too.  ``mode`` is
    that of :func:`crossgrad.jacobian`.  Two kinds of chunks, two names:
    ``batch_chunk_size`` bounds the samples computed at once (an int, or ``"auto"``:
    from the memory budget, :func:`crossgrad.memory_budget`; the per-sample work is what
    grows with the batch), ``basis_chunk_size`` the basis vectors of each sample's
    Jacobian pushed at once (an int).  ``chunk_size`` is refused with the name to use
    (it meant the one or the other by its type).  ``devices`` and ``gather`` spread the
    batch over devices as in :func:`crossgrad.vmap`; ``randomness`` is vmap's across the
    batch, while within one sample every basis vector sees the same draw (the derivative
    of one realization).

    Example:
        >>> import torch, crossgrad as cg
        >>> W, b, x = torch.randn(33, 31), torch.randn(33), torch.randn(64, 31)
        >>> f = lambda W, b, x: torch.tanh(W @ x + b)
        >>> cg.torch.batched_jacobian(f, argnums=2, in_axes=(None, None, 0))(W, b, x).shape
        torch.Size([64, 33, 31])
    """
    name = "batched_jacobian"
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, argnums=argnums, in_axes=in_axes, has_aux=has_aux, mode=mode, chunk_size=chunk_size,
                                   impl=impl, gather=gather, randomness=randomness, batch_chunk_size=batch_chunk_size,
                                   basis_chunk_size=basis_chunk_size)
    where = None if devices is None else backend.distributed.place(name, devices)
    per_sample = jacobian_of(backend, name, f, argnums, has_aux, mode, basis_chunk_size, impl)
    batched = vmap_of(backend, name, per_sample, in_axes, 0, batch_chunk_size, impl, where=where, gather=gather,
                      randomness=randomness)

    def plan(*args: Any, **kwargs: Any) -> BatchedJacobianPlan:
        """The plan a call with these arguments follows (NOTE [plans]); nothing is computed."""
        sample, size = _one_sample(backend, name, in_axes, args)
        return BatchedJacobianPlan(name, size, batch_chunk_size, per_sample.plan(*sample, **kwargs))  # type: ignore[attr-defined]

    batched.plan = plan  # type: ignore[attr-defined]
    return batched


@dataclasses.dataclass(frozen=True)
class BatchedJacobianPlan:
    """A batched Jacobian's plan (NOTE [plans] in :mod:`crossgrad.transforms.jacobians`):
    ``vmap`` over the batch (``batch_chunk_size`` samples at a time, None: all) of the
    per-sample Jacobian, whose plan is ``per_sample``."""

    transform: str
    batch: int
    batch_chunk_size: int | str | None
    per_sample: JacobianPlan

    def __str__(self) -> str:
        chunks = "" if self.batch_chunk_size is None else f" ({self.batch_chunk_size!r} at a time)"
        return f"{self.transform}: vmap over {self.batch} samples{chunks} of {self.per_sample}"


def _one_sample(backend: Backend, name: str, in_axes: Any, args: tuple[Any, ...]) -> tuple[tuple[Any, ...], int]:
    """The first sample's arguments (each batched leaf indexed along its axis) and the batch size."""
    size, sample = samples(backend, name, in_axes, args)
    return sample(0), size


def samples(backend: Backend, name: str, in_axes: Any, args: tuple[Any, ...]
            ) -> tuple[int, Callable[[int], tuple[Any, ...]]]:
    """The batch size, and sample ``index``'s arguments as a function of ``index`` (each
    batched leaf indexed along its axis; the axes are checked once, here)."""
    a = backend.arrays
    axes = batch_axes.leaf_axes(name, batch_axes.in_axes_form(in_axes), args, a.shape)
    size = batch_axes.batch_size(name, args, axes, a.shape)
    leaves, treedef = pytree.flatten(args)

    def at(x: Any, axis: int | None, index: int) -> Any:
        if axis is None or not a.is_array(x):
            return x
        kept = [d for i, d in enumerate(a.shape(x)) if i != axis % len(a.shape(x))]
        return a.reshape(a.slice_axis(x, index, index + 1, axis % len(a.shape(x))), kept)

    def sample(index: int) -> tuple[Any, ...]:
        return tuple(pytree.unflatten(treedef, [at(x, ax, index) for x, ax in zip(leaves, axes)]))

    return size, sample


def batched_hessian(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0,
                    has_aux: bool = False, strategy: spec.Strategy = "auto", chunk_size: None = None, *, impl: spec.Impl = "auto",
                    devices: Any = None, gather: bool = False, randomness: spec.Randomness = "error",
                    batch_chunk_size: int | str | None = None,
                    basis_chunk_size: int | None = None) -> Callable[..., Any]:
    """Per-sample Hessians: ``vmap(hessian(f, argnums, ...), in_axes)``.

    Shapes ``(B, *out, *in, *in)``; ``strategy`` is that of :func:`crossgrad.hessian`;
    ``batch_chunk_size``, ``basis_chunk_size`` (the basis vectors of each of the two
    Jacobians), ``devices``, ``gather`` and ``randomness`` as in
    :func:`crossgrad.batched_jacobian`.

    Example:
        >>> import torch, crossgrad as cg
        >>> W, b, x = torch.randn(33, 31), torch.randn(33), torch.randn(64, 31)
        >>> f = lambda W, b, x: torch.tanh(W @ x + b)
        >>> cg.torch.batched_hessian(f, argnums=2, in_axes=(None, None, 0))(W, b, x).shape
        torch.Size([64, 33, 31, 31])
    """
    name = "batched_hessian"
    option_checks.check_callable(name, f)
    option_checks.validate_options(name, argnums=argnums, in_axes=in_axes, has_aux=has_aux, strategy=strategy,
                                   chunk_size=chunk_size, impl=impl, gather=gather, randomness=randomness,
                                   batch_chunk_size=batch_chunk_size, basis_chunk_size=basis_chunk_size)
    where = None if devices is None else backend.distributed.place(name, devices)
    given = {"devices": devices, "batch_chunk_size": batch_chunk_size, "impl": "builtin" if impl == "builtin" else None,
             "randomness": None if randomness == "error" else randomness}
    kept = [f"{k}={v!r}" for k, v in given.items() if v is not None]
    # Where the batch may go inside, the batched plan checks each signature first (its Call):
    # the vmap and the per-sample Hessian it maps do not check it again.
    per_sample = hessian_of(backend, name, f, argnums, has_aux, strategy, basis_chunk_size, impl, prechecked=not kept)
    outside = vmap_of(backend, name, per_sample, in_axes, 0, batch_chunk_size, impl, where=where, gather=gather,
                      randomness=randomness, prechecked=not kept)
    if kept:
        def plan(*args: Any, **kwargs: Any) -> BatchedHessianPlan:
            """The plan a call with these arguments follows (NOTE [plans]); nothing is computed."""
            size = Call(name, backend, f, args, kwargs, argnums, has_aux).batch_layout(in_axes)[1]
            return BatchedHessianPlan(name, "outside", None, size, f"{', '.join(kept)} given: the batch stays outside",
                                      per_sample=_per_sample_plan(backend, name, per_sample, in_axes, args, kwargs))

        outside.plan = plan  # type: ignore[attr-defined]
        return outside
    return _batch_inside(backend, name, f, argnums, in_axes, has_aux, strategy, basis_chunk_size, outside,
                         lambda args, kwargs: _per_sample_plan(backend, name, per_sample, in_axes, args, kwargs))


@dataclasses.dataclass(frozen=True)
class BatchedHessianPlan:
    """Where a batched Hessian puts the batch for one argument signature (NOTE [plans] in
    :mod:`crossgrad.transforms.jacobians`): ``"outside"`` (``vmap`` of the per-sample
    Hessian, which plans itself per sample) or ``"inside"`` the two basis maps with
    ``strategy`` (NOTE [batch inside]), the batch size, and why."""

    transform: str
    order: str
    strategy: str | None
    batch: int
    why: str
    axes: tuple[int, ...] = ()  # inside: the batch axis of each differentiated leaf
    per_sample: Any = None  # outside: the per-sample Hessian's plan, for the first sample

    def __str__(self) -> str:
        how = "vmap of the per-sample hessian" if self.order == "outside" else f"strategy {self.strategy}"
        sample = "" if self.per_sample is None else f"; per sample: {str(self.per_sample).removeprefix(self.transform + ': ')}"
        return f"{self.transform}: batch {self.order} ({how}), {self.batch} samples; {self.why}{sample}"


def _per_sample_plan(backend: Backend, name: str, per_sample: Callable[..., Any], in_axes: Any,
                     args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Any:
    """The per-sample Hessian's plan for the first sample (None for an empty batch)."""
    sample, size = _one_sample(backend, name, in_axes, args)
    return per_sample.plan(*sample, **kwargs) if size else None  # type: ignore[attr-defined]


def _batch_inside(backend: Backend, name: str, f: Callable[..., Any], argnums: Any, in_axes: Any, has_aux: bool, strategy: str,
                  chunk_size: int | None, outside: Callable[..., Any],
                  sample_plan: Callable[[tuple[Any, ...], dict[Any, Any]], Any]) -> Callable[..., Any]:
    """``outside`` (``vmap(hessian(f))``), or the same Hessians with the batch inside
    the basis maps where NOTE [batch inside] (:mod:`crossgrad.transforms.policy`) says
    so, planned once per argument signature; the inside route is built for the signatures
    whose plan takes it."""
    inside = _BatchInside(backend, name, f, argnums, in_axes, has_aux, strategy, chunk_size, outside, sample_plan)

    return routed(inside.planned)


class _BatchInside:
    """A batched Hessian that may take the batch inside: its options and its one cache, a
    :class:`Route` per argument signature (the plan and the function it runs: ``outside``,
    or the two basis maps over the batched ``f``)."""

    def __init__(self, backend: Backend, name: str, f: Callable[..., Any], argnums: Any, in_axes: Any, has_aux: bool,
                 strategy: str, chunk_size: int | None, outside: Callable[..., Any],
                 sample_plan: Callable[[tuple[Any, ...], dict[Any, Any]], Any]):
        self.backend, self.name, self.f, self.argnums, self.in_axes = backend, name, f, argnums, in_axes
        self.has_aux, self.strategy, self.chunk_size = has_aux, strategy, chunk_size
        self.outside, self.sample_plan = outside, sample_plan
        self.known = Memo()

    @functools.cached_property
    def batched_f(self) -> Callable[..., Any]:
        """``f`` over the batch, made when a plan first takes the batch inside."""
        return vmap_of(self.backend, self.name, self.f, self.in_axes, 0, None, "auto")

    def planned(self, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Route:
        key = Memo.key(args)
        known = self.known.get(key)
        if known is None:
            plan = self._decide(Call(self.name, self.backend, self.f, args, kwargs, self.argnums, self.has_aux),
                                args, kwargs)
            known = self.known.put(key, Route(plan, self.outside if plan.order == "outside" else self._inside(plan)))
        return known  # type: ignore[no-any-return]

    def _decide(self, call: Call, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> BatchedHessianPlan:
        backend, name = self.backend, self.name
        diff, size = call.batch_layout(self.in_axes)
        if not diff or None in diff or size == 0 or call.has_no_elements():
            why = "a differentiated argument shared by the batch, or no elements"
            return BatchedHessianPlan(name, "outside", None, size, why, per_sample=self.sample_plan(args, kwargs)
                                      if size else None)
        n = sum(math.prod(backend.arrays.shape(p)) for p in call.primals) // size

        def m() -> int:
            g = (lambda *a: self.batched_f(*a, **kwargs)) if kwargs else self.batched_f
            return sum(math.prod(s[1:]) for s, _, _ in backend.primitives.output_shapes(g, args))

        chosen = policy.batched_hessian_inside(backend.name, backend.arrays.on_accelerator(call.primals[0]),
                                               self.strategy, n, m, size)
        why = f"NOTE [batch inside]: {size} samples of {n} inputs"
        if chosen is None:
            return BatchedHessianPlan(name, "outside", None, size, why, per_sample=self.sample_plan(args, kwargs))
        log.info("%s: batch inside, %s (NOTE [batch inside]; %d samples of %d inputs)", name, chosen, size, n)
        return BatchedHessianPlan(name, "inside", chosen, size, why, tuple(a for a in diff if a is not None))

    def _inside(self, plan: BatchedHessianPlan) -> Callable[..., Any]:
        """The plan's two basis maps, each with the batch inside, over the batched ``f``."""
        assert plan.strategy is not None
        outer, inner = plan.strategy.split("-")
        diff = list(plan.axes)
        return self._jacobian_inside(self._jacobian_inside(self.batched_f, inner, diff), outer, diff)

    def _jacobian_inside(self, g: Callable[..., Any], mode: str, diff: list[int]) -> Callable[..., Any]:
        backend, name, argnums, has_aux, chunk_size = self.backend, self.name, self.argnums, self.has_aux, self.chunk_size

        def jacobian_g(*args: Any, **kwargs: Any) -> Any:
            # The signature was checked when its plan was made.
            call = Call(name, backend, g, args, kwargs, argnums, has_aux, checked=True)
            blocks, aux = inside_blocks(backend, call, diff, mode, chunk_size)
            result = call.assemble(blocks)
            return (result, aux) if has_aux else result

        return jacobian_g
