"""The spec: the catalog of transforms and the choices their options take, one for both backends.

This module imports no framework and holds no code: the names (:data:`TRANSFORMS`,
:data:`TOOLS`), which transforms evaluate at once, take randomness, carry plans or are
sparse or batched, and the option choices as ``Literal`` types (a type checker reads them;
the tuples beside them are what the checks compare with).  The top level, both
namespaces, ``__all__`` and the typed signatures are made from this catalog.  The checks
live in rooms of their own, shared by both backends so a mistake raises the same
:mod:`crossgrad.errors` exception with the same message on torch and on jax: a
transform's options when it is made (:mod:`crossgrad.option_checks`), what a call is given
and returns (:mod:`crossgrad.value_checks`), the batch axes (:mod:`crossgrad.batch_axes`).

Conventions every backend follows:

* JAX-style names and argument order; ``value_and_grad`` returns ``(value, grads)``.
* Output nesting as in JAX: the output pytree outside, the ``argnums`` tuple inside.
  An int ``argnums`` gives one entry, a tuple gives a tuple; a Hessian with a tuple
  ``argnums`` has blocks ``H[i][j]``.
* Pytrees are tuples, lists, dicts, namedtuples and the classes registered with the
  framework's pytree registry; dict keys are visited in the framework's order (jax:
  sorted; torch: insertion), NOTE [pytree conventions] in :mod:`crossgrad.pytree`.
* ``chunk_size`` bounds how many basis vectors (Jacobian, Hessian and curvature
  transforms: directions) or batch elements (``vmap``) go through the vectorized
  computation at once.  The batched transforms have both kinds and a name for each:
  ``batch_chunk_size`` (samples at once) and ``basis_chunk_size`` (basis vectors or
  directions per sample); they refuse ``chunk_size``
  (:func:`crossgrad.option_checks.check_retired_chunk_size`).
  ``"auto"`` sizes the chunks from a memory budget and retries a chunk that runs out of
  memory in halves (:mod:`crossgrad.memory`, NOTE [auto chunks] in
  :mod:`crossgrad.transforms.chunking`).
* ``impl`` selects the implementation: ``"builtin"`` (the framework's own transform,
  or its documented recipe), ``"composed"`` (crossgrad's composition from vjp, jvp and
  vmap) or ``"auto"`` (the fastest one that supports the options given).
"""

from __future__ import annotations

from typing import Literal, get_args

# Each transform, and the module of :mod:`crossgrad.transforms` that holds it (the
# namespaces bind it from there; ``python -m crossgrad.testing.signatures`` writes their
# attributes and the top level's typed signatures from this table).
TRANSFORM_ROOMS: dict[str, str] = {
    "grad": "derivatives",
    "value_and_grad": "derivatives",
    "vjp": "derivatives",
    "jvp": "derivatives",
    "linearize": "derivatives",
    "vmap": "vectorize",
    "jacrev": "jacobians",
    "jacfwd": "jacobians",
    "jacobian": "jacobians",
    "hessian": "hessians",
    "hvp": "hessian_vector",
    "batched_jacobian": "batched",
    "batched_hessian": "batched",
    "laplacian": "curvature",
    "hessian_trace": "curvature",
    "hessian_diagonal": "curvature",
    "batched_laplacian": "curvature",
    "batched_hessian_trace": "curvature",
    "batched_hessian_diagonal": "curvature",
    "weighted_laplacian": "weighted",
    "batched_weighted_laplacian": "weighted",
    "biharmonic": "biharmonics",
    "batched_biharmonic": "biharmonics",
    "hessian_operator": "operators",
    "ggn_operator": "gauss_newton",
    "jacobian_sparsity": "sparse",
    "hessian_sparsity": "sparse",
    "sparse_jacobian": "sparse",
    "sparse_hessian": "sparse",
    "batched_sparse_jacobian": "sparse",
    "batched_sparse_hessian": "sparse",
}
TRANSFORMS: tuple[str, ...] = tuple(TRANSFORM_ROOMS)
# The transforms with a ``randomness`` option (vmap's: one draw per sample or one for the batch).
TAKE_RANDOMNESS = ("vmap", "batched_jacobian", "batched_hessian")
# The sparse transforms: their results carry ``.plan(*args)`` (NOTE [sparse plans]).
SPARSE = ("sparse_jacobian", "sparse_hessian", "batched_sparse_jacobian", "batched_sparse_hessian")
# The batched transforms: ``batch_chunk_size`` and ``basis_chunk_size`` in place of ``chunk_size``.
BATCHED = tuple(t for t in TRANSFORMS if t.startswith("batched_"))
# The batched transforms that map the per-sample transform over the batch (a basis chunk's
# memory is not known under that vmap).
MAPPED = ("batched_jacobian", "batched_hessian", "batched_sparse_jacobian", "batched_sparse_hessian")
# Not transforms of derivatives, but in both namespaces with one signature too.
TOOL_ROOMS: dict[str, str] = {"jit": "compiled", "check_grads": "checking"}
TOOLS: tuple[str, ...] = tuple(TOOL_ROOMS)
# The transforms whose results carry ``.plan(*args)``, the plan a call follows (NOTE [plans]),
# which ``crossgrad.explain`` returns (the immediate ones, the operators and check_grads
# included: ``explain(cg.vjp, f, *primals)``): every transform and tool.
PLANNED = (*TRANSFORMS, *TOOLS)
# The transforms that evaluate at once (the others return a function), and the parameters
# that hold their arrays: where the top level finds the backend and the namespace finds the
# caller's arrays to shield.
EVALUATE_AT_ONCE: dict[str, tuple[str, ...]] = {
    "vjp": ("primals",), "jvp": ("primals", "tangents"), "linearize": ("primals",), "hvp": ("primals", "tangents"),
    "hessian_operator": ("primals",), "ggn_operator": ("primals",), "check_grads": ("args",),
}
Mode = Literal["auto", "rev", "fwd", "loop"]
MODES: tuple[str, ...] = get_args(Mode)
Strategy = Literal["auto", "fwd-rev", "rev-rev", "rev-fwd", "fwd-fwd", "loop"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
Impl = Literal["auto", "builtin", "composed"]
IMPLS: tuple[str, ...] = get_args(Impl)
# What a random operation under vmap does: refused, one draw per batch element, one for all.
Randomness = Literal["error", "different", "same"]
RANDOMNESS: tuple[str, ...] = get_args(Randomness)
# How traces and diagonals of Hessians are computed (exactly, or estimated from random directions).
Estimator = Literal["exact", "hutchinson", "hutch++"]
ESTIMATORS: tuple[str, ...] = get_args(Estimator)
# The transforms whose estimate is not a trace (diagonals, the biharmonic, trace(C H)) take these two.
ExactOrHutchinson = Literal["exact", "hutchinson"]
# NumPy's casting rules, for writing results into a sink (stream_to).
CASTINGS = ("no", "equiv", "safe", "same_kind", "unsafe")
# How jit compiles (NOTE [jit routes]); each backend has a subset (``builtins.JIT_ROUTES``).
JitRoute = Literal["auto", "measure", "compile", "trace", "trace-compile", "trace-cudagraph"]
JIT_ROUTES: tuple[str, ...] = get_args(JitRoute)

Argnums = int | tuple[int, ...] | list[int]
