"""crossgrad: Jacobians and Hessians of (batched) functions, on torch and on jax, one API.

    >>> import crossgrad as cg
    >>> cg.backend("torch")            # or cg.torch: every transform, torch.func underneath
    <crossgrad namespace for torch>

The top-level transforms (``cg.grad``, ``cg.hessian``, ``cg.batched_jacobian`` ...) pick
the backend at call time from the arrays they are given; mixing torch tensors and
jax arrays in one call is an error.  ``import crossgrad`` imports neither framework.

Around the transforms: ``cg.jit`` (the framework's compiler, eager when it fails),
``cg.memory_budget`` (bounds ``chunk_size="auto"``), ``cg.stream`` / ``cg.stream_to``
(a batched transform chunk by chunk, into a sink), and ``devices=`` on ``vmap`` and the
batched transforms (the batch spread over a jax mesh or torch.distributed ranks).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crossgrad import errors, option_checks, spec
from crossgrad.backends import framework_of, infer_backend
from crossgrad.errors import (
    ArgnumsError,
    ArgnumsTypeError,
    AxisError,
    AxisSizeError,
    BackendInferenceError,
    BackendUnavailableError,
    ChunkError,
    CompileFallbackWarning,
    ComplexOutputError,
    ControlFlowError,
    CrossgradError,
    CrossgradTypeError,
    CrossgradValueError,
    CustomRuleError,
    ForeignFunctionError,
    GradientCheckError,
    GraphInputError,
    HasAuxError,
    InputDtypeError,
    InputMutationError,
    MixedFrameworksError,
    NonScalarOutputError,
    OptionError,
    OptionTypeError,
    OutputError,
    RandomnessError,
    SampleShapeError,
    SparsityCheckError,
    SparsityPatternError,
    SparsitySupportError,
    SparsityWarning,
    StructureError,
    UnknownOptionError,
    UnsupportedOptionError,
    X64DisabledError,
)
from crossgrad.interop import to_jax, to_torch
from crossgrad.memory import memory_budget
from crossgrad.streaming import Chunk, stream, stream_to

__version__ = "0.1.0"

_namespaces: dict[str, Namespace] = {}


def backend(name: str) -> Namespace:
    """The namespace of every transform on one backend: ``"torch"`` or ``"jax"``.

    Raises :class:`BackendUnavailableError` (naming the extra to install) when the
    framework is missing.
    """
    if name not in _namespaces:
        from crossgrad.backends import load
        from crossgrad.transforms.namespace import Namespace

        _namespaces[name] = Namespace(load(name))
    return _namespaces[name]


def explain(transform: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The plan ``transform`` (a crossgrad transform's result) follows on these arguments,
    without computing its result: which mode and route run, with which chunks, and why
    (NOTE [plans] in :mod:`crossgrad.transforms.jacobians`).

    Every transform has plans: ``grad``, ``value_and_grad``, ``vjp``, ``jvp`` and
    ``linearize`` (``DerivativePlan``), ``hvp`` (``HvpPlan``), ``vmap`` (``VmapPlan``),
    ``jacrev``, ``jacfwd``, ``jacobian`` (``JacobianPlan``), ``hessian``
    (``HessianPlan``), ``batched_jacobian`` and ``batched_hessian``
    (``BatchedJacobianPlan``, ``BatchedHessianPlan``), the Laplacians, Hessian traces,
    diagonals and biharmonics (``CurvaturePlan``: their program is recorded, f evaluated
    once, no derivative computed), the weighted Laplacians (``WeightedPlan``), the sparse
    transforms and the sparsity detectors (``SparsePlan``), the two operators
    (``OperatorPlan``: their products' route; also ``operator.plan()``), ``check_grads``
    (``GradientCheckPlan``: the step and tolerances it compares with) and ``jit``
    (``JitPlan``: the route a signature runs by, and why).  A transform that evaluates at
    once is explained with its arguments: ``cg.explain(cg.vjp, f, x)``.

    Example:
        >>> import torch, crossgrad as cg
        >>> W = torch.ones(2048, 32)
        >>> cg.explain(cg.jacobian(lambda x: torch.tanh(W @ x)), torch.zeros(32)).mode
        'fwd'
    """
    plan = getattr(transform, "plan", None)
    if plan is None:
        raise errors.OptionTypeError(
            "explain", f"a transform with plans ({', '.join(spec.PLANNED)}), as crossgrad made it",
            f"{getattr(transform, '__name__', type(transform).__name__)!r}, which has no plan",
            "Pass the function a crossgrad transform returned, e.g. cg.explain(cg.jacobian(f), x), or a transform "
            "that evaluates at once with its arguments, cg.explain(cg.vjp, f, x).")
    return plan(*args, **kwargs)


