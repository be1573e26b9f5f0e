"""Laplacians, Hessian traces and diagonals, without forming the Hessian.

Exact traces push the second-order Taylor coefficients forward, summed over the
directions at every operation (NOTE [collapsed taylor], :mod:`crossgrad.transforms.taylor`);
exact diagonals push one second-order coefficient per direction; the estimators take
random directions (Hutchinson) or a low-rank part from Hessian-vector products plus
Hutchinson on the rest (Hutch++, Meyer et al. 2021).  The batched variants push the whole
batch at once, each sample with its own directions (the samples are independent, so the
sum over one sample's coordinates is that sample's trace).

The routes themselves are :mod:`crossgrad.transforms.curvature_routes`; the first-call check
of the Taylor route, :mod:`crossgrad.transforms.taylor_check`.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from crossgrad import batch_axes, errors, option_checks, spec, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms import policy, taylor_check
from crossgrad.transforms.call import Call, Memo
from crossgrad.transforms.curvature_routes import composed, taylor_route, via_hessian
from crossgrad.transforms.directions import DEFAULT_SAMPLES, Point
from crossgrad.transforms.hessians import hessian_of
from crossgrad.transforms.vectorize import vmap_of

log = logging.getLogger("crossgrad")



def laplacian(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, estimator: spec.Estimator = "exact",
              samples: int | None = None, key: Any = None, chunk_size: int | str | None = None, *,
              impl: spec.Impl = "auto") -> Callable[..., Any]:
    """The Laplacian of ``f``: the trace of its Hessian, without forming the Hessian.

    Returns a function with ``f``'s arguments returning one value per output
    element (each output leaf's shape): ``sum_i d2 f / dx_i2`` over every element
    ``x_i`` of the differentiated arguments (a tuple ``argnums`` sums over all of
    them together); ``(laplacian, aux)`` with ``has_aux``.

    Args:
        estimator: ``"exact"`` (the second-order Taylor coefficients pushed forward,
            summed over the coordinate directions at every operation: NOTE
            [collapsed taylor]), ``"hutchinson"`` (``samples`` random +-1
            directions, unbiased) or ``"hutch++"`` (a rank-``samples/3`` part from
            Hessian-vector products, Hutchinson on the rest; one scalar output).
        samples: random directions for the estimators (default 64).
        key: their random source: a jax PRNG key (jax), a ``torch.Generator``
            (torch) or an int seed; required by the estimators.
        chunk_size: directions pushed at once (an int), ``"auto"`` from the memory
            budget (:func:`crossgrad.memory_budget`), or None (all).
        impl: ``"composed"`` (the forward Taylor route; a program the backend cannot
            record takes nested forward-over-forward differentiation, logged),
            ``"builtin"`` (the trace of the framework's own Hessian, the nested
            baseline; exact only) or ``"auto"`` (NOTE [laplacian route]).

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.laplacian(lambda x: (x ** 3).sum())(torch.tensor([1.0, 2.0]))
        tensor(18.)
    """
    return curvature_of(backend, "laplacian", f, argnums, None, has_aux, estimator, samples, key, chunk_size,
                        impl, "trace")


def hessian_trace(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, estimator: spec.Estimator = "exact",
                  samples: int | None = None, key: Any = None, chunk_size: int | str | None = None, *,
                  impl: spec.Impl = "auto") -> Callable[..., Any]:
    """The trace of the Hessian of ``f`` (its Laplacian), exact or estimated.

    Options, shapes and routes as in :func:`laplacian`.

    Example:
        >>> import torch, crossgrad as cg
        >>> f = lambda x: (x ** 4).sum()
        >>> cg.torch.hessian_trace(f, estimator="hutchinson", samples=8, key=0)(torch.ones(3))
        tensor(36.)
    """
    return curvature_of(backend, "hessian_trace", f, argnums, None, has_aux, estimator, samples, key, chunk_size,
                        impl, "trace")


def hessian_diagonal(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False,
                     estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None,
                     chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]:
    """The diagonal of the Hessian of ``f``, without forming the Hessian.

    For an output leaf of shape ``out`` and an input leaf of shape ``in`` the result
    has shape ``out + in`` (``d2 out / d in2`` elementwise), nested as
    :func:`jacobian` nests (output pytree outside, argnums inside).  ``"exact"``
    pushes one second-order Taylor coefficient per coordinate direction (as many
    forward passes as the input has elements, fused, against the nested Hessian's
    forward-over-reverse passes); ``"hutchinson"`` averages ``v * (H v)`` over
    random +-1 directions (one scalar output).  Other options as in
    :func:`laplacian`.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.hessian_diagonal(lambda x: (x ** 3).sum())(torch.tensor([1.0, 2.0]))
        tensor([ 6., 12.])
    """
    return curvature_of(backend, "hessian_diagonal", f, argnums, None, has_aux, estimator, samples, key, chunk_size,
                        impl, "diagonal")


def batched_laplacian(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0, has_aux: bool = False,
                      estimator: spec.Estimator = "exact", samples: int | None = None, key: Any = None,
                      chunk_size: None = None, *, impl: spec.Impl = "auto", basis_chunk_size: int | str | None = None) -> Callable[..., Any]:
    """Per-sample Laplacians: ``vmap(laplacian(f, argnums, ...), in_axes)``, shape
    ``(B, *out)``.

    ``f`` is written for one sample; the whole batch is pushed at once, each sample
    with its own directions.  Options as in :func:`crossgrad.laplacian`, except that the
    directions pushed at once are ``basis_chunk_size`` (an int, or ``"auto"``: from the
    memory budget, for the whole batch), as on every batched transform; ``chunk_size``
    is refused with that name.  ``in_axes`` as in :func:`crossgrad.batched_hessian`.

    Example:
        >>> import torch, crossgrad as cg
        >>> W = torch.randn(8, 2)
        >>> u = lambda W, x: torch.tanh(W @ x).sum()       # a PINN's scalar field
        >>> cg.torch.batched_laplacian(u, argnums=1, in_axes=(None, 0))(W, torch.randn(100, 2)).shape
        torch.Size([100])
    """
    return curvature_of(backend, "batched_laplacian", f, argnums, in_axes, has_aux, estimator, samples, key,
                        basis_chunk_size, impl, "trace", retired=chunk_size, batched=True)


def batched_hessian_trace(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0,
                          has_aux: bool = False, estimator: spec.Estimator = "exact", samples: int | None = None,
                          key: Any = None, chunk_size: None = None, *,
                          impl: spec.Impl = "auto", basis_chunk_size: int | str | None = None) -> Callable[..., Any]:
    """Per-sample Hessian traces, as :func:`batched_laplacian` (``basis_chunk_size``: the
    directions pushed at once).

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.batched_hessian_trace(lambda x: (x ** 2).sum())(torch.ones(4, 3))
        tensor([6., 6., 6., 6.])
    """
    return curvature_of(backend, "batched_hessian_trace", f, argnums, in_axes, has_aux, estimator, samples, key,
                        basis_chunk_size, impl, "trace", retired=chunk_size, batched=True)


def batched_hessian_diagonal(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0,
                             has_aux: bool = False, estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None,
                             key: Any = None, chunk_size: None = None, *,
                             impl: spec.Impl = "auto", basis_chunk_size: int | str | None = None) -> Callable[..., Any]:
    """Per-sample Hessian diagonals: ``vmap(hessian_diagonal(f, ...), in_axes)``,
    shape ``(B, *out, *in)``; options as in :func:`batched_laplacian` (``basis_chunk_size``:
    the directions pushed at once).

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.batched_hessian_diagonal(lambda x: (x ** 3).sum())(torch.ones(2, 3))
        tensor([[6., 6., 6.],
                [6., 6., 6.]])
    """
    return curvature_of(backend, "batched_hessian_diagonal", f, argnums, in_axes, has_aux, estimator, samples, key,
                        basis_chunk_size, impl, "diagonal", retired=chunk_size, batched=True)


def curvature_of(backend: Backend, name: str, f: Callable[..., Any], argnums: Any, in_axes: Any, has_aux: bool,
                 estimator: str, samples: int | None, key: Any, chunk_size: Any, impl: str, what: str, *,
                 retired: Any = None, batched: bool = False) -> Callable[..., Any]:
    """The public curvature transform ``name``: its options validated once (``retired``: the
    ``chunk_size`` a batched form refuses; ``batched``: a batched form, whose ``in_axes``
    must map an argument), then :func:`_curvature`."""
    option_checks.check_callable(name, f)
    if batched and in_axes is None:
        batch_axes.check_axis_sizes(name, {})  # maps nothing: the batched transforms' AxisError
    chunks = {"chunk_size": chunk_size} if in_axes is None else {"chunk_size": retired, "basis_chunk_size": chunk_size,
                                                                  "in_axes": in_axes}
    option_checks.validate_options(name, argnums=argnums, has_aux=has_aux, estimator=estimator, samples=samples, impl=impl,
                                   **chunks)
    if what == "diagonal" and estimator == "hutch++":
        option_checks.check_choice(name, "estimator", estimator, ("exact", "hutchinson"))
    if impl == "builtin" and estimator != "exact":
        raise errors.UnsupportedOptionError(
            name, "estimator='exact' with impl='builtin' (the trace or diagonal of the framework's own Hessian)",
            f"estimator={estimator!r}", "Use impl='composed' or 'auto' for the estimators.")
    value_checks.check_estimator_key(name, estimator, key, backend.arrays.is_random_key(key))
    return _curvature(backend, name, f, argnums, in_axes, has_aux, estimator, samples, key, chunk_size, impl, what)


@dataclasses.dataclass(frozen=True)
class CurvaturePlan:
    """What a Laplacian, Hessian trace, diagonal or biharmonic does for one argument
    signature (NOTE [plans] in :mod:`crossgrad.transforms.jacobians`): the route
    (``"taylor"``: second-order coefficients through the recorded program, NOTE [laplacian
    route], fourth-order ones for the biharmonic; ``"nested"``: Hessian-vector products,
    nested reverse-mode derivatives for the biharmonic; ``"hessian"``: the framework's own
    Hessian, ``impl="builtin"``; ``"outside"``: the single-point form mapped over the
    batch), the estimator, the batch size (None for one point), and why."""

    transform: str
    route: str
    estimator: str
    batch: int | None
    why: str

    def __str__(self) -> str:
        batch = "" if self.batch is None else f", {self.batch} samples"
        return f"{self.transform}: {self.route} route, estimator {self.estimator}{batch}; {self.why}"


@dataclasses.dataclass
class _Signature:
    """What a curvature transform knows of one argument signature: each differentiated
    leaf's batch axis and the batch size (None without ``in_axes``), the route that needs no
    recording and why, the function that route runs (``"outside"``, ``"hessian"``) and (the
    ``"hessian"`` route) the output's structure once f has run."""

    axes: list[int | None] | None
    batch: int | None
    route: str
    why: str
    structure: Any = None
    run: Callable[..., Any] | None = None  # the "outside" and "hessian" routes' function, made with the record


@dataclasses.dataclass(frozen=True)
class _Options:
    """A curvature transform's options, validated: what its routes read."""

    backend: Backend
    name: str
    f: Callable[..., Any]
    argnums: Any
    in_axes: Any
    has_aux: bool
    estimator: str
    samples: int | None
    key: Any
    chunk_size: Any
    impl: str
    what: str
    prechecked: bool = False  # the transform this one is part of checks each signature first


def _decide(o: _Options, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> _Signature:
    """A signature's checks and the route that needs no recording (``"outside"``,
    ``"hessian"``, or ``"composed"``: Taylor or nested, as :func:`taylor_route` says)."""
    call = Call(o.name, o.backend, o.f, args, kwargs, o.argnums, o.has_aux, checked=o.prechecked)
    axes: list[int | None] | None = None
    batch: int | None = None
    why = None
    if o.in_axes is not None:
        axes, batch = call.batch_layout(o.in_axes)
        why = ("a differentiated argument shared by the batch" if None in axes else "an empty batch" if batch == 0
               else None if policy.batched_curvature_inside(o.backend.name, o.estimator) else
               f"policy.batched_curvature_inside: the {o.estimator} estimator on {o.backend.name}")
    if why is not None:
        return _Signature(axes, batch, "outside", why + ": vmap of the single-point form", run=_route(o, "outside"))
    if o.impl == "builtin":
        return _Signature(axes, batch, "hessian", f"impl='builtin': the {o.what} of the framework's own Hessian "
                          "(NOTE [laplacian route])", run=_route(o, "hessian"))
    return _Signature(axes, batch, "composed", "")


def _route(o: _Options, which: str) -> Callable[..., Any]:
    """The vmap of the single-point form (``"outside"``) or the framework's own (per-sample)
    Hessian (``"hessian"``)."""
    # The batched transform checked the signature (_decide): what it maps does not again.
    if which == "outside":  # the vmap of the single-point form: it has no batched form of its own
        one = _curvature(o.backend, o.name, o.f, o.argnums, None, o.has_aux, o.estimator, o.samples, o.key,
                         o.chunk_size, o.impl, o.what, has_batched_form=False, prechecked=True)
        return vmap_of(o.backend, o.name, one, o.in_axes, 0, None, "auto", prechecked=True)
    hessian = hessian_of(o.backend, o.name, o.f, o.argnums, o.has_aux, "auto", None, "builtin", prechecked=True)
    return hessian if o.in_axes is None else vmap_of(o.backend, o.name, hessian, o.in_axes, 0, None, "builtin",
                                                     prechecked=True)


def _curvature(backend: Backend, name: str, f: Callable[..., Any], argnums: Any, in_axes: Any, has_aux: bool,
               estimator: str, samples: int | None, key: Any, chunk_size: Any, impl: str,
               what: str, has_batched_form: bool = True, prechecked: bool = False) -> Callable[..., Any]:
    """The trace (``what="trace"``) or diagonal of ``f``'s Hessian, per sample where
    ``in_axes`` is given; options already validated (``prechecked``: and each signature
    checked by the transform this one is part of)."""
    o = _Options(backend, name, f, argnums, in_axes, has_aux, estimator, samples, key, chunk_size, impl, what,
                 prechecked)
    # f over the batch; its calls follow the signature's checks (_decide), so it does not repeat them.
    g = vmap_of(backend, name, f, in_axes, 0, None, "auto", prechecked=True) if in_axes is not None else f
    signatures = Memo()  # the one per-signature cache: a _Signature per argument signature
    verdicts = taylor_check.verdicts_of(f)  # per signature: whether the Taylor route agreed with a Hessian-vector product

    def known(args: tuple[Any, ...], kwargs: dict[Any, Any]) -> tuple[Any, _Signature]:
        """The Taylor check's verdict memo and key, and what is known of the signature
        (decided once)."""
        sig = Memo.key(args)
        seen: _Signature = signatures.get(sig) or signatures.put(sig, _decide(o, args, kwargs))
        verdict = (verdicts, (backend.name, repr(argnums), repr(in_axes), has_aux, sig)) if impl == "auto" and \
            sig is not None else None
        return verdict, seen

    def transformed(*args: Any, **kwargs: Any) -> Any:
        verdict, seen = known(args, kwargs)
        if seen.route == "outside":
            return seen.run(*args, **kwargs)  # type: ignore[misc]
        call = Call(name, backend, g, args, kwargs, argnums, has_aux, checked=True)
        point = Point(backend, call, seen.axes if seen.axes is not None else [None] * len(call.primals), seen.batch)
        if seen.route == "composed":
            return composed(backend, name, call, point, what, estimator, samples or DEFAULT_SAMPLES, key, chunk_size,
                            verdict)
        if seen.structure is None:  # the output's structure, from one evaluation per signature
            call.flat(*call.primals)
            seen.structure = call.output_structure()
        call.out_def = seen.structure
        return via_hessian(backend, seen.run, has_aux, args, kwargs, what, point)  # type: ignore[arg-type]

    def plan(*args: Any, **kwargs: Any) -> CurvaturePlan:
        """The plan a call with these arguments follows (NOTE [plans]): f evaluated once to
        record its program, no derivative computed."""
        verdict, seen = known(args, kwargs)
        if seen.route != "composed":
            return CurvaturePlan(name, seen.route, estimator, seen.batch, seen.why)
        rec, why = taylor_route(backend, Call(name, backend, g, args, kwargs, argnums, has_aux, checked=True), verdict)
        return CurvaturePlan(name, "taylor" if rec is not None else "nested", estimator, seen.batch, why)

    transformed.plan = plan  # type: ignore[attr-defined]
    if in_axes is None and has_batched_form and estimator == "exact" and not has_aux and \
            policy.vmap_takes_batched_curvature(backend.name):
        transformed._crossgrad_batched = partial(_batched_form, o)  # type: ignore[attr-defined]
    return transformed


def _batched_form(o: _Options, framework: str, axes: Any) -> Callable[..., Any] | None:
    """What vmap of a single-point transform takes: its batched form (NOTE [vmap of
    curvature]), for its own framework."""
    if framework != o.backend.name:
        return None
    return _curvature(o.backend, o.name, o.f, o.argnums, axes, o.has_aux, o.estimator, o.samples, o.key, o.chunk_size,
                      o.impl, o.what)
