"""The kinds of benchmark case, one registry: what a kind computes without crossgrad, how
crossgrad's transform of it is called, which of its variants are timed, and how many basis
directions one sample has.  ``implementations.py`` builds every case's rows from the kind
alone, ``conftest.py`` reads the basis from it; adding a kind is one :class:`Kind` in
:data:`KINDS` (see ``benchmarks/README.md``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import crossgrad as cg
from crossgrad import pytree

STRATEGIES = ("fwd-rev", "rev-rev", "rev-fwd", "fwd-fwd")


def framework_transforms(name: str) -> dict[str, Callable]:
    """The raw framework transforms a user would call, under one set of names."""
    if name == "torch":
        import torch.func as tf

        return {"jacrev": tf.jacrev, "jacfwd": tf.jacfwd, "hessian": tf.hessian, "grad": tf.grad, "jvp": tf.jvp,
                "vmap": lambda f, axes: tf.vmap(f, in_dims=axes)}
    import jax

    return {"jacrev": jax.jacrev, "jacfwd": jax.jacfwd, "hessian": jax.hessian, "grad": jax.grad, "jvp": jax.jvp,
            "vmap": lambda f, axes: jax.vmap(f, in_axes=axes)}


def _eye_like(framework: str, n: int, like: Any) -> Any:
    if framework == "torch":
        import torch

        return torch.eye(n, dtype=like.dtype, device=like.device)
    import jax.numpy as jnp

    return jnp.eye(n, dtype=like.dtype)


def _raw_derivative(transform: str, batched: bool) -> Callable[[str, Callable, Any, str], Callable]:
    """The framework's Jacobian (``transform="jac"``, the variant its mode) or Hessian, mapped
    over the batch for a batched kind."""

    def raw(framework: str, f: Callable, problem: Any, variant: str) -> Callable:
        fw = framework_transforms(framework)
        fn = fw[transform + variant](f, argnums=problem.argnums)
        return fw["vmap"](fn, problem.in_axes) if batched else fn

    return raw


def _raw_hvp(framework: str, f: Callable, problem: Any, variant: str) -> Callable:
    fw = framework_transforms(framework)
    return lambda p, *rest: fw["jvp"](lambda q: fw["grad"](f)(q, *rest), (p,), (p,))[1]


def _raw_laplacian(framework: str, f: Callable, problem: Any, variant: str) -> Callable:
    """The nested baseline: the trace of the framework's batched Hessian."""
    fw = framework_transforms(framework)
    hess = fw["vmap"](fw["hessian"](f, argnums=problem.argnums), problem.in_axes)

    def trace(*a: Any) -> Any:
        h = hess(*a)
        return (h * _eye_like(framework, h.shape[-1], h)).sum((-2, -1))

    return trace


def _per_sample_args(problem: Any) -> tuple[list[Any], int]:
    """One sample's arguments (torch, float32) and the batch size (1 unbatched)."""
    from crossgrad.testing import frameworks

    shapes = [np.shape(a) for a in problem.inputs(np.random.default_rng(0))]
    args = frameworks.convert(problem.inputs(np.random.default_rng(0)), "torch", "float32")
    if problem.in_axes is None:
        return list(args), 1
    axes = problem.in_axes if isinstance(problem.in_axes, tuple) else (problem.in_axes,) * len(args)
    batch = next(s[0] for s, ax in zip(shapes, axes) if ax is not None)
    return [a if ax is None else a[0] for a, ax in zip(args, axes)], batch


def output_basis(problem: Any) -> int:
    """A Jacobian's basis: one sample's output elements."""
    from crossgrad.testing import frameworks

    args, _ = _per_sample_args(problem)
    return int(problem.build(frameworks.ops("torch"))(*args).numel())


def input_basis(problem: Any) -> int:
    """A Hessian's (and a Laplacian's) basis: the differentiated input's elements of one sample."""
    args, _ = _per_sample_args(problem)
    return sum(int(np.prod(np.shape(leaf))) for leaf in pytree.leaves(args[problem.argnums]))


def batch_of(problem: Any) -> int:
    return _per_sample_args(problem)[1]


@dataclass(frozen=True)
class Kind:
    """One kind of case.

    ``raw(framework, f, problem, variant)`` is the framework's own call (one per entry of
    ``raw_variants``: ``(label, variant)``); ``variants`` are crossgrad's timed options
    besides ``auto``, ``(label, options, tag)``; ``chunked`` adds ``auto`` with a quarter of
    the basis per chunk; ``loop`` adds crossgrad's loop (and, on torch, the notebook's) on
    cases that allow it; ``basis(problem)`` counts one sample's basis directions (None: one).
    """

    name: str
    raw: Callable[[str, Callable, Any, str], Callable]
    raw_variants: tuple[tuple[str, str], ...]
    variants: tuple[tuple[str, dict[str, Any], str], ...]
    basis: Callable[[Any], int] | None
    chunked: bool = True
    loop: bool = False
    batched: bool = False
    call: Callable[..., Callable] | None = field(default=None)  # crossgrad's call, where not the plain one

    def transform(self, framework: str, f: Callable, problem: Any, **options: Any) -> Callable:
        """crossgrad's transform of this kind with ``options``, for one problem."""
        ns = cg.backend(framework)
        if self.call is not None:
            return self.call(ns, f, problem, **options)
        if self.batched:
            # A batched transform names its per-sample chunks basis_chunk_size.
            named = {("basis_chunk_size" if k == "chunk_size" else k): v for k, v in options.items()}
            return getattr(ns, self.name)(f, problem.argnums, problem.in_axes, **named)
        return getattr(ns, self.name)(f, problem.argnums, **options)


def _hvp_call(ns: Any, f: Callable, problem: Any, **options: Any) -> Callable:
    # The direction is the parameter pytree itself: no constant is captured.
    return lambda *a: ns.hvp(f, a, (a[0],), problem.argnums, **options)


_JACOBIAN_VARIANTS = tuple((f"cg {m} {impl}", {"mode": m, "impl": impl}, impl)
                           for m in ("rev", "fwd") for impl in ("builtin", "composed"))
_HESSIAN_VARIANTS = (("cg fwd-rev builtin", {"strategy": "fwd-rev", "impl": "builtin"}, "builtin"),
                     *((f"cg {s} composed", {"strategy": s, "impl": "composed"}, "composed") for s in STRATEGIES))
_IMPL_VARIANTS = tuple((f"cg {impl}", {"impl": impl}, impl) for impl in ("builtin", "composed"))

KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("jacobian", _raw_derivative("jac", False), (("raw rev", "rev"), ("raw fwd", "fwd")), _JACOBIAN_VARIANTS,
         output_basis, loop=True),
    Kind("batched_jacobian", _raw_derivative("jac", True), (("raw rev", "rev"), ("raw fwd", "fwd")),
         _JACOBIAN_VARIANTS, output_basis, loop=True, batched=True),
    Kind("hessian", _raw_derivative("hessian", False), (("raw hessian", ""),), _HESSIAN_VARIANTS, input_basis),
    Kind("batched_hessian", _raw_derivative("hessian", True), (("raw hessian", ""),), _HESSIAN_VARIANTS,
         input_basis, batched=True),
    Kind("hvp", _raw_hvp, (("raw jvp(grad)", ""),), _IMPL_VARIANTS, None, chunked=False, call=_hvp_call),
    Kind("batched_laplacian", _raw_laplacian, (("raw trace(hessian)", ""),), _IMPL_VARIANTS, input_basis,
         batched=True),
)}
