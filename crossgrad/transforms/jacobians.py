"""jacrev, jacfwd and jacobian: Jacobians from vjp (rows), jvp (columns) or a row loop.

NOTE [jacobian blocks]: every Jacobian is computed on flat leaves.  With ``M`` output
elements and ``N`` input elements (all leaves together), reverse mode pushes the
``M`` rows of the identity through one vectorized vjp, forward mode the ``N``
columns through one vectorized jvp, and ``loop`` calls the vjp once per row (the
seed notebook's method, kept as the reference).  The block of output leaf ``o`` and
input leaf ``i`` has shape ``out_o.shape + in_i.shape``; :meth:`Call.assemble`
nests the blocks as JAX does.

NOTE [plans]
A transform decides once per argument signature, in the open: the first call with a new
signature builds a typed, frozen, printable plan (:class:`JacobianPlan`: the mode, the
route, the chunks, and why each was chosen) kept in the one cache that transformed function
owns, and the route then only computes.  Where the framework refuses what the plan chose
(torch's jacfwd on complex outputs; auto's forward mode on a function without forward
rules) the plan is revised in that cache, the revision named in ``why``.  ``.plan(*args)``
on the transformed function, or ``crossgrad.explain(transformed, *args)``, returns the plan
a call would follow without computing the result (the adjoint check, NOTE [adjoint check],
is part of planning ``auto``).  The sparse transforms' plans are :class:`SparsePlan`.

Why one module of ~400 lines: the plan, the three routes it chooses between (reverse,
forward, loop) and the batch-inside blocks batched.py builds on share the Call's layout and
the block assembly; split, each half would import the other's internals.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

from crossgrad import errors, option_checks, pytree, spec, value_checks
from crossgrad.backends.base import Backend
from crossgrad.transforms import adjoint, chunking, policy
from crossgrad.transforms.builtin import builtin_serves, made, needs_composition
from crossgrad.transforms.call import Call, Memo, Route

log = logging.getLogger("crossgrad")


def _offsets(shapes: list[tuple[int, ...]]) -> list[tuple[int, int]]:
    bounds, start = [], 0
    for s in shapes:
        bounds.append((start, start + math.prod(s)))
        start += math.prod(s)
    return bounds


def _part(arrays: Any, x: Any, lo: int, hi: int, axis: int, shape: tuple[int, ...]) -> Any:
    """``x[lo:hi]`` along ``axis``, reshaped to ``shape``; no op where nothing changes
    (each op costs a dispatch, and under an outer vmap several)."""
    full = arrays.shape(x)
    if lo != 0 or hi != full[axis]:
        x = arrays.slice_axis(x, lo, hi, axis)
        full = arrays.shape(x)
    return x if full == tuple(shape) else arrays.reshape(x, shape)


def _identity_parts(arrays: Any, shapes: list[tuple[int, ...]], likes: Any) -> tuple[Any, ...]:
    """The rows of the ``n x n`` identity (``n``: the elements of every leaf together) cut
    into one piece per leaf: piece ``i`` has shape ``(n, *shapes[i])`` and leaf ``i``'s
    dtype.  Cut before any vmap, so that inside it only the vjp or jvp runs."""
    bounds = _offsets(shapes)
    n = bounds[-1][1]
    eye = arrays.eye(n, likes[0])
    return tuple(arrays.cast_like(_part(arrays, eye, lo, hi, 1, (n, *s)), like)
                 for (lo, hi), s, like in zip(bounds, shapes, likes))


def check_real(backend: Backend, call: Call, out: Any) -> None:
    """Reverse mode and the loop refuse complex outputs (their vjp would keep the real
    part only); forward mode returns the complex Jacobian."""
    for k, o in enumerate(out):
        value_checks.check_real_output(call.transform, backend.arrays.dtype_name(o), f"output leaf {k}")


def rev_blocks(backend: Backend, call: Call, chunk_size: int | str | None, loop: bool) -> tuple[list[Any], Any]:
    """Blocks from the rows of the Jacobian: vmap of vjp over the identity (or a loop)."""
    arrays, primitives = backend.arrays, backend.primitives
    out, vjp_fn, aux = primitives.vjp(call.flat, call.primals, call.has_aux)
    check_real(backend, call, out)
    out_shapes = [arrays.shape(o) for o in out]
    in_shapes = [arrays.shape(p) for p in call.primals]
    out_bounds = _offsets(out_shapes)
    m = out_bounds[-1][1] if out else 0
    if m == 0 or not call.primals:
        return [[arrays.zeros(so + si, o) for si in in_shapes] for so, o in zip(out_shapes, out)], aux

    def pull(*cotangents: Any) -> tuple[Any, ...]:
        return tuple(vjp_fn(cotangents))

    cotangent_rows = _identity_parts(arrays, out_shapes, out)
    if loop:
        stacked = primitives.map_rows(pull, cotangent_rows)
    else:
        stacked = chunking.map_chunks(backend, primitives.vmap(pull, 0, 0), cotangent_rows, chunk_size)
    blocks = [
        [_part(arrays, stacked[i], lo, hi, 0, so + si) for i, si in enumerate(in_shapes)]
        for (lo, hi), so in zip(out_bounds, out_shapes)
    ]
    return blocks, aux


def _pushed(backend: Backend, call: Call, tangents: tuple[Any, ...], chunk_size: int | str | None) -> tuple[Any, Any]:
    """``(columns, aux)``: the rows of ``tangents`` (one tangent per primal leaf, the
    basis index first) pushed through one vectorized jvp, in chunks.  aux does not
    depend on the tangent: every column holds the same copy (torch refuses
    out_dims=None for it under an outer vmap), so the first is taken."""
    arrays, primitives = backend.arrays, backend.primitives

    def push(*tangent: Any) -> Any:
        _, tout, aux = primitives.jvp(call.flat, call.primals, tangent, call.has_aux)
        return (tuple(tout), aux) if call.has_aux else tuple(tout)

    columns = chunking.map_chunks(backend, primitives.vmap(push, 0, 0), tangents, chunk_size)
    if not call.has_aux:
        return columns, None
    columns, batched_aux = columns
    return columns, pytree.map_leaves(lambda a: arrays.reshape(arrays.slice_axis(a, 0, 1, 0), arrays.shape(a)[1:]),
                                      batched_aux)


def fwd_blocks(backend: Backend, call: Call, chunk_size: int | str | None) -> tuple[list[Any], Any]:
    """Blocks from the columns of the Jacobian: vmap of jvp over the identity."""
    arrays = backend.arrays
    primals = call.primals
    in_shapes = [arrays.shape(p) for p in primals]
    in_bounds = _offsets(in_shapes)
    n = in_bounds[-1][1] if primals else 0
    if n == 0:
        res = call.flat(*primals)
        out, aux = res if call.has_aux else (res, None)
        return [[arrays.zeros(arrays.shape(o) + si, o) for si in in_shapes] for o in out], aux

    columns, aux = _pushed(backend, call, _identity_parts(arrays, in_shapes, primals), chunk_size)
    blocks = []
    for col in columns:
        so = arrays.shape(col)[1:]
        row = []
        for (lo, hi), si in zip(in_bounds, in_shapes):
            # The column index runs first; move the input's axes behind the output's.
            block = _part(arrays, col, lo, hi, 0, si + so)
            row.append(block if not so else arrays.transpose(block, [*range(len(si), len(si) + len(so)), *range(len(si))]))
        blocks.append(row)
    return blocks, aux


def _with_batch(arrays: Any, x: Any, axis: int, shape: tuple[int, ...]) -> Any:
    """Basis rows ``x`` of shape ``(k, *sample)`` broadcast across the batch: shape
    ``(k, *shape)``, the batch axis of ``shape`` at ``axis`` (a view, nothing copied)."""
    sample = arrays.shape(x)[1:]
    return arrays.broadcast_to(arrays.reshape(x, (arrays.shape(x)[0], *sample[:axis], 1, *sample[axis:])),
                               (arrays.shape(x)[0], *shape))


def inside_blocks(backend: Backend, call: Call, axes: list[int], mode: str,
                  chunk_size: int | None) -> tuple[list[Any], Any]:
    """Per-sample Jacobian blocks of a batched function, the batch inside (NOTE [batch
    inside] in :mod:`crossgrad.transforms.policy`).

    ``call.f`` maps a batch of independent samples: primal leaf ``i`` carries the batch
    at ``axes[i]``, every output leaf at axis 0.  Each basis vector of one sample is
    broadcast across the batch and pushed (``"fwd"``) or pulled (``"rev"``) through one
    evaluation of the whole batch; since samples do not mix, each sample's slice of the
    result is that sample's Jacobian column (row).  Blocks have shape ``(B, *out, *in)``
    for a per-sample output leaf ``out`` and input leaf ``in``.
    """
    arrays, primitives = backend.arrays, backend.primitives
    primals = call.primals
    shapes = [arrays.shape(p) for p in primals]
    samples = [s[:a] + s[a + 1:] for s, a in zip(shapes, axes)]
    batch = shapes[0][axes[0]]
    if mode == "fwd":
        in_bounds = _offsets(samples)
        tangents = tuple(_with_batch(arrays, t, a, s)
                         for t, a, s in zip(_identity_parts(arrays, samples, primals), axes, shapes))

        columns, aux = _pushed(backend, call, tangents, chunk_size)
        blocks = []
        for col in columns:
            so = arrays.shape(col)[2:]
            row = []
            for (lo, hi), si in zip(in_bounds, samples):
                # (*in, B, *out) -> (B, *out, *in)
                block = _part(arrays, col, lo, hi, 0, (*si, batch, *so))
                k = len(si)
                row.append(arrays.transpose(block, [k, *range(k + 1, k + 1 + len(so)), *range(k)]))
            blocks.append(row)
        return blocks, aux
    out, vjp_fn, aux = primitives.vjp(call.flat, primals, call.has_aux)
    check_real(backend, call, out)
    out_samples = [arrays.shape(o)[1:] for o in out]
    out_bounds = _offsets(out_samples)
    m = out_bounds[-1][1]
    cotangents = tuple(_with_batch(arrays, c, 0, arrays.shape(o))
                       for c, o in zip(_identity_parts(arrays, out_samples, out), out))

    def pull(*cotangent: Any) -> tuple[Any, ...]:
        return tuple(vjp_fn(cotangent))

    rows = chunking.map_chunks(backend, primitives.vmap(pull, 0, 0), cotangents, chunk_size)
    blocks = []
    for (lo, hi), so in zip(out_bounds, out_samples):
        row = []
        for r, a, si in zip(rows, axes, samples):
            # (m_o, *in with the batch at a) -> (B, *out, *in)
            block = arrays.moveaxis(arrays.slice_axis(r, lo, hi, 0) if (lo, hi) != (0, m) else r, a + 1, 0)
            row.append(arrays.reshape(block, (batch, *so, *si)))
        blocks.append(row)
    return blocks, aux


def auto_mode(backend: Backend, call: Call) -> tuple[str, str]:
    """auto's mode, ``"fwd"`` when the inputs are few enough against the outputs (NOTE
    [jacobian auto mode] in :mod:`crossgrad.transforms.policy`), and why."""
    if not call.primals:
        return "rev", "auto: no differentiated elements"
    n = sum(math.prod(backend.arrays.shape(p)) for p in call.primals)
    outputs = call.output_shapes()
    if any(dtype.startswith("complex") for _, _, dtype in outputs):
        return "fwd", "auto: complex outputs, which forward mode alone answers"
    m = sum(math.prod(s) for s, _, _ in outputs)
    accelerator = backend.arrays.on_accelerator(call.primals[0])
    c = policy.forward_cost(backend.name, accelerator)
    mode = policy.jacobian_mode(backend.name, accelerator, n, m)
    relation = "<" if mode == "fwd" else ">="
    return mode, (f"auto: {n} inputs x jvp cost {c:g} {relation} {m} outputs "
                  f"(NOTE [jacobian auto mode], {backend.name} on {'an accelerator' if accelerator else 'a CPU'})")


@dataclasses.dataclass(frozen=True)
class JacobianPlan:
    """What a Jacobian transform does for one argument signature (NOTE [plans]): the mode,
    the route (the framework's ``"builtin"`` jacrev/jacfwd, or crossgrad's ``"composed"``
    vmap of vjp / jvp over the identity, or its loop), the chunks, and why.  A revision
    made when the framework refused the first plan says so in ``why``."""

    transform: str
    mode: str
    route: str
    chunk_size: int | str | None
    inputs: int
    outputs: int | None  # None: not known without evaluating f (a mode given, not chosen)
    why: str

    def __str__(self) -> str:
        chunks = "all basis vectors at once" if self.chunk_size is None else f"chunk_size={self.chunk_size!r}"
        sizes = f"{self.inputs} input" + (f" -> {self.outputs} output" if self.outputs is not None else "")
        return f"{self.transform}: {self.mode} mode, {self.route} route, {chunks}; {sizes} elements; {self.why}"


def jacrev(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False,
           chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]:
    """Jacobian by reverse mode: one vjp per output element, vectorized.

    Returns a function with ``f``'s arguments returning the Jacobian: for each
    output leaf of shape ``out`` and input leaf of shape ``in``, an array of shape
    ``out + in``, nested as output pytree, then argnums, then argument pytree;
    ``(jacobian, aux)`` with ``has_aux``.  ``chunk_size`` bounds how many rows go
    through the vectorized vjp at once.  ``"builtin"`` is ``torch.func.jacrev`` /
    ``jax.jacrev``, ``"composed"`` is vmap of vjp over the identity.

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.jacrev(lambda x: x ** 2)(torch.tensor([1.0, 2.0]))
        tensor([[2., 0.],
                [0., 4.]])
    """
    option_checks.check_callable("jacrev", f)
    option_checks.validate_options("jacrev", argnums=argnums, has_aux=has_aux, chunk_size=chunk_size, impl=impl)
    return jacobian_of(backend, "jacrev", f, argnums, has_aux, "rev", chunk_size, impl)


def jacfwd(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False,
           chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]:
    """Jacobian by forward mode: one jvp per input element, vectorized.

    Same result and nesting as :func:`jacrev`; cheaper when the input has fewer
    elements than the output.  ``chunk_size`` bounds how many columns go through
    the vectorized jvp at once (``torch.func.jacfwd`` and ``jax.jacfwd`` have no
    chunking: ``"auto"`` then uses crossgrad's vmap of jvp).

    Example:
        >>> import torch, crossgrad as cg
        >>> cg.torch.jacfwd(lambda x: x.sum(0, keepdim=True))(torch.tensor([1.0, 2.0]))
        tensor([[1., 1.]])
    """
    option_checks.check_callable("jacfwd", f)
    option_checks.validate_options("jacfwd", argnums=argnums, has_aux=has_aux, chunk_size=chunk_size, impl=impl)
    return jacobian_of(backend, "jacfwd", f, argnums, has_aux, "fwd", chunk_size, impl)


def jacobian(backend: Backend, f: Callable[..., Any], argnums: spec.Argnums = 0, has_aux: bool = False, mode: spec.Mode = "auto",
             chunk_size: int | str | None = None, *, impl: spec.Impl = "auto") -> Callable[..., Any]:
    """Jacobian, choosing reverse mode, forward mode or the row-by-row loop.

    ``mode``: ``"rev"`` (:func:`jacrev`), ``"fwd"`` (:func:`jacfwd`), ``"loop"``
    (one vjp per output element in a loop: the reference, slow, it ignores
    ``impl`` and ``chunk_size``) or ``"auto"``: forward mode when the
    differentiated input has few enough elements against the output, reverse
    otherwise: ``n * c < m`` with the measured cost ``c`` of a jvp relative to a
    vjp, 0.5 for jax, 2 for torch on a CPU, 64 for torch on a GPU (NOTE [jacobian
    auto mode], :mod:`crossgrad.transforms.policy`); decided once per input shape.

    Example:
        >>> import torch, crossgrad as cg
        >>> W = torch.ones(2048, 32)
        >>> cg.torch.jacobian(lambda x: torch.tanh(W @ x))(torch.zeros(32)).shape  # forward mode
        torch.Size([2048, 32])
    """
    option_checks.check_callable("jacobian", f)
    option_checks.validate_options("jacobian", argnums=argnums, has_aux=has_aux, mode=mode, chunk_size=chunk_size, impl=impl)
    return jacobian_of(backend, "jacobian", f, argnums, has_aux, mode, chunk_size, impl)


def jacobian_of(backend: Backend, name: str, f: Callable[..., Any], argnums: Any, has_aux: bool, mode: str,
                chunk_size: int | str | None, impl: str, *, prechecked: bool = False) -> Callable[..., Any]:
    """The Jacobian of ``f`` by ``mode`` (``"auto"``, ``"rev"``, ``"fwd"``, ``"loop"``), for
    the public transform ``name``, whose options are already validated: a plan per argument
    signature (:class:`JacobianPlan`, kept with its built-in in one cache), then a route
    that only computes.  ``prechecked``: the transform this Jacobian is part of (a Hessian's
    two) checks each signature before it calls it, so this one does not check it again."""
    jac = _Jacobian(backend, name, f, argnums, has_aux, mode, chunk_size, impl, prechecked)

    def jacobian_f(*args: Any, **kwargs: Any) -> Any:
        return jac(args, kwargs)

    def plan(*args: Any, **kwargs: Any) -> JacobianPlan:
        """The plan a call with these arguments follows (NOTE [plans]); nothing is computed."""
        return jac.planned(args, kwargs)[0].plan  # type: ignore[no-any-return]

    jacobian_f.plan = plan  # type: ignore[attr-defined]
    return jacobian_f


class _Jacobian:
    """One transformed function: its validated options and its one cache, a :class:`Route`
    (the plan and the framework's jacrev / jacfwd made for it) per argument signature."""

    def __init__(self, backend: Backend, name: str, f: Callable[..., Any], argnums: Any, has_aux: bool, mode: str,
                 chunk_size: int | str | None, impl: str, prechecked: bool = False):
        self.backend, self.name, self.f, self.argnums, self.has_aux = backend, name, f, argnums, has_aux
        self.mode, self.chunk_size, self.impl, self.prechecked = mode, chunk_size, impl, prechecked
        used = ("rev", "fwd") if mode == "auto" else (mode,) if mode != "loop" else ()
        self.builtin = {m: builtin_serves(name, backend, impl, "jac" + m, chunk_size=chunk_size) for m in used}
        self.known = Memo()

    def planned(self, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> tuple[Route, Any, Call | None]:
        """The signature's route, its cache key, and the call checked to plan it (None: a
        signature planned before)."""
        key = Memo.key(args)
        known = self.known.get(key)
        if known is not None:
            return known, key, None
        call = Call(self.name, self.backend, self.f, args, kwargs, self.argnums, self.has_aux, checked=self.prechecked)
        if key is None:  # arguments that are not all arrays: the plan is kept by the primals' signature
            key = ("primals", len(args), Memo.key(tuple(call.primals)), needs_composition(self.backend, args))
            known = self.known.get(key)
            if known is not None:
                return known, key, call
        plan = self._decide(call, args)
        return self.known.put(key, Route(plan, self._made(plan, args, kwargs) if not kwargs else None)), key, call

    def _decide(self, call: Call, args: tuple[Any, ...]) -> JacobianPlan:
        name, mode, impl, chunk_size = self.name, self.mode, self.impl, self.chunk_size
        outputs = None  # known where auto's choice needed them: f is not evaluated for the plan alone
        if mode == "auto":
            adjoint.check(name, self.backend, call)  # NOTE [adjoint check]
            m, why = auto_mode(self.backend, call)
            if call.primals:
                outputs = sum(math.prod(sh) for sh, _, _ in call.output_shapes())
        else:
            m, why = mode, (f"{name} is {mode} mode" if name != "jacobian" else f"mode={mode!r} given")
        if m == "loop":
            route, because = "composed", "the loop is crossgrad's"
        elif not self.builtin[m]:
            route, because = "composed", f"impl={impl!r}" + (f", chunk_size={chunk_size!r}" if chunk_size else "")
        elif call.has_no_elements():
            route, because = "composed", "no elements (the built-ins fail on an empty basis)"
        elif needs_composition(self.backend, args):
            route, because = "composed", "static or None leaves, which the built-ins refuse"
        else:
            route, because = "builtin", f"the framework's jac{m} serves impl={impl!r}"
        n = sum(math.prod(self.backend.arrays.shape(x)) for x in call.primals)
        return JacobianPlan(name, m, route, chunk_size, n, outputs, f"{why}; {route}: {because}")

    def _made(self, plan: JacobianPlan, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Callable[..., Any] | None:
        """The framework's jacrev / jacfwd where the plan takes it."""
        if plan.route != "builtin":
            return None
        builtins, has_aux, chunk_size = self.backend.builtins, self.has_aux, self.chunk_size
        jac = builtins.jacrev if plan.mode == "rev" else builtins.jacfwd
        real = plan.mode == "rev" or not builtins.COMPLEX_FORWARD
        return made(self.name, self.backend, lambda g, nums: jac(g, nums, has_aux, chunk_size), self.f, self.argnums,
                    has_aux, False, len(args), kwargs, real)

    def compute(self, known: Route, key: Any, call: Call | None, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Any:
        plan = known.plan
        if plan.route == "builtin":
            fn = known.run or self._made(plan, args, kwargs)
            try:
                return fn(*args)  # type: ignore[misc]
            except errors.ComplexOutputError:
                if plan.mode == "rev":
                    raise
                # torch's jacfwd refuses complex outputs, which crossgrad's forward mode answers.
                plan = dataclasses.replace(plan, route="composed",
                                           why=plan.why + "; revised: the built-in refused complex outputs")
                self.known.put(key, Route(plan))
        if call is None:  # a signature seen before: checked then
            call = Call(self.name, self.backend, self.f, args, kwargs, self.argnums, self.has_aux, checked=True)
        if plan.mode == "fwd":
            blocks, aux = fwd_blocks(self.backend, call, self.chunk_size)
        else:
            blocks, aux = rev_blocks(self.backend, call, self.chunk_size, loop=plan.mode == "loop")
        result = call.assemble(blocks)
        return (result, aux) if self.has_aux else result

    def __call__(self, args: tuple[Any, ...], kwargs: dict[Any, Any]) -> Any:
        known, key, call = self.planned(args, kwargs)
        if self.mode != "auto" or known.plan.mode != "fwd":
            return self.compute(known, key, call, args, kwargs)
        try:
            return self.compute(known, key, call, args, kwargs)
        except errors.CrossgradError:
            raise
        except Exception as forward_failure:
            # auto's forward mode failed where reverse mode may answer (a custom Function
            # without jvp or vmap rules, jax's custom_vjp): the same Jacobian, a revised plan.
            plan = known.plan
            revised = dataclasses.replace(plan, mode="rev", why=plan.why + (
                f"; revised: forward mode failed ({type(forward_failure).__name__}), reverse mode"))
            route = Route(revised, self._made(revised, args, kwargs) if not kwargs else None)
            try:
                out = self.compute(route, key, None, args, kwargs)
            except Exception:
                raise forward_failure from None
            log.info("%s: forward mode failed (%s); reverse mode for this signature", self.name,
                     type(forward_failure).__name__)
            self.known.put(key, route)
            return out
