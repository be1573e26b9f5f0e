"""Sparsity patterns from a function's jaxpr: the rules of NOTE [dependency propagation]
(:mod:`crossgrad.sparsity.propagation`) for jax's primitives, and sparse results in jax's
formats.

``jax.make_jaxpr`` records the call abstractly (under an outer ``jax.jit`` or ``jax.vmap``
too: only shapes and dtypes are read); the arguments that are not differentiated stay
abstract, so the pattern holds whatever their values.  Nested programs (``jit``,
``custom_jvp``, ``custom_vjp``, ``remat``, ``cond``) are walked inside; a loop
(``while``, ``scan``) is walked to a fixed point of its carried values.

Why one module of ~450 lines: the dependency rule of every jax primitive the
walk meets is one table with its helpers; a rule is found by its primitive's name here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sparse

from crossgrad import pytree
from crossgrad.sparsity import propagation as prop
from crossgrad.sparsity.propagation import Value, Walk

_ELEMENTWISE = {
    "add", "sub", "mul", "div", "neg", "max", "min", "pow", "integer_pow", "atan2", "rem", "abs", "exp", "exp2", "log",
    "log1p", "expm1", "tanh", "logistic", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh",
    "atanh", "sqrt", "rsqrt", "cbrt", "square", "erf", "erfc", "erf_inv", "lgamma", "digamma", "igamma", "igammac",
    "copy", "copy_p", "reduce_precision", "real", "imag", "conj", "complex", "clamp", "add_any", "polygamma",
    "bessel_i0e", "bessel_i1e", "xlogy", "xlog1py", "logaddexp", "optimization_barrier",
}
# Derivative zero wherever it is defined.
_ZERO = {
    "eq", "ne", "lt", "le", "gt", "ge", "sign", "floor", "ceil", "round", "is_finite", "not", "and", "or", "xor",
    "argmax", "argmin", "iota", "stop_gradient", "shift_left", "shift_right_logical", "shift_right_arithmetic",
    "population_count", "clz", "reduce_and", "reduce_or", "reduce_xor", "random_bits", "random_seed", "random_wrap",
    "random_unwrap", "random_split", "random_fold_in", "threefry2x32", "rng_bit_generator", "rng_uniform",
    "nextafter",
}
# Operations moving elements (each output element from at most one operand element): the
# operand positions that hold data (the others are indices or shapes, read as constants).
_FORWARD: dict[str, Callable[[int], Sequence[int]]] = {
    "reshape": lambda k: (0,), "broadcast_in_dim": lambda k: (0,), "transpose": lambda k: (0,),
    "squeeze": lambda k: (0,), "expand_dims": lambda k: (0,), "slice": lambda k: (0,), "rev": lambda k: (0,),
    "pad": lambda k: (0, 1), "concatenate": lambda k: tuple(range(k)), "stack": lambda k: tuple(range(k)), "gather": lambda k: (0,),
    "dynamic_slice": lambda k: (0,), "dynamic_update_slice": lambda k: (0, 1), "split": lambda k: (0,),
}
_REDUCE = {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod"}
_CUMULATIVE = {"cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp"}
_SCATTER = {"scatter-add", "scatter_add", "scatter-mul", "scatter_mul", "scatter-min", "scatter_min",
            "scatter-max", "scatter_max", "scatter"}
_SUBPROGRAM = ("jaxpr", "call_jaxpr", "fun_jaxpr")


def _np(x: Any) -> np.ndarray | None:
    try:
        return np.asarray(x)
    except Exception:  # key arrays and other values NumPy cannot hold stay unknown
        return None


def _shape(var: Any) -> tuple[int, ...]:
    return tuple(getattr(var.aval, "shape", ()))


def _dtype(var: Any) -> Any:
    return getattr(var.aval, "dtype", None)


def _is_float(dtype: Any) -> bool:
    return dtype is not None and bool(jnp.issubdtype(dtype, jnp.inexact))


def _inner(eqn: Any) -> tuple[Any, list[Any]] | None:
    for name in _SUBPROGRAM:
        sub = eqn.params.get(name)
        if sub is not None and hasattr(getattr(sub, "jaxpr", sub), "eqns"):
            return getattr(sub, "jaxpr", sub), list(getattr(sub, "consts", ()))
    return None


def _walk_jaxpr(jaxpr: Any, consts: Sequence[Any], ins: Sequence[Value], walk: Walk) -> list[Value]:
    """The values of ``jaxpr``'s outputs from those of its inputs."""
    env: dict[Any, Value] = {}

    def read(v: Any) -> Value:
        if hasattr(v, "val"):  # a literal
            return Value(_shape(v), None, _np(v.val))
        return env[v]

    for var, c in zip(jaxpr.constvars, consts):
        env[var] = Value(tuple(np.shape(c)), None, _np(c))
    for var, value in zip(jaxpr.invars, ins):
        env[var] = value
    for eqn in jaxpr.eqns:
        outs = _apply(eqn, [read(v) for v in eqn.invars], walk)
        for var, value in zip(eqn.outvars, outs):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def _apply(eqn: Any, ins: list[Value], walk: Walk) -> list[Value]:
    name = eqn.primitive.name
    shapes = [_shape(v) for v in eqn.outvars]
    if all(v.deps is None for v in ins):
        return _constant(eqn, ins, shapes)
    if name in _ZERO or (name == "convert_element_type" and not _is_float(eqn.params.get("new_dtype"))):
        return [Value(s) for s in shapes]
    rule = _RULES.get(name)
    if rule is not None:
        return rule(eqn, ins, shapes, walk)
    inner = _inner(eqn)
    if inner is not None:
        jaxpr, consts = inner
        if len(jaxpr.invars) == len(ins):
            return _walk_jaxpr(jaxpr, consts, ins, walk)
        k = len(ins) - len(jaxpr.invars)  # leading operands that are not the program's inputs
        if k > 0:
            return _walk_jaxpr(jaxpr, consts, ins[k:], walk)
    out_size = int(np.prod(shapes[0], dtype=np.int64)) if shapes else 0
    if name in _ELEMENTWISE or name == "convert_element_type":
        return [_elementwise(ins, shapes[0], walk)]
    if name in _FORWARD:
        return _forward(eqn, ins, shapes, walk)
    if name in _REDUCE:
        r = prop.reduce_map(ins[0].shape, eqn.params["axes"])
        return [Value(shapes[0], prop.combine(out_size, walk.n, [(r, ins[0].deps)]))]
    if name in _CUMULATIVE:
        r = prop.along_axis_map(ins[0].shape, eqn.params["axis"], "prefix", bool(eqn.params.get("reverse", False)))
        return [Value(shapes[0], prop.combine(out_size, walk.n, [(r, ins[0].deps)]))]
    if name in _SCATTER:
        return _scatter(eqn, ins, shapes, walk)
    return _dense(name, ins, shapes, walk)


