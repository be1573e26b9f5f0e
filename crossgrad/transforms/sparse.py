"""Sparse Jacobians and Hessians: the pattern detected from the function, colored, computed
in one product per color and returned sparse.

NOTE [sparse plans]
On the first call with a new argument signature a sparse transform prepares, once, a
:class:`SparsePlan`: the pattern (detected from the program the backend records: NOTE
[dependency propagation] in :mod:`crossgrad.sparsity.propagation`; or the one the user
gave), its coloring (NOTE [colorings] in :mod:`crossgrad.sparsity.coloring`), the seed
vectors and, for every entry, where it is read from the compressed products.  Every call
then computes only: one JVP (forward), VJP (reverse) or HVP (Hessian) per color, pushed
through ``vmap`` (``chunk_size`` colors at a time), one gather, and the framework's sparse
constructor.  Under ``cg.jit`` the plan is made while tracing (it needs shapes only) and
its indices are constants of the compiled program.  ``transform.plan(*args)`` returns the
plan without computing anything: the pattern, the number of colors, the density.

Why one module of ~470 lines: the four sparse transforms and the two sparsity
transforms share one plan (SparsePlan) and the compressed products it schedules; the
framework-free core is :mod:`crossgrad.sparsity`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crossgrad import batch_axes, errors, option_checks, pytree, spec, tolerances, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms import chunking, hessian_vector

if TYPE_CHECKING:
    from crossgrad.sparsity.coloring import Coloring
    from crossgrad.sparsity.patterns import Pattern

FORMATS = ("coo", "csr", "dense", "values", "scipy")
SPARSE_MODES = ("auto", "fwd", "rev")


@dataclass(frozen=True, eq=False)
class SparsePlan:
    """What a sparse transform prepared for one argument signature.

    ``pattern``: where the matrix may be non-zero (``(outputs, inputs)``, both flattened);
    ``coloring``: the colors and the mode of the products; ``detected``: whether the pattern
    came from the function (else the user gave it); ``unruled``: operations the detection met
    without a rule (treated as dense in their operands); ``seconds``: what preparing took.
    """

    transform: str
    pattern: Pattern
    coloring: Coloring
    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    detected: bool
    unruled: tuple[str, ...]
    seconds: float
    _arrays: dict[Any, Any] = field(default_factory=dict, repr=False)

    @property
    def colors(self) -> int:
        """The number of products one call computes."""
        return self.coloring.count

    @property
    def mode(self) -> str:
        return self.coloring.mode

    def __repr__(self) -> str:
        m, n = self.pattern.shape
        how = "detected" if self.detected else "given"
        return (f"SparsePlan({self.transform}: {m}x{n}, nnz={self.pattern.nnz} ({100 * self.pattern.density:.3g}%), "
                f"{self.colors} colors ({self.mode}), pattern {how}, prepared in {self.seconds:.3g} s)")


def _check_sparse_options(name: str, argnums: Any, mode: str, form: str) -> None:
    if not (isinstance(argnums, int) and not isinstance(argnums, bool)):
        raise errors.SparsitySupportError(
            name, "one differentiated argument (an int argnums)", f"argnums={argnums!r}",
            "Pass argnums=k for one array argument; concatenate several inputs into one array to get their joint matrix.")
    option_checks.check_choice(name, "mode", mode, SPARSE_MODES if name == "sparse_jacobian" else ("auto",))
    option_checks.check_choice(name, "format", form, FORMATS)


def _one_array(name: str, backend: Backend, value: Any, what: str) -> Any:
    leaves = pytree.leaves(value)
    if len(leaves) != 1 or not backend.arrays.is_array(leaves[0]):
        got = f"a {type(value).__name__} with {len(leaves)} leaves" if len(leaves) != 1 else f"a {type(leaves[0]).__name__}"
        raise errors.SparsitySupportError(
            name, f"{what} to be one array", got,
            "Return (or differentiate) one array: flatten and concatenate several into one.")
    return leaves[0]


class _Sparse:
    """One sparse transform of ``f``: its plans per argument signature and the computation."""

    def __init__(self, backend: Backend, name: str, f: Callable[..., Any], argnums: int, sparsity: Any, mode: str,
                 form: str, chunk_size: int | str | None, check: bool, order: int, in_axes: Any = None):
        self.backend, self.name, self.f, self.argnums = backend, name, f, argnums
        self.sparsity, self.mode, self.form, self.chunk_size, self.check = sparsity, mode, form, chunk_size, check
        self.order, self.in_axes = order, in_axes
        self.plans: dict[Any, SparsePlan] = {}

    # -- preparation ---------------------------------------------------------------------------------
    def _samples(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """One sample's arguments (the batch axis removed) for a batched transform."""
        if self.in_axes is None:
            return args
        axes = batch_axes.leaf_axes(self.name, self.in_axes, args, self.backend.arrays.shape)
        leaves, treedef = pytree.flatten(args)
        out = [leaf if ax is None else self.backend.arrays.slice_axis(leaf, 0, 1, ax) for leaf, ax in zip(leaves, axes)]
        out = [leaf if ax is None else self.backend.arrays.reshape(
            leaf, tuple(d for i, d in enumerate(self.backend.arrays.shape(leaf)) if i != ax)) for leaf, ax in zip(out, axes)]
        return tuple(pytree.unflatten(treedef, out))

    def _key(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        from crossgrad.transforms.compiled import signature

        return signature(self.backend, args, kwargs)

    def plan(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SparsePlan:
        key = self._key(args, kwargs)
        found = self.plans.get(key)
        if found is None:
            found = self.plans[key] = self.backend.sparsity.outside_compiler(
                lambda: self._prepare(self._samples(args), kwargs))
        return found

    def _prepare(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> SparsePlan:
        import numpy as np  # NumPy and scipy.sparse arrive with the first sparse transform

        from crossgrad.sparsity import coloring as colorings
        from crossgrad.sparsity.patterns import Pattern, as_pattern

        start = time.perf_counter()
        nums, _ = value_checks.normalize_argnums(self.name, self.argnums, len(args))
        k = nums[0]
        x = _one_array(self.name, self.backend, args[k], f"argument {k}")
        value_checks.check_float_input(self.name, self.backend.arrays.dtype_name(x), f"argument {k}")
        outputs = self.backend.primitives.output_shapes(lambda *a: self.f(*a, **kwargs), args)
        out_shapes = [o[0] for o in outputs]
        if len(out_shapes) != 1:
            raise errors.SparsitySupportError(
                self.name, "the function to return one array", f"{len(out_shapes)} output arrays",
                "Return one array (concatenate several outputs into one).")
        out_shape = out_shapes[0]
        value_checks.check_float_outputs(self.name, [outputs[0][2]])
        in_shape = tuple(self.backend.arrays.shape(x))
        if self.order == 2:
            value_checks.check_scalar(self.name, out_shape)
        n = int(np.prod(in_shape, dtype=np.int64))
        m = n if self.order == 2 else int(np.prod(out_shape, dtype=np.int64))
        unruled: set[str] = set()
        if self.sparsity is None:
            shape, rows, cols, unruled = self.backend.sparsity.pattern(self.f, args, kwargs, k, self.order)
            pattern = Pattern.from_pairs(rows, cols, shape)
            if self.order == 2:
                pattern = pattern.symmetrized()
            if unruled:
                warnings.warn(
                    f"{self.name}: no sparsity rule for {', '.join(sorted(unruled))}: each output element of these "
                    "operations is taken to depend on every element of their operands (the pattern is a superset; "
                    "pass sparsity= to give it).", errors.SparsityWarning, stacklevel=4)
        else:
            pattern = as_pattern(self.name, self.sparsity, (m, n))
            if self.order == 2:
                pattern = pattern.symmetrized()
        mode = "symmetric" if self.order == 2 else self.mode
        coloring = colorings.coloring(pattern, mode)
        return SparsePlan(self.name, pattern, coloring, in_shape, tuple(out_shape), self.sparsity is None,
                          tuple(sorted(unruled)), time.perf_counter() - start)

    # -- computation -----------------------------------------------------------------------------------
    def _constants(self, plan: SparsePlan, like: Any) -> tuple[Any, Any]:
        """The seeds (in ``like``'s dtype) and reads as framework arrays, kept per dtype and device."""
        import numpy as np

        arrays = self.backend.arrays
        key = (arrays.dtype_name(like), str(getattr(like, "device", "")), arrays.is_traced(like))
        found = plan._arrays.get(key) if not arrays.is_traced(like) else None
        if found is None:
            seeds = arrays.cast_like(arrays.from_numpy(np.array(plan.coloring.seeds), like), like)
            reads = arrays.from_numpy(np.array(plan.coloring.reads), like)
            found = (seeds, reads)
            if not arrays.is_traced(like):
                plan._arrays[key] = found
        return found

    def values(self, plan: SparsePlan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The pattern's entries (row-major) at one sample's arguments."""
        return self.products(plan, args, kwargs)[0]

    def products(self, plan: SparsePlan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The pattern's entries (row-major) at one sample's arguments, and the compressed
        products ``[colors * size]`` they are read from."""
        arrays, prims = self.backend.arrays, self.backend.primitives
        g, flat, x = self._flat(plan, args, kwargs)
        if plan.colors == 0:
            return arrays.zeros((0,), x), arrays.zeros((0,), x)
        seeds, reads = self._constants(plan, x)
        product: Callable[[Any], Any]
        if plan.mode == "rev":
            _, pullback, _ = prims.vjp(g, (flat,), False)
            product = lambda u: pullback(u)[0]  # noqa: E731
        else:
            product = self._directional(g, flat)
        compressed = chunking.map_chunks(self.backend, prims.vmap(product, (0,), 0), (seeds,), self.chunk_size)
        flat_products = arrays.reshape(compressed, (-1,))
        return flat_products[reads], flat_products

    def _flat(self, plan: SparsePlan, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any, Any]:
        """``f`` as a function of the differentiated argument flattened (its output flattened),
        that argument flattened, and as given."""
        arrays = self.backend.arrays
        k = value_checks.normalize_argnums(self.name, self.argnums, len(args))[0][0]
        x = pytree.leaves(args[k])[0]

        def g(flat: Any) -> Any:
            out = self.f(*args[:k], arrays.reshape(flat, plan.in_shape), *args[k + 1:], **kwargs)
            return arrays.reshape(_one_array(self.name, self.backend, out, "the function's output"), (-1,))

        return g, arrays.reshape(x, (arrays.size(x),)), x

    def _directional(self, g: Callable[..., Any], flat: Any) -> Callable[[Any], Any]:
        """``v -> J v`` (a Jacobian) or ``v -> H v`` (a Hessian: the Hessian-vector products
        the curvature transforms use)."""
        if self.order == 2:
            arrays = self.backend.arrays
            hvp = hessian_vector.hessian_products(self.backend, lambda z: arrays.reshape(g(z), ()), (flat,))
            return lambda v: hvp(v)[0]
        prims = self.backend.primitives
        return lambda v: prims.jvp(g, (flat,), (v,), False)[1]

    def formatted(self, plan: SparsePlan, values: Any, batch: int | None) -> Any:
        rows, cols, shape = plan.pattern.rows, plan.pattern.cols, plan.pattern.shape
        if self.form == "values":
            return values
        if self.form == "scipy":
            import scipy.sparse as sps

            data = self.backend.arrays.to_numpy(values)
            if batch is None:
                return sps.csr_array((data, (rows, cols)), shape=shape)
            return [sps.csr_array((d, (rows, cols)), shape=shape) for d in data]
        return self.backend.sparsity.sparse_result(values, rows, cols, shape, self.form, batch, plan._arrays)

    def verify(self, plan: SparsePlan, values: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """``check=True``: the sparse matrix against dense products on two random directions."""
        arrays = self.backend.arrays
        g, flat, x = self._flat(plan, args, kwargs)
        if arrays.is_traced(x):
            raise errors.UnsupportedOptionError(
                self.name, "check=True on an eager call (the check reads values)", "a traced call (under jit or vmap)",
                "Check once eagerly (check=True, no jit), then use check=False under jit.")
        import numpy as np


        tol = tolerances.of(arrays.dtype_name(x)).identity
        data = np.asarray(arrays.to_numpy(values), np.float64)
        rows, cols = plan.pattern.rows, plan.pattern.cols
        m, n = plan.pattern.shape
        rng = np.random.default_rng(0)
        directional = self._directional(g, flat)
        for _ in range(2):
            v = rng.standard_normal(n)
            sparse_jv = np.zeros(m)
            np.add.at(sparse_jv, rows, data * v[cols])
            dense_jv = directional(arrays.cast_like(arrays.from_numpy(v, x), x))
            dense = np.asarray(arrays.to_numpy(dense_jv), np.float64)
            err = float(np.linalg.norm(sparse_jv - dense))
            if not err <= tol * max(float(np.linalg.norm(dense)), 1.0) * 10:
                raise errors.SparsityCheckError(
                    self.name, f"the sparse matrix to agree with dense products on random directions (relative {10 * tol:g})",
                    f"a difference of {err:.3g} (norm of the dense product {float(np.linalg.norm(dense)):.3g})",
                    "The pattern misses entries the function has: pass sparsity=None to detect it, or a superset.")

    def computed(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """The entries (``[nnz]``, or ``[B, nnz]`` for a batched transform), checked with
        ``check``, and the compressed products they were read from."""
        plan = self.plan(args, kwargs)
        if self.in_axes is None:
            values, compressed = self.products(plan, args, kwargs)
            if self.check:
                self.verify(plan, values, args, kwargs)
            return values, compressed
        axes = batch_axes.in_axes_form(self.in_axes)
        values, compressed = self.backend.primitives.vmap(lambda *a: self.products(plan, a, kwargs), axes, 0, "error")(*args)
        if self.check:
            one = self._samples(args)
            self.verify(plan, self.values(plan, one, kwargs), one, kwargs)
        return values, compressed

    def finished(self, computed: tuple[Any, Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The entries (:meth:`computed`'s first) in the transform's format."""
        values = computed[0]
        batch = None if self.in_axes is None else self.backend.arrays.shape(values)[0]
        return self.formatted(self.plan(args, kwargs), values, batch)


def _made(sparse: _Sparse) -> Callable[..., Any]:
    def transformed(*args: Any, **kwargs: Any) -> Any:
        return sparse.finished(sparse.computed(args, kwargs), args, kwargs)

    def plan(*args: Any, **kwargs: Any) -> SparsePlan:
        """The plan prepared for these arguments (NOTE [sparse plans]); nothing is computed."""
        return sparse.plan(args, kwargs)

    def entries(*args: Any, **kwargs: Any) -> Any:
        return sparse.computed(args, kwargs)

    transformed.plan = plan  # type: ignore[attr-defined]
    # NOTE [sparse results under jit]: torch's cg.jit compiles the entries and builds the
    # sparse result outside the compiled program (torch's compilers take strided tensors
    # only).  The compiled program returns the compressed products too: an output is a
    # buffer of its own, where inductor would otherwise fuse the products into the gather
    # and recompute them element by element through the indices (Poisson 64x64: 0.30 ms
    # with the products fused, 0.08 ms with them returned; the products alone 0.05).
    transformed._crossgrad_finish = (entries, sparse.finished)  # type: ignore[attr-defined]
    return transformed


def sparse_jacobian(backend: Backend, f: Callable[..., Any], argnums: int = 0, *, sparsity: Any = None,
                    mode: spec.Mode = "auto", format: str = "coo", chunk_size: int | str | None = None,
                    check: bool = False) -> Callable[..., Any]:
    """The Jacobian of ``f`` in argument ``argnums`` as a sparse matrix, from one product per color.

    Returns a function with ``f``'s arguments returning the ``(m, n)`` Jacobian (``m``: the
    output's size, ``n``: the argument's, both flattened in C order), in ``format``:
    ``"coo"`` (torch sparse COO / jax BCOO, entries row-major), ``"csr"`` (torch CSR / jax
    BCSR), ``"dense"``, ``"values"`` (the ``nnz`` entries in the pattern's row-major order)
    or ``"scipy"`` (a ``scipy.sparse`` CSR array; not under jit).  The pattern is detected
    from ``f`` once per argument signature, valid for every value of the arguments (NOTE
    [sparse plans]), or given as ``sparsity`` (a :class:`crossgrad.sparsity.patterns.Pattern`,
    a boolean array, a ``scipy.sparse`` matrix, a torch sparse tensor or a jax BCOO).

    Args:
        mode: ``"fwd"`` (a JVP per column color), ``"rev"`` (a VJP per row color) or
            ``"auto"`` (whichever needs fewer colors).
        chunk_size: colors pushed through ``vmap`` at once (None: all; ``"auto"``: from the
            memory budget, :func:`crossgrad.memory_budget`).
        check: compare the result with dense products on random directions (eager calls).

    ``.plan(*args)`` on the returned function gives the :class:`SparsePlan` (pattern,
    colors, density) without computing the Jacobian.

    Example:
        >>> import torch, crossgrad as cg
        >>> f = lambda x: x[1:] ** 2 - x[:-1]
        >>> cg.torch.sparse_jacobian(f, format="dense")(torch.tensor([1.0, 2.0, 3.0]))
        tensor([[-1.,  4.,  0.],
                [ 0., -1.,  6.]])
    """
    name = "sparse_jacobian"
    option_checks.check_callable(name, f)
    _check_sparse_options(name, argnums, mode, format)
    option_checks.validate_options(name, chunk_size=chunk_size, check=check)
    return _made(_Sparse(backend, name, f, argnums, sparsity, mode, format, chunk_size, check, order=1))


def sparse_hessian(backend: Backend, f: Callable[..., Any], argnums: int = 0, *, sparsity: Any = None,
                   format: str = "coo", chunk_size: int | str | None = None, check: bool = False) -> Callable[..., Any]:
    """The Hessian of a scalar ``f`` in argument ``argnums`` as a sparse symmetric matrix, from
    one Hessian-vector product per color of a star coloring.

    Returns a function with ``f``'s arguments returning the ``(n, n)`` Hessian (``n``: the
    argument's size, flattened in C order) in ``format`` (as :func:`sparse_jacobian`).  The
    pattern (second-order interactions only: the Jacobian pattern of the gradient) is
    detected once per argument signature or given as ``sparsity``.

    Example:
        >>> import torch, crossgrad as cg
        >>> f = lambda x: ((x[1:] - x[:-1] ** 2) ** 2).sum()
        >>> cg.torch.sparse_hessian(f).plan(torch.ones(1000)).colors
        3
    """
    name = "sparse_hessian"
    option_checks.check_callable(name, f)
    _check_sparse_options(name, argnums, "auto", format)
    option_checks.validate_options(name, chunk_size=chunk_size, check=check)
    return _made(_Sparse(backend, name, f, argnums, sparsity, "auto", format, chunk_size, check, order=2))


def batched_sparse_jacobian(backend: Backend, f: Callable[..., Any], argnums: int = 0, in_axes: Any = 0, *,
                            sparsity: Any = None, mode: spec.Mode = "auto", format: str = "coo",
                            basis_chunk_size: int | None = None, check: bool = False) -> Callable[..., Any]:
    """Per-sample sparse Jacobians of a batch sharing one pattern: ``f`` is written for one
    sample, ``in_axes`` (as :func:`crossgrad.vmap`'s, batch axis 0 of the output) says which
    arguments carry the batch.

    Returns ``(B, m, n)``: a sparse COO tensor with the batch as its first sparse axis (torch),
    a BCOO with one batch axis (jax), a dense array, the ``(B, nnz)`` entries (``"values"``)
    or a list of ``scipy.sparse`` arrays.  The pattern is prepared once from one sample;
    ``basis_chunk_size`` bounds the colors of each sample pushed at once.

    Example:
        >>> import torch, crossgrad as cg
        >>> f = lambda x: torch.sin(x[1:]) * x[:-1]
        >>> cg.torch.batched_sparse_jacobian(f, format="values")(torch.ones(8, 5)).shape
        torch.Size([8, 8])
    """
    name = "batched_sparse_jacobian"
    option_checks.check_callable(name, f)
    _check_sparse_options(name.removeprefix("batched_"), argnums, mode, format)
    option_checks.validate_options(name, in_axes=in_axes, basis_chunk_size=basis_chunk_size, check=check)
    return _made(_Sparse(backend, name, f, argnums, sparsity, mode, format, basis_chunk_size, check, order=1,
                         in_axes=in_axes))


def batched_sparse_hessian(backend: Backend, f: Callable[..., Any], argnums: int = 0, in_axes: Any = 0, *,
                           sparsity: Any = None, format: str = "coo", basis_chunk_size: int | None = None,
                           check: bool = False) -> Callable[..., Any]:
    """Per-sample sparse Hessians of a batch sharing one pattern (``in_axes`` and the formats
    as :func:`batched_sparse_jacobian`).

    Example:
        >>> import torch, crossgrad as cg
        >>> f = lambda x: (x[1:] * x[:-1]).sum()
        >>> cg.torch.batched_sparse_hessian(f, format="dense")(torch.ones(2, 3))[0]
        tensor([[0., 1., 0.],
                [1., 0., 1.],
                [0., 1., 0.]])
    """
    name = "batched_sparse_hessian"
    option_checks.check_callable(name, f)
    _check_sparse_options("sparse_hessian", argnums, "auto", format)
    option_checks.validate_options(name, in_axes=in_axes, basis_chunk_size=basis_chunk_size, check=check)
    return _made(_Sparse(backend, name, f, argnums, sparsity, "auto", format, basis_chunk_size, check, order=2,
                         in_axes=in_axes))


def _pattern_transform(backend: Backend, name: str, f: Callable[..., Any], argnums: int, order: int) -> Callable[..., Pattern]:
    sparse = _Sparse(backend, name, f, argnums, None, "auto", "values", None, False, order)

    def pattern(*args: Any, **kwargs: Any) -> Pattern:
        return sparse.plan(args, kwargs).pattern

    def plan(*args: Any, **kwargs: Any) -> SparsePlan:
        """The plan detection follows on these arguments (NOTE [plans]): the pattern it finds
        and how; nothing but the pattern is computed."""
        return sparse.plan(args, kwargs)

    pattern.plan = plan  # type: ignore[attr-defined]
    return pattern


def jacobian_sparsity(backend: Backend, f: Callable[..., Any], argnums: int = 0) -> Callable[..., Pattern]:
    """The Jacobian's sparsity pattern of ``f`` in argument ``argnums``, valid for every value of
    the arguments (detected from the program, nothing computed).

    Returns a function with ``f``'s arguments returning a
    :class:`crossgrad.sparsity.patterns.Pattern` of shape ``(m, n)`` (``.rows``, ``.cols``,
    ``.nnz``, ``.density``, ``.to_dense()``, ``.to_scipy()``).  An operation without a rule is
    taken as dense in its operands and named in a :class:`crossgrad.errors.SparsityWarning`.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.jacobian_sparsity(lambda x: x[1:] - x[:-1])(torch.zeros(4)).to_dense().astype(int)
        array([[1, 1, 0, 0],
               [0, 1, 1, 0],
               [0, 0, 1, 1]])
    """
    name = "jacobian_sparsity"
    option_checks.check_callable(name, f)
    _check_sparse_options("sparse_jacobian", argnums, "auto", "values")
    return _pattern_transform(backend, name, f, argnums, 1)


def hessian_sparsity(backend: Backend, f: Callable[..., Any], argnums: int = 0) -> Callable[..., Pattern]:
    """The Hessian's sparsity pattern of a scalar ``f`` in argument ``argnums``: ``(n, n)``,
    symmetric, where a nonlinearity couples two inputs (as :func:`jacobian_sparsity`).

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.hessian_sparsity(lambda x: (x[1:] * x[:-1]).sum())(torch.zeros(3)).nnz
        4
    """
    name = "hessian_sparsity"
    option_checks.check_callable(name, f)
    _check_sparse_options("sparse_hessian", argnums, "auto", "values")
    return _pattern_transform(backend, name, f, argnums, 2)