def __getattr__(name: str) -> Any:
    if name in ("torch", "jax"):
        return backend(name)
    if name == "Pattern":  # NumPy and scipy.sparse are imported with the first sparse transform
        from crossgrad.sparsity.patterns import Pattern

        return Pattern
    if name == "SparsePlan":
        from crossgrad.transforms.sparse import SparsePlan

        return SparsePlan
    raise AttributeError(f"module 'crossgrad' has no attribute {name!r}")



def _method_signature(name: str) -> inspect.Signature:
    from crossgrad.transforms.namespace import public

    return public(name).signature


def _deferred(name: str) -> Callable[..., Any]:
    """A top-level transform that picks its backend when the transformed function is called."""

    def transform(f: Callable[..., Any], *options: Any, **named: Any) -> Callable[..., Any]:
        if named:
            option_checks.check_keywords(name, _method_signature(name), named)
        bound = _method_signature(name).bind(f, *options, **named)
        option_checks.check_callable(name, f)
        option_checks.validate_options(name, **{k: v for k, v in bound.arguments.items() if k != "f"})
        made: dict[str, Callable[..., Any]] = {}

        def made_for(b: str) -> Callable[..., Any]:
            if b not in made:
                with option_checks.options_checked():  # checked above, when this transform was made
                    made[b] = getattr(backend(b), name)(f, *options, **named)
            return made[b]

        @functools.wraps(f)
        def transformed(*args: Any, **kwargs: Any) -> Any:
            if not kwargs and len(made) == 1:  # the steady call: positional arrays of the one framework made
                for b, fn in made.items():
                    if args and all(framework_of(a) == b for a in args):
                        return fn(*args)
            return made_for(infer_backend(name, args, kwargs))(*args, **kwargs)

        def batched_form(framework: str, axes: Any) -> Callable[..., Any] | None:
            own = getattr(made_for(framework), "_crossgrad_batched", None)  # NOTE [vmap of curvature]
            return None if own is None else own(framework, axes)

        transformed._crossgrad_batched = batched_form  # type: ignore[attr-defined]
        if name in spec.PLANNED:
            def plan(*args: Any, **kwargs: Any) -> Any:
                """The plan a call with these arguments follows (NOTE [plans]); nothing is computed."""
                return made_for(infer_backend(name, args, kwargs)).plan(*args, **kwargs)  # type: ignore[attr-defined]

            transformed.plan = plan  # type: ignore[attr-defined]
        if name in spec.SPARSE:
            def entries(*args: Any, **kwargs: Any) -> Any:
                made = made_for(infer_backend(name, args, kwargs))
                return made._crossgrad_finish[0](*args, **kwargs)  # type: ignore[attr-defined]

            def finish(values: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
                made = made_for(infer_backend(name, args, kwargs))
                return made._crossgrad_finish[1](values, args, kwargs)  # type: ignore[attr-defined]

            transformed._crossgrad_finish = (entries, finish)  # type: ignore[attr-defined]  # NOTE [sparse results under jit]
        return transformed

    return _adopt(transform, name)


def _immediate(name: str) -> Callable[..., Any]:
    """A top-level transform that evaluates at once (``spec.EVALUATE_AT_ONCE``): the backend
    comes from the arrays in the parameters the table names."""
    holders = spec.EVALUATE_AT_ONCE[name]

    def bound_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The namespace's transform for the framework of the arrays in ``args``."""
        if kwargs:
            option_checks.check_keywords(name, _method_signature(name), kwargs)
        bound = _method_signature(name).bind(*args, **kwargs)
        arrays = tuple(bound.arguments.get(p, ()) for p in holders)
        return getattr(backend(infer_backend(name, *arrays)), name)

    def transform(*args: Any, **kwargs: Any) -> Any:
        return bound_for(args, kwargs)(*args, **kwargs)

    if name in spec.PLANNED:
        def plan(*args: Any, **kwargs: Any) -> Any:
            """The plan a call with these arguments follows (NOTE [plans]); nothing is computed."""
            return bound_for(args, kwargs).plan(*args, **kwargs)

        transform.plan = plan  # type: ignore[attr-defined]
    return _adopt(transform, name)


def _top_level(name: str) -> Callable[..., Any]:
    """``name`` at the top level: evaluated at once or deferred, as ``spec.EVALUATE_AT_ONCE`` says."""
    return _immediate(name) if name in spec.EVALUATE_AT_ONCE else _deferred(name)


def _adopt(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    from crossgrad.transforms.namespace import public

    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = public(name).__doc__
    fn.__signature__ = _method_signature(name)  # type: ignore[attr-defined]
    return fn


# BEGIN typed signatures (python -m crossgrad.testing.signatures writes this block)
if TYPE_CHECKING:
    from crossgrad.sparsity.patterns import Pattern
    from crossgrad.transforms.gauss_newton import GaussNewtonOperator
    from crossgrad.transforms.namespace import Namespace
    from crossgrad.transforms.operators import HessianOperator

    torch: Namespace
    jax: Namespace

    def grad(f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, *, impl: spec.Impl = "auto") -> Callable[..., Any]: ...
    def value_and_grad(f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, *, impl: spec.Impl = "auto") -> Callable[..., Any]: ...
    def vjp(f: Callable[..., Any], *primals: Any, has_aux: bool = False, impl: spec.Impl = "auto") -> tuple[Any, ...]: ...
    def jvp(f: Callable[..., Any], primals: Any, tangents: Any, has_aux: bool = False, *, impl: spec.Impl = "auto") -> tuple[Any, ...]: ...
    def linearize(f: Callable[..., Any], *primals: Any, impl: spec.Impl = "auto") -> tuple[Any, Callable[..., Any]]: ...
    def vmap(f: Callable[..., Any], in_axes: Any = 0, out_axes: Any = 0, chunk_size: int | str | None = None, *, impl: spec.Impl = "auto", devices: Any = None, gather: bool = False, randomness: spec.Randomness = "error") -> Callable[..., Any]: ...
    def jacrev(f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]: ...
    def jacfwd(f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]: ...
    def jacobian(f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, mode: spec.Mode = "auto", chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]: ...
    def hessian(f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, strategy: spec.Strategy = "auto", chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]: ...
    def hvp(f: Callable[..., Any], primals: Any, tangents: Any, argnums: spec.Argnums = 0, *, impl: spec.Impl = "auto") -> Any: ...
    def batched_jacobian(f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0, has_aux: bool = False, mode: spec.Mode = "auto", chunk_size: None = None, *, impl: spec.Impl = "auto", devices: Any = None, gather: bool = False, randomness: spec.Randomness = "error", batch_chunk_size: int | str | None = None, basis_chunk_size: int | None = None) -> Callable[..., Any]: ...
    def batched_hessian(f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0, has_aux: bool = False, strategy: spec.Strategy = "auto", chunk_size: None = None, *, impl: spec.Impl = "auto", devices: Any = None, gather: bool = False, randomness: spec.Randomness = "error", batch_chunk_size: int | str | None = None, basis_chunk_size: int | None = None) -> Callable[..., Any]: ...
    def laplacian(f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, estimator: spec.Estimator = "exact", samples: int | None = None, key: Any = None, chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]: ...
    def hessian_trace(f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, estimator: spec.Estimator = "exact", samples: int | None = None, key: Any = None, chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]: ...
    def hessian_diagonal(f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None, chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]: ...
    def batched_laplacian(f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0, has_aux: bool = False, estimator: spec.Estimator = "exact", samples: int | None = None, key: Any = None, chunk_size: None = None, *, impl: spec.Impl = "auto", basis_chunk_size: int | str | None = None) -> Callable[..., Any]: ...
    def batched_hessian_trace(f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0, has_aux: bool = False, estimator: spec.Estimator = "exact", samples: int | None = None, key: Any = None, chunk_size: None = None, *, impl: spec.Impl = "auto", basis_chunk_size: int | str | None = None) -> Callable[..., Any]: ...
    def batched_hessian_diagonal(f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0, has_aux: bool = False, estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None, chunk_size: None = None, *, impl: spec.Impl = "auto", basis_chunk_size: int | str | None = None) -> Callable[..., Any]: ...
    def weighted_laplacian(f: Callable[..., Any], coefficients: Any, argnums: int = 0, estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None, chunk_size: int | str | None = None) -> Callable[..., Any]: ...
    def batched_weighted_laplacian(f: Callable[..., Any], coefficients: Any, argnums: int = 0, in_axes: Any = 0, estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None, *, basis_chunk_size: int | None = None) -> Callable[..., Any]: ...
    def biharmonic(f: Callable[..., Any], argnums: spec.Argnums = 0, estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None, chunk_size: int | None = None) -> Callable[..., Any]: ...
    def batched_biharmonic(f: Callable[..., Any], argnums: spec.Argnums = 0, in_axes: Any = 0, estimator: spec.ExactOrHutchinson = "exact", samples: int | None = None, key: Any = None, *, basis_chunk_size: int | None = None) -> Callable[..., Any]: ...
    def hessian_operator(f: Callable[..., Any], *primals: Any, argnums: spec.Argnums = 0) -> HessianOperator: ...
    def ggn_operator(model: Callable[..., Any], loss: Callable[..., Any], *primals: Any, argnums: spec.Argnums = 0) -> GaussNewtonOperator: ...
    def jacobian_sparsity(f: Callable[..., Any], argnums: int = 0) -> Callable[..., Pattern]: ...
    def hessian_sparsity(f: Callable[..., Any], argnums: int = 0) -> Callable[..., Pattern]: ...
    def sparse_jacobian(f: Callable[..., Any], argnums: int = 0, *, sparsity: Any = None, mode: spec.Mode = "auto", format: str = "coo", chunk_size: int | str | None = None, check: bool = False) -> Callable[..., Any]: ...
    def sparse_hessian(f: Callable[..., Any], argnums: int = 0, *, sparsity: Any = None, format: str = "coo", chunk_size: int | str | None = None, check: bool = False) -> Callable[..., Any]: ...
    def batched_sparse_jacobian(f: Callable[..., Any], argnums: int = 0, in_axes: Any = 0, *, sparsity: Any = None, mode: spec.Mode = "auto", format: str = "coo", basis_chunk_size: int | None = None, check: bool = False) -> Callable[..., Any]: ...
    def batched_sparse_hessian(f: Callable[..., Any], argnums: int = 0, in_axes: Any = 0, *, sparsity: Any = None, format: str = "coo", basis_chunk_size: int | None = None, check: bool = False) -> Callable[..., Any]: ...
    def jit(f: Callable[..., Any], check: bool = False, options: dict[Any, Any] | None = None, *, route: spec.JitRoute = "auto") -> Callable[..., Any]: ...
    def check_grads(f: Callable[..., Any], args: tuple[Any, ...], order: int = 1, *, eps: float | None = None, rtol: float | None = None, seed: int = 0) -> None: ...
else:
    for _name in (*spec.TRANSFORMS, *spec.TOOLS):
        globals()[_name] = _top_level(_name)
# END typed signatures


__all__ = [
    "backend", "explain", "infer_backend", "memory_budget", "stream", "stream_to", "Chunk", "ChunkError", "to_jax", "to_torch", "errors", *spec.TRANSFORMS, "jit",
    "CompileFallbackWarning", "ComplexOutputError", "GradientCheckError", "check_grads",
    "ArgnumsError", "ArgnumsTypeError", "AxisError", "AxisSizeError", "BackendInferenceError", "ControlFlowError",
    "BackendUnavailableError", "CrossgradError", "CrossgradTypeError", "CrossgradValueError", "CustomRuleError",
    "GraphInputError",
    "HasAuxError",
    "InputDtypeError", "InputMutationError", "MixedFrameworksError", "NonScalarOutputError", "OptionError", "OptionTypeError",
    "OutputError", "RandomnessError", "StructureError", "UnsupportedOptionError", "X64DisabledError",
    "ForeignFunctionError", "SampleShapeError", "UnknownOptionError",
    "SparsityCheckError", "SparsityPatternError", "SparsitySupportError", "SparsityWarning", "Pattern", "SparsePlan",
]