def _dense(name: str, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    walk.unruled.add(name)
    deps = [v.deps for v in ins if v.deps is not None]
    return [Value(s, prop.dense_terms(int(np.prod(s, dtype=np.int64)), walk.n, deps)) for s in shapes]


def _constant(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]]) -> list[Value]:
    """Nothing depends on the input: the values where every operand is known, else unknown."""
    if all(v.const is not None for v in ins) and eqn.primitive.name not in ("while", "scan"):
        try:
            out = eqn.primitive.bind(*[jnp.asarray(v.const) for v in ins], **eqn.params)
        except Exception:  # a value that cannot be computed here stays unknown
            return [Value(s) for s in shapes]
        outs = out if eqn.primitive.multiple_results else [out]
        return [Value(s, None, _np(o)) for s, o in zip(shapes, outs)]
    return [Value(s) for s in shapes]


def _elementwise(ins: list[Value], shape: tuple[int, ...], walk: Walk) -> Value:
    return Value(shape, prop.gathered(shape, walk.n, [(v, None) for v in ins]))


def _mul(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    # A constant's zeros are structural.
    keeps = [None if other.const is None else other.const != 0 for other in (ins[1], ins[0])]
    return [Value(shapes[0], prop.gathered(shapes[0], walk.n, list(zip(ins, keeps))))]


def _select(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    pred, cases = ins[0], ins[1:]
    keeps = [None if pred.const is None else pred.const.astype(np.int64) == k for k in range(len(cases))]
    return [Value(shapes[0], prop.gathered(shapes[0], walk.n, list(zip(cases, keeps))))]


def _codes(ins: list[Value], data: Sequence[int]) -> tuple[list[Any], list[int]] | None:
    """The operands with each data operand replaced by its element codes (``1 + offset + index``)
    and the offsets; None where a non-data operand (an index) is not a known constant."""
    offset, offsets, operands = 0, [], []
    for k, v in enumerate(ins):
        if k in data:
            operands.append(jnp.asarray(np.arange(offset + 1, offset + 1 + v.size, dtype=np.int32).reshape(v.shape)))
            offsets.append(offset)
            offset += v.size
        else:
            if v.const is None:
                return None
            operands.append(jnp.asarray(v.const))
            offsets.append(-1)
    return operands, offsets


def _forward(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    data = tuple(k for k in _FORWARD[eqn.primitive.name](len(ins)) if k < len(ins))
    coded = _codes(ins, data)
    if coded is None:  # indices read from an argument: conservative
        return _dense(eqn.primitive.name + " (indices not constant)", ins, shapes, walk)
    operands, offsets = coded
    out = eqn.primitive.bind(*operands, **eqn.params)
    outs = out if eqn.primitive.multiple_results else [out]
    values = []
    for s, codes in zip(shapes, outs):
        codes = np.asarray(codes)
        terms = [(prop.forward_map(codes, offsets[k], ins[k].size), ins[k].deps) for k in data if ins[k].deps is not None]
        values.append(Value(s, prop.combine(codes.size, walk.n, terms)))
    return values


def _scatter(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    operand, indices, updates = ins[0], ins[1], ins[2]
    shape = shapes[0]
    size = int(np.prod(shape, dtype=np.int64))
    if indices.const is None:
        return _dense(eqn.primitive.name + " (indices not constant)", ins, shapes, walk)
    dtype = _dtype(eqn.outvars[0])
    dtype = dtype if _is_float(dtype) else jnp.float32
    base = jnp.zeros(operand.shape, dtype)
    idx = jnp.asarray(indices.const)

    def scatter_updates(u: Any) -> Any:  # the scatter-add of the same layout, linear in the updates
        return jax.lax.scatter_add_p.bind(base, idx, u, **eqn.params)

    _, transposed = jax.vjp(scatter_updates, jnp.zeros(updates.shape, dtype))
    targets = np.asarray(transposed(jnp.asarray(np.arange(1, size + 1).reshape(shape), dtype))[0])
    r_updates = prop.backward_map(targets, size)
    terms = []
    if operand.deps is not None:
        r_operand = None
        if eqn.primitive.name == "scatter":  # written positions no longer depend on the operand
            written = np.zeros(size, bool)
            hit = np.rint(targets).astype(np.int64).ravel()
            written[hit[hit > 0] - 1] = True
            r_operand = prop.masked(None, size, ~written)
        terms.append((r_operand, operand.deps))
    if updates.deps is not None:
        terms.append((r_updates, updates.deps))
    return [Value(shape, prop.combine(size, walk.n, terms))]


def _dot(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    a, b = ins[0], ins[1]
    contract, batch = eqn.params["dimension_numbers"]
    r_a, r_b = prop.contraction_maps(a.shape, b.shape, contract, batch, a.const, b.const)
    size = int(np.prod(shapes[0], dtype=np.int64))
    terms = [(r, v.deps) for r, v in ((r_a, a), (r_b, b)) if v.deps is not None]
    return [Value(shapes[0], prop.combine(size, walk.n, terms))]


def _conv(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    """Output ``(n, o, p)`` from the input elements under the kernel's window at ``p``
    (found by running the convolution on codes with a patch-extracting kernel) whose kernel
    entry ``(o, c, tap)`` is not a known zero; from every kernel entry of its output channel."""
    lhs, rhs = ins[0], ins[1]
    params = eqn.params
    if params.get("feature_group_count", 1) != 1 or params.get("batch_group_count", 1) != 1:
        return _dense("conv_general_dilated (grouped)", ins, shapes, walk)
    dn = params["dimension_numbers"]
    lhs_spec, rhs_spec, out_spec = dn.lhs_spec, dn.rhs_spec, dn.out_spec
    std = list(range(len(rhs.shape)))
    kernel_shape = tuple(rhs.shape[d] for d in rhs_spec)  # (o, c, *window)
    eye = prop.patch_kernel(lhs.shape[lhs_spec[1]], kernel_shape[2:])
    codes = np.arange(1, lhs.size + 1, dtype=np.float64).reshape(lhs.shape)
    patched = jax.lax.conv_general_dilated_p.bind(
        jnp.asarray(codes, jnp.float32), jnp.asarray(np.moveaxis(eye, std, list(rhs_spec)), jnp.float32),
        **{**params, "preferred_element_type": None})
    # Patches and output indices in the standard layout [n, channels, *spatial].
    patches = np.moveaxis(np.rint(np.asarray(patched)).astype(np.int64), list(out_spec), std)
    out_shape = shapes[0]
    out_index = np.moveaxis(np.arange(int(np.prod(out_shape, dtype=np.int64))).reshape(out_shape), list(out_spec), std)
    kernel = None if rhs.const is None else np.moveaxis(rhs.const, list(rhs_spec), std)
    r_in, r_kernel = prop.convolution_maps(patches, out_index, kernel_shape, kernel, lhs.size)
    # The kernel's flat index in its own layout: R_kernel's columns follow the standard one.
    to_own = np.moveaxis(np.arange(rhs.size).reshape(rhs.shape), list(rhs_spec), std).ravel()
    size = out_index.size
    terms = []
    if lhs.deps is not None:
        terms.append((r_in, lhs.deps))
    if rhs.deps is not None:
        terms.append((r_kernel, rhs.deps[to_own]))
    return [Value(out_shape, prop.combine(size, walk.n, terms))]


def _cond(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    index, ops = ins[0], ins[1:]
    branches = eqn.params["branches"]
    if index.const is not None:
        chosen = branches[int(np.clip(index.const, 0, len(branches) - 1))]
        return _walk_jaxpr(chosen.jaxpr, chosen.consts, ops, walk)
    results = [_walk_jaxpr(b.jaxpr, b.consts, ops, walk) for b in branches]
    return [_union(s, [r[i] for r in results], walk) for i, s in enumerate(shapes)]


def _union(shape: tuple[int, ...], values: list[Value], walk: Walk) -> Value:
    size = int(np.prod(shape, dtype=np.int64))
    return Value(shape, prop.combine(size, walk.n, [(None, v.deps) for v in values if v.deps is not None]))


def _same(a: list[Value], b: list[Value]) -> bool:
    for x, y in zip(a, b):
        if (x.deps is None) != (y.deps is None):
            return False
        if x.deps is not None and (x.deps != y.deps).nnz:
            return False
    return True


def _fixed_point(body: Callable[[list[Value]], list[Value]], carry: list[Value], walk: Walk) -> list[Value]:
    """The carried values' dependencies after any number of iterations: ``carry`` joined with
    ``body(carry)`` until nothing changes (monotone, so it ends)."""
    for _ in range(walk.n + 2):
        new = body(carry)
        joined = [_union(c.shape, [c, nv], walk) for c, nv in zip(carry, new)]
        if _same(joined, carry):
            return joined
        carry = joined
    return carry


def _while(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    p = eqn.params
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    body_consts, carry = ins[nc:nc + nb], [Value(v.shape, v.deps) for v in ins[nc + nb:]]
    body = p["body_jaxpr"]
    return _fixed_point(lambda c: _walk_jaxpr(body.jaxpr, body.consts, [*body_consts, *c], walk), carry, walk)


# A scan of at most this many steps is walked step by step (exact); a longer one to a fixed point.
_UNROLLED_STEPS = 256


def _scan(eqn: Any, ins: list[Value], shapes: list[tuple[int, ...]], walk: Walk) -> list[Value]:
    """A scan walked step by step where it is short (each step reads its slice of ``xs`` and
    writes its slice of the outputs: exact); a long one to a fixed point of the carry, each
    slice of ``xs`` standing for all of them and each output slice for all (conservative)."""
    p = eqn.params
    nconsts, ncarry = p["num_consts"], p["num_carry"]
    consts, carry, xs = ins[:nconsts], ins[nconsts:nconsts + ncarry], ins[nconsts + ncarry:]
    length, reverse = p["length"], bool(p.get("reverse", False))
    body = p["jaxpr"]
    carry = [Value(v.shape, v.deps, v.const) for v in carry]
    if length <= _UNROLLED_STEPS:
        per_step: list[list[Value]] = []
        for i in (range(length - 1, -1, -1) if reverse else range(length)):
            sliced = [_row(v, i, walk) for v in xs]
            outs = _walk_jaxpr(body.jaxpr, body.consts, [*consts, *carry, *sliced], walk)
            carry = outs[:ncarry]
            per_step.append(outs[ncarry:])
        if reverse:
            per_step.reverse()
        return [*carry, *[_stacked([step[k] for step in per_step], s, walk) for k, s in enumerate(shapes[ncarry:])]]
    sliced = [_joined_rows(v, walk) for v in xs]
    carry = [Value(v.shape, v.deps) for v in carry]
    carry = _fixed_point(lambda c: _walk_jaxpr(body.jaxpr, body.consts, [*consts, *c, *sliced], walk)[:ncarry], carry, walk)
    outs = _walk_jaxpr(body.jaxpr, body.consts, [*consts, *carry, *sliced], walk)
    stacked = []
    for v, s in zip(outs[ncarry:], shapes[ncarry:]):
        size = int(np.prod(s, dtype=np.int64))
        r = prop.broadcast_map(v.shape, (length, *v.shape))
        stacked.append(Value(s, None if v.deps is None else prop.combine(size, walk.n, [(r, v.deps)])))
    return [*carry, *stacked]


def _row(v: Value, i: int, walk: Walk) -> Value:
    """Row ``i`` of ``v`` (its leading axis)."""
    shape = v.shape[1:]
    size = int(np.prod(shape, dtype=np.int64))
    const = None if v.const is None else v.const[i]
    if v.deps is None:
        return Value(shape, None, const)
    return Value(shape, v.deps[i * size:(i + 1) * size], const)


def _joined_rows(v: Value, walk: Walk) -> Value:
    if v.deps is None:
        return Value(v.shape[1:])
    r = prop.reduce_map(v.shape, (0,))
    return Value(v.shape[1:], prop.combine(r.shape[0], walk.n, [(r, v.deps)]))


def _stacked(rows: list[Value], shape: tuple[int, ...], walk: Walk) -> Value:
    if all(r.deps is None for r in rows):
        return Value(shape)
    empty = prop.from_pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), (rows[0].size, walk.n))
    return Value(shape, sparse.csr_array(sparse.vstack([empty if r.deps is None else r.deps for r in rows])))


_RULES: dict[str, Callable[[Any, list[Value], list[tuple[int, ...]], Walk], list[Value]]] = {
    "mul": _mul, "select_n": _select, "dot_general": _dot, "conv_general_dilated": _conv, "cond": _cond,
    "while": _while, "scan": _scan,
}


def _program(f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], argnum: int, order: int
             ) -> tuple[Any, list[Any], int, Any]:
    """The jaxpr of ``f`` (``order`` 1) or of its gradient in argument ``argnum`` (``order`` 2)
    with every array argument abstract, and where the differentiated one sits among its inputs."""
    leaves, treedef = pytree.flatten((args, kwargs))
    is_arr = [isinstance(x, jax.Array) or (hasattr(x, "shape") and hasattr(x, "dtype")) for x in leaves]
    x_leaf = pytree.leaves((args[:argnum], {}))
    position = sum(1 for a in is_arr[:len(x_leaf)] if a)

    def flat(*arrays: Any) -> Any:
        it = iter(arrays)
        full = [next(it) if a else leaf for leaf, a in zip(leaves, is_arr)]
        a, k = pytree.unflatten(treedef, full)
        return f(*a, **k)

    shaped: Any = jax.ShapeDtypeStruct
    arrays = [shaped(jnp.shape(x), x.dtype) for x, a in zip(leaves, is_arr) if a]
    target = flat if order == 1 else jax.grad(flat, argnums=position)
    closed = jax.make_jaxpr(target)(*arrays)
    return closed.jaxpr, list(closed.consts), position, closed.out_avals


def outside_compiler(fn: Callable[[], Any]) -> Any:
    """``fn()`` (a plan is prepared while ``jax.jit`` traces: from shapes only; the rules'
    own computations on constants run at trace time, :func:`pattern`)."""
    return fn()


def pattern(f: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], argnum: int, order: int
            ) -> tuple[tuple[int, int], np.ndarray, np.ndarray, set[str]]:
    """The Jacobian (``order`` 1) or Hessian (``order`` 2) pattern of ``f`` in argument
    ``argnum`` (one array): its shape, rows, columns, and the operations met without a rule."""
    jaxpr, consts, position, _out_avals = _program(f, args, kwargs, argnum, order)
    n = int(np.prod(jnp.shape(args[argnum]), dtype=np.int64))
    walk = Walk(n)
    with jax.ensure_compile_time_eval():  # the rules compute on constants, also under an outer jit
        out = _walk_jaxpr(jaxpr, consts, prop.inputs([_shape(v) for v in jaxpr.invars], position), walk)
    return (*prop.pattern_of(out[0], n), walk.unruled)


def sparse_result(values: Any, rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int], form: str,
                  batch: int | None, cache: dict[Any, Any]) -> Any:
    """The entries ``values`` (row-major, at ``rows, cols``; ``[batch, nnz]`` with a batch) as
    ``form``: ``"coo"`` (a BCOO, the batch as its batch axis), ``"csr"`` (a BCSR) or ``"dense"``.
    (``cache``: unused; the indices are constants of the program under ``jax.jit``.)"""
    from jax.experimental import sparse as jsparse

    full = shape if batch is None else (batch, *shape)
    if form == "dense":
        zeros = jnp.zeros(full, values.dtype)
        return zeros.at[rows, cols].set(values) if batch is None else zeros.at[:, rows, cols].set(values)
    indices = jnp.asarray(np.stack([rows, cols], axis=1).astype(np.int32))
    if batch is not None:
        indices = jnp.broadcast_to(indices, (batch, *indices.shape))
    coo = jsparse.BCOO((values, indices), shape=full, indices_sorted=True, unique_indices=True)
    if form == "csr":
        return jsparse.BCSR.from_bcoo(coo)
    return coo
